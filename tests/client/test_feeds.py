"""Event feeds (``AsyncClient.subscribe``, ``all_events``, ``Client.events``), the event hub's bounded buffers,
and ``AsyncClient.sharing(engine)``: a client on a serving engine's own trio run and store.

Three settings:

- a ``durable worker`` subprocess on an LMDB store (as in ``test_client.py``)
  and a client of its own in this process: events cross processes;
- ``AsyncClient.sharing(store)`` over each store, with events appended to it
  directly: the slow-reader tests, where the test decides what is read when;
- ``AsyncClient.sharing(engine)`` inside ``Engine.open(...)`` with
  ``engine.serve()`` running, both with ``poll_interval=30``: what happens
  well within seconds there came from a wake-up (``Engine.wake`` for the
  client's writes, ``Store.on_change`` for the engine's), never from a poll.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import attrs
import pytest
import trio
import trio.testing

import durable
from durable import (AsyncClient, Client, Engine, Event, EventFeed, InstanceNotFound, InstanceStatus, Queue, Store,
                     WorkflowInstance, step, workflow)
from durable._model.eventlog import encode_event
from durable.client import _hub
from test_client import _known, _stop, _worker

PROMPT = 5.0  # seconds: "at once" (the engines' and clients' poll_interval is 30 s)
LONG = 30.0  # seconds: a liveness bound for work done by the worker subprocess


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with a ``durable worker`` serving client_flows (greet, waiter, lined) once it is up."""
    store = tmp_path_factory.mktemp("feeds") / "store.lmdb"
    proc = _worker(store)
    try:
        deadline = time.monotonic() + 60
        while True:
            if (store / "data.mdb").exists():
                with Client(store) as c:
                    if "greet" in _known(c):
                        break
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        yield store
    finally:
        if proc.poll() is None:
            _stop(proc)


async def read_until(feed: EventFeed, done: Any, timeout: float = LONG) -> list[Event]:
    """Events of ``feed`` until ``done(event)`` is true for one (included)."""
    got: list[Event] = []
    with trio.fail_after(timeout):
        while True:
            for event in await feed.receive():
                got.append(event)
                if done(event):
                    return got


async def drain(feed: EventFeed, timeout: float = LONG) -> list[Event]:
    """Every event of an instance's feed, until it ends."""
    with trio.fail_after(timeout):
        return [event async for event in feed]


def increasing(ids: list[int | None]) -> bool:
    return all(isinstance(i, int) for i in ids) and ids == sorted(set(ids))  # type: ignore[type-var]


async def stored_ids(c: AsyncClient, instance_id: str) -> list[int]:
    found = await c._call(c.store.read_events, instance_id, 0, 10_000, cancellable=True)
    return [n for n, _ in found]


async def sync_events(c: AsyncClient, instance_id: str, after: int | None = None) -> list[Event]:
    """``Client.events`` of the same store (the sync client inside ``c``), from a thread."""
    assert c._client is not None
    client = c._client
    return await trio.to_thread.run_sync(lambda: list(client.events(instance_id, after=after)))


# -- one instance's feed, across processes -------------------------------------


async def test_an_instance_feed_is_its_whole_log_and_ends_after_its_last_event(served: Path) -> None:
    async with AsyncClient(served) as c:
        iid = await c.start("greet", "feed")
        async with await c.subscribe(iid) as feed:
            assert not feed.ended
            events = await drain(feed)
            assert feed.ended and feed.position == events[-1].id
            assert await feed.receive() == [] and await feed.receive(timeout=0.1) == []
        names = [e.name for e in events]
        assert names[0] == "workflow.started" and names[-1] == "workflow.completed"
        assert names.count("workflow.step.completed") == 2 and events[-1].output == "** FEED **"
        assert all(e.instance_id == iid and e.workflow_name == "greet" for e in events)
        ids = [e.id for e in events]
        assert increasing(ids)
        assert ids == await stored_ids(c, iid)  # the whole log, as stored
        same = await sync_events(c, iid)
        assert [(e.id, e.name) for e in same] == [(e.id, e.name) for e in events]

        # after= resumes after any event: the rest exactly, nothing lost or repeated
        for k, after in enumerate(ids):
            async with await c.subscribe(iid, after=after) as rest:
                assert [e.id for e in await drain(rest)] == ids[k + 1:]
                assert rest.ended
            assert [e.id for e in await sync_events(c, iid, after=after)] == ids[k + 1:]
        assert [e.id async for e in c.events(iid, after=ids[2])] == ids[3:]


