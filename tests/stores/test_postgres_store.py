"""What only the PostgreSQL store does: URLs without passwords, schema versions, engines sharing a database,
and a server that restarts under a running store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import trio
from psycopg import sql

from durable import Engine, InstanceStatus, StoreError, WorkflowInstance, step, workflow
from durable.stores._postgres.url import redact

pytestmark = pytest.mark.usefixtures("pg_url")

Make = Callable[..., Any]


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://bob:s3cret@db:5432/app?sslmode=require", "postgresql://bob:***@db:5432/app?sslmode=require"),
    ("postgres://u@h/d?password=zz&host=/x", "postgres://u@h/d?password=***&host=/x"),
    ("postgresql://a:b:c@h/d", "postgresql://a:***@h/d"),
    ("postgresql://postgres:@/postgres?host=/tmp/x", "postgresql://postgres:@/postgres?host=/tmp/x"),
    ("host=a password=secret dbname=x", "host=a password=*** dbname=x"),
])
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact(url) == shown


async def test_errors_and_repr_never_show_the_password(pg_url: str) -> None:
    from durable import PostgresStore

    bad = PostgresStore("postgresql://bob:hunter2@127.0.0.1:1/nowhere?connect_timeout=1")
    assert "hunter2" not in repr(bad) and "***" in repr(bad)
    with pytest.raises(StoreError) as caught:
        await bad.get_instance("x")
    assert "hunter2" not in str(caught.value) and "bob:***@127.0.0.1:1" in str(caught.value)
    bad.close()


async def test_a_schema_of_a_newer_version_is_refused(pg_store_factory: Make, pg_url: str) -> None:
    store = pg_store_factory()
    assert await store.get_instance("x") is None  # migrated on first use
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("UPDATE {}.schema_version SET version = 999").format(sql.Identifier(store.schema)))
    other = pg_store_factory()
    with pytest.raises(StoreError, match="version 999, newer than this durable"):
        await other.get_instance("x")


@step
async def double(x: int) -> int:
    return 2 * x


@workflow
async def doubled_twice(x: int) -> int:
    return await double(await double(x))


async def test_an_engine_runs_workflows_on_postgres(pg_store_factory: Make) -> None:
    store = pg_store_factory()
    async with Engine(store) as engine:
        ids = [await engine.workflows.start(doubled_twice, i) for i in range(20)]
        done = [await engine.workflows.wait(i) for i in ids]
    assert [d.output for d in done] == [4 * i for i in range(20)]
    assert all(d.status == InstanceStatus.COMPLETED for d in done)
    # a second store object on the same schema (another process, as far as the data goes) reads them
    again = pg_store_factory()
    got = await again.get_instance(ids[3])
    assert got is not None and got.output == 12 and set(got.step_results) == {"double"}
    assert len(await again.get_all_instances(InstanceStatus.COMPLETED)) == 20
    assert await again.get_running_instances() == []


async def test_engine_open_takes_a_url(pg_url: str, pg_store_factory: Make) -> None:
    schema = pg_store_factory().schema
    async with Engine.open(pg_url, schema=schema) as engine:
        inst = await engine.workflows.wait(await engine.workflows.start(doubled_twice, 5))
    assert inst.output == 20


def _kill_connections(pg_url: str, schema: str) -> int:
    """Terminate the store's connections (as a server restart would), from another connection."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'durable' AND pid <> pg_backend_pid()").fetchall()
    return len(rows)


@pytest.mark.parametrize("mode", ["inline", "writer"])
async def test_a_dropped_connection_fails_the_write_then_the_store_reconnects(
        pg_store_factory: Make, pg_url: str, mode: str) -> None:
    store = pg_store_factory()
    async with trio.open_nursery() as nursery:
        if mode == "writer":
            await nursery.start(store.run)
        await store.create_instance(WorkflowInstance(id="a", workflow_name="wf", status=InstanceStatus.PENDING))
        assert _kill_connections(pg_url, store.schema) >= 1
        with pytest.raises(StoreError) as caught:
            await store.create_instance(WorkflowInstance(id="b", workflow_name="wf", status=InstanceStatus.PENDING))
        assert "may or may not have committed" in str(caught.value) and store.url in str(caught.value)
        await store.create_instance(WorkflowInstance(id="c", workflow_name="wf", status=InstanceStatus.PENDING))
        _kill_connections(pg_url, store.schema)
        got = await store.get_instance("c")  # a read retries once on a fresh connection
        assert got is not None
        assert {i.id for i in await store.get_all_instances()} <= {"a", "b", "c"}
        nursery.cancel_scope.cancel()
