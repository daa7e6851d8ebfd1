"""Compiling a decorator workflow's source into a graph (durable/_frontends/compiler/).

The workflows below are never run: they are compiled. Stub steps are plain
``async def`` marked with ``_is_step = True``; other ``async def`` of this module
are helper coroutines, whose steps the compiler inlines.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import trio

import durable
from durable import (
    ChoiceState,
    Graph,
    GraphError,
    ParallelState,
    PassState,
    TaskState,
    parallel,
    sleep,
    step,
    wait_for_signal,
    workflow,
)
from durable._frontends.compiler.walk import compile_workflow
from durable._frontends.decorators import is_step as durable_is_step
from durable._graph.states import ChildState, MapState, SignalState, WaitState
from durable._graph.validate import validate_graph

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def is_step(obj: object) -> bool:
    """What the tests call a step: anything marked ``_is_step``."""
    return bool(getattr(obj, "_is_step", False))


def stub(fn: F) -> F:
    """Mark ``fn`` as a step."""
    fn._is_step = True  # type: ignore[attr-defined]
    return fn


@stub
async def validate(*args: Any) -> Any:
    return {}


@stub
async def charge(*args: Any) -> Any:
    return None


@stub
async def ship(*args: Any) -> Any:
    return None


@stub
async def notify(*args: Any) -> Any:
    return None


@stub
async def refund(*args: Any) -> Any:
    return None


@stub
async def backorder(*args: Any) -> Any:
    return None


class PaymentError(Exception):
    """Raised by a (pretend) payment step."""


def shape(graph: Graph) -> list[tuple[Any, ...]]:
    """The graph as plain data: (name, type, next or "END") per state; choices list
    (label, target) rules and their default; parallels map branch name to branch shape."""
    out: list[tuple[Any, ...]] = []
    for s in graph.states:
        if isinstance(s, ChoiceState):
            out.append((s.name, "choice", [(w.label, w.next) for w in s.choices], s.default))
        elif isinstance(s, ParallelState):
            out.append((s.name, "parallel", {b.name: shape(b) for b in s.branches}, "END" if s.end else s.next))
        else:
            out.append((s.name, s.type, "END" if s.end else s.next))
    return out


def compiled(fn: Callable[..., Any], steps: Callable[[object], bool] | None = is_step) -> Graph:
    """Compile ``fn`` and check what every compiled graph must satisfy."""
    graph = compile_workflow(fn, name=fn.__name__, is_step=steps)
    assert graph.source == "source" and graph.name == fn.__name__
    validate_graph(graph)
    assert graph.to_mermaid().startswith("flowchart TD\n")
    assert graph.to_dot().startswith("digraph")
    for s in graph.walk():
        if isinstance(s, ChoiceState):
            assert all(w.condition is None for w in s.choices)  # the label holds the test
        if isinstance(s, TaskState):
            assert s.job == (s.label or s.name)
    return graph


# -- workflows ---------------------------------------------------------------------


async def wf_sequence(order_id: str) -> dict[str, Any]:
    v = await validate(order_id)
    total = v["total"] * 2  # plain code between steps: not in the graph
    await charge(order_id, total)
    await ship(order_id)
    return {"done": True}


async def wf_if_else(order_id: str) -> dict[str, Any]:
    v = await validate(order_id)
    if v["in_stock"]:
        shipment, mail = await parallel(ship(order_id), notify(order_id))
    else:
        await backorder(order_id)
    return {"order": order_id, "done": True}


async def wf_if(order_id: str) -> None:
    if order_id.startswith("vip"):
        await notify(order_id)
    await ship(order_id)


async def wf_elif(tier: str) -> None:
    if tier == "gold":
        await ship(tier)
    elif tier == "silver":
        await notify(tier)
    else:
        await backorder(tier)
    await charge(tier)


async def wf_nested_if(x: int) -> None:
    if x > 0:
        if x > 10:
            await ship(x)
        await notify(x)
    await charge(x)


async def wf_match(tier: str) -> None:
    match tier:
        case "gold":
            await ship(tier)
        case "silver" | "bronze":
            await notify(tier)
        case _:
            await backorder(tier)
    await charge(tier)


async def wf_for(items: list[str]) -> None:
    for item in items:
        await charge(item)
    await notify(items)


async def wf_while(x: int) -> None:
    while True:
        ok = await charge(x)
        if ok:
            break
        await trio.sleep(1)  # not a step
    await notify(x)


async def wf_try(x: int) -> None:
    try:
        await charge(x)
    except PaymentError:
        await refund(x)
    await ship(x)


async def wf_try_full(x: int) -> None:
    try:
        await charge(x)
    except PaymentError:
        await refund(x)
        raise
    except (KeyError, TypeError):
        pass
    else:
        await ship(x)
    finally:
        await notify(x)


async def wf_parallel(x: int, y: int) -> None:
    await parallel(ship(x), ship(y), ship(x), on_error="wait-all")


async def pack_and_ship(x: int) -> None:
    """A helper coroutine: two steps in sequence."""
    await charge(x)
    await ship(x)


async def bill(x: int) -> None:
    """A helper coroutine with a branch and an early return."""
    await charge(x)
    if not x:
        return
    await notify(x)


async def wf_parallel_helpers(x: int) -> None:
    await parallel(pack_and_ship(x), bill(x))


async def wf_fan_out(items: list[int]) -> None:
    await parallel(*(charge(x) for x in items))


async def wf_early_return(x: int) -> Any:
    v = await validate(x)
    if not v:
        return None
    await charge(x)
    return v


async def wf_helper(x: int) -> None:
    await validate(x)
    await bill(x)
    await ship(x)


async def wf_duplicates(x: int, client: Any) -> None:
    await validate(x)
    await validate(x)
    await client.fetch(x)
    await step(validate, x)
    await step("charge-card", charge, x)


async def wf_parallel_constant(x: int) -> None:
    await parallel(charge(x),
                   5)  # type: ignore[arg-type]


async def wf_parallel_list(x: int) -> None:
    await parallel([charge(x), ship(x)])  # type: ignore[arg-type]


async def wf_no_steps(x: int) -> int:
    y = x + 1
    for i in range(3):
        y += i
    return y


async def wf_ignored(x: int) -> None:
    await trio.sleep(1)
    for _ in range(3):  # a loop without steps is skipped
        await trio.sleep(0)
    if x:  # so is an if without steps in any branch
        x += 1

    async def inner() -> None:  # nested definitions are not the workflow's steps
        await refund(x)

    await charge(x)


async def ping(x: int) -> None:
    await charge(x)
    await pong(x)


async def pong(x: int) -> None:
    await ship(x)
    await ping(x)


async def wf_deep(x: int) -> None:
    await level1(x)


async def level1(x: int) -> None:
    await level2(x)


async def level2(x: int) -> None:
    await level3(x)


async def level3(x: int) -> None:
    await level4(x)


async def level4(x: int) -> None:
    await level5(x)


async def level5(x: int) -> None:
    await level6(x)


async def level6(x: int) -> None:
    await charge(x)


@step
async def create_shipment(order_id: str) -> str:
    return order_id


@step
async def send_confirmation(order_id: str) -> str:
    return order_id


@step
async def create_backorder(order_id: str) -> str:
    return order_id


@step(name="validate-order")
async def validate_order(order_id: str) -> dict[str, Any]:
    return {"in_stock": True}


@workflow
async def process_order(order_id: str) -> dict[str, Any]:
    v = await validate_order(order_id)
    if v["in_stock"]:
        shipment, mail = await parallel(create_shipment(order_id), send_confirmation(order_id))
    else:
        await create_backorder(order_id)
    return {"order": order_id, "done": True}


@workflow
async def recursive(x: int) -> None:
    await charge(x)
    if x:
        await recursive(x - 1)


@workflow
async def kid_workflow(x: int) -> int:
    return await charge(x)  # type: ignore[no-any-return]


@workflow(name="named-kid")
async def named_kid(x: int) -> int:
    return x


@workflow
async def with_primitives(order_id: str) -> Any:
    await create_shipment(order_id)
    await durable.sleep(24 * 3600)
    await sleep(delay_for(order_id))
    await durable.sleep_until(order_deadline)
    approved = await durable.wait_for_signal("approve", timeout=3600, default=False)
    await wait_for_signal("second-look")
    out = await kid_workflow(order_id)
    await named_kid(out)
    return approved


@workflow
async def polls(order_id: str) -> None:
    while not await create_shipment(order_id):
        await durable.sleep(60)
    await parallel(kid_workflow(1), durable.wait_for_signal("go"))
    await durable.map(kid_workflow, [1, 2], concurrency=2)


@workflow
async def calls_a_later_workflow(x: int) -> int:
    return await defined_later(x)  # type: ignore[no-any-return]


@workflow
async def defined_later(x: int) -> int:
    return x


def delay_for(order_id: str) -> float:
    return 1.0


order_deadline = None


# -- tests -------------------------------------------------------------------------


def test_sequence() -> None:
    """Steps in order, plain code skipped, the last step ends the workflow."""
    g = compiled(wf_sequence)
    assert shape(g) == [("validate", "task", "charge"), ("charge", "task", "ship"), ("ship", "task", "END")]
    assert g.start == "validate"
    assert g.total_steps == 3
    assert all(isinstance(s, TaskState) and s.label is None for s in g.states)


def test_if_else() -> None:
    """An if/else is a choice: the rule enters the true branch, the default the else branch."""
    g = compiled(wf_if_else)
    assert shape(g) == [
        ("validate", "task", 'if v["in_stock"]'),
        ('if v["in_stock"]', "choice", [('v["in_stock"]', "parallel")], "backorder"),
        ("parallel", "parallel", {
            "ship(order_id)": [("ship", "task", "END")],
            "notify(order_id)": [("notify", "task", "END")],
        }, "END"),
        ("backorder", "task", "END"),
    ]
    assert g.total_steps == 6  # 4 states + a task in each of the 2 branches


def test_if_without_else() -> None:
    """Without an else, the default goes to what follows the if, as does the true branch."""
    assert shape(compiled(wf_if)) == [
        ('if order_id.startswith("vip")', "choice", [('order_id.startswith("vip")', "notify")], "ship"),
        ("notify", "task", "ship"),
        ("ship", "task", "END"),
    ]


def test_elif_chain() -> None:
    """elif is a second choice, the first one's default."""
    assert shape(compiled(wf_elif)) == [
        ('if tier == "gold"', "choice", [('tier == "gold"', "ship")], 'if tier == "silver"'),
        ("ship", "task", "charge"),
        ('if tier == "silver"', "choice", [('tier == "silver"', "notify")], "backorder"),
        ("notify", "task", "charge"),
        ("backorder", "task", "charge"),
        ("charge", "task", "END"),
    ]


