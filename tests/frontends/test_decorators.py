"""The decorator front-end: plain-function runs, engine runs, replay from checkpoints, step identity."""

from __future__ import annotations

import inspect
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

import durable

from durable import (
    DurableError,
    Engine,
    NonDeterminismError,
    ParallelFailed,
    Retry,
    StepFunction,
    WorkflowNotFound,
    current_step,
    parallel,
    step,
    workflow,
)

RUNS: Counter[str] = Counter()
GATE: dict[str, trio.Event] = {}


def _blocked(name: str) -> bool:
    return name in GATE


async def _maybe_block(name: str) -> None:
    if name in GATE:
        GATE[name].set()
        await trio.sleep_forever()


@pytest.fixture(autouse=True)
def _reset() -> None:
    RUNS.clear()
    GATE.clear()


@step(retry=Retry(max_attempts=3, interval=2))
async def validate(order_id: str) -> dict[str, Any]:
    RUNS["validate"] += 1
    if RUNS["validate"] == 1 and order_id == "FLAKY":
        raise ConnectionError("try again")
    return {"order_id": order_id, "in_stock": order_id != "NONE"}


@step
async def charge(item: int) -> int:
    RUNS[f"charge{item}"] += 1
    await _maybe_block(f"charge{item}")
    return item * 10


@step
def ship(order_id: str) -> str:
    RUNS["ship"] += 1
    return f"ship-{order_id}"


@step(name="notify")
async def send_mail(order_id: str, *, template: str = "ok") -> str:
    RUNS["notify"] += 1
    await _maybe_block("notify")
    return f"{template}-{order_id}"


@step
async def backorder(order_id: str) -> str:
    RUNS["backorder"] += 1
    return "backordered"


@step
async def explode(msg: str) -> None:
    RUNS["explode"] += 1
    raise KeyError(msg)


@workflow
async def process_order(order_id: str, items: int = 2) -> dict[str, Any]:
    v = await validate(order_id)
    if v["in_stock"]:
        shipment, mail = await parallel(ship(order_id), send_mail(order_id, template="thanks"))
        charged = [await charge(i) for i in range(items)]
    else:
        await backorder(order_id)
        return {"order": order_id, "backorder": True}
    return {"order": order_id, "shipment": shipment, "mail": mail, "charged": charged}


@workflow(name="recover", timeout=100)
async def recovering(order_id: str) -> str:
    try:
        await explode(order_id)
    except KeyError as exc:
        handled = f"handled {exc.args[0]}"
    await send_mail(order_id)
    return handled


async def _helper(i: int) -> int:
    a = await charge(i)
    b = await charge(i + 100)
    return a + b


@workflow
async def fan_out(n: int) -> list[int]:
    return await parallel(*(_helper(i) for i in range(n)))


def test_workflow_requires_async_def() -> None:
    """@workflow on a plain function is a TypeError at decoration."""
    with pytest.raises(TypeError, match="async def"):
        workflow(lambda: None)


def test_decorators_keep_signatures() -> None:
    """inspect sees the wrapped function's signature through @step and @workflow."""
    assert list(inspect.signature(send_mail).parameters) == ["order_id", "template"]
    assert list(inspect.signature(process_order).parameters) == ["order_id", "items"]
    assert isinstance(validate, StepFunction) and validate.name == "validate" and send_mail.name == "notify"
    assert process_order.name == "process_order" and recovering.name == "recover" and recovering.timeout == 100


async def test_workflow_runs_as_a_plain_function(autojump_clock: Any) -> None:
    """Outside an engine, awaiting a workflow runs it with real retries and no store."""
    out = await process_order("FLAKY", items=3)
    assert out == {"order": "FLAKY", "shipment": "ship-FLAKY", "mail": "thanks-FLAKY", "charged": [0, 10, 20]}
    assert RUNS["validate"] == 2
    assert await ship("x") == "ship-x"
    assert ship.__wrapped__("y") == "ship-y"
    assert await recovering("o") == "handled o"


