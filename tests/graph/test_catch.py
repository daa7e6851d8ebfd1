"""Catch on builder task, parallel and map states; try/except in decorator workflows; exact replay of both."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from durable import (
    Catch,
    CaughtError,
    Engine,
    GraphError,
    LMDBStore,
    MapFailed,
    ParallelFailed,
    Retry,
    StepFailed,
    StepStatus,
    StepTimeout,
    step,
    workflow,
)
from durable._graph.catch import error_matches
from durable._model.serde import UnpicklableError
from durable.testing import assert_replays, capture_events, crash_and_resume

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


class CardDeclined(ValueError):
    """A job error with a base class other than Exception."""


def charge(order: dict[str, Any]) -> str:
    CALLS["charge"] += 1
    raise CardDeclined(f"card of {order['id']} declined")


def flaky(order: dict[str, Any]) -> str:
    CALLS["flaky"] += 1
    raise ConnectionError("processor down")


async def slow(order: dict[str, Any]) -> str:
    CALLS["slow"] += 1
    await trio.sleep(60)
    return "late"


def refund(order: dict[str, Any]) -> str:
    CALLS["refund"] += 1
    return f"refunded {order['id']}"


def ship(order: dict[str, Any]) -> str:
    CALLS["ship"] += 1
    return "shipped"


def _order_flow(name: str, job: Any, catch: list[Catch], **task: Any) -> Any:
    flow = (
        workflow(name)
        .task("charge", job=job, catch=catch, **task)
        .task("ship", job=ship, end=True)
        .task("refund", job=refund)
        .pass_("report", transform=lambda ctx: {
            "state": ctx.error.state, "type": ctx.error.type, "message": ctx.error.message,
            "exception": type(ctx.error.exception).__name__, "refund": ctx.steps["refund"],
        }, end=True)
    )
    if any(c.next == "other" for c in catch):
        flow = flow.pass_("other", transform=lambda ctx: f"other {ctx.error.type}", end=True)
    return flow.build()


async def _run(engine: Engine, graph: Any, order: Any = None) -> Any:
    return await engine.workflows.wait(await engine.workflows.start(graph, order or {"id": "A"}))


async def test_catch_sends_the_failure_to_its_handler_with_the_error_in_ctx(durable_engine: Engine) -> None:
    """A matching catch continues at its next; ctx.error names the state, the job's error type and message."""
    graph = _order_flow("catch-basic", charge, [Catch([CardDeclined], "refund")])
    inst = await _run(durable_engine, graph)
    assert inst.status == "completed", inst.error
    assert inst.output == {
        "state": "charge", "type": "CardDeclined", "message": "card of A declined",
        "exception": "CardDeclined", "refund": "refunded A",
    }
    assert inst.step_results["charge"].status == StepStatus.FAILED
    assert "ship" not in inst.step_results
    await assert_replays(durable_engine, inst.id)


@pytest.mark.parametrize("errors", [
    ["CardDeclined"], ["ValueError"], [ValueError], ["Exception"], ["*"], ["States.ALL"], ["StepFailed"],
    [StepFailed], "CardDeclined", ValueError,
])
async def test_catch_matches_types_names_bases_and_any(durable_engine: Engine, errors: Any) -> None:
    """Types match by isinstance, names by the class or a base class; '*' and States.ALL match anything."""
    inst = await _run(durable_engine, _order_flow("catch-match", charge, [Catch(errors, "refund")]))
    assert inst.status == "completed" and inst.output["refund"] == "refunded A"


async def test_catchers_are_tried_in_order_and_no_match_fails(durable_engine: Engine) -> None:
    """The first matching catcher wins; with none matching the instance fails as without a catch."""
    graph = _order_flow("catch-order", charge, [
        Catch([KeyError, "TimeoutError"], "other"),   # no match
        Catch(["ValueError"], "refund"),               # first match
        Catch(["*"], "other"),                         # would match too
    ])
    inst = await _run(durable_engine, graph)
    assert inst.output["refund"] == "refunded A"
    graph = _order_flow("catch-none", charge, [Catch([KeyError, "ConnectionError"], "refund")])
    inst = await _run(durable_engine, graph)
    assert inst.status == "failed" and inst.error_type == "StepFailed" and "CardDeclined" in (inst.error or "")
    assert CALLS["refund"] == 1  # only the first workflow's handler ran