def test_nested_if() -> None:
    """An inner if's paths rejoin the outer branch; both rejoin after the outer if."""
    assert shape(compiled(wf_nested_if)) == [
        ("if x > 0", "choice", [("x > 0", "if x > 10")], "charge"),
        ("if x > 10", "choice", [("x > 10", "ship")], "notify"),
        ("ship", "task", "notify"),
        ("notify", "task", "charge"),
        ("charge", "task", "END"),
    ]


def test_match_with_wildcard() -> None:
    """A rule per case, labelled with its pattern; ``case _`` is the default."""
    assert shape(compiled(wf_match)) == [
        ("match tier", "choice", [('case "gold"', "ship"), ('case "silver" | "bronze"', "notify")], "backorder"),
        ("ship", "task", "charge"),
        ("notify", "task", "charge"),
        ("backorder", "task", "charge"),
        ("charge", "task", "END"),
    ]


def test_for_loop() -> None:
    """A loop is a choice: "next item" enters the body, which comes back; the default leaves."""
    g = compiled(wf_for)
    assert shape(g) == [
        ("for item in items", "choice", [("next item", "charge")], "notify"),
        ("charge", "task", "for item in items"),
        ("notify", "task", "END"),
    ]
    assert g.total_steps == 3


def test_while_loop_with_break() -> None:
    """A while loop's rule is "loop"; break leaves it; trio.sleep is not a step."""
    assert shape(compiled(wf_while)) == [
        ("while True", "choice", [("loop", "charge")], "notify"),
        ("charge", "task", "if ok"),
        ("if ok", "choice", [("ok", "notify")], "while True"),
        ("notify", "task", "END"),
    ]


