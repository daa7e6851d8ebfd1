"""The LMDB store's read transactions: ``with self._read() as txn:``, and map resizes.

Every read takes the store's shared lock (a map resize takes it alone, see
``_sharedlock``), so reading is a class-based context manager, not a
generator: it is on every read's path.
"""

from __future__ import annotations

import lmdb
import trio

from ...errors import StoreError
from .parts import LMDBParts
from .sharedlock import SharedLock

__all__ = ["LMDBReads"]


class LMDBReads(LMDBParts):
    """Read transactions and map resizes of :class:`~durable.stores._lmdb.LMDBStore`."""

    _env: lmdb.Environment
    _lock: SharedLock
    _closed: bool

    def _fail(self, problem: str) -> StoreError:
        raise NotImplementedError

    def _read(self) -> _Reading:
        """``with self._read() as txn:`` a read transaction (with the map-resize handling)."""
        return _Reading(self)

    def _begin_read(self) -> lmdb.Transaction:
        """A read transaction, with the shared lock held (``_Reading`` gives both back)."""
        if self._closed:
            raise self._fail("the store is closed")
        lock = self._lock
        for _ in range(2):
            lock.acquire_shared()
            try:
                return self._env.begin(write=False, buffers=False)
            except lmdb.MapResizedError:
                lock.release_shared()  # another process grew the map: adopt its size, then retry
            except lmdb.Error as exc:
                lock.release_shared()
                raise self._fail(f"read failed: {exc}") from exc
            except BaseException:
                lock.release_shared()
                raise
            self._resize(0)
        raise self._fail("read failed: the map kept being resized by another process")

    def _resize(self, size: int) -> None:
        """Set the map size (0: adopt the size another process set), with no transaction of ours open."""
        with self._lock.exclusive():
            self._env.set_mapsize(size)


class _Reading:
    """The context manager ``LMDBReads._read()`` gives."""

    __slots__ = ("_store", "_txn")

    def __init__(self, store: LMDBReads) -> None:
        self._store = store

    # KI-protected (no cost per call: trio marks the code objects), so a Ctrl-C
    # cannot land between taking the shared lock and the ``try`` that gives it
    # back: a read counted forever would make the next map resize wait forever.
    @trio.lowlevel.enable_ki_protection
    def __enter__(self) -> lmdb.Transaction:
        self._txn = self._store._begin_read()
        return self._txn

    @trio.lowlevel.enable_ki_protection
    def __exit__(self, *exc: object) -> None:
        try:
            self._txn.abort()
        finally:
            self._store._lock.release_shared()
