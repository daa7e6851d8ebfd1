"""Kill-anywhere torture: 30 SIGKILLs at random moments, then every invariant of tests/crash/torture.py holds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import trio

sys.path.insert(0, str(Path(__file__).parent))

import torture  # noqa: E402


def test_thirty_random_sigkills_break_no_invariant(tmp_path: Path) -> None:
    """Reference outputs, at-most-kills re-executions, no re-run after a checkpoint, a store that always opens,
    attempts within max_attempts, and each final run's events consistent with the store."""
    res = torture.run_torture(kills=30, seed=20261124, store_dir=tmp_path)
    print(res.summary())
    assert res.kills == 30
    assert res.steps_executed > 0 and res.workflows >= 12 and res.events > 0
    assert not res.violations, "\n".join([res.summary(), *res.violations])


# -- the events invariant, reduced to one deterministic case -----------------------------


async def test_resumed_progress_counts_the_steps_of_a_replayed_parallel(autojump_clock: Any) -> None:
    """After a restart past a finished parallel, the final progress event counts every completed checkpoint."""
    from durable import Engine, MemoryStore, parallel, step, workflow

    gate = {"block": True}
    blocked = trio.Event()

    @step
    async def left(x: int) -> int:
        return x + 1

    @step
    async def right(x: int) -> int:
        return x + 2

    @step
    async def last(x: int) -> int:
        if gate["block"]:
            blocked.set()
            await trio.sleep_forever()
        return x

    @workflow(name="par-then-last")
    async def wf(x: int) -> int:
        a, b = await parallel(left(x), right(x))
        return await last(a + b)

    async def final_progress(engine: Engine, iid: str) -> Any:
        events: list[Any] = []
        engine.events.on("workflow.progress", events.append)
        await engine.workflows.wait(iid)
        return events[-1]

    # Crash-free: left, right, the parallel, last.
    async with Engine() as engine:
        engine.workflows.register(wf)
        gate["block"] = False
        iid = await engine.workflows.start(wf, 1, id="free")
        free = await final_progress(engine, iid)
    assert (free.progress, free.completed_steps) == (100, 4)

    store = MemoryStore()
    gate["block"] = True
    async with Engine(store=store) as engine:  # leaving the block stops the instance inside `last`
        engine.workflows.register(wf)
        iid = await engine.workflows.start(wf, 1, id="crashed")
        await blocked.wait()
    gate["block"] = False
    async with Engine(store=store) as engine:
        engine.workflows.register(wf)
        assert await engine.workflows.resume() == [iid]
        resumed = await final_progress(engine, iid)
        inst = await engine.workflows.get_instance(iid)
    assert inst is not None and inst.status == "completed"
    completed = sum(1 for sr in (await store.get_steps(iid)).values() if sr.status == "completed")
    assert completed == 4
    assert (resumed.progress, resumed.completed_steps) == (100, completed)
