"""Checkpoint stores: the :class:`Store` protocol, :class:`MemoryStore` and :class:`LMDBStore`."""

from ._base import Store as Store
from ._lmdb.store import LMDBStore as LMDBStore
from ._lease import Owner as Owner
from ._memory import MemoryStore as MemoryStore

__all__ = ["LMDBStore", "MemoryStore", "Owner", "Store"]
