"""The pytest plugin (fixtures registered through the ``pytest11`` entry point) and assert_replays."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from durable import Engine, Event, LMDBStore, MemoryStore, Retry, When, parallel, step, workflow
from durable.testing import assert_replays, crash_and_resume, run_on_engine
from durable.testing.plugin import LMDB_AUTOJUMP_THRESHOLD

pytest_plugins = ["pytester"]

CALLS: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    CALLS.clear()


@step(retry=Retry(max_attempts=3, interval=600, max_interval=600))
async def flaky(x: int) -> int:
    CALLS["flaky"] += 1
    if CALLS["flaky"] < 3:
        raise ConnectionError("down")
    return x * 2


@step
def double(x: int) -> int:  # a sync step: runs in a worker thread
    CALLS["double"] += 1
    return x * 2


@step
async def bump(x: int) -> int:
    CALLS["bump"] += 1
    return x + 1


@workflow
async def pipeline(x: int) -> list[int]:
    a = await flaky(x)
    b, c = await parallel(double(a), bump(a))
    return [a, b, c]


# -- the fixtures ------------------------------------------------------------------


async def test_durable_engine_runs_under_an_autojump_clock(durable_engine: Engine) -> None:
    """durable_engine is a MemoryStore engine whose retry backoff takes virtual time only."""
    assert isinstance(durable_engine.store, MemoryStore)
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold == 0
    start = trio.current_time()
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(pipeline, 5))
    assert inst.status == "completed" and inst.output == [10, 20, 11]
    assert trio.current_time() - start == 1200  # two waits of 600 virtual seconds


async def test_durable_clock_is_the_clock_of_the_run(durable_engine: Engine, durable_clock: Any) -> None:
    """The test's trio run uses durable_clock, the one object the test can also reach."""
    assert trio.lowlevel.current_clock() is durable_clock
    await trio.sleep(3600)
    assert trio.current_time() == 3600


async def test_durable_clock_reuses_pytest_trios_autojump_clock(
    durable_engine: Engine, autojump_clock: Any, request: pytest.FixtureRequest
) -> None:
    """A test asking for pytest-trio's autojump_clock runs under it, and durable_clock is that same clock."""
    assert request.getfixturevalue("durable_clock") is autojump_clock is trio.lowlevel.current_clock()


@pytest.fixture
def own_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0, rate=0)


async def test_a_clock_fixture_of_the_tests_own_wins(durable_engine: Engine, own_clock: Any) -> None:
    """A test that asks for a clock fixture of its own runs under that clock, not durable_clock."""
    assert trio.lowlevel.current_clock() is own_clock


async def test_durable_events_collects_the_engines_events(durable_engine: Engine, durable_events: list[Event]) -> None:
    """durable_events holds every event of the fixture engine, in order."""
    iid = await durable_engine.workflows.start(pipeline, 1)
    await durable_engine.workflows.wait(iid)
    names = [e.name for e in durable_events]
    assert names[0] == "workflow.started" and names[-1] == "workflow.completed"
    assert names.count("workflow.step.retry") == 2
    assert all(e.instance_id == iid for e in durable_events)


async def test_durable_lmdb_engine_stores_in_tmp_path(
    durable_lmdb_engine: Engine, durable_events: list[Event], durable_clock: Any, tmp_path: Path
) -> None:
    """durable_lmdb_engine runs over an LMDB store in tmp_path, under a 0.05 s autojump threshold."""
    assert isinstance(durable_lmdb_engine.store, LMDBStore)
    assert durable_lmdb_engine.store.path is not None and Path(durable_lmdb_engine.store.path).parent == tmp_path
    assert durable_clock.autojump_threshold == LMDB_AUTOJUMP_THRESHOLD
    iid = await durable_lmdb_engine.workflows.start(pipeline, 2, id="on-disk")
    inst = await durable_lmdb_engine.workflows.wait(iid)
    assert inst.output == [4, 8, 5]
    stored = await durable_lmdb_engine.store.get_instance(iid)
    assert stored is not None and stored.status == "completed"
    assert durable_events[-1].name == "workflow.completed"


