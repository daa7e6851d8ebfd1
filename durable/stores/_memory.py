"""The in-process store: dictionaries of encoded records.

Records go through the same codec as on disk, so a value that would fail to
checkpoint in LMDB fails the same way here, and callers never share mutable
state with the store.
"""

from __future__ import annotations

from typing import Any, final

import trio

from .._model.records import InstanceStatus, StepResult, WorkflowInstance
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
from ._join import join_steps
from ._lease import LeaseLost, Owner, may_claim, record_alive

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
        existing = self._instances.get(instance.id)
        if existing is not None:
            found = await self.get_instance(instance.id)
            assert found is not None
            return found, False
        self._instances[instance.id] = encode_instance(instance, limit=self.max_payload_bytes)
        self._status[instance.id] = InstanceStatus(instance.status)
        self._steps[instance.id] = {}
        self._order[instance.id] = self._counter
        self._counter += 1
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
        self._status[instance.id] = InstanceStatus(instance.status)
        if instance.finished:
            self._leases.pop(instance.id, None)
        if instance.id not in self._instances:
            self._order[instance.id] = self._counter
            self._counter += 1
            self._steps.setdefault(instance.id, {})
        self._instances[instance.id] = data

    async def delete_instance(self, instance_id: str) -> bool:
        """Remove an instance and its checkpoints."""
        for queue in [k for k in self._signals if k[0] == instance_id]:
            del self._signals[queue]
        self._steps.pop(instance_id, None)
        self._order.pop(instance_id, None)
        self._status.pop(instance_id, None)
        self._leases.pop(instance_id, None)
        return self._instances.pop(instance_id, None) is not None

    async def _all(self, steps: bool) -> list[WorkflowInstance]:
        out = []
        for iid in self._instances:
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

    async def get_running_instances(self, *, steps: bool = True) -> list[WorkflowInstance]:
        """Instances that are pending or running, oldest first."""
        return [i for i in await self._all(steps) if not i.finished]

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

    async def claim(self, instance_ids: list[str], owner: Owner, *, limit: int | None = None) -> list[str]:
        """Take the leases of those unfinished instances whose holder is gone."""
        self._owners[owner.id] = owner
        taken: list[str] = []
        for iid in instance_ids:
            if limit is not None and len(taken) >= limit:
                break
            status = self._status.get(iid)
            if status is None or status.finished:
                continue
            if may_claim(self._leases.get(iid), owner.id, lambda h: record_alive(self._owners.get(h))):
                self._leases[iid] = owner.id
                taken.append(iid)
        return taken

    async def heartbeat(self, owner: Owner) -> None:
        """Record ``owner`` as alive."""
        self._owners[owner.id] = owner

    async def release(self, owner_id: str) -> None:
        """Forget an owner: its instances may be taken over."""
        self._owners.pop(owner_id, None)

    async def lost_leases(self, owner_id: str, instance_ids: list[str]) -> list[str]:
        """Those of ``instance_ids`` that ``owner_id`` no longer holds, or that finished."""
        return [
            iid for iid in instance_ids
            if self._leases.get(iid) != owner_id or InstanceStatus(self._status.get(iid, "failed")).finished
        ]

    async def get_lease(self, instance_id: str) -> Owner | None:
        """The owner holding the instance's lease, if any."""
        holder = self._leases.get(instance_id)
        return self._owners.get(holder) if holder is not None else None

    def close(self) -> None:
        """Nothing to release."""
