"""durable.Client and AsyncClient against a real ``durable worker`` process on the same LMDB store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
import trio

import durable
from durable import (AsyncClient, Client, Deduplicated, IdConflict, InstanceNotFound, InstanceStatus, QueueNotFound,
                     StoreError, WorkflowNotFound)

FLOWS = str(Path(__file__).with_name("client_flows.py"))


def _worker(store: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "durable", "worker", FLOWS, "-s", str(store), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store with a worker serving client_flows (its workflows are registered once it is up)."""
    store = tmp_path_factory.mktemp("client") / "store.lmdb"
    proc = _worker(store)
    try:
        deadline = time.monotonic() + 60
        while True:
            if os.path.exists(store / "data.mdb"):
                with Client(store) as c:
                    if "greet" in _known(c):
                        break
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        yield store
    finally:
        if proc.poll() is None:
            _stop(proc)


def _known(c: Client) -> list[str]:
    return c._portal.call(c.store.known_workflows)


def test_start_runs_in_the_worker_and_wait_wakes_on_its_end(served: Path) -> None:
    with Client(served) as c:
        iid = c.start("greet", "ada")
        inst = c.wait(iid, timeout=30)
        assert inst.status == InstanceStatus.COMPLETED and inst.output == "** ADA **"
        assert inst.queue == "default" and inst.step_results["decorate"].output == "** ADA **"
        got = c.get(iid)
        assert got is not None and got.output == "** ADA **"


def test_events_cross_processes_with_stable_ids_and_go_on_after_one(served: Path) -> None:
    with Client(served) as c:
        iid = c.start("greet", "bob")
        events = list(c.events(iid))
        names = [e.name for e in events]
        assert names[0] == "workflow.started" and names[-1] == "workflow.completed"
        assert names.count("workflow.step.completed") == 2
        ids = [e.id for e in events]
        assert all(isinstance(i, int) for i in ids) and ids == sorted(set(ids))  # type: ignore[type-var]
        assert events[-1].output == "** BOB **"
        rest = list(c.events(iid, after=ids[1]))
        assert [e.id for e in rest] == ids[2:]
        assert list(c.events(iid, after=ids[-1])) == []  # ended: nothing after the last


def test_signal_reaches_a_workflow_the_worker_unloaded(served: Path) -> None:
    with Client(served) as c:
        iid = c.start("waiter", "w")
        seen = []
        for event in c.events(iid):
            seen.append(event.name)
            if event.name == "workflow.step.started":
                c.signal(iid, "go", {"n": 1})
        assert seen[-1] == "workflow.completed"
        assert c.wait(iid, timeout=30).output == "w: {'n': 1}"


def test_cancel_stops_a_running_instance_in_the_worker(served: Path) -> None:
    with Client(served) as c:
        iid = c.start("waiter", "c")
        for event in c.events(iid):
            if event.name == "workflow.step.started":
                break
        assert c.cancel(iid) is True
        inst = c.wait(iid, timeout=30)
        assert inst.status == InstanceStatus.CANCELLED
        assert c.cancel(iid) is False
        assert [e.name for e in c.events(iid)][-1] == "workflow.cancelled"


def test_list_filters_and_pages(served: Path) -> None:
    with Client(served) as c:
        ids = [c.start("lined", n, id=f"line-{n}") for n in range(5)]
        for iid in ids:
            c.wait(iid, timeout=30)
        page = c.list(workflow="lined", limit=2)
        assert [i.id for i in page.instances] == ids[:2] and page.next_cursor is not None
        page = c.list(workflow="lined", limit=2, cursor=page.next_cursor)
        assert [i.id for i in page.instances] == ids[2:4]
        last = c.list(workflow="lined", limit=2, cursor=page.next_cursor)
        assert [i.id for i in last.instances] == ids[4:] and last.next_cursor is None
        assert {i.id for i in c.list(queue="lines", status="completed", limit=100).instances} >= set(ids)
        assert c.list(queue="nowhere").instances == []
        with pytest.raises(ValueError, match="not a cursor"):
            c.list(cursor="line-1")


