"""The PostgreSQL store's wake-ups (LISTEN/NOTIFY): starts, signals, cancels and ends reach engines and clients
of other processes (and other store objects) at once, far inside a 30 s poll; a store's own are skipped; a
dropped listening connection comes back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from durable import AsyncClient, Engine, InstanceStatus, WorkflowInstance
from durable.stores._postgres.listen import MAX_PAYLOAD, PostgresListener, channel_of, parse, payloads

import pg_wake_flows as flows

pytestmark = pytest.mark.usefixtures("pg_url")

Make = Callable[..., Any]
POLL = 30.0  # every poll in these tests: what they see sooner came by a wake-up
SOON = 5.0  # "at once", with room for a loaded 2-core machine
HERE = Path(__file__).parent


def _url(pg_url: str, schema: str) -> str:
    return f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"


def _python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], cwd=str(HERE), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out


# -- payloads ------------------------------------------------------------------------------------


def test_payloads_coalesce_per_kind_and_stay_under_the_limit() -> None:
    notes = [b"work", b"work", b"end a", b"end b", b"end a", b"signal x y\0work", b"events \xc3\xa9"]
    sent = payloads(notes, "me")
    assert sent == ['work me', 'end me ["a", "b"]', 'signal me ["x y"]', 'events me ["\\u00e9"]']
    kinds = ("work", "signal", "end", "events")
    assert [w for p in sent for w in parse(p, kinds, None)] == [
        b"work ", b"end a", b"end b", b"signal x y", "events é".encode()]
    assert [w for p in sent for w in parse(p, kinds, "me")] == []  # its own: skipped
    assert [w for p in sent for w in parse(p, ("end",), "other")] == [b"end a", b"end b"]
    many = [f"end {i:0>150}".encode() for i in range(200)]
    split = payloads(many, "me")
    assert len(split) > 1 and all(len(p.encode()) <= MAX_PAYLOAD for p in split)
    assert [w for p in split for w in parse(p, ("end",), None)] == many


def test_channels_fit_postgresql_identifiers() -> None:
    assert channel_of("durable") == "durable_durable"
    long = channel_of("s" * 63)
    assert len(long) <= 63 and long.startswith("durable_") and long != channel_of("s" * 62 + "t")


# -- the listener ----------------------------------------------------------------------------------


async def _queued(store: Any, iid: str) -> None:
    await store.create_instance(WorkflowInstance(id=iid, workflow_name="wf", status=InstanceStatus.PENDING,
                                                 queue="default"))


async def test_a_listener_skips_its_own_stores_wakeups_and_hears_the_others(pg_store_factory: Make) -> None:
    mine, other = pg_store_factory(), pg_store_factory()
    listener = mine.listener(["work", "signal"])
    assert isinstance(listener, PostgresListener)
    await listener.open()
    try:
        await _queued(mine, "a")
        await mine.send_signal("a", "go", 1)
        assert await listener.wait(timeout=0.5) == []  # this store object knows what it wrote
        await _queued(other, "b")
        await other.send_signal("b", "go", 2)
        got: list[bytes] = []
        with trio.fail_after(SOON):
            while len(got) < 2:
                got += await listener.wait()
        assert got == [b"work ", b"signal b"]
    finally:
        listener.close()
    with pytest.raises(trio.ClosedResourceError):
        await listener.wait()


async def test_only_committed_writes_wake(pg_store_factory: Make) -> None:
    store, other = pg_store_factory(), pg_store_factory()
    await _queued(other, "a")
    listener = store.listener(["work"])
    await listener.open()
    try:
        await _queued(other, "a")  # exists already: nothing queued, but the note rides the commit (harmless)
        assert await listener.wait(timeout=SOON) == [b"work "]
        with pytest.raises(Exception):
            await other.send_signal("", "go", 1)  # refused before anything is written
        assert await listener.wait(timeout=0.3) == []
    finally:
        listener.close()


def _terminate(pg_url: str, pid: int) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


async def test_the_listener_reconnects_after_its_connection_is_terminated(pg_store_factory: Make,
                                                                           pg_url: str) -> None:
    store, other = pg_store_factory(), pg_store_factory()
    listener = store.listener(["work", "end"])
    assert isinstance(listener, PostgresListener)
    await listener.open()
    try:
        assert listener.available and listener.connects == 1
        assert listener._conn is not None
        _terminate(pg_url, listener._conn.pgconn.backend_pid)
        with trio.fail_after(SOON):
            got = await listener.wait()
        # back, and telling its waiters to look again (whatever was sent meanwhile is lost)
        assert got == [b"work ", b"end "] and listener.connects == 2 and listener.available
        await _queued(other, "after")
        with trio.fail_after(SOON):
            assert await listener.wait() == [b"work "]
    finally:
        listener.close()


async def test_an_unreachable_server_is_retried_with_backoff_while_waits_time_out() -> None:
    from durable import PostgresStore

    store = PostgresStore("postgresql://u:pw@127.0.0.1:1/db?connect_timeout=1")
    listener = store.listener(["work"])
    await listener.open()  # does not raise: waiters poll meanwhile
    try:
        assert not listener.available
        start = trio.current_time()
        assert await listener.wait(timeout=0.5) == []
        assert trio.current_time() - start < 2
    finally:
        listener.close()
        store.close()


# -- engines and clients -------------------------------------------------------------------------


async def test_a_start_from_another_process_wakes_a_serving_engine(pg_store_factory: Make, pg_url: str) -> None:
    store = pg_store_factory()
    url = _url(pg_url, store.schema)
    async with Engine(store, poll_interval=POLL) as engine:
        engine.workflows.register(flows.stamped)
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            await trio.sleep(0.3)  # the serve loop's first look is over: it waits now
            proc = _python(
                "import json, time\n"
                "from durable import Client\n"
                f"with Client({url!r}, poll_interval={POLL}) as c:\n"
                "    out = []\n"
                "    for i in range(3):\n"
                "        t0 = time.time()\n"
                "        iid = c.start('stamped', str(i))\n"
                "        out.append((t0, c.wait(iid, timeout=20).output))\n"
                "print(json.dumps(out))\n")
            out = await trio.to_thread.run_sync(_finish, proc)
            nursery.cancel_scope.cancel()
    for t0, ran_at in json.loads(out):
        assert 0 <= ran_at - t0 < SOON  # picked up by a wake-up, not the 30 s poll
    # ... and the client's wait() was woken by this process's end of each (else 30 s each)


async def test_a_signal_and_a_cancel_from_a_second_store_object_wake_the_engine(pg_store_factory: Make) -> None:
    store, other = pg_store_factory(), pg_store_factory()
    async with Engine(store, poll_interval=POLL) as engine:
        engine.workflows.register(flows.waits_for_go)
        engine.workflows.register(flows.sleeps_long)
        waiting = await engine.workflows.start(flows.waits_for_go, "w")
        sleeping = await engine.workflows.start(flows.sleeps_long, 600.0)
        await trio.sleep(0.5)  # both wait now (one for its signal, one in its step)
        async with AsyncClient.sharing(other, poll_interval=POLL) as client:
            start = trio.current_time()
            await client.signal(waiting, "go", "now")
            with trio.fail_after(SOON):
                done = await engine.workflows.wait(waiting)
            assert done.output == "w: now"
            assert await client.cancel(sleeping)
            with trio.fail_after(SOON):
                while sleeping in engine.workflows.running_ids():
                    await trio.sleep(0.02)
            assert trio.current_time() - start < SOON
        got = await store.get_instance(sleeping)
        assert got is not None and got.status == InstanceStatus.CANCELLED


async def test_a_clients_wait_is_woken_by_another_processes_end(pg_store_factory: Make, pg_url: str) -> None:
    store = pg_store_factory()
    url = _url(pg_url, store.schema)
    assert await store.get_instance("x") is None  # (the store is created on first use; a client creates none)
    async with AsyncClient(url, poll_interval=POLL) as client:
        iid = await client.start("sleeps_long", 1.0, allow_unknown=True)
        worker = subprocess.Popen(
            [sys.executable, "-m", "durable", "worker", "pg_wake_flows.py", "-s", url, "--poll", "0.2"],
            cwd=str(HERE), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with trio.fail_after(POLL - 5):
                done = await client.wait(iid)
            assert done.status == InstanceStatus.COMPLETED
            assert done.completed_at is not None
            assert time.time() - done.completed_at.timestamp() < SOON  # woken at its end, not by a poll
        finally:
            worker.terminate()
            worker.communicate(timeout=30)
