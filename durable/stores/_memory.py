"""The in-process store: dictionaries of encoded records.

Records go through the same codec as on disk, so a value that would fail to
checkpoint in LMDB fails the same way here, and callers never share mutable
state with the store.
"""

from __future__ import annotations

from typing import final

import trio

from .._records import InstanceStatus, StepResult, WorkflowInstance
from .._serde import decode_instance, decode_step, encode_instance, encode_step
from ._base import check_instance_id, check_workflow_name, is_valid_id
from ._join import join_steps

__all__ = ["MemoryStore"]


@final
class MemoryStore:
    """A :class:`~durable.stores.Store` kept in memory: for tests and ephemeral runs.

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self._instances: dict[str, bytes] = {}
        self._steps: dict[str, dict[str, bytes]] = {}
        self._order: dict[str, int] = {}
        self._status: dict[str, InstanceStatus] = {}
        self._counter = 0

    @property
    def path(self) -> str | None:
        """Always ``None``: nothing is on disk."""
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing to run in the background; returns once started."""
        task_status.started()

    async def create_instance(self, instance: WorkflowInstance) -> tuple[WorkflowInstance, bool]:
        """Store ``instance`` unless its id exists; returns (stored, created)."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        existing = self._instances.get(instance.id)
        if existing is not None:
            found = await self.get_instance(instance.id)
            assert found is not None
            return found, False
        self._instances[instance.id] = encode_instance(instance)
        self._status[instance.id] = InstanceStatus(instance.status)
        self._steps[instance.id] = {}
        self._order[instance.id] = self._counter
        self._counter += 1
        return instance, True

    async def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        """The instance with its step results, or ``None``."""
        data = self._instances.get(instance_id) if is_valid_id(instance_id) else None
        if data is None:
            return None
        return join_steps(decode_instance(data, f"memory:{instance_id}"), (await self.get_steps(instance_id)).values())

    async def update_instance(self, instance: WorkflowInstance, *, durable: bool = True) -> None:
        """Replace the instance record."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        data = encode_instance(instance)
        old = self._status.get(instance.id)
        if old is not None and old.finished and old != instance.status:
            return  # a finished status is final: a late write never reopens it
        self._status[instance.id] = InstanceStatus(instance.status)
        if instance.id not in self._instances:
            self._order[instance.id] = self._counter
            self._counter += 1
            self._steps.setdefault(instance.id, {})
        self._instances[instance.id] = data

    async def delete_instance(self, instance_id: str) -> bool:
        """Remove an instance and its checkpoints."""
        self._steps.pop(instance_id, None)
        self._order.pop(instance_id, None)
        self._status.pop(instance_id, None)
        return self._instances.pop(instance_id, None) is not None

    async def _all(self) -> list[WorkflowInstance]:
        out = []
        for iid in self._instances:
            inst = await self.get_instance(iid)
            if inst is not None:
                out.append(inst)
        out.sort(key=lambda i: (i.created_at is None, i.created_at or 0, i.id))
        return out

    async def get_instances_by_workflow(
        self, workflow_name: str, status: InstanceStatus | str | None = None
    ) -> list[WorkflowInstance]:
        """Instances of one workflow, optionally of one status, oldest first."""
        wanted = None if status is None else InstanceStatus(status)
        return [
            i for i in await self._all()
            if i.workflow_name == workflow_name and (wanted is None or i.status == wanted)
        ]

    async def get_running_instances(self) -> list[WorkflowInstance]:
        """Instances that are pending or running, oldest first."""
        return [i for i in await self._all() if not i.finished]

    async def put_step(self, instance_id: str, step: StepResult, *, durable: bool = True) -> None:
        """Store one checkpoint under ``step.key``."""
        check_instance_id(instance_id)
        data = encode_step(step, instance_id=instance_id)
        self._steps.setdefault(instance_id, {})[step.key] = data

    async def get_steps(self, instance_id: str) -> dict[str, StepResult]:
        """Every checkpoint of an instance, keyed by checkpoint key."""
        return {
            key: decode_step(data, f"memory:{instance_id}/{key}")
            for key, data in self._steps.get(instance_id, {}).items()
        }

    def close(self) -> None:
        """Nothing to release."""
