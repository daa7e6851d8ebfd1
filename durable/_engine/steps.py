"""The checkpointed step call: the one execution core both front-ends go through.

:func:`run_step` takes the next key from the scope, and either replays the
checkpoint at that key (a completed step returns its stored output without
running, a failed one re-raises its stored error) or executes the step with
its retry policy and per-attempt timeout, then checkpoints the result durably
before returning it: the workflow never moves past a step whose result could
still be lost.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import attrs
import trio

from .._graph.context import StepInfo, step_info_var
from .._model.records import StepResult, StepStatus
from .._model.retry import Retry
from . import lifecycle
from .lifecycle import error_text
from .run import Run, Scope
from ..errors import DurableError, NonDeterminismError, StepFailed, StepTimeout

__all__ = ["Prepare", "StepSpec", "error_text", "run_step"]

Prepare = Callable[[], tuple[Any, Callable[[], Awaitable[Any]]]]
"""Returns the step's input (to record) and a zero-argument async callable doing one attempt."""
Job = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...], dict[str, Any]]
"""An async function and its arguments: one attempt awaits ``fn(*args, **kwargs)``."""


@attrs.frozen(kw_only=True)
class StepSpec:
    """How to run one step.

    Attributes:
        name: the step's name (the key's last part).
        function: what runs it (job name or function path); replay checks it.
        prepare: called only when the step must execute: returns the input to
            record and a zero-argument async callable doing one attempt (may be
            given to :func:`run_step` instead, for a spec shared by many calls).
        retry: the resolved retry policy.
        timeout: seconds allowed per attempt.
        step_type: ``task``, ``pass``, ``choice`` ...
        output: turns the attempt's result into the step's output.
        durable: checkpoint the result durably (pass and choice results can be
            recomputed, so they ride along with the next durable write).
        wrap_errors: raise :class:`StepFailed` (builder) instead of the step's
            own exception (decorator, so ``try/except`` sees the real type).
    """

    name: str
    function: str | None
    prepare: Prepare | None = None
    retry: Retry = Retry()
    timeout: float | None = None
    step_type: str = "task"
    output: Callable[[Any], Any] | None = None
    durable: bool = True
    wrap_errors: bool = False
    retry_given: Retry | None = None  # the step's own policy ``retry`` was resolved from (a cache check)


def _failure(run: Run, spec: StepSpec, key: str, exc: BaseException, attempts: int) -> BaseException:
    if not spec.wrap_errors:
        return exc
    err = run.fail(
        StepFailed, f"failed after {attempts} attempt(s): {error_text(exc)}", step=spec.name, attempts=attempts
    )
    err.__cause__ = exc
    return err


