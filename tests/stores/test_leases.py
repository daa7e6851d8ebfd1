"""Leases: an instance runs in exactly one process at a time; a gone owner's instances are taken over."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from durable import Engine, InstanceStatus, LMDBStore, MemoryStore, Store, WorkflowInstance, step, workflow
from durable.stores import Owner
from durable.stores._lease import LeaseLost

CHILD = Path(__file__).with_name("lease_child.py")


def _instance(instance_id: str = "i1") -> WorkflowInstance:
    return WorkflowInstance(id=instance_id, workflow_name="wf", status=InstanceStatus.PENDING)


def _dead_pid() -> tuple[int, int | None]:
    """The pid (and start ticks) of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid, None


def _other_host(owner: Owner, *, age: float) -> Owner:
    return attrs.evolve(owner, id="remote", host=owner.host + "-elsewhere", pid=1, heartbeat=time.time() - age)


# -- liveness ----------------------------------------------------------------


def test_this_process_is_alive_and_a_dead_pid_is_not() -> None:
    me = Owner.this_process()
    assert me.is_alive()
    pid, _ = _dead_pid()
    assert not attrs.evolve(me, id="x", pid=pid, pid_started=None).is_alive()


def test_a_reused_pid_is_not_the_old_owner() -> None:
    me = Owner.this_process()
    if me.pid_started is None:
        pytest.skip("no /proc: pid reuse cannot be detected here")
    parent = attrs.evolve(me, id="x", pid=os.getppid(), pid_started=1)  # alive pid, other start time
    assert not parent.is_alive()
    # Our own pid with another start time: an earlier process that had our pid.
    assert not attrs.evolve(me, id="y", pid_started=me.pid_started + 1).is_alive()


