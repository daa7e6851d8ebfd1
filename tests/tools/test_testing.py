"""durable.testing: the one-line helpers for users' tests."""

from __future__ import annotations

from collections import Counter

import pytest
from typing import Any

from durable import Engine, Event, MemoryStore, Retry, step, workflow
from durable.testing import assert_replays, capture_events, crash_and_resume, replace_step, run, run_on_engine

CALLS: Counter[str] = Counter()


@step(retry=Retry(max_attempts=5, interval=3600))
async def flaky_fetch(key: str) -> str:
    CALLS["fetch"] += 1
    if CALLS["fetch"] < 3:
        raise ConnectionError("down")
    return f"value-{key}"


@step
async def store_it(value: str) -> str:
    CALLS["store"] += 1
    return f"stored {value}"


@step
async def notify(msg: str) -> str:
    CALLS["notify"] += 1
    return f"sent {msg}"


@workflow
async def pipeline(key: str) -> list[str]:
    value = await flaky_fetch(key)
    stored = await store_it(value)
    return [stored, await notify(stored)]


def test_run_uses_mock_clock_so_backoff_takes_no_time() -> None:
    """run() completes a workflow whose retries wait hours, instantly, from a sync test."""
    CALLS.clear()
    inst = run(pipeline, "k")
    assert inst.status == "completed"
    assert inst.output == ["stored value-k", "sent stored value-k"]
    assert CALLS["fetch"] == 3


async def test_replace_step_and_capture_events(durable_engine: Engine, durable_events: list[Event]) -> None:
    """replace_step swaps a step for a fake for one block; capture_events records a run's events."""
    CALLS.clear()

    async def fake_fetch(key: str) -> str:
        return "fake"

    with replace_step(flaky_fetch, fake_fetch):
        inst = await run_on_engine(pipeline, "k")
    assert inst.output == ["stored fake", "sent stored fake"]
    assert CALLS["fetch"] == 0

    with capture_events(durable_engine, "workflow.step.completed") as events:
        with replace_step(flaky_fetch, fake_fetch):
            await durable_engine.workflows.wait(await durable_engine.workflows.start(pipeline, "k"))
    assert [e.step_name for e in events] == ["flaky_fetch", "store_it", "notify"]
    assert [e.name for e in durable_events if e.name == "workflow.step.completed"] == ["workflow.step.completed"] * 3
    assert flaky_fetch.__wrapped__ is not fake_fetch  # restored after the block


async def test_crash_and_resume_after_a_named_step(durable_clock: Any) -> None:
    """A crash right after a step's checkpoint, then resume: that step and those before it run once."""
    CALLS.clear()
    store = MemoryStore()
    inst = await crash_and_resume(pipeline, "k", after="store_it", store=store)
    assert inst.status == "completed"
    assert CALLS == Counter({"fetch": 3, "store": 1, "notify": 1})
    await assert_replays(store, inst.id, workflow=pipeline)
    assert CALLS == Counter({"fetch": 3, "store": 1, "notify": 1})


def test_run_and_crash_and_resume_take_the_jobs_of_a_builder_workflow() -> None:
    """A builder workflow's jobs are given to the helpers by name."""
    import trio.testing

    from durable import workflow as builder
    from durable.testing import crash_and_resume, run

    calls: list[str] = []

    async def inc(data: dict[str, int]) -> dict[str, int]:
        calls.append("inc")
        return {"n": data["n"] + 1}

    graph = (builder("inc-twice").task("one", job="inc").task("two", job="inc", input=lambda ctx: ctx.steps["one"])
             .build())
    assert run(graph, {"n": 1}, jobs={"inc": inc}).output == {"n": 3}
    calls.clear()
    resumed = trio.run(lambda: crash_and_resume(graph, {"n": 1}, after="one", jobs={"inc": inc}),
                       clock=trio.testing.MockClock(autojump_threshold=0))
    assert resumed.status == "completed" and resumed.output == {"n": 3} and calls == ["inc", "inc"]


async def test_crash_and_resume_on_a_slow_disk_under_an_autojumping_clock(
    tmp_path: Any, disk_clock: Any, monkeypatch: Any
) -> None:
    """A commit slower than the clock's autojump threshold must not end crash_and_resume's wait early.

    (It once waited under a one-hour virtual deadline: an autojumping clock
    leaps to the next deadline whenever the loop waits on a thread that long.)
    """
    import time

    from durable import LMDBStore
    from durable.stores._lmdb.env import LMDBEnv

    real = LMDBEnv.run_batch

    def slow(self: LMDBEnv, batch: Any) -> None:
        time.sleep(0.1)  # an fsync slower than disk_clock's 0.05 s real-time threshold
        real(self, batch)

    monkeypatch.setattr(LMDBEnv, "run_batch", slow)
    CALLS.clear()
    store = LMDBStore(tmp_path / "slow.lmdb")
    try:
        inst = await crash_and_resume(pipeline, "k", after="store_it", store=store)
    finally:
        store.close()
    assert inst.status == "completed"
    assert CALLS == Counter({"fetch": 3, "store": 1, "notify": 1})