async def run_step(run: Run, scope: Scope, spec: StepSpec, prepare: Prepare | None = None,
                   job: Job | None = None) -> Any:
    """Replay or execute one step under ``scope``; returns its output.

    What one attempt runs: ``job`` (an async function with its arguments,
    called directly: the decorator's path), else ``prepare`` (if given), else
    ``spec.prepare``. One coroutine frame, not one per layer: a step blocked
    in its body holds this frame in memory (benchmark W5).
    """
    if run.fatal is not None:
        raise run.fatal
    name = spec.name
    key, seq = scope.next_key(name)
    rec = run.checkpoints.get(key)
    if rec is not None:
        if rec.function != spec.function and rec.function is not None and spec.function is not None:
            raise run.poison(run.fail(
                NonDeterminismError,
                f"replay diverged at checkpoint {key!r}: it was written by {rec.function!r}, "
                f"but the workflow now calls {spec.function!r} there; the workflow code between steps must be deterministic",
                step=key,
            ))
        run.check_order(scope, key, seq, rec)
        if rec.status == StepStatus.COMPLETED:
            run.step_completed(name, executed=False)
            return rec.output
        if rec.status == StepStatus.FAILED:
            exc = rec.exception or run.fail(StepFailed, rec.error or "failed", step=key)
            raise _failure(run, spec, key, exc, rec.attempts)
    else:
        run.check_order(scope, key, seq, None)
    if scope.busy is not None:
        # Fatal for the run: concurrent steps in one scope get keys in whatever
        # order they happen to start, so their checkpoints could not replay.
        raise run.poison(run.fail(
            DurableError,
            f"step {key!r} started while step {scope.busy!r} is still running in the same scope; "
            "run steps concurrently only through parallel()",
            step=key,
        ))
    scope.busy = key
    try:
        policy = spec.retry
        attempt = rec.attempts if rec is not None else 0
        if rec is not None and rec.next_attempt_at is None and attempt > 0:
            # That attempt was cut off (a crash or a stop), not failed: run it again
            # under its own number, so a crash never uses up a retry.
            attempt -= 1
        started_at = rec.started_at if rec is not None and rec.started_at else run.now()
        run.current_step = name
        if rec is not None and rec.next_attempt_at is not None:
            # The process stopped while this step waited out a retry delay: wait only the rest.
            remaining = (rec.next_attempt_at - run.now()).total_seconds()
            if remaining > 0:
                await trio.sleep(remaining)
        if job is not None:
            fn, args, kwargs = job
            step_input: Any = {"args": args, "kwargs": kwargs} if kwargs else args
        else:
            make = prepare or spec.prepare
            assert make is not None, f"step {name!r} has nothing to run"
            step_input, fn = make()
            args, kwargs = (), {}
        begun = False
        while True:
            attempt += 1
            marker = _record(spec, key, step_input, started_at, StepStatus.RUNNING, attempts=attempt, seq=seq)
            if not begun:
                await lifecycle.begin(run, marker, durable=False)
                begun = True
            elif not run.mark_running(marker):
                await run.checkpoint(marker, durable=False)
            token = step_info_var.set(StepInfo(run.name, run.id, key, attempt))
            try:
                if spec.timeout is not None:
                    with trio.move_on_after(spec.timeout) as timer:
                        result = await fn(*args, **kwargs)
                    if timer.cancel_called:  # even if the step caught the cancellation and returned
                        raise run.fail(StepTimeout, f"attempt {attempt} timed out after {spec.timeout:g} s", step=key)
                else:
                    result = await fn(*args, **kwargs)
                output = spec.output(result) if spec.output is not None else result
            except Exception as exc:
                error: BaseException | None = exc
            else:
                error = None
            finally:
                step_info_var.reset(token)
            if error is None:
                break
            if run.cancel_scope.cancel_called:
                # The run is being cancelled, stopped or timed out, and the step
                # turned that into an error: not a failure of the step, so neither
                # retried nor checkpointed as failed.
                raise error
            if attempt < policy.attempts and policy.should_retry(error):
                delay = policy.delay(attempt)
                run.emit(
                    "workflow.step.retry", step_name=name, attempt=attempt,
                    max_attempts=policy.attempts, delay=delay, error=error_text(error), step_key=key,
                )
                waiting = _record(
                    spec, key, step_input, started_at, StepStatus.RUNNING, attempts=attempt,
                    error=error_text(error), next_attempt_at=run.now() + timedelta(seconds=delay), seq=seq,
                )
                await run.checkpoint(waiting, durable=True)
                await trio.sleep(delay)
                continue
            failed = _record(
                spec, key, step_input, started_at, StepStatus.FAILED, attempts=attempt, error=error_text(error),
                exception=error, completed_at=run.now(), seq=seq,
            )
            await lifecycle.fail(run, failed)
            raise _failure(run, spec, key, error, attempt)
        done = _record(spec, key, step_input, started_at, StepStatus.COMPLETED, output=output, attempts=attempt,
                       completed_at=run.now(), seq=seq)
        await lifecycle.complete(run, done, durable=spec.durable)
        return output
    finally:
        scope.busy = None


def _record(spec: StepSpec, key: str, step_input: Any, started_at: datetime, status: StepStatus,
            **fields: Any) -> StepResult:
    # A direct constructor call: attrs.evolve costs several times more, per step.
    return StepResult(step_name=spec.name, status=status, input=step_input, started_at=started_at,
                      key=key, step_type=spec.step_type, function=spec.function, **fields)
