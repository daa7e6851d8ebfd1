"""W1: one workflow of 1,000 sequential trivial steps, in microseconds per step.

Timed from ``start()`` to ``wait()`` returning the completed instance, on a
fresh LMDB store (fsync'd), after a 10-step warm-up workflow in the same
engine. Every step's checkpoint is on disk before the next step runs, so this
is the latency of one durable checkpoint plus the engine's overhead.
"""

from __future__ import annotations

import time

import trio

from _common import Config, Row, Sample, Spawn, per, simple_repeats
from durable import Engine, step, workflow

KEY = "W1"
TITLE = "1 workflow x {w1_steps:,} sequential steps"
ROWS = [Row("us_per_step", "µs per step", limit=300, ratio=4)]


@step
async def tick(i: int) -> int:
    """A trivial step."""
    return i


@workflow
async def sequential(count: int) -> int:
    """``count`` steps, one after the other."""
    total = 0
    for i in range(count):
        total += await tick(i)
    return total


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """One fresh process and store per repeat."""
    module, function = (__name__, "durable_run") if side == "durable" else ("peer_dbos", "w1")
    return simple_repeats(module, function, cfg, spawn, 3, n=cfg.sizes.w1_steps)


def durable_run(store: str, n: int) -> Sample:
    """Child process: run the workflow of ``n`` steps on a new store at ``store``."""

    async def main() -> float:
        async with Engine.open(store) as engine:
            engine.workflows.register(sequential)
            await engine.workflows.wait(await engine.workflows.start(sequential, 10))  # warm-up
            t0 = time.perf_counter()
            instance = await engine.workflows.wait(await engine.workflows.start(sequential, n))
            elapsed = time.perf_counter() - t0
            assert instance.status == "completed", instance.error
            assert instance.output == n * (n - 1) // 2, instance.output
            return elapsed

    elapsed = trio.run(main)
    return {"seconds": elapsed, "us_per_step": per(elapsed, n)}
