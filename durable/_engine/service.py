"""``engine.workflows``: register, start, inspect, wait for, cancel, signal and resume instances.

Durability points (what is on disk when each call returns):

- ``start()``: the instance record (status ``running``: it starts at once);
- each step: its checkpoint, before the workflow moves past it;
- completion, failure, time-out: the final record, before ``wait()`` returns it;
- ``cancel()``: status ``cancelled``, before the call returns.

An instance written ``pending`` (by another tool, through the store) is marked
``running`` when it starts, as bookkeeping that rides along with the next
durable write. ``resume()`` treats ``pending`` and ``running`` alike.

Leases: ``start()`` leases the new instance to this engine in the same write
that creates it; ``resume()`` takes over only instances whose owner is gone
(:meth:`Store.claim`). Every write of a run is fenced by the lease, so an
engine that lost an instance can never write over its new owner's progress.

This is the façade; the runs themselves are the
:class:`~durable._engine.driver.RunDriver`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Literal, final

import trio

from .driver import RunDriver
from .enqueue import Queued, check_queue
from .interpreter import GraphDefinition
from .run import Definition
from .._graph.states import Graph
from .._model.queues import Queue
from .._model.records import InstanceStatus, WorkflowInstance
from ..errors import DurableError, InstanceNotFound, SerializationError, StoreError

__all__ = ["WorkflowService"]

log = logging.getLogger("durable.engine")


def _as_definition(workflow: Any) -> Definition | None:
    if isinstance(workflow, Graph):
        return GraphDefinition(workflow)
    definition: Definition | None = getattr(workflow, "__durable_definition__", None)
    return definition


@final
class WorkflowService:
    """The workflow operations of an :class:`~durable.Engine` (``engine.workflows``).

    .. versionadded:: 0.1.0
    """

    def _declared(self) -> dict[str, Queue]:
        """The queues the engine declares (set by the engine)."""
        return self.declared_queues() if self.declared_queues is not None else {}

    def __init__(self, driver: RunDriver) -> None:
        self.declared_queues: Callable[[], dict[str, Queue]] | None = None
        self.flush_queues: Callable[[], Awaitable[None]] | None = None
        self._driver = driver
        self._unregistered: set[str] = set()  # instances resume() skipped and logged

    @property
    def driver(self) -> RunDriver:
        """The run driver behind this service (for ``durable.testing`` and the CLI; not a stable API)."""
        return self._driver

    # -- registry ----------------------------------------------------------

    def register(self, workflow: Any) -> None:
        """Register a built :class:`~durable.Graph` (or a ``@workflow`` function) under its name.

        Registering the same workflow again is harmless; another workflow
        under a name already taken raises :class:`~durable.DurableError`
        naming both (so is starting one: one name never runs two workflows' code).
        """
        definition = _as_definition(workflow)
        if definition is None:
            raise TypeError(f"register() takes a built workflow graph or a @workflow function, got {workflow!r}")
        self._driver.define(definition)

    def names(self) -> list[str]:
        """The registered workflow names, sorted."""
        return sorted(self._driver.definitions)

    def _definition(self, workflow: Any) -> Definition:
        if isinstance(workflow, str):
            return self._driver.definition(workflow)
        definition = _as_definition(workflow)
        if definition is None:
            raise TypeError(f"expected a workflow name, graph or @workflow function, got {workflow!r}")
        return self._driver.define(definition)

    # -- starting ----------------------------------------------------------

    async def start(self, workflow: Any, /, *args: Any, id: str | None = None,
                    if_exists: Literal["return", "error"] = "return", queue: str | None = None,
                    priority: int = 0, dedup_id: str | None = None, delay: float | timedelta | None = None,
                    **kwargs: Any) -> str:
        """Start an instance; returns its id once its creation is durable.

        Args:
            workflow: a registered name, a built graph or a ``@workflow`` function.
            *args: the input (one value for a builder workflow; the call's
                arguments for a decorator workflow, checked against its
                signature, and converted to its parameters' annotations).
            id: a caller-chosen id. Without one, the instance gets a new
                version-7 UUID (32 hex digits) whose first 12 digits are its
                ``created_at`` in milliseconds, so ids sort by creation time,
                to the millisecond. With one that exists, ``if_exists`` decides.
            if_exists: what to do when an instance with ``id`` exists already.
                ``"return"`` (the default) returns its id, without running
                anything, if it was started with the same input (its stored
                ``input`` equals this call's), so that starting twice with one
                id runs one instance; with another input it raises
                :class:`~durable.IdConflict`. ``"error"`` raises
                :class:`~durable.IdConflict` whenever the id exists. An
                instance of another workflow under the id is always an
                :class:`~durable.IdConflict`. An existing instance returned
                that is unfinished, and whose engine is gone (a crash, a
                stop), is continued by this engine, as ``resume()`` would.
            queue: start it on this queue instead of running it here: it is
                created ``pending`` and a worker serving the queue
                (``engine.serve()``, ``durable worker``; this engine too, if
                it serves) claims it under the queue's limits. A workflow
                declared with ``@workflow(queue=...)`` goes to its queue
                without this.
            priority: its place in a queue declared with ``priority=True``
                (higher first).
            dedup_id: at most one unfinished instance of the queue holds a
                dedup id: a second start raises :class:`~durable.Deduplicated`.
            delay: no worker starts it before this many seconds (or timedelta).
                ``priority``, ``dedup_id`` and ``delay`` start it on a queue:
                the workflow's own, else ``"default"``.
            **kwargs: keyword arguments of a decorator workflow's call.

        Raises:
            IdConflict: see ``if_exists``.
            Deduplicated: ``dedup_id`` is held by an unfinished instance.
            QueueNotFound: ``queue`` is declared neither here nor in the store.
            TypeError: the arguments do not fit the workflow (an unexpected or
                missing argument, a value of the wrong type).
            SerializationError: the input cannot be stored.
        """
        if if_exists not in ("return", "error"):
            raise ValueError(f"if_exists must be 'return' or 'error', got {if_exists!r}")
        definition = self._definition(workflow)
        queue = queue if queue is not None else getattr(definition, "queue", None)
        queued = None
        if queue is not None or priority or dedup_id is not None or delay is not None:
            # (priority, dedup_id and delay are queue options: without a queue, the default one)
            queued = Queued.make(queue, priority, dedup_id, delay)
            if self.flush_queues is not None:
                await self.flush_queues()  # queues declared since the engine started: in the store first
            await check_queue(self._driver.store, queued.queue, self._declared(), priority)
        return await self._driver.start(definition, args, kwargs, id, None, if_exists=if_exists, queued=queued)

    async def resume(self, *, limit: int | None = None) -> list[str]:
        """Continue every unfinished instance whose owner is gone; returns their ids.

        An instance is taken over only when no live engine holds its lease:
        its engine exited, or its process died (on this host), or its
        heartbeat expired (on another host). Instances running in a live
        engine, this one included, are left alone, so any number of
        processes may call ``resume()`` at once and each instance runs in
        exactly one of them. ``limit`` takes at most that many (oldest first),
        so that workers calling ``resume()`` in a loop share the work.

        Finished steps are replayed from their checkpoints, not run again. An
        instance whose deadline passed while nothing ran it ends ``timed_out``
        without running further. Instances of unregistered workflows are left
        as they are (and logged).
        """
        driver = self._driver
        driver.nursery  # fail early, with a clear message, outside 'async with'
        return await driver.take_over([inst.id for inst in await self.orphans()], limit)

    async def orphans(self, *, leased_only: bool = False) -> list[WorkflowInstance]:
        """The unfinished instances of registered workflows that no live engine runs (what ``resume()`` takes
        over), oldest first; not those waiting in a queue (workers claim those under the queue's limits).

        ``leased_only`` looks only at instances leased to an engine that is gone
        (``Store.orphaned``), not at every unfinished one: a worker's periodic
        look, after a first full one, costs nothing for a backlog of queued work.
        """
        driver = self._driver
        found: list[WorkflowInstance] = []
        # Those running here now are this engine's, even if they end while the store is read (their lease is
        # gone then, and what was read may still say queued, or held here).
        ran = set(driver.runs)

        def here(instance_id: str) -> bool:
            """Runs (or ran) here, or sleeps here unloaded (woken by its timer or signal)."""
            return instance_id in ran or instance_id in driver.runs or driver.sleepers.holds(instance_id)

        if leased_only:
            candidates = []
            failed: list[StoreError] = []

            async def read(instance_id: str) -> None:
                try:
                    inst = await driver.store.get_instance(instance_id, steps=False)
                except StoreError as exc:
                    failed.append(exc)
                    return
                if inst is not None:
                    candidates.append(inst)

            leased = await driver.store.orphaned(driver.owner_id)  # outside the nursery: a plain StoreError
            async with trio.open_nursery() as nursery:  # read at once: a dead worker may have held hundreds
                for instance_id in leased:
                    nursery.start_soon(read, instance_id)
            if failed:
                raise failed[0]
            candidates.sort(key=lambda i: (i.created_at is None, i.created_at or 0, i.id))
        else:
            # Not those waiting in a queue for a claim: no one holds them, and a backlog can be long (it is
            # not even read).
            candidates = await driver.store.get_running_instances(steps=False, waiting=False)
        # Who holds each is read in two reads for all, not one per instance (other workers may run thousands):
        # the holder of each lease, and which are held by engines that are gone, by the store's rule (the one a
        # take-over's claim applies; on the database's clock for PostgreSQL). ``orphaned()`` gave those of a
        # periodic look: all held by engines that are gone.
        ids = [i.id for i in candidates if not here(i.id)]
        holders: dict[str, str] = {}
        gone: set[str] = set()
        if ids and not leased_only:
            holders = await driver.store.lease_holders(ids)
            if any(holder != driver.owner_id for holder in holders.values()):
                gone = set(await driver.store.orphaned(driver.owner_id))
        for inst in candidates:
            if here(inst.id):  # looked at again: it may have started here while the store was read
                continue
            if not leased_only:
                holder = holders.get(inst.id)
                if holder is None and _never_started(inst):
                    continue  # waiting in its queue (back there since the read), for a worker's claim
                if holder is not None and holder != driver.owner_id and inst.id not in gone:
                    continue  # another live engine runs it: no write (claim) for it
                # else: held here (a claim in doubt, a run a failed write stopped), by an engine that is gone,
                # or by no one (left so by durable 0.1.0): taken over
            if inst.workflow_name not in driver.definitions:
                if inst.id not in self._unregistered:  # once per instance: workers call resume() in a loop
                    self._unregistered.add(inst.id)
                    log.warning("not resuming instance %s: workflow %r is not registered",
                                inst.id, inst.workflow_name)
                continue
            found.append(inst)
        return found

    # -- signals -----------------------------------------------------------

    async def signal(self, instance_id: str, name: str, payload: Any = None) -> int:
        """Send signal ``name`` with ``payload`` to an instance; returns once it is queued durably.

        The signal is kept until the instance takes it with
        :func:`durable.wait_for_signal`, in the order signals of that name were
        sent, each exactly once, across restarts. The instance may run in
        this engine or in another process. Returns the signal's sequence number.

        Raises:
            InstanceNotFound: there is no such instance.
            DurableError: the instance has already finished.
            SerializationError: the payload cannot be stored.
        """
        store = self._driver.store
        inst = await store.get_instance(instance_id, steps=False)
        if inst is None:
            raise InstanceNotFound("no such instance", instance_id=instance_id)
        if inst.finished:
            raise DurableError(f"cannot signal {name!r}: the instance has already finished ({inst.status})",
                               workflow=inst.workflow_name, instance_id=instance_id)
        try:
            seq = await store.send_signal(instance_id, name, payload)
        except SerializationError as exc:
            raise SerializationError(exc.message, workflow=inst.workflow_name, instance_id=instance_id) from exc
        sleepers = self._driver.sleepers
        sleepers.signals.notify(instance_id, name)
        sleepers.wake_for(instance_id, name)
        return seq

    # -- reading -----------------------------------------------------------

    def running_ids(self) -> list[str]:
        """Ids of the instances running in this engine now."""
        return list(self._driver.runs)

    def suspended_ids(self) -> list[str]:
        """Ids of the instances this engine has unloaded until their durable sleep ends or their signal comes."""
        return self._driver.sleepers.ids()

    async def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        """The instance with its step results (live if it runs here), or ``None``."""
        run = self._driver.runs.get(instance_id)
        if run is not None:
            return run.snapshot()
        return await self._driver.store.get_instance(instance_id)

    async def get_instances(
        self, workflow_name: str, status: InstanceStatus | str | None = None
    ) -> list[WorkflowInstance]:
        """Instances of ``workflow_name``, optionally only those with ``status``, oldest first."""
        wanted = InstanceStatus(status) if status is not None else None
        runs = self._driver.runs
        out: list[WorkflowInstance] = []
        seen: set[str] = set()
        for inst in await self._driver.store.get_instances_by_workflow(workflow_name, wanted):
            seen.add(inst.id)
            run = runs.get(inst.id)
            live = run.snapshot() if run is not None else inst
            if wanted is None or live.status == wanted:
                out.append(live)
        for run in runs.values():
            live = run.snapshot()
            if live.id not in seen and live.workflow_name == workflow_name and (wanted is None or live.status == wanted):
                out.append(live)
        return out

    async def wait(self, instance_id: str, timeout: float | None = None) -> WorkflowInstance:
        """Wait until the instance finishes; returns it, with its step results.

        An instance started by this engine's ``start()`` whose run ended here
        lately (the last 4,096, up to 16 MB of records) is answered from
        memory: its final record and checkpoints, kept encoded as its last
        write stored them, decoded afresh for each call. One deleted from the
        store meanwhile (``Store.delete_instance``) is still answered so. Any
        other is read from the store, and polled while it runs in another
        process.

        Raises:
            InstanceNotFound: there is no such instance.
            StoreError: the store failed a write of the instance's run in this
                engine (disk full...): the run stopped, the instance is left
                unfinished for ``resume()``.
            TimeoutError: it did not finish within ``timeout`` seconds.
        """
        if timeout is None:
            return await self._driver.wait(instance_id)  # no cancel scope: wait() is on every client's path
        with trio.move_on_after(timeout):
            return await self._driver.wait(instance_id)
        raise TimeoutError(f"instance {instance_id!r} did not finish within {timeout:g} s")

    # -- control -----------------------------------------------------------

    async def cancel(self, instance_id: str) -> bool:
        """Cancel an unfinished instance: its running steps are cancelled through trio.

        Returns ``True`` once status ``cancelled`` is durable (also when it was
        already being cancelled); ``False`` if the instance does not exist or
        has already finished. Its unfinished child workflows are cancelled too.
        """
        return await self._driver.cancel(instance_id)

    async def stop(self) -> None:
        """Stop every instance running here; they stay unfinished in the store, for ``resume()``."""
        await self._driver.stop()


def _never_started(inst: WorkflowInstance) -> bool:
    """Queued and not started yet: waiting for a worker's claim, or claimed and about to start."""
    return inst.status == InstanceStatus.PENDING and inst.queue is not None and inst.started_at is None
