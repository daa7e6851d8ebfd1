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

_EPOCH: trio.lowlevel.RunVar[float] = trio.lowlevel.RunVar("durable_epoch")


def now() -> datetime:
    """The current UTC time, as trio's clock sees it."""
    try:
        epoch = _EPOCH.get()
    except LookupError:
        epoch = time.time() - trio.current_time()
        _EPOCH.set(epoch)
    return datetime.fromtimestamp(epoch + trio.current_time(), tz=UTC)

