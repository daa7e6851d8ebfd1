"""Bounded fan-out: durable.map() in decorator workflows and the builder's map state."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import durable
from durable import (
    Engine,
    Event,
    GraphError,
    MapFailed,
    MapState,
    MemoryStore,
    NonDeterminismError,
    ParallelFailed,
    StepStatus,
    TaskState,
    step,
    workflow,
)
from durable.testing import assert_replays, capture_events, crash_and_resume, run
from durable._graph.validate import validate_graph

CALLS: Counter[Any] = Counter()


class Gauge:
    """Counts the calls inside a section at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def hold(self, seconds: float) -> None:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await trio.sleep(seconds)
        finally:
            self.now -= 1


GAUGE = Gauge()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GAUGE.now = GAUGE.peak = 0
    BLOCK.clear()
    BLOCKED.clear()
    FAIL.clear()


BLOCK: set[int] = set()  # items that block forever (until a test clears the set)
BLOCKED: list[int] = []
TWO_BLOCKED: list[trio.Event] = []  # set once two items hang
FAIL: set[int] = set()  # items that raise ValueError


@step
async def square(x: int) -> int:
    CALLS[x] += 1
    if x in FAIL:
        raise ValueError(f"item {x} is bad")
    if x in BLOCK:
        BLOCKED.append(x)
        if len(BLOCKED) == 2:
            TWO_BLOCKED[0].set()
        await trio.sleep_forever()
    await GAUGE.hold(1 + (x % 3))  # uneven durations: results must still come back in item order
    return x * x


@workflow
async def squares(n: int, concurrency: int = 3, on_error: str = "fail-fast") -> list[int]:
    return await durable.map(square, range(n), concurrency=concurrency, on_error=on_error)


# -- outside an engine ---------------------------------------------------------


async def test_plain_map_keeps_item_order_and_the_bound(autojump_clock: Any) -> None:
    """Awaited as a plain function, map() runs the items concurrently, never more than the bound, in order."""
    assert await squares(10, 3) == [x * x for x in range(10)]
    assert GAUGE.peak == 3
    assert sum(CALLS.values()) == 10


async def test_plain_map_fail_fast_and_wait_all(autojump_clock: Any) -> None:
    """fail-fast raises the item's own error and starts no more items; wait-all raises MapFailed with every error."""
    FAIL.update({2, 5})
    with pytest.raises(ValueError, match="item 2 is bad"):
        await squares(10, 1)
    assert max(CALLS) == 2  # one at a time: nothing after the failed item started
    CALLS.clear()
    with pytest.raises(MapFailed) as info:
        await squares(10, 2, "wait-all")
    assert sorted(info.value.errors) == [2, 5]
    assert isinstance(info.value, ParallelFailed)
    assert isinstance(info.value.errors[5], ValueError)
    assert sum(CALLS.values()) == 10


async def test_map_validates_its_arguments() -> None:
    """A negative bound, an unknown on_error or a non-callable fn are refused before anything runs."""
    with pytest.raises(ValueError, match="concurrency"):
        await durable.map(square, [1], concurrency=-1)
    with pytest.raises(ValueError, match="concurrency"):
        await durable.map(square, [1], concurrency=True)
    with pytest.raises(ValueError, match="on_error"):
        await durable.map(square, [1], on_error="ignore")
    with pytest.raises(TypeError, match="function"):
        await durable.map(3, [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="awaitable"):
        await durable.map(lambda x: x, [1])  # type: ignore[arg-type, return-value]
    assert durable.map_ is durable.map
    assert "map" not in durable.__all__ and "map_" in durable.__all__
    assert await durable.map(square, []) == []


# -- on an engine ----------------------------------------------------------------


async def test_map_on_an_engine_checkpoints_each_item(durable_engine: Engine, durable_events: list[Event]) -> None:
    """Each item is its own scope (map#0/<index>/...); the map records its count, then its output."""
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(squares, 7, 2))
    assert inst.status == "completed", inst.error
    assert inst.output == [x * x for x in range(7)]
    assert GAUGE.peak == 2
    steps = await durable_engine.store.get_steps(inst.id)
    assert set(steps) == {"map#0"} | {f"map#0/{i}/square#0" for i in range(7)}
    record = steps["map#0"]
    assert record.step_type == "map" and record.status == StepStatus.COMPLETED
    assert record.input == {"items": 7, "concurrency": 2}
    assert record.output == inst.output
    assert steps["map#0/4/square#0"].output == 16
    started = [e for e in durable_events if e.name == "workflow.step.started" and e.step_type == "map"]
    completed = [e for e in durable_events if e.name == "workflow.step.completed" and e.step_type == "map"]
    assert len(started) == len(completed) == 1 and completed[0].output == inst.output
    item_events = [e for e in durable_events if e.name == "workflow.step.completed" and e.step_name == "square"]
    assert len(item_events) == 7
    progress = [e for e in durable_events if e.name == "workflow.progress"]
    assert [p.progress for p in progress] == sorted(p.progress for p in progress)
    assert progress[-1].progress == 100
    assert progress[-1].completed_steps == progress[-1].total_steps == 8  # 7 items and the map
    await assert_replays(durable_engine, inst.id)


