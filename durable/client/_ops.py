"""What a client does, as coroutines on its loop (:mod:`._portal`): store reads and writes, no engine.

A client never runs an instance. ``start`` creates it ``pending`` on a queue
(durably, before it returns) for a worker to claim; ``cancel`` records it
``cancelled``, and the engine running it, woken (or at its next heartbeat),
stops it; ``signal`` queues a signal; ``resume`` puts an instance whose
engine is gone back in its queue.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import attrs

from .._engine.children import running_children
from .._engine.enqueue import Queued, check_queue
from .._engine.events import Event
from .._engine.identity import IfExists
from .._engine.interpreter import GraphDefinition
from .._engine.run import Definition
from .._graph.states import Graph
from .._model import clock
from .._model.eventlog import TERMINAL_NAMES, decode_event
from .._model.ids import check_instance_id, check_signal_name, check_workflow_name, new_instance_id
from .._model.records import InstanceStatus, WorkflowInstance
from ..errors import DurableError, InstanceNotFound, SerializationError, WorkflowCancelled, WorkflowNotFound
from ..stores import Store

__all__ = ["Page", "definition_of", "start"]


@attrs.frozen
class Page:
    """One page of :meth:`~durable.Client.list`: the instances, and the cursor of the next page (``None``: last).

    .. versionadded:: 0.2.0
    """

    instances: list[WorkflowInstance]
    next_cursor: str | None = None


def definition_of(workflow: Any) -> Definition | None:
    """The definition of a built graph or ``@workflow`` function; ``None`` for a name."""
    if isinstance(workflow, str):
        return None
    if isinstance(workflow, Graph):
        return GraphDefinition(workflow)
    definition: Definition | None = getattr(workflow, "__durable_definition__", None)
    if definition is None:
        raise TypeError(f"expected a workflow name, graph or @workflow function, got {workflow!r}")
    return definition


async def start(store: Store, workflow: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, id: str | None,
                queue: str | None, priority: int, dedup_id: str | None, delay: float | None,
                allow_unknown: bool, if_exists: IfExists) -> str:
    """Create a pending instance on its queue; its id once that is durable."""
    definition = definition_of(workflow)
    if definition is None:
        name = check_workflow_name(workflow)
        if not allow_unknown and name not in await store.known_workflows():
            known = ", ".join(sorted(await store.known_workflows())) or "none yet"
            raise WorkflowNotFound(
                f"no engine on this store has registered workflow {name!r} (registered: {known}); start a worker "
                "that serves it, or pass allow_unknown=True to queue it anyway", workflow=name)
        # No code here to bind the arguments to: one positional value is a builder's input.
        value: Any = args[0] if len(args) == 1 and not kwargs else {"args": list(args), "kwargs": kwargs}
        call_args, call_kwargs = args, kwargs
        if queue is None:
            queue = (await store.workflow_queues()).get(name)  # its own, as its worker registered it
    else:
        name = definition.name
        value, call_args, call_kwargs = definition.make_call(args, kwargs)
        queue = queue if queue is not None else getattr(definition, "queue", None)
    queued = Queued.make(queue, priority, dedup_id, delay)
    await check_queue(store, queued.queue, None, priority)
    now = clock.now()
    instance_id = check_instance_id(id) if id is not None else new_instance_id(now)
    record = queued.instance(instance_id, name, value, call_args, call_kwargs, now, None)
    try:
        stored, created = await store.create_instance(record)
    except SerializationError as exc:
        raise SerializationError(exc.message, workflow=name, instance_id=instance_id) from exc
    if not created:
        return queued.existing(record, stored, value, if_exists)
    return instance_id


def _matches(inst: WorkflowInstance, queue: str | None, parent: str | None, created_after: datetime | None,
             created_before: datetime | None) -> bool:
    if queue is not None and inst.queue != queue:
        return False
    if parent is not None and inst.parent_id != parent:
        return False
    created = inst.created_at
    if created_after is not None and (created is None or created < created_after):
        return False
    if created_before is not None and (created is None or created >= created_before):
        return False
    return True


async def list_page(store: Store, *, workflow: str | None, status: InstanceStatus | str | None, queue: str | None,
                    parent: str | None, created_after: datetime | None, created_before: datetime | None,
                    limit: int, cursor: str | None) -> Page:
    """Instances matching the filters, oldest first, ``limit`` at a time after ``cursor`` (an instance id)."""
    if type(limit) is not int or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")
    wanted = InstanceStatus(status) if status is not None else None
    if workflow is not None:
        found = await store.get_instances_by_workflow(workflow, wanted, steps=False)
    else:
        found = await store.get_all_instances(wanted, steps=False)
    items = [i for i in found if _matches(i, queue, parent, created_after, created_before)]
    if cursor is not None:
        after = _parse_cursor(cursor)
        items = [i for i in items if _position(i) > after]
    page = items[:limit]
    return Page(page, _cursor(page[-1]) if len(items) > limit else None)


def _position(inst: WorkflowInstance) -> tuple[int, str]:
    """Where an instance is in a listing: by creation time (µs), then id (what the stores sort by)."""
    created = inst.created_at
    return ((created - clock.EPOCH) // timedelta(microseconds=1) if created is not None else -1, inst.id)


def _cursor(inst: WorkflowInstance) -> str:
    micros, iid = _position(inst)
    return f"{micros}:{iid}"


def _parse_cursor(cursor: str) -> tuple[int, str]:
    micros, sep, iid = cursor.partition(":")
    try:
        if not sep or not iid:
            raise ValueError
        return int(micros), iid
    except ValueError:
        raise ValueError(f"not a cursor of list(): {cursor!r} (pass a page's next_cursor as it is)") from None


async def workflows(store: Store) -> dict[str, str | None]:
    """The registered workflows' names, each with its own queue (``None``: the default)."""
    queues = await store.workflow_queues()
    return {name: queues.get(name) for name in sorted(await store.known_workflows())}


