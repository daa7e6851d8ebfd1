"""Signals from outside: queued durably, taken in order, each exactly once, across restarts and processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import durable
from durable import DurableError, Engine, InstanceNotFound, MemoryStore, SignalTimeout, step, workflow
from durable.testing import capture_events

from support import wait_until_suspended

RAN: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


@step
async def record(what: Any) -> Any:
    RAN.append(repr(what))
    return what


@workflow
async def approval(order: str) -> dict[str, Any]:
    await record(order)
    first = await durable.wait_for_signal("approve")
    second = await durable.wait_for_signal("approve")
    return {"order": order, "first": first, "second": second}


@workflow
async def impatient(order: str) -> Any:
    return await durable.wait_for_signal("approve", timeout=60, default="no answer")


@workflow
async def strict(order: str) -> Any:
    try:
        return await durable.wait_for_signal("approve", timeout=60)
    except SignalTimeout as exc:
        return f"caught: {exc}"


async def test_signals_sent_before_and_after_the_wait_arrive_in_order_once(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        with capture_events(engine) as events:
            iid = await engine.workflows.start(approval, "o-1")
            await wait_until_suspended(engine, iid)  # the wait unloads the workflow
            assert engine.workflows.running_ids() == []
            await engine.workflows.signal(iid, "approve", {"by": "ann"})
            await engine.workflows.signal(iid, "approve", {"by": "bob"})
            await engine.workflows.signal(iid, "approve", {"by": "cid"})  # stays queued: nobody takes it
            inst = await engine.workflows.wait(iid)
    assert inst.status == "completed"
    assert inst.output == {"order": "o-1", "first": {"by": "ann"}, "second": {"by": "bob"}}
    assert RAN == ["'o-1'"]  # the replays after each wake-up did not run the step again
    waits = [(e.name, e.step_name) for e in events if e.step_type == "signal"]
    assert waits == [("workflow.step.started", "signal:approve"), ("workflow.step.completed", "signal:approve")] * 2


async def test_a_signal_sent_before_the_workflow_waits_is_kept(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        iid = await engine.workflows.start(impatient, "o-2", id="o-2")
        # Queued before the instance's run even started its wait:
        await engine.workflows.signal(iid, "approve", "yes")
        inst = await engine.workflows.wait(iid)
    assert inst.output == "yes"


async def test_a_wait_times_out_with_a_default_or_an_error(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        t0 = trio.current_time()
        a = await engine.workflows.wait(await engine.workflows.start(impatient, "o-3"))
        assert a.status == "completed" and a.output == "no answer"
        assert trio.current_time() - t0 == pytest.approx(60, abs=0.05)
        b = await engine.workflows.wait(await engine.workflows.start(strict, "o-4"))
        assert b.status == "completed" and b.output.startswith("caught: ") and "approve" in b.output
        failed = b.step_results["signal:approve"]
        assert failed.status == "failed" and failed.error is not None and "SignalTimeout" in failed.error


async def test_signal_errors_name_the_instance(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        with pytest.raises(InstanceNotFound):
            await engine.workflows.signal("nope", "approve", 1)
        done = await engine.workflows.wait(await engine.workflows.start(impatient, "o-5"))
        with pytest.raises(DurableError, match="already finished"):
            await engine.workflows.signal(done.id, "approve", 1)
        iid = await engine.workflows.start(impatient, "o-6")
        with pytest.raises(ValueError, match="signal name"):
            await engine.workflows.signal(iid, "", 1)
        await engine.workflows.cancel(iid)


async def test_outside_an_engine_only_the_time_out_path_runs(autojump_clock: MockClock) -> None:
    assert await impatient("o-7") == "no answer"
    assert (await strict("o-8")).startswith("caught: ")
    with pytest.raises(DurableError, match="outside an engine"):
        await approval("o-9")


def test_signals_survive_a_restart(tmp_path: Path) -> None:
    """Queued while no engine runs; the wait that took one replays its payload; the rest stay queued."""
    path = tmp_path / "s.lmdb"
    clock = MockClock(autojump_threshold=0.05)

    async def main() -> Any:
        async with Engine.open(path) as engine:
            iid = await engine.workflows.start(approval, "o-10")
            await wait_until_suspended(engine, iid)
            await engine.workflows.signal(iid, "approve", "first")
            while not (await engine.store.get_steps(iid)).get("signal:approve#0"):
                await trio.sleep(0.01)
            await wait_until_suspended(engine, iid)  # waiting for the second one now
        async with Engine.open(path) as engine:
            await engine.workflows.signal(iid, "approve", "second")  # nobody runs it: queued
        async with Engine.open(path) as engine:
            engine.workflows.register(approval)
            assert await engine.workflows.resume() == [iid]
            return await engine.workflows.wait(iid)

    inst = trio.run(main, clock=clock)
    assert inst.status == "completed" and inst.output == {"order": "o-10", "first": "first", "second": "second"}
    assert RAN == ["'o-10'"]


SENDER = textwrap.dedent(
    """
    import sys, trio
    from durable import Engine

    async def main():
        async with Engine.open(sys.argv[1]) as engine:
            await engine.workflows.signal(sys.argv[2], "approve", {"from": "another process"})

    trio.run(main)
    """
)


def test_a_signal_from_another_process_wakes_the_waiting_instance(tmp_path: Path) -> None:
    path = tmp_path / "s.lmdb"

    async def main() -> Any:
        async with Engine.open(path) as engine:
            iid = await engine.workflows.start(impatient, "o-11")
            await wait_until_suspended(engine, iid)
            await trio.to_thread.run_sync(
                lambda: subprocess.run([sys.executable, "-c", SENDER, str(path), iid], check=True, timeout=60))
            with trio.fail_after(20):
                return await engine.workflows.wait(iid)

    inst = trio.run(main)
    assert inst.status == "completed" and inst.output == {"from": "another process"}


@workflow
async def two_approvals(order: str) -> list[Any]:
    return await durable.parallel(durable.wait_for_signal("legal"), durable.wait_for_signal("finance"))


async def test_waits_in_parallel_branches_wait_in_memory(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        iid = await engine.workflows.start(two_approvals, "o-12")
        await trio.sleep(5)
        assert engine.workflows.running_ids() == [iid] and engine.workflows.suspended_ids() == []
        await engine.workflows.signal(iid, "finance", "f-ok")
        await trio.sleep(5)
        await engine.workflows.signal(iid, "legal", "l-ok")
        inst = await engine.workflows.wait(iid)
    assert inst.output == ["l-ok", "f-ok"]