async def test_catch_comes_after_retries_are_exhausted(durable_engine: Engine) -> None:
    """A retried task is caught only once its last attempt failed."""
    graph = _order_flow("catch-retry", flaky, [Catch([ConnectionError], "refund")],
                        retry=Retry(max_attempts=3, interval=1))
    with capture_events(durable_engine) as events:
        inst = await _run(durable_engine, graph)
    assert inst.status == "completed" and inst.output["type"] == "ConnectionError"
    assert CALLS["flaky"] == 3 and inst.step_results["charge"].attempts == 3
    names = [e.name for e in events if e.step_name in ("charge", "refund")]
    assert names == [
        "workflow.step.started", "workflow.step.retry", "workflow.step.retry", "workflow.step.failed",
        "workflow.step.started", "workflow.step.completed",
    ]


async def test_catch_a_timeout(durable_engine: Engine) -> None:
    """A timed-out attempt is a StepTimeout: catchable by type or by name."""
    graph = _order_flow("catch-timeout", slow, [Catch([StepTimeout], "refund")], timeout=5)
    inst = await _run(durable_engine, graph)
    assert inst.status == "completed" and inst.output["type"] == "StepTimeout"


async def test_catch_on_a_parallel_state(durable_engine: Engine) -> None:
    """fail-fast raises the failed branch's error (matched by the job's type); wait-all a ParallelFailed."""
    def flow(name: str, on_error: Any, errors: list[Any]) -> Any:
        return (
            workflow(name)
            .parallel("both", branches=[
                workflow.branch("pay").task("charge", job=charge).build(),
                workflow.branch("send").task("ship", job=ship).build(),
            ], on_error=on_error, catch=[Catch(errors, "handle")])
            .end("done")
            .pass_("handle", transform=lambda ctx: (ctx.error.state, ctx.error.type), end=True)
            .build()
        )

    inst = await _run(durable_engine, flow("par-fast", "fail-fast", [CardDeclined]))
    assert inst.output == ("both", "CardDeclined")
    inst = await _run(durable_engine, flow("par-all", "wait-all", [ParallelFailed]))
    assert inst.output == ("both", "ParallelFailed")
    inst = await _run(durable_engine, flow("par-all-miss", "wait-all", [CardDeclined]))
    assert inst.status == "failed" and inst.error_type == "ParallelFailed"  # wait-all is matched as ParallelFailed


async def test_catch_on_a_map_state(durable_engine: Engine) -> None:
    """A map's fail-fast error is the item's; wait-all's is MapFailed (a ParallelFailed)."""
    def maybe(x: int) -> int:
        if x == 2:
            raise KeyError(x)
        return x

    def flow(name: str, on_error: Any, errors: list[Any]) -> Any:
        return (
            workflow(name)
            .map("each", iterator=workflow.branch("one").task("check", job=maybe).build(), max_concurrency=2,
                 on_error=on_error, catch=[Catch(errors, "handle")])
            .end("done")
            .pass_("handle", transform=lambda ctx: (ctx.error.type, sorted(getattr(ctx.error.exception, "errors", {}))),
                   end=True)
            .build()
        )

    assert (await _run(durable_engine, flow("map-fast", "fail-fast", ["KeyError"]), [1, 2, 3])).output == ("KeyError", [])
    assert (await _run(durable_engine, flow("map-all", "wait-all", [MapFailed]), [1, 2, 3, 2])).output == (
        "MapFailed", [1, 3])
    assert (await _run(durable_engine, flow("map-par", "wait-all", ["ParallelFailed"]), [2])).output == ("MapFailed", [0])
    assert (await _run(durable_engine, flow("map-ok", "wait-all", ["*"]), [1])).status == "completed"


