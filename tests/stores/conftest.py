"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import trio

from durable import LMDBStore, MemoryStore, Store


@pytest.fixture(params=["memory", "lmdb", "pg"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of each kind: memory, LMDB, and PostgreSQL (a schema of the test's own on the session's
    server; see ``pg_url`` in ``tests/conftest.py``)."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "lmdb":
        s = LMDBStore(tmp_path / "store.lmdb")
        yield s
        s.close()
    else:
        make: Callable[..., Store] = request.getfixturevalue("pg_store_factory")
        yield make()


@pytest.fixture(params=["inline", "writer"])
async def s(request: pytest.FixtureRequest, store: Store) -> AsyncIterator[Store]:
    """The conftest ``store`` (memory / lmdb / pg), with its background work running or not.

    For LMDB, "writer" runs the group-commit writer thread for the whole test;
    for PostgreSQL, "writer" runs its group-commit writer thread, and "inline" runs each write in a
    worker thread of its own; for memory, ``run()`` is a no-op that must still start cleanly.
    """
    if request.param == "inline":
        yield store
        return
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()
