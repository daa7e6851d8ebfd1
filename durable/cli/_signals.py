"""Running a command's trio body until it returns or SIGINT / SIGTERM arrives."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import attrs
import trio

__all__ = ["Outcome", "until_signal"]

T = TypeVar("T")


@attrs.define
class Outcome(Generic[T]):
    """What :func:`until_signal` ended with: the body's result, or the signal that stopped it."""

    result: T | None = None
    signal: int | None = None

    @property
    def signal_name(self) -> str:
        """``SIGINT`` / ``SIGTERM``."""
        return signal.Signals(self.signal).name if self.signal is not None else ""


async def until_signal(body: Callable[[], Awaitable[T]]) -> Outcome[T]:
    """Run ``body()``; on SIGINT or SIGTERM cancel it instead, and say which signal came."""
    outcome: Outcome[T] = Outcome()
    async with trio.open_nursery() as nursery:

        async def watch(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                async for signum in signals:
                    outcome.signal = signum
                    nursery.cancel_scope.cancel()
                    return

        async def main() -> None:
            outcome.result = await body()
            nursery.cancel_scope.cancel()

        await nursery.start(watch)
        nursery.start_soon(main)
    return outcome
