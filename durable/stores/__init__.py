"""Checkpoint stores: the :class:`Store` protocol, :class:`MemoryStore`, :class:`LMDBStore` and
:class:`PostgresStore` (imported when first used: it needs the ``postgres`` extra, psycopg 3)."""

from typing import TYPE_CHECKING, Any

from ._base import Store as Store
from ._lmdb.store import LMDBStore as LMDBStore
from ._lease import Owner as Owner
from ._memory import MemoryStore as MemoryStore

if TYPE_CHECKING:
    from ._postgres.store import PostgresStore as PostgresStore

__all__ = ["LMDBStore", "MemoryStore", "Owner", "PostgresStore", "Store"]


def __getattr__(name: str) -> Any:
    """``PostgresStore``, imported on first use (psycopg is an optional dependency)."""
    if name == "PostgresStore":
        try:
            from ._postgres.store import PostgresStore
        except ImportError as exc:
            raise ImportError(f"durable.PostgresStore needs psycopg 3: pip install 'durable[postgres]' ({exc})") \
                from exc
        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
