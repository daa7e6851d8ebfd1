"""engine.workflows: start (idempotent), wait, cancel, timeouts, resume after restart, bad input."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

import durable
from durable import (
    Engine,
    IdConflict,
    InstanceNotFound,
    InstanceStatus,
    SerializationError,
    StepStatus,
    WorkflowNotFound,
    workflow,
)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _three_steps(name: str = "three") -> Any:
    return workflow(name).task("a", job="a").task("b", job="b").task("c", job="c").build()


class Counts:
    """Counts executions per job, and lets a test block one job."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.block: str | None = None
        self.started = trio.Event()

    def register(self, engine: Engine, *names: str) -> None:
        for name in names:
            engine.jobs.register(name, self._job(name))

    def _job(self, name: str) -> Any:
        async def job(x: Any) -> str:
            self.calls[name] = self.calls.get(name, 0) + 1
            if name == self.block:
                self.started.set()
                await trio.sleep_forever()
            return f"{name}-out"

        return job


async def test_start_with_id_is_idempotent(engine: Engine) -> None:
    """Starting twice with one id (and one input) returns the same id and runs the instance once."""
    counts = Counts()
    counts.register(engine, "a", "b", "c")
    engine.workflows.register(_three_steps())
    first = await engine.workflows.start("three", 1, id="order-1")
    second = await engine.workflows.start("three", 1, id="order-1")
    assert first == second == "order-1"
    inst = await engine.workflows.wait("order-1")
    assert inst.status == "completed" and inst.input == 1
    assert counts.calls == {"a": 1, "b": 1, "c": 1}
    await engine.workflows.start("three", 1, id="order-1")
    with pytest.raises(IdConflict):  # another input (tests/engine/test_start_id_policy.py)
        await engine.workflows.start("three", 3, id="order-1")
    assert counts.calls == {"a": 1, "b": 1, "c": 1}


async def test_instance_is_durable_before_start_returns(engine: Engine) -> None:
    """The store holds the instance as soon as start() returns."""
    Counts().register(engine, "a", "b", "c")
    engine.workflows.register(_three_steps())
    iid = await engine.workflows.start("three", {"x": 1})
    stored = await engine.store.get_instance(iid)
    assert stored is not None and stored.input == {"x": 1} and stored.created_at is not None


async def test_generated_ids_are_uuid7_and_sort_by_creation(engine: Engine) -> None:
    """A generated id is a version-7 UUID in hex whose first 48 bits are the instance's ``created_at`` in ms."""
    Counts().register(engine, "a", "b", "c")
    engine.workflows.register(_three_steps())
    ids = [await engine.workflows.start("three", i) for i in range(200)]
    assert len(set(ids)) == 200
    for iid in ids:
        parsed = uuid.UUID(iid)
        assert parsed.hex == iid and parsed.version == 7 and parsed.variant == uuid.RFC_4122
        stored = await engine.store.get_instance(iid, steps=False)
        assert stored is not None and stored.created_at is not None
        assert int(iid[:12], 16) == (stored.created_at - EPOCH) // timedelta(milliseconds=1)
    millis = [iid[:12] for iid in ids]
    assert millis == sorted(millis)  # the engine's clock is monotonic within a run
    assert len({iid[12:] for iid in ids}) == 200  # the random part differs too


async def test_unknown_workflow_lists_registered_names(engine: Engine) -> None:
    """Starting an unregistered name raises WorkflowNotFound listing the registered ones."""
    engine.workflows.register(_three_steps("known"))
    with pytest.raises(WorkflowNotFound, match="'nope'.*known"):
        await engine.workflows.start("nope", 1)


async def test_wait_unknown_and_timeout(engine: Engine, autojump_clock: Any) -> None:
    """wait() raises InstanceNotFound for an unknown id and TimeoutError when it takes too long."""
    counts = Counts()
    counts.block = "b"
    counts.register(engine, "a", "b", "c")
    engine.workflows.register(_three_steps())
    with pytest.raises(InstanceNotFound):
        await engine.workflows.wait("missing")
    iid = await engine.workflows.start("three", 1)
    with pytest.raises(TimeoutError, match=iid):
        await engine.workflows.wait(iid, timeout=5)
    await engine.workflows.cancel(iid)