async def test_a_feed_closed_midway_resumes_with_after_across_new_events(served: Path) -> None:
    async with AsyncClient(served) as c:
        iid = await c.start("waiter", "resumed")
        async with await c.subscribe(iid) as first:
            head = await read_until(first, lambda e: e.name == "workflow.step.started")  # waiting for "go"
            assert not first.ended
            mark = first.position
            assert mark == head[-1].id
        await c.signal(iid, "go", "now")  # events are written while no feed is open
        async with await c.subscribe(iid, after=mark) as second:
            tail = await drain(second)
        assert tail[-1].name == "workflow.completed" and tail[-1].output == "resumed: now"
        ids = [e.id for e in head + tail]
        assert increasing(ids) and ids == await stored_ids(c, iid)


async def test_receive_times_out_with_nothing_and_an_unknown_instance_raises(served: Path) -> None:
    async with AsyncClient(served) as c:
        iid = await c.start("waiter", "quiet")
        async with await c.subscribe(iid) as feed:
            await read_until(feed, lambda e: e.name == "workflow.step.started")
            before = time.monotonic()
            assert await feed.receive(timeout=0.2) == []  # nothing happens: empty, not ended
            assert 0.15 <= time.monotonic() - before < PROMPT and not feed.ended
            assert await c.cancel(iid)
            last = await read_until(feed, lambda e: e.name == "workflow.cancelled", PROMPT)
            assert last[-1].name == "workflow.cancelled" and feed.ended
        async with await c.subscribe(None, workflow="no-such-workflow") as nothing:
            assert await nothing.receive(timeout=0.2) == [] and not nothing.ended

        missing = await c.subscribe("no-such-instance")
        with pytest.raises(InstanceNotFound):
            await missing.receive(timeout=0.2)
        with pytest.raises(InstanceNotFound):
            await missing.receive()
        await missing.aclose()
        with pytest.raises(InstanceNotFound):
            async for _ in c.events("no-such-instance"):
                pass  # pragma: no cover
        with pytest.raises(InstanceNotFound):
            await sync_events(c, "no-such-instance")
        for bad in (-1, 1.5, "7"):
            with pytest.raises(ValueError, match="after must be"):
                await c.subscribe(iid, after=bad)
        with pytest.raises(ValueError):
            await c.subscribe("")


# -- every instance's feed -----------------------------------------------------


async def test_all_events_filter_by_workflow_start_now_and_replay_with_after(served: Path) -> None:
    async with AsyncClient(served) as c:
        old = await c.start("greet", "old")
        assert (await c.wait(old, timeout=LONG)).status == InstanceStatus.COMPLETED
        old_ids = await stored_ids(c, old)

        # no after: from now on (nothing of the instance that ended before), of greet only
        async with await c.subscribe(None, workflow="greet") as greets, await c.subscribe(None) as every:
            other = await c.start("lined", 7)
            new = await c.start("greet", "new")
            seen = await read_until(greets, lambda e: e.instance_id == new and e.name == "workflow.completed")
            assert {e.workflow_name for e in seen} == {"greet"} and {e.instance_id for e in seen} == {new}
            assert [e.id for e in seen] == await stored_ids(c, new) and not greets.ended
            everything = await read_until(every, lambda e: e.instance_id == new and e.name == "workflow.completed")
            assert old not in {e.instance_id for e in everything}
            assert increasing([e.id for e in everything]) and every.position == everything[-1].id
        await c.wait(other, timeout=LONG)
        other_ids = await stored_ids(c, other)
        new_ids = await stored_ids(c, new)

        # after: replayed from the store, in id order, each instance's log whole
        replay: list[Event] = []
        replaying = cast(AsyncGenerator[Event, None], c.all_events(after=old_ids[0] - 1, workflow="greet"))
        async with contextlib.aclosing(replaying) as it:
            with trio.fail_after(LONG):
                async for event in it:
                    replay.append(event)
                    if event.instance_id == new and event.name == "workflow.completed":
                        break
        assert {e.workflow_name for e in replay} == {"greet"} and increasing([e.id for e in replay])
        assert [e.id for e in replay if e.instance_id == old] == old_ids
        assert [e.id for e in replay if e.instance_id == new] == new_ids
        assert other not in {e.instance_id for e in replay}

        async with await c.subscribe(None, after=old_ids[0] - 1) as unfiltered:  # every workflow's
            ended: set[str] = set()

            def both_ended(e: Event) -> bool:
                if e.name == "workflow.completed":
                    ended.add(e.instance_id)
                return {other, new} <= ended

            got = await read_until(unfiltered, both_ended)
        assert increasing([e.id for e in got])
        for iid, ids in ((old, old_ids), (other, other_ids), (new, new_ids)):
            assert [e.id for e in got if e.instance_id == iid] == ids
        assert {e.workflow_name for e in got if e.instance_id == other} == {"lined"}