async def test_both_engines_in_one_test(
    durable_engine: Engine, durable_lmdb_engine: Engine, durable_events: list[Event]
) -> None:
    """The two engine fixtures are separate engines; durable_events gathers both."""
    assert durable_engine is not durable_lmdb_engine
    await durable_engine.workflows.wait(await durable_engine.workflows.start(pipeline, 1, id="m"))
    await durable_lmdb_engine.workflows.wait(await durable_lmdb_engine.workflows.start(pipeline, 1, id="l"))
    assert {e.instance_id for e in durable_events if e.name == "workflow.completed"} == {"m", "l"}


def test_durable_events_is_a_plain_fixture(durable_events: list[Event]) -> None:
    """Without an engine fixture durable_events is just an empty list (a sync test may use it)."""
    assert durable_events == []


# -- assert_replays ----------------------------------------------------------------


async def test_assert_replays_passes_and_runs_no_step(durable_engine: Engine) -> None:
    """A deterministic run replays from its checkpoints: no step's code runs during the replay."""
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(pipeline, 3))
    before = Counter(CALLS)
    replayed = await assert_replays(durable_engine, inst.id)
    assert CALLS == before
    assert replayed.status == "completed" and replayed.output == inst.output
    await assert_replays(durable_engine, inst)  # an instance works as well as its id


def _order_graph() -> Any:
    return (
        workflow("order")
        .task("validate", job="validate")
        .choice("stock", choices=[When(lambda c: c.steps["validate"]["ok"], "fulfill")], default="complete")
        .parallel("fulfill", branches=[
            workflow.branch("ship").task("ship", job="count").build(),
            workflow.branch("mail").task("mail", job="count").build(),
        ])
        .pass_("complete", transform=lambda c: {"done": True, "steps": sorted(c.steps)}, end=True)
        .build()
    )


def _register_jobs(engine: Engine) -> None:
    def validate(x: Any) -> dict[str, bool]:
        CALLS["validate"] += 1
        return {"ok": True}

    async def count(x: Any) -> int:
        CALLS["count"] += 1
        return CALLS["count"]

    engine.jobs.register("validate", validate)
    engine.jobs.register("count", count)


async def test_assert_replays_a_builder_workflow_on_lmdb(durable_lmdb_engine: Engine) -> None:
    """A builder run (task, choice, parallel, pass) on LMDB replays with the engine's jobs, none of them called."""
    _register_jobs(durable_lmdb_engine)
    durable_lmdb_engine.workflows.register(_order_graph())
    inst = await durable_lmdb_engine.workflows.wait(await durable_lmdb_engine.workflows.start("order", {}))
    assert inst.status == "completed"
    before = Counter(CALLS)
    await assert_replays(durable_lmdb_engine, inst.id)
    assert CALLS == before


async def test_assert_replays_from_a_store_with_workflow_and_jobs(autojump_clock: Any) -> None:
    """Given a store rather than an engine, the workflow (and a builder's jobs) are passed in."""
    store = MemoryStore()
    inst = await run_on_engine(pipeline, 4, store=store)
    await assert_replays(store, inst.id, workflow=pipeline)
    graph = _order_graph()
    async with Engine(store=store) as engine:
        _register_jobs(engine)
        iid = await engine.workflows.start(graph, {})
        await engine.workflows.wait(iid)
    await assert_replays(store, iid, workflow=graph, jobs={"validate": lambda x: {"ok": True}})
    with pytest.raises(AssertionError, match="not registered.*pass workflow="):
        await assert_replays(store, iid)
    with pytest.raises(AssertionError, match="cannot be replayed with workflow 'pipeline'"):
        await assert_replays(store, iid, workflow=pipeline)
    with pytest.raises(TypeError, match="workflow= takes"):
        await assert_replays(store, iid, workflow=42)


