"""Engine.serve(): queued instances run under their queue's limits; external jobs; both front-ends.

Over every store (``store`` fixture); time-dependent behaviour on trio's MockClock.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import durable
from durable import (Deduplicated, Engine, InstanceStatus, Queue, QueueNotFound, Retry, StepFailed, Store,
                     step, workflow)

# -- module-level steps and workflows (external jobs are found by module and name) ----------

running: list[str] = []
most = 0
gate: trio.Event | None = None


@step
async def hold(tag: str) -> str:
    """Counts how many run at once; waits for ``gate`` (if set) before returning."""
    global most
    running.append(tag)
    most = max(most, len(running))
    try:
        if gate is not None:
            await gate.wait()
        await trio.sleep(0.01)
    finally:
        running.remove(tag)
    return tag


@workflow(queue="serial")
async def one(tag: str) -> str:
    return await hold(tag)


@workflow
async def plain(tag: str) -> str:
    return await hold(tag)


@step(queue="gpu")
def render(x: int) -> str:
    """An external job (sync: it runs in a worker thread of the serving process)."""
    return f"frame {x}"


attempts: dict[int, int] = {}


@step(queue="gpu", retry=Retry(max_attempts=3, interval=0.01))
async def flaky(x: int) -> int:
    attempts[x] = attempts.get(x, 0) + 1
    if attempts[x] < 3:
        raise ConnectionError(f"try {attempts[x]}")
    return x * 2


@step(queue="gpu")
async def broken(x: int) -> int:
    raise ValueError(f"bad frame {x}")


@workflow
async def film(x: int) -> list[Any]:
    a = await render(x)
    b = await flaky(x)
    try:
        await broken(x)
    except ValueError as exc:
        return [a, b, f"caught {exc}"]
    return [a, b]


@pytest.fixture(autouse=True)
def _reset() -> None:
    global most, gate
    running.clear()
    attempts.clear()
    most = 0
    gate = None


async def test_a_queued_instance_runs_in_a_serving_engine(store: Store) -> None:
    async with Engine(store) as engine:
        engine.workflows.register(one)
        engine.queues.register(Queue("serial", concurrency=1))
        iid = await engine.workflows.start(one, "a")  # its workflow's queue: created pending, not run here
        inst = await engine.workflows.get_instance(iid)
        assert inst is not None and inst.status == InstanceStatus.PENDING and inst.queue == "serial"
        assert engine.workflows.running_ids() == []
        await engine.nursery.start(engine.serve)
        done = await engine.workflows.wait(iid, timeout=10)
        assert done.status == InstanceStatus.COMPLETED and done.output == "a" and done.started_at is not None
        assert len(engine._driver.ended) == 0  # a worker keeps no final records in memory: wait() read it
        engine.nursery.cancel_scope.cancel()


async def test_concurrency_bounds_the_instances_in_flight(store: Store) -> None:
    global gate
    gate = trio.Event()
    async with Engine(store) as engine:
        engine.workflows.register(one)
        engine.queues.register(Queue("serial", concurrency=2))
        ids = [await engine.workflows.start(one, f"t{i}") for i in range(6)]
        await engine.nursery.start(engine.serve)
        with trio.fail_after(10):
            while len(running) < 2:
                await trio.sleep(0.01)
        await trio.sleep(0.2)  # many looks: none may take a third while two are in flight
        assert len(running) == 2 and await store.queue_depths("serial") == (4, 2)
        gate.set()
        for iid in ids:
            assert (await engine.workflows.wait(iid, timeout=10)).status == InstanceStatus.COMPLETED
        assert most == 2 and await store.queue_depths("serial") == (0, 0)
        engine.nursery.cancel_scope.cancel()


async def test_worker_concurrency_and_the_serve_concurrency_cap_this_worker(store: Store) -> None:
    global gate
    gate = trio.Event()
    async with Engine(store) as engine:
        engine.workflows.register(plain)
        engine.queues.register(Queue("wide", worker_concurrency=3))
        ids = [await engine.workflows.start(plain, f"t{i}", queue="wide") for i in range(5)]
        ids += [await engine.workflows.start(plain, f"d{i}", queue="default") for i in range(5)]
        await engine.nursery.start(lambda task_status: engine.serve(concurrency=4, task_status=task_status))
        with trio.fail_after(10):
            while len(running) < 4:
                await trio.sleep(0.01)
        await trio.sleep(0.2)
        assert len(running) == 4 and len([t for t in running if t.startswith("t")]) <= 3
        gate.set()
        for iid in ids:
            assert (await engine.workflows.wait(iid, timeout=10)).status == InstanceStatus.COMPLETED
        assert most == 4
        engine.nursery.cancel_scope.cancel()


async def test_priority_first_then_first_in_first_out(store: Store, autojump_clock: MockClock) -> None:
    order: list[str] = []
    async with Engine(store) as engine:
        engine.workflows.register(plain)
        engine.queues.register(Queue("prio", concurrency=1, priority=True))
        engine.events.on("workflow.started", lambda e: order.append(e.input["tag"]))
        for tag, prio in [("low-1", 0), ("high-1", 5), ("low-2", 0), ("high-2", 5), ("mid", 2)]:
            await engine.workflows.start(plain, tag, queue="prio", priority=prio)
        with pytest.raises(ValueError, match="does not order by priority"):
            await engine.workflows.start(plain, "x", queue="default", priority=1)
        await engine.nursery.start(engine.serve)
        with trio.fail_after(60):
            while len(order) < 5:
                await trio.sleep(0.1)
        assert order == ["high-1", "high-2", "mid", "low-1", "low-2"]
        engine.nursery.cancel_scope.cancel()


async def test_rate_limit_and_delay_hold_on_the_engine_clock(store: Store, autojump_clock: MockClock) -> None:
    starts: list[tuple[str, float]] = []
    async with Engine(store) as engine:
        engine.workflows.register(plain)
        engine.queues.register(Queue("slow", rate_limit=(2, 10)))
        engine.events.on("workflow.started", lambda e: starts.append((e.input["tag"], trio.current_time())))
        t0 = trio.current_time()
        for i in range(5):
            await engine.workflows.start(plain, f"r{i}", queue="slow")
        later = await engine.workflows.start(plain, "later", delay=100)
        await engine.nursery.start(engine.serve)
        done = await engine.workflows.wait(later, timeout=1000)
        assert done.status == InstanceStatus.COMPLETED
        with trio.fail_after(1000):
            while len(starts) < 6:
                await trio.sleep(1)
        when = dict(starts)
        assert when["later"] - t0 >= 100 - 1e-6
        rated = sorted(t - t0 for tag, t in starts if tag.startswith("r"))
        for i in range(len(rated)):  # never more than 2 in any 10-second window
            assert len([t for t in rated if rated[i] <= t < rated[i] + 10 - 1e-6]) <= 2, rated
        assert rated[-1] >= 20 - 1e-6  # 5 starts at 2 per 10 s take at least two more windows
        engine.nursery.cancel_scope.cancel()


async def test_dedup_id_holds_one_unfinished_instance(store: Store) -> None:
    async with Engine(store) as engine:
        engine.workflows.register(plain)
        first = await engine.workflows.start(plain, "a", queue="default", dedup_id="order-7")
        with pytest.raises(Deduplicated) as info:
            await engine.workflows.start(plain, "b", queue="default", dedup_id="order-7")
        assert info.value.existing_id == first and "order-7" in str(info.value)
        await engine.nursery.start(engine.serve)
        await engine.workflows.wait(first, timeout=10)
        second = await engine.workflows.start(plain, "b", queue="default", dedup_id="order-7")  # free again
        assert second != first
        assert (await engine.workflows.wait(second, timeout=10)).output == "b"
        engine.nursery.cancel_scope.cancel()


async def test_bad_queue_options_write_nothing(store: Store) -> None:
    async with Engine(store) as engine:
        engine.workflows.register(plain)
        with pytest.raises(QueueNotFound, match="no queue 'nope'"):
            await engine.workflows.start(plain, "a", queue="nope")
        with pytest.raises(ValueError, match="delay"):
            await engine.workflows.start(plain, "a", queue="default", delay=-1)
        with pytest.raises(TypeError, match="priority"):
            await engine.workflows.start(plain, "a", queue="default", priority=1.5)  # type: ignore[arg-type]
        assert await store.get_all_instances() == []
    with pytest.raises(ValueError, match="concurrency"):
        Queue("q", concurrency=0)
    with pytest.raises(ValueError, match="rate_limit"):
        Queue("q", rate_limit=(1, 0))
    with pytest.raises(ValueError, match="queue name|workflow name"):
        Queue("")


async def test_external_jobs_run_in_the_serving_engine_with_retries_and_errors(store: Store) -> None:
    events: list[tuple[str, str | None, int | None]] = []
    async with Engine(store) as engine:
        engine.workflows.register(film)
        engine.events.on("*", lambda e: events.append((e.name, e.step_name, e.attempt)))
        await engine.nursery.start(engine.serve)
        iid = await engine.workflows.start(film, 7)
        done = await engine.workflows.wait(iid, timeout=20)
        assert done.status == InstanceStatus.COMPLETED, done.error
        assert done.output == ["frame 7", 14, "caught bad frame 7"]
        steps = done.step_results
        assert steps["render"].status == "completed" and steps["render"].output == "frame 7"
        assert steps["flaky"].attempts == 3 and attempts[7] == 3
        assert steps["broken"].status == "failed" and steps["broken"].error == "ValueError: bad frame 7"
        assert ("workflow.step.retry", "flaky", 1) in events and ("workflow.step.retry", "flaky", 2) in events
        assert await store.get_jobs() == []
        engine.nursery.cancel_scope.cancel()


async def test_a_job_waits_for_a_worker_of_its_queue(store: Store) -> None:
    async with Engine(store) as engine:
        engine.workflows.register(film)
        await engine.nursery.start(lambda task_status: engine.serve(queues=["default"], task_status=task_status))
        iid = await engine.workflows.start(film, 1)
        with trio.fail_after(10):
            while not await store.get_jobs(iid):
                await trio.sleep(0.01)
        [(job, holder)] = await store.get_jobs(iid)
        assert job.queue == "gpu" and job.step_name == "render" and holder is None  # nobody serves gpu
        inst = await engine.workflows.get_instance(iid)
        assert inst is not None and inst.status == InstanceStatus.RUNNING
        await engine.nursery.start(lambda task_status: engine.serve(queues=["gpu"], workflows=False,
                                                                    task_status=task_status))
        assert (await engine.workflows.wait(iid, timeout=20)).status == InstanceStatus.COMPLETED
        engine.nursery.cancel_scope.cancel()


def test_an_external_step_must_be_importable_by_name() -> None:
    def local(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="top level of a module"):
        step(queue="gpu")(local)


async def test_a_builder_task_on_a_queue_runs_a_registered_job(store: Store) -> None:
    graph = durable.workflow("resize-flow").task("resize", job="resize", queue="gpu", end=True).build()
    assert "queue gpu" in graph.to_mermaid()
    async with Engine(store) as engine:
        engine.jobs.register("resize", lambda size: size // 2)
        engine.workflows.register(graph)
        await engine.nursery.start(engine.serve)
        iid = await engine.workflows.start(graph, 640)
        done = await engine.workflows.wait(iid, timeout=10)
        assert done.status == InstanceStatus.COMPLETED and done.output == 320
        engine.nursery.cancel_scope.cancel()


async def test_a_job_registered_on_a_queue_goes_there(store: Store) -> None:
    graph = durable.workflow("shrink-flow").task("shrink", job="shrink", end=True).build()
    async with Engine(store) as engine:
        engine.jobs.register("shrink", lambda size: size - 1, queue="gpu")
        engine.workflows.register(graph)
        iid = await engine.workflows.start(graph, 10)
        with trio.fail_after(10):
            while not await store.get_jobs(iid):
                await trio.sleep(0.01)
        await engine.nursery.start(engine.serve)  # serves gpu: the jobs' queue
        assert (await engine.workflows.wait(iid, timeout=10)).output == 9
        engine.nursery.cancel_scope.cancel()


async def test_a_failed_external_builder_job_fails_the_task(store: Store) -> None:
    graph = durable.workflow("fail-flow").task("boom", job="boom", queue="gpu", end=True).build()

    def boom(x: int) -> int:
        raise RuntimeError("no GPU")

    async with Engine(store) as engine:
        engine.jobs.register("boom", boom)
        engine.workflows.register(graph)
        await engine.nursery.start(engine.serve)
        iid = await engine.workflows.start(graph, 1)
        done = await engine.workflows.wait(iid, timeout=10)
        assert done.status == InstanceStatus.FAILED and "no GPU" in (done.error or "")
        assert done.error_type == StepFailed.__name__
        engine.nursery.cancel_scope.cancel()


@step(queue="gpu", timeout=0.05, retry=Retry(max_attempts=2, interval=0.01))
async def stuck(x: int) -> int:
    await trio.sleep(10)
    return x


@workflow
async def impatient(x: int) -> int:
    return await stuck(x)


async def test_an_external_job_s_timeout_applies_per_attempt_in_the_worker(store: Store) -> None:
    async with Engine(store) as engine:
        engine.workflows.register(impatient)
        await engine.nursery.start(engine.serve)
        iid = await engine.workflows.start(impatient, 1)
        done = await engine.workflows.wait(iid, timeout=20)
        assert done.status == InstanceStatus.FAILED
        rec = done.step_results["stuck"]
        assert rec.attempts == 2 and rec.error is not None and "timed out after 0.05 s" in rec.error
        engine.nursery.cancel_scope.cancel()


def test_the_graph_shows_which_queue_a_step_runs_on() -> None:
    text = film.graph.to_mermaid()
    assert "render ⇢ queue gpu" in text and "flaky ⇢ queue gpu" in text
    [task] = [s for s in film.graph.walk() if s.name == "render"]
    assert getattr(task, "queue") == "gpu"
    plain_text = plain.graph.to_mermaid()
    assert "queue" not in plain_text


jobs_running: list[int] = []
jobs_most = [0]


@step(queue="narrow")
async def narrow_job(x: int) -> int:
    jobs_running.append(x)
    jobs_most[0] = max(jobs_most[0], len(jobs_running))
    await trio.sleep(0.05)
    jobs_running.remove(x)
    return x


@workflow
async def uses_narrow(x: int) -> int:
    return await narrow_job(x)


@pytest.mark.parametrize("limits", [{"concurrency": 1}, {"worker_concurrency": 2}])
async def test_a_queue_s_limits_hold_for_its_external_jobs(store: Store, limits: dict[str, int]) -> None:
    jobs_most[0] = 0
    async with Engine(store) as engine:
        engine.workflows.register(uses_narrow)
        engine.queues.register(Queue("narrow", **limits))
        await engine.nursery.start(engine.serve)
        ids = [await engine.workflows.start(uses_narrow, i) for i in range(6)]
        for iid in ids:
            assert (await engine.workflows.wait(iid, timeout=30)).status == InstanceStatus.COMPLETED
        assert jobs_most[0] == next(iter(limits.values()))
        engine.nursery.cancel_scope.cancel()


async def test_a_rate_limit_holds_for_external_jobs(store: Store, autojump_clock: MockClock) -> None:
    starts: list[float] = []
    async with Engine(store) as engine:
        engine.workflows.register(uses_narrow)
        engine.queues.register(Queue("narrow", rate_limit=(2, 10)))
        engine.events.on("workflow.step.started", lambda e: starts.append(trio.current_time()))
        await engine.nursery.start(engine.serve)
        ids = [await engine.workflows.start(uses_narrow, i) for i in range(5)]
        for iid in ids:
            assert (await engine.workflows.wait(iid, timeout=1000)).status == InstanceStatus.COMPLETED
        for t in starts:
            assert len([u for u in starts if t <= u < t + 10 - 1e-6]) <= 2, starts
        engine.nursery.cancel_scope.cancel()


# -- a failing store does not end a worker ----------------------------------------------------


class _Flaky:
    """A MemoryStore whose claims and checkpoints fail (``StoreError``) while ``failing`` is set."""

    def __init__(self) -> None:
        self._inner = durable.MemoryStore()
        self.failing = False
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name in ("claim_queued", "put_step", "register_worker", "register_queue") and callable(value):
            async def maybe_fail(*args: Any, **kwargs: Any) -> Any:
                if self.failing:
                    self.failures += 1
                    raise durable.StoreError("the database is restarting (test)")
                return await value(*args, **kwargs)

            return maybe_fail
        return value


@workflow
async def two_steps(x: int) -> int:
    """Two checkpoints."""
    first = await hold(f"a{x}")
    await hold(f"b{x}")
    return len(first) + x


async def test_a_worker_outlives_a_failing_store_and_continues_what_a_failed_write_stopped(
        autojump_clock: MockClock) -> None:
    flaky = _Flaky()
    async with Engine(flaky) as engine:  # type: ignore[arg-type]
        engine.workflows.register(two_steps)
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            flaky.failing = True  # its claims fail, then the first checkpoint of a run it started
            iid = await engine.workflows.start(two_steps, 1, queue="default")
            await trio.sleep(5)
            assert flaky.failures >= 2 and engine.workflows.running_ids() == []
            flaky.failing = False  # the store answers again: the worker looks again and runs it
            with trio.fail_after(120):
                done = await engine.workflows.wait(iid)
            assert done.status == InstanceStatus.COMPLETED and done.output == 3
            nursery.cancel_scope.cancel()


async def test_a_worker_started_while_the_store_fails_waits_for_it_and_registers_every_queue(
        autojump_clock: MockClock) -> None:
    flaky = _Flaky()
    async with Engine(flaky) as engine:  # type: ignore[arg-type]
        engine.workflows.register(two_steps)
        flaky.failing = True  # the database is down as the worker starts
        engine.queues.register(durable.Queue("slow", concurrency=2))
        engine.queues.register(durable.Queue("fast"))
        async with trio.open_nursery() as nursery:
            async def answer_later() -> None:
                await trio.sleep(10)
                flaky.failing = False

            nursery.start_soon(answer_later)
            with trio.fail_after(120):
                await nursery.start(engine.serve)  # started once it is registered, not failed
            assert flaky.failures >= 3
            assert set(await flaky.get_queues()) >= {"slow", "fast"}  # no queue lost to a failed flush
            assert "two_steps" in await flaky.known_workflows()
            iid = await engine.workflows.start(two_steps, 2, queue="default")
            with trio.fail_after(120):
                assert (await engine.workflows.wait(iid)).output == 4
            nursery.cancel_scope.cancel()


async def test_a_worker_does_not_wait_for_a_store_too_new_for_it(autojump_clock: MockClock) -> None:
    from durable.stores._base import StoreTooNew

    flaky = _Flaky()
    async with Engine(flaky) as engine:  # type: ignore[arg-type]
        engine.workflows.register(two_steps)

        async def too_new(*args: Any, **kwargs: Any) -> None:
            raise StoreTooNew("schema of version 99, newer than this durable knows (test)")

        flaky._inner.register_worker = too_new  # type: ignore[method-assign]
        with trio.fail_after(5), pytest.RaisesGroup(pytest.RaisesExc(StoreTooNew, match="newer than this durable"),
                                                    flatten_subgroups=True):
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.serve)


async def test_a_failed_read_of_one_claimed_instance_does_not_hold_back_the_others(
        autojump_clock: MockClock) -> None:
    store = durable.MemoryStore()
    failing = {"q1"}
    real_get_steps = store.get_steps

    async def get_steps(instance_id: str) -> Any:
        if instance_id in failing:
            failing.discard(instance_id)
            raise durable.StoreError("the read failed (test)")
        return await real_get_steps(instance_id)

    store.get_steps = get_steps  # type: ignore[method-assign]
    async with Engine(store) as engine:
        engine.workflows.register(two_steps)
        ids = [await engine.workflows.start(two_steps, i, id=f"q{i}", queue="default") for i in range(3)]
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            with trio.fail_after(120):
                done = [await engine.workflows.wait(i) for i in ids]
            assert [d.output for d in done] == [2, 3, 4] and not failing  # q1 read again, then run
            nursery.cancel_scope.cancel()


@workflow
async def quick(x: int) -> int:
    """No step: a queued instance that ends as soon as it starts."""
    return x


async def test_a_backlog_is_claimed_in_growing_batches_and_a_short_claim_starts_again_small(
        autojump_clock: MockClock) -> None:
    store = durable.MemoryStore()
    asked: list[int | None] = []
    real_claim = store.claim_queued

    async def claim_queued(owner: Any, served: Any, workflows: Any, limit: int | None, now: Any) -> Any:
        asked.append(limit)
        return await real_claim(owner, served, workflows, limit, now)

    store.claim_queued = claim_queued  # type: ignore[method-assign]
    async with Engine(store) as engine:
        engine.workflows.register(quick)
        ids = [await engine.workflows.start(quick, i, queue="default") for i in range(1200)]
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            with trio.fail_after(120):
                assert [(await engine.workflows.wait(i)).output for i in ids] == list(range(1200))
            # 32 + 64 + 128 + 256 + 512 = 992 taken in five looks; the sixth asks 512 and takes the last 208
            assert asked[:6] == [32, 64, 128, 256, 512, 512]
            assert asked[6] == 32  # it took fewer than it asked: the next look asks for the first size again
            with trio.fail_after(10):
                while await store.queue_depths("default") != (0, 0):
                    await trio.sleep(0.1)
            later = await engine.workflows.start(quick, 7, queue="default")  # a new one: a small claim takes it
            assert (await engine.workflows.wait(later, timeout=10)).output == 7
            assert set(asked[6:]) == {32}
            nursery.cancel_scope.cancel()


# -- a worker's caps hold while it reads the store and takes orphans over ------------------

wake_gate: trio.Event | None = None


@workflow
async def held_wf(x: int) -> int:
    assert wake_gate is not None
    await wake_gate.wait()
    return x


@workflow
async def sleepy(x: int) -> int:
    await durable.sleep(2)
    assert wake_gate is not None
    await wake_gate.wait()
    return x


def _dead_owner() -> Any:
    import subprocess
    import sys

    import attrs

    from durable.stores import Owner

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return attrs.evolve(Owner.this_process(), id="dead", pid=proc.pid, pid_started=None)


async def test_a_store_failure_in_a_periodic_look_for_orphans_does_not_end_the_worker(
        autojump_clock: MockClock) -> None:
    store = durable.MemoryStore()
    real = store.orphaned
    calls = {"n": 0}

    async def orphaned(owner_id: str) -> list[str]:
        calls["n"] += 1
        if calls["n"] == 3:  # a periodic look (after the first, full one)
            raise durable.StoreError("the database is restarting (test)")
        return await real(owner_id)

    store.orphaned = orphaned  # type: ignore[method-assign]
    async with Engine(store, poll_interval=0.05) as engine:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.serve)
            await trio.sleep(2)  # it logs the failure, backs off and looks again
            assert calls["n"] > 3
            nursery.cancel_scope.cancel()


async def test_a_take_over_holds_the_worker_s_cap_against_a_wake_up_while_it_reads(
        autojump_clock: MockClock) -> None:
    """concurrency=1: an instance unloaded in a sleep wakes while the look reads the store (slowly), and a dead
    engine's instance waits to be taken over: at no moment do both run."""
    global wake_gate
    wake_gate = trio.Event()
    store = durable.MemoryStore()
    dead = _dead_owner()
    real = store.orphaned
    armed = {"on": False}

    async def orphaned(owner_id: str) -> list[str]:
        if armed["on"]:
            armed["on"] = False
            await trio.sleep(3)  # a slow read: the sleeper's timer fires meanwhile
        return await real(owner_id)

    store.orphaned = orphaned  # type: ignore[method-assign]
    async with Engine(store, poll_interval=0.05) as engine:
        engine.workflows.register(held_wf)
        engine.workflows.register(sleepy)
        engine.queues.register(Queue("held"))
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(engine.serve, queues=["other"], concurrency=1))
            s = await engine.workflows.start(sleepy, 1)
            while s not in engine.workflows.suspended_ids():
                await trio.sleep(0.01)
            o = await engine.workflows.start(held_wf, 2, queue="held")
            await store.heartbeat(dead)
            armed["on"] = True
            assert (await store.claim_queued(dead, [("held", None)], None, 5, engine.now()))[0] == [o]
            peak = 0
            with trio.move_on_after(6):
                while True:
                    peak = max(peak, len(engine.workflows.running_ids()))
                    await trio.sleep(0.01)
            assert peak == 1, engine.workflows.running_ids()
            wake_gate.set()
            assert (await engine.workflows.wait(o, timeout=30)).output == 2
            assert (await engine.workflows.wait(s, timeout=30)).output == 1
            nursery.cancel_scope.cancel()