def _steps_of(inst: Any) -> dict[str, tuple[Any, ...]]:
    """What an instance's step results hold (``WorkflowInstance`` equality leaves them out)."""
    return {k: (r.step_name, r.status, r.input, r.output, r.error, r.attempts, r.started_at, r.completed_at)
            for k, r in inst.step_results.items()}


async def test_waiting_for_instances_started_and_ended_here_reads_none_back(engine: Engine,
                                                                           monkeypatch: Any) -> None:
    """Start many, then wait for each: the final records of the instances started and ended here lately come
    from memory, fresh objects equal to what the store holds, steps included; past the last ENDED_KEPT,
    wait() reads the store."""
    from durable._engine import ended

    monkeypatch.setattr(ended, "ENDED_KEPT", 5)
    engine.workflows.register(_three_steps())
    for job in "abc":
        engine.jobs.register(job, lambda x: [x])
    ids = [await engine.workflows.start("three", i) for i in range(8)]
    while engine.workflows.running_ids():
        await trio.sleep(0.01)
    reads: list[str] = []
    get_instance = engine.store.get_instance

    async def counted(instance_id: str, *, steps: bool = True) -> Any:
        reads.append(instance_id)
        return await get_instance(instance_id, steps=steps)

    monkeypatch.setattr(engine.store, "get_instance", counted)
    waited = [await engine.workflows.wait(iid) for iid in ids]
    assert len(set(reads)) == len(reads) == 3  # the three that ended first were no longer kept
    for w in waited:
        stored = await get_instance(w.id)
        assert stored is not None and w == stored and _steps_of(w) == _steps_of(stored)
        assert set(w.step_results) == {"a", "b", "c"}
    again = await engine.workflows.wait(ids[-1])
    again.output.append("mine")  # a caller's changes are its own
    assert (await engine.workflows.wait(ids[-1])).output == waited[-1].output != again.output


async def test_a_large_or_cancelled_end_is_read_back_from_the_store(engine: Engine, monkeypatch: Any) -> None:
    from durable._engine import ended

    monkeypatch.setattr(ended, "ENDED_BYTES", 16 * 50_000)
    counts = Counts()
    counts.block = "b"
    counts.register(engine, "a", "b", "c")
    engine.workflows.register(_three_steps())
    engine.jobs.register("big", lambda x: "x" * 100_000)
    engine.workflows.register(workflow("big").task("a", job="big").build())
    big = await engine.workflows.start("big", 1)
    cancelled = await engine.workflows.start("three", 1)
    await counts.started.wait()
    assert await engine.workflows.cancel(cancelled)
    assert (await engine.workflows.wait(big)).output == "x" * 100_000
    assert (await engine.workflows.wait(cancelled)).status == InstanceStatus.CANCELLED
    assert len(engine._driver.ended) == 0  # neither was kept: wait() read both from the store


async def test_unpicklable_input_is_refused_before_anything_is_stored(engine: Engine) -> None:
    """An input that cannot be pickled raises SerializationError naming the workflow; nothing is stored."""
    engine.workflows.register(_three_steps())
    for job in "abc":
        engine.jobs.register(job, lambda x: x)
    with pytest.raises(SerializationError, match="'three'"):
        await engine.workflows.start("three", threading.Lock(), id="bad")
    assert await engine.store.get_instance("bad") is None


async def test_unpicklable_step_output_fails_instance_intact(engine: Engine) -> None:
    """A step result that cannot be pickled fails the instance with SerializationError; earlier steps stay."""
    engine.jobs.register("a", lambda x: "fine")
    engine.jobs.register("b", lambda x: threading.Lock())
    engine.workflows.register(workflow("unpick").task("a", job="a").task("b", job="b").build())
    inst = await engine.workflows.wait(await engine.workflows.start("unpick", 0))
    assert inst.status == "failed"
    assert inst.error_type == "SerializationError"
    assert "'unpick'" in (inst.error or "") and "b#0" in (inst.error or "") and inst.id in (inst.error or "")
    stored = await engine.store.get_instance(inst.id)
    assert stored is not None and stored.status == "failed"
    assert stored.step_results["a"].status == StepStatus.COMPLETED and stored.step_results["a"].output == "fine"