async def test_engine_run_records_steps_and_output(engine: Engine, autojump_clock: Any) -> None:
    """The engine runs a decorator workflow with positional and keyword arguments, keyed step results."""
    iid = await engine.workflows.start(process_order, "ORD-1", items=1)
    inst = await engine.workflows.wait(iid)
    assert inst.status == "completed", inst.error
    assert inst.output["charged"] == [0]
    assert inst.input == {"order_id": "ORD-1", "items": 1}
    assert {"validate", "ship", "notify", "charge", "parallel"} <= set(inst.step_results)
    keys = set(await engine.store.get_steps(iid))
    assert {"validate#0", "parallel#0", "parallel#0/0/ship#0", "parallel#0/1/notify#0", "charge#0"} <= keys
    iid2 = await engine.workflows.start("process_order", "NONE")
    assert (await engine.workflows.wait(iid2)).output == {"order": "NONE", "backorder": True}


async def test_unknown_name_and_bad_arguments(engine: Engine) -> None:
    """An unregistered name raises WorkflowNotFound; arguments not matching the signature a TypeError."""
    with pytest.raises(WorkflowNotFound):
        await engine.workflows.start("nobody", 1)
    with pytest.raises(TypeError, match="process_order"):
        await engine.workflows.start(process_order, "a", "b", "c")


async def test_failed_step_replays_same_exception(store_path: Path) -> None:
    """A step that failed is not re-run on resume; its stored exception re-raises so except paths replay."""
    GATE["notify"] = trio.Event()
    async with Engine.open(store_path) as engine:
        iid = await engine.workflows.start(recovering, "A")
        await GATE["notify"].wait()
    del GATE["notify"]
    async with Engine.open(store_path) as engine:
        engine.workflows.register(recovering)
        assert await engine.workflows.resume() == [iid]
        inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.output == "handled A"
    assert RUNS["explode"] == 1 and RUNS["notify"] == 2


async def test_resume_replays_loops_and_parallel_branches(store_path: Path) -> None:
    """Finished steps in loops and in parallel branches are not re-run on resume."""
    GATE["charge101"] = trio.Event()
    async with Engine.open(store_path) as engine:
        iid = await engine.workflows.start(fan_out, 3)
        await GATE["charge101"].wait()
        await trio.testing.wait_all_tasks_blocked()
    del GATE["charge101"]
    first = dict(RUNS)
    async with Engine.open(store_path) as engine:
        engine.workflows.register(fan_out)
        await engine.workflows.resume()
        inst = await engine.workflows.wait(iid)
    assert inst.status == "completed"
    assert inst.output == [0 + 1000, 10 + 1010, 20 + 1020]
    assert first["charge101"] == 1 and RUNS["charge101"] == 2
    for name in ("charge0", "charge2", "charge100", "charge102", "charge1"):
        assert RUNS[name] == 1, name


@workflow
async def versioned(order_id: str) -> str:
    a = await ship(order_id)
    if VERSION["v"] == 2:
        await backorder(order_id)  # a step inserted in version 2, without patched()
    elif VERSION["v"] == 3 and await durable.patched("backorder"):
        await backorder(order_id)  # the same insertion, as an intentional change
    b = await charge(1)
    c = await send_mail(order_id)
    return f"{a} {b} {c}"


VERSION = {"v": 1}


async def _start_v1_then_resume(store_path: Path, version: int) -> Any:
    VERSION["v"] = 1
    GATE["notify"] = trio.Event()
    async with Engine.open(store_path) as engine:
        iid = await engine.workflows.start(versioned, "o")
        await GATE["notify"].wait()
    del GATE["notify"]
    VERSION["v"] = version
    async with Engine.open(store_path) as engine:
        engine.workflows.register(versioned)
        await engine.workflows.resume()
        return await engine.workflows.wait(iid)


async def test_inserting_a_step_before_finished_ones_is_reported(store_path: Path) -> None:
    """A step inserted before checkpointed ones is a diverged replay (NonDeterminismError naming both),
    not a silent run of the new step in the middle of an old run."""
    inst = await _start_v1_then_resume(store_path, 2)
    assert inst.status == "failed" and inst.error_type == "NonDeterminismError"
    assert "'backorder#0'" in (inst.error or "") and "'charge#0'" in (inst.error or "")
    assert RUNS["backorder"] == 0


async def test_an_insertion_under_patched_replays_the_old_path_in_flight(store_path: Path) -> None:
    """With durable.patched(), the instance that ran the old code finishes on the old path; keys of the
    finished steps stay valid (nothing re-runs but the interrupted step)."""
    inst = await _start_v1_then_resume(store_path, 3)
    assert inst.status == "completed", inst.error
    assert (RUNS["ship"], RUNS["charge1"], RUNS["backorder"], RUNS["notify"]) == (1, 1, 0, 2)