async def test_take_over_limit_counts_the_instances_taken_not_those_tried(autojump_clock: MockClock) -> None:
    """take_over_limit=1, two orphans, and another worker takes the first meanwhile: this look takes the
    second, not nothing."""
    global wake_gate
    wake_gate = trio.Event()
    store = durable.MemoryStore()
    dead = _dead_owner()
    tried: list[list[str]] = []
    real_claim = store.claim

    async def claim(instance_ids: list[str], owner: Any, **kwargs: Any) -> list[str]:
        tried.append(list(instance_ids))
        if len(tried) == 1:
            return []  # lost the race for it
        return await real_claim(instance_ids, owner, **kwargs)

    async with Engine(store, poll_interval=60) as engine:
        engine.workflows.register(held_wf)
        engine.queues.register(Queue("held"))
        ids = [await engine.workflows.start(held_wf, i, queue="held") for i in range(2)]
        await store.heartbeat(dead)
        assert (await store.claim_queued(dead, [("held", None)], None, 5, engine.now()))[0] == ids
        store.claim = claim  # type: ignore[method-assign]
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(engine.serve, queues=["other"], take_over_limit=1))
            with trio.fail_after(10):
                while not engine.workflows.running_ids():
                    await trio.sleep(0.01)
            first, second = tried  # one orphan, then the other (oldest first; these two are as old)
            assert sorted(first + second) == sorted(ids) and engine.workflows.running_ids() == second
            wake_gate.set()
            nursery.cancel_scope.cancel()
