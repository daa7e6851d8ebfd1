"""Durable sleep: checkpointed wake-up times, unloading long sleeps, waking on time, deadlines and cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import durable
from durable import Engine, MemoryStore, parallel, step, workflow
from durable.testing import capture_events

RAN: list[tuple[str, float]] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


@step
async def before(x: int) -> int:
    RAN.append(("before", trio.current_time()))
    return x + 1


@step
async def after(x: int) -> int:
    RAN.append(("after", trio.current_time()))
    return x * 10


@workflow
async def day_off(x: int) -> int:
    y = await before(x)
    await durable.sleep(86_400)
    return await after(y)


@workflow
async def short_nap(x: int) -> int:
    y = await before(x)
    await durable.sleep(0.5)
    return await after(y)


@workflow(timeout=3600)
async def sleeps_past_its_deadline(x: int) -> int:
    y = await before(x)
    await durable.sleep(7200)
    return await after(y)


@workflow
async def naps_in_a_branch(x: int) -> list[int]:
    async def branch() -> int:
        await durable.sleep(600)
        return await after(x)

    return await parallel(branch(), before(x))


async def test_sleep_outside_an_engine_is_a_plain_trio_sleep(autojump_clock: MockClock) -> None:
    t0 = trio.current_time()
    assert await day_off(1) == 20
    assert trio.current_time() - t0 == pytest.approx(86_400)
    await durable.sleep_until(datetime.now(UTC) - timedelta(days=1))  # passed: returns at once


async def test_a_day_long_sleep_unloads_the_workflow_and_wakes_on_time(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        with capture_events(engine) as events:
            iid = await engine.workflows.start(day_off, 1)
            while iid not in engine.workflows.suspended_ids():
                await trio.sleep(0.001)
            assert engine.workflows.running_ids() == []  # no task: only a timer entry
            sleeping = await engine.workflows.get_instance(iid)
            assert sleeping is not None and sleeping.status == "running"
            rec = sleeping.step_results["sleep"]
            assert rec.status == "running" and rec.step_type == "sleep" and rec.next_attempt_at is not None
            inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.output == 20
    [(_, t_before), (_, t_after)] = RAN
    assert [name for name, _ in RAN] == ["before", "after"]  # before was not run again by the replay
    assert t_after - t_before == pytest.approx(86_400, abs=0.05)
    assert inst.step_results["sleep"].status == "completed"
    sleep_events = [(e.name, e.step_type) for e in events if e.step_name == "sleep"]
    assert sleep_events == [("workflow.step.started", "sleep"), ("workflow.step.completed", "sleep")]
    assert [e.name for e in events if e.name.startswith("workflow.") and "step" not in e.name][-1] == (
        "workflow.completed")


async def test_a_short_sleep_waits_in_memory(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        iid = await engine.workflows.start(short_nap, 1)
        await trio.sleep(0.25)
        assert engine.workflows.running_ids() == [iid] and engine.workflows.suspended_ids() == []
        inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.output == 20


async def test_a_sleep_in_a_parallel_branch_waits_in_memory(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        iid = await engine.workflows.start(naps_in_a_branch, 3)
        await trio.sleep(300)
        assert engine.workflows.running_ids() == [iid]
        inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.output == [30, 4]


async def test_the_deadline_ends_a_suspended_sleep(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        t0 = trio.current_time()
        iid = await engine.workflows.start(sleeps_past_its_deadline, 1)
        inst = await engine.workflows.wait(iid)
        assert trio.current_time() - t0 == pytest.approx(3600, abs=0.05)  # at the deadline, not the wake-up
    assert inst.status == "timed_out" and inst.error_type == "WorkflowTimeout"
    assert [name for name, _ in RAN] == ["before"]


async def test_cancelling_a_suspended_instance(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        iid = await engine.workflows.start(day_off, 1)
        while iid not in engine.workflows.suspended_ids():
            await trio.sleep(0.001)
        async with trio.open_nursery() as nursery:
            results: list[Any] = []

            async def waiter() -> None:
                results.append(await engine.workflows.wait(iid))

            nursery.start_soon(waiter)
            await trio.sleep(10)
            assert await engine.workflows.cancel(iid) is True
        assert results[0].status == "cancelled"
        await trio.sleep(2 * 86_400)  # the timer fires and finds nothing to wake
        final = await engine.workflows.get_instance(iid)
    assert final is not None and final.status == "cancelled"
    assert [name for name, _ in RAN] == ["before"]


async def test_sleep_until_and_bad_arguments(autojump_clock: MockClock) -> None:
    @workflow
    async def until(when: datetime) -> str:
        await durable.sleep_until(when)
        return "woke"

    async with Engine(MemoryStore()) as engine:
        t0 = trio.current_time()
        wake = engine.now() + timedelta(hours=5)
        inst = await engine.workflows.wait(await engine.workflows.start(until, wake))
        assert inst.status == "completed" and trio.current_time() - t0 == pytest.approx(5 * 3600, abs=0.05)
        past = await engine.workflows.wait(await engine.workflows.start(until, wake - timedelta(days=1)))
        assert past.status == "completed"
        naive = await engine.workflows.wait(await engine.workflows.start(until, datetime(2030, 1, 1)))
        assert naive.status == "failed" and "aware datetime" in (naive.error or "")
    for bad in (-1, float("nan"), "10", True):
        with pytest.raises(ValueError, match="seconds"):
            await durable.sleep(bad)  # type: ignore[arg-type]


def test_a_store_reopened_after_the_wake_time_continues_at_once(tmp_path: Path) -> None:
    """Engine stopped while suspended; a new engine (later) resumes: the sleep is over, the next step runs."""
    path = tmp_path / "s.lmdb"
    clock = MockClock(autojump_threshold=0.05)

    async def main() -> Any:
        async with Engine.open(path) as engine:
            iid = await engine.workflows.start(day_off, 1)
            while iid not in engine.workflows.suspended_ids():
                await trio.sleep(0.01)
        clock.jump(90_000)  # down for longer than the sleep
        async with Engine.open(path) as engine:
            engine.workflows.register(day_off)
            t0 = trio.current_time()
            assert await engine.workflows.resume() == [iid]
            inst = await engine.workflows.wait(iid)
            return inst, trio.current_time() - t0

    inst, took = trio.run(main, clock=clock)
    assert inst.status == "completed" and inst.output == 20 and took < 1.0
    assert [name for name, _ in RAN] == ["before", "after"]
