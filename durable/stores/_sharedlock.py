"""A shared/exclusive lock: LMDB transactions share it, map resizes take it alone.

LMDB allows any number of read transactions alongside the one write
transaction, but ``mdb_env_set_mapsize`` may only run while *no* transaction
of the process is open, in any thread. Read transactions (trio thread) and
the write transaction (writer thread) hold the lock shared; a resize (after
``MapFullError``, or ``MapResizedError`` when another process grew the map)
holds it exclusively, so it waits until every open transaction has ended.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["SharedLock"]


class SharedLock:
    """Many shared holders, or one exclusive holder."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._shared:
                self._cond.wait()
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()
