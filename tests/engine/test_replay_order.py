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