def test_workflows_lists_what_the_worker_registered_with_their_queues(served: Path) -> None:
    expected = {"greet": None, "lined": "lines", "waiter": None}
    with Client(served) as c:
        assert c.workflows() == expected

    async def main() -> dict[str, str | None]:
        async with AsyncClient(served) as ac:
            return await ac.workflows()

    assert trio.run(main) == expected


# -- a slow reader: bounded buffers, replays from the store ---------------------


@pytest.fixture
async def running_store(store: Store) -> AsyncIterator[Store]:
    """The conftest ``store`` (memory / lmdb), with its background work (LMDB's writer thread) running."""
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()


def _append(store: Store, iid: str, workflow_name: str, n: int) -> None:
    store.append_event(iid, encode_event("workflow.progress", iid, workflow_name, {"progress": n}))


async def _hub_caught_up(c: AsyncClient, store: Store) -> None:
    """Commit what was appended (a durable write), then wait until the client's hub has read all of it."""
    await store.release("nobody")
    hub = c._portal._hub
    assert hub is not None
    with trio.fail_after(PROMPT):
        while hub.cursor < await store.last_event_id():
            await trio.sleep(0.005)
    await trio.testing.wait_all_tasks_blocked()


@pytest.mark.parametrize("read_batch", [4, 500])  # 4: a replay takes many batches to catch up
@pytest.mark.parametrize("of", ["instance", "all"])
async def test_a_slow_reader_gets_every_event_once_in_order_with_a_bounded_buffer(
        running_store: Store, monkeypatch: pytest.MonkeyPatch, read_batch: int, of: str) -> None:
    store = running_store
    monkeypatch.setattr(_hub, "READ_BATCH", read_batch)
    most = [0]
    offer = _hub.Feed.offer

    def measured(self: _hub.Feed, event: Event) -> None:
        offer(self, event)
        most[0] = max(most[0], len(self._buffer))

    monkeypatch.setattr(_hub.Feed, "offer", measured)
    for iid, name in (("i1", "wf"), ("o1", "other")):
        await store.create_instance(WorkflowInstance(id=iid, workflow_name=name, status=InstanceStatus.RUNNING))
    _append(store, "i1", "wf", -1)
    await store.release("nobody")

    async with AsyncClient.sharing(store, poll_interval=30) as c:
        if of == "instance":
            feed = await c.subscribe("i1")
            got = await feed.receive(timeout=PROMPT)  # its log so far, from the store
        else:
            feed = await c.subscribe(None, workflow="wf")  # from now on
            got = []
        assert await feed.receive(timeout=0.05) == []  # caught up: it reads on from the hub's buffer
        feed._feed._max_buffer = 5
        for n in range(50):  # 50 events of i1 (and 25 of another workflow), none read
            _append(store, "i1", "wf", n)
            if n % 2:
                _append(store, "o1", "other", n)
        await _hub_caught_up(c, store)
        inst = await store.get_instance("i1", steps=False)
        assert inst is not None
        await store.update_instance(attrs.evolve(inst, status=InstanceStatus.COMPLETED, output="done"))
        await _hub_caught_up(c, store)
        assert feed._feed.resyncs >= 1  # the buffer overflowed: it was dropped

        with trio.fail_after(PROMPT):
            while not got or got[-1].name != "workflow.completed":
                more = await feed.receive()
                assert more, "the feed stopped before the instance's last event"
                got += more
        await feed.aclose()
    stored = await store.read_events("i1", 0, 1000)
    expected = stored if of == "instance" else stored[1:]  # (a feed of all starts from now)
    assert [e.id for e in got] == [n for n, _ in expected]
    assert [e.progress for e in got[:-1]] == ([-1] if of == "instance" else []) + list(range(50))
    assert {e.instance_id for e in got} == {"i1"}
    assert 0 < most[0] <= 5  # memory stays bounded however slow the reader
    assert feed.ended is (of == "instance")


