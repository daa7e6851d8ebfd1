"""The :class:`Store` protocol every checkpoint backend implements, and its key scheme.

The operations are those of the TypeScript original's workflow adapter
(create / get / update / delete instance, instances by workflow and status,
running instances) plus step checkpoints. Writes take ``durable``: a durable
write has reached the disk when it returns; a non-durable one (bookkeeping
such as "step started") may be committed later with the next durable write,
and may be lost in a crash, which recovery tolerates.

Leases (see :mod:`durable.stores._lease`): each unfinished instance is held by
the :class:`Owner` (engine) that runs it. Writes that pass ``owner=`` are
*fenced*: they raise ``LeaseLost`` instead of landing when the instance's
lease is no longer that owner's or the instance has finished meanwhile.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import trio

from .._model.jobs import JobRecord
from .._model.queues import Queue
from .._model.records import InstanceStatus, StepResult, WorkflowInstance
from .._model.serde import DEFAULT_MAX_PAYLOAD_BYTES
from ..errors import StoreError
from ._lease import Owner


class StoreTooNew(StoreError):
    """A store written by a newer durable than this one: no retry will open it (upgrade durable)."""

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "Store", "StoreTooNew", "signal_key_prefix", "step_key_bytes"]

_MAX_KEY = 480


def signal_key_prefix(instance_id: str, name: str) -> bytes:
    """The stored keys of an instance's queued signals ``name`` start with this; an 8-byte seq follows."""
    return instance_id.encode() + b"\0" + name.encode() + b"\0"


def step_key_bytes(instance_id: str, key: str) -> bytes:
    """The stored key of a step checkpoint: ``instance id NUL step key`` (long keys hashed)."""
    raw = instance_id.encode() + b"\0" + key.encode()
    if len(raw) > _MAX_KEY:
        raw = raw[:400] + b"#" + hashlib.sha256(raw).hexdigest().encode()
    return raw


