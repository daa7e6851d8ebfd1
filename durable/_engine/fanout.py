"""Run branches (or map items) concurrently, each in its own checkpoint scope.

Shared by the builder's parallel and map states and the decorator's
``parallel()`` and ``map()``. A parallel or a map has a checkpoint of its own:
a parallel records its branch labels, a map its item count (never the items,
nor a label per item), then the outputs. A replay with a different number of
branches or items raises :class:`~durable.errors.NonDeterminismError` instead
of mixing up results; a finished one returns its stored output without
visiting its branches.

:func:`fan_out` is the concurrency core: at most ``limit`` worker tasks, each
taking the next index until none is left, so a 10,000-item map with a limit
of 10 never has more than 10 item tasks alive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from .._model.records import StepResult, StepStatus
from . import lifecycle
from .lifecycle import error_text
from .run import Run, Scope
from ..errors import MapFailed, NonDeterminismError, ParallelFailed

__all__ = ["failure_detail", "fan_out", "run_map", "run_parallel"]

Branch = Callable[[Scope], Awaitable[Any]]
Item = Callable[[int, Scope], Awaitable[Any]]
_DETAIL = 5  # a wait-all failure's message names at most this many failed items


async def fan_out(
    count: int, call: Callable[[int], Awaitable[Any]], *, limit: int, on_error: str
) -> tuple[list[Any], dict[int, BaseException], list[int]]:
    """Await ``call(i)`` for every ``i < count``, at most ``limit`` at once (``0``: no limit).

    Returns (results in index order, errors by index, indexes in the order they
    failed). ``fail-fast`` stops at the first error: the running calls are
    cancelled and no further index is started.
    """
    results: list[Any] = [None] * count
    errors: dict[int, BaseException] = {}
    order: list[int] = []
    cursor = 0
    workers = count if limit <= 0 else min(limit, count)
    async with trio.open_nursery() as nursery:

        async def worker() -> None:
            nonlocal cursor
            while cursor < count and not nursery.cancel_scope.cancel_called:
                # A run being cancelled (stopped, timed out) starts no further item.
                await trio.lowlevel.checkpoint_if_cancelled()
                i = cursor
                cursor += 1
                try:
                    results[i] = await call(i)
                except Exception as exc:
                    errors[i] = exc
                    order.append(i)
                    if on_error == "fail-fast":
                        nursery.cancel_scope.cancel()

        for _ in range(workers):
            nursery.start_soon(worker)
    return results, errors, order


def failure_detail(errors: dict[int, BaseException], label: Callable[[int], str]) -> str:
    """``label: Type: message; ...`` for the first few failures, by index."""
    shown = sorted(errors.items())[:_DETAIL]
    detail = "; ".join(f"{label(i)}: {type(e).__name__}: {e}" for i, e in shown)
    if len(errors) > _DETAIL:
        detail += f"; and {len(errors) - _DETAIL} more"
    return detail


async def _run_fan_out(
    run: Run,
    scope: Scope,
    *,
    name: str,
    step_type: str,
    record: Any,
    diverged: Callable[[Any], str | None],
    count: int,
    label: Callable[[int], str],
    call: Item,
    limit: int,
    on_error: str,
    failure: Callable[[dict[int, BaseException]], BaseException],
    output: Callable[[list[Any]], Any],
    extra_steps: int = 0,
) -> Any:
    if run.fatal is not None:
        raise run.fatal
    key, seq = scope.next_key(name)
    if run.total_steps:  # known: a map adds its further items' steps
        run.total_steps = max(1, run.total_steps + extra_steps)
    rec = run.checkpoints.get(key)
    if rec is not None:
        problem = diverged(rec.input) if rec.input is not None else None
        if problem is not None:
            raise run.poison(run.fail(
                NonDeterminismError, f"replay diverged at {step_type} {key!r}: {problem}", step=key,
            ))
    run.check_order(scope, key, seq, rec)
    if rec is not None:
        if rec.status in (StepStatus.COMPLETED, StepStatus.FAILED):
            # Replay does not visit the branches: count their finished steps, as the run that ran them did.
            run.completed_steps += run.completed_under(key + "/")
        if rec.status == StepStatus.COMPLETED:
            run.step_completed(name, executed=False)
            return rec.output
        if rec.status == StepStatus.FAILED and rec.exception is not None:
            raise rec.exception
    base = StepResult(
        step_name=name, status=StepStatus.RUNNING, input=record, key=key,
        step_type=step_type, started_at=rec.started_at if rec and rec.started_at else run.now(), seq=seq,
    )
    await lifecycle.begin(run, base, durable=False)

    def one(i: int) -> Awaitable[Any]:
        return call(i, Scope(path=f"{key}/{label(i)}/"))

    results, errors, order = await fan_out(count, one, limit=limit, on_error=on_error)
    if errors:
        error = errors[order[0]] if on_error == "fail-fast" else failure(errors)
        text = error_text(error)
        await lifecycle.fail(run, attrs.evolve(base, status=StepStatus.FAILED, error=text, exception=error,
                                               attempts=1, completed_at=run.now()))
        raise error
    result = output(results)
    await lifecycle.complete(run, attrs.evolve(base, status=StepStatus.COMPLETED, output=result, attempts=1,
                                               completed_at=run.now()), durable=False)
    return result


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
    labels = list(labels)

    def diverged(recorded: Any) -> str | None:
        if list(recorded) == labels:
            return None
        return f"it was checkpointed with branches {list(recorded)}, but now has {labels}"

    def failure(errors: dict[int, BaseException]) -> BaseException:
        return run.fail(
            ParallelFailed, f"{len(errors)} of {len(branches)} branches failed: {failure_detail(errors, labels.__getitem__)}",
            step=name, errors={labels[i]: e for i, e in sorted(errors.items())},
        )

    def output(results: list[Any]) -> Any:
        return dict(zip(labels, results, strict=True)) if keyed else results

    return await _run_fan_out(
        run, scope, name=name, step_type="parallel", record=labels, diverged=diverged, count=len(branches),
        label=labels.__getitem__, call=lambda i, branch_scope: branches[i](branch_scope), limit=0,
        on_error=on_error, failure=failure, output=output,
    )


async def run_map(
    run: Run,
    scope: Scope,
    *,
    name: str,
    count: int,
    item: Item,
    concurrency: int,
    on_error: str,
    steps_per_item: int = 1,
) -> list[Any]:
    """Run ``item(i, scope)`` for each of ``count`` items, at most ``concurrency`` at once (``0``: no limit).

    Each item runs in its own scope ``map#n/<index>/``. The map's checkpoint
    records ``{"items": count, "concurrency": concurrency}``; a replay with
    another count raises :class:`NonDeterminismError`. Results come in item
    order. ``fail-fast`` cancels the running items on the first failure (and
    starts no more) and raises it; ``wait-all`` runs every item, then raises
    :class:`MapFailed` carrying each failed item's error by index.

    ``steps_per_item`` is how many steps one item's run counts towards
    progress; the workflow's graph counted one item's, the others are added here.
    """

    def diverged(recorded: Any) -> str | None:
        was = recorded.get("items") if isinstance(recorded, dict) else None
        if was == count:
            return None
        return f"it was checkpointed with {was} items, but now has {count}"

    def failure(errors: dict[int, BaseException]) -> BaseException:
        return run.fail(
            MapFailed, f"{len(errors)} of {count} items failed: {failure_detail(errors, str)}",
            step=name, errors=dict(sorted(errors.items())),
        )

    results: list[Any] = await _run_fan_out(
        run, scope, name=name, step_type="map", record={"items": count, "concurrency": concurrency},
        diverged=diverged, count=count, label=str, call=item, limit=concurrency, on_error=on_error,
        failure=failure, output=list, extra_steps=(count - 1) * steps_per_item,
    )
    return results
