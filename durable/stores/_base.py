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
from typing import Any, Protocol, runtime_checkable

import trio

from .._model.records import InstanceStatus, StepResult, WorkflowInstance
from .._model.serde import DEFAULT_MAX_PAYLOAD_BYTES
from ._lease import Owner

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "Store", "signal_key_prefix", "step_key_bytes"]

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

    async def get_running_instances(self, *, steps: bool = True) -> list[WorkflowInstance]:
        """Every instance whose status is pending or running, oldest first (``steps``: as in get_instance)."""
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

    async def claim(self, instance_ids: list[str], owner: Owner, *, limit: int | None = None) -> list[str]:
        """Durably take the leases of those unfinished instances whose holder is gone; returns the taken ids.

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

    async def lost_leases(self, owner_id: str, instance_ids: list[str]) -> list[str]:
        """Those of ``instance_ids`` that ``owner_id`` no longer holds, or that finished."""
        ...

    async def get_lease(self, instance_id: str) -> Owner | None:
        """The owner record of whoever holds the instance's lease, if any."""
        ...

    def close(self) -> None:
        """Release the store's resources; further use is an error."""
        ...
