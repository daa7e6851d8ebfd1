"""The PostgreSQL store: many engines, in processes on many hosts, share one set of workflows.

:class:`PostgresStore` is the :class:`~durable.stores.Store` protocol over a database schema
(``schema.py``: tables and versioned migrations): each method runs table functions (``tables.py``,
``queues.py``, ``jobs.py``, ``eventlog.py``) through the connections, writer and readers of its base,
``database.py`` (threads, faults and wake-ups are described there).

Records are the same cloudpickles the other stores keep (``bytea``): the database is exactly as trusted as
the code that reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, final

from ..._model.clock import EPOCH
from ..._model.eventlog import check_event_range
from ..._model.ids import check_instance_id, check_signal_name, check_workflow_name, is_valid_id
from ..._model.jobs import JobRecord, decode_job, encode_job, job_signal
from ..._model.queues import DEFAULT_QUEUE, Queue
from ..._model.records import InstanceStatus, StepResult, WorkflowInstance
from ..._model.serde import check_step_input, decode_value, encode_instance, encode_step, encode_value
from .._base import step_key_bytes
from .._lease import Owner
from . import eventlog, jobs, owners, queues, tables
from .database import Database
from .owners import OwnerRow
from .schema import SCHEMA_VERSION

__all__ = ["PostgresStore", "SCHEMA_VERSION"]


@final
class PostgresStore(Database):
    """A :class:`~durable.stores.Store` in a PostgreSQL database: engines on many hosts share its workflows.

    Args:
        url: a libpq connection URL (``postgresql://user@host/db?sslmode=...``),
            passed to libpq untouched; credentials may come from it or from
            libpq's environment variables and files. It is never shown with
            its password (see :func:`redact`).
        schema: the database schema holding the store's tables; created, and
            migrated to this code's version, on first use. Default: the URL's
            ``schema`` query parameter (``postgresql://host/db?schema=orders``,
            taken out before the URL goes to libpq), else ``"durable"``.
        lease_ttl: seconds after its last heartbeat (on the database's clock)
            when an engine on another host counts as gone; ``None`` (default):
            the ttl each engine recorded (its ``Engine(lease_ttl=...)``).
            Engines on this host are judged by their pid, exactly.
        lazy_delay: longest time a non-durable write waits for a commit.
        max_payload_bytes: as for :class:`~durable.LMDBStore`.
        create: create the schema if it does not exist (``False``, as clients
            open stores: a :class:`~durable.StoreError` instead, and nothing is
            created). An existing schema of an older version is migrated
            either way.

    .. versionadded:: 0.3.0
    """

    # -- instances ---------------------------------------------------------------------

    async def get_instance(self, instance_id: str, *, steps: bool = True) -> WorkflowInstance | None:
        """The instance with its step results (unless ``steps=False``), or ``None``."""
        if not is_valid_id(instance_id):
            return None
        return await self._read(tables.load, self._where, instance_id, steps)

    async def get_instance_and_steps(self, instance_id: str) -> tuple[WorkflowInstance | None,
                                                                      dict[str, StepResult]]:
        """``(get_instance(id, steps=False), get_steps(id))`` in one read (the engine's, to continue a run)."""
        if not is_valid_id(instance_id):
            return None, {}
        claimed = self._claimed.pop(instance_id, None)
        if claimed is not None:
            return tables.with_checkpoints(self._where, claimed)
        return await self._read(tables.load_with_checkpoints, self._where, instance_id)

    async def get_steps(self, instance_id: str) -> dict[str, StepResult]:
        """Every checkpoint of an instance, keyed by checkpoint key."""
        if not is_valid_id(instance_id):
            return {}
        return await self._read(tables.load_steps, self._where, instance_id)

    async def get_instances_by_workflow(
        self, workflow_name: str, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of one workflow, optionally of one status, oldest first."""
        statuses = [s.value for s in InstanceStatus] if status is None else [InstanceStatus(status).value]
        return await self._read(tables.scan, self._where, statuses, workflow_name, steps)

    async def get_all_instances(
        self, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of every workflow, optionally of one status, oldest first."""
        statuses = [s.value for s in InstanceStatus] if status is None else [InstanceStatus(status).value]
        return await self._read(tables.scan, self._where, statuses, None, steps)

    async def get_running_instances(self, *, steps: bool = True, waiting: bool = True) -> list[WorkflowInstance]:
        """Instances that are pending or running, oldest first (``waiting=False``: not those waiting in a queue)."""
        return await self._read(tables.scan, self._where, tables.UNFINISHED, None, steps, waiting)

    def _owner_record(self, owner: Owner) -> OwnerRow:
        """What the ``owners`` row of ``owner`` gets: its id, its JSON record (encoded once per record), its ttl
        and how old its heartbeat is now (by this host's clock: a difference of two of its own readings, so the
        row's heartbeat is ``now()`` on the database's clock, less that age)."""
        cached = self._owner_cache
        if cached is None or cached[0] is not owner:
            cached = self._owner_cache = (owner, owner.encode().decode())
        return owner.id, cached[1], owner.ttl, max(0.0, time.time() - owner.heartbeat)

    async def create_instance(
        self, instance: WorkflowInstance, *, owner: Owner | None = None
    ) -> tuple[WorkflowInstance, bool]:
        """Durably store ``instance`` unless its id exists (leased to ``owner``); returns (stored, created)."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        data = encode_instance(instance, limit=self.max_payload_bytes)
        record = self._owner_record(owner) if owner is not None and not instance.finished else None
        queued = instance.queue is not None and owner is None
        created = await self._write(tables.create, (self._where, instance, data, record),
                                    note=b"work" if queued else None)
        if created is True:
            return instance, True
        existing = await self.get_instance(instance.id if created is False else str(created))
        if existing is None:  # deleted meanwhile
            raise self.fail(f"instance {instance.id!r} exists, but vanished before it could be read")
        return existing, False

    async def update_instance(
        self, instance: WorkflowInstance, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Replace the instance record (fenced by ``owner``); a finished status is final."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        data = encode_instance(instance, limit=self.max_payload_bytes)
        note = b"end " + instance.id.encode() if instance.finished else None
        await self._write(tables.put, (self._where, instance, data, owner), durable=durable, note=note)

    async def cancel_instance(self, instance_id: str, *, error: str, error_type: str,
                              when: datetime) -> WorkflowInstance | None:
        """Durably record an unfinished instance ``cancelled``, in one write that reads it; the record written,
        or ``None`` if it is missing or finished."""
        if not is_valid_id(instance_id):
            return None
        fields = {"error": error, "error_type": error_type, "completed_at": when}
        done: WorkflowInstance | None = await self._write(tables.cancel, (self._where, instance_id, fields),
                                                          note=b"end " + instance_id.encode())
        return done

    async def delete_instance(self, instance_id: str) -> bool:
        """Remove an instance and its checkpoints."""
        if not is_valid_id(instance_id):
            return False
        return await self._write(tables.delete, (self._where, instance_id))

    # -- steps ---------------------------------------------------------------------------

    async def put_step(
        self, instance_id: str, step: StepResult, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Store one checkpoint under ``step.key`` (fenced by ``owner``)."""
        if not durable:
            self.put_step_later(instance_id, step, owner=owner)
            return
        check_instance_id(instance_id)
        key = step_key_bytes(instance_id, step.key)
        data = encode_step(step, instance_id=instance_id, limit=self.max_payload_bytes)
        column = key[len(instance_id.encode()) + 1:]
        if owner is not None and await self._lone_step(instance_id, column, data, owner, key):
            return
        await self._write(tables.put_step, (instance_id, column, step, data, owner), key=key)

    def put_step_later(self, instance_id: str, step: StepResult, *, owner: str | None = None) -> None:
        """Queue a non-durable checkpoint (a step's "running" marker) without waiting for it; a later
        checkpoint of the same key in the same commit supersedes it (then it is never encoded)."""
        check_instance_id(instance_id)
        check_step_input(step, instance_id=instance_id, limit=self.max_payload_bytes)
        key = step_key_bytes(instance_id, step.key)
        column = key[len(instance_id.encode()) + 1:]
        self._write_later(tables.put_step, (instance_id, column, step, None, owner), key=key)

    # -- signals -------------------------------------------------------------------------

    async def send_signal(self, instance_id: str, name: str, payload: Any) -> int:
        """Queue signal ``name`` for an instance, durably; returns its sequence number."""
        check_instance_id(instance_id)
        check_signal_name(name)
        data = encode_value(payload, f"the payload of signal {name!r}", instance_id=instance_id,
                            limit=self.max_payload_bytes)
        seq: int = await self._write(tables.send_signal, (instance_id, name, data),
                                     note=b"signal " + instance_id.encode())
        return seq

    async def peek_signal(self, instance_id: str, name: str) -> tuple[int, Any] | None:
        """The oldest queued signal ``name`` of an instance, or ``None``."""
        if not is_valid_id(instance_id) or not isinstance(name, str) or "\0" in name:
            return None

        def peek(cur: tables.Cur) -> tuple[int, bytes] | None:
            cur.execute("SELECT seq, payload FROM signals WHERE instance_id = %s AND name = %s ORDER BY seq "
                        "LIMIT 1", (instance_id, name))
            row = cur.fetchone()
            return (int(row[0]), bytes(row[1])) if row is not None else None

        found = await self._read(peek)
        if found is None:
            return None
        return found[0], decode_value(found[1], f"{self._where}:signals/{instance_id}/{name}/{found[0]}")

    async def take_signal(
        self, instance_id: str, name: str, seq: int, step: StepResult, *, owner: str | None = None
    ) -> bool:
        """Remove queued signal ``seq`` and store ``step``, in one durable write; ``False`` if it is not queued."""
        check_instance_id(instance_id)
        data = encode_step(step, instance_id=instance_id)
        column = tables.step_column(instance_id, step.key)
        taken = await self._write(tables.take_signal, (instance_id, name, seq, column, data, owner))
        return taken is True

    async def signal_clock(self) -> int:
        """Changes whenever a signal is sent, by any process."""
        def clock(cur: tables.Cur) -> int:
            cur.execute("SELECT value FROM meta WHERE key = 'signal_clock'")
            row = cur.fetchone()
            return int(row[0]) if row is not None else 0

        return await self._read(clock)

    # -- leases --------------------------------------------------------------------------

    async def claim(self, instance_ids: list[str], owner: Owner, *, limit: int | None = None,
                    take_queued: bool = False) -> list[str]:
        """Durably take the leases of those unfinished instances whose holder is gone."""
        ids = [i for i in instance_ids if is_valid_id(i)]
        taken: list[str] = await self._write(tables.claim, (ids, self._owner_record(owner), limit, take_queued,
                                                            self.lease_ttl))
        return taken

    async def heartbeat(self, owner: Owner) -> None:
        """Record ``owner`` as alive (non-durable; its time is the database's)."""
        self._write_later(owners.put_owner, self._owner_record(owner))

    async def release(self, owner_id: str) -> None:
        """Durably remove an owner record: its instances may be taken over at once."""
        await self._write(tables.delete_owner, (owner_id,), note=b"work")

    async def orphaned(self, owner_id: str) -> list[str]:
        """Unfinished instances leased to an engine that is gone (not ``owner_id``)."""
        return await self._read(tables.orphaned, owner_id, self.lease_ttl)

    async def lost_leases(self, owner_id: str, instance_ids: list[str]) -> list[str]:
        """Those of ``instance_ids`` that ``owner_id`` no longer holds, or that finished."""
        if not instance_ids:
            return []
        return await self._read(tables.lost, owner_id, list(instance_ids))

    async def lease_holders(self, instance_ids: list[str]) -> dict[str, str]:
        """The owner id holding each of ``instance_ids`` that is leased."""
        if not instance_ids:
            return {}
        return await self._read(tables.holders, list(instance_ids))

    async def get_lease(self, instance_id: str) -> Owner | None:
        """The owner record of whoever holds the instance's lease, if any."""
        if not is_valid_id(instance_id):
            return None
        return await self._read(tables.get_lease, instance_id)

    # -- queues and workers ----------------------------------------------------------------

    async def register_queue(self, queue: Queue) -> None:
        """Durably record a queue's limits (every worker reads them from here)."""
        await self._write_again(queues.register_queue, lambda: (queue.name, queue.encode().decode()))

    async def get_queues(self) -> dict[str, Queue]:
        """The queues registered on this store, by name."""
        def load(cur: tables.Cur) -> dict[str, Queue]:
            cur.execute("SELECT name, record FROM queues ORDER BY name")
            return {name: Queue.decode(record.encode()) for name, record in cur.fetchall()}

        return await self._read(load)

    async def get_queue(self, name: str) -> Queue | None:
        """The queue ``name`` as registered, or ``None`` (its row alone is read)."""
        return await self._read(queues.get_queue, name)

    async def queue_depths(self, name: str) -> tuple[int, int]:
        """``(waiting, in flight)`` instances of queue ``name``."""
        return await self._read(queues.queue_depths, name)

    async def register_worker(self, owner: Owner, workflows: list[str], queue_names: list[str],
                              job_queues: list[str], workflow_queues: Mapping[str, str] | None = None) -> None:
        """Durably record what an engine serves (its workflows are known to clients from then on)."""
        await self._write_again(owners.put_owner, lambda: self._owner_record(owner))
        row = (owner.id, list(workflows), list(queue_names), list(job_queues), dict(workflow_queues or {}))
        await self._write_again(queues.put_worker, lambda: row)

    async def known_workflows(self) -> list[str]:
        """Every workflow name an engine on this store has registered."""
        return await self._read(queues.known_workflows)

    async def workflow_queues(self) -> dict[str, str]:
        """The queue of each known workflow that names one, as last registered."""
        return await self._read(queues.workflow_queues)

    async def servers(self) -> dict[str, dict[str, Any]]:
        """What each live engine serves (``workflows``, ``queues``, ``jobs``), by owner id."""
        return await self._read(queues.servers, self.lease_ttl)

    async def claim_queued(self, owner: Owner, served: list[tuple[str, int | None]], workflows: frozenset[str] | None,
                           limit: int | None, now: datetime) -> tuple[list[str], datetime | None]:
        """Take waiting instances of the ``served`` queues, under their limits (see ``queues.claim``).

        A read looks first: with nothing waiting, nothing is written.
        """
        names = [name for name, _ in served]
        if not names or not await self._read(queues.anything_waiting, names):
            return [], None
        now_us = (now - EPOCH) // timedelta(microseconds=1)
        taken, due, rows = await self._write(queues.claim, (self._owner_record(owner), list(served), workflows,
                                                            limit, now, now_us))
        # What the worker reads next of each (get_instance_and_steps), as the claim read it: kept until this
        # worker's next claim, no longer (only this engine writes the instances it holds).
        self._claimed = rows
        return taken, (EPOCH + timedelta(microseconds=due) if due is not None else None)

    async def requeue(self, instance_id: str) -> bool:
        """Durably put an unfinished instance whose engine is gone back in its queue."""
        if not is_valid_id(instance_id):
            return False
        done: bool = await self._write(tables.requeue, (self._where, instance_id, DEFAULT_QUEUE, self.lease_ttl),
                                       note=b"work")
        return done

    # -- event log ---------------------------------------------------------------------------

    def append_event(self, instance_id: str, data: bytes | Callable[[], bytes]) -> None:
        """Queue one encoded event for the instance's log (non-durable: it rides the next commit)."""
        with self._events_lock:
            self._events.append((instance_id, data))
            if len(self._events) > 1:
                return  # a drain is queued already
        self._write_later(self._drain_events, ([],), note=b"events*")

    async def read_events(self, instance_id: str, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Up to ``limit`` of the instance's stored events with an id over ``after``: ``(id, data)``."""
        check_event_range(after, limit)
        if not is_valid_id(instance_id):
            return []
        return await self._read(eventlog.read, instance_id, after, limit)

    async def read_all_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` stored events of every instance with an id over ``after``: ``(id, instance, data)``."""
        check_event_range(after, limit)
        return await self._read(eventlog.read_all, after, limit)

    async def last_event_id(self) -> int:
        """The id of the newest stored event (``0``: none yet)."""
        return await self._read(eventlog.last_id)

    def on_change(self, fn: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``fn(kind, instance id)`` (on a writer thread) after each commit through this store object that
        ends an instance (``"end"``) or appends to its event log (``"events"``); a function that stops it."""
        self._observers = [*self._observers, fn]

        def stop() -> None:
            self._observers = [f for f in self._observers if f is not fn]

        return stop

    # -- external jobs ---------------------------------------------------------------------

    async def enqueue_job(self, job: JobRecord) -> bool:
        """Durably queue an external job unless it is queued already; whether it was new."""
        data = encode_job(job, limit=self.max_payload_bytes)
        args = (job.instance_id, tables.step_column(job.instance_id, job.step_key), job.queue, data,
                job_signal(job.step_key))
        new: bool = await self._write(jobs.enqueue, args, note=b"work")
        return new

    async def claim_jobs(self, owner: Owner, queue_names: list[str], limit: int, *,
                         free: Mapping[str, int] | None = None, now: datetime | None = None) -> list[JobRecord]:
        """Take up to ``limit`` jobs of ``queue_names`` (waiting, or held by a worker that is gone)."""
        names = list(queue_names)
        if not names or not await self._read(jobs.claimable, owner.id, names, self.lease_ttl):
            return []
        served = [(q, (free or {}).get(q)) for q in names]
        when = now or datetime.now(UTC)
        now_us = (when - EPOCH) // timedelta(microseconds=1)
        found = await self._write(jobs.claim, (self._owner_record(owner), served, limit, when, now_us,
                                               self.lease_ttl))
        return [decode_job(data, f"{self._where}:jobs") for data in found]

    async def note_job_attempts(self, job: JobRecord, owner_id: str) -> bool:
        """Durably record a held job's ``attempts`` and ``retry_at``; ``False`` if ``owner_id`` holds it no more."""
        data = encode_job(job)
        done: bool = await self._write(jobs.note_attempts, (job.instance_id, tables.step_column(
            job.instance_id, job.step_key), owner_id, data))
        return done

    async def finish_job(self, job: JobRecord, owner_id: str, outcome: Any) -> bool:
        """Remove a job this owner holds and deliver ``outcome`` to its instance, in one durable write."""
        data = encode_value(outcome, f"the result of job {job.step_name!r}", instance_id=job.instance_id,
                            limit=self.max_payload_bytes)
        args = (job.instance_id, tables.step_column(job.instance_id, job.step_key), owner_id,
                job_signal(job.step_key), data)
        # (and "work": a job slot of its queue is free, workers waiting on it look again)
        done: bool = await self._write(jobs.finish, args, note=b"signal " + job.instance_id.encode() + b"\0work")
        return done

    async def get_jobs(self, instance_id: str | None = None) -> list[tuple[JobRecord, str | None]]:
        """Queued and running jobs (of one instance, or all), each with the owner id running it, if any."""
        if instance_id is not None and not is_valid_id(instance_id):
            return []
        found = await self._read(jobs.waiting, instance_id)
        return [(decode_job(data, f"{self._where}:jobs/{iid}/{key!r}"), holder) for iid, key, data, holder in found]