async def test_a_caught_failure_replays_exactly_from_lmdb(tmp_path: Path, disk_clock: Any) -> None:
    """Crash after the handler's step, resume from LMDB: the failed task and the handler are not run again."""
    graph = _order_flow("catch-replay", charge, [Catch([ValueError], "refund")])
    store = LMDBStore(tmp_path / "s.lmdb")
    try:
        inst = await crash_and_resume(graph, {"id": "B"}, after="refund", store=store)
        assert inst.status == "completed" and inst.output["type"] == "CardDeclined"
        assert CALLS == Counter({"charge": 1, "refund": 1})
        await assert_replays(store, inst.id, workflow=graph)
    finally:
        store.close()


async def test_a_caught_parallel_failure_replays_exactly_from_lmdb(tmp_path: Path, disk_clock: Any) -> None:
    """The parallel's stored error keeps the job's error as its cause, so the same catcher matches on replay."""
    graph = (
        workflow("catch-par-replay")
        .parallel("both", branches=[workflow.branch("pay").task("charge", job=charge).build()],
                  catch=[Catch([CardDeclined], "refund")])
        .end("done")
        .task("refund", job=refund)
        .task("ship", job=ship, end=True)
        .build()
    )
    store = LMDBStore(tmp_path / "s.lmdb")
    try:
        inst = await crash_and_resume(graph, {"id": "C"}, after="refund", store=store)
        assert inst.status == "completed" and inst.output == "shipped"
        assert CALLS == Counter({"charge": 1, "refund": 1, "ship": 1})
        await assert_replays(store, inst.id, workflow=graph)
    finally:
        store.close()


async def test_a_catch_loop_retries_through_a_handler(durable_engine: Engine) -> None:
    """A catch may go back to an earlier state: each visit is a new checkpoint (task#0, task#1...)."""
    def sometimes(order: Any) -> str:
        CALLS["sometimes"] += 1
        if CALLS["sometimes"] < 3:
            raise ConnectionError("try again")
        return "ok"

    graph = (
        workflow("catch-loop")
        .task("call", job=sometimes, catch=[Catch(["ConnectionError"], "pause")], end=True)
        .pass_("pause", next="call")
        .build()
    )
    inst = await _run(durable_engine, graph)
    assert inst.status == "completed" and inst.output == "ok"
    steps = await durable_engine.store.get_steps(inst.id)
    assert [steps[f"call#{i}"].status for i in range(3)] == ["failed", "failed", "completed"]
    await assert_replays(durable_engine, inst.id)
    assert CALLS["sometimes"] == 3


async def test_catch_does_not_swallow_a_cancel(durable_engine: Engine) -> None:
    """Cancelling an instance inside a task with a catch-all ends it cancelled, not in the handler."""
    graph = _order_flow("catch-cancel", slow, [Catch(["*"], "refund")])
    iid = await durable_engine.workflows.start(graph, {"id": "D"})
    await trio.sleep(1)
    assert await durable_engine.workflows.cancel(iid)
    inst = await durable_engine.workflows.wait(iid)
    assert inst.status == "cancelled" and CALLS["refund"] == 0


# -- validation and diagrams -----------------------------------------------------------------


def test_catch_validation() -> None:
    """Catch needs errors (types or names) and a next; build() checks the target exists."""
    with pytest.raises(ValueError, match="at least one"):
        Catch([], "x")
    with pytest.raises(TypeError, match="exception types"):
        Catch([3], "x")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="exception types"):
        Catch([int], "x")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="name a state"):
        Catch(["*"], "")
    with pytest.raises(TypeError, match="Catch"):
        workflow("w").task("t", job=ship, catch=["ValueError"])  # type: ignore[list-item]
    with pytest.raises(GraphError, match="catch target 'nowhere'") as info:
        workflow("w").task("t", job=ship, catch=[Catch(["*"], "nowhere")]).build()
    assert info.value.workflow == "w" and info.value.step == "t"
    with pytest.raises(GraphError, match="catch target"):
        workflow("w").map("m", iterator=workflow.branch("i").task("t", job=ship).build(),
                          catch=[Catch(["*"], "gone")]).build()
    # A handler reachable only through a catch edge is reachable.
    graph = workflow("w").task("t", job=ship, catch=Catch("*", "h"), end=True).task("h", job=refund).build()
    assert graph.state("t").catch == (Catch(("*",), "h"),)  # type: ignore[union-attr]
    with pytest.raises(GraphError, match="unreachable"):
        workflow("w").task("t", job=ship, end=True).task("h", job=refund).build()


