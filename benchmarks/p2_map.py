"""P2: ``durable.map`` of a trivial step over 10,000 items, at most 100 at once.

One workflow, one map, each item its own durable checkpoint (their commits
shared by group commit). Reported: total time, microseconds per item, and
memory: RSS at the end over the engine's before the map (the results and
the map's bookkeeping) and the peak RSS while it ran. At most ``concurrency``
item tasks exist at any moment, so memory must not grow with the number of
items beyond the results and their checkpoints' store pages.
"""

from __future__ import annotations

import time

import trio

import durable
from _common import Config, Row, Sample, Spawn, peak_rss_kb, per, settled_rss_kb, simple_repeats
from durable import Engine, step, workflow

KEY = "P2"
TITLE = "durable.map over {w5_inflight:,} items, 100 at once"
ROWS = [
    Row("total_ms", "total ms"),
    Row("us_per_item", "µs per item"),
    Row("rss_mb", "RSS over the engine's after the map, MB"),
    Row("peak_mb", "peak RSS while mapping, MB"),
]
PEER_NA = "not run on DBOS in this suite"


@step
async def double(i: int) -> int:
    """A trivial step."""
    return i * 2


@workflow
async def fan(count: int) -> int:
    """One map of ``count`` items."""
    return sum(await durable.map(double, list(range(count)), concurrency=100))


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """One fresh process and store per repeat."""
    return simple_repeats(__name__, "durable_run", cfg, spawn, 3, n=cfg.sizes.w5_inflight)


def durable_run(store: str, n: int) -> Sample:
    """Child process: the map on a new store."""

    async def main() -> Sample:
        async with Engine.open(store) as engine:
            engine.workflows.register(fan)
            await engine.workflows.wait(await engine.workflows.start(fan, 10))  # warm-up
            base = settled_rss_kb()
            t0 = time.perf_counter()
            inst = await engine.workflows.wait(await engine.workflows.start(fan, n))
            elapsed = time.perf_counter() - t0
            assert inst.status == "completed" and inst.output == n * (n - 1), inst.error
            after = settled_rss_kb()
        return {"seconds": elapsed, "total_ms": elapsed * 1e3, "us_per_item": per(elapsed, n),
                "rss_mb": (after - base) / 1024, "peak_mb": peak_rss_kb() / 1024}

    return trio.run(main)
