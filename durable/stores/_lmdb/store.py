"""The LMDB store: the default, durable, multi-process-safe checkpoint store.

Layout (named databases in one LMDB environment, a directory):

``meta``       ``format`` -> the store's format version (refuses newer ones);
               ``signal-clock`` (``signals.py``)
``instances``  instance id -> encoded :class:`WorkflowInstance` (no step results)
``steps``      ``id NUL step key`` -> encoded :class:`StepResult`
``status``     instance id -> ``status NUL workflow`` (what the index holds now)
``index``      ``status NUL workflow NUL id`` -> empty: finds running instances
               without reading finished ones
``leases``     instance id -> id of the owner running it (unfinished instances)
``owners``     owner id -> JSON :class:`Owner` record (host, pid, heartbeat)
``signals``    ``id NUL name NUL seq`` -> a queued signal's payload

:class:`LMDBStore` is the :class:`~durable.stores.Store` protocol over two
parts: the environment (``env.py``: opening, read transactions, the
group-commit writer, map growth) and the table functions (``instances.py``,
``steps.py``, ``signals.py``, ``leases.py``), each a function of a
transaction. This module checks arguments and encodes values on the
caller's side (so bad input never reaches the writer thread), then reads in
a read transaction or queues a table function as a write.

Reads run in short read transactions on the trio loop (they cost about a
microsecond); writes go through the group-commit writer thread. The
directory is created owner-only: records are cloudpickles, and loading a
pickle runs code, so the store is exactly as trusted as the code that reads
it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, final

import trio

from datetime import UTC, datetime, timedelta

from ..._model.clock import EPOCH
from ..._model.ids import check_instance_id, check_signal_name, check_workflow_name, is_valid_id
from ..._model.eventlog import check_event_range
from ..._model.jobs import JobRecord, decode_job, encode_job, job_signal
from ..._model.queues import DEFAULT_QUEUE, Queue
from ..._model.records import InstanceStatus, StepResult, WorkflowInstance
from ..._model.serde import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    check_limit,
    check_step_input,
    encode_instance,
    encode_step,
    encode_value,
)
from .._base import signal_key_prefix, step_key_bytes
from .._lease import Owner
from .._wake import Listener, Waker
from . import eventlog, instances, jobs, leases, queues, registry, signals, steps
from .env import FORMAT_VERSION, LMDBEnv

__all__ = ["FORMAT_VERSION", "LMDBStore"]


@final
class LMDBStore:
    """A :class:`~durable.stores.Store` in an LMDB environment at ``path`` (a directory).

    Args:
        path: the store's directory; created (owner-only) if missing.
        map_size: initial map size in bytes; the map doubles when full.
        lazy_delay: longest time a non-durable write waits for a commit (seconds, > 0).
        max_payload_bytes: the largest encoded input, output, step result or
            signal payload it takes (default 16 MiB; ``None``: no limit); a
            larger one is a :class:`~durable.SerializationError`, and nothing
            of it is written. ``Engine(max_payload_bytes=...)`` sets it.

    Raises:
        StoreError: the path is a file, a directory that is not a store, a
            store of a newer format, unreadable, or corrupt.

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = 64 << 20, lazy_delay: float = 0.1,
                 max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        if not isinstance(lazy_delay, (int, float)) or not 0 < lazy_delay < float("inf"):
            raise ValueError(f"lazy_delay must be a number of seconds > 0, got {lazy_delay!r}")
        self.max_payload_bytes = check_limit(max_payload_bytes)
        self._env = LMDBEnv(os.fspath(path), map_size, float(lazy_delay))
        self._tables = self._env.tables
        self._waker = Waker(self._env.path, skip_own=True)  # (this process knows what it wrote)
        self._events: list[tuple[bytes, bytes | Callable[[], bytes]]] = []  # appended, not yet drained
        self._events_lock = threading.Lock()
        self._drained: list[list[list[tuple[bytes, bytes | Callable[[], bytes]]]]] = []  # (writer) not yet notified
        self._env.on_commit = self._notify
        self._owner_cache: tuple[Owner, bytes, bytes] | None = None  # see _owner_record
        self._observers: list[Callable[[str, str], None]] = []  # in this process (see on_change)

    @property
    def path(self) -> str:
        """The store's directory."""
        return self._env.path

    # -- reading ---------------------------------------------------------

    async def get_instance(self, instance_id: str, *, steps: bool = True) -> WorkflowInstance | None:
        """The instance with its step results (unless ``steps=False``), or ``None``."""
        with self._env.read() as txn:
            return instances.load(txn, self._tables, self._env.path, instance_id, steps)

    async def get_steps(self, instance_id: str) -> dict[str, StepResult]:
        """Every checkpoint of an instance, keyed by checkpoint key."""
        if not is_valid_id(instance_id):
            return {}
        with self._env.read() as txn:
            return instances.load_steps(txn, self._tables, self._env.path, instance_id)

    def _scan(self, prefixes: list[bytes], steps: bool, waiting: bool = True) -> list[WorkflowInstance]:
        with self._env.read() as txn:
            return instances.scan_index(txn, self._tables, self._env.path, prefixes, steps, waiting)

    async def get_instances_by_workflow(
        self, workflow_name: str, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of one workflow, optionally of one status, oldest first."""
        statuses = list(InstanceStatus) if status is None else [InstanceStatus(status)]
        return self._scan([f"{s.value}\0{workflow_name}\0".encode() for s in statuses], steps)

    async def get_all_instances(
        self, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of every workflow, optionally of one status, oldest first."""
        statuses = list(InstanceStatus) if status is None else [InstanceStatus(status)]
        return self._scan([f"{s.value}\0".encode() for s in statuses], steps)

    async def get_running_instances(self, *, steps: bool = True, waiting: bool = True) -> list[WorkflowInstance]:
        """Instances that are pending or running, oldest first (``waiting=False``: not those waiting in a queue)."""
        return self._scan([f"{s.value}\0".encode() for s in (InstanceStatus.PENDING, InstanceStatus.RUNNING)], steps,
                          waiting)

    # -- instances -------------------------------------------------------

    async def create_instance(
        self, instance: WorkflowInstance, *, owner: Owner | None = None
    ) -> tuple[WorkflowInstance, bool]:
        """Durably store ``instance`` unless its id exists (leased to ``owner``); returns (stored, created)."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        data = encode_instance(instance, limit=self.max_payload_bytes)
        owner_record = self._owner_record(owner) if owner is not None and not instance.finished else None
        queued = instance.queue is not None and owner is None
        args = (self._tables, instance, data, owner_record, _micros(instance.not_before))
        created = await self._env.write(instances.create, True, None, args, b"work" if queued else None)
        if created is True:
            return instance, True
        existing = await self.get_instance(instance.id if created is False else created)
        assert existing is not None
        return existing, False

    def _owner_record(self, owner: Owner) -> tuple[bytes, bytes]:
        """``owner``'s id and record, encoded once per owner record (a JSON dump costs more than the write)."""
        cached = self._owner_cache
        if cached is None or cached[0] is not owner:
            cached = self._owner_cache = (owner, owner.id.encode(), owner.encode())
        return cached[1], cached[2]

    async def update_instance(
        self, instance: WorkflowInstance, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Replace the instance record (fenced by ``owner``)."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        data = encode_instance(instance, limit=self.max_payload_bytes)
        note = b"end " + instance.id.encode() if instance.finished else None
        await self._env.write(instances.put, durable, None, (self._tables, instance, data, owner), note)

    async def cancel_instance(self, instance_id: str, *, error: str, error_type: str,
                              when: datetime) -> WorkflowInstance | None:
        """Durably record an unfinished instance ``cancelled``, in one write that reads it; the record written,
        or ``None`` if it is missing or finished."""
        if not is_valid_id(instance_id):
            return None
        fields = {"error": error, "error_type": error_type, "completed_at": when}
        done: WorkflowInstance | None = await self._env.write(
            instances.cancel, True, None, (self._tables, instance_id.encode(), fields), b"end " + instance_id.encode())
        return done

    async def delete_instance(self, instance_id: str) -> bool:
        """Remove an instance and its checkpoints."""
        if not is_valid_id(instance_id):
            return False
        return await self._env.write(instances.delete, True, None, (self._tables, instance_id.encode()))

    # -- steps -----------------------------------------------------------

    async def put_step(
        self, instance_id: str, step: StepResult, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Store one checkpoint under ``step.key`` (fenced by ``owner``).

        A non-durable checkpoint (a "running" marker) is skipped if a later
        checkpoint of the same key joins its commit.
        """
        if not durable:
            self.put_step_later(instance_id, step, owner=owner)
            return
        check_instance_id(instance_id)
        key = step_key_bytes(instance_id, step.key)
        data = encode_step(step, instance_id=instance_id, limit=self.max_payload_bytes)  # SerializationError here
        await self._env.write(steps.put, True, key, (self._tables, instance_id, key, step, data, owner))

    def put_step_later(self, instance_id: str, step: StepResult, *, owner: str | None = None) -> None:
        """Queue a non-durable checkpoint (a step's "running" marker) without waiting for it.

        It is committed with the next durable write, or within ``lazy_delay``,
        after every write queued before it and before every write queued
        after it; a later checkpoint of the same key in the same commit
        supersedes it, and then it is never even encoded. Its input is checked
        now (:class:`SerializationError`): a step whose input cannot be stored
        must not run.
        """
        check_instance_id(instance_id)
        # A marker is usually superseded by the step's result in the same
        # commit, so the writer encodes it only if it is written.
        check_step_input(step, instance_id=instance_id, limit=self.max_payload_bytes)
        key = step_key_bytes(instance_id, step.key)
        self._env.write_later(steps.put, key, (self._tables, instance_id, key, step, None, owner))

    # -- signals ---------------------------------------------------------

    async def send_signal(self, instance_id: str, name: str, payload: Any) -> int:
        """Queue signal ``name`` for an instance, durably; returns its sequence number."""
        check_instance_id(instance_id)
        check_signal_name(name)
        data = encode_value(payload, f"the payload of signal {name!r}", instance_id=instance_id,
                            limit=self.max_payload_bytes)
        prefix = signal_key_prefix(instance_id, name)
        seq: int = await self._env.write(signals.send, True, None, (self._tables, prefix, data),
                                         b"signal " + instance_id.encode())
        return seq

    async def peek_signal(self, instance_id: str, name: str) -> tuple[int, Any] | None:
        """The oldest queued signal ``name`` of an instance, or ``None``."""
        if not is_valid_id(instance_id):
            return None
        with self._env.read() as txn:
            return signals.peek(txn, self._tables, self._env.path, signal_key_prefix(instance_id, name))

    async def take_signal(
        self, instance_id: str, name: str, seq: int, step: StepResult, *, owner: str | None = None
    ) -> bool:
        """Remove queued signal ``seq`` and store ``step``, in one durable write; ``False`` if it is not queued."""
        check_instance_id(instance_id)
        data = encode_step(step, instance_id=instance_id)  # (no limit: its payload was checked when it was sent)
        signal_key = signal_key_prefix(instance_id, name) + seq.to_bytes(8, "big")
        args = (self._tables, instance_id.encode(), signal_key, step_key_bytes(instance_id, step.key), data, owner)
        taken = await self._env.write(signals.take, True, None, args)  # a LeaseLost result is raised by write()
        return taken is True

    async def signal_clock(self) -> int:
        """Changes whenever a signal is sent, by any process."""
        with self._env.read() as txn:
            return signals.clock(txn, self._tables)

    # -- leases ----------------------------------------------------------

    async def claim(self, instance_ids: list[str], owner: Owner, *, limit: int | None = None,
                    take_queued: bool = False) -> list[str]:
        """Durably take the leases of those unfinished instances whose holder is gone (with ``take_queued``,
        those waiting in a queue too)."""
        ids = [i for i in instance_ids if is_valid_id(i)]
        taken: list[str] = await self._env.write(leases.claim, True, None,
                                                 (self._tables, ids, owner, limit, take_queued))
        return taken

    async def heartbeat(self, owner: Owner) -> None:
        """Record ``owner`` as alive (non-durable)."""
        self._env.write_later(leases.put_owner, None, (self._tables, owner.id.encode(), owner.encode()))

    async def release(self, owner_id: str) -> None:
        """Durably remove an owner record: its instances may be taken over at once."""
        await self._env.write(leases.delete_owner, True, None, (self._tables, owner_id.encode()))

    async def orphaned(self, owner_id: str) -> list[str]:
        """Unfinished instances leased to an engine that is gone (not ``owner_id``): what a take-over looks at."""
        with self._env.read() as txn:
            return leases.orphaned(txn, self._tables, owner_id)

    async def lost_leases(self, owner_id: str, instance_ids: list[str]) -> list[str]:
        """Those of ``instance_ids`` that ``owner_id`` no longer holds, or that finished."""
        with self._env.read() as txn:
            return leases.lost(txn, self._tables, owner_id, instance_ids)

    async def lease_holders(self, instance_ids: list[str]) -> dict[str, str]:
        """The owner id holding each of ``instance_ids`` that is leased."""
        with self._env.read() as txn:
            return leases.holders(txn, self._tables, instance_ids)

    async def get_lease(self, instance_id: str) -> Owner | None:
        """The owner record of whoever holds the instance's lease, if any."""
        if not is_valid_id(instance_id):
            return None
        with self._env.read() as txn:
            holder = txn.get(instance_id.encode(), db=self._tables.leases)
            return leases.owner_in(txn, self._tables, bytes(holder).decode()) if holder is not None else None

    # -- queues and workers ----------------------------------------------

    async def register_queue(self, queue: Queue) -> None:
        """Durably record a queue's limits (every worker reads them from here)."""
        await self._env.write(queues.register_queue, True, None, (self._tables, queue.name.encode(), queue.encode()))

    async def get_queues(self) -> dict[str, Queue]:
        """The queues registered on this store, by name."""
        with self._env.read() as txn:
            return {bytes(k).decode(): Queue.decode(bytes(v)) for k, v in txn.cursor(db=self._tables.queues)}

    async def get_queue(self, name: str) -> Queue | None:
        """The queue ``name`` as registered, or ``None`` (its record alone is read)."""
        with self._env.read() as txn:
            return queues.get_queue(txn, self._tables, name)

    async def queue_depths(self, name: str) -> tuple[int, int]:
        """``(waiting, in flight)`` instances of queue ``name``."""
        with self._env.read() as txn:
            return queues.queue_depths(txn, self._tables, name)

    async def register_worker(self, owner: Owner, workflows: list[str], queue_names: list[str],
                              job_queues: list[str], workflow_queues: Mapping[str, str] | None = None) -> None:
        """Durably record what an engine serves (its workflows are known to clients from then on)."""
        await self._env.write(leases.put_owner, True, None, (self._tables, owner.id.encode(), owner.encode()))
        await self._env.write(registry.put_worker, True, None,
                              (self._tables, owner.id, workflows, queue_names, job_queues,
                               dict(workflow_queues or {})))

    async def known_workflows(self) -> list[str]:
        """Every workflow name an engine on this store has registered."""
        with self._env.read() as txn:
            return registry.known_workflows(txn, self._tables)

    async def workflow_queues(self) -> dict[str, str]:
        """The queue of each known workflow that names one (``@workflow(queue=...)``), as last registered."""
        with self._env.read() as txn:
            return registry.workflow_queues(txn, self._tables)

    async def servers(self) -> dict[str, dict[str, Any]]:
        """What each live engine serves (``workflows``, ``queues``, ``jobs``), by owner id."""
        with self._env.read() as txn:
            return registry.servers(txn, self._tables)

    async def claim_queued(self, owner: Owner, served: list[tuple[str, int | None]], workflows: frozenset[str] | None,
                           limit: int | None, now: datetime) -> tuple[list[str], datetime | None]:
        """Take waiting instances of the ``served`` queues, under their limits (see ``queues.claim``).

        A read looks first: with nothing waiting, nothing is written (an idle
        worker's looks cost no fsync).
        """
        now_us = _micros(now)
        assert now_us is not None
        with self._env.read() as txn:
            if not _any_prefix(txn, self._tables.queued, [name for name, _ in served]) \
                    and queues.first_delayed(txn, self._tables) is None:
                return [], None
            ahead = queues.select(txn, self._tables, served, workflows, limit, now_us)
            if not ahead.writes:  # nothing it may take now (limits, delays, other workflows): no write
                return [], (EPOCH + timedelta(microseconds=ahead.next_due) if ahead.next_due is not None else None)
        args = (self._tables, owner, served, workflows, limit, now_us)
        taken, due = await self._env.write(queues.claim, True, None, args)
        return taken, (EPOCH + timedelta(microseconds=due) if due is not None else None)

    async def requeue(self, instance_id: str) -> bool:
        """Durably put an unfinished instance whose engine is gone back in its queue (see ``leases.requeue``)."""
        if not is_valid_id(instance_id):
            return False
        args = (self._tables, instance_id.encode(), DEFAULT_QUEUE, _micros(datetime.now(UTC)))
        done: bool = await self._env.write(leases.requeue, True, None, args, b"work")
        return done

    # -- event log ---------------------------------------------------------

    def append_event(self, instance_id: str, data: bytes | Callable[[], bytes]) -> None:
        """Queue one encoded event for the instance's log (non-durable: it rides the next commit).

        Events wait in a buffer that one queued write drains in the writer's
        transaction: a step's events cost a list append each, not a write each.
        """
        with self._events_lock:
            self._events.append((instance_id.encode(), data))
            if len(self._events) > 1:
                return  # a drain is queued already
        self._env.write_later(self._drain_events, None, ([],), b"events*")

    def _drain_events(self, txn: Any, holder: list[list[tuple[bytes, bytes | Callable[[], bytes]]]]) -> None:
        """(Writer thread) append the buffered events; note their instances for the wake-ups after the commit.

        ``holder`` is this drain's own: the buffer is taken into it once, so a
        transaction run again (the map grew, a batch split) writes the same
        events again, not nothing.
        """
        def take() -> list[tuple[bytes, bytes | Callable[[], bytes]]]:
            if not holder:
                with self._events_lock:
                    taken, self._events = self._events, []
                holder.append(taken)
                self._drained.append(holder)
            return holder[0]

        eventlog.append_many(txn, self._tables, take)

    async def read_events(self, instance_id: str, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Up to ``limit`` of the instance's stored events with an id over ``after``: ``(id, data)``."""
        check_event_range(after, limit)
        if not is_valid_id(instance_id):
            return []
        with self._env.read() as txn:
            return eventlog.read(txn, self._tables, instance_id, after, limit)

    async def read_all_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` stored events of every instance with an id over ``after``: ``(id, instance, data)``."""
        check_event_range(after, limit)
        with self._env.read() as txn:
            return eventlog.read_all(txn, self._tables, after, limit)

    async def last_event_id(self) -> int:
        """The id of the newest stored event (``0``: none yet)."""
        with self._env.read() as txn:
            return eventlog.last_id(txn, self._tables)

    def on_change(self, fn: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``fn(kind, instance id)`` (on the writer's thread) after each commit that ends an instance
        (``"end"``) or appends to its event log (``"events"``); a function that stops the calls."""
        self._observers = [*self._observers, fn]  # (copied: the writer's thread reads it unlocked)

        def stop() -> None:
            self._observers = [f for f in self._observers if f is not fn]

        return stop

    # -- external jobs -----------------------------------------------------

    async def enqueue_job(self, job: JobRecord) -> bool:
        """Durably queue an external job unless it is queued already; whether it was new."""
        data = encode_job(job, limit=self.max_payload_bytes)
        args = (self._tables, step_key_bytes(job.instance_id, job.step_key), job.queue.encode(), data,
                signal_key_prefix(job.instance_id, job_signal(job.step_key)))
        new: bool = await self._env.write(jobs.enqueue, True, None, args, b"work")
        return new

    async def claim_jobs(self, owner: Owner, queue_names: list[str], limit: int, *,
                         free: Mapping[str, int] | None = None, now: datetime | None = None) -> list[JobRecord]:
        """Take up to ``limit`` jobs of ``queue_names`` (waiting, or held by a worker that is gone).

        A read looks first: with no job waiting or held, nothing is written.
        """
        with self._env.read() as txn:
            if not _any_prefix(txn, self._tables.jobq, queue_names) and not jobs.stale_held(
                    txn, self._tables, owner.id, queue_names):
                return []
        served = [(q, (free or {}).get(q)) for q in queue_names]
        args = (self._tables, owner, served, limit, _micros(now or datetime.now(UTC)))
        found = await self._env.write(jobs.claim, True, None, args)
        return [decode_job(data, f"{self.path}:jobs/{key!r}", self.path) for key, data in found]

    async def note_job_attempts(self, job: JobRecord, owner_id: str) -> bool:
        """Durably record a held job's ``attempts`` and ``retry_at``; ``False`` if ``owner_id`` holds it no more."""
        data = encode_job(job)
        args = (self._tables, step_key_bytes(job.instance_id, job.step_key), owner_id.encode(), data)
        done: bool = await self._env.write(jobs.note_attempts, True, None, args)
        return done

    async def finish_job(self, job: JobRecord, owner_id: str, outcome: Any) -> bool:
        """Remove a job this owner holds and deliver ``outcome`` to its instance, in one durable write.

        ``False`` (nothing written) if the owner holds the job no more (taken
        over, or its instance ended).
        """
        data = encode_value(outcome, f"the result of job {job.step_name!r}", instance_id=job.instance_id,
                            limit=self.max_payload_bytes)
        prefix = signal_key_prefix(job.instance_id, job_signal(job.step_key))
        args = (self._tables, step_key_bytes(job.instance_id, job.step_key), owner_id.encode(), prefix, data)
        done: bool = await self._env.write(jobs.finish, True, None, args, b"signal " + job.instance_id.encode())
        if done:
            self._waker.notify("work")  # a job slot of its queue is free: workers waiting on it look again
        return done

    async def get_jobs(self, instance_id: str | None = None) -> list[tuple[JobRecord, str | None]]:
        """Queued and running jobs (of one instance, or all), each with the owner id running it, if any."""
        with self._env.read() as txn:
            found = jobs.waiting(txn, self._tables, instance_id)
        return [(decode_job(data, f"{self.path}:jobs/{key!r}", self.path), holder.decode() if holder else None)
                for key, data, holder in found]

    # -- wake-ups ----------------------------------------------------------

    def listener(self, kinds: list[str] | tuple[str, ...]) -> Listener:
        """A listener (not opened yet) for the wake-ups of ``kinds`` that other processes' commits on this store
        send (a datagram socket in the store's wake directory; see :mod:`durable.stores._wake`)."""
        return Listener(self.path, kinds)

    def _notify(self, notes: list[bytes]) -> None:
        """After a commit (writer thread): wake the processes listening for these kinds of change (one look at
        the listeners per kind: a commit of a hundred ends costs one when nobody listens)."""
        if b"events*" in notes:
            drained, self._drained = self._drained, []
            notes = notes + [b"events " + key for holder in drained for key, _ in holder[0]]
        observers = self._observers
        listening: dict[bytes, bool] = {}
        sent: set[bytes] = set()
        for note in notes:
            if note == b"events*" or note in sent:
                continue
            sent.add(note)
            kind, _, detail = note.partition(b" ")
            if observers and (kind == b"end" or kind == b"events"):
                for fn in observers:
                    try:
                        fn(kind.decode(), detail.decode())
                    except Exception:  # an observer's failure must not stop the wake-ups
                        logging.getLogger("durable.store").exception("a change observer failed")
            heard = listening.get(kind)
            if heard is None:
                heard = listening[kind] = self._waker.listens(kind.decode())
            if heard:
                self._waker.notify(kind.decode(), detail)

    # -- lifecycle -------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the group-commit writer thread until cancelled, then flush and stop it."""
        await self._env.run(task_status=task_status)

    def stats(self) -> dict[str, Any]:
        """Map size, entries and the writer's batch counts (for benchmarks and the CLI)."""
        return self._env.stats()

    def close(self) -> None:
        """Close the environment."""
        self._env.close()
        self._waker.close()


def _any_prefix(txn: Any, db: Any, names: list[str]) -> bool:
    """Whether ``db`` has a key starting with ``name NUL`` for one of ``names``."""
    cursor = txn.cursor(db=db)
    for name in names:
        prefix = name.encode() + b"\0"
        if cursor.set_range(prefix) and bytes(cursor.key()).startswith(prefix):
            return True
    return False


def _micros(when: datetime | None) -> int | None:
    return (when - EPOCH) // timedelta(microseconds=1) if when is not None else None