async def test_map_fail_fast_on_an_engine(durable_engine: Engine, durable_events: list[Event]) -> None:
    """The first failure cancels the running items, starts no more, fails the map (step_type map) and the instance."""
    FAIL.add(3)
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(squares, 10, 2))
    assert inst.status == "failed" and inst.error_type == "ValueError"
    assert "item 3 is bad" in (inst.error or "")
    assert max(CALLS) <= 4  # with two at a time, item 4 at most had started
    steps = await durable_engine.store.get_steps(inst.id)
    assert steps["map#0"].status == StepStatus.FAILED
    failed = [e for e in durable_events if e.name == "workflow.step.failed" and e.step_type == "map"]
    assert len(failed) == 1 and "item 3 is bad" in failed[0].error
    await assert_replays(durable_engine, inst.id)


async def test_map_wait_all_on_an_engine(durable_engine: Engine) -> None:
    """wait-all runs every item, then fails with MapFailed naming the failed indexes."""
    FAIL.update({1, 8})
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(squares, 10, 4, "wait-all"))
    assert inst.status == "failed" and inst.error_type == "MapFailed"
    assert "2 of 10 items failed" in (inst.error or "") and "1: ValueError" in (inst.error or "")
    assert sum(CALLS.values()) == 10
    steps = await durable_engine.store.get_steps(inst.id)
    exc = steps["map#0"].exception
    assert isinstance(exc, MapFailed) and sorted(exc.errors) == [1, 8]


@step
async def parse(x: int) -> int:
    CALLS[("parse", x)] += 1
    return x + 1


@step
async def save(x: int) -> str:
    CALLS[("save", x)] += 1
    return f"saved {x}"


async def parse_and_save(x: int) -> str:
    """An async helper: each item awaits two steps in its own scope."""
    return await save(await parse(x))


@workflow
async def pipeline(items: list[int]) -> list[str]:
    try:
        return await durable.map(parse_and_save, items, concurrency=2, on_error="wait-all")
    except MapFailed as exc:  # a try/except around the map replays exactly
        return [f"failed: {sorted(exc.errors)}"]


async def test_map_of_a_helper_awaiting_several_steps(durable_engine: Engine) -> None:
    """fn may be an async helper: its steps are keyed under the item's scope."""
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(pipeline, [10, 20, 30]))
    assert inst.output == ["saved 11", "saved 21", "saved 31"]
    steps = await durable_engine.store.get_steps(inst.id)
    assert {"map#0/2/parse#0", "map#0/2/save#0"} <= set(steps)
    graph = pipeline.graph
    (state,) = [s for s in graph.walk() if isinstance(s, MapState)]
    assert [s.name for s in state.iterator.walk()] == ["parse", "save"]  # the helper's steps, inlined
    await assert_replays(durable_engine, inst.id)


async def test_a_finished_map_replays_without_visiting_its_items(durable_clock: Any) -> None:
    """A crash after the map: on resume the map returns its stored output; no item runs again."""

    @workflow
    async def then_save(items: list[int]) -> str:
        parsed = await durable.map(parse, items, concurrency=2)
        return await save(sum(parsed))

    inst = await crash_and_resume(then_save, [1, 2, 3], after="map")
    assert inst.status == "completed" and inst.output == "saved 9"
    assert [CALLS[("parse", x)] for x in (1, 2, 3)] == [1, 1, 1]


