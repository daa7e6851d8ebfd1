"""Signals, the engine's side: one checkpointed wait for a signal (``durable.wait_for_signal`` and the builder's signal state).

A signal is queued in the store (durably) when it is sent, whether or not the
instance waits for it yet; signals of one name are taken in the order they
were sent. Waiting is a step of type ``signal`` (key ``signal:NAME#n``): the
wait takes the oldest queued signal and checkpoints its payload in one
durable write, so each signal is delivered exactly once and a replay returns
the same payload. A wait at a workflow's top level unloads the workflow
(as a long sleep does) until the signal comes or the wait times out.
Sending is ``engine.workflows.signal(...)``; the front-end's
``wait_for_signal`` is in ``durable._frontends.waits``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import trio

from .._model.records import StepResult, StepStatus
from . import lifecycle
from .lifecycle import error_text
from .run import Run, Scope
from ..errors import SignalTimeout

__all__ = ["NO_DEFAULT", "signal_step"]

NO_DEFAULT: Any = object()  #: no default: a time-out raises


async def signal_step(run: Run, scope: Scope, name: str, timeout: float | None, default: Any = NO_DEFAULT, *,
                      step_name: str | None = None) -> Any:
    """Replay or run one wait for signal ``name`` (both front-ends).

    The step is named ``step_name`` (a builder's signal state passes its own
    name), by default ``signal:NAME``.
    """
    step_name = step_name if step_name is not None else f"signal:{name}"
    key, seq, rec = run.next_checkpoint(scope, step_name, SignalTimeout)
    if rec is not None and rec.status == StepStatus.COMPLETED:
        return rec.output
    now = run.now()
    if rec is None:
        deadline = now + timedelta(seconds=timeout) if timeout is not None else None
        started_at = now
        await lifecycle.begin(run, StepResult(
            step_name=step_name, status=StepStatus.RUNNING, input={"signal": name, "timeout": timeout}, key=key,
            step_type="signal", started_at=started_at, attempts=1, next_attempt_at=deadline, seq=seq), durable=True)
    else:
        deadline, started_at = rec.next_attempt_at, rec.started_at or now
    run.current_step = step_name
    host = run.host
    store = host.store

    def record(status: StepStatus, **fields: Any) -> StepResult:
        return StepResult(step_name=step_name, status=status, key=key, step_type="signal", started_at=started_at,
                          completed_at=run.now(), attempts=1, seq=seq, **fields)

    while True:
        queued = await store.peek_signal(run.id, name)
        if queued is not None:
            sent, payload = queued  # the signal's number in its queue
            done = record(StepStatus.COMPLETED, input={"signal": name, "seq": sent}, output=payload)
            if await run.take_signal(name, sent, done):  # the completed record, written with the take
                lifecycle.completed(run, done)
                return payload
            continue  # pragma: no cover - only this run takes this instance's signals
        remaining = (deadline - run.now()).total_seconds() if deadline is not None else None
        if remaining is not None and remaining <= 0:
            break
        if scope.path == "" and (remaining is None or remaining > host.suspend_after):
            await run.suspend(deadline, signal=name)  # continued when the signal comes, or at the time-out
        with trio.move_on_after(remaining if remaining is not None else float("inf")):
            await host.signal_sent(run.id, name)
    # Timed out.
    if default is not NO_DEFAULT:
        done = record(StepStatus.COMPLETED, input={"signal": name, "timed_out": True}, output=default)
        await lifecycle.complete(run, done, durable=True)
        return default
    err = run.fail(SignalTimeout, f"no signal {name!r} within {timeout:g} s" if timeout is not None
                   else f"no signal {name!r} before the wait's time-out", step=key)
    await lifecycle.fail(run, record(StepStatus.FAILED, input={"signal": name}, error=error_text(err), exception=err))
    raise err
