"""The in-process store: dictionaries of encoded records.

Records go through the same codec as on disk, so a value that would fail to
checkpoint in LMDB fails the same way here, and callers never share mutable
state with the store.
"""

from __future__ import annotations

import bisect
import logging

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, final

import trio

from .._model.clock import EPOCH
from .._model.eventlog import check_event_range, terminal_event
from .._model.jobs import JobRecord, decode_job, encode_job, job_signal
from .._model.queues import DEFAULT_QUEUE, MAX_PRIORITY, Admission, Queue, admit, record_starts
from .._model.records import InstanceStatus, StepResult, WorkflowInstance, replace_instance
from .._model.serde import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    check_limit,
    decode_instance,
    decode_step,
    decode_value,
    encode_instance,
    encode_step,
    encode_value,
)
from .._model.ids import check_instance_id, check_signal_name, check_workflow_name, is_valid_id
from ._base import step_key_bytes
from ._join import join_steps
from ._lease import LeaseLost, Owner, may_claim, record_alive
from ._memory_jobs import JobTables

__all__ = ["MemoryStore"]


@final
class MemoryStore:
    """A :class:`~durable.stores.Store` kept in memory: for tests and ephemeral runs.

    Args:
        max_payload_bytes: the largest encoded input, output, step result or
            signal payload it takes (default 16 MiB; ``None``: no limit); a
            larger one is a :class:`~durable.SerializationError`, and nothing
            of it is stored. ``Engine(max_payload_bytes=...)`` sets it.

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.max_payload_bytes = check_limit(max_payload_bytes)
        self._instances: dict[str, bytes] = {}
        self._steps: dict[str, dict[str, bytes]] = {}
        self._order: dict[str, int] = {}
        self._status: dict[str, InstanceStatus] = {}
        self._counter = 0
        self._owners: dict[str, Owner] = {}
        self._leases: dict[str, str] = {}
        self._signals: dict[tuple[str, str], dict[int, bytes]] = {}  # (instance, name) -> seq -> payload
        self._signal_seq = 0
        # Queues, events, jobs and the worker registry (as in the LMDB store's tables of those names).
        self._seq = 0  # the store-wide sequence: queue order, event ids, job order
        self._queues: dict[str, bytes] = {}  # name -> encoded Queue
        self._queued: dict[str, dict[tuple[int, int], tuple[str, str, int | None]]] = {}
        # ^ queue -> (MAX_PRIORITY - priority, seq) -> (id, workflow, not_before µs): waiting instances
        self._qpos: dict[str, tuple[str, tuple[int, int]]] = {}  # id -> its place in _queued (while it waits)
        self._inflight: dict[str, set[str]] = {}  # queue -> ids taken by a worker and unfinished
        self._qstate: dict[str, list[int]] = {}  # queue -> recent start times (µs), for rate_limit
        self._dedup: dict[tuple[str, str], str] = {}  # (queue, dedup id) -> id of the unfinished holder
        self._events: dict[str, dict[int, bytes]] = {}  # id -> event id -> encoded event
        self._event_order: list[tuple[int, str]] = []  # (event id, instance id), every instance's, in order
        self._observers: list[Callable[[str, str], None]] = []
        self._job_tables = JobTables()  # external jobs: queued, held
        self._workflow_queues: dict[str, str] = {}
        self._known: set[str] = set()  # every workflow an engine registered
        self._workers: dict[str, bytes] = {}  # owner id -> JSON of what it serves

    @property
    def path(self) -> str | None:
        """Always ``None``: nothing is on disk."""
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to run in the background; returns once started."""
        task_status.started()

    async def create_instance(
        self, instance: WorkflowInstance, *, owner: Owner | None = None
    ) -> tuple[WorkflowInstance, bool]:
        """Store ``instance`` unless its id exists (leased to ``owner``); returns (stored, created)."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        data = encode_instance(instance, limit=self.max_payload_bytes)
        if owner is not None and instance.finished:
            owner = None  # (as in LMDB: a finished instance is leased to nobody)
        existing = self._instances.get(instance.id)
        holder = self._dedup_holder(instance) if existing is None else None
        if existing is not None or holder is not None:
            found = await self.get_instance(instance.id if holder is None else holder)
            assert found is not None
            return found, False
        self._put(instance, data)
        if instance.queue is not None and owner is None and instance.status == InstanceStatus.PENDING:
            self._enqueue(instance)
        if owner is not None:
            self._owners[owner.id] = owner
            self._leases[instance.id] = owner.id
        return instance, True

    async def get_instance(self, instance_id: str, *, steps: bool = True) -> WorkflowInstance | None:
        """The instance with its step results (unless ``steps=False``), or ``None``."""
        data = self._instances.get(instance_id) if is_valid_id(instance_id) else None
        if data is None:
            return None
        inst = decode_instance(data, f"memory:{instance_id}")
        return join_steps(inst, (await self.get_steps(instance_id)).values()) if steps else inst

    def _fence(self, instance_id: str, owner: str | None) -> None:
        if owner is None:
            return
        if self._leases.get(instance_id) != owner:
            raise LeaseLost(f"instance {instance_id!r} is no longer held by this engine")
        status = self._status.get(instance_id)
        if status is not None and status.finished:
            raise LeaseLost(f"instance {instance_id!r} was {status.value} meanwhile")

    async def update_instance(
        self, instance: WorkflowInstance, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Replace the instance record (fenced by ``owner``)."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        data = encode_instance(instance, limit=self.max_payload_bytes)
        old = self._status.get(instance.id)
        if old is not None and old.finished and old != instance.status:
            if owner is not None:
                raise LeaseLost(f"instance {instance.id!r} was {old.value} meanwhile")
            return  # a finished status is final: a late write never reopens it
        if owner is not None and self._leases.get(instance.id) != owner:
            raise LeaseLost(f"instance {instance.id!r} is no longer held by this engine")
        self._put(instance, data)

    def _put(self, instance: WorkflowInstance, data: bytes) -> None:
        """Store the instance record ``data`` (checked, not fenced); reaching a finished status ends it."""
        old = self._status.get(instance.id)
        self._status[instance.id] = InstanceStatus(instance.status)
        if instance.finished:
            self._leases.pop(instance.id, None)
            if old is None or not old.finished:
                self._ended(instance)
        if instance.id not in self._instances:
            self._order[instance.id] = self._counter
            self._counter += 1
            self._steps.setdefault(instance.id, {})
        self._instances[instance.id] = data

    def _ended(self, instance: WorkflowInstance) -> None:
        """An instance reached a finished status: it leaves its queue, its jobs go, its event log ends."""
        self._unqueue(instance)
        self._job_tables.drop(instance.id.encode() + b"\0")
        event = terminal_event(instance)
        if event is not None:
            self._append(instance.id, event)
        self._changed("end", instance.id)

    async def cancel_instance(self, instance_id: str, *, error: str, error_type: str,
                              when: datetime) -> WorkflowInstance | None:
        """Record an unfinished instance ``cancelled``; the record written, or ``None`` if missing or finished."""
        found = await self.get_instance(instance_id, steps=False)
        if found is None or found.finished:
            return None
        inst = replace_instance(found, status=InstanceStatus.CANCELLED, error=error, error_type=error_type,
                                completed_at=when)
        await self.update_instance(inst)
        return inst

    async def delete_instance(self, instance_id: str) -> bool:
        """Remove an instance and its checkpoints, signals, lease, queue entries, jobs and events."""
        data = self._instances.get(instance_id)
        if data is not None:
            self._unqueue(decode_instance(data, f"memory:{instance_id}"))
        self._job_tables.drop(instance_id.encode() + b"\0")
        if self._events.pop(instance_id, None) is not None:
            self._event_order = [e for e in self._event_order if e[1] != instance_id]
        for queue in [k for k in self._signals if k[0] == instance_id]:
            del self._signals[queue]
        self._steps.pop(instance_id, None)
        self._order.pop(instance_id, None)
        self._status.pop(instance_id, None)
        self._leases.pop(instance_id, None)
        return self._instances.pop(instance_id, None) is not None

    async def _all(self, steps: bool, waiting: bool = True) -> list[WorkflowInstance]:
        out = []
        for iid in self._instances:
            if not waiting and iid in self._qpos:
                continue  # waiting in a queue: left out unread
            inst = await self.get_instance(iid, steps=steps)
            if inst is not None:
                out.append(inst)
        out.sort(key=lambda i: (i.created_at is None, i.created_at or 0, i.id))
        return out

    async def get_instances_by_workflow(
        self, workflow_name: str, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of one workflow, optionally of one status, oldest first."""
        wanted = None if status is None else InstanceStatus(status)
        return [
            i for i in await self._all(steps)
            if i.workflow_name == workflow_name and (wanted is None or i.status == wanted)
        ]

    async def get_all_instances(
        self, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of every workflow, optionally of one status, oldest first."""
        wanted = None if status is None else InstanceStatus(status)
        return [i for i in await self._all(steps) if wanted is None or i.status == wanted]

    async def get_running_instances(self, *, steps: bool = True, waiting: bool = True) -> list[WorkflowInstance]:
        """Instances that are pending or running, oldest first (``waiting=False``: not those waiting in a queue)."""
        return [i for i in await self._all(steps, waiting) if not i.finished]

    async def put_step(
        self, instance_id: str, step: StepResult, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Store one checkpoint under ``step.key`` (fenced by ``owner``)."""
        self.put_step_later(instance_id, step, owner=owner)

    def put_step_later(self, instance_id: str, step: StepResult, *, owner: str | None = None) -> None:
        """A non-durable checkpoint (a step's "running" marker), stored at once without awaiting."""
        check_instance_id(instance_id)
        data = encode_step(step, instance_id=instance_id, limit=self.max_payload_bytes)
        self._fence(instance_id, owner)
        self._steps.setdefault(instance_id, {})[step.key] = data

    async def get_steps(self, instance_id: str) -> dict[str, StepResult]:
        """Every checkpoint of an instance, keyed by checkpoint key."""
        return {
            key: decode_step(data, f"memory:{instance_id}/{key}")
            for key, data in self._steps.get(instance_id, {}).items()
        }

    async def send_signal(self, instance_id: str, name: str, payload: Any) -> int:
        """Queue signal ``name`` for an instance; returns its sequence number."""
        check_instance_id(instance_id)
        check_signal_name(name)
        data = encode_value(payload, f"the payload of signal {name!r}", instance_id=instance_id,
                            limit=self.max_payload_bytes)
        self._signal_seq += 1
        self._signals.setdefault((instance_id, name), {})[self._signal_seq] = data
        return self._signal_seq

    async def peek_signal(self, instance_id: str, name: str) -> tuple[int, Any] | None:
        """The oldest queued signal ``name`` of an instance, or ``None``."""
        queue = self._signals.get((instance_id, name))
        if not queue:
            return None
        seq = min(queue)
        return seq, decode_value(queue[seq], f"memory:signals/{instance_id}/{name}/{seq}")

    async def take_signal(
        self, instance_id: str, name: str, seq: int, step: StepResult, *, owner: str | None = None
    ) -> bool:
        """Remove queued signal ``seq`` and store ``step``, together; ``False`` if it is not queued."""
        data = encode_step(step, instance_id=instance_id)  # (no limit: its payload was checked when it was sent)
        self._fence(instance_id, owner)
        queue = self._signals.get((instance_id, name))
        if not queue or seq not in queue:
            return False
        del queue[seq]
        self._steps.setdefault(instance_id, {})[step.key] = data
        return True

    async def signal_clock(self) -> int:
        """Changes whenever a signal is sent."""
        return self._signal_seq

    async def claim(self, instance_ids: list[str], owner: Owner, *, limit: int | None = None,
                    take_queued: bool = False) -> list[str]:
        """Take the leases of those unfinished instances whose holder is gone (with ``take_queued``, those
        waiting in a queue too)."""
        self._owners[owner.id] = owner
        taken: list[str] = []
        for iid in instance_ids:
            if limit is not None and len(taken) >= limit:
                break
            status = self._status.get(iid)
            if status is None or status.finished or (iid in self._qpos and not take_queued):
                continue  # finished, or waiting in a queue (for a worker's claim_queued)
            if may_claim(self._leases.get(iid), owner.id, lambda h: record_alive(self._owners.get(h))):
                pos = self._qpos.pop(iid, None)
                if pos is not None:
                    self._queued.get(pos[0], {}).pop(pos[1], None)
                    self._inflight.setdefault(pos[0], set()).add(iid)
                self._leases[iid] = owner.id
                taken.append(iid)
        return taken

    async def heartbeat(self, owner: Owner) -> None:
        """Record ``owner`` as alive."""
        self._owners[owner.id] = owner

    async def release(self, owner_id: str) -> None:
        """Forget an owner (and what it served): its instances may be taken over; the queued ones it claimed
        but never started go back to their queues (as the LMDB store does)."""
        self._owners.pop(owner_id, None)
        self._workers.pop(owner_id, None)
        for iid in [i for i, holder in self._leases.items() if holder == owner_id]:
            status = self._status.get(iid)
            data = self._instances.get(iid)
            if status != InstanceStatus.PENDING or data is None or iid in self._qpos:
                continue
            inst = decode_instance(data, f"memory:instances/{iid}")
            if inst.queue is not None and inst.started_at is None:
                del self._leases[iid]
                self._inflight.get(inst.queue, set()).discard(iid)
                self._enqueue(inst)

    async def orphaned(self, owner_id: str) -> list[str]:
        """Unfinished instances leased to an engine that is gone (not ``owner_id``)."""
        alive: dict[str, bool] = {}
        out = []
        for iid, holder in self._leases.items():
            if holder == owner_id or InstanceStatus(self._status.get(iid, "failed")).finished:
                continue
            if holder not in alive:
                alive[holder] = record_alive(self._owners.get(holder))
            if not alive[holder]:
                out.append(iid)
        return out

    async def lost_leases(self, owner_id: str, instance_ids: list[str]) -> list[str]:
        """Those of ``instance_ids`` that ``owner_id`` no longer holds, or that finished."""
        return [
            iid for iid in instance_ids
            if self._leases.get(iid) != owner_id or InstanceStatus(self._status.get(iid, "failed")).finished
        ]

    async def lease_holders(self, instance_ids: list[str]) -> dict[str, str]:
        """The owner id holding each of ``instance_ids`` that is leased."""
        return {iid: holder for iid in instance_ids if (holder := self._leases.get(iid)) is not None}

    async def get_lease(self, instance_id: str) -> Owner | None:
        """The owner holding the instance's lease, if any."""
        holder = self._leases.get(instance_id)
        return self._owners.get(holder) if holder is not None else None

    # -- queues and workers ----------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _queue(self, name: str) -> Queue | None:
        data = self._queues.get(name)
        return Queue.decode(data) if data is not None else None

    def _dedup_holder(self, instance: WorkflowInstance) -> str | None:
        """The id of the unfinished instance holding ``instance``'s dedup id in its queue, if another does."""
        if instance.dedup_id is None or instance.queue is None:
            return None
        found = self._dedup.get((instance.queue, instance.dedup_id))
        return found if found is not None and found != instance.id else None

    def _enqueue(self, instance: WorkflowInstance) -> None:
        """Put a new pending instance in its queue (and take its dedup id)."""
        assert instance.queue is not None
        queue = self._queue(instance.queue)
        priority = instance.priority if queue is not None and queue.priority else 0
        place = (MAX_PRIORITY - priority, self._next_seq())
        self._queued.setdefault(instance.queue, {})[place] = (
            instance.id, instance.workflow_name, _micros(instance.not_before))
        self._qpos[instance.id] = (instance.queue, place)
        if instance.dedup_id is not None:
            self._dedup[(instance.queue, instance.dedup_id)] = instance.id

    def _unqueue(self, instance: WorkflowInstance) -> None:
        """A finished (or deleted) instance leaves its queue: waiting entry, in-flight entry, dedup id."""
        pos = self._qpos.pop(instance.id, None)
        if pos is not None:
            self._queued.get(pos[0], {}).pop(pos[1], None)
        if instance.queue is not None:
            self._inflight.get(instance.queue, set()).discard(instance.id)
            if instance.dedup_id is not None and self._dedup.get((instance.queue, instance.dedup_id)) == instance.id:
                del self._dedup[(instance.queue, instance.dedup_id)]

    async def requeue(self, instance_id: str) -> bool:
        """Put an unfinished instance whose engine is gone back in its queue (the default one if it has none)."""
        status = self._status.get(instance_id)
        data = self._instances.get(instance_id)
        if status is None or data is None or status.finished or instance_id in self._qpos:
            return False
        holder = self._leases.get(instance_id)
        if holder is not None and record_alive(self._owners.get(holder)):
            return False
        inst = decode_instance(data, f"memory:instances/{instance_id}")
        self._leases.pop(instance_id, None)
        if inst.queue is None:
            inst = replace_instance(inst, queue=DEFAULT_QUEUE)
            self._instances[instance_id] = encode_instance(inst)
        else:
            self._inflight.get(inst.queue, set()).discard(instance_id)
        self._enqueue(replace_instance(inst, not_before=None))
        return True

    async def register_queue(self, queue: Queue) -> None:
        """Record a queue's limits (the last registration wins)."""
        self._queues[queue.name] = queue.encode()

    async def get_queues(self) -> dict[str, Queue]:
        """The queues registered on this store, by name."""
        return {name: Queue.decode(self._queues[name]) for name in sorted(self._queues)}

    async def get_queue(self, name: str) -> Queue | None:
        """The queue ``name`` as registered, or ``None``."""
        data = self._queues.get(name)
        return Queue.decode(data) if data is not None else None

    async def queue_depths(self, name: str) -> tuple[int, int]:
        """``(waiting, in flight)`` instances of queue ``name``."""
        return len(self._queued.get(name, ())), len(self._inflight.get(name, ()))

    async def register_worker(self, owner: Owner, workflows: list[str], queue_names: list[str],
                              job_queues: list[str], workflow_queues: Mapping[str, str] | None = None) -> None:
        """Record what an engine serves (its workflows are known from then on, with their own queues)."""
        self._owners[owner.id] = owner
        self._known.update(workflows)
        for name in workflows:
            own = (workflow_queues or {}).get(name)
            if own:
                self._workflow_queues[name] = own
            else:
                self._workflow_queues.pop(name, None)
        record = {"workflows": sorted(workflows), "queues": sorted(queue_names), "jobs": sorted(job_queues)}
        self._workers[owner.id] = json.dumps(record).encode()

    async def known_workflows(self) -> list[str]:
        """Every workflow name an engine on this store has registered."""
        return sorted(self._known)

    async def workflow_queues(self) -> dict[str, str]:
        """The queue of each known workflow that names one (``@workflow(queue=...)``), as last registered."""
        return dict(self._workflow_queues)

    async def servers(self) -> dict[str, dict[str, Any]]:
        """What each live engine serves (``workflows``, ``queues``, ``jobs``), by owner id."""
        return {
            owner_id: json.loads(self._workers[owner_id]) for owner_id in sorted(self._workers)
            if record_alive(self._owners.get(owner_id))
        }

    async def claim_queued(self, owner: Owner, served: list[tuple[str, int | None]], workflows: frozenset[str] | None,
                           limit: int | None, now: datetime) -> tuple[list[str], datetime | None]:
        """Take waiting instances of the ``served`` queues, under their limits (as the LMDB store does)."""
        now_us = _micros(now)
        assert now_us is not None
        self._owners[owner.id] = owner
        taken: list[str] = []
        next_due: int | None = None

        def due_at(when: int) -> None:
            nonlocal next_due
            next_due = when if next_due is None else min(next_due, when)

        for name, free in served:
            inflight = self._inflight.get(name, set())
            adm = admit(self._queue(name), in_flight=lambda: len(inflight), starts=self._qstate.get(name, []),
                        now_us=now_us, free=free, remaining=limit - len(taken) if limit is not None else None)
            if adm.due is not None:
                due_at(adm.due)
            allowed = adm.allowed
            if allowed <= 0:
                continue
            waiting = self._queued.get(name, {})
            picked: list[tuple[tuple[int, int], str]] = []
            for place in sorted(waiting):
                iid, workflow, not_before = waiting[place]
                if workflows is not None and workflow not in workflows:
                    continue
                if not_before is not None and not_before > now_us:
                    due_at(not_before)
                    continue
                picked.append((place, iid))
                if len(picked) >= allowed:
                    break
            for place, iid in picked:
                del waiting[place]
                self._qpos.pop(iid, None)
                self._inflight.setdefault(name, set()).add(iid)
                self._leases[iid] = owner.id
                taken.append(iid)
            self._save_starts(name, adm, len(picked), now_us, due_at)
        return taken, (EPOCH + timedelta(microseconds=next_due) if next_due is not None else None)

    def _save_starts(self, name: str, adm: Admission, count: int, now_us: int,
                     due_at: Callable[[int], None]) -> None:
        starts, due = record_starts(adm, count, now_us)
        if starts is not None:
            self._qstate[name] = starts
        if due is not None:
            due_at(due)

    # -- event log ---------------------------------------------------------

    def _append(self, instance_id: str, data: bytes) -> int:
        seq = self._next_seq()
        self._events.setdefault(instance_id, {})[seq] = data
        self._event_order.append((seq, instance_id))
        self._changed("events", instance_id)
        return seq

    def _changed(self, kind: str, detail: str) -> None:
        for fn in list(self._observers):
            try:
                fn(kind, detail)
            except Exception:  # an observer's failure must not fail the write (as in the LMDB store)
                logging.getLogger("durable.store").exception("a change observer failed")

    def on_change(self, fn: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``fn(kind, instance id)`` after each change of kind ``end`` or ``events``; a function to stop."""
        self._observers.append(fn)

        def stop() -> None:
            if fn in self._observers:
                self._observers.remove(fn)

        return stop

    def append_event(self, instance_id: str, data: bytes | Callable[[], bytes]) -> None:
        """Append one encoded event to the instance's log (at once: nothing is on disk)."""
        self._append(instance_id, data if isinstance(data, bytes) else data())

    async def read_events(self, instance_id: str, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Up to ``limit`` of the instance's events with an id over ``after``, oldest first: ``(id, data)``."""
        check_event_range(after, limit)
        if not is_valid_id(instance_id):
            return []
        log = self._events.get(instance_id, {})
        out: list[tuple[int, bytes]] = []
        for seq in sorted(log):  # (appended in increasing order: already sorted)
            if len(out) >= limit:
                break
            if seq > after:
                out.append((seq, log[seq]))
        return out

    async def read_all_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` events of every instance with an id over ``after``, oldest first: ``(id, instance, data)``."""
        check_event_range(after, limit)
        order = self._event_order
        start = bisect.bisect_right(order, (after, "\U0010ffff"))
        return [(seq, iid, self._events[iid][seq]) for seq, iid in order[start:start + limit]]

    async def last_event_id(self) -> int:
        """The id of the newest stored event (``0``: none)."""
        return self._event_order[-1][0] if self._event_order else 0

    # -- external jobs -----------------------------------------------------

    async def enqueue_job(self, job: JobRecord) -> bool:
        """Queue an external job unless it is queued (or held) already, or its outcome is delivered; whether it
        was new."""
        data = encode_job(job, limit=self.max_payload_bytes)
        if self._signals.get((job.instance_id, job_signal(job.step_key))):
            return False  # done: its outcome waits for the workflow to take it
        return self._job_tables.enqueue(step_key_bytes(job.instance_id, job.step_key), job.queue, data,
                                        self._next_seq())

    async def claim_jobs(self, owner: Owner, queue_names: list[str], limit: int, *,
                         free: Mapping[str, int] | None = None, now: datetime | None = None) -> list[JobRecord]:
        """Take up to ``limit`` jobs of ``queue_names`` (those of gone workers, then waiting ones) under each
        queue's limits (as the LMDB store does)."""
        now_us = _micros(now or datetime.now(UTC))
        assert now_us is not None
        self._owners[owner.id] = owner

        def admission(q: str, held: int, room: int | None, remaining: int) -> Admission:
            return admit(self._queue(q), in_flight=lambda: held, starts=self._qstate.get(q, []), now_us=now_us,
                         free=room, remaining=remaining)

        found = self._job_tables.claim(
            owner.id, queue_names, limit, free, lambda holder: record_alive(self._owners.get(holder)), admission,
            lambda q, adm, count: self._save_starts(q, adm, count, now_us, lambda _: None))
        return [decode_job(data, f"memory:jobs/{key!r}") for key, data in found]

    async def note_job_attempts(self, job: JobRecord, owner_id: str) -> bool:
        """Record a held job's ``attempts`` and ``retry_at``; ``False`` if ``owner_id`` holds it no more."""
        key = step_key_bytes(job.instance_id, job.step_key)
        if not self._job_tables.holds(key, owner_id):
            return False
        self._job_tables.jobs[key] = encode_job(job)
        return True

    async def finish_job(self, job: JobRecord, owner_id: str, outcome: Any) -> bool:
        """Remove a job this owner holds and queue ``outcome`` as its instance's job signal, together.

        ``False`` (nothing written) if the owner holds the job no more.
        """
        data = encode_value(outcome, f"the result of job {job.step_name!r}", instance_id=job.instance_id,
                            limit=self.max_payload_bytes)
        key = step_key_bytes(job.instance_id, job.step_key)
        if not self._job_tables.holds(key, owner_id):
            return False
        self._job_tables.remove(key)
        self._signal_seq += 1
        self._signals.setdefault((job.instance_id, job_signal(job.step_key)), {})[self._signal_seq] = data
        return True

    async def get_jobs(self, instance_id: str | None = None) -> list[tuple[JobRecord, str | None]]:
        """Queued and running jobs (of one instance, or all), each with the owner id running it, if any."""
        prefix = instance_id.encode() + b"\0" if instance_id is not None else b""
        return [(decode_job(data, f"memory:jobs/{key!r}"), holder)
                for key, data, holder in self._job_tables.listing(prefix)]

    def close(self) -> None:
        """Nothing to release."""


def _micros(when: datetime | None) -> int | None:
    return (when - EPOCH) // timedelta(microseconds=1) if when is not None else None
