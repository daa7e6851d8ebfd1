"""Steps outside any engine: run directly with their retries and timeout, nothing stored.

This is what makes ``await process_order("ORD-1")`` work in a unit test: the
same retry policy and per-attempt timeout apply (on trio's clock, so
``MockClock`` makes backoff instant), but no checkpoint is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from .._graph.context import StepInfo, step_info_var
from .._engine.jobs import as_async_call
from .._model.retry import Retry
from ..errors import StepTimeout

__all__ = ["run_plain"]


async def run_plain(name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                    retry: Retry, timeout: float | None, *, nested: bool = False) -> Any:
    """Call ``fn(*args, **kwargs)`` as a step would run: retried, timed out, but not checkpointed.

    ``nested``: awaited by a running step, whose :func:`~durable.current_step`
    (and idempotency key) it keeps; otherwise it gets a local one.
    """
    policy = retry.resolved()
    attempt = 0
    outer = step_info_var.get() if nested else None
    while True:
        attempt += 1
        token = step_info_var.set(outer or StepInfo("", "local", f"{name}#0", attempt))
        try:
            call = as_async_call(fn, *args, **kwargs)
            if timeout is None:
                return await call()
            with trio.move_on_after(timeout) as timer:
                result = await call()
            # Timed out even if the step caught the cancellation and returned.
            if not timer.cancel_called:
                return result
            raise StepTimeout(f"attempt {attempt} timed out after {timeout:g} s", step=name)
        except Exception as exc:
            if attempt < policy.attempts and policy.should_retry(exc):
                await trio.sleep(policy.delay(attempt))
                continue
            raise
        finally:
            step_info_var.reset(token)
