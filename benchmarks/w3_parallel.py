"""W3: one ``parallel()`` of 1,000 branches of one trivial step each.

Timed from ``start()`` to ``wait()`` returning the completed instance (the
workflow is nothing but the parallel), on a fresh LMDB store, after a
10-branch warm-up in the same engine. Reported as total milliseconds and
microseconds per branch.
"""

from __future__ import annotations

import time

import trio

from _common import Config, Row, Sample, Spawn, per, simple_repeats
from durable import Engine, parallel, step, workflow

KEY = "W3"
TITLE = "parallel() of {w3_branches:,} one-step branches"
ROWS = [
    Row("total_ms", "total ms"),
    Row("us_per_branch", "µs per branch", limit=50),
]


@step
async def leaf(i: int) -> int:
    """A trivial step."""
    return i


@workflow
async def fan_out(count: int) -> int:
    """One parallel of ``count`` branches."""
    results = await parallel(*(leaf(i) for i in range(count)))
    return sum(results)


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """One fresh process and store per repeat."""
    module, function = (__name__, "durable_run") if side == "durable" else ("peer_dbos", "w3")
    return simple_repeats(module, function, cfg, spawn, 3, n=cfg.sizes.w3_branches)


def durable_run(store: str, n: int) -> Sample:
    """Child process: run a parallel of ``n`` branches on a new store."""

    async def main() -> float:
        async with Engine.open(store) as engine:
            engine.workflows.register(fan_out)
            await engine.workflows.wait(await engine.workflows.start(fan_out, 10))  # warm-up
            t0 = time.perf_counter()
            instance = await engine.workflows.wait(await engine.workflows.start(fan_out, n))
            elapsed = time.perf_counter() - t0
            assert instance.status == "completed" and instance.output == n * (n - 1) // 2, instance
            return elapsed

    elapsed = trio.run(main)
    return {"seconds": elapsed, "total_ms": elapsed * 1e3, "us_per_branch": per(elapsed, n)}
