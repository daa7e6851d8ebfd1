"""W5: memory: RSS per in-flight workflow, and RSS over a store of finished instances.

In flight: after a warm-up, the engine's RSS is taken as the baseline; then
10,000 one-step workflows are started at once and each blocks inside its
step on a ``trio.Event``. Once all 10,000 are inside the step, RSS (VmRSS,
after a GC) minus the baseline, divided by 10,000, is the cost of one
in-flight workflow; peak RSS (``ru_maxrss``) is reported too. Then the event
is set and every workflow must complete.

Finished: a store holding 100,000 finished instances is built by running one
real one-step workflow and cloning the records it left (the instance record
and its step checkpoint) under 100,000 new ids through the public store API
(``create_instance`` / ``put_step``, 1,000 concurrent writes at a time, so
they group-commit): the same records the engine writes, far faster than
running 100,000 workflows. Then two fresh processes each open an engine,
``resume()``, run one new workflow and read their RSS: one over an empty
store, one over the full store. Finished instances must not be held in
memory, so the two should be close.
"""

from __future__ import annotations

import os
import threading
import time

import attrs
import trio

from _common import Config, Row, Sample, Spawn, dir_size_mb, peak_rss_kb, settled_rss_kb
from durable import Engine, step, workflow

KEY = "W5"
TITLE = "memory: {w5_inflight:,} in flight; {w5_finished:,} finished in the store"
ROWS = [
    Row("kb_per_inflight", "KB RSS per in-flight workflow", limit=3, fmt="{:,.2f}"),
    Row("peak_mb", "peak RSS, MB, all in flight"),
    Row("peak_end_mb", "peak RSS, MB, after all complete"),
    Row("threads", "Python threads, all in flight", compare=False, fmt="{:,.0f}"),
    Row("empty_mb", "RSS, MB, engine over empty store"),
    Row("full_mb", "RSS, MB, engine over finished store"),
    Row("finished_delta_mb", "RSS over finished - empty, MB", limit=30),
    Row("fill_s", "fill the finished store, s (clones)", compare=False),
    Row("store_mb", "finished store on disk, MB"),
]
PEER_LAST = True  # DBOS's in-flight run holds ~10,000 threads: run.py runs it after everything else, both sides

_gate: trio.Event | None = None  # the in-flight workflows block on it
_entered = 0  # workflows that reached their blocking step


@step
async def hold(i: int) -> int:
    """Block until the gate opens."""
    global _entered
    _entered += 1
    assert _gate is not None
    await _gate.wait()
    return i


@workflow
async def held(i: int) -> int:
    """One step that blocks until the gate opens."""
    return await hold(i)


@step
async def once(i: int) -> int:
    """A trivial step."""
    return i


@workflow
async def one_step(i: int) -> int:
    """One trivial step: what the finished store is made of."""
    return await once(i)


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """In-flight in one process; fill the finished store once; then one process per RSS reading."""
    module, prefix, ext = (__name__, "durable_", "") if side == "durable" else ("peer_dbos", "w5_", ".sqlite")
    full = os.path.join(cfg.workdir, "finished") + ext
    fill = spawn(module, prefix + "fill", store=full, n=cfg.sizes.w5_finished)
    samples = []
    for i in range(cfg.repeats(1)):
        inflight = spawn(module, prefix + "inflight", store=os.path.join(cfg.workdir, f"inflight-{i}") + ext,
                         n=cfg.sizes.w5_inflight)
        empty = spawn(module, prefix + "open_rss", store=os.path.join(cfg.workdir, f"empty-{i}") + ext)
        loaded = spawn(module, prefix + "open_rss", store=full)
        samples.append({**fill, **inflight, "empty_mb": empty["rss_mb"], "full_mb": loaded["rss_mb"],
                        "finished_delta_mb": loaded["rss_mb"] - empty["rss_mb"],
                        "full_open_resume_ms": loaded["open_resume_ms"]})
    return samples


async def start_all(engine: Engine, wf: object, n: int) -> list[str]:
    """Start ``n`` instances of ``wf`` concurrently; their ids."""
    ids: list[str] = [""] * n

    async def start_one(i: int) -> None:
        ids[i] = await engine.workflows.start(wf, i)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(start_one, i)
    return ids


def durable_inflight(store: str, n: int) -> Sample:
    """Child process: RSS with ``n`` workflows blocked inside a step at once."""

    async def main() -> Sample:
        global _gate, _entered
        async with Engine.open(store) as engine:
            engine.workflows.register(held)
            _gate = trio.Event()
            _gate.set()
            for wid in await start_all(engine, held, 100):  # warm-up
                await engine.workflows.wait(wid)
            baseline = settled_rss_kb()
            _gate, _entered = trio.Event(), 0
            ids = await start_all(engine, held, n)
            with trio.fail_after(600):
                while _entered < n:
                    await trio.sleep(0.01)
            loaded, peak, threads = settled_rss_kb(), peak_rss_kb(), threading.active_count()
            _gate.set()
            for wid in ids:
                instance = await engine.workflows.wait(wid)
                assert instance.status == "completed", instance
        return {"baseline_mb": baseline / 1024, "inflight_mb": loaded / 1024, "peak_mb": peak / 1024,
                "peak_end_mb": peak_rss_kb() / 1024, "kb_per_inflight": (loaded - baseline) / n,
                "threads": threads}

    return trio.run(main)


def durable_fill(store: str, n: int) -> Sample:
    """Child process: a store with one real finished instance cloned ``n`` times."""

    async def main() -> float:
        async with Engine.open(store) as engine:
            engine.workflows.register(one_step)
            template_id = await engine.workflows.start(one_step, 7)
            await engine.workflows.wait(template_id)
            template = await engine.store.get_instance(template_id)
            steps = list((await engine.store.get_steps(template_id)).values())
            assert template is not None and template.status == "completed" and len(steps) == 1, template
            bare = attrs.evolve(template, step_results={})
            t0 = time.perf_counter()

            async def clone(i: int) -> None:
                instance_id = f"done-{i:07d}"
                await engine.store.create_instance(attrs.evolve(bare, id=instance_id))
                for checkpoint in steps:
                    await engine.store.put_step(instance_id, checkpoint)

            for start in range(0, n, 1000):
                async with trio.open_nursery() as nursery:
                    for i in range(start, min(start + 1000, n)):
                        nursery.start_soon(clone, i)
            return time.perf_counter() - t0

    elapsed = trio.run(main)
    return {"fill_s": elapsed, "store_mb": dir_size_mb(store)}


def durable_open_rss(store: str) -> Sample:
    """Child process: RSS of an engine over ``store`` after ``resume()`` and one new workflow."""

    async def main() -> Sample:
        t0 = time.perf_counter()
        async with Engine.open(store) as engine:
            engine.workflows.register(one_step)
            resumed = await engine.workflows.resume()
            elapsed = time.perf_counter() - t0
            assert resumed == [], resumed
            instance = await engine.workflows.wait(await engine.workflows.start(one_step, 1))
            assert instance.status == "completed", instance
            rss = settled_rss_kb()
        return {"rss_mb": rss / 1024, "open_resume_ms": elapsed * 1e3}

    return trio.run(main)
