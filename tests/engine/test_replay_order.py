"""Replay checks the order of steps: a run that takes another way than the one recorded is reported.

Each checkpoint records its place among the steps of its scope (``seq``). On
replay a checkpoint reached at another place (steps inserted, removed,
reordered), or a new step called where the recorded run went on with others
(a branch on something that changed), fails the instance with
``NonDeterminismError``. ``durable.now()``/``random()``/``uuid4()`` give code
between steps values that replay the same; ``durable.patched()`` carries an
intentional change to instances in flight.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import durable
from durable import Engine, InstanceStatus, LMDBStore, MemoryStore
from durable.testing import crash_and_resume

RAN: list[str] = []
FLAGS: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()
    FLAGS.clear()


@durable.step
async def first() -> str:
    RAN.append("first")
    return "first"


@durable.step
async def heads() -> str:
    RAN.append("heads")
    return "heads"


@durable.step
async def tails() -> str:
    RAN.append("tails")
    return "tails"


@durable.step
async def last() -> str:
    RAN.append("last")
    return "last"


@durable.workflow
async def coin() -> list[str]:
    out = [await first()]
    entered = FLAGS.setdefault("entered", 0)
    FLAGS["entered"] = entered + 1
    out.append(await (heads() if entered == 0 else tails()))  # a branch that is not deterministic
    out.append(await last())
    return out


async def test_a_branch_that_changes_on_replay_is_reported() -> None:
    inst = await crash_and_resume(coin, after="last")
    assert inst.status == InstanceStatus.FAILED and inst.error_type == "NonDeterminismError"
    assert "replay diverged at 'tails#0'" in (inst.error or "") and "'heads#0'" in (inst.error or "")
    assert RAN == ["first", "heads", "last"]  # tails never ran


@durable.workflow
async def ordered() -> list[str]:
    if FLAGS.get("swap"):
        return [await heads(), await first(), await last()]
    return [await first(), await heads(), await last()]


async def test_reordered_steps_are_reported(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path / "s")
    try:
        async with Engine(store) as engine:
            iid = await engine.workflows.start(ordered)
            await engine.workflows.wait(iid)
        # the same instance, replayed by code that calls the steps in another order
        for key in ("last#0",):
            steps = await store.get_steps(iid)
            assert steps[key].seq == 2
        FLAGS["swap"] = True
        async with Engine(store) as engine:
            run = await _replay(engine, ordered, iid)
        assert run.status == InstanceStatus.FAILED and run.error_type == "NonDeterminismError"
        assert "'heads#0'" in (run.error or "") and "inserted, removed or reordered" in (run.error or "")
    finally:
        store.close()


async def _replay(engine: Engine, wf: Any, iid: str) -> Any:
    """Replay instance ``iid`` from its checkpoints with ``wf`` (assert_replays' way)."""
    from durable.testing import assert_replays

    with pytest.raises(AssertionError) as info:
        await assert_replays(engine, iid, workflow=wf)
    assert "NonDeterminismError" in str(info.value) or "diverged" in str(info.value)

    class Result:
        status = InstanceStatus.FAILED
        error_type = "NonDeterminismError"
        error = str(info.value)

    return Result()


@durable.workflow
async def branches_on_random() -> list[str]:
    out = [await first()]
    FLAGS["draws"] = FLAGS.get("draws", []) + [await durable.random()]
    out.append(await (heads() if FLAGS["draws"][-1] < 0.5 else tails()))
    when = await durable.now()
    ident = await durable.uuid4()
    FLAGS.setdefault("seen", []).append((when, ident))
    out.append(await last())
    return out


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
async def test_checkpointed_values_replay_the_same(kind: str, tmp_path: Path) -> None:
    store = MemoryStore() if kind == "memory" else LMDBStore(tmp_path / "s")
    try:
        inst = await crash_and_resume(branches_on_random, after="last", store=store)
    finally:
        if kind == "lmdb":
            store.close()  # type: ignore[union-attr]
    assert inst.status == InstanceStatus.COMPLETED, inst.error
    first_draw, second_draw = FLAGS["draws"]
    assert first_draw == second_draw and 0 <= first_draw < 1
    (t1, u1), (t2, u2) = FLAGS["seen"]
    assert t1 == t2 and isinstance(t1, datetime) and t1.tzinfo is not None
    assert u1 == u2 and isinstance(u1, uuid.UUID)
    assert RAN.count("heads") + RAN.count("tails") == 1  # one branch, once
    types = sorted(r.step_type for r in inst.step_results.values())
    assert types.count("value") == 3
    assert "now" not in [s.name for s in branches_on_random.graph.states]  # values are not drawn as steps


async def test_values_outside_an_engine_are_plain() -> None:
    assert 0 <= await durable.random() < 1
    assert isinstance(await durable.uuid4(), uuid.UUID)
    assert (await durable.now()).tzinfo is not None
    assert await durable.patched("anything") is True
    assert await durable.deprecate_patch("anything") is None
    assert await branches_on_random() in (["first", "heads", "last"], ["first", "tails", "last"])
    with pytest.raises(ValueError, match="change id"):
        await durable.patched("")


@durable.workflow
async def patched_removal() -> list[str]:
    out = [await first()]
    if not await durable.patched("drop-heads"):
        out.append(await heads())  # removed in the new code; runs recorded before keep it
    out.append(await last())
    return out


@durable.workflow(name="patched_removal")  # its next version
async def deprecated_removal() -> list[str]:
    out = [await first()]
    await durable.deprecate_patch("drop-heads")
    out.append(await last())
    return out


async def test_patched_and_deprecate_patch_keep_recorded_runs_in_step(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path / "s")
    try:
        async with Engine(store) as engine:
            engine.workflows.register(patched_removal)
            iid = await engine.workflows.wait(await engine.workflows.start(patched_removal))
            assert iid.output == ["first", "last"] and RAN == ["first", "last"]
            markers = [r for r in iid.step_results.values() if r.step_type == "patch"]
            assert [m.key for m in markers] == ["patch:drop-heads#0"]
        from durable.testing import assert_replays

        async with Engine(store) as engine:
            await assert_replays(engine, iid.id, workflow=deprecated_removal)  # the marker is taken: in step
            await assert_replays(engine, iid.id, workflow=patched_removal)
    finally:
        store.close()


def _named(name: str) -> Any:
    @durable.step(name=name)
    async def body() -> str:
        RAN.append(name)
        return name

    return body


s_a, s_old1, s_new1, s_b, s_old2, s_new2, s_c = (_named(n) for n in ("a", "old1", "new1", "b", "old2", "new2", "c"))


@durable.workflow(name="two-sites")
async def two_sites_old() -> list[str]:
    return [await s_a(), await s_old1(), await s_b(), await s_old2(), await s_c()]


@durable.workflow(name="two-sites")
async def two_sites_new() -> list[str]:
    out = [await s_a()]
    out.append(await (s_new1() if await durable.patched("x") else s_old1()))
    out.append(await s_b())
    out.append(await (s_new2() if await durable.patched("x") else s_old2()))
    out.append(await s_c())
    return out


async def _run_until(store: Any, wf: Any, iid: str | None, crash_after: str) -> str:
    async with Engine(store) as engine:
        engine.workflows.register(wf)

        def on(e: Any) -> None:
            if e.step_name == crash_after:
                engine.workflows.driver.crash(e.instance_id)

        engine.events.on("workflow.step.completed", on)
        if iid is None:
            iid = await engine.workflows.start(wf)
        else:
            await engine.workflows.resume()
        run = engine.workflows.driver.runs.get(iid)
        if run is not None:
            await run.done.wait()
    return iid


async def test_one_change_id_at_two_places_replays_in_step(tmp_path: Path) -> None:
    """patched("x") guarding two places: an instance recorded by the old code up to between them takes the
    old path at the first and the new one at the second, and replays so again."""
    store = LMDBStore(tmp_path / "s")
    try:
        iid = await _run_until(store, two_sites_old, None, "b")  # old code: a, old1, b; crash
        await _run_until(store, two_sites_new, iid, "new2")  # new code: replays a, old1, b; then new2; crash
        await _run_until(store, two_sites_new, iid, "never")
        inst = await store.get_instance(iid)
        assert inst is not None and inst.status == InstanceStatus.COMPLETED, inst and inst.error
        assert inst.output == ["a", "old1", "b", "new2", "c"]
        assert RAN == ["a", "old1", "b", "new2", "c"]
    finally:
        store.close()


async def test_patched_takes_the_old_path_for_an_instance_of_0_1_0(tmp_path: Path) -> None:
    """0.1.0's records have no places: a patched() in a scope holding them takes the old path."""
    import shutil
    import sys

    data = Path(__file__).parents[1] / "data"
    shutil.copytree(data / "store-0.1.0", tmp_path / "s")
    sys.path.insert(0, str(data))
    import fixture_flows as flows

    @durable.workflow(name="interrupted")
    async def interrupted_v2(x: int) -> int:
        first = await flows.add(x, 1)
        if await durable.patched("new-path"):
            RAN.append("new path")  # must not happen: this instance went past here with 0.1.0's code
        return await flows.boom(first)

    flows.RAN.clear()
    async with Engine.open(str(tmp_path / "s")) as engine:
        engine.workflows.register(interrupted_v2)
        await engine.workflows.resume()
        inst = await engine.workflows.wait("interrupted-1", timeout=10)
    assert inst.status == InstanceStatus.COMPLETED and inst.output == 121
    assert RAN == [] and flows.RAN == ["boom"]


@durable.step
async def calls_primitives(kind: str) -> str:
    if kind == "sleep":
        await durable.sleep(0.001)
    elif kind == "parallel":
        await durable.parallel(first(), last())
    elif kind == "child":
        await coin_free_child()
    elif kind == "map":
        await durable.map_(lambda i: first(), [1, 2])
    elif kind == "value":
        await durable.random()
    return kind


@durable.workflow
async def coin_free_child() -> str:
    return await first()


@durable.workflow
async def outer_with_primitives(kind: str) -> list[str]:
    return [await calls_primitives(kind), await heads(), await tails()]


@pytest.mark.parametrize("kind", ["sleep", "parallel", "child", "map", "value"])
async def test_primitives_awaited_inside_a_step_are_part_of_it(kind: str, tmp_path: Path) -> None:
    """A sleep, parallel(), child workflow, map() or value awaited by a running step is plain code of that
    step: it takes no place among the workflow's checkpoints, so the replay (which does not run the
    step's body) stays in step."""
    store = LMDBStore(tmp_path / "s")
    try:
        inst = await crash_and_resume(outer_with_primitives, kind, after="heads", store=store)
    finally:
        store.close()
    assert inst.status == InstanceStatus.COMPLETED, inst.error
    assert sorted(inst.step_results) == ["calls_primitives", "heads", "tails"]


async def test_a_value_is_durable_before_the_code_gets_it(tmp_path: Path) -> None:
    """A step may act on a durable.uuid4() (an idempotency key): the value is on disk before it is returned,
    so a crash cannot make the replay draw another one."""
    store = LMDBStore(tmp_path / "s")
    seen: list[bool] = []

    @durable.step
    async def look(iid: str) -> None:
        # A read transaction sees committed (fsync'd) writes only: what a new process would read.
        seen.append("uuid4#0" in await store.get_steps(iid))

    @durable.workflow
    async def keyed() -> str:
        key = await durable.uuid4()
        await look(durable.current_step().instance_id if durable.current_step() else FLAGS["iid"])
        return str(key)

    try:
        async with Engine(store) as engine:
            FLAGS["iid"] = "keyed-1"
            await engine.workflows.wait(await engine.workflows.start(keyed, id="keyed-1"))
    finally:
        store.close()
    assert seen == [True]
