"""``resume()``: continuing the unfinished instances whose engine is gone.

A mixin of :class:`~durable._service.WorkflowService`, which defines the
state and the methods declared here. An instance is taken over only through
the store's lease claim, so any number of engines may resume at once and each
instance runs in exactly one of them; its checkpoints replay, nothing re-runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .._model.records import InstanceStatus, WorkflowInstance
from .run import Definition, Run
from ..errors import WorkflowTimeout

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["Resuming"]

log = logging.getLogger("durable.engine")


class Resuming:
    """``resume()`` and the take-over it shares with ``start(id=...)`` and wake-ups."""

    _engine: Engine
    _defs: dict[str, Definition]
    _runs: dict[str, Run]
    _unregistered: set[str]

    def _launch(self, definition: Definition, instance: WorkflowInstance, checkpoints: dict[str, Any],
                *, first: bool) -> Run:
        raise NotImplementedError  # WorkflowService's

    async def _finish(self, run: Run, status: InstanceStatus, output: Any, error: BaseException | None) -> None:
        raise NotImplementedError  # WorkflowService's

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
        engine = self._engine
        engine.nursery
        candidates: list[str] = []
        for inst in await engine.store.get_running_instances(steps=False):
            if inst.id in self._runs:
                continue
            if inst.workflow_name not in self._defs:
                if inst.id not in self._unregistered:  # once per instance: workers call resume() in a loop
                    self._unregistered.add(inst.id)
                    log.warning("not resuming instance %s: workflow %r is not registered",
                                inst.id, inst.workflow_name)
                continue
            candidates.append(inst.id)
        return await self._take_over(candidates, limit)

    async def _take_over(self, candidates: list[str], limit: int | None) -> list[str]:
        """Claim those of ``candidates`` whose owner is gone and continue them here; their ids."""
        engine = self._engine
        resumed: list[str] = []
        if not candidates:
            return resumed
        # Only instances whose owner is gone; the claim is one durable write.
        for instance_id in await engine.store.claim(candidates, engine.owner, limit=limit):
            if await self._continue(instance_id):
                resumed.append(instance_id)
        return resumed

    async def _continue(self, instance_id: str) -> bool:
        """Continue an unfinished instance this engine holds the lease of, replaying its checkpoints.

        ``False`` if there is nothing to run: it finished meanwhile (a cancel),
        runs here already, its workflow is not registered, or its deadline had
        passed (it is then recorded ``timed_out``).
        """
        engine = self._engine
        # This engine holds the lease, so no other engine writes the checkpoints read next.
        bare = await engine.store.get_instance(instance_id, steps=False)
        if bare is None or bare.finished or instance_id in self._runs:
            return False
        definition = self._defs.get(bare.workflow_name)
        if definition is None:
            return False  # not registered here (start() checked the name; a store edited meanwhile)
        checkpoints = await engine.store.get_steps(instance_id)
        if bare.deadline is not None and bare.deadline <= engine.now():
            run = Run(engine, definition, bare, checkpoints, definition.total_steps)
            await self._finish(run, InstanceStatus.TIMED_OUT, None, run.fail(
                WorkflowTimeout, "passed its deadline while it was not running (a stop, a crash or a long sleep)"))
            return False
        if instance_id in self._runs:
            return False  # continued by another caller while this one read the store
        self._launch(definition, bare, checkpoints, first=False)
        return True