def test_try_except() -> None:
    """The body, then a choice ``except T``: "raised" to the handler, default onwards."""
    assert shape(compiled(wf_try)) == [
        ("charge", "task", "except PaymentError"),
        ("except PaymentError", "choice", [("raised", "refund")], "ship"),
        ("refund", "task", "ship"),
        ("ship", "task", "END"),
    ]


def test_try_with_handlers_else_finally() -> None:
    """Several handlers each get a "raised T" rule; else is the default; finally follows; raise ends."""
    assert shape(compiled(wf_try_full)) == [
        ("charge", "task", "except PaymentError, (KeyError, TypeError)"),
        ("except PaymentError, (KeyError, TypeError)", "choice",
         [("raised PaymentError", "refund"), ("raised (KeyError, TypeError)", "notify")], "ship"),
        ("refund", "task", "END"),  # re-raised: the workflow fails there
        ("ship", "task", "notify"),
        ("notify", "task", "END"),
    ]


def test_parallel_of_steps() -> None:
    """A branch per argument, named by its source text (made unique); on_error is ignored."""
    g = compiled(wf_parallel)
    assert shape(g) == [("parallel", "parallel", {
        "ship(x)": [("ship", "task", "END")],
        "ship(y)": [("ship", "task", "END")],
        "ship(x)#2": [("ship", "task", "END")],
    }, "END")]
    state = g.state("parallel")
    assert isinstance(state, ParallelState) and state.on_error == "fail-fast" and state.label is None
    assert all(b.source == "source" for b in state.branches)