def _crash_setup() -> None:
    BLOCK.update(range(6, 10))


@workflow
async def squares_of_setting(settings: dict[str, int]) -> list[int]:
    # Wrong on purpose in the non-determinism test: the count comes from a global.
    return await durable.map(square, range(ITEMS["count"]), concurrency=2)


ITEMS = {"count": 10}


async def _crash_mid_map(store_path: Path, wf: Any, *args: Any) -> str:
    """Start wf on an LMDB store, stop the engine once items 6 and 7 hang (0..5 are checkpointed)."""
    _crash_setup()
    TWO_BLOCKED[:] = [trio.Event()]
    async with Engine.open(store_path) as engine:
        engine.workflows.register(wf)
        instance_id = await engine.workflows.start(wf, *args)
        await TWO_BLOCKED[0].wait()
    BLOCK.clear()
    return instance_id


async def test_resume_after_a_crash_mid_map_runs_only_unfinished_items(store_path: Path, disk_clock: Any) -> None:
    """Items checkpointed before the crash replay; only the others run in the new process."""
    instance_id = await _crash_mid_map(store_path, squares, 10, 2)
    assert sorted(CALLS) == list(range(8)) and all(CALLS[i] == 1 for i in range(8))
    async with Engine.open(store_path) as engine:
        engine.workflows.register(squares)
        assert await engine.workflows.resume() == [instance_id]
        inst = await engine.workflows.wait(instance_id)
    assert inst.status == "completed" and inst.output == [x * x for x in range(10)]
    assert [CALLS[i] for i in range(10)] == [1] * 6 + [2, 2] + [1, 1]


async def test_replay_with_another_item_count_is_non_determinism(store_path: Path, disk_clock: Any) -> None:
    """A map replayed over another number of items fails the instance with NonDeterminismError naming map#0."""
    ITEMS["count"] = 10
    instance_id = await _crash_mid_map(store_path, squares_of_setting, {})
    ITEMS["count"] = 9
    try:
        async with Engine.open(store_path) as engine:
            engine.workflows.register(squares_of_setting)
            await engine.workflows.resume()
            inst = await engine.workflows.wait(instance_id)
    finally:
        ITEMS["count"] = 10
    assert inst.status == "failed" and inst.error_type == NonDeterminismError.__name__
    assert "map#0" in (inst.error or "") and "10 items" in (inst.error or "") and "9" in (inst.error or "")


# -- 10,000 items ---------------------------------------------------------------------


@step
async def tick(x: int) -> int:
    workers = _fan_out_workers()
    TICK["peak"] = max(TICK["peak"], workers)
    await trio.sleep(1)
    return x


TICK = {"peak": 0}


def _fan_out_workers() -> int:
    """Tasks alive now that run map items (fan_out's workers), counted over the whole task tree."""
    count = 0
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        count += "fan_out" in task.name
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return count


@workflow
async def ten_thousand(n: int) -> int:
    return sum(await durable.map(tick, range(n), concurrency=8))


