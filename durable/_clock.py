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

__all__ = ["base", "now"]

_BASE: trio.lowlevel.RunVar[tuple[float, trio.abc.Clock]] = trio.lowlevel.RunVar("durable_epoch")


def base() -> tuple[float, trio.abc.Clock]:
    """This trio run's (epoch offset, clock): ``now()`` is ``epoch + clock.current_time()``.

    Taken once per run, so every engine of the run agrees on "now"; an engine
    keeps it, to read the time without looking it up each time.
    """
    try:
        return _BASE.get()
    except LookupError:
        clock = trio.lowlevel.current_clock()
        found = (time.time() - clock.current_time(), clock)
        _BASE.set(found)
        return found


def now() -> datetime:
    """The current UTC time, as trio's clock sees it."""
    epoch, clock = base()
    return datetime.fromtimestamp(epoch + clock.current_time(), tz=UTC)
