"""``parallel(aw1, aw2, ...)``: the decorator front-end's concurrent branches.

Inside a workflow run each awaitable becomes a branch with its own checkpoint
scope (``parallel#n/i/``), run by the same :func:`~durable._engine.fanout.run_parallel`
as the builder's parallel state. Outside an engine the awaitables simply run
concurrently in a nursery with the same ``on_error`` semantics.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Coroutine
from typing import Any

from .active import Active, active, in_workflow
from .._engine.fanout import failure_detail, fan_out, run_parallel
from .._engine.run import Scope
from ..errors import ParallelFailed

__all__ = ["parallel"]


def _close_unstarted(aws: list[Awaitable[Any]], started: set[int]) -> None:
    # A replayed parallel never awaits its branches: close them so Python does
    # not warn "coroutine was never awaited".
    for i, aw in enumerate(aws):
        if i not in started and isinstance(aw, Coroutine):
            aw.close()


async def parallel(*awaitables: Awaitable[Any], on_error: str = "fail-fast") -> list[Any]:
    """Await every argument concurrently; returns their results in argument order.

    Args:
        *awaitables: step calls, or calls of async helpers that await several
            steps (each is a branch with its own checkpoint scope).
        on_error: ``"fail-fast"`` (default) cancels the other branches on the
            first failure and raises it; ``"wait-all"`` lets every branch
            finish, then raises :class:`~durable.errors.ParallelFailed`.

    .. versionadded:: 0.1.0
    """
    aws = list(awaitables)
    if on_error not in ("fail-fast", "wait-all"):
        for aw in aws:
            if isinstance(aw, Coroutine):
                aw.close()
        raise ValueError(f"parallel(on_error=...) must be 'fail-fast' or 'wait-all', got {on_error!r}")
    for i, aw in enumerate(aws):
        if not inspect.isawaitable(aw):
            _close_unstarted(aws, set())
            raise TypeError(f"parallel() takes awaitables (step calls); argument {i} is {aw!r}")
    current = in_workflow()
    started: set[int] = set()
    try:
        if current is None:
            return await _plain_parallel(aws, on_error, started)

        run, default_retry = current.run, current.default_retry

        def enter(i: int, scope: Scope) -> Awaitable[Any]:
            # Called in the branch's own task (each has a context of its own),
            # right before it awaits the branch: the branch's steps see its scope.
            # Never reset: the task ends with the branch, and a task's next item
            # (a map's) sets its own. No wrapper coroutine per branch.
            started.add(i)
            active.set(Active(run, scope, default_retry))
            return aws[i]

        results: list[Any] = await run_parallel(
            run, current.scope, name="parallel", labels=[str(i) for i in range(len(aws))],
            branches=[functools.partial(enter, i) for i in range(len(aws))], on_error=on_error,
        )
        return results
    finally:
        _close_unstarted(aws, started)


async def _plain_parallel(aws: list[Awaitable[Any]], on_error: str, started: set[int]) -> list[Any]:
    async def go(i: int) -> Any:
        started.add(i)
        return await aws[i]

    results, errors, order = await fan_out(len(aws), go, limit=0, on_error=on_error)
    if errors:
        if on_error == "fail-fast":
            raise errors[order[0]]
        raise ParallelFailed(f"{len(errors)} of {len(aws)} branches failed: {failure_detail(errors, str)}",
                             errors={str(i): e for i, e in sorted(errors.items())})
    return results