async def get_existing(store: Store, instance_id: str) -> WorkflowInstance:
    """The instance (without steps), or :class:`InstanceNotFound`."""
    inst = await store.get_instance(instance_id, steps=False)
    if inst is None:
        raise InstanceNotFound("no such instance", instance_id=instance_id)
    return inst


async def cancel(store: Store, instance_id: str) -> bool:
    """Record an unfinished instance ``cancelled`` (and its running children); ``False`` if it had finished."""
    inst = await store.get_instance(instance_id, steps=False)
    if inst is None or inst.finished:
        return False
    err = WorkflowCancelled("cancelled", workflow=inst.workflow_name, instance_id=inst.id)
    if await store.cancel_instance(instance_id, error=str(err), error_type=type(err).__name__,
                                   when=clock.now()) is None:
        return False  # it finished meanwhile
    for child in running_children(await store.get_steps(instance_id)):
        await cancel(store, child)
    return True


async def signal(store: Store, instance_id: str, name: str, payload: Any) -> int:
    """Queue signal ``name`` for an unfinished instance; its sequence number."""
    check_signal_name(name)
    inst = await get_existing(store, instance_id)
    if inst.finished:
        raise DurableError(f"cannot signal {name!r}: the instance has already finished ({inst.status})",
                           workflow=inst.workflow_name, instance_id=instance_id)
    try:
        return await store.send_signal(instance_id, name, payload)
    except SerializationError as exc:
        raise SerializationError(exc.message, workflow=inst.workflow_name, instance_id=instance_id) from exc


def to_event(event_id: int, data: bytes, path: str | None) -> Event:
    """A stored event as an :class:`~durable.Event` carrying its id."""
    name, instance_id, workflow_name, fields = decode_event(data, f"event {event_id}", path)
    known = {f.name for f in attrs.fields(Event)}
    return Event(name=name, instance_id=instance_id, workflow_name=workflow_name, id=event_id,  # type: ignore[arg-type]
                 **{k: v for k, v in fields.items() if k in known and k not in ("name", "id")})


async def next_events(store: Store, instance_id: str, after: int, limit: int) -> tuple[list[Event], bool]:
    """The instance's stored events after ``after`` (at most ``limit``), and whether its log has ended."""
    found = await store.read_events(instance_id, after, limit)
    events = [to_event(n, data, store.path) for n, data in found]
    if any(e.name in TERMINAL_NAMES for e in events):
        return events, True
    if not events:
        inst = await store.get_instance(instance_id, steps=False)
        if inst is None:
            raise InstanceNotFound("no such instance", instance_id=instance_id)
        if inst.finished:
            # Ended: its terminal event is written with its final status; read once more for it.
            found = await store.read_events(instance_id, after, limit)
            events = [to_event(n, data, store.path) for n, data in found]
            return events, True
    return events, False