def test_parallel_of_helper_coroutines() -> None:
    """A helper coroutine argument becomes a multi-step branch, its own early return included."""
    assert shape(compiled(wf_parallel_helpers)) == [("parallel", "parallel", {
        "pack_and_ship(x)": [("charge", "task", "ship"), ("ship", "task", "END")],
        "bill(x)": [
            ("charge", "task", "if not x"),
            ("if not x", "choice", [("not x", "return")], "notify"),
            ("notify", "task", "END"),
            ("return", "pass", "END"),
        ],
    }, "END")]


def test_parallel_fan_out() -> None:
    """parallel(*(f(x) for x in xs)) is one branch ``for x in xs``, labelled as a fan-out."""
    g = compiled(wf_fan_out)
    assert shape(g) == [("parallel", "parallel", {"for x in items": [("charge", "task", "END")]}, "END")]
    assert g.states[0].label == "parallel: fan-out, one branch per item"
    assert "fan-out" in g.to_mermaid()


def test_early_return_inside_if() -> None:
    """A return with no step before it on its path is a pass state ``return``; the other path goes on."""
    g = compiled(wf_early_return)
    assert shape(g) == [
        ("validate", "task", "if not v"),
        ("if not v", "choice", [("not v", "return")], "charge"),
        ("return", "pass", "END"),
        ("charge", "task", "END"),
    ]
    assert isinstance(g.state("return"), PassState)


def test_step_inside_a_helper_coroutine() -> None:
    """A helper awaited directly is inlined; its return continues in the caller."""
    assert shape(compiled(wf_helper)) == [
        ("validate", "task", "charge"),
        ("charge", "task", "if not x"),
        ("if not x", "choice", [("not x", "ship")], "notify"),
        ("notify", "task", "ship"),
        ("ship", "task", "END"),
    ]


def test_without_is_step_helpers_are_tasks() -> None:
    """Without ``is_step`` nothing is resolved: every awaited call is a task."""
    assert shape(compiled(wf_helper, steps=None)) == [
        ("validate", "task", "bill"), ("bill", "task", "ship"), ("ship", "task", "END"),
    ]


def test_duplicate_call_sites_are_uniquified() -> None:
    """validate, validate#2 ... labelled ``validate``; step(fn)/step("label", fn) name after fn/label."""
    g = compiled(wf_duplicates)
    assert shape(g) == [
        ("validate", "task", "validate#2"),
        ("validate#2", "task", "client.fetch"),
        ("client.fetch", "task", "validate#3"),
        ("validate#3", "task", "charge-card"),
        ("charge-card", "task", "END"),
    ]
    assert [(s.label, getattr(s, "job", None)) for s in g.states] == [
        (None, "validate"), ("validate", "validate"), (None, "client.fetch"), ("validate", "validate"),
        (None, "charge-card"),
    ]
    assert "validate#2" not in g.to_mermaid()  # the diagram shows the plain call text