async def test_cancel_cancels_running_step_and_is_durable(engine: Engine) -> None:
    """cancel() cancels the running step through trio and records status cancelled."""
    counts = Counts()
    counts.block = "b"
    counts.register(engine, "a", "b", "c")
    engine.workflows.register(_three_steps())
    events: list[str] = []
    engine.events.on("workflow.cancelled", lambda e: events.append(e.instance_id))
    iid = await engine.workflows.start("three", 1)
    await counts.started.wait()
    assert await engine.workflows.cancel(iid) is True
    stored = await engine.store.get_instance(iid)
    assert stored is not None and stored.status == InstanceStatus.CANCELLED
    assert stored.error_type == "WorkflowCancelled"
    assert counts.calls == {"a": 1, "b": 1}
    assert events == [iid]
    assert await engine.workflows.cancel(iid) is False
    assert await engine.workflows.cancel("no-such-id") is False
    assert (await engine.workflows.wait(iid)).status == "cancelled"


async def test_workflow_timeout_ends_timed_out(engine: Engine, autojump_clock: Any) -> None:
    """A workflow past its timeout ends timed_out, its running step cancelled, with a failed event."""
    counts = Counts()
    counts.block = "b"
    counts.register(engine, "a", "b", "c")
    failed: list[Any] = []
    engine.events.on("workflow.failed", failed.append)
    g = workflow("slow").timeout(30).task("a", job="a").task("b", job="b").task("c", job="c").build()
    engine.workflows.register(g)
    start = trio.current_time()
    inst = await engine.workflows.wait(await engine.workflows.start("slow", 1))
    assert inst.status == InstanceStatus.TIMED_OUT
    assert inst.error_type == "WorkflowTimeout" and "timed out after 30 s" in (inst.error or "")
    assert 30 <= trio.current_time() - start < 31
    assert "c" not in counts.calls
    assert [e.instance_id for e in failed] == [inst.id]
    assert inst.deadline is not None and inst.created_at is not None
    assert (inst.deadline - inst.created_at).total_seconds() == 30


async def test_resume_continues_without_rerunning_finished_steps(store_path: Path) -> None:
    """An engine closed mid-workflow leaves it running; a new engine resumes it; finished steps don't rerun."""
    counts = Counts()
    counts.block = "b"
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(_three_steps())
        iid = await engine.workflows.start("three", 1)
        await counts.started.wait()
    assert counts.calls == {"a": 1, "b": 1}
    counts.block = None
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(_three_steps())
        before = await engine.workflows.get_instance(iid)
        assert before is not None and before.status == "running"
        assert await engine.workflows.resume() == [iid]
        inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.output == "c-out"
    assert counts.calls == {"a": 1, "b": 2, "c": 1}


async def test_start_with_an_existing_id_writes_nothing(store_path: Path) -> None:
    """start(id=...) of an existing instance finds it by a read: no durable write, no fsync."""
    async with Engine.open(store_path) as engine:
        counts = Counts()
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(_three_steps())
        await engine.workflows.wait(await engine.workflows.start("three", 1, id="order-1"))
        before = engine.store.stats()["batches"]  # type: ignore[attr-defined]
        for _ in range(5):
            assert await engine.workflows.start("three", 1, id="order-1") == "order-1"
        assert engine.store.stats()["batches"] == before  # type: ignore[attr-defined]
    assert counts.calls == {"a": 1, "b": 1, "c": 1}


async def test_start_with_the_id_of_an_abandoned_instance_continues_it(store_path: Path) -> None:
    """start(id=) of an unfinished instance whose engine is gone continues it (no wait() that never ends)."""
    counts = Counts()
    counts.block = "b"
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(_three_steps())
        await engine.workflows.start("three", 1, id="order-7")
        await counts.started.wait()
    counts.block = None
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        assert await engine.workflows.start(_three_steps(), 1, id="order-7") == "order-7"
        assert engine.workflows.running_ids() == ["order-7"]
        with trio.fail_after(10):
            inst = await engine.workflows.wait("order-7")
        # Once finished, starting again neither runs it nor changes it.
        assert await engine.workflows.start(_three_steps(), 1, id="order-7") == "order-7"
        assert engine.workflows.running_ids() == []
    assert inst.status == "completed" and inst.input == 1 and inst.output == "c-out"
    assert counts.calls == {"a": 1, "b": 2, "c": 1}