async def test_assert_replays_a_failed_instance(durable_engine: Engine) -> None:
    """A failed step re-raises its stored error on replay, so a failed instance replays as failed."""

    @step
    async def broken() -> None:
        CALLS["broken"] += 1
        raise ValueError("no stock")

    @workflow(name="fails")
    async def fails() -> None:
        await broken()

    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(fails))
    assert inst.status == "failed"
    replayed = await assert_replays(durable_engine, inst.id)
    assert replayed.status == "failed" and replayed.error == inst.error
    assert CALLS["broken"] == 1


MODE = {"variant": "a"}


@step
async def first() -> str:
    CALLS["first"] += 1
    return "one"


@step
async def second_a() -> str:
    CALLS["second_a"] += 1
    return "a"


@step
async def second_b() -> str:
    CALLS["second_b"] += 1
    return "b"


@workflow
async def branches_on_a_global() -> str:
    await first()
    if MODE["variant"] == "a":  # not deterministic: reads state outside the steps
        return await second_a()
    return await second_b()


@workflow
async def renames_its_step() -> str:
    await first()
    fn = second_a.__wrapped__ if MODE["variant"] == "a" else second_b.__wrapped__
    return await step("second", fn)


@workflow
async def output_from_a_global() -> str:
    await first()
    return MODE["variant"]


@pytest.fixture
def mode() -> Any:
    MODE["variant"] = "a"
    yield MODE
    MODE["variant"] = "a"


async def test_assert_replays_names_a_step_that_would_run_again(durable_engine: Engine, mode: Any) -> None:
    """A run taking another path on replay fails, naming the step and its key; that step does not run."""
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(branches_on_a_global))
    assert inst.output == "a"
    mode["variant"] = "b"
    with pytest.raises(AssertionError) as info:
        await assert_replays(durable_engine, inst.id)
    message = str(info.value)
    # The recorded run went on with second_a where the code now calls second_b: a diverged replay
    # (the order check), reported before second_b runs.
    assert "replay diverged at 'second_b#0'" in message and "'second_a#0'" in message
    assert inst.id in message and "'branches_on_a_global'" in message and "deterministic" in message
    assert CALLS["second_b"] == 0


async def test_assert_replays_reports_non_determinism(durable_engine: Engine, mode: Any) -> None:
    """Another function at a checkpointed key is the engine's NonDeterminismError, reported as such."""
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(renames_its_step))
    mode["variant"] = "b"
    with pytest.raises(AssertionError, match=r"diverged from its checkpoints: .*'second#0'"):
        await assert_replays(durable_engine, inst.id)
    assert CALLS["second_b"] == 0


async def test_assert_replays_compares_the_output(durable_engine: Engine, mode: Any) -> None:
    """Code between steps that computes another result on replay fails the check."""
    inst = await durable_engine.workflows.wait(await durable_engine.workflows.start(output_from_a_global))
    mode["variant"] = "b"
    with pytest.raises(AssertionError, match="returned 'b', but the recorded run returned 'a'"):
        await assert_replays(durable_engine, inst.id)


async def test_assert_replays_refuses_unfinished_and_missing_instances(durable_engine: Engine) -> None:
    """Only completed or failed instances can be replayed; a missing id says so."""
    gate = trio.Event()

    @step
    async def wait_gate() -> None:
        await gate.wait()

    @workflow(name="gated")
    async def gated() -> None:
        await wait_gate()

    iid = await durable_engine.workflows.start(gated)
    await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(AssertionError, match="is running; only a completed or failed instance"):
        await assert_replays(durable_engine, iid)
    await durable_engine.workflows.cancel(iid)
    with pytest.raises(AssertionError, match="is cancelled"):
        await assert_replays(durable_engine, iid)
    with pytest.raises(AssertionError, match="no instance 'nope'"):
        await assert_replays(durable_engine, "nope")