async def test_ten_thousand_items_keep_at_most_n_tasks_and_little_memory(durable_engine: Engine) -> None:
    """A 10,000-item map completes; at most 8 item tasks ever exist; it stays well inside 30 MB."""
    TICK["peak"] = 0
    tracemalloc.start()
    try:
        inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(ten_thousand, 10_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert inst.status == "completed" and inst.output == sum(range(10_000))
    assert TICK["peak"] == 8
    assert peak < 30_000_000, f"peak {peak / 1e6:.1f} MB"
    assert len(await durable_engine.store.get_steps(inst.id)) == 10_001


# -- the compiled graph ------------------------------------------------------------------


def test_compiled_graph_has_a_map_state() -> None:
    """await durable.map(...) compiles to a map state whose iterator is the step, labelled with the bound."""
    (state,) = squares.graph.states
    assert isinstance(state, MapState) and state.name == "map" and state.max_concurrency == 0
    assert state.label == "map square over range(n) (at most concurrency at once)"
    assert [s.name for s in state.iterator.states] == ["square"]
    assert squares.total_steps == 2  # the map and one item's step

    from durable import map_

    @workflow
    async def two(items: list[int]) -> str:
        got = await map_(parse, items, concurrency=4, on_error="wait-all")
        return await save(sum(got))

    states = two.graph.states
    assert [s.type for s in states] == ["map", "task"]
    assert isinstance(states[0], MapState)
    assert states[0].max_concurrency == 4 and states[0].on_error == "wait-all"
    assert states[0].label == "map parse over items (at most 4 at once)"
    mermaid = two.graph.to_mermaid()
    assert 'subgraph n0 ["map parse over items (at most 4 at once)"]' in mermaid
    assert 'n0_0["parse"]' in mermaid and "n0 --> n1" in mermaid


def test_compiled_map_of_a_lambda_and_not_of_other_maps() -> None:
    """A lambda's call is the iterator; an awaited .map() of another object is a plain task."""

    class Client:
        async def map(self, xs: list[int]) -> list[int]:
            return xs

    client = Client()

    @workflow
    async def mixed(items: list[int]) -> Any:
        got = await durable.map(lambda x: save(x), items)
        return await client.map(got)

    states = list(mixed.graph.walk())
    assert [(s.type, s.name) for s in states] == [("map", "map"), ("task", "save"), ("task", "client.map")]
    assert isinstance(states[0], MapState) and states[0].max_concurrency == 10


# -- the builder's map state ----------------------------------------------------------


async def _double(x: int) -> int:
    CALLS[x] += 1
    if x in FAIL:
        raise ValueError(f"item {x} is bad")
    await GAUGE.hold(1)
    return 2 * x


def _fan(max_concurrency: int = 2, on_error: Any = "fail-fast", items: Any = None, name: str = "fan") -> Any:
    item = (
        workflow.branch("item")
        .task("double", job=_double)
        .pass_("tag", transform=lambda ctx: {"in": ctx.input, "out": ctx.steps["double"],
                                            "seen": ctx.steps.get("prepare")})
        .build()
    )
    return (
        workflow(name)
        .pass_("prepare", transform=lambda ctx: "ready")
        .map("each", items=items, iterator=item, max_concurrency=max_concurrency, on_error=on_error)
        .pass_("total", transform=lambda ctx: sum(r["out"] for r in ctx.steps["each"]), end=True)
        .build()
    )


async def test_builder_map_runs_the_iterator_per_item_within_the_bound(durable_engine: Engine) -> None:
    """The iterator's ctx.input is the item and its ctx.steps start with the steps before the map."""
    graph = _fan(2, items=lambda ctx: ctx.input["xs"])
    durable_engine.workflows.register(graph)
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(graph, {"xs": [3, 1, 2, 5, 4]}))
    assert inst.status == "completed", inst.error
    assert inst.output == 30
    each = inst.step_results["each"]
    assert each.step_type == "map" and each.input == {"items": 5, "concurrency": 2}
    assert each.output[0] == {"in": 3, "out": 6, "seen": "ready"}
    assert [r["in"] for r in each.output] == [3, 1, 2, 5, 4]
    assert GAUGE.peak == 2
    steps = await durable_engine.store.get_steps(inst.id)
    assert {"each#0/4/double#0", "each#0/4/tag#0"} <= set(steps)
    await assert_replays(durable_engine, inst.id)


async def test_builder_map_without_a_limit_and_over_ctx_input(durable_engine: Engine) -> None:
    """max_concurrency=0 runs every item at once; without items=, ctx.input is the list."""
    graph = _fan(0)
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(graph, list(range(12))))
    assert inst.status == "completed" and inst.output == 2 * sum(range(12))
    assert GAUGE.peak == 12


async def test_builder_map_failures(durable_engine: Engine) -> None:
    """fail-fast fails with the item's StepFailed; wait-all with MapFailed; items that are not a list fail."""
    FAIL.add(2)
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(_fan(1), [0, 1, 2, 3]))
    assert inst.status == "failed" and inst.error_type == "StepFailed" and "item 2 is bad" in (inst.error or "")
    assert sorted(CALLS) == [0, 1, 2]
    CALLS.clear()
    inst = await durable_engine.workflows.wait(
        await durable_engine.workflows.start(_fan(1, "wait-all", name="fan-wait-all"), [0, 1, 2, 3]))
    assert inst.status == "failed" and inst.error_type == "MapFailed"
    assert sorted(CALLS) == [0, 1, 2, 3]
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(_fan(name="fan-dict"), {"not": "a list"}))
    assert inst.status == "failed" and inst.error_type == "TypeError" and "items must be a list" in (inst.error or "")