def test_catch_edges_in_the_diagrams() -> None:
    """Catch edges are dashed and labelled with their errors, in Mermaid and DOT."""
    graph = _order_flow("catch-draw", charge, [Catch([CardDeclined, "KeyError"], "refund"), Catch("*", "other")])
    mermaid = graph.to_mermaid()
    assert 'n0 -.->|"catch CardDeclined, KeyError"| n2' in mermaid
    assert 'n0 -.->|"catch *"| n4' in mermaid
    assert "n0 --> n1" in mermaid
    dot = graph.to_dot()
    assert 'n0 -> n2 [label="catch CardDeclined, KeyError", style=dashed];' in dot
    assert 'n0 -> n4 [label="catch *", style=dashed];' in dot
    parallel = (
        workflow("w")
        .parallel("p", branches=[workflow.branch("b").task("t", job=ship).build()], catch=[Catch("*", "h")])
        .end("done")
        .pass_("h", end=True)
        .build()
    )
    assert 'n0 -.->|"catch *"| n2' in parallel.to_mermaid()  # n0 p, n1 done, n2 h, then the branch's


def test_error_matching_and_pickled_causes() -> None:
    """StepFailed keeps its cause through pickle; a stand-in for an unpicklable error still matches by name."""
    wrapped = StepFailed("failed after 1 attempt(s)", workflow="w", step="t")
    wrapped.__cause__ = CardDeclined("no")
    back = pickle.loads(pickle.dumps(wrapped))
    assert isinstance(back.__cause__, CardDeclined) and str(back.__cause__) == "no"
    assert error_matches(back, [ValueError]) and error_matches(back, ["CardDeclined"])
    assert not error_matches(back, [KeyError, "ConnectionError"])
    stand_in = UnpicklableError(f"{__name__}.CardDeclined", "no")
    assert error_matches(stand_in, ["CardDeclined"]) and error_matches(stand_in, [CardDeclined])
    caught = CaughtError.of("t", stand_in)
    assert (caught.type, caught.message) == ("CardDeclined", "no")
    # Only StepFailed wrappers are looked through, not any exception's cause.
    other = RuntimeError("outer")
    other.__cause__ = KeyError("inner")
    assert not error_matches(other, [KeyError])


# -- decorator workflows: try/except ----------------------------------------------------------


@step
async def reserve(item: str) -> str:
    CALLS["reserve"] += 1
    raise CardDeclined(f"no stock for {item}")


@step
async def backorder(item: str) -> str:
    CALLS["backorder"] += 1
    return f"backordered {item}"


@step
async def notify(text: str) -> str:
    CALLS["notify"] += 1
    return f"told: {text}"


@workflow
async def reserve_or_backorder(item: str) -> str:
    try:
        got = await reserve(item)
    except ValueError as exc:  # the step's own exception type, on the first run and on replay
        got = await backorder(f"{item} ({exc})")
    return await notify(got)


async def test_try_except_in_a_decorator_workflow_replays_exactly(disk_clock: Any, tmp_path: Path) -> None:
    """A crash after the handler's step: on resume reserve re-raises from its checkpoint, no step runs again."""
    store = LMDBStore(tmp_path / "s.lmdb")
    try:
        inst = await crash_and_resume(reserve_or_backorder, "lamp", after="backorder", store=store)
        assert inst.status == "completed" and inst.output == "told: backordered lamp (no stock for lamp)"
        assert CALLS == Counter({"reserve": 1, "backorder": 1, "notify": 1})
        await assert_replays(store, inst.id, workflow=reserve_or_backorder)
    finally:
        store.close()
    graph = reserve_or_backorder.graph
    assert [s.type for s in graph.states][:2] == ["task", "choice"]  # try/except drawn as a choice
