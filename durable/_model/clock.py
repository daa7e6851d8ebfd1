"""Wall-clock time that follows trio's clock.

Timestamps and deadlines are stored as absolute (UTC) times so they hold
across restarts. Reading them through trio's clock keeps ``MockClock`` in
charge in tests: the offset between the wall clock and trio's clock is taken
once per trio run (a ``RunVar``), so every engine of one run agrees on "now",
and a mock clock jumping ahead moves "now" with it.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import trio

__all__ = ["EPOCH", "base", "now", "pause_autojump", "resume_autojump"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The Unix epoch, as an aware ``datetime``: stored times count from it."""

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


# An autojumping trio.testing.MockClock leaps to the next deadline whenever the
# loop is idle, and a loop waiting for a thread (a sync step, an LMDB commit) is
# idle: a step's timeout would fire while a fast step runs. While durable waits
# on real work in a thread, the clock's autojump is paused (counted, per clock).
_PAUSED: dict[int, list[Any]] = {}  # id(clock) -> [clock, waits, saved autojump_threshold]


def pause_autojump() -> Any:
    """Pause an autojumping ``MockClock`` while the loop waits on a thread; pass the result to
    :func:`resume_autojump` (``None``, doing nothing, for any other clock)."""
    clock: Any = trio.lowlevel.current_clock()
    entry = _PAUSED.get(id(clock))
    if entry is not None:
        entry[1] += 1
        return clock
    threshold = getattr(clock, "autojump_threshold", None)  # a MockClock's
    if threshold is None or threshold == math.inf:
        return None
    _PAUSED[id(clock)] = [clock, 1, threshold]
    clock.autojump_threshold = math.inf
    return clock


def resume_autojump(clock: Any) -> None:
    """End one :func:`pause_autojump`; the last one gives the clock its autojump back."""
    if clock is None:
        return
    entry = _PAUSED[id(clock)]
    entry[1] -= 1
    if entry[1] == 0:
        del _PAUSED[id(clock)]
        clock.autojump_threshold = entry[2]