def test_no_source_is_recorded() -> None:
    """A function built with exec (or a lambda) has no source: an empty recorded graph."""
    namespace: dict[str, Any] = {}
    exec("async def made(x):\n    await charge(x)\n", {"charge": charge}, namespace)  # noqa: S102
    g = compile_workflow(namespace["made"], name="made", is_step=is_step)
    assert g == Graph("made", (), source="recorded")
    assert compile_workflow(lambda x: x, name="anon").source == "recorded"


@pytest.mark.parametrize(("fn", "marker"), [(wf_parallel_constant, "5)"), (wf_parallel_list, "parallel([")])
def test_parallel_of_non_awaitable_names_file_and_line(fn: Callable[..., Any], marker: str) -> None:
    """parallel() given a constant or a list is a GraphError at decoration naming file:line."""
    lines, first = inspect.getsourcelines(fn)
    line = first + next(i for i, text in enumerate(lines) if marker in text)
    with pytest.raises(GraphError, match="parallel\\(\\) takes awaitables") as info:
        compile_workflow(fn, name=fn.__name__, is_step=is_step)
    assert f"{inspect.getsourcefile(fn)}:{line}" in str(info.value)
    assert info.value.workflow == fn.__name__


def test_workflow_without_steps() -> None:
    """No awaits at all: a single pass state ``return`` that ends."""
    g = compiled(wf_no_steps)
    assert shape(g) == [("return", "pass", "END")]
    assert g.total_steps == 1


def test_trio_stepless_code_and_nested_defs_are_ignored() -> None:
    """trio awaits, loops and ifs without steps, and nested defs leave no state."""
    assert shape(compiled(wf_ignored)) == [("charge", "task", "END")]


def test_helper_cycles_and_depth_are_bounded() -> None:
    """A helper already being inlined, or one 6 levels deep, is drawn as a task."""
    assert shape(compiled(ping)) == [("charge", "task", "ship"), ("ship", "task", "ping"), ("ping", "task", "END")]
    assert shape(compiled(wf_deep)) == [("level6", "task", "END")]  # level1..level5 inlined
    assert shape(compiled(level1)) == [("charge", "task", "END")]  # level2..level6 inlined
    assert shape(compiled(recursive.__wrapped__)) == [  # a @workflow calling itself: a child workflow
        ("charge", "task", "if x"),
        ("if x", "choice", [("x", "workflow:recursive")], "return"),
        ("workflow:recursive", "workflow", "END"),
        ("return", "pass", "END"),
    ]


def test_decorated_workflow_uses_the_compiler() -> None:
    """@workflow's graph is the compiled one; a @step(name=...) is drawn under its declared name."""
    g = process_order.graph
    assert g.source == "source"
    assert shape(g) == [
        ("validate-order", "task", 'if v["in_stock"]'),
        ('if v["in_stock"]', "choice", [('v["in_stock"]', "parallel")], "create_backorder"),
        ("parallel", "parallel", {
            "create_shipment(order_id)": [("create_shipment", "task", "END")],
            "send_confirmation(order_id)": [("send_confirmation", "task", "END")],
        }, "END"),
        ("create_backorder", "task", "END"),
    ]
    assert g.total_steps == 6


def test_invalid_graph_falls_back_to_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """If an approximation made the graph invalid, its steps are drawn one after the other."""
    def failing(graph: Graph, *, workflow: str | None = None) -> None:
        raise GraphError("no end is reachable: every path loops forever", workflow=graph.name)

    monkeypatch.setattr("durable._frontends.compiler.graph.validate_graph", failing)
    g = compile_workflow(wf_while, name="wf_while", is_step=is_step)
    assert g.source == "source"
    assert shape(g) == [("charge", "task", "notify"), ("notify", "task", "END")]
    monkeypatch.undo()
    validate_graph(g)


# -- durable primitives: sleep, signals, child workflows ---------------------------


