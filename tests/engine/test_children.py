"""Child workflows: a @workflow awaited in a workflow runs as its own instance, once, bounded by its parent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import durable
from durable import ChildWorkflowFailed, Engine, MemoryStore, step, workflow
from durable.testing import capture_events

RAN: list[str] = []
GATE: dict[str, trio.Event] = {}


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()
    GATE.clear()


@step
async def work(tag: str) -> str:
    RAN.append(tag)
    gate = GATE.get(tag)
    if gate is not None:
        await gate.wait()
    return tag.upper()


@step
async def explode(tag: str) -> str:
    RAN.append(tag)
    raise ValueError(f"{tag} exploded")


@workflow
async def child(tag: str) -> dict[str, str]:
    return {"a": await work(f"{tag}-a"), "b": await work(f"{tag}-b")}


@workflow
async def parent(tag: str) -> dict[str, Any]:
    first = await child(tag)
    after = await work(f"{tag}-after")
    return {"child": first, "after": after}


@workflow
async def failing_child(tag: str) -> str:
    return await explode(tag)


@workflow
async def forgiving_parent(tag: str) -> str:
    try:
        return await failing_child(tag)
    except ChildWorkflowFailed as exc:
        return f"child {exc.child_status}: {exc.child_error_type}"


@workflow
async def sleepy_child(tag: str) -> str:
    await durable.sleep(3600)
    return await work(tag)


@workflow(timeout=60)
async def hurried_parent(tag: str) -> str:
    return await sleepy_child(tag)


@workflow
async def patient_parent(tag: str) -> str:
    return await sleepy_child(tag)


async def test_a_child_is_an_instance_of_its_own(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        with capture_events(engine) as events:
            inst = await engine.workflows.wait(await engine.workflows.start(parent, "p", id="p-1"))
        child_id = "p-1/workflow:child#0"
        kid = await engine.workflows.get_instance(child_id)
    assert inst.status == "completed"
    assert inst.output == {"child": {"a": "P-A", "b": "P-B"}, "after": "P-AFTER"}
    assert kid is not None and kid.status == "completed" and kid.workflow_name == "child"
    assert set(kid.step_results) == {"work"} or set(kid.step_results) >= {"work"}
    call = inst.step_results["workflow:child"]
    assert call.step_type == "workflow" and call.output == {"a": "P-A", "b": "P-B"}
    assert call.input == {"child": child_id}
    assert {e.instance_id for e in events if e.name == "workflow.completed"} == {"p-1", child_id}
    assert RAN == ["p-a", "p-b", "p-after"]


async def test_outside_an_engine_a_child_is_a_plain_call(autojump_clock: MockClock) -> None:
    assert await parent("q") == {"child": {"a": "Q-A", "b": "Q-B"}, "after": "Q-AFTER"}


async def test_a_failed_child_raises_child_workflow_failed(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        inst = await engine.workflows.wait(await engine.workflows.start(forgiving_parent, "x"))
    assert inst.status == "completed" and inst.output == "child failed: ValueError"
    assert inst.step_results["workflow:failing_child"].status == "failed"


async def test_cancelling_the_parent_cancels_the_child(autojump_clock: MockClock) -> None:
    GATE["c-a"] = trio.Event()  # the child blocks in its first step
    async with Engine(MemoryStore()) as engine:
        iid = await engine.workflows.start(parent, "c", id="c-1")
        while "c-a" not in RAN:
            await trio.sleep(0.01)
        assert await engine.workflows.cancel(iid)
        kid = await engine.workflows.wait("c-1/workflow:child#0")
    assert kid.status == "cancelled"
    assert RAN == ["c-a"]


async def test_the_parents_deadline_bounds_the_child(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        t0 = trio.current_time()
        inst = await engine.workflows.wait(await engine.workflows.start(hurried_parent, "h", id="h-1"))
        kid = await engine.workflows.wait("h-1/workflow:sleepy_child#0")
        assert trio.current_time() - t0 == pytest.approx(60, abs=0.1)
    # Both deadlines fall at once: the parent times out (or fails on its child's
    # time-out, if that lands first) and the child ends timed out, or cancelled by its ending parent.
    assert inst.status in ("timed_out", "failed")
    assert kid.status in ("timed_out", "cancelled")
    assert kid.deadline is not None and inst.deadline is not None and kid.deadline <= inst.deadline
    assert RAN == []


def test_a_restarted_parent_does_not_start_its_child_twice(tmp_path: Path) -> None:
    """Stopped while the child runs; a new engine finishes both; no step of the child runs twice."""
    path = tmp_path / "s.lmdb"
    clock = MockClock(autojump_threshold=0.05)

    async def main() -> Any:
        GATE["r-b"] = trio.Event()  # the child's second step blocks: stop the engine there
        async with Engine.open(path) as engine:
            await engine.workflows.start(parent, "r", id="r-1")
            while "r-b" not in RAN:
                await trio.sleep(0.01)
        GATE.clear()
        async with Engine.open(path) as engine:
            engine.workflows.register(parent)
            engine.workflows.register(child)
            resumed = await engine.workflows.resume()
            inst = await engine.workflows.wait("r-1")
            ids = [i.id for i in await engine.store.get_all_instances()]
            return resumed, inst, ids

    resumed, inst, ids = trio.run(main, clock=clock)
    assert sorted(resumed) == ["r-1", "r-1/workflow:child#0"]
    assert inst.status == "completed" and inst.output["child"] == {"a": "R-A", "b": "R-B"}
    assert sorted(ids) == ["r-1", "r-1/workflow:child#0"]  # one child, not two
    assert RAN == ["r-a", "r-b", "r-b", "r-after"]  # r-b was cut off by the stop and ran again; r-a did not


async def test_a_suspended_child_wakes_and_its_parent_continues(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        with capture_events(engine) as events:
            inst = await engine.workflows.wait(await engine.workflows.start(patient_parent, "s", id="s-1"))
    assert inst.status == "completed" and inst.output == "S"
    assert any(e.step_type == "workflow" and e.name == "workflow.step.completed" for e in events)


@workflow
async def fan_out_children(tags: list[str]) -> list[dict[str, str]]:
    return await durable.map(child, tags, concurrency=2)


async def test_map_over_a_child_workflow_starts_one_child_per_item(autojump_clock: MockClock) -> None:
    async with Engine(MemoryStore()) as engine:
        inst = await engine.workflows.wait(await engine.workflows.start(fan_out_children, ["x", "y", "z"], id="m-1"))
        kids = [i for i in await engine.store.get_all_instances() if i.workflow_name == "child"]
    assert inst.status == "completed"
    assert inst.output == [{"a": "X-A", "b": "X-B"}, {"a": "Y-A", "b": "Y-B"}, {"a": "Z-A", "b": "Z-B"}]
    assert sorted(k.id for k in kids) == [f"m-1/map#0/{i}/workflow:child#0" for i in range(3)]


@workflow
async def parent_with_a_failing_sibling(tag: str) -> Any:
    return await durable.parallel(child(tag), explode(f"{tag}-boom"))


async def test_a_parent_that_ends_while_its_child_runs_cancels_the_child(autojump_clock: MockClock) -> None:
    """A fail-fast parallel cancels the branch awaiting the child; the parent fails and the child is cancelled."""
    GATE["f-a"] = trio.Event()  # the child blocks in its first step, so its sibling's failure comes first
    async with Engine(MemoryStore()) as engine:
        inst = await engine.workflows.wait(await engine.workflows.start(parent_with_a_failing_sibling, "f", id="f-1"))
        with trio.fail_after(10):
            kid = await engine.workflows.wait("f-1/parallel#0/0/workflow:child#0")
    assert inst.status == "failed" and "f-boom exploded" in (inst.error or "")
    assert kid.status == "cancelled"
    assert "f-b" not in RAN