async def test_many_feeds_of_one_client_share_one_hub(running_store: Store) -> None:
    store = running_store
    await store.create_instance(WorkflowInstance(id="i1", workflow_name="wf", status=InstanceStatus.RUNNING))
    async with AsyncClient.sharing(store, poll_interval=30) as c:
        feeds = [await c.subscribe("i1") for _ in range(20)] + [await c.subscribe(None) for _ in range(5)]
        hub = c._portal._hub
        assert hub is not None and hub.feeds == 25
        for n in range(3):
            _append(store, "i1", "wf", n)
        await store.release("nobody")
        for feed in feeds:
            got: list[Event] = []
            with trio.fail_after(PROMPT):
                while len(got) < 3:
                    got += await feed.receive()
            assert [e.progress for e in got] == [0, 1, 2]
        for feed in feeds:
            await feed.aclose()
        assert hub.feeds == 0


# -- a client sharing a serving engine's run ----------------------------------


@step
async def add_one(n: int) -> int:
    return n + 1


@workflow(queue="lines")
async def counted(n: int) -> int:
    total = 0
    for _ in range(n):
        total = await add_one(total)
    return total


@workflow
async def held(label: str) -> str:
    got = await durable.wait_for_signal("go", timeout=600)
    return f"{label}: {got}"


@workflow
async def napping(label: str) -> str:
    await durable.sleep(600)
    return label


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Engine, AsyncClient]]:
    """A serving engine on an LMDB store, and a client sharing it; nothing polls more often than every 30 s."""
    async with Engine.open(tmp_path / "s.lmdb", poll_interval=30, lease_ttl=300, **options) as engine:
        assert engine._driver.sleepers.signals.poll_interval == 30  # so no poll explains a wake-up
        for wf in (counted, held, napping):
            engine.workflows.register(wf)
        engine.queues.register(Queue("lines"))
        await engine.nursery.start(engine.serve)
        async with AsyncClient.sharing(engine, poll_interval=30) as client:
            yield engine, client
        engine.nursery.cancel_scope.cancel()


async def test_the_engine_poll_interval_holds_for_its_signal_polls() -> None:
    engine = Engine(durable.MemoryStore(), poll_interval=30)
    assert engine._driver.sleepers.signals.poll_interval == 30
    async with engine:
        assert engine._driver.sleepers.signals.poll_interval == 30


async def _until(condition: Any, timeout: float = PROMPT) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


async def test_a_sharing_client_start_runs_at_once_and_sees_the_engine_writes(tmp_path: Path) -> None:
    async with serving(tmp_path) as (engine, client):
        assert client.store is engine.store
        iid = await client.start(counted, 3)
        with trio.fail_after(PROMPT):  # the engine's serve() was woken (Engine.wake), the wait by on_change
            inst = await client.wait(iid)
        assert inst.status == InstanceStatus.COMPLETED and inst.output == 3 and inst.queue == "lines"

        async with await client.subscribe(None, workflow="counted") as every:
            second = await client.start("counted", 2)  # by name, as an HTTP API does
            async with await client.subscribe(second) as feed:
                with trio.fail_after(PROMPT):  # live: the hub is nudged by the engine's own commits
                    events = [e async for e in feed]
            everything = await read_until(every, lambda e: e.name == "workflow.completed", PROMPT)
        names = [e.name for e in events]
        assert names[0] == "workflow.started" and names[-1] == "workflow.completed" and events[-1].output == 2
        assert names.count("workflow.step.completed") == 2
        ids = [e.id for e in events]
        assert increasing(ids) and ids == [n for n, _ in await engine.store.read_events(second, 0, 1000)]
        assert [e.id for e in everything] == ids
        with trio.fail_after(PROMPT):
            assert [e.id async for e in client.events(iid)] == [
                n for n, _ in await engine.store.read_events(iid, 0, 1000)]


