"""Signals from outside: ``await durable.wait_for_signal(name)`` and ``engine.workflows.signal(...)``.

A signal is queued in the store (durably) when it is sent, whether or not the
instance waits for it yet; signals of one name are taken in the order they
were sent. Waiting is a step of type ``signal`` (key ``signal:NAME#n``): the
wait takes the oldest queued signal and checkpoints its payload in one
durable write, so each signal is delivered exactly once and a replay returns
the same payload. A wait at a workflow's top level unloads the workflow
(as a long sleep does) until the signal comes or the wait times out.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import trio

from .._frontends.active import active
from .._model.records import StepResult, StepStatus
from .run import Run, Scope
from .steps import error_text
from ..errors import DurableError, SignalTimeout
from ..stores._base import check_signal_name

__all__ = ["wait_for_signal", "signal_step"]

_RAISE: Any = object()  # no default: a time-out raises


async def wait_for_signal(name: str, *, timeout: float | None = None, default: Any = _RAISE) -> Any:
    """Wait for signal ``name`` sent with ``engine.workflows.signal(instance_id, name, payload)``; returns the payload.

    Args:
        name: the signal's name.
        timeout: seconds to wait (counted from the first time this wait
            started, across restarts); ``None`` waits for ever.
        default: returned when the wait times out; without it a time-out
            raises :class:`~durable.errors.SignalTimeout`.

    Outside an engine nobody can send a signal: with a ``timeout`` the wait
    sleeps that long and times out (``default`` or ``SignalTimeout``), so a
    plain unit test covers the time-out path; without one it raises
    :class:`~durable.DurableError`.

    .. versionadded:: 0.1.0
    """
    check_signal_name(name)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout != timeout or timeout < 0):
        raise ValueError(f"wait_for_signal() timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    current = active.get()
    if current is None:
        if timeout is None:
            raise DurableError(f"wait_for_signal({name!r}) outside an engine would wait for ever: "
                               "no one can send it a signal; pass timeout= to test the time-out path")
        await trio.sleep(timeout)
        if default is not _RAISE:
            return default
        raise SignalTimeout(f"no signal {name!r} within {timeout:g} s")
    return await signal_step(current.run, current.scope, name, timeout, default)


async def signal_step(run: Run, scope: Scope, name: str, timeout: float | None, default: Any = _RAISE, *,
                      step_name: str | None = None) -> Any:
    """Replay or run one wait for signal ``name`` (both front-ends).

    The step is named ``step_name`` (a builder's signal state passes its own
    name), by default ``signal:NAME``.
    """
    step_name = step_name if step_name is not None else f"signal:{name}"
    key, rec = run.next_checkpoint(scope, step_name, SignalTimeout)
    if rec is not None and rec.status == StepStatus.COMPLETED:
        return rec.output
    now = run.now()
    if rec is None:
        deadline = now + timedelta(seconds=timeout) if timeout is not None else None
        started_at = now
        await run.checkpoint(
            StepResult(step_name=step_name, status=StepStatus.RUNNING, input={"signal": name, "timeout": timeout},
                       key=key, step_type="signal", started_at=started_at, attempts=1, next_attempt_at=deadline),
            durable=True,
        )
        run.emit("workflow.step.started", step_name=step_name, step_type="signal", current_step=step_name)
    else:
        deadline, started_at = rec.next_attempt_at, rec.started_at or now
    run.current_step = step_name
    service = run.engine.workflows
    store = run.engine.store

    def record(status: StepStatus, **fields: Any) -> StepResult:
        return StepResult(step_name=step_name, status=status, key=key, step_type="signal", started_at=started_at,
                          completed_at=run.now(), attempts=1, **fields)

    while True:
        queued = await store.peek_signal(run.id, name)
        if queued is not None:
            seq, payload = queued
            done = record(StepStatus.COMPLETED, input={"signal": name, "seq": seq}, output=payload)
            if await run.take_signal(name, seq, done):
                run.emit("workflow.step.completed", step_name=step_name, step_type="signal", output=payload)
                run.step_completed(step_name, executed=True)
                return payload
            continue  # pragma: no cover - only this run takes this instance's signals
        remaining = (deadline - run.now()).total_seconds() if deadline is not None else None
        if remaining is not None and remaining <= 0:
            break
        if scope.path == "" and (remaining is None or remaining > run.engine.suspend_after):
            await run.suspend(deadline, signal=name)  # continued when the signal comes, or at the time-out
        with trio.move_on_after(remaining if remaining is not None else float("inf")):
            await service._signal_sent(run.id, name)
    # Timed out.
    if default is not _RAISE:
        done = record(StepStatus.COMPLETED, input={"signal": name, "timed_out": True}, output=default)
        await run.checkpoint(done, durable=True)
        run.emit("workflow.step.completed", step_name=step_name, step_type="signal", output=default)
        run.step_completed(step_name, executed=True)
        return default
    err = run.fail(SignalTimeout, f"no signal {name!r} within {timeout:g} s" if timeout is not None
                   else f"no signal {name!r} before the wait's time-out", step=key)
    await run.checkpoint(record(StepStatus.FAILED, input={"signal": name}, error=error_text(err), exception=err),
                         durable=True)
    run.emit("workflow.step.failed", step_name=step_name, step_type="signal", error=error_text(err), attempts=1)
    raise err
