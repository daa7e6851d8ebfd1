"""The builder's wait, wait_for_signal and child-workflow task: run, replay, unload, restart, catch, draw."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import MockClock

import durable
from durable import (
    Catch,
    ChildWorkflowFailed,
    Engine,
    Graph,
    GraphError,
    MemoryStore,
    SignalTimeout,
    When,
    step,
    workflow,
)
from durable._graph.states import ChildState, SignalState, WaitState
from durable._graph.validate import validate_graph
from durable.testing import assert_replays, capture_events

from support import wait_until_suspended

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATE.clear()


def first(x: int) -> int:
    CALLS["first"] += 1
    return x + 1


def then(x: int) -> int:
    CALLS["then"] += 1
    return x * 10


def double(x: int) -> int:
    CALLS["double"] += 1
    return x * 2


def explode(x: Any) -> Any:
    CALLS["explode"] += 1
    raise ValueError(f"{x} exploded")


async def _run(engine: Engine, graph: Any, value: Any = None, **kw: Any) -> Any:
    return await engine.workflows.wait(await engine.workflows.start(graph, value, **kw))


# -- wait ------------------------------------------------------------------------

day_off = (
    workflow("day-off")
    .task("first", job=first)
    .wait("rest", seconds=86_400)
    .task("then", job=then, input=lambda ctx: ctx.steps["first"])
    .build()
)


async def test_a_wait_of_seconds_waits_then_goes_on_with_output_none(durable_engine: Engine) -> None:
    graph = (
        workflow("nap")
        .task("first", job=first)
        .wait("nap", seconds=0.5)
        .pass_("report", transform=lambda ctx: {"nap": ctx.steps["nap"], "first": ctx.steps["first"]})
        .build()
    )
    with capture_events(durable_engine) as events:
        t0 = trio.current_time()
        inst = await _run(durable_engine, graph, 1)
        took = trio.current_time() - t0
    assert inst.status == "completed" and inst.output == {"nap": None, "first": 2}
    assert took == pytest.approx(0.5, abs=0.05)
    rec = inst.step_results["nap"]
    assert rec.step_type == "sleep" and rec.key == "nap#0" and rec.output is None
    assert [(e.name, e.step_type) for e in events if e.step_name == "nap"] == [
        ("workflow.step.started", "sleep"), ("workflow.step.completed", "sleep")]
    progress = [e for e in events if e.name == "workflow.progress"]
    assert progress[-1].total_steps == 3 and progress[-1].completed_steps == 3
    await assert_replays(durable_engine, inst.id)


async def test_a_wait_until_a_time_from_ctx(durable_engine: Engine) -> None:
    computed: list[str] = []

    def when(ctx: Any) -> datetime:
        computed.append("until")
        return ctx.input["at"]  # type: ignore[no-any-return]

    graph = workflow("until").wait("until", until=when).pass_("done", result="woke").build()
    t0 = trio.current_time()
    wake = durable_engine.now() + timedelta(hours=5)
    inst = await _run(durable_engine, graph, {"at": wake})
    assert inst.status == "completed" and inst.output == "woke"
    assert trio.current_time() - t0 == pytest.approx(5 * 3600, abs=0.05)
    assert computed == ["until"]  # once: the replay after the wake-up read the checkpointed time
    assert inst.step_results["until"].input == {"until": wake}
    past = await _run(durable_engine, graph, {"at": wake - timedelta(days=2)})
    assert past.status == "completed"
    naive = await _run(durable_engine, graph, {"at": datetime(2030, 1, 1)})
    assert naive.status == "failed" and "aware datetime" in (naive.error or "")


async def test_a_long_wait_unloads_the_instance_and_wakes_on_time(durable_engine: Engine) -> None:
    engine = durable_engine
    t0 = trio.current_time()
    iid = await engine.workflows.start(day_off, 1)
    await wait_until_suspended(engine, iid)
    assert engine.workflows.running_ids() == []  # only a timer entry
    sleeping = await engine.workflows.get_instance(iid)
    assert sleeping is not None and sleeping.status == "running"
    rec = sleeping.step_results["rest"]
    assert rec.status == "running" and rec.step_type == "sleep" and rec.next_attempt_at is not None
    inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.output == 20
    assert trio.current_time() - t0 == pytest.approx(86_400, abs=1)  # wait() polls: up to 0.5 s late
    assert CALLS == {"first": 1, "then": 1}  # the replay after the wake-up did not run first again


async def test_a_wait_in_a_parallel_branch_or_a_map_item_waits_in_memory(durable_engine: Engine) -> None:
    branch = workflow.branch("slow").wait("rest", seconds=600).task("double", job=double).build()
    other = workflow.branch("fast").task("first", job=first).build()
    graph = (
        workflow("branchy")
        .parallel("both", branches=[branch, other])
        .map("each", items=lambda ctx: [1, 2], iterator=workflow.branch("item").wait("pause", seconds=600)
             .task("then", job=then).build())
        .pass_("out", transform=lambda ctx: [ctx.steps["both"], ctx.steps["each"]])
        .build()
    )
    iid = await durable_engine.workflows.start(graph, 3)
    await trio.sleep(300)
    assert durable_engine.workflows.running_ids() == [iid] and durable_engine.workflows.suspended_ids() == []
    await trio.sleep(600)
    assert durable_engine.workflows.running_ids() == [iid]
    inst = await durable_engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.output == [{"slow": 6, "fast": 4}, [10, 20]]


def test_a_store_reopened_after_the_wake_time_continues_at_once(tmp_path: Path) -> None:
    """Engine stopped while a builder wait is unloaded; a new engine (later) resumes: it goes on at once."""
    path = tmp_path / "s.lmdb"
    clock = MockClock(autojump_threshold=0.05)

    async def main() -> Any:
        async with Engine.open(path) as engine:
            iid = await engine.workflows.start(day_off, 1)
            while iid not in engine.workflows.suspended_ids():
                await trio.sleep(0.01)
        clock.jump(90_000)  # down for longer than the wait
        async with Engine.open(path) as engine:
            engine.workflows.register(day_off)
            t0 = trio.current_time()
            assert await engine.workflows.resume() == [iid]
            inst = await engine.workflows.wait(iid)
            return inst, trio.current_time() - t0

    inst, took = trio.run(main, clock=clock)
    assert inst.status == "completed" and inst.output == 20 and took < 1.0
    assert CALLS == {"first": 1, "then": 1}


# -- wait_for_signal -------------------------------------------------------------

approval = (
    workflow("approval")
    .task("first", job=first)
    .wait_for_signal("approve")
    .wait_for_signal("second-opinion", signal="review", timeout=3600, default={"ok": "by default"})
    .pass_("report", transform=lambda ctx: [ctx.steps["approve"], ctx.steps["second-opinion"]])
    .build()
)


async def test_a_signal_payload_is_the_state_output(durable_engine: Engine) -> None:
    engine = durable_engine
    with capture_events(engine) as events:
        iid = await engine.workflows.start(approval, 1)
        await wait_until_suspended(engine, iid)  # a top-level wait unloads the instance
        assert engine.workflows.running_ids() == []
        await engine.workflows.signal(iid, "approve", {"by": "ann"})
        while not (await engine.store.get_steps(iid)).get("approve#0"):
            await trio.sleep(0.01)
        await engine.workflows.signal(iid, "review", {"ok": "bob"})
        inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.output == [{"by": "ann"}, {"ok": "bob"}]
    assert inst.step_results["approve"].step_type == "signal"
    assert inst.step_results["approve"].output == {"by": "ann"}
    assert inst.step_results["second-opinion"].key == "second-opinion#0"
    waits = [(e.name, e.step_name) for e in events if e.step_type == "signal"]
    assert waits == [("workflow.step.started", "approve"), ("workflow.step.completed", "approve"),
                     ("workflow.step.started", "second-opinion"), ("workflow.step.completed", "second-opinion")]
    assert CALLS == {"first": 1}
    await assert_replays(engine, inst.id)


async def test_a_signal_timeout_gives_the_default(durable_engine: Engine) -> None:
    t0 = trio.current_time()
    iid = await durable_engine.workflows.start(approval, 1)
    await durable_engine.workflows.signal(iid, "approve", "yes")  # queued before the wait: kept
    inst = await durable_engine.workflows.wait(iid)
    assert inst.output == ["yes", {"ok": "by default"}]
    assert trio.current_time() - t0 == pytest.approx(3600, abs=0.05)


strict = (
    workflow("strict")
    .wait_for_signal("approve", timeout=60, catch=[Catch(["SignalTimeout"], next="escalate")])
    .pass_("approved", result="approved", end=True)
    .pass_("escalate", transform=lambda ctx: f"escalated: {ctx.error.type}", end=True)
    .build()
)


async def test_a_signal_timeout_without_default_is_caught_or_fails(durable_engine: Engine) -> None:
    inst = await _run(durable_engine, strict)
    assert inst.status == "completed" and inst.output == "escalated: SignalTimeout"
    rec = inst.step_results["approve"]
    assert rec.status == "failed" and "SignalTimeout" in (rec.error or "")
    await assert_replays(durable_engine, inst.id)
    approved = await durable_engine.workflows.start(strict, None)
    await durable_engine.workflows.signal(approved, "approve", 1)
    assert (await durable_engine.workflows.wait(approved)).output == "approved"
    uncaught = workflow("uncaught").wait_for_signal("approve", timeout=5).build()
    failed = await _run(durable_engine, uncaught)
    assert failed.status == "failed" and failed.error_type == "SignalTimeout"


# -- child workflows ---------------------------------------------------------------

doubler = workflow("doubler").task("double", job=double).build()


@step
async def add_one(x: int) -> int:
    CALLS["add_one"] += 1
    return x + 1


@workflow
async def py_child(x: int) -> dict[str, int]:
    await durable.sleep(10)
    return {"got": x, "plus": await add_one(x)}


parent = (
    workflow("parent")
    .task("first", job=first)
    .task("builder-kid", workflow=doubler, input=lambda ctx: ctx.steps["first"])
    .task("py-kid", workflow=py_child, input=lambda ctx: ctx.steps["builder-kid"],
          output=lambda result, ctx: result["plus"])
    .task("by-name", workflow="doubler", input=lambda ctx: 100)
    .pass_("report", transform=lambda ctx: [ctx.steps[n] for n in ("builder-kid", "py-kid", "by-name")])
    .build()
)


async def test_a_task_runs_a_child_workflow_as_an_instance_of_its_own(durable_engine: Engine) -> None:
    with capture_events(durable_engine) as events:
        inst = await _run(durable_engine, parent, 1, id="p-1")
    assert inst.status == "completed" and inst.output == [4, 5, 200]
    assert CALLS == {"first": 1, "double": 2, "add_one": 1}
    for state, wf, output in (("builder-kid", "doubler", 4), ("py-kid", "py_child", {"got": 4, "plus": 5}),
                              ("by-name", "doubler", 200)):
        kid = await durable_engine.workflows.get_instance(f"p-1/{state}#0")
        assert kid is not None and kid.status == "completed" and kid.workflow_name == wf and kid.output == output
        rec = inst.step_results[state]
        assert rec.step_type == "workflow" and rec.function == wf and rec.input == {"child": f"p-1/{state}#0"}
    assert inst.step_results["py-kid"].output == {"got": 4, "plus": 5}  # the child's; output= runs after
    assert {e.instance_id for e in events if e.name == "workflow.completed"} == {
        "p-1", "p-1/builder-kid#0", "p-1/py-kid#0", "p-1/by-name#0"}
    calls = [(e.name, e.step_name) for e in events if e.step_type == "workflow" and e.instance_id == "p-1"]
    assert calls[:2] == [("workflow.step.started", "builder-kid"), ("workflow.step.completed", "builder-kid")]
    await assert_replays(durable_engine, inst.id)


async def test_a_failed_child_is_caught_and_an_unknown_name_fails(durable_engine: Engine) -> None:
    failing = workflow("failing-kid").task("boom", job=explode).build()
    graph = (
        workflow("forgiving")
        .task("kid", workflow=failing, catch=[Catch(["ChildWorkflowFailed"], next="fallback")])
        .pass_("ok", result="ok", end=True)
        .pass_("fallback", transform=lambda ctx: (ctx.error.type, ctx.error.exception.child_status,
                                                   ctx.error.exception.child_error_type), end=True)
        .build()
    )
    inst = await _run(durable_engine, graph, "x", id="f-1")
    assert inst.status == "completed" and inst.output == ("ChildWorkflowFailed", "failed", "StepFailed")
    kid = await durable_engine.workflows.get_instance("f-1/kid#0")
    assert kid is not None and kid.status == "failed"
    await assert_replays(durable_engine, inst.id)
    assert CALLS == {"explode": 1}
    uncaught = workflow("uncaught-kid").task("kid", workflow="failing-kid").build()  # registered by the run above
    failed = await _run(durable_engine, uncaught, "y")
    assert failed.status == "failed" and failed.error_type == "ChildWorkflowFailed"
    await assert_replays(durable_engine, failed.id)  # a by-name child's failure replays without its registration
    unknown = workflow("unknown-kid").task("kid", workflow="no-such-workflow").build()
    missing = await _run(durable_engine, unknown)
    assert missing.status == "failed" and missing.error_type == "WorkflowNotFound"
    assert "no-such-workflow" in (missing.error or "") and "'kid'" in (missing.error or "")
    assert issubclass(ChildWorkflowFailed, durable.DurableError) and issubclass(SignalTimeout, durable.DurableError)


async def test_a_builder_child_in_a_branch_and_a_loop(durable_engine: Engine) -> None:
    """Each visit of a child state (a loop) and each branch start a child of their own."""
    graph = (
        workflow("looping")
        .task("kid", workflow=doubler, input=lambda ctx: ctx.steps.get("kid", 1))
        .choice("again", choices=[When(lambda ctx: ctx.steps["kid"] < 8, "kid")], default="fan")
        .parallel("fan", branches=[workflow.branch("b").task("kid", workflow=doubler, input=lambda ctx: 7).build()])
        .build()
    )
    inst = await _run(durable_engine, graph, None, id="l-1")
    assert inst.status == "completed" and inst.output == {"b": 14}
    ids = sorted(i.id for i in await durable_engine.store.get_all_instances() if i.id.startswith("l-1/"))
    assert ids == ["l-1/fan#0/b/kid#0", "l-1/kid#0", "l-1/kid#1", "l-1/kid#2"]


GATE: dict[str, trio.Event] = {}


async def gated(x: int) -> int:
    CALLS["gated"] += 1
    gate = GATE.get("gated")
    if gate is not None:
        await gate.wait()
    return x + 100


gated_kid = workflow("gated-kid").task("gated", job=gated).build()
gated_parent = (workflow("gated-parent").task("kid", workflow=gated_kid)
                .task("then", job=then, input=lambda ctx: ctx.steps["kid"]).build())


def test_a_restarted_builder_parent_does_not_start_its_child_twice(tmp_path: Path) -> None:
    """Stopped while the child runs; a new engine continues the same child and then the parent."""
    path = tmp_path / "s.lmdb"
    clock = MockClock(autojump_threshold=0.05)

    async def main() -> Any:
        GATE["gated"] = trio.Event()  # the child's job blocks: stop the engine there
        async with Engine.open(path) as engine:
            await engine.workflows.start(gated_parent, 1, id="g-1")
            while not CALLS["gated"]:
                await trio.sleep(0.01)
        GATE.clear()
        async with Engine.open(path) as engine:
            engine.workflows.register(gated_parent)
            engine.workflows.register(gated_kid)
            resumed = await engine.workflows.resume()
            inst = await engine.workflows.wait("g-1")
            ids = sorted(i.id for i in await engine.store.get_all_instances())
            return resumed, inst, ids

    resumed, inst, ids = trio.run(main, clock=clock)
    assert sorted(resumed) == ["g-1", "g-1/kid#0"] and ids == ["g-1", "g-1/kid#0"]  # one child, not two
    assert inst.status == "completed" and inst.output == 1010
    assert CALLS == {"gated": 2, "then": 1}  # the child's job was cut off by the stop and ran again, once


# -- the graph: IR, validation, diagrams -------------------------------------------


def test_the_ir_states_and_total_steps() -> None:
    wait = day_off.state("rest")
    assert isinstance(wait, WaitState) and wait.type == "wait" and wait.seconds == 86_400.0
    second = approval.state("second-opinion")
    assert isinstance(second, SignalState) and second.type == "signal"
    assert (second.signal, second.timeout, second.has_default, second.default) == (
        "review", 3600.0, True, {"ok": "by default"})
    assert isinstance(approval.state("approve"), SignalState) and approval.state("approve").signal == "approve"
    kid = parent.state("py-kid")
    assert isinstance(kid, ChildState) and kid.type == "workflow" and kid.workflow == "py_child"
    by_name = parent.state("by-name")
    assert isinstance(by_name, ChildState) and by_name.definition is None and by_name.workflow == "doubler"
    assert day_off.total_steps == 3 and approval.total_steps == 4 and parent.total_steps == 5


def test_the_diagrams_show_each_new_kind_of_node() -> None:
    graph = (
        workflow("drawn")
        .wait("cool-off", seconds=5400)
        .wait("until-monday", until=lambda ctx: datetime(2030, 1, 7, tzinfo=UTC))
        .wait_for_signal("approve", timeout=86_400, catch=[Catch(["SignalTimeout"], next="kid")])
        .task("kid", workflow=doubler, catch=[Catch(["ChildWorkflowFailed"], next="done")])
        .end("done")
        .build()
    )
    mermaid = graph.to_mermaid()
    assert 'n0{{"⏳ cool-off wait 1h 30m"}}' in mermaid
    assert 'n1{{"⏳ until-monday wait until a time"}}' in mermaid
    assert 'n2>"✉ signal approve timeout 1d"]' in mermaid
    assert 'n3[["kid (child: doubler)"]]' in mermaid
    assert 'n2 -.->|"catch SignalTimeout"| n3' in mermaid and 'n3 -.->|"catch ChildWorkflowFailed"| n4' in mermaid
    dot = graph.to_dot()
    assert 'n0 [label="⏳ cool-off\\nwait 1h 30m", shape=hexagon];' in dot
    assert 'n2 [label="✉ signal approve\\ntimeout 1d", shape=cds];' in dot
    assert 'n3 [label="kid\\n(child: doubler)", shape=box3d];' in dot
    assert 'n2 -> n3 [label="catch SignalTimeout", style=dashed];' in dot

    def deadline(ctx: Any) -> datetime:
        return datetime(2030, 1, 1, tzinfo=UTC)

    named = workflow("named").wait("w", until=deadline).wait_for_signal("s", signal="go").build()
    assert 'n0{{"⏳ w wait until deadline()"}}' in named.to_mermaid()
    assert 'n1>"✉ s signal go"]' in named.to_mermaid()


def _error(build: Any) -> GraphError:
    with pytest.raises(GraphError) as info:
        build()
    return info.value


def test_graph_errors_name_the_workflow_and_state() -> None:
    cases = [
        (lambda: workflow("w").wait("pause").build(), "pause", "exactly one"),
        (lambda: workflow("w").wait("pause", seconds=1, until=lambda ctx: None).build(), "pause", "exactly one"),
        (lambda: workflow("w").wait("pause", seconds=-1).build(), "pause", "seconds >= 0"),
        (lambda: workflow("w").wait("pause", seconds=float("nan")).build(), "pause", "seconds >= 0"),
        (lambda: workflow("w").wait("pause", seconds=float("inf")).build(), "pause", "seconds >= 0"),
        (lambda: workflow("w").wait("pause", seconds=True).build(), "pause", "seconds >= 0"),
        (lambda: workflow("w").wait_for_signal("ok", signal="").build(), "ok", "signal name"),
        (lambda: workflow("w").wait_for_signal("ok", timeout=-5).build(), "ok", "timeout"),
        (lambda: workflow("w").wait_for_signal("ok", catch=[Catch(["*"], next="nowhere")]).build(), "ok",
         "catch target 'nowhere'"),
        (lambda: workflow("w").wait("pause", seconds=1, next="nowhere").build(), "pause", "unknown state"),
        (lambda: workflow("w").task("t").build(), "t", "exactly one"),
        (lambda: workflow("w").task("t", job="j", workflow=doubler).build(), "t", "exactly one"),
        (lambda: workflow("w").task("t", workflow=doubler, retry=durable.Retry()).build(), "t", "no retry"),
        (lambda: workflow("w").task("t", workflow=doubler, timeout=5).build(), "t", "no retry"),
        (lambda: workflow("w").task("t", workflow="").build(), "t", "workflow name"),
        (lambda: workflow("w").task("t", workflow=doubler, catch=[Catch(["*"], next="x")]).build(), "t",
         "catch target 'x'"),
        (lambda: workflow("w").wait("a", seconds=1).wait("a", seconds=2).build(), "a", "duplicate"),
    ]
    for build, state, text in cases:
        err = _error(build)
        assert err.workflow == "w" and err.step == state and text in str(err), (state, text, str(err))
    with pytest.raises(TypeError, match="workflow="):
        workflow("w").task("t", workflow=42)
    with pytest.raises(TypeError, match="until"):
        workflow("w").wait("t", until=datetime(2030, 1, 1, tzinfo=UTC))  # type: ignore[arg-type]
    bad = Graph("raw", (SignalState(name="s", signal="s", timeout=-1, end=True),))
    with pytest.raises(GraphError, match="timeout"):
        validate_graph(bad)


async def test_the_cli_marks_the_new_states_with_their_status(durable_engine: Engine) -> None:
    """An instance's diagram marks wait, signal and child states by their checkpoints (named after the state)."""
    from durable.cli._graph import marked_mermaid, mermaid_node_ids

    graph = (
        workflow("marked")
        .task("kid", workflow=doubler)
        .wait("rest", seconds=0.5)
        .wait_for_signal("approve")
        .build()
    )
    iid = await durable_engine.workflows.start(graph, 2)
    await wait_until_suspended(durable_engine, iid)
    inst = await durable_engine.workflows.get_instance(iid)
    assert inst is not None
    text = marked_mermaid(graph, inst, await durable_engine.store.get_steps(iid))
    ids = {s.name: node for s, node in mermaid_node_ids(graph)}
    classes = {line.split()[-1]: set(line.split()[1].split(",")) for line in text.splitlines()
               if line.strip().startswith("class ")}
    assert classes == {"completed": {"start", ids["kid"], ids["rest"]}, "running": {ids["approve"]}}
    await durable_engine.workflows.cancel(iid)