@runtime_checkable
class Store(Protocol):
    """**Protocol**: where instances and step checkpoints are kept.

    Implementations: :class:`~durable.MemoryStore` and :class:`~durable.LMDBStore`.
    Reads return records as stored; writes take immutable records.

    Optional: a synchronous ``put_step_later(instance_id, step, *, owner=None)``
    queueing a non-durable checkpoint (a step's "running" marker) in order with
    the other writes, without an await. The engine uses it when present, else
    awaits ``put_step(..., durable=False)``. It is looked up on the store's
    class, so a wrapper delegating to another store through ``__getattr__``
    gets every write, markers included, through its own ``put_step``.

    Optional: a settable ``max_payload_bytes`` attribute (an int, or ``None``
    for no limit): the largest encoded input, output, step result or signal
    payload the store takes; a larger one raises
    :class:`~durable.SerializationError` before anything of it is written.
    Both stores have it (default 16 MiB, :data:`DEFAULT_MAX_PAYLOAD_BYTES`);
    ``Engine(store, max_payload_bytes=...)`` sets it, and refuses a store
    without it.

    .. versionadded:: 0.1.0
    """

    @property
    def path(self) -> str | None:
        """Where the store lives on disk (``None`` for memory)."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the store's background work (a writer thread, say) until cancelled."""
        ...

    async def create_instance(
        self, instance: WorkflowInstance, *, owner: Owner | None = None
    ) -> tuple[WorkflowInstance, bool]:
        """Durably store a new instance unless its id exists; returns (stored, created).

        With ``owner``, the new instance's lease is the owner's, in the same write.
        """
        ...

    async def get_instance(self, instance_id: str, *, steps: bool = True) -> WorkflowInstance | None:
        """The instance with its step results keyed by step name, or ``None``.

        ``steps=False`` leaves ``step_results`` empty and skips reading them.
        """
        ...

    async def update_instance(
        self, instance: WorkflowInstance, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Replace the stored instance record (its step results are stored apart).

        A finished status is final: a later write with another status is
        ignored, or, when fenced by ``owner``, raises ``LeaseLost``. Reaching a
        finished status releases the instance's lease.
        """
        ...

    async def cancel_instance(self, instance_id: str, *, error: str, error_type: str,
                              when: datetime) -> WorkflowInstance | None:
        """Durably record an unfinished instance ``cancelled`` (its ``error``, ``error_type`` and
        ``completed_at``), reading it in the same write, so that an end its engine writes meanwhile is never
        overwritten nor reported as a cancel; the record written, or ``None`` if it is missing or finished.

        .. versionadded:: 0.2.0
        """
        ...

    async def delete_instance(self, instance_id: str) -> bool:
        """Remove an instance and its checkpoints; False if there was none."""
        ...

    async def get_instances_by_workflow(
        self, workflow_name: str, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of one workflow, optionally of one status, oldest first (``steps``: as in get_instance)."""
        ...

    async def get_all_instances(
        self, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of every workflow, optionally of one status, oldest first (``steps``: as in get_instance)."""
        ...

    async def get_running_instances(self, *, steps: bool = True, waiting: bool = True) -> list[WorkflowInstance]:
        """Every instance whose status is pending or running, oldest first (``steps``: as in get_instance).

        ``waiting=False`` leaves out those waiting in a queue for a worker's claim (or for their delay), before
        reading them: a worker's first look at orphans then costs nothing per instance of a queued backlog.

        .. versionchanged:: 0.3.0 ``waiting``.
        """
        ...

    async def put_step(
        self, instance_id: str, step: StepResult, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Store one step checkpoint under ``step.key``, replacing any earlier one (fenced by ``owner``)."""
        ...

    async def get_steps(self, instance_id: str) -> dict[str, StepResult]:
        """Every step checkpoint of an instance, keyed by checkpoint key."""
        ...

    async def send_signal(self, instance_id: str, name: str, payload: Any) -> int:
        """Queue signal ``name`` for an instance, durably; returns its sequence number (FIFO per name)."""
        ...

    async def peek_signal(self, instance_id: str, name: str) -> tuple[int, Any] | None:
        """The oldest queued signal ``name`` of an instance: ``(seq, payload)``, or ``None``."""
        ...

    async def take_signal(
        self, instance_id: str, name: str, seq: int, step: StepResult, *, owner: str | None = None
    ) -> bool:
        """In one durable write: remove queued signal ``seq`` and store ``step`` (the wait that took it).

        ``False`` (and nothing written) if that signal is not queued; fenced by ``owner``.
        """
        ...

    async def signal_clock(self) -> int:
        """A number that changes whenever any signal is sent (engines poll it for other processes' signals)."""
        ...

    async def claim(self, instance_ids: list[str], owner: Owner, *, limit: int | None = None,
                    take_queued: bool = False) -> list[str]:
        """Durably take the leases of those unfinished instances whose holder is gone; returns the taken ids.

        Instances waiting in a queue are skipped (a worker's :meth:`claim_queued`
        takes them, under the queue's limits), unless ``take_queued``: then
        they leave the queue, in flight (an explicit ``start(id=...)`` of one).

        Also records ``owner`` (as :meth:`heartbeat` does). Instances already
        held by ``owner`` count as taken. At most ``limit`` are taken.
        """
        ...

    async def heartbeat(self, owner: Owner) -> None:
        """Record ``owner`` as alive (a non-durable write)."""
        ...

    async def release(self, owner_id: str) -> None:
        """Durably remove an owner record: its instances may be taken over at once."""
        ...

    async def orphaned(self, owner_id: str) -> list[str]:
        """Unfinished instances leased to an engine that is gone (its record missing or dead), other than
        ``owner_id``: what a worker's periodic take-over looks at, without reading every unfinished instance.

        .. versionadded:: 0.2.0
        """
        ...

    async def lost_leases(self, owner_id: str, instance_ids: list[str]) -> list[str]:
        """Those of ``instance_ids`` that ``owner_id`` no longer holds, or that finished."""
        ...

    async def get_lease(self, instance_id: str) -> Owner | None:
        """The owner record of whoever holds the instance's lease, if any."""
        ...

    async def lease_holders(self, instance_ids: list[str]) -> dict[str, str]:
        """The owner id holding the lease of each of ``instance_ids`` that is leased, in one read (a
        worker's first look for orphans: the instances other workers run may be thousands).

        .. versionadded:: 0.3.0
        """
        ...

    # -- queues and workers (0.2.0) -------------------------------------------
    #
    # ``create_instance`` of a *pending* instance with a ``queue`` and no
    # ``owner`` queues it: no engine runs it until a worker claims it with
    # :meth:`claim_queued`, and ``claim`` (take-over) skips it while it waits.
    # If another unfinished instance of that queue holds its ``dedup_id``,
    # nothing is written and that instance is returned, with ``False``.
    # An instance reaching a finished status leaves its queue (its waiting
    # entry, its in-flight entry and its dedup id), its external jobs are
    # dropped, and its event log gets its terminal event, in the same write.

    async def register_queue(self, queue: Queue) -> None:
        """Durably record a queue's limits (the last registration wins)."""
        ...

    async def get_queues(self) -> dict[str, Queue]:
        """The queues registered on this store, by name."""
        ...

    async def get_queue(self, name: str) -> Queue | None:
        """The queue ``name`` as registered on this store, or ``None`` (a store may read that one alone)."""
        return (await self.get_queues()).get(name)

    async def queue_depths(self, name: str) -> tuple[int, int]:
        """``(waiting, in flight)`` instances of queue ``name``."""
        ...

    async def register_worker(self, owner: Owner, workflows: list[str], queue_names: list[str],
                              job_queues: list[str], workflow_queues: Mapping[str, str] | None = None) -> None:
        """Durably record what an engine serves; its workflows are known (:meth:`known_workflows`) from then on,
        with the queue each names of its own (``workflow_queues``)."""
        ...

    async def workflow_queues(self) -> dict[str, str]:
        """The queue of each known workflow that names one (``@workflow(queue=...)``), as last registered."""
        ...

    async def known_workflows(self) -> list[str]:
        """Every workflow name an engine on this store has ever registered."""
        ...

    async def servers(self) -> dict[str, dict[str, Any]]:
        """What each live engine serves, by owner id: ``{"workflows": [...], "queues": [...], "jobs": [...]}``."""
        ...

    async def claim_queued(self, owner: Owner, served: list[tuple[str, int | None]], workflows: frozenset[str] | None,
                           limit: int | None, now: datetime) -> tuple[list[str], datetime | None]:
        """Durably take waiting instances of the ``served`` queues, leased to ``owner``.

        ``served`` pairs each queue name with how many more this worker may
        take of it (``None``: any). Each queue's ``concurrency`` (instances in
        flight across all workers) and ``rate_limit`` (starts per window), as
        registered, hold; only instances of ``workflows`` (``None``: any) whose
        ``not_before`` has come are taken, highest priority first, then in
        the order they were queued; at most ``limit`` in all. Returns the ids
        taken and the earliest time a skipped instance or a rate limit will
        let another be taken (``None``: none waits for a time).
        """
        ...

    async def requeue(self, instance_id: str) -> bool:
        """Durably put an unfinished instance whose engine is gone (no live lease holder) back in its queue (the
        default queue if it has none) for a worker to claim; ``False`` if it finished, waits in a queue
        already, or a live engine holds it."""
        ...

    def append_event(self, instance_id: str, data: bytes | Callable[[], bytes]) -> None:
        """Queue one encoded event (:mod:`durable._model.eventlog`) for the instance's log; non-durable.

        ``data`` may be a function returning the bytes: the store calls it when it
        writes the event (the LMDB store on its writer thread), so the encoding
        costs the caller nothing.
        """
        ...

    async def read_events(self, instance_id: str, after: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Up to ``limit`` of the instance's stored events with an id over ``after``, oldest first: ``(id, data)``.

        Ids are store-wide, increasing, never reused.
        """
        ...

    async def read_all_events(self, after: int = 0, limit: int = 100) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` stored events of every instance with an id over ``after``, oldest first:
        ``(id, instance id, data)``.

        .. versionadded:: 0.2.0
        """
        ...

    async def last_event_id(self) -> int:
        """The id of the newest stored event (``0``: none yet).

        .. versionadded:: 0.2.0
        """
        ...

    def on_change(self, fn: Callable[[str, str], None]) -> Callable[[], None]:
        """Call ``fn(kind, instance_id)`` after each committed change of kind ``"end"`` (an instance finished)
        or ``"events"`` (events were appended to its log) made through this store object; returns a function
        that stops the calls.

        ``fn`` may be called on any thread (the LMDB store calls it on its
        writer thread) and must return at once. Changes made by other processes
        reach them through wake-ups (:mod:`durable.stores._wake`), not here.

        .. versionadded:: 0.2.0
        """
        ...

    async def enqueue_job(self, job: JobRecord) -> bool:
        """Durably queue an external job, unless one is queued at its (instance, step key); whether it was new."""
        ...

    async def claim_jobs(self, owner: Owner, queue_names: list[str], limit: int, *,
                         free: Mapping[str, int] | None = None, now: datetime | None = None) -> list[JobRecord]:
        """Durably take up to ``limit`` jobs of those queues: those held by a gone owner, then waiting ones,
        under each queue's ``concurrency`` (jobs held, across all workers) and ``rate_limit`` (starts, shared
        with its instances), and at most ``free[queue]`` of a queue (this worker's slots)."""
        ...

    async def note_job_attempts(self, job: JobRecord, owner_id: str) -> bool:
        """Durably record a held job's ``attempts`` and ``retry_at`` (before a retry waits out its backoff);
        ``False`` (nothing written) if ``owner_id`` holds it no more."""
        ...

    async def finish_job(self, job: JobRecord, owner_id: str, outcome: Any) -> bool:
        """In one durable write: remove the job ``owner_id`` holds and queue ``outcome`` as its instance's
        signal ``job_signal(job.step_key)``. ``False`` (nothing written) if that owner holds it no more."""
        ...

    async def get_jobs(self, instance_id: str | None = None) -> list[tuple[JobRecord, str | None]]:
        """Queued and running jobs (of one instance, or all), each with the id of the owner running it, if any."""
        ...

    def close(self) -> None:
        """Release the store's resources; further use is an error."""
        ...
