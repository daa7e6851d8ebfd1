"""Bad PostgreSQL stores, as test_bad_stores.py has them for LMDB: damaged records fail only themselves, with
a StoreError naming the store and the record; a server that cannot be reached, and a schema that is not a
durable store, are StoreErrors that never show a password."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import trio
from psycopg import sql

from durable import InstanceStatus, StoreError
from durable.stores import PostgresStore
from durable.stores._postgres.url import redact
from support import make_instance, make_step

pytestmark = pytest.mark.usefixtures("pg_url")

Make = Callable[..., Any]


async def _populate(store: PostgresStore) -> None:
    for iid, status in (("a", InstanceStatus.RUNNING), ("b", InstanceStatus.COMPLETED), ("c", InstanceStatus.RUNNING)):
        await store.create_instance(make_instance(iid, status=status))
        await store.put_step(iid, make_step("s1#0", name="s1", output=f"{iid}-1"))


def _damage(url: str, schema: str, table: str, where: str, value: bytes) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        column = "record"
        conn.execute(sql.SQL("UPDATE {}.{} SET {} = %s WHERE " + where).format(
            sql.Identifier(schema), sql.Identifier(table), sql.Identifier(column)), (value,))


@pytest.mark.parametrize("target", ["instance a", "step a", "instance b"])
async def test_a_damaged_record_fails_only_itself_naming_it(pg_store_factory: Make, pg_url: str, target: str) -> None:
    store = pg_store_factory()
    await _populate(store)
    before = {iid: await store.get_instance(iid) for iid in "abc"}
    schema = store.schema
    kind, iid = target.split()
    table, where = ("instances", "id = 'a'") if target == "instance a" else \
        ("instances", "id = 'b'") if target == "instance b" else ("steps", "instance_id = 'a'")
    for bad in (b"", b"\x00garbage", b"\x80\x05K\x01.", bytes(range(256))):
        _damage(pg_url, schema, table, where, bad)
        with pytest.raises(StoreError) as info:
            await (store.get_instance(iid) if kind == "instance" else store.get_steps(iid))
        assert "corrupt" in str(info.value) or "cannot" in str(info.value), info.value
        assert redact(pg_url) in str(info.value) or schema in str(info.value), info.value
        for other in "abc":
            if other != iid:
                assert await store.get_instance(other) == before[other]


async def test_an_unreachable_server_is_a_store_error_without_the_password() -> None:
    store = PostgresStore("postgresql://durable:s3cret-pw@127.0.0.1:1/nowhere?connect_timeout=2")
    try:
        with trio.fail_after(30):
            with pytest.raises(StoreError) as info:
                await store.get_instance("x")
        assert "s3cret-pw" not in str(info.value) and "***" in str(info.value)
        assert "s3cret-pw" not in repr(store)
    finally:
        store.close()


async def test_a_schema_that_is_not_a_durable_store_is_refused_untouched(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS not_durable CASCADE")
        conn.execute("CREATE SCHEMA not_durable")
        conn.execute("CREATE TABLE not_durable.instances (x int)")
        conn.execute("INSERT INTO not_durable.instances VALUES (42)")
    store = PostgresStore(pg_url, schema="not_durable")
    try:
        with pytest.raises(StoreError) as info:
            await store.get_instance("x")
        assert "not_durable" in str(info.value)
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT x FROM not_durable.instances").fetchall() == [(42,)]  # nothing written
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'not_durable'").fetchall()}
        assert tables == {"instances"}
        conn.execute("DROP SCHEMA not_durable CASCADE")


async def test_a_client_never_creates_a_missing_schema(pg_url: str) -> None:
    from durable import Client

    with pytest.raises(StoreError, match="no durable store"):
        Client(pg_url + ("&" if "?" in pg_url else "?") + "schema=never_made")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = 'never_made'"
                            ).fetchone() is None