def test_bad_input_is_refused_and_nothing_is_written(served: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no durable store here"):
        Client(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a durable store"):
        Client(tmp_path / "file")
    assert not (tmp_path / "missing").exists()
    with Client(served) as c:
        before = len(c.list(limit=10_000).instances)
        with pytest.raises(WorkflowNotFound, match="'nope'"):
            c.start("nope", 1)
        with pytest.raises(QueueNotFound, match="'gpu9'"):
            c.start("greet", "x", queue="gpu9")
        with pytest.raises(durable.SerializationError):
            c.start("greet", threading.Lock())
        with pytest.raises(InstanceNotFound):
            c.wait("no-such-id", timeout=1)
        with pytest.raises(InstanceNotFound):
            c.signal("no-such-id", "go")
        with pytest.raises(TimeoutError):
            c.wait(c.start("waiter", "t"), timeout=0.2)
        assert len(c.list(limit=10_000).instances) == before + 1
        queued = c.start("nope-yet", 1, allow_unknown=True)  # a workflow no engine knows yet: it waits
        assert c.get(queued).status == InstanceStatus.PENDING  # type: ignore[union-attr]


def test_ids_dedup_and_delay(served: Path) -> None:
    with Client(served) as c:
        first = c.start("greet", "d", id="fixed-1")
        assert c.start("greet", "d", id="fixed-1") == first
        with pytest.raises(IdConflict):
            c.start("greet", "other", id="fixed-1")
        held = c.start("waiter", "x", dedup_id="only-one")
        with pytest.raises(Deduplicated) as info:
            c.start("waiter", "y", dedup_id="only-one")
        assert info.value.existing_id == held
        c.signal(held, "go", 1)
        c.wait(held, timeout=30)
        again = c.start("waiter", "z", dedup_id="only-one")
        c.signal(again, "go", 2)
        assert c.wait(again, timeout=30).output == "z: 2"
        late = c.start("greet", "late", delay=timedelta(seconds=0.3))
        inst = c.wait(late, timeout=30)
        assert inst.started_at is not None and inst.created_at is not None
        assert inst.started_at - inst.created_at >= timedelta(seconds=0.3)


def test_a_client_in_threads_shares_one_store(served: Path) -> None:
    import concurrent.futures

    with Client(served) as c, concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(lambda n: c.start("greet", f"t{n}"), range(32)))
        outputs = list(pool.map(lambda i: c.wait(i, timeout=60).output, ids))
    assert outputs == [f"** T{n} **" for n in range(32)]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_client_under_asyncio_and_trio(served: Path, backend: str) -> None:
    async def main() -> list[str]:
        async with AsyncClient(served) as c:
            ids = [await c.start("greet", f"a{n}") for n in range(5)]
            done = [await c.wait(i, timeout=30) for i in ids]
            names = [e.name async for e in c.events(ids[0])]
            assert names[-1] == "workflow.completed"
            page = await c.list(workflow="greet", limit=1000)
            assert set(ids) <= {i.id for i in page.instances}
            return [d.output for d in done]

    assert anyio.run(main, backend=backend) == [f"** A{n} **" for n in range(5)]


def test_async_client_waits_give_way_to_cancellation(served: Path) -> None:
    async def main() -> None:
        async with AsyncClient(served) as c:
            iid = await c.start("waiter", "never")
            with anyio.move_on_after(0.3) as scope:
                await c.wait(iid)
            assert scope.cancelled_caught
            await c.cancel(iid)

    asyncio.run(main())


def test_resume_requeues_an_instance_whose_engine_is_gone(tmp_path: Path) -> None:
    store = tmp_path / "s.lmdb"
    proc = _worker(store)
    try:
        deadline = time.monotonic() + 60
        while not (store / "data.mdb").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with Client(store) as c:
            while "waiter" not in _known(c):
                time.sleep(0.05)
            iid = c.start("waiter", "r")
            for event in c.events(iid):
                if event.name == "workflow.step.started":
                    break
            assert c.resume(iid) is False  # a live worker runs it
            proc.kill()  # SIGKILL: its lease names a dead process
            proc.communicate(timeout=30)
            assert c.resume(iid) is True
            assert c.get(iid).status != InstanceStatus.COMPLETED  # type: ignore[union-attr]
        proc = _worker(store)
        with Client(store) as c:
            c.signal(iid, "go", "back")
            assert c.wait(iid, timeout=30).output == "r: back"
            with pytest.raises(InstanceNotFound):
                c.resume("no-such")
    finally:
        if proc.poll() is None:
            _stop(proc)


def test_many_pending_async_waits_hold_no_thread(served: Path) -> None:
    """200 waits pending at once (more than any thread pool) do not hold up another call; cancelling them works."""
    async def main() -> None:
        async with AsyncClient(served) as c:
            ids = [await c.start("waiter", f"p{n}") for n in range(5)]
            async with anyio.create_task_group() as tg:
                for n in range(200):
                    tg.start_soon(c.wait, ids[n % 5])
                with anyio.fail_after(30):  # liveness, not timing: it hangs if the waits hold threads
                    assert (await c.get(ids[0])) is not None
                    await c.signal(ids[0], "go", "now")
                tg.cancel_scope.cancel()
            assert (await c.wait(ids[0], timeout=30)).output == "p0: now"
            for iid in ids[1:]:
                await c.cancel(iid)

    asyncio.run(main())


def test_a_start_by_name_is_bound_to_the_workflow_in_the_worker(served: Path) -> None:
    with Client(served) as c:
        good = c.start("greet", name="kw")  # by keyword
        assert c.wait(good, timeout=30).output == "** KW **"
        assert c.get(good).kwargs == {"name": "kw"}  # type: ignore[union-attr]  # bound to the signature
        assert c.start("greet", name="kw", id="kw-1") == c.start("greet", name="kw", id="kw-1")  # same input
        bad = c.start("greet", "a", "b")  # two arguments for one parameter: the client has no code to check
        inst = c.wait(bad, timeout=30)
        assert inst.status == InstanceStatus.FAILED and "arguments do not fit the workflow" in (inst.error or "")
        assert inst.step_results == {}  # it never ran


def test_closing_a_client_ends_its_pending_calls_with_a_runtime_error(served: Path) -> None:
    """A call waiting when its client closes gets RuntimeError, never the client's own trio.Cancelled."""
    async def main() -> None:
        c = AsyncClient(served)
        iid = await c.start("waiter", "closing")
        got: list[BaseException] = []

        async def waiting() -> None:
            try:
                await c.wait(iid)
            except BaseException as exc:  # what the caller sees
                got.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting)
            await anyio.sleep(0.2)
            await c.aclose()
        assert len(got) == 1 and type(got[0]) is RuntimeError and "closed" in str(got[0])
        with Client(served) as again:
            again.cancel(iid)

    asyncio.run(main())

    with Client(served) as c:
        iid = c.start("waiter", "closing-sync")
        errors: list[BaseException] = []
        thread = threading.Thread(target=lambda: _catch(errors, lambda: c.wait(iid)))
        thread.start()
        time.sleep(0.2)
        c.close()
        thread.join(30)
    assert len(errors) == 1 and type(errors[0]) is RuntimeError
    with Client(served) as c:
        c.cancel(iid)


def _catch(errors: list[BaseException], fn: object) -> None:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:
        errors.append(exc)