@step(timeout=5)
def sync_double(x: int) -> int:
    """A sync step (it runs in a worker thread) with a timeout."""
    import time

    time.sleep(0.01)  # real work: real time passes, virtual time must not leap meanwhile
    return x * 2


@workflow(timeout=60)
async def sync_then_many(x: int) -> int:
    total = await sync_double(x)
    for i in range(20):
        total += await store_it_quietly(i)
    return total


@step
async def store_it_quietly(i: int) -> int:
    return i


def test_a_sync_step_with_a_timeout_does_not_time_out_under_run() -> None:
    """run()'s clock autojumps; it must not jump to a step's timeout while the step's thread works."""
    inst = run(sync_then_many, 21)
    assert inst.status == "completed", inst.error
    assert inst.output == 42 + sum(range(20))


async def test_lmdb_commits_do_not_leap_an_autojumping_clock_to_the_deadline(
    tmp_path: Any, autojump_clock: Any
) -> None:
    """With autojump threshold 0, waiting for the writer thread's fsync is not idle time."""
    from durable import LMDBStore

    store = LMDBStore(tmp_path / "jump.lmdb")
    try:
        async with Engine(store=store) as engine:
            inst = await engine.workflows.wait(await engine.workflows.start(sync_then_many, 1))
    finally:
        store.close()
    assert inst.status == "completed", inst.error


RAN: list[str] = []


@step
async def step_a() -> str:
    RAN.append("a")
    return "a"


@step
async def step_b() -> str:
    RAN.append("b")
    return "b"


@step
async def step_c() -> str:
    RAN.append("c")
    return "c"


@step
async def step_d() -> str:
    RAN.append("d")
    return "d"


@workflow
async def four_steps() -> list[str]:
    RAN.append("BODY")
    return [await step_a(), await step_b(), await step_c(), await step_d()]


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
async def test_crash_and_resume_crashes_right_after_the_named_step(kind: str, tmp_path: Any) -> None:
    """Nothing of the workflow runs between the named step's checkpoint and the simulated crash."""
    from durable import LMDBStore

    RAN.clear()
    store = MemoryStore() if kind == "memory" else LMDBStore(tmp_path / "s")
    try:
        inst = await crash_and_resume(four_steps, after="step_a", store=store)
    finally:
        if kind == "lmdb":
            store.close()  # type: ignore[union-attr]
    assert inst.output == ["a", "b", "c", "d"]
    assert RAN == ["BODY", "a", "BODY", "b", "c", "d"]


def test_replace_step_replaces_a_builder_job_by_name_or_function() -> None:
    """replace_step takes a builder job too: by its registered name, or the callable a task was given."""
    from durable import JobNotFound
    from durable import workflow as builder

    async def real(x: int) -> int:
        return x + 1

    def fake(x: int) -> int:
        return x * 100

    named = builder("named-job").task("t", job="add-one").build()
    with replace_step("add-one", fake):
        assert run(named, 2, jobs={"add-one": real}).output == 200
    assert run(named, 2, jobs={"add-one": real}).output == 3
    with replace_step("add-one", fake):
        assert run(named, 2).output == 200  # replaced: need not be registered
    given = builder("given-job").task("t", job=real).build()
    with replace_step(real, fake):
        assert run(given, 2).output == 200
    assert run(given, 2).output == 3
    with pytest.raises(JobNotFound, match=r"'add-one'.*jobs=\{name: fn\}"):
        run(named, 2)


async def test_after_the_simulated_crash_a_step_running_in_another_branch_writes_nothing(autojump_clock: Any) -> None:
    """As with a killed process: a sibling step that finishes after the crash point is not checkpointed,
    so it runs again on resume."""
    import trio

    import durable

    ran: list[str] = []

    @durable.step
    async def quick() -> str:
        ran.append("quick")
        return "quick"

    @durable.step
    async def slow() -> str:  # its shielded work goes on past the crash, then it returns normally
        ran.append("slow")
        with trio.CancelScope(shield=True):
            await trio.sleep(0.2)
        return "slow"

    @durable.workflow
    async def siblings() -> list[str]:
        return list(await durable.parallel(slow(), quick()))

    inst = await crash_and_resume(siblings, after="quick")  # the slow step's 0.2 s pass on the mock clock
    assert inst.output == ["slow", "quick"]
    assert sorted(ran) == ["quick", "slow", "slow"]  # slow's first result was never checkpointed
