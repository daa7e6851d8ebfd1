"""Run branches concurrently in one nursery, each in its own checkpoint scope.

Shared by the builder's parallel state and the decorator's ``parallel()``. The
parallel itself has a checkpoint (its branch labels, then its outputs), so a
replay with a different number of branches raises
:class:`~durable.errors.NonDeterminismError` instead of mixing up results.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from ._records import StepResult, StepStatus
from ._run import Run, Scope
from ._steps import error_text
from .errors import NonDeterminismError, ParallelFailed

__all__ = ["run_parallel"]

Branch = Callable[[Scope], Awaitable[Any]]


async def run_parallel(
    run: Run,
    scope: Scope,
    *,
    name: str,
    labels: Sequence[str],
    branches: Sequence[Branch],
    on_error: str,
    keyed: bool = False,
) -> Any:
    """Run every branch at once; results in branch order (a dict by label when ``keyed``).

    ``fail-fast`` cancels the other branches on the first failure and raises
    that failure; ``wait-all`` lets every branch finish, then raises
    :class:`ParallelFailed` carrying each failed branch's error.
    """
    if run.fatal is not None:
        raise run.fatal
    key = scope.next_key(name)
    labels = list(labels)
    rec = run.checkpoints.get(key)
    if rec is not None:
        if rec.input is not None and list(rec.input) != labels:
            raise run.poison(run.fail(
                NonDeterminismError,
                f"replay diverged at parallel {key!r}: it was checkpointed with branches {list(rec.input)}, "
                f"but now has {labels}",
                step=key,
            ))
        if rec.status in (StepStatus.COMPLETED, StepStatus.FAILED):
            # Replay does not visit the branches: count their finished steps, as the run that ran them did.
            run.completed_steps += run.completed_under(key + "/")
        if rec.status == StepStatus.COMPLETED:
            run.step_completed(name, executed=False)
            return rec.output
        if rec.status == StepStatus.FAILED and rec.exception is not None:
            raise rec.exception
    base = StepResult(
        step_name=name, status=StepStatus.RUNNING, input=labels, key=key,
        step_type="parallel", started_at=rec.started_at if rec and rec.started_at else run.now(),
    )
    await run.checkpoint(base, durable=False)
    run.emit("workflow.step.started", step_name=name, step_type="parallel", current_step=name)
    results: list[Any] = [None] * len(branches)
    errors: dict[int, BaseException] = {}
    order: list[int] = []

    async with trio.open_nursery() as nursery:

        async def branch(i: int, fn: Branch) -> None:
            try:
                results[i] = await fn(Scope(path=f"{key}/{labels[i]}/"))
            except Exception as exc:
                errors[i] = exc
                order.append(i)
                if on_error == "fail-fast":
                    nursery.cancel_scope.cancel()

        for i, fn in enumerate(branches):
            nursery.start_soon(branch, i, fn)

    if errors:
        if on_error == "fail-fast":
            error: BaseException = errors[order[0]]
        else:
            detail = "; ".join(f"{labels[i]}: {type(e).__name__}: {e}" for i, e in sorted(errors.items()))
            error = run.fail(
                ParallelFailed, f"{len(errors)} of {len(branches)} branches failed: {detail}",
                step=name, errors={labels[i]: e for i, e in sorted(errors.items())},
            )
        text = error_text(error)
        await run.checkpoint(
            attrs.evolve(base, status=StepStatus.FAILED, error=text, exception=error, completed_at=run.now()),
            durable=True,
        )
        run.emit("workflow.step.failed", step_name=name, step_type="parallel", error=text, attempts=1)
        raise error
    output: Any = dict(zip(labels, results, strict=True)) if keyed else results
    await run.checkpoint(
        attrs.evolve(base, status=StepStatus.COMPLETED, output=output, attempts=1, completed_at=run.now()),
        durable=False,
    )
    run.emit("workflow.step.completed", step_name=name, step_type="parallel", output=output)
    run.step_completed(name, executed=True)
    return output