async def test_assert_replays_after_crash_and_resume(durable_clock: Any) -> None:
    """An instance finished by a resume after a crash replays like any other."""
    store = MemoryStore()
    inst = await crash_and_resume(pipeline, 6, after="flaky", store=store)
    assert inst.status == "completed"
    await assert_replays(store, inst.id, workflow=pipeline)


def test_assert_replays_from_a_sync_test() -> None:
    """A sync test can check replay with trio.run (the helper itself is async)."""
    store = MemoryStore()
    from durable.testing import run

    inst = run(pipeline, 7, store=store)
    trio.run(functools.partial(assert_replays, store, inst.id, workflow=pipeline),
             clock=trio.testing.MockClock(autojump_threshold=0))


# -- the plugin as a user gets it: a fresh pytest process ---------------------------

USER_TESTS = '''
import pytest
import trio
from durable import Retry, step, workflow
from durable.testing import assert_replays, replace_step, run

@step(retry=Retry(max_attempts=3, interval=60))
async def charge(amount: int) -> str:
    raise ConnectionError("payment provider down")

@workflow
async def checkout(amount: int) -> str:
    return await charge(amount)

def test_sync_helper_needs_no_fixture():
    assert run(checkout, 5).status == "failed"

async def test_fixtures(durable_engine, durable_events, durable_clock):
    async def fake(amount):
        return f"charged {amount}"
    with replace_step(charge, fake):
        iid = await durable_engine.workflows.start(checkout, 5)
        inst = await durable_engine.workflows.wait(iid)
    assert inst.output == "charged 5"
    assert durable_events[-1].name == "workflow.completed"
    await assert_replays(durable_engine, iid)

async def test_retries_take_no_real_time(durable_lmdb_engine):
    inst = await durable_lmdb_engine.workflows.wait(await durable_lmdb_engine.workflows.start(checkout, 1))
    assert inst.status == "failed" and trio.current_time() == 60
'''


def test_plugin_is_loaded_from_the_entry_point(pytester: pytest.Pytester) -> None:
    """A fresh pytest process, with no conftest, gets the durable_* fixtures from the installed entry point."""
    pytester.makeini("[pytest]\ntrio_mode = true\nfilterwarnings = error\n")
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("--trace-config", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    # The header lists the plugins loaded from distributions' entry points.
    result.stdout.fnmatch_lines(["*durable-* at *durable?testing?plugin.py", "plugins: *durable-*"])


def test_plugin_with_the_trio_marker_instead_of_trio_mode(pytester: pytest.Pytester) -> None:
    """Without trio_mode, @pytest.mark.trio tests get the fixtures and the autojump clock too."""
    pytester.makepyfile(test_marked='''
import pytest
import trio

@pytest.mark.trio
async def test_marked(durable_engine, durable_clock):
    assert trio.lowlevel.current_clock() is durable_clock
    await trio.sleep(10_000)

async def test_unmarked_async_test_is_not_run_by_trio(durable_engine):
    pass

def test_sync_test(durable_engine):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*test_sync_test*trio fixtures*async def*"])
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1 and outcomes.get("errors", outcomes.get("error")) == 2, outcomes


def test_engine_fixtures_without_pytest_trio_fail_clearly(pytester: pytest.Pytester) -> None:
    """Without pytest-trio, an engine fixture fails with a message saying what to install; run() still works."""
    pytester.makepyfile(test_no_trio='''
from durable import workflow, step
from durable.testing import run

@step
async def hello() -> str:
    return "hi"

@workflow
async def greet() -> str:
    return await hello()

def test_run_needs_no_plugin():
    assert run(greet).output == "hi"

def test_engine(durable_engine):
    pass
''')
    result = pytester.runpytest_subprocess("-p", "no:trio", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*they need pytest-trio (pip install pytest-trio)*"])
