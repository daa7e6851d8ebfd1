"""The step lifecycle every kind of step goes through: begin, then complete or fail.

Steps, sleeps, signal waits, child workflow calls, parallels and maps each
write the same records and emit the same events, in the same order:

1. :func:`begin`: the step becomes the run's current step, its ``running``
   record is written (durably when it holds something a restart needs: a
   sleep's wake-up time, a signal wait's deadline, a child's id), then
   ``workflow.step.started`` is emitted;
2. :func:`complete`: its ``completed`` record is checkpointed (durably unless
   it can be recomputed), then ``workflow.step.completed`` is emitted, then
   the step counts towards progress (``workflow.progress``);
   or :func:`fail`: its ``failed`` record is checkpointed durably, then
   ``workflow.step.failed`` is emitted.

A step's retries (``workflow.step.retry``) happen between the two, in
:func:`~durable._engine.steps.run_step`: only tasks retry.
"""

from __future__ import annotations

import trio

from .run import Run
from .._model.records import StepResult

__all__ = ["begin", "complete", "completed", "error_text", "fail"]


def error_text(exc: BaseException) -> str:
    """``Type: message``: how a step's error is recorded and reported."""
    return f"{type(exc).__name__}: {exc}"


async def begin(run: Run, marker: StepResult, *, durable: bool) -> None:
    """Start step ``marker.step_name``: write its ``running`` record, then emit ``workflow.step.started``.

    A non-durable marker is bookkeeping: written without waiting where the
    store can (:meth:`Run.mark_running`), else with the next durable write.

    A run that has been stopped (cancelled, stopped, timed out, its lease
    lost, a simulated crash) starts no further step, even when nothing since
    the stop has given trio a chance to deliver the cancellation.
    """
    if run.stop_reason is not None:  # (cheaper than cancel_called, which reads the clock)
        await trio.lowlevel.checkpoint()  # raises Cancelled: the run's scope is cancelled
    name = marker.step_name
    run.current_step = name
    if durable:
        await run.checkpoint(marker, durable=True)
    elif not run.mark_running(marker):
        await run.checkpoint(marker, durable=False)
    run.emit("workflow.step.started", step_name=name, step_type=marker.step_type, current_step=name,
             step_key=marker.key)


async def complete(run: Run, record: StepResult, *, durable: bool) -> None:
    """Finish a step: checkpoint its ``completed`` record, emit ``workflow.step.completed``, count its progress."""
    await run.checkpoint(record, durable=durable)
    name = record.step_name  # completed(), inline: one call fewer per step
    run.emit("workflow.step.completed", step_name=name, step_type=record.step_type, output=record.output,
             step_key=record.key)
    run.step_completed(name, executed=True)


def completed(run: Run, record: StepResult) -> None:
    """What :func:`complete` does once the record is stored (a signal's is stored with the signal it takes)."""
    name = record.step_name
    run.emit("workflow.step.completed", step_name=name, step_type=record.step_type, output=record.output,
             step_key=record.key)
    run.step_completed(name, executed=True)


async def fail(run: Run, record: StepResult) -> None:
    """Fail a step for good: checkpoint its ``failed`` record durably, emit ``workflow.step.failed``."""
    await run.checkpoint(record, durable=True)
    run.emit("workflow.step.failed", step_name=record.step_name, step_type=record.step_type,
             error=record.error, attempts=record.attempts, step_key=record.key)
