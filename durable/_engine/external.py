"""External jobs, the workflow's side: a step that a worker of a queue runs, in whatever process serves it.

The step queues a :class:`~durable._model.jobs.JobRecord` (one durable write,
idempotent: a replay finds it queued, or its outcome already delivered) and
waits for its outcome, which the worker delivers as the instance's internal
signal ``job_signal(key)``. Taking that signal stores the step's checkpoint
in the same write, exactly as a signal wait does, so the outcome is
checkpointed once. At a workflow's top level the wait unloads the workflow
(as a long signal wait does) until the outcome comes; the engine notices it
through a wake-up from the worker's process, or its poll (``poll_interval``).

Retries and the per-attempt timeout run in the worker, with the step's
policy; the worker reports ``workflow.step.started`` and ``workflow.step.retry``
to the instance's event log, the workflow ``completed`` or ``failed``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .._model.jobs import JobRecord, job_signal
from .._model.records import StepResult, StepStatus
from .._model.serde import UnpicklableError
from . import lifecycle
from .run import Run, Scope
from .steps import StepSpec
from ..errors import DurableError, JobNotFound, NonDeterminismError, SerializationError, StepFailed

__all__ = ["FunctionRef", "job_step", "resolve_target", "target_ref"]

FunctionRef = tuple[str, str, str]
"""``("function", module, qualname)``: a job's function, stored by reference."""


def target_ref(fn: Any) -> FunctionRef:
    """How a job's function is stored: by module and qualified name (it must be importable in the worker)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise TypeError(f"{fn!r} cannot run as an external job: a worker finds the function by its module and "
                        "name, so it must be defined at the top level of a module the worker loads")
    return ("function", module, qualname)


def resolve_target(target: Any, jobs: Any) -> Any:
    """The callable a job runs: a registered job name (``jobs``: a registry) or a function reference."""
    if isinstance(target, str):
        return jobs.get(target)
    if isinstance(target, tuple) and len(target) == 3 and target[0] == "function":
        _, module_name, qualname = target
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise JobNotFound(f"cannot import module {module_name!r} of job function {qualname!r}: {exc} "
                                  "(give the worker the module that defines it)") from None
        obj: Any = module
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise JobNotFound(f"module {module_name!r} has no {qualname!r} (is the worker's code up to date?)")
        return getattr(obj, "__wrapped__", obj) if getattr(obj, "__durable_step__", False) else obj
    raise JobNotFound(f"not a job target: {target!r}")


def _record(spec: StepSpec, key: str, step_input: Any, status: StepStatus, **fields: Any) -> StepResult:
    return StepResult(step_name=spec.name, status=status, input=step_input, key=key, step_type="task",
                      function=spec.function, **fields)


async def job_step(run: Run, scope: Scope, spec: StepSpec, queue: str, target: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any], step_input: Any) -> Any:
    """Replay or run one external job on ``queue``; returns its output (raises its error)."""
    if run.fatal is not None:
        raise run.fatal
    name = spec.name
    key, seq = scope.next_key(name)
    rec = run.checkpoints.get(key)
    if rec is not None and rec.function != spec.function and rec.function is not None and spec.function is not None:
        raise run.poison(run.fail(
            NonDeterminismError, f"replay diverged at checkpoint {key!r}: it was written by {rec.function!r}, "
            f"but the workflow now calls {spec.function!r} there", step=key))
    run.check_order(scope, key, seq, rec)
    if rec is not None and rec.status == StepStatus.COMPLETED:
        run.step_completed(name, executed=False)
        return rec.output
    if rec is not None and rec.status == StepStatus.FAILED:
        raise _failure(run, spec, key, rec.exception or run.fail(StepFailed, rec.error or "failed", step=key),
                       rec.attempts)
    if scope.busy is not None:
        raise run.poison(run.fail(
            DurableError, f"step {key!r} started while step {scope.busy!r} is still running in the same scope; "
            "run steps concurrently only through parallel()", step=key))
    scope.busy = key
    try:
        host = run.host
        store = host.store
        signal = job_signal(key)
        started_at = rec.started_at if rec is not None and rec.started_at else run.now()
        run.current_step = name
        job = JobRecord(instance_id=run.id, step_key=key, workflow_name=run.name, step_name=name, queue=queue,
                        target=target, args=args, kwargs=kwargs, retry=spec.retry, timeout=spec.timeout,
                        enqueued_at=run.now())
        try:
            await store.enqueue_job(job)  # a replay finds it queued (or its outcome delivered): not queued twice
        except SerializationError as exc:
            err = run.fail(SerializationError, f"cannot queue job {name!r} on queue {queue!r}: {exc.message}",
                           step=key)
            await lifecycle.fail(run, _record(spec, key, None, StepStatus.FAILED, error=lifecycle.error_text(err),
                                              exception=err, started_at=started_at, completed_at=run.now(), seq=seq))
            raise err from None
        if rec is None:
            marker = _record(spec, key, step_input, StepStatus.RUNNING, started_at=started_at, seq=seq,
                             next_attempt_at=None, attempts=0)
            if not run.mark_running(marker):
                await run.checkpoint(marker, durable=False)
        while True:
            queued = await store.peek_signal(run.id, signal)
            if queued is not None:
                sent, outcome = queued
                kind, value, text, attempts = outcome
                if kind == "ok":
                    if spec.output is not None:
                        value = spec.output(value)
                    done = _record(spec, key, step_input, StepStatus.COMPLETED, output=value, attempts=attempts,
                                   started_at=started_at, completed_at=run.now(), seq=seq)
                    if await run.take_signal(signal, sent, done):
                        lifecycle.completed(run, done)
                        return value
                    continue  # pragma: no cover - only this run takes this instance's signals
                error = value if isinstance(value, BaseException) else UnpicklableError("Exception", str(text))
                failed = _record(spec, key, step_input, StepStatus.FAILED, error=text, exception=error,
                                 attempts=attempts, started_at=started_at, completed_at=run.now(), seq=seq)
                if await run.take_signal(signal, sent, failed):
                    run.emit("workflow.step.failed", step_name=name, step_type="task", error=text,
                             attempts=attempts, step_key=key)
                    raise _failure(run, spec, key, error, attempts)
                continue  # pragma: no cover
            if scope.path == "":
                await run.suspend(None, signal=signal)  # continued when the outcome comes
            await host.signal_sent(run.id, signal)
    finally:
        scope.busy = None


def _failure(run: Run, spec: StepSpec, key: str, exc: BaseException, attempts: int) -> BaseException:
    if not spec.wrap_errors:
        return exc
    err = run.fail(StepFailed, f"failed after {attempts} attempt(s): {lifecycle.error_text(exc)}", step=spec.name,
                   attempts=attempts)
    err.__cause__ = exc
    return err