def test_a_zombie_is_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1].startswith("Z"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert not attrs.evolve(Owner.this_process(), id="z", pid=proc.pid, pid_started=None).is_alive()
    finally:
        proc.wait()


def test_other_hosts_live_by_heartbeat() -> None:
    me = Owner.this_process(ttl=30)
    assert _other_host(me, age=5).is_alive()
    assert not _other_host(me, age=31).is_alive()


def test_owner_records_are_json_and_bad_ones_count_as_gone() -> None:
    me = Owner.this_process()
    assert Owner.decode(me.encode()) == me
    assert me.encode().startswith(b"{")
    for bad in (b"", b"not json", b"[]", b'{"id": 1}', b"\xff\xfe"):
        assert Owner.decode(bad) is None


# -- the store contract --------------------------------------------------------


async def test_claim_skips_a_live_holder_and_takes_a_gone_one(store: Store) -> None:
    a, b = Owner.this_process(), Owner.this_process()
    await store.create_instance(_instance(), owner=a)
    assert (await store.get_lease("i1")) == a
    assert await store.claim(["i1"], b) == []  # a is alive
    assert await store.claim(["i1"], a) == ["i1"]  # its own
    await store.release(a.id)
    assert await store.get_lease("i1") is None
    assert await store.claim(["i1", "missing"], b) == ["i1"]
    assert (await store.get_lease("i1")) == b


async def test_claim_takes_from_a_dead_process_and_an_expired_remote(store: Store) -> None:
    me = Owner.this_process()
    pid, _ = _dead_pid()
    dead = attrs.evolve(me, id="dead", pid=pid, pid_started=None)
    await store.create_instance(_instance("i1"), owner=dead)
    await store.create_instance(_instance("i2"), owner=_other_host(me, age=5))
    await store.create_instance(_instance("i3"), owner=attrs.evolve(_other_host(me, age=60), id="old"))
    assert await store.claim(["i1", "i2", "i3"], me) == ["i1", "i3"]


async def test_claim_skips_finished_instances(store: Store) -> None:
    a, b = Owner.this_process(), Owner.this_process()
    await store.create_instance(_instance(), owner=a)
    await store.update_instance(attrs.evolve(_instance(), status=InstanceStatus.COMPLETED), owner=a.id)
    assert await store.get_lease("i1") is None  # released when it finished
    assert await store.claim(["i1"], b) == []


async def test_fenced_writes_fail_once_the_lease_is_lost(store: Store) -> None:
    from durable import StepResult, StepStatus

    a, b = Owner.this_process(), Owner.this_process()
    await store.create_instance(_instance(), owner=a)
    done = StepResult(step_name="s", status=StepStatus.COMPLETED, key="s#0", output=1)
    await store.put_step("i1", done, owner=a.id)
    await store.release(a.id)
    assert await store.claim(["i1"], b) == ["i1"]
    assert await store.lost_leases(a.id, ["i1"]) == ["i1"]
    assert await store.lost_leases(b.id, ["i1"]) == []
    with pytest.raises(LeaseLost):
        await store.put_step("i1", attrs.evolve(done, output=2), owner=a.id)
    with pytest.raises(LeaseLost):
        await store.update_instance(attrs.evolve(_instance(), status=InstanceStatus.FAILED), owner=a.id)
    assert (await store.get_steps("i1"))["s#0"].output == 1
    inst = await store.get_instance("i1")
    assert inst is not None and inst.status == InstanceStatus.PENDING


async def test_fenced_writes_fail_once_cancelled_elsewhere(store: Store) -> None:
    from durable import StepResult, StepStatus

    a = Owner.this_process()
    await store.create_instance(_instance(), owner=a)
    await store.update_instance(attrs.evolve(_instance(), status=InstanceStatus.CANCELLED))  # unfenced: another process
    assert await store.lost_leases(a.id, ["i1"]) == ["i1"]
    with pytest.raises(LeaseLost):
        await store.put_step("i1", StepResult(step_name="s", status=StepStatus.COMPLETED, key="s#0"), owner=a.id)
    with pytest.raises(LeaseLost):
        await store.update_instance(attrs.evolve(_instance(), status=InstanceStatus.COMPLETED), owner=a.id)


async def test_lease_records_survive_reopening(store_path: Path) -> None:
    a = Owner.this_process()
    s = LMDBStore(store_path)
    await s.create_instance(_instance(), owner=a)
    s.close()
    s = LMDBStore(store_path)
    try:
        assert await s.get_lease("i1") == a
    finally:
        s.close()


# -- engines sharing one store -----------------------------------------------

gate: dict[str, trio.Event] = {}
ran: list[str] = []


@step
async def first(x: int) -> int:
    ran.append("first")
    await gate["first"].wait()
    return x


@step
async def second(x: int) -> int:
    ran.append("second")
    return x + 1


@workflow(name="gated")
async def gated(x: int) -> int:
    return await second(await first(x))


@pytest.fixture(autouse=True)
def _reset() -> None:
    gate.clear()
    gate["first"] = trio.Event()
    ran.clear()


async def test_a_live_engines_instances_are_not_resumed_by_another() -> None:
    store = MemoryStore()
    async with Engine(store=store) as one, Engine(store=store) as two:
        two.workflows.register(gated)
        instance_id = await one.workflows.start(gated, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert await two.workflows.resume() == []
        gate["first"].set()
        assert (await one.workflows.wait(instance_id)).output == 2
    assert ran == ["first", "second"]


async def test_an_exited_engines_instances_are_taken_over() -> None:
    store = MemoryStore()
    async with Engine(store=store) as one:
        instance_id = await one.workflows.start(gated, 1)
        await trio.testing.wait_all_tasks_blocked()
    assert (await store.get_lease(instance_id)) is None  # released on exit
    gate["first"].set()
    async with Engine(store=store) as two:
        two.workflows.register(gated)
        assert await two.workflows.resume() == [instance_id]
        assert (await two.workflows.wait(instance_id)).output == 2


async def test_a_run_that_lost_its_lease_stops_and_writes_nothing() -> None:
    store = MemoryStore()
    async with Engine(store=store) as one:
        instance_id = await one.workflows.start(gated, 1)
        await trio.testing.wait_all_tasks_blocked()
        # Another engine takes it over (as if this one had looked gone).
        thief = Owner.this_process()
        await store.release(one.owner.id)
        assert await store.claim([instance_id], thief) == [instance_id]
        gate["first"].set()  # first returns: its checkpoint is refused, second never runs
        with trio.fail_after(5):
            while instance_id in one.workflows.running_ids():
                await trio.sleep(0.001)
    assert ran == ["first"]
    steps = await store.get_steps(instance_id)
    assert [(k, s.status) for k, s in steps.items()] == [("first#0", "running")]  # written before the theft
    inst = await store.get_instance(instance_id)
    assert inst is not None and inst.status == InstanceStatus.RUNNING
    assert await store.get_lease(instance_id) == thief


async def test_a_cancel_from_another_engine_stops_the_owner_at_its_next_step() -> None:
    store = MemoryStore()
    async with Engine(store=store) as one, Engine(store=store) as two:
        instance_id = await one.workflows.start(gated, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert await two.workflows.cancel(instance_id) is True
        gate["first"].set()
        with trio.fail_after(5):
            while instance_id in one.workflows.running_ids():
                await trio.sleep(0.001)
    assert ran == ["first"]
    inst = await store.get_instance(instance_id)
    assert inst is not None and inst.status == InstanceStatus.CANCELLED


async def test_the_heartbeat_notices_a_cancel_from_elsewhere() -> None:
    """An owner blocked inside a long step learns of a cancel within one heartbeat (real time)."""
    store = MemoryStore()
    async with Engine(store=store, lease_ttl=0.06) as one, Engine(store=store) as two:
        instance_id = await one.workflows.start(gated, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert await two.workflows.cancel(instance_id) is True
        with trio.fail_after(5):
            while instance_id in one.workflows.running_ids():
                await trio.sleep(0.005)
    assert ran == ["first"]


def test_lease_ttl_must_be_positive() -> None:
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="lease_ttl"):
            Engine(lease_ttl=bad)


# -- several processes -------------------------------------------------------


def _child(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )


def _expect(proc: subprocess.Popen[str], line: str, timeout: float = 60) -> list[str]:
    """Lines of ``proc``'s stdout up to and including ``line``."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = proc.stdout.readline()
        if not raw:
            break  # the child closed its stdout: it exited
        out = raw.strip()
        seen.append(out)
        if out == line:
            return seen
    raise AssertionError(f"child never printed {line!r}; printed {seen}")


def _log(path: Path) -> list[tuple[int, str, str]]:
    if not path.exists():
        return []
    return [(int(p), s, i) for p, s, i in (line.split() for line in path.read_text().splitlines())]


async def _statuses(store: Path) -> dict[str, tuple[str, Any]]:
    s = LMDBStore(store)
    try:
        return {i.id: (i.status.value, i.output) for i in await s.get_instances_by_workflow("leased")}
    finally:
        s.close()


def test_two_processes_resuming_together_run_each_instance_once(tmp_path: Path) -> None:
    store, seed_log, log = tmp_path / "s.lmdb", tmp_path / "seed.log", tmp_path / "run.log"
    seed = _child("seed", str(store), str(seed_log), "200")
    _expect(seed, "started")
    deadline = time.monotonic() + 60
    while len(_log(seed_log)) < 200:
        assert time.monotonic() < deadline, "the seed never started every step a"
        time.sleep(0.01)
    seed.kill()
    assert seed.wait() == -signal.SIGKILL
    assert seed.stdout is not None
    seed.stdout.close()

    one, two = _child("resume", str(store), str(log)), _child("resume", str(store), str(log))
    out_one, out_two = one.communicate(timeout=120)[0], two.communicate(timeout=120)[0]
    assert one.returncode == 0 and two.returncode == 0
    taken = [int(line.split()[1]) for line in (out_one + out_two).split("\n") if line.startswith("resumed")]
    assert sum(taken) == 200, f"resumed counts {taken}"
    runs = Counter((instance, name) for _, name, instance in _log(log))
    expected = {(f"i-{i:03d}", name) for i in range(200) for name in "ab"}
    assert set(runs) == expected
    assert max(runs.values()) == 1, f"ran twice: {[k for k, v in runs.items() if v > 1][:5]}"
    # Each instance ran wholly in one process.
    owners: dict[str, set[int]] = {}
    for pid, _, instance in _log(log):
        owners.setdefault(instance, set()).add(pid)
    assert all(len(p) == 1 for p in owners.values())
    statuses = trio.run(_statuses, store)
    assert statuses == {f"i-{i:03d}": ("completed", 2 * i) for i in range(200)}


def test_killing_one_worker_lets_the_other_take_over(tmp_path: Path) -> None:
    store, log = tmp_path / "s.lmdb", tmp_path / "run.log"
    first = _child("start", str(store), str(log), "20", env={"B_DELAY": "3600"})
    _expect(first, "ready")
    deadline = time.monotonic() + 60
    while sum(1 for _, name, _ in _log(log) if name == "b") < 20:
        assert time.monotonic() < deadline, "the first worker never started every step b"
        time.sleep(0.01)
    second = _child("worker", str(store), str(log), "20")
    ticks = _expect(second, "tick 0") + _expect(second, "tick 0")
    assert all(t == "tick 0" for t in ticks), f"took instances from a live worker: {ticks}"
    first.kill()
    assert first.wait() == -signal.SIGKILL
    assert first.stdout is not None
    first.stdout.close()
    out = second.communicate(timeout=60)[0].split("\n")
    assert second.returncode == 0 and "done" in out
    assert sum(int(t.split()[1]) for t in out if t.startswith("tick")) == 20
    runs = Counter((pid, name) for pid, name, _ in _log(log))
    assert runs == {(first.pid, "a"): 20, (first.pid, "b"): 20, (second.pid, "b"): 20}
    assert trio.run(_statuses, store) == {f"w-{i:03d}": ("completed", 2 * i) for i in range(20)}


def test_a_cancel_from_another_process_stops_the_owner(tmp_path: Path) -> None:
    store, log = tmp_path / "s.lmdb", tmp_path / "run.log"
    owner = _child("run", str(store), str(log), "x1", env={"B_DELAY": "3600", "LEASE_TTL": "0.3"})
    _expect(owner, "started")
    deadline = time.monotonic() + 60
    while not any(name == "b" for _, name, _ in _log(log)):
        assert time.monotonic() < deadline, "step b never started"
        time.sleep(0.01)

    async def cancel() -> bool:
        async with Engine.open(store) as engine:
            return await engine.workflows.cancel("x1")

    assert trio.run(cancel) is True
    out = owner.communicate(timeout=30)[0].split("\n")
    assert owner.returncode == 0 and "cancelled" in out
    assert [name for _, name, _ in _log(log)] == ["a", "b"]  # c never ran


async def test_claim_takes_at_most_limit_oldest_first(store: Store) -> None:
    me = Owner.this_process()
    for i in range(5):
        await store.create_instance(_instance(f"i{i}"))
    assert await store.claim([f"i{i}" for i in range(5)], me, limit=2) == ["i0", "i1"]
    assert await store.claim([f"i{i}" for i in range(5)], me, limit=0) == []


def _count_lease_reads(store: Store) -> list[str]:
    """The ids of every ``get_lease`` call on ``store`` from now on (a list that grows)."""
    reads: list[str] = []
    get_lease = store.get_lease

    async def counted(instance_id: str) -> Owner | None:
        reads.append(instance_id)
        return await get_lease(instance_id)

    store.get_lease = counted  # type: ignore[method-assign]
    return reads


@workflow
async def queued_wf(x: int) -> int:
    return x


async def test_a_full_look_at_a_queued_backlog_reads_who_holds_it_in_bulk(store: Store) -> None:
    """orphans() over a queued backlog: those waiting in their queue are skipped without reading each one's
    lease (a worker's first look, or resume(), with thousands queued, made a read per instance); one claimed by
    an engine that is gone, and one claimed here by a claim in doubt, are found, and taken over by resume()."""
    from durable._model.queues import Queue

    me = Owner.this_process()
    pid, _ = _dead_pid()
    dead = attrs.evolve(me, id="dead", pid=pid, pid_started=None)
    live = attrs.evolve(_other_host(me, age=1), id="live")
    async with Engine(store) as engine:
        engine.workflows.register(queued_wf)
        engine.queues.register(Queue("bulk"))
        ids = [await engine.workflows.start(queued_wf, i, queue="bulk") for i in range(40)]
        now = engine.now()
        for owner in (dead, live, engine.owner):  # each claims one, the oldest waiting
            await store.heartbeat(owner)
            assert len((await store.claim_queued(owner, [("bulk", None)], None, 1, now))[0]) == 1
        reads = _count_lease_reads(store)
        listed: list[list[str]] = []
        get_running = store.get_running_instances

        async def running(**kwargs: Any) -> list[WorkflowInstance]:
            found = await get_running(**kwargs)
            listed.append([i.id for i in found])
            return found

        store.get_running_instances = running  # type: ignore[method-assign]
        found = await engine.workflows.orphans()
        assert [i.id for i in found] == [ids[0], ids[2]]  # the dead engine's, and this engine's own
        assert reads == []
        assert listed == [ids[:3]]  # the 37 waiting in their queue are not even read
        assert await engine.workflows.resume() == [ids[0], ids[2]]
        for iid in (ids[0], ids[2]):
            assert (await engine.workflows.wait(iid, timeout=10)).output == ids.index(iid)
        assert (await store.get_lease(ids[1])) == live  # a live engine's: left alone
        assert await store.queue_depths("bulk") == (37, 1)


gate_open: trio.Event | None = None


@workflow
async def gated_wf(x: int) -> int:
    assert gate_open is not None
    await gate_open.wait()
    return x


async def test_a_worker_takes_over_a_dead_worker_s_instances_in_one_claim_within_its_cap(store: Store) -> None:
    """A dead worker held twenty: the next worker's look takes as many as its cap lets start (five) in one
    claim, not one claim and one read each, then the others as its slots free."""
    global gate_open
    from durable._model.queues import Queue

    gate_open = trio.Event()
    pid, _ = _dead_pid()
    dead = attrs.evolve(Owner.this_process(), id="dead", pid=pid, pid_started=None)
    async with Engine(store, poll_interval=0.05) as engine:
        engine.workflows.register(gated_wf)
        engine.queues.register(Queue("held"))
        ids = [await engine.workflows.start(gated_wf, i, queue="held") for i in range(20)]
        await store.heartbeat(dead)
        assert len((await store.claim_queued(dead, [("held", None)], None, 20, engine.now()))[0]) == 20
        claims: list[list[str]] = []
        real_claim = store.claim

        async def claim(instance_ids: list[str], owner: Owner, **kwargs: Any) -> list[str]:
            claims.append(list(instance_ids))
            return await real_claim(instance_ids, owner, **kwargs)

        store.claim = claim  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(engine.serve, queues=["held"], concurrency=5))
            with trio.fail_after(10):
                while len(engine.workflows.running_ids()) < 5:
                    await trio.sleep(0.01)
            assert claims == [ids[:5]] and sorted(engine.workflows.running_ids()) == sorted(ids[:5])
            gate_open.set()
            with trio.fail_after(30):
                assert [(await engine.workflows.wait(i)).output for i in ids] == list(range(20))
            assert all(len(c) <= 5 for c in claims) and sorted(sum(claims, [])) == sorted(ids)
            nursery.cancel_scope.cancel()


async def test_lease_holders_names_the_holder_of_each_leased_instance_in_one_read(store: Store) -> None:
    me = Owner.this_process()
    other = _other_host(me, age=1)
    await store.create_instance(_instance("mine"), owner=me)
    await store.create_instance(_instance("theirs"), owner=other)
    await store.create_instance(_instance("free"))
    assert await store.lease_holders(["mine", "theirs", "free", "missing"]) == {"mine": me.id, "theirs": other.id}
    assert await store.lease_holders([]) == {}


@workflow
async def started_wf(x: int) -> int:
    return x


async def test_a_full_look_reads_who_holds_the_instances_other_engines_run_in_bulk(store: Store) -> None:
    """A worker's first look with thirty instances run by a live engine on another host, one by a dead one and
    one left with no lease: no read per instance; the dead one's and the unleased one are found."""
    me = Owner.this_process()
    pid, _ = _dead_pid()
    dead = attrs.evolve(me, id="dead", pid=pid, pid_started=None)
    live = attrs.evolve(_other_host(me, age=1), id="live")
    for owner in (dead, live):
        await store.heartbeat(owner)

    def running(instance_id: str, x: int) -> WorkflowInstance:
        return WorkflowInstance(id=instance_id, workflow_name="started_wf", status=InstanceStatus.RUNNING, args=(x,))

    for n in range(30):
        await store.create_instance(running(f"live-{n:02}", n), owner=live)
    await store.create_instance(running("dead-0", 7), owner=dead)
    await store.create_instance(running("free-0", 8))
    async with Engine(store) as engine:
        engine.workflows.register(started_wf)
        reads = _count_lease_reads(store)
        assert sorted(i.id for i in await engine.workflows.orphans()) == ["dead-0", "free-0"]
        assert reads == []
