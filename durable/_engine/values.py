"""What workflow code records between steps: values it must not recompute on replay, and patch markers.

``durable.now()``, ``random()`` and ``uuid4()`` are checkpointed values (step
type ``value``): the first run draws one and stores it; a replay returns the
stored one, so code between steps may branch on it. ``durable.patched()`` is
how an intentional code change reaches instances already in flight: a run of
the new code records a marker (step type ``patch``) and takes the new path;
a replay of a run recorded before the change finds no marker where that run
went on, and takes the old path. Neither counts towards progress. A value is
written durably before it is returned (a step may act on it); a marker rides
with the next durable write (lost in a crash before it, the replay decides the
same way again: nothing recorded went past it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .run import Run, Scope
from .._model.records import StepResult, StepStatus

__all__ = ["patch", "record_value"]


async def record_value(run: Run, scope: Scope, name: str, make: Callable[[], Any]) -> Any:
    """The value ``make()`` gave when this point of the workflow first ran (``make()`` now, stored, if never)."""
    key, seq, rec = run.take_key(scope, name)
    if rec is not None and rec.status == StepStatus.COMPLETED:
        return rec.output
    value = make()
    # Durable before it is returned: a step may act on it (a uuid4() as an idempotency
    # key), and a crash must not let the replay draw another one.
    await _mark(run, name, key, seq, "value", value, durable=True)
    return value


async def patch(run: Run, scope: Scope, change_id: str, *, deprecated: bool = False) -> bool:
    """Whether this run takes the path of change ``change_id`` (see :func:`durable.patched`).

    ``deprecated``: the old path is gone from the code; a recorded marker is
    still taken (so runs that recorded it replay in step), none is written.
    """
    if run.fatal is not None:
        raise run.fatal
    name = f"patch:{change_id}"
    rec = run.checkpoints.get(scope.peek_key(name))
    if rec is not None and rec.seq in (None, scope.seq):
        # A run of the new code recorded it here: replay the new path. (A marker of
        # this id recorded at another place belongs to another call of patched().)
        key, seq = scope.next_key(name)
        run.check_order(scope, key, seq, rec)
        return True
    if deprecated:
        return True
    top = run.recorded_top(scope)
    if (top is not None and top >= scope.seq) or run.unsequenced(scope):
        # Replaying a run recorded before the change that went on from here (or one
        # of durable 0.1.0, whose records have no places: taken as having gone on): the old path.
        return False
    key, seq = scope.next_key(name)
    await _mark(run, name, key, seq, "patch", True, durable=False)
    return True


async def _mark(run: Run, name: str, key: str, seq: int, step_type: str, output: Any, *, durable: bool) -> None:
    now = run.now()
    await run.checkpoint(StepResult(step_name=name, status=StepStatus.COMPLETED, output=output, key=key,
                                    step_type=step_type, started_at=now, completed_at=now, attempts=1, seq=seq),
                         durable=durable)
