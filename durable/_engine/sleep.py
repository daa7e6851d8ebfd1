"""Durable sleep: ``await durable.sleep(seconds)`` / ``await durable.sleep_until(when)``.

A sleep is a step of type ``sleep``: its wake-up time is checkpointed
(durably) when it starts, so a process that restarts after that time
continues at once, and one that restarts before it waits only the rest. A
sleep at the top level of a workflow longer than the engine's
``suspend_after`` unloads the workflow: its run ends, nothing of it stays in
memory but a timer entry, and the engine replays it from its checkpoints when
the time comes. Shorter sleeps, and sleeps inside a ``parallel()`` branch
(whose sibling branches keep running), wait in memory.

Outside an engine both are plain ``trio.sleep``: under a ``MockClock`` a
day-long sleep takes no real time in a unit test.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import trio

from .._frontends.active import active
from .._model.clock import now as clock_now
from .._model.records import StepResult, StepStatus
from .run import Run, Scope
from ..errors import DurableError

__all__ = ["sleep", "sleep_until", "sleep_step"]


async def sleep(seconds: float) -> None:
    """Sleep durably for ``seconds``: the wake-up time survives a restart.

    Inside a workflow run the sleep is a checkpointed step named ``sleep``;
    elsewhere it is ``trio.sleep(seconds)``.

    .. versionadded:: 0.1.0
    """
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds != seconds or seconds < 0:
        raise ValueError(f"durable.sleep() takes a number of seconds >= 0, got {seconds!r}")
    current = active.get()
    if current is None:
        await trio.sleep(seconds)
        return
    await sleep_step(current.run, current.scope, "sleep", lambda start: start + timedelta(seconds=seconds))


async def sleep_until(when: datetime) -> None:
    """Sleep durably until ``when`` (an aware ``datetime``); at once if it has passed.

    .. versionadded:: 0.1.0
    """
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"durable.sleep_until() takes an aware datetime (with a tzinfo), got {when!r}")
    current = active.get()
    if current is None:
        await trio.sleep(max(0.0, (when - clock_now()).total_seconds()))
        return
    await sleep_step(current.run, current.scope, "sleep", lambda start: when)


async def sleep_step(run: Run, scope: Scope, name: str, wake_time: Callable[[datetime], datetime]) -> None:
    """Replay or run one sleep step named ``name``; ``wake_time(start)`` gives its wake-up time.

    Used by both front-ends (the builder's wait state names its own step).
    """
    key, rec = run.next_checkpoint(scope, name, DurableError)
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
        await run.checkpoint(
            StepResult(step_name=name, status=StepStatus.RUNNING, input={"until": wake_at}, key=key,
                       step_type="sleep", started_at=started_at, attempts=1, next_attempt_at=wake_at),
            durable=True,
        )
        run.emit("workflow.step.started", step_name=name, step_type="sleep", current_step=name)
    run.current_step = name
    remaining = (wake_at - run.now()).total_seconds()
    if remaining > 0:
        if scope.path == "" and remaining > run.engine.suspend_after:
            await run.suspend(wake_at)  # ends the run: the engine replays it when the time comes
        await trio.sleep(remaining)
    done = StepResult(step_name=name, status=StepStatus.COMPLETED, input={"until": wake_at}, key=key,
                      step_type="sleep", started_at=started_at, completed_at=run.now(), attempts=1)
    # Not durable on its own: a crash before the next durable write replays the
    # sleep, whose wake-up time has passed, and it completes at once.
    await run.checkpoint(done, durable=False)
    run.emit("workflow.step.completed", step_name=name, step_type="sleep", output=None)
    run.step_completed(name, executed=True)