async def test_a_new_instance_takes_the_patched_path(engine: Engine) -> None:
    VERSION["v"] = 3
    engine.workflows.register(versioned)
    GATE.pop("notify", None)
    inst = await engine.workflows.wait(await engine.workflows.start(versioned, "n"))
    assert inst.status == "completed" and RUNS["backorder"] == 1
    assert [r.step_type for r in inst.step_results.values()].count("patch") == 1


SWAP: dict[str, Any] = {}


@workflow
async def swapped() -> Any:
    first = await step("work", SWAP["fn"])
    await send_mail("x")
    return first


async def test_different_function_at_a_key_is_nondeterminism(store_path: Path) -> None:
    """A checkpoint replayed by a different step function raises NonDeterminismError naming the key."""

    async def one() -> int:
        return 1

    async def two() -> int:
        return 2

    SWAP["fn"] = one
    GATE["notify"] = trio.Event()
    async with Engine.open(store_path) as engine:
        iid = await engine.workflows.start(swapped)
        await GATE["notify"].wait()
    del GATE["notify"]
    SWAP["fn"] = two
    async with Engine.open(store_path) as engine:
        engine.workflows.register(swapped)
        await engine.workflows.resume()
        inst = await engine.workflows.wait(iid)
    assert inst.status == "failed" and inst.error_type == "NonDeterminismError"
    assert "work#0" in (inst.error or "") and "one" in (inst.error or "") and "two" in (inst.error or "")
    assert "'swapped'" in (inst.error or "") and iid in (inst.error or "")


WIDTH = {"n": 2}


@workflow
async def wide() -> Any:
    try:
        return await parallel(*(charge(i) for i in range(WIDTH["n"])))
    except NonDeterminismError:
        return "swallowed"  # the instance must fail anyway


async def test_parallel_width_change_is_nondeterminism(store_path: Path) -> None:
    """A parallel replayed with another number of branches fails the instance, even if the code catches it."""
    WIDTH["n"] = 2
    GATE["charge1"] = trio.Event()
    async with Engine.open(store_path) as engine:
        iid = await engine.workflows.start(wide)
        await GATE["charge1"].wait()
    del GATE["charge1"]
    WIDTH["n"] = 3
    async with Engine.open(store_path) as engine:
        engine.workflows.register(wide)
        await engine.workflows.resume()
        inst = await engine.workflows.wait(iid)
    assert inst.status == "failed" and inst.error_type == "NonDeterminismError"
    assert "parallel#0" in (inst.error or "")


@workflow
async def racy() -> None:
    async with trio.open_nursery() as n:
        n.start_soon(charge, 1)
        n.start_soon(charge, 2)


async def test_concurrent_steps_outside_parallel_are_an_error(engine: Engine) -> None:
    """Two steps started at once in one scope outside parallel() fail with a message naming parallel()."""
    GATE["charge1"] = trio.Event()
    GATE["charge2"] = trio.Event()
    inst = await engine.workflows.wait(await engine.workflows.start(racy))
    assert inst.status == "failed"
    assert "parallel()" in (inst.error or "")


@workflow
async def keyed() -> list[str]:
    async def who() -> str:
        info = current_step()
        assert info is not None
        return info.idempotency_key

    return [await step(who), await step("named", who)]


async def test_step_function_forms_and_idempotency_key(engine: Engine) -> None:
    """await step(fn) and step("name", fn) run checkpointed steps with stable idempotency keys."""
    iid = await engine.workflows.start(keyed)
    inst = await engine.workflows.wait(iid)
    assert inst.output == [f"{iid}/who#0", f"{iid}/named#0"]


@workflow
async def lock_arg() -> None:
    try:
        await ship(threading.Lock())  # type: ignore[arg-type]
    except Exception:
        pass


async def test_unpicklable_argument_fails_instance(engine: Engine) -> None:
    """An unpicklable step argument fails the instance with SerializationError naming the step, even if caught."""
    iid = await engine.workflows.start(lock_arg)
    inst = await engine.workflows.wait(iid)
    assert inst.status == "failed" and inst.error_type == "SerializationError"
    assert "ship#0" in (inst.error or "") and "'lock_arg'" in (inst.error or "") and iid in (inst.error or "")
    assert RUNS["ship"] == 0


