"""``durable.map(fn, items, concurrency=N)``: bounded fan-out in decorator workflows.

Inside a workflow run each item runs ``fn(item)`` in its own checkpoint scope
(``map#n/<index>/``), like a ``parallel()`` branch, through the same
:func:`~durable._engine.fanout.run_map` as the builder's map state: at most
``concurrency`` items at once, results in item order, the map itself
checkpointed with its item count. Outside an engine it runs as plain
concurrent code with the same bound and ``on_error`` semantics.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from .active import Active, active, in_workflow
from .._engine.fanout import failure_detail, fan_out, run_map
from .._engine.run import Scope
from ..errors import MapFailed

__all__ = ["check_map_options", "map"]

T = TypeVar("T")
R = TypeVar("R")


def check_map_options(concurrency: object, on_error: object, what: str) -> None:
    """``ValueError``/``TypeError`` for a bad concurrency bound or ``on_error``."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 0:
        raise ValueError(f"{what}: concurrency must be an int >= 0 (0: no limit), got {concurrency!r}")
    if on_error not in ("fail-fast", "wait-all"):
        raise ValueError(f"{what}: on_error must be 'fail-fast' or 'wait-all', got {on_error!r}")


async def _awaited(fn: Callable[[Any], Awaitable[Any]], item: Any) -> Any:
    aw = fn(item)
    if not inspect.isawaitable(aw):
        raise TypeError(
            f"map(): fn(item) must return an awaitable (a @step function, or an async function); "
            f"{fn!r} returned {aw!r}"
        )
    return await aw


async def map(  # noqa: A001 - durable.map, as the issue names it; durable.map_ is the same function
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    *,
    concurrency: int = 10,
    on_error: str = "fail-fast",
) -> list[R]:
    """Run ``fn(item)`` for every item, at most ``concurrency`` at once; returns the results in item order.

    Args:
        fn: a ``@step`` function, or any callable of one item returning an
            awaitable (an async helper awaiting several steps, a ``@workflow``
            run inline); called only when its item starts.
        items: the items (an iterable, read once). On replay there must be as
            many: compute the list in a step, not from the clock or the world.
        concurrency: items running at once at most (default 10); ``0`` means no limit.
        on_error: ``"fail-fast"`` (default) cancels the running items on the
            first failure, starts no more, and raises it; ``"wait-all"`` runs
            every item, then raises :class:`~durable.errors.MapFailed` with
            each failed item's error by index.

    Inside a workflow run every item is a scope of its own
    (``map#0/<index>/step#0``): after a crash, finished items replay from their
    checkpoints and only the others run. The map's own checkpoint stores the
    item count (a replay with another count raises
    :class:`~durable.NonDeterminismError`) and, once finished, the results,
    which a replay returns without visiting the items. At most
    ``concurrency`` item tasks exist at any moment, however long the list.

    ``durable.map_`` is the same function (``from durable import *`` brings
    ``map_``, never a ``map`` that would hide the builtin).

    .. versionadded:: 0.1.0
    """
    check_map_options(concurrency, on_error, "map()")
    if not callable(fn):
        raise TypeError(f"map() takes a function of one item first, got {fn!r}")
    values = list(items)
    current = in_workflow()
    if current is None:
        results, errors, order = await fan_out(
            len(values), lambda i: _awaited(fn, values[i]), limit=concurrency, on_error=on_error
        )
        if errors:
            if on_error == "fail-fast":
                raise errors[order[0]]
            raise MapFailed(f"{len(errors)} of {len(values)} items failed: {failure_detail(errors, str)}",
                            errors=dict(sorted(errors.items())))
        return results

    run, default_retry = current.run, current.default_retry

    async def item(i: int, scope: Scope) -> Any:
        token = active.set(Active(run, scope, default_retry))
        try:
            return await _awaited(fn, values[i])
        finally:
            active.reset(token)

    return await run_map(run, current.scope, name="map", count=len(values), item=item,
                         concurrency=concurrency, on_error=on_error)


map.__durable_primitive__ = "map"  # type: ignore[attr-defined]  # how the compiler knows it
map_ = map