def test_sleeps_signals_and_child_workflows_are_their_own_states() -> None:
    """durable.sleep / sleep_until / wait_for_signal and an awaited @workflow: wait, signal and child states,
    named as the runtime names their steps (so a status marks them); a @workflow is never inlined."""
    g = with_primitives.graph
    validate_graph(g)
    assert shape(g) == [
        ("create_shipment", "task", "sleep"),
        ("sleep", "wait", "sleep#2"),
        ("sleep#2", "wait", "sleep#3"),
        ("sleep#3", "wait", "signal:approve"),
        ("signal:approve", "signal", "signal:second-look"),
        ("signal:second-look", "signal", "workflow:kid_workflow"),
        ("workflow:kid_workflow", "workflow", "workflow:named-kid"),
        ("workflow:named-kid", "workflow", "END"),
    ]
    day, computed, until = (g.state(n) for n in ("sleep", "sleep#2", "sleep#3"))
    assert isinstance(day, WaitState) and day.seconds == 86_400 and day.label == "sleep 1d"
    assert isinstance(computed, WaitState) and computed.seconds is None
    assert computed.label == "sleep delay_for(order_id)"
    assert isinstance(until, WaitState) and until.label == "sleep until order_deadline"
    approve, second = g.state("signal:approve"), g.state("signal:second-look")
    assert isinstance(approve, SignalState) and (approve.signal, approve.timeout, approve.has_default) == (
        "approve", 3600, True)
    assert isinstance(second, SignalState) and (second.signal, second.timeout, second.has_default) == (
        "second-look", None, False)
    kid, named = g.state("workflow:kid_workflow"), g.state("workflow:named-kid")
    assert isinstance(kid, ChildState) and kid.workflow == "kid_workflow" and kid.definition is kid_workflow
    assert isinstance(named, ChildState) and named.workflow == "named-kid"
    assert with_primitives.total_steps == 8  # each is a step of the run: progress counts them
    mermaid = g.to_mermaid()
    for line in ('{{"⏳ sleep 1d"}}', '{{"⏳ sleep until order_deadline"}}', '>"✉ signal approve timeout 1h"]',
                 '>"✉ signal second-look"]', '[["child: kid_workflow"]]', '[["child: named-kid"]]'):
        assert line in mermaid, line


def test_primitives_in_loops_branches_and_maps() -> None:
    """A loop with only a sleep is drawn; a branch or a map iterator may be a child or a signal."""
    g = polls.graph
    assert shape(g) == [
        ("create_shipment", "task", "while not await create_shipment(order_id)"),
        ("while not await create_shipment(order_id)", "choice", [("loop", "sleep")], "parallel"),
        ("sleep", "wait", "create_shipment"),
        ("parallel", "parallel", {
            "kid_workflow(1)": [("workflow:kid_workflow", "workflow", "END")],
            'durable.wait_for_signal("go")': [("signal:go", "signal", "END")],
        }, "map"),
        ("map", "map", "END"),
    ]
    mapped = g.state("map")
    assert isinstance(mapped, MapState) and shape(mapped.iterator) == [
        ("workflow:kid_workflow", "workflow", "END")]
    assert polls.total_steps == 0  # it loops: how many steps is known only as it runs (progress says so)


def test_a_workflow_defined_after_its_caller_is_drawn_as_a_task() -> None:
    """Known limitation: the caller is compiled when decorated, before the callee exists."""
    assert shape(calls_a_later_workflow.graph) == [("defined_later", "task", "END")]
    assert shape(compiled(calls_a_later_workflow.__wrapped__)) == [
        ("workflow:defined_later", "workflow", "END")]  # compiled again now: a child


def test_a_loop_of_sleeps_is_drawn() -> None:
    """A sleep is a step: a loop whose body only sleeps is drawn as a loop (loops without steps are not)."""

    @workflow
    async def ticker() -> None:
        for _ in range(3):
            await durable.sleep(1)

    assert [s.type for s in ticker.graph.states] == ["choice", "wait", "pass"]


def test_the_linear_fallback_keeps_waits_signals_and_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """If an approximation made the graph invalid, the fallback draws every step, primitives included."""
    def failing(graph: Graph, *, workflow: str | None = None) -> None:
        raise GraphError("no end is reachable: every path loops forever", workflow=graph.name)

    monkeypatch.setattr("durable._frontends.compiler.graph.validate_graph", failing)
    g = compile_workflow(with_primitives.__wrapped__, name="with_primitives", is_step=durable_is_step)
    assert [s.type for s in g.states] == ["task", "wait", "wait", "wait", "signal", "signal", "workflow", "workflow"]
    monkeypatch.undo()
    validate_graph(g)
