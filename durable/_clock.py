"""Wall-clock time that follows trio's clock.

Timestamps and deadlines are stored as absolute (UTC) times so they hold
across restarts. Reading them through trio's clock keeps ``MockClock`` in
charge in tests: the offset between the wall clock and trio's clock is taken
once per trio run (a ``RunVar``), so every engine of one run agrees on "now",
and a mock clock jumping ahead moves "now" with it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import trio

__all__ = ["now"]

_BASE: trio.lowlevel.RunVar[tuple[float, trio.abc.Clock]] = trio.lowlevel.RunVar("durable_epoch")


def now() -> datetime:
    """The current UTC time, as trio's clock sees it."""
    try:
        epoch, clock = _BASE.get()
    except LookupError:
        clock = trio.lowlevel.current_clock()
        epoch = time.time() - clock.current_time()
        _BASE.set((epoch, clock))
    return datetime.fromtimestamp(epoch + clock.current_time(), tz=UTC)
