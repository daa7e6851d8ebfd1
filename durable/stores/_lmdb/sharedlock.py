"""A shared/exclusive lock: LMDB transactions share it, map resizes take it alone.

LMDB allows any number of read transactions alongside the one write
transaction, but ``mdb_env_set_mapsize`` may only run while *no* transaction
of the process is open, in any thread. Read transactions (trio thread) and
the write transaction (writer thread) hold the lock shared; a resize (after
``MapFullError``, or ``MapResizedError`` when another process grew the map)
holds it exclusively, so it waits until every open transaction has ended.

Every read takes it, so the shared side is cheap: a plain mutex held only to
count, and a condition notified only when somebody waits on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["SharedLock"]


class SharedLock:
    """Many shared holders, or one exclusive holder."""

    __slots__ = ("_mutex", "_cond", "_shared", "_exclusive", "_waiting", "_shared_cm", "_exclusive_cm")

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # threads waiting in _cond
        self._shared_cm = _Held(self.acquire_shared, self.release_shared)
        self._exclusive_cm = _Held(self.acquire_exclusive, self.release_exclusive)

    def acquire_shared(self) -> None:
        """Take the lock shared (waits while it is held exclusively)."""
        with self._mutex:
            while self._exclusive:
                self._wait()
            self._shared += 1

    def release_shared(self) -> None:
        """Give back a shared hold."""
        with self._mutex:
            self._shared -= 1
            if not self._shared and self._waiting:
                self._cond.notify_all()

    def acquire_exclusive(self) -> None:
        """Take the lock alone (waits until no one holds it)."""
        with self._mutex:
            while self._exclusive or self._shared:
                self._wait()
            self._exclusive = True

    def release_exclusive(self) -> None:
        """Give back the exclusive hold."""
        with self._mutex:
            self._exclusive = False
            if self._waiting:
                self._cond.notify_all()

    def _wait(self) -> None:
        self._waiting += 1
        try:
            self._cond.wait()
        finally:
            self._waiting -= 1

    def shared(self) -> _Held:
        """``with lock.shared():`` hold it shared for the block."""
        return self._shared_cm

    def exclusive(self) -> _Held:
        """``with lock.exclusive():`` hold it alone for the block."""
        return self._exclusive_cm


class _Held:
    """A reusable context manager: ``acquire`` on entry, ``release`` on exit (no generator per use)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: Callable[[], None], release: Callable[[], None]) -> None:
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> None:
        self._acquire()

    def __exit__(self, *exc: object) -> None:
        self._release()
