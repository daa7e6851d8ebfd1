"""What only the PostgreSQL store does: URLs without passwords, schema versions, engines sharing a database,
and a server that restarts under a running store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import psycopg
import pytest
import trio
from psycopg import sql

from durable import Engine, InstanceStatus, StoreError, WorkflowInstance, step, workflow
from durable.stores._lease import Owner
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


async def test_a_store_of_version_1_is_migrated_to_the_newest(pg_store_factory: Make, pg_url: str) -> None:
    """Version 2 added the index of delayed queued instances, version 3 the events' count per row (packed
    events): a version-1 store gets both when opened, and keeps what it held, its events too."""
    from durable._model.eventlog import encode_event
    from durable.stores._postgres.schema import SCHEMA_VERSION

    store = pg_store_factory()
    await store.create_instance(WorkflowInstance(id="kept", workflow_name="wf", status=InstanceStatus.PENDING))
    schema = sql.Identifier(store.schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:  # back to what version 1 created
        conn.execute(sql.SQL("DROP INDEX {}.instances_due").format(schema))
        conn.execute(sql.SQL("ALTER TABLE {}.events DROP COLUMN n").format(schema))
        conn.execute(sql.SQL("INSERT INTO {}.events VALUES (7, 'kept', %s)").format(schema),
                     (encode_event("old", "kept", "wf", {}),))  # an event as version 1 stored it
        conn.execute(sql.SQL("UPDATE {}.schema_version SET version = 1").format(schema))
    other = pg_store_factory()
    assert other.migrate() == (1, SCHEMA_VERSION) == (1, 3)
    assert (await other.get_instance("kept", steps=False)) is not None
    assert await other.read_events("kept", 0, 10) == [(7, encode_event("old", "kept", "wf", {}))]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass(format('%%I.instances_due', %s::text)) IS NOT NULL",
                            (store.schema,)).fetchone() == (True,)


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
    # wait() answered from memory (the runs ended in that engine) what the database holds
    assert done == [await again.get_instance(i) for i in ids]


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
async def test_a_workers_startup_writes_outlive_a_dropped_connection(pg_store_factory: Make, pg_url: str,
                                                                     mode: str) -> None:
    # A worker started while the database restarts: its registration (idempotent upserts) is written again
    # after a backoff instead of failing in doubt and ending the worker.
    from durable import Queue

    store = pg_store_factory()
    async with trio.open_nursery() as nursery:
        if mode == "writer":
            await nursery.start(store.run)
        await store.create_instance(WorkflowInstance(id="a", workflow_name="wf", status=InstanceStatus.PENDING))
        owner = Owner.this_process(5.0)
        assert _kill_connections(pg_url, store.schema) >= 1
        await store.register_queue(Queue("q", concurrency=3))
        _kill_connections(pg_url, store.schema)
        await store.register_worker(owner, ["wf"], ["q"], [], {"wf": "q"})
        assert (await store.get_queues())["q"].concurrency == 3
        assert await store.known_workflows() == ["wf"]
        assert await store.workflow_queues() == {"wf": "q"}
        nursery.cancel_scope.cancel()


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


# -- a lone checkpoint, written from the trio thread (lone.py) -------------------------------------------------


def _done(output: object) -> Any:
    from durable import StepResult, StepStatus

    return StepResult(step_name="s", status=StepStatus.COMPLETED, key="s#0", output=output)


@asynccontextmanager
async def _leased(make: Make) -> AsyncIterator[tuple[Any, Owner, trio.Nursery]]:
    """A store with its writer thread running, holding instance ``i`` (running) leased to a new owner."""
    store, owner = make(), Owner.this_process()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.create_instance(WorkflowInstance(id="i", workflow_name="wf", status=InstanceStatus.RUNNING),
                                    owner=owner)
        yield store, owner, nursery
        nursery.cancel_scope.cancel()


async def test_a_lone_checkpoint_is_written_by_the_trio_thread_and_still_fenced(pg_store_factory: Make) -> None:
    from durable.stores._lease import LeaseLost

    b = Owner.this_process()
    async with _leased(pg_store_factory) as (store, a, nursery):
        writes = store._writer.writes
        await store.put_step("i", _done(1), owner=a.id)
        assert store._writer.writes == writes  # not handed to the writer thread
        assert (await store.get_steps("i"))["s#0"].output == 1
        await store.release(a.id)
        assert await store.claim(["i"], b) == ["i"]
        with pytest.raises(LeaseLost, match="no longer held by this engine"):
            await store.put_step("i", _done(2), owner=a.id)  # refused, then run by the writer to say why
        assert (await store.get_steps("i"))["s#0"].output == 1
        await store.put_step("i", _done(3), owner=b.id)
        assert (await store.get_steps("i"))["s#0"].output == 3


async def test_a_lone_checkpoint_of_an_instance_finished_elsewhere_is_refused(pg_store_factory: Make) -> None:
    """The lone statement reads the lease alone, not the instance's status: it relies on every write that
    finishes an instance deleting its lease, and on no finished instance getting one."""
    from durable.stores._lease import LeaseLost

    async with _leased(pg_store_factory) as (store, a, nursery):
        await store.put_step("i", _done(1), owner=a.id)  # lone: prepared and written
        cancelled = await store.get_instance("i", steps=False)
        assert cancelled is not None
        await store.update_instance(attrs.evolve(cancelled, status=InstanceStatus.CANCELLED))  # another process
        with pytest.raises(LeaseLost):
            await store.put_step("i", _done(2), owner=a.id)
        done = WorkflowInstance(id="born-done", workflow_name="wf", status=InstanceStatus.COMPLETED)
        await store.create_instance(done, owner=a)
        assert await store.get_lease("born-done") is None
        with pytest.raises(LeaseLost):
            await store.put_step("born-done", _done(3), owner=a.id)
        assert (await store.get_steps("i"))["s#0"].output == 1 and await store.get_steps("born-done") == {}


async def test_writes_queued_during_a_lone_checkpoint_commit_after_it(pg_store_factory: Make,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from durable.stores._postgres import lone

    entered, gate = trio.Event(), trio.Event()
    real_send = lone.send

    async def held_send(*args: Any) -> bool:
        entered.set()
        await gate.wait()
        return await real_send(*args)

    async with _leased(pg_store_factory) as (store, a, nursery):
        await store.put_step("i", _done(0), owner=a.id)  # prepares the statement on the connection
        monkeypatch.setattr(lone, "send", held_send)
        first_done = trio.Event()

        async def first() -> None:
            await store.put_step("i", _done(1), owner=a.id)
            first_done.set()

        nursery.start_soon(first)
        await entered.wait()
        later = trio.Event()

        async def second() -> None:
            await store.put_step("i", _done(2), owner=a.id)  # the writer thread is held off: queued
            later.set()

        nursery.start_soon(second)
        with trio.move_on_after(0.3):
            await later.wait()
        assert not later.is_set()  # not committed before the lone write it follows
        gate.set()
        with trio.fail_after(10):
            await first_done.wait()
            await later.wait()
        assert (await store.get_steps("i"))["s#0"].output == 2


async def test_a_connection_dropped_under_a_lone_checkpoint_is_a_write_in_doubt(pg_store_factory: Make,
                                                                               pg_url: str) -> None:
    async with _leased(pg_store_factory) as (store, a, nursery):
        await store.put_step("i", _done(1), owner=a.id)
        assert _kill_connections(pg_url, store.schema) >= 1
        with pytest.raises(StoreError, match="may or may not have committed"):
            await store.put_step("i", _done(2), owner=a.id)
        await store.put_step("i", _done(3), owner=a.id)  # a new connection (the writer's), then lone again
        await store.put_step("i", _done(4), owner=a.id)
        assert (await store.get_steps("i"))["s#0"].output == 4


async def test_step_keys_and_records_are_paired_whatever_plan_reads_them(pg_store_factory: Make,
                                                                       pg_url: str) -> None:
    # Keys and records are read by two aggregates: once the table is analyzed, the keys may come from an
    # index-only scan (key order) and the records from the heap (the order written). Both must be ordered.
    from datetime import timedelta

    from durable import StepResult, StepStatus
    from durable._model.clock import EPOCH

    store = pg_store_factory()
    ids = ["i", *[f"o{m}" for m in range(250)]]
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for iid in ids:
            await store.create_instance(WorkflowInstance(id=iid, workflow_name="wf", status=InstanceStatus.RUNNING))

        async def steps_of(iid: str, n: int) -> None:
            for x in range(n):  # s#0, s#1, ..., s#10 (which sorts before s#2), ...
                await store.put_step(iid, StepResult(step_name="s", status=StepStatus.COMPLETED, key=f"s#{x}",
                                                     output=f"{iid}:{x}", started_at=EPOCH + timedelta(seconds=x)))

        await steps_of("i", 30)
        async with trio.open_nursery() as writers:
            for iid in ids[1:]:
                writers.start_soon(steps_of, iid, 20)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("VACUUM ANALYZE {}.steps").format(sql.Identifier(store.schema)))
        inst, steps = await store.get_instance_and_steps("i")
        assert inst is not None and {k: s.output for k, s in steps.items()} == {f"s#{x}": f"i:{x}" for x in range(30)}
        full = await store.get_instance("i")
        assert full is not None and full.step_results["s"].output == "i:29"
        nursery.cancel_scope.cancel()


async def test_a_lone_checkpoint_prepares_again_after_psycopg_deallocated_it(pg_store_factory: Make) -> None:
    # psycopg auto-prepares the writer's repeated statements, and after a rollback sends DEALLOCATE ALL:
    # the lone statement goes too, and must be prepared again rather than fall back to the writer for good.
    def boom(cur: Any) -> None:
        cur.execute("SELECT 1/0")

    async with _leased(pg_store_factory) as (store, a, nursery):
        await store.put_step("i", _done(0), owner=a.id)
        for j in range(8):  # the same statement again and again: psycopg prepares it
            await store.put_step("i", attrs.evolve(_done(j), key=f"u#{j}"))
        with pytest.raises(StoreError, match="division by zero"):
            await store._write(boom)  # a failing write: rolled back
        writes = store._writer.writes
        for j in range(5):
            await store.put_step("i", _done(j + 1), owner=a.id)
        assert store._writer.writes == writes  # every one written from the trio thread
        assert (await store.get_steps("i"))["s#0"].output == 5


async def test_a_claim_hands_the_worker_what_it_took_with_its_checkpoints(pg_store_factory: Make,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A queued instance that already has checkpoints (requeued after its engine died): the claim's own rows
    # give the worker its record and every checkpoint, with no read of its own; only once.
    from datetime import UTC, datetime

    from durable import StepResult, StepStatus

    store = pg_store_factory()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.create_instance(WorkflowInstance(id="q", workflow_name="wf", status=InstanceStatus.PENDING,
                                                     queue="default"))
        for x in range(12):  # keys that sort apart from the order written
            await store.put_step("q", StepResult(step_name="s", status=StepStatus.COMPLETED, key=f"s#{x}",
                                                 output=x))
        taken, _ = await store.claim_queued(Owner.this_process(), [("default", None)], None, 10,
                                            datetime.now(UTC))
        assert taken == ["q"]

        async def no_read(*args: Any) -> Any:
            raise AssertionError("read from the database")

        monkeypatch.setattr(store, "_read", no_read)
        inst, steps = await store.get_instance_and_steps("q")
        assert inst is not None and inst.id == "q" and not inst.step_results
        assert {k: r.output for k, r in steps.items()} == {f"s#{x}": x for x in range(12)}
        with pytest.raises(AssertionError, match="read from the database"):
            await store.get_instance_and_steps("q")  # handed over once: later calls read
        nursery.cancel_scope.cancel()


async def test_consecutive_events_of_one_instance_share_a_row_and_page_as_before(
        pg_store_factory: Make, pg_url: str) -> None:
    """Events appended together are packed, a row per run of one instance's (schema version 3): ten of
    "a", one of "b", five of "a" make three rows; every page, from any id and of any length, is what it was."""
    from durable._model.eventlog import encode_event

    store = pg_store_factory()
    for iid in ("a", "b"):
        await store.create_instance(WorkflowInstance(id=iid, workflow_name="wf", status=InstanceStatus.RUNNING))
    order = ["a"] * 10 + ["b"] + ["a"] * 5
    for n, iid in enumerate(order):
        store.append_event(iid, encode_event("workflow.progress", iid, "wf", {"n": n}))
    await store.release("nobody")  # a durable write: the events ride its batch
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(sql.SQL("SELECT instance_id, n FROM {}.events ORDER BY id").format(
            sql.Identifier(store.schema))).fetchall()
    assert rows == [("a", 10), ("b", 1), ("a", 5)]
    every = await store.read_all_events(0, 100)
    assert [iid for _, iid, _ in every] == order and [e[0] for e in every] == list(range(every[0][0],
                                                                                          every[0][0] + 16))
    mine = [(eid, data) for eid, iid, data in every if iid == "a"]
    assert await store.read_events("a", 0, 100) == mine
    for after in [0] + [eid for eid, _ in mine]:
        for limit in (1, 3, 10, 16):
            assert await store.read_events("a", after, limit) == [e for e in mine if e[0] > after][:limit]
            assert await store.read_all_events(after, limit) == [e for e in every if e[0] > after][:limit]


async def test_a_row_packs_64_events_at_most_and_any_limit_reads(pg_store_factory: Make, pg_url: str) -> None:
    import sys

    from durable._model.eventlog import MAX_EVENT_ID, encode_event
    from durable.stores._postgres.eventlog import unpack

    store = pg_store_factory()
    await store.create_instance(WorkflowInstance(id="a", workflow_name="wf", status=InstanceStatus.RUNNING))
    for n in range(150):
        store.append_event("a", encode_event("workflow.progress", "a", "wf", {"n": n}))
    await store.release("nobody")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(sql.SQL("SELECT n FROM {}.events ORDER BY id").format(
            sql.Identifier(store.schema))).fetchall()
    assert rows == [(64,), (64,), (22,)]
    every = await store.read_events("a", 0, 1000)
    assert len(every) == 150
    assert await store.read_events("a", 0, sys.maxsize) == every == await store.read_events("a", 0, MAX_EVENT_ID)
    assert [e[:2] for e in await store.read_all_events(0, MAX_EVENT_ID)] == [(i, "a") for i, _ in every]
    with pytest.raises(StoreError, match="corrupt record at events/9"):
        unpack(9, 3, b"\x00\x00\x00\x01x\x00\x00\x00\x05ab")  # the lengths run past the row's bytes
