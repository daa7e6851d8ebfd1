"""Starting an instance on a queue: the pending record a worker claims, and what a second start finds.

Shared by ``engine.workflows.start(..., queue=)`` and the clients: neither
runs the instance; a worker serving the queue claims it
(``Store.claim_queued``) under the queue's limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._model.ids import check_workflow_name
from .._model.queues import DEFAULT_QUEUE, Queue, check_priority
from .._model.records import InstanceStatus, WorkflowInstance
from ..errors import Deduplicated, QueueNotFound
from ..stores import Store
from .identity import IfExists, check_existing

__all__ = ["Queued", "check_queue"]


@attrs.frozen
class Queued:
    """Where and how a new instance waits: its queue, priority, dedup id and earliest start."""

    queue: str
    priority: int = 0
    dedup_id: str | None = None
    delay: float | None = None

    @classmethod
    def make(cls, queue: str | None, priority: int = 0, dedup_id: str | None = None,
             delay: float | timedelta | None = None) -> Queued:
        """Checked options of a start on a queue (``queue=None``: the default queue)."""
        name = check_workflow_name(queue) if queue is not None else DEFAULT_QUEUE
        check_priority(priority)
        if dedup_id is not None and (not isinstance(dedup_id, str) or not dedup_id or "\0" in dedup_id
                                     or len(dedup_id.encode()) > 200):
            raise ValueError(f"dedup_id must be a non-empty str of at most 200 bytes without NUL, got {dedup_id!r}")
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not 0 <= seconds < float("inf")):
            raise ValueError(f"delay must be a number of seconds >= 0 (or a timedelta), got {delay!r}")
        return cls(name, priority, dedup_id, float(seconds) if seconds else None)

    def instance(self, instance_id: str, workflow: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                 now: datetime, deadline: datetime | None) -> WorkflowInstance:
        """The pending record to create."""
        return WorkflowInstance(
            id=instance_id, workflow_name=workflow, status=InstanceStatus.PENDING, input=value, created_at=now,
            deadline=deadline, args=args, kwargs=kwargs, queue=self.queue, priority=self.priority,
            dedup_id=self.dedup_id, not_before=now + timedelta(seconds=self.delay) if self.delay else None,
        )

    def existing(self, record: WorkflowInstance, stored: WorkflowInstance, value: Any, if_exists: IfExists) -> str:
        """A create that wrote nothing: the id to return, or :class:`Deduplicated` / :class:`IdConflict`."""
        if stored.id != record.id:
            raise Deduplicated(
                f"dedup id {self.dedup_id!r} of queue {self.queue!r} is held by unfinished instance {stored.id!r} "
                f"({stored.status}); nothing was started",
                workflow=record.workflow_name, existing_id=stored.id, existing_workflow=stored.workflow_name,
            )
        check_existing(record.workflow_name, stored, value, if_exists)
        return stored.id


async def check_queue(store: Store, name: str, declared: Mapping[str, Queue] | None = None,
                      priority: int = 0) -> Queue | None:
    """The queue ``name`` (declared here, else as registered in the store); :class:`QueueNotFound` if neither has it.

    The default queue always exists. A non-zero ``priority`` on a queue without
    ``priority=True`` is a ``ValueError``.
    """
    queue = (declared or {}).get(name)
    if queue is None and (name != DEFAULT_QUEUE or priority):
        # (the default queue always exists: its record is read only to check a priority against it)
        queue = await store.get_queue(name)
    if queue is None and name != DEFAULT_QUEUE:
        known = sorted({DEFAULT_QUEUE, *(declared or {}), *(await store.get_queues())})
        raise QueueNotFound(f"no queue {name!r} is declared on this store (declared: {', '.join(known)}); "
                            "declare it with durable.Queue in a module a worker loads, or engine.queues.register()")
    if priority and (queue is None or not queue.priority):
        raise ValueError(f"queue {name!r} does not order by priority (declare it with Queue({name!r}, "
                         f"priority=True)), so start(..., priority={priority}) would be ignored")
    return queue
