"""Shared fixtures: one test body runs against every store backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from durable import LMDBStore, MemoryStore, Store


@pytest.fixture(params=["memory", "lmdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of each kind."""
    if request.param == "memory":
        yield MemoryStore()
    else:
        s = LMDBStore(tmp_path / "store.lmdb")
        yield s
        s.close()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """A path where an LMDB store can be created."""
    return tmp_path / "store.lmdb"


@pytest.fixture
async def engine(store: Store):  # type: ignore[no-untyped-def]
    """A running engine over each kind of store."""
    from durable import Engine

    async with Engine(store=store) as e:
        yield e


@pytest.fixture
def disk_clock():  # type: ignore[no-untyped-def]
    """A MockClock for tests that also wait on real disk I/O (the LMDB writer thread).

    Autojump with threshold 0 jumps virtual time whenever trio is idle, including
    while a thread commits to disk, so deadlines would fire during an fsync. A
    small real-time threshold only jumps when nothing is happening at all.
    """
    from trio.testing import MockClock

    return MockClock(autojump_threshold=0.05)