async def test_builder_map_resumes_after_a_crash(durable_clock: Any) -> None:
    """crash_and_resume after the map's first item: on resume only the other items run."""
    graph = _fan(1)
    inst = await crash_and_resume(graph, [5, 6, 7], after="double")
    assert inst.status == "completed" and inst.output == 36
    assert CALLS == Counter({5: 1, 6: 1, 7: 1})


async def test_builder_map_emits_step_events(durable_engine: Engine) -> None:
    """The map state emits step events of type map; its items' states emit their own."""
    with capture_events(durable_engine) as events:
        await durable_engine.workflows.wait(await durable_engine.workflows.start(_fan(3), [1, 2, 3]))
    types = [(e.name, e.step_name) for e in events if e.name.startswith("workflow.step") and e.step_type == "map"]
    assert types == [("workflow.step.started", "each"), ("workflow.step.completed", "each")]
    assert sum(1 for e in events if e.name == "workflow.step.completed" and e.step_name == "double") == 3
    progress = [e for e in events if e.name == "workflow.progress"]
    # prepare, map, total + three items of two states each
    assert progress[-1].progress == 100 and progress[-1].total_steps == 9 == progress[-1].completed_steps


def test_builder_map_validation() -> None:
    """build() refuses a negative or non-int bound, a bad on_error, an iterator that is not a graph."""
    item = workflow.branch("item").task("t", job="j").build()
    with pytest.raises(GraphError, match="max_concurrency"):
        workflow("w").map("m", iterator=item, max_concurrency=-1)
    with pytest.raises(GraphError, match="max_concurrency"):
        workflow("w").map("m", iterator=item, max_concurrency=1.5)  # type: ignore[arg-type]
    with pytest.raises(GraphError, match="on_error"):
        workflow("w").map("m", iterator=item, on_error="never")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterator"):
        workflow("w").map("m", iterator=workflow.branch("item"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="items"):
        workflow("w").map("m", iterator=item, items=[1, 2])  # type: ignore[arg-type]
    bad_iterator = MapState(name="m", iterator=durable.Graph("it", (TaskState(name="t", job="j", next="nope"),)))
    with pytest.raises(GraphError, match="nope") as info:
        validate_graph(durable.Graph("w", (attrs_evolve_end(bad_iterator),)))
    assert info.value.workflow == "w/m/it"


def attrs_evolve_end(state: MapState) -> MapState:
    import attrs

    return attrs.evolve(state, end=True)


def test_builder_map_graph_walk_and_diagrams() -> None:
    """walk() visits the iterator; Mermaid and DOT draw the map as a subgraph with its bound."""
    graph = _fan(5)
    assert [s.name for s in graph.walk()] == ["prepare", "each", "double", "tag", "total"]
    assert graph.total_steps == 5
    mermaid = graph.to_mermaid()
    assert 'subgraph n1 ["each (map, at most 5 at once)"]' in mermaid
    assert 'n1_0["double' in mermaid and "n1_0 --> n1_1" in mermaid
    assert "n1 --> n2" in mermaid  # the state after the map keeps its number
    dot = graph.to_dot()
    assert 'subgraph cluster_n1 { label="each (map, at most 5 at once)";' in dot
    assert "n1 -> n1_0 [style=dashed];" in dot and "n1 -> n2;" in dot
    assert "(map, no limit)" in _fan(0).to_mermaid()


def test_the_cli_does_not_take_a_module_level_iterator_for_a_workflow(tmp_path: Path) -> None:
    """A map's iterator graph defined at module level is part of its workflow, as a parallel's branches are."""
    from durable.cli._load import find_workflows, load_module

    (tmp_path / "flows_with_map.py").write_text(
        "from durable import workflow\n"
        "line = workflow.branch('line').task('price', job='price').build()\n"
        "invoice = workflow('invoice').map('lines', iterator=line).build()\n",
        encoding="utf-8",
    )
    module = load_module(str(tmp_path / "flows_with_map.py"))
    assert list(find_workflows(module)) == ["invoice"]
