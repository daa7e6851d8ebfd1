"""What the LMDB store's parts share: the store's primitives, declared for its mixins.

:class:`~durable.stores._lmdb.LMDBStore` defines them; the mixins that hold
its step writes, signal and lease operations (``_lmdb_steps``,
``_lmdb_signals``, ``_lmdb_leases``) only call them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import lmdb

from ..._model.records import InstanceStatus
from .._lease import LeaseLost

__all__ = ["LMDBParts", "finished"]

_T = TypeVar("_T")
_FINISHED = tuple(s.value.encode() + b"\0" for s in InstanceStatus if s.finished)


def finished(status_entry: bytes) -> bool:
    """Whether a ``status`` database entry (``status NUL workflow``) is a finished status."""
    return status_entry.startswith(_FINISHED)


class LMDBParts:
    """The store's primitives its mixins use (defined by ``LMDBStore``)."""

    _dbs: dict[str, Any]
    _path: str

    def _read(self) -> AbstractContextManager[lmdb.Transaction]:
        """A read transaction (with the map-resize handling)."""
        raise NotImplementedError

    async def _write(self, fn: Callable[..., _T], durable: bool = True, key: bytes | None = None,
                     args: tuple[Any, ...] = ()) -> _T:
        """Run ``fn(txn, *args)`` in the group-commit writer's next transaction."""
        raise NotImplementedError

    def _write_later(self, fn: Callable[..., Any], key: bytes | None = None, args: tuple[Any, ...] = ()) -> None:
        """Queue ``fn(txn, *args)`` as a non-durable write without waiting."""
        raise NotImplementedError

    def _fence(self, txn: lmdb.Transaction, key: bytes, owner: str | None) -> LeaseLost | None:
        """Why a write fenced by ``owner`` must not land, or ``None``."""
        raise NotImplementedError