async def test_resume_logs_an_unregistered_workflow_once(store_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A worker calling resume() in a loop does not repeat the same warning."""
    counts = Counts()
    counts.block = "a"
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        await engine.workflows.start(_three_steps(), 1, id="orphan")
        await counts.started.wait()
    async with Engine.open(store_path) as engine:
        for _ in range(3):
            assert await engine.workflows.resume() == []
    warnings = [r for r in caplog.records if "not resuming instance orphan" in r.getMessage()]
    assert len(warnings) == 1


async def test_resume_skips_unregistered_and_running_instances(engine: Engine) -> None:
    """resume() leaves instances of unregistered workflows and those already running here alone."""
    counts = Counts()
    counts.block = "a"
    counts.register(engine, "a", "b", "c")
    engine.workflows.register(_three_steps())
    await engine.workflows.start("three", 1)
    await counts.started.wait()
    assert await engine.workflows.resume() == []
    assert counts.calls == {"a": 1}


async def test_deadline_passed_while_stopped_times_out_on_resume(store_path: Path, disk_clock: Any) -> None:
    """A deadline is absolute: if it passed while no engine ran, resume ends the instance timed_out."""
    counts = Counts()
    counts.block = "b"
    g = workflow("dl").timeout(60).task("a", job="a").task("b", job="b").task("c", job="c").build()
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(g)
        iid = await engine.workflows.start("dl", 1)
        await counts.started.wait()
    await trio.sleep(120)
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(g)
        assert await engine.workflows.resume() == []
        inst = await engine.workflows.get_instance(iid)
    assert inst is not None and inst.status == "timed_out"
    assert counts.calls == {"a": 1, "b": 1}


async def test_deadline_survives_restart(store_path: Path, disk_clock: Any) -> None:
    """A resumed instance gets only the rest of its time, not a fresh timeout."""
    counts = Counts()
    counts.block = "b"
    g = workflow("dl2").timeout(60).task("a", job="a").task("b", job="b").task("c", job="c").build()
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(g)
        iid = await engine.workflows.start("dl2", 1)
        await counts.started.wait()
    await trio.sleep(40)
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(g)
        t0 = trio.current_time()
        await engine.workflows.resume()
        inst = await engine.workflows.wait(iid)
    assert inst.status == "timed_out"
    assert 19 <= trio.current_time() - t0 <= 21


async def test_cancelled_instance_never_resumes(store_path: Path) -> None:
    """A cancelled instance stays cancelled in a new engine and is not resumed."""
    counts = Counts()
    counts.block = "b"
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(_three_steps())
        iid = await engine.workflows.start("three", 1)
        await counts.started.wait()
        assert await engine.workflows.cancel(iid)
    async with Engine.open(store_path) as engine:
        counts.register(engine, "a", "b", "c")
        engine.workflows.register(_three_steps())
        assert await engine.workflows.resume() == []
        inst = await engine.workflows.get_instance(iid)
    assert inst is not None and inst.status == "cancelled"
    assert counts.calls == {"a": 1, "b": 1}


async def test_engine_outside_async_with_is_a_clear_error() -> None:
    """Starting on an engine that is not running says to use 'async with'."""
    engine = Engine()
    engine.workflows.register(_three_steps())
    with pytest.raises(RuntimeError, match="async with"):
        await engine.workflows.start("three", 1)


async def test_body_exception_propagates_unwrapped(store_path: Path) -> None:
    """An exception in the 'async with' body comes out as itself, not in an ExceptionGroup."""
    with pytest.raises(KeyError):
        async with Engine.open(store_path):
            raise KeyError("mine")


async def test_retry_backoff_survives_restart(store_path: Path, disk_clock: Any) -> None:
    """A step waiting out its retry delay when the engine stops keeps its attempt count and waits only the rest."""
    from durable import Retry, current_step

    attempts: list[tuple[int, float]] = []

    async def flaky(x: Any) -> str:
        info = current_step()
        assert info is not None
        attempts.append((info.attempt, trio.current_time()))
        if info.attempt == 1:
            raise ConnectionError("down")
        return "up"

    g = workflow("backoff").task("t", job="flaky", retry=Retry(max_attempts=3, interval=100, max_interval=200)).build()
    async with Engine.open(store_path) as engine:
        engine.jobs.register("flaky", flaky)
        engine.workflows.register(g)
        iid = await engine.workflows.start("backoff", 0)
        await trio.sleep(10)  # the step now waits out its 100 s delay
    await trio.sleep(30)
    async with Engine.open(store_path) as engine:
        engine.jobs.register("flaky", flaky)
        engine.workflows.register(g)
        await engine.workflows.resume()
        inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.step_results["t"].attempts == 2
    (first, t1), (second, t2) = attempts
    assert (first, second) == (1, 2)
    assert 99 <= t2 - t1 <= 102  # 100 s after the failure in all, not 100 s after the restart


async def test_an_interrupted_attempt_keeps_its_number(store_path: Path) -> None:
    """An attempt cut off by a stop is run again under the same number: it does not use up a retry."""
    from durable import current_step

    seen: list[int] = []
    first = trio.Event()

    async def job(x: Any) -> str:
        info = current_step()
        assert info is not None
        seen.append(info.attempt)
        if len(seen) == 1:
            first.set()
            await trio.sleep_forever()
        return "done"

    g = workflow("cut").task("t", job="job").build()  # max_attempts 1: no retry to spare
    async with Engine.open(store_path) as engine:
        engine.jobs.register("job", job)
        engine.workflows.register(g)
        iid = await engine.workflows.start("cut", 0)
        await first.wait()
    async with Engine.open(store_path) as engine:
        engine.jobs.register("job", job)
        engine.workflows.register(g)
        await engine.workflows.resume()
        inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and seen == [1, 1]
    assert inst.step_results["t"].attempts == 1


async def test_resume_never_takes_an_instance_this_engine_holds(autojump_clock: Any) -> None:
    """A waiting instance unloaded by this engine is not resumed (replayed from the top) by its own resume()."""
    import durable

    entered: list[str] = []

    @durable.workflow
    async def waiter() -> object:
        entered.append("body")
        return await durable.wait_for_signal("go")

    async with Engine(durable.MemoryStore(), suspend_after=0) as engine:
        engine.workflows.register(waiter)
        iid = await engine.workflows.start(waiter)
        while iid not in engine.workflows.suspended_ids():
            await trio.sleep(0.01)
        for _ in range(3):
            assert await engine.workflows.resume() == []
        assert await engine.workflows.start(waiter, id=iid) == iid  # start(id=) of it does not take it either
        await trio.sleep(0.05)
        assert entered == ["body"]
        await engine.workflows.signal(iid, "go", 7)
        done = await engine.workflows.wait(iid, timeout=10)
        assert done.output == 7 and entered == ["body", "body"]  # woken once, by its signal


async def test_an_instance_that_ends_here_while_orphans_reads_the_store_is_not_an_orphan(
        store: durable.Store) -> None:
    """orphans() reads the unfinished instances, then who holds them: one running here that ends in between
    (its lease gone with it, the list read still saying it runs) is this engine's, not an orphan to take over."""
    go = trio.Event()

    @durable.workflow
    async def held() -> str:
        await go.wait()
        return "done"

    async with Engine(store) as engine:
        engine.workflows.register(held)
        iid = await engine.workflows.start(held)
        while iid not in engine.workflows.running_ids():
            await trio.sleep(0.01)
        real = store.get_running_instances

        async def read_then_end(**kwargs: Any) -> Any:
            found = await real(**kwargs)
            go.set()  # it ends after the read, before the look at its lease
            await engine.workflows.wait(iid, timeout=10)
            return found

        store.get_running_instances = read_then_end  # type: ignore[method-assign]
        assert await engine.workflows.orphans() == []
        store.get_running_instances = real  # type: ignore[method-assign]
        assert (await engine.workflows.get_instance(iid)).output == "done"  # type: ignore[union-attr]


def _make_process(tag: str) -> Any:
    import durable

    @durable.workflow
    async def process() -> str:
        return tag

    return process


async def test_two_workflows_under_one_name_are_an_error_not_a_swap(engine: Engine) -> None:
    """Two @workflow functions called ``process`` never run each other's code: the second is refused,
    at register() and at start(), with an error naming both."""
    import durable

    first, second = _make_process("first"), _make_process("second")
    engine.workflows.register(first)
    engine.workflows.register(first)  # the same one again: harmless
    with pytest.raises(durable.DurableError, match=r"'process' is taken by @workflow .*_make_process.<locals>.process"):
        engine.workflows.register(second)
    with pytest.raises(durable.DurableError, match="another name"):
        await engine.workflows.start(second)
    assert (await engine.workflows.wait(await engine.workflows.start(first))).output == "first"
    assert (await engine.workflows.wait(await engine.workflows.start("process"))).output == "first"

    g1 = workflow("flow").task("a", job="a").build()
    g2 = workflow("flow").task("b", job="b").build()
    engine.workflows.register(g1)
    engine.workflows.register(g1)
    with pytest.raises(durable.DurableError, match="the builder graph 'flow'"):
        engine.workflows.register(g2)
    with pytest.raises(durable.DurableError, match="'process' is taken"):
        engine.workflows.register(workflow("process").task("a", job="a").build())


async def test_one_builder_function_called_twice_is_one_workflow(engine: Engine) -> None:
    """Graphs built twice by the same code (new lambdas each time) are the same workflow, a parent's child
    included; a graph of another shape under the name is refused, naming it."""
    import durable

    def make(step: str = "a") -> Any:
        return workflow("made").task(step, job="a", input=lambda ctx: ctx.input + 1).build()

    engine.jobs.register("a", lambda x: x * 2)
    engine.workflows.register(make())
    assert (await engine.workflows.wait(await engine.workflows.start(make(), 1))).output == 4
    parent1 = workflow("p1").task("kid", workflow=make()).build()
    parent2 = workflow("p2").task("kid", workflow=make()).build()
    for parent in (parent1, parent2):
        assert (await engine.workflows.wait(await engine.workflows.start(parent, 2))).output == 6
    with pytest.raises(durable.DurableError, match="'made' is taken"):
        engine.workflows.register(make("b"))


def test_graphs_differing_only_in_the_errors_they_catch_or_their_partials_are_not_the_same() -> None:
    """The shape comparison looks at the classes a catch names and at what a partial wraps."""
    import functools

    from durable import Catch
    from durable._graph.validate import same_shape

    def build(error: type[BaseException], arg: int) -> Any:
        return (workflow("w").task("a", job=functools.partial(max, arg), catch=[Catch(errors=[error], next="b")])
                .pass_("b", end=True).build())

    assert same_shape(build(ValueError, 1), build(ValueError, 1))
    assert not same_shape(build(ValueError, 1), build(KeyError, 1))
    assert not same_shape(build(ValueError, 1), build(ValueError, 2))


def test_kept_final_records_stay_within_their_bytes_when_kept_again(monkeypatch: Any) -> None:
    from durable import WorkflowInstance
    from durable._engine import ended

    monkeypatch.setattr(ended, "ENDED_BYTES", 16 * 2_000)
    kept = ended.Ended()
    done = WorkflowInstance(id="i", workflow_name="wf", status=InstanceStatus.COMPLETED, output="x" * 1_000)
    for _ in range(50):
        kept.keep(done, {})  # the same id again and again: one record's bytes, not fifty
    assert len(kept) == 1 and kept.get("i") == done and kept.get("i") is not kept.get("i")
    for n in range(40):  # 40 records of about 1 KB: only the newest that fit in 32 KB remain
        kept.keep(WorkflowInstance(id=f"j{n}", workflow_name="wf", status=InstanceStatus.COMPLETED, output="x" * 1_000),
                  {})
    assert kept.get("i") is None and kept.get("j39") is not None and 20 < len(kept) < 40