@pytest.mark.parametrize("suspend_after", [1000.0, 0.0], ids=["in-memory", "unloaded"])
async def test_a_sharing_client_cancel_stops_a_sleeping_instance_at_once(tmp_path: Path,
                                                                        suspend_after: float) -> None:
    async with serving(tmp_path, suspend_after=suspend_after) as (engine, client):
        iid = await client.start(napping, "zz")
        if suspend_after:
            await _until(lambda: iid in engine.workflows.running_ids())
        else:
            await _until(lambda: iid in engine.workflows.suspended_ids())
        async with await client.subscribe(iid) as feed:
            await read_until(feed, lambda e: e.name == "workflow.step.started", PROMPT)  # its sleep began
            assert await client.cancel(iid) is True
            await _until(lambda: iid not in engine.workflows.running_ids()
                         and iid not in engine.workflows.suspended_ids())
            with trio.fail_after(PROMPT):
                rest = [e async for e in feed]
        assert rest[-1].name == "workflow.cancelled"
        inst = await client.wait(iid, timeout=PROMPT)
        assert inst.status == InstanceStatus.CANCELLED
        assert await client.cancel(iid) is False


@pytest.mark.parametrize("suspend_after", [1000.0, 0.0], ids=["in-memory", "unloaded"])
async def test_a_sharing_client_signal_wakes_a_waiting_instance_at_once(tmp_path: Path,
                                                                       suspend_after: float) -> None:
    async with serving(tmp_path, suspend_after=suspend_after) as (engine, client):
        iid = await client.start(held, "h")
        async with await client.subscribe(iid) as feed:
            await read_until(feed, lambda e: e.name == "workflow.step.started", PROMPT)
            if suspend_after:
                await _until(lambda: iid in engine.workflows.running_ids())
            else:
                await _until(lambda: iid in engine.workflows.suspended_ids())
            await trio.testing.wait_all_tasks_blocked(0.05)  # it waits for its signal now
            assert await client.signal(iid, "go", {"n": 1}) >= 1
            with trio.fail_after(PROMPT):
                inst = await client.wait(iid)
                rest = [e async for e in feed]
        assert inst.status == InstanceStatus.COMPLETED and inst.output == "h: {'n': 1}"
        assert rest[-1].name == "workflow.completed"


async def test_a_sharing_client_lists_the_serving_engine_workflows(tmp_path: Path) -> None:
    async with serving(tmp_path) as (engine, client):
        assert await client.workflows() == {"counted": "lines", "held": None, "napping": None}


async def test_sharing_takes_an_engine_or_a_store(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="takes an open Engine or a Store"):
        async with AsyncClient.sharing("some/path"):  # type: ignore[arg-type]
            pass  # pragma: no cover
    store = durable.MemoryStore()
    for bad in (0, -1, float("inf"), "1"):
        with pytest.raises(ValueError, match="poll_interval"):
            async with AsyncClient.sharing(store, poll_interval=bad):  # type: ignore[arg-type]
                pass  # pragma: no cover
    async with AsyncClient.sharing(store) as client:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await client.get("x")


@pytest.mark.parametrize("suspend_after", [1000.0, 0.0])
async def test_a_bare_wake_up_makes_every_waiter_look_again(tmp_path: Path, suspend_after: float) -> None:
    """A wake-up naming no instance (one naming it was dropped on a full socket queue) makes the engine look at
    every signal wait and lease, and a client's waits look again: written straight to the store (no wake-up
    sent), a signal and a cancel are noticed at once, with every poll 30 s away."""
    async with serving(tmp_path, suspend_after=suspend_after) as (engine, client):
        iid = await client.start(held, "h")
        other = await client.start(held, "o")
        for each in (iid, other):
            await _until(lambda each=each: each in (engine.workflows.running_ids() if suspend_after
                                                    else engine.workflows.suspended_ids()))
        await trio.testing.wait_all_tasks_blocked(0.05)
        await engine.store.send_signal(iid, "go", "quiet")  # no wake-up for it
        engine.wake("signal", "")
        with trio.fail_after(PROMPT):
            done = await client.wait(iid)
        assert done.output == "h: quiet"
        await durable.client._ops.cancel(engine.store, other)  # recorded with no wake-up to this engine
        engine.wake("end", "")
        with trio.fail_after(PROMPT):
            await _until(lambda: other not in engine.workflows.running_ids()
                         and other not in engine.workflows.suspended_ids())
        assert (await client.get(other)).status == InstanceStatus.CANCELLED  # type: ignore[union-attr]
