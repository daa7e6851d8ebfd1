"""Durable sleep, the engine's side: one checkpointed sleep step (``durable.sleep`` and the builder's wait state).

A sleep is a step of type ``sleep``: its wake-up time is checkpointed
(durably) when it starts, so a process that restarts after that time
continues at once, and one that restarts before it waits only the rest. A
sleep at the top level of a workflow longer than the engine's
``suspend_after`` unloads the workflow: its run ends, nothing of it stays in
memory but a timer entry, and the engine replays it from its checkpoints when
the time comes. Shorter sleeps, and sleeps inside a ``parallel()`` branch
(whose sibling branches keep running), wait in memory.

The front-ends' ``durable.sleep`` / ``sleep_until`` are in
``durable._frontends.waits``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import trio

from .._model.records import StepResult, StepStatus
from . import lifecycle
from .run import Run, Scope
from ..errors import DurableError

__all__ = ["sleep_step"]


async def sleep_step(run: Run, scope: Scope, name: str, wake_time: Callable[[datetime], datetime]) -> None:
    """Replay or run one sleep step named ``name``; ``wake_time(start)`` gives its wake-up time.

    Used by both front-ends (the builder's wait state names its own step).
    """
    key, seq, rec = run.next_checkpoint(scope, name, DurableError)
    if rec is not None and rec.status == StepStatus.COMPLETED:
        return
    now = run.now()
    if rec is not None and rec.next_attempt_at is not None:
        wake_at = rec.next_attempt_at  # checkpointed by the run that started the sleep
        started_at = rec.started_at or now
    else:
        wake_at = wake_time(now)
        if not isinstance(wake_at, datetime) or wake_at.tzinfo is None or wake_at.utcoffset() is None:
            raise run.fail(DurableError, f"the wake-up time of {key!r} must be an aware datetime, got {wake_at!r}",
                           step=key)
        started_at = now
        await lifecycle.begin(run, StepResult(
            step_name=name, status=StepStatus.RUNNING, input={"until": wake_at}, key=key, step_type="sleep",
            started_at=started_at, attempts=1, next_attempt_at=wake_at, seq=seq), durable=True)
    run.current_step = name
    remaining = (wake_at - run.now()).total_seconds()
    if remaining > 0:
        if scope.path == "" and remaining > run.host.suspend_after:
            await run.suspend(wake_at)  # ends the run: the engine replays it when the time comes
        await trio.sleep(remaining)
    done = StepResult(step_name=name, status=StepStatus.COMPLETED, input={"until": wake_at}, key=key,
                      step_type="sleep", started_at=started_at, completed_at=run.now(), attempts=1, seq=seq)
    # Not durable on its own: a crash before the next durable write replays the
    # sleep, whose wake-up time has passed, and it completes at once.
    await lifecycle.complete(run, done, durable=False)