@workflow
async def all_fail() -> Any:
    return await parallel(explode("a"), charge(3), explode("b"), on_error="wait-all")


async def test_parallel_wait_all_and_plain_parallel(durable_engine: Engine) -> None:
    """wait-all gathers every branch's error, in and out of an engine; results keep argument order."""
    with pytest.raises(ParallelFailed) as info:
        await all_fail()
    assert set(info.value.errors) == {"0", "2"}
    assert RUNS["charge3"] == 1
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(all_fail))
    assert inst.status == "failed" and inst.error_type == "ParallelFailed"
    assert await parallel(charge(1), charge(2)) == [10, 20]
    with pytest.raises(TypeError, match="argument 1"):
        await parallel(charge(1), 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await parallel(charge(1), on_error="sometimes")


async def test_progress_uses_the_compiled_graph(engine: Engine) -> None:
    """Progress counts steps against the compiled graph's total and ends at 100."""
    seen: list[int] = []
    engine.events.on("workflow.progress", lambda e: seen.append(e.progress or 0))
    await engine.workflows.wait(await engine.workflows.start(process_order, "o", items=2))
    assert seen == sorted(seen) and seen[-1] == 100 and len(seen) > 3


async def test_decorator_cancel_and_timeout(engine: Engine, autojump_clock: Any) -> None:
    """Cancel and workflow timeout work for decorator workflows as for builder ones."""
    GATE["notify"] = trio.Event()
    iid = await engine.workflows.start(recovering, "t")
    inst = await engine.workflows.wait(iid)
    assert inst.status == "timed_out"
    GATE["notify"] = trio.Event()
    iid = await engine.workflows.start(process_order, "c")
    await GATE["notify"].wait()
    assert await engine.workflows.cancel(iid)
    assert (await engine.workflows.get_instance(iid)).status == "cancelled"  # type: ignore[union-attr]


def test_step_misuse_is_a_clear_error() -> None:
    """step() with bad arguments raises TypeError/ValueError saying what it takes."""
    with pytest.raises(TypeError):
        step(42)
    with pytest.raises(TypeError):
        step("name")
    with pytest.raises(ValueError):
        step(timeout=-1)(lambda: None)
    with pytest.raises(TypeError, match="bogus"):
        step(bogus=1)


def test_graph_is_recorded_when_source_is_missing() -> None:
    """A workflow built at run time has no source: its graph says 'recorded' and fills in as it runs."""
    from durable.testing import run

    namespace: dict[str, Any] = {"ship": ship, "backorder": backorder, "workflow": workflow}
    exec(
        "@workflow\nasync def built(order_id):\n    await ship(order_id)\n    return await backorder(order_id)\n",
        namespace,
    )
    built = namespace["built"]
    assert built.graph.source == "recorded" and built.graph.states == ()
    inst = run(built, "o")
    assert inst.status == "completed"
    assert built.graph.source == "recorded"
    assert [s.name for s in built.graph.states] == ["ship", "backorder"]
    assert built.graph.to_mermaid().startswith("flowchart TD")


def test_parallel_given_a_constant_fails_at_decoration() -> None:
    """parallel() given a non-awaitable is a GraphError naming the file and line, at decoration."""
    from durable import GraphError

    with pytest.raises(GraphError, match=r"test_decorators\.py:\d+"):

        @workflow
        async def bad() -> None:
            await parallel(ship("x"), 42)  # type: ignore[arg-type]


SIDE: list[str] = []


@step
async def refund(reason: str) -> None:
    SIDE.append(reason)


@workflow
async def diverges() -> None:
    try:
        await step("work", SWAP["fn"])
    except Exception as exc:
        await refund(type(exc).__name__)  # must not run once replay has diverged
    await send_mail("x")


async def test_no_step_runs_after_divergence_even_if_caught(store_path: Path) -> None:
    """After a NonDeterminismError the run ends at once: code that catches it cannot run more steps."""

    async def one() -> int:
        return 1

    async def two() -> int:
        return 2

    SIDE.clear()
    SWAP["fn"] = one
    GATE["notify"] = trio.Event()
    async with Engine.open(store_path) as engine:
        iid = await engine.workflows.start(diverges)
        await GATE["notify"].wait()
    SWAP["fn"] = two
    async with Engine.open(store_path) as engine:
        engine.workflows.register(diverges)
        await engine.workflows.resume()
        inst = await engine.workflows.wait(iid)
    assert inst.status == "failed" and inst.error_type == "NonDeterminismError"
    assert SIDE == []


FLAKES: Counter[str] = Counter()


@step
async def flaky_once() -> str:
    FLAKES["n"] += 1
    if FLAKES["n"] == 1:
        raise ConnectionError("blip")
    return "ok"


@workflow(default_retry=Retry(max_attempts=2, interval=5))
async def uses_default() -> str:
    return await flaky_once()


async def test_plain_call_honours_default_retry(autojump_clock: Any) -> None:
    """Awaited as a plain function, a workflow's steps still inherit its default_retry."""
    FLAKES.clear()
    assert await uses_default() == "ok"
    assert FLAKES["n"] == 2


@step
async def my_key(tag: str) -> str:
    info = current_step()
    assert info is not None
    await trio.sleep(0)  # the other branches run meanwhile: each still sees its own step
    again = current_step()
    assert again == info
    return f"{tag}={info.key}@{info.attempt}"


@workflow
async def branch_keys() -> list[Any]:
    before = current_step()
    out = await parallel(my_key("a"), my_key("b"), my_key("c"))
    between = current_step()
    last = await my_key("d")
    return [before, *out, between, last, current_step()]


async def test_current_step_in_parallel_branches_and_between_steps(engine: Engine) -> None:
    """Each branch sees its own step's key; the workflow body between steps sees no step."""
    inst = await engine.workflows.wait(await engine.workflows.start(branch_keys))
    assert inst.status == "completed", inst.error
    assert inst.output == [
        None, "a=parallel#0/0/my_key#0@1", "b=parallel#0/1/my_key#0@1", "c=parallel#0/2/my_key#0@1",
        None, "d=my_key#0@1", None,
    ]


FLAKY_CALLS: Counter[str] = Counter()


@step
async def fails_first_attempt() -> str:
    FLAKY_CALLS["n"] += 1
    info = current_step()
    if info is not None and info.attempt == 1:
        raise ValueError("the first attempt of each run fails")
    return "ok"


@workflow
async def calls_flaky() -> str:
    return await fails_first_attempt()


async def test_a_step_policy_set_after_first_use_applies(engine: Engine, autojump_clock: Any) -> None:
    """A @step's retry (a plain attribute) set after it ran once is the one the next run uses."""
    FLAKY_CALLS.clear()
    first = await engine.workflows.wait(await engine.workflows.start(calls_flaky))
    assert first.status == "failed" and FLAKY_CALLS["n"] == 1
    saved = fails_first_attempt.retry
    fails_first_attempt.retry = Retry(max_attempts=2, interval=0.01)
    try:
        second = await engine.workflows.wait(await engine.workflows.start(calls_flaky))
    finally:
        fails_first_attempt.retry = saved
    assert second.status == "completed" and second.output == "ok" and FLAKY_CALLS["n"] == 3


async def test_a_step_called_inside_replace_step_runs_the_fake(engine: Engine) -> None:
    """The function is taken when the step is called, as with a plain coroutine function."""
    from durable.testing import replace_step

    async def fake() -> str:
        return "fake"

    @workflow
    async def made_inside() -> str:
        with replace_step(fails_first_attempt, fake):
            pending = fails_first_attempt()
        return await pending  # awaited after the block: still the fake's call

    inst = await engine.workflows.wait(await engine.workflows.start(made_inside))
    assert inst.status == "completed" and inst.output == "fake"


async def test_current_step_is_none_in_an_event_listener(engine: Engine) -> None:
    """A step's events are emitted outside its attempts: a listener sees no running step."""
    seen: list[Any] = []
    off = engine.events.on("*", lambda event: seen.append((event.name, current_step())))
    try:
        inst = await engine.workflows.wait(await engine.workflows.start(branch_keys))
    finally:
        off()
    assert inst.status == "completed"
    assert seen and all(info is None for _, info in seen), [s for s in seen if s[1] is not None]
