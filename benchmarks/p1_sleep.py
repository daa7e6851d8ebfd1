"""P1: 10,000 workflows in a durable sleep: memory while they sleep, and how late they wake.

Each workflow runs one step, then ``durable.sleep_until(T + i ms)``: wake-up
times spread over 10 s, starting a few seconds after the last one started,
so every workflow is unloaded (suspended) before the first wakes. RSS (after
a GC) is read once all 10,000 are suspended, against the engine's RSS before
they started: a sleeping workflow must hold no task and nothing but its timer
entry. Each workflow notes how late its sleep returned (wake-up -> the line
after the sleep, which includes replaying its first step), then runs one more
step. Real time, LMDB store, fully durable.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timedelta

import trio

import durable
from _common import Config, Row, Sample, Spawn, settled_rss_kb, simple_repeats
from durable import Engine, step, workflow

KEY = "P1"
TITLE = "{w5_inflight:,} workflows in a durable sleep"
ROWS = [
    Row("sleeping_mb", "RSS over the engine's, MB, all asleep", limit=30),
    Row("kb_per_sleeping", "KB RSS per sleeping workflow", fmt="{:,.2f}"),
    Row("late_median_ms", "wake-up lateness, median, ms", fmt="{:,.1f}"),
    Row("late_p99_ms", "wake-up lateness, p99, ms", limit=50, fmt="{:,.1f}"),
    Row("late_max_ms", "wake-up lateness, max, ms", fmt="{:,.1f}"),
    Row("start_s", "start all (each a durable create + checkpoint), s", compare=False),
]
PEER_NA = "not run on DBOS in this suite"

_late: list[float] = []


@step
async def before(i: int) -> int:
    """A trivial step."""
    return i


@step
async def after(i: int) -> int:
    """A trivial step."""
    return i


@workflow
async def nap(i: int, wake_at: datetime) -> int:
    """One step, a durable sleep until ``wake_at``, one step."""
    await before(i)
    await durable.sleep_until(wake_at)
    _late.append((datetime.now(wake_at.tzinfo) - wake_at).total_seconds())  # benchmark side effect only
    return await after(i)


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """One fresh process and store per repeat."""
    return simple_repeats(__name__, "durable_run", cfg, spawn, 1, n=cfg.sizes.w5_inflight)


def durable_run(store: str, n: int) -> Sample:
    """Child process: ``n`` sleeping workflows on a new store."""

    async def main() -> Sample:
        async with Engine.open(store) as engine:
            engine.workflows.register(nap)
            warm = engine.now() + timedelta(seconds=0.01)
            await engine.workflows.wait(await engine.workflows.start(nap, -1, warm))
            _late.clear()
            base = settled_rss_kb()
            t0 = time.perf_counter()
            spread = 10.0  # seconds over which the wake-ups are spread
            first = engine.now() + timedelta(seconds=5 + n / 1000)
            ids = [await engine.workflows.start(nap, i, first + timedelta(seconds=spread * i / n)) for i in range(n)]
            start_s = time.perf_counter() - t0
            while len(engine.workflows.suspended_ids()) < n:
                assert engine.now() < first, "the first wake-up came before every workflow was asleep"
                await trio.sleep(0.05)
            asleep = settled_rss_kb() - base
            for iid in ids:
                inst = await engine.workflows.wait(iid)
                assert inst.status == "completed", inst.error
        late = sorted(_late)
        assert len(late) == n, len(late)
        return {
            "sleeping_mb": asleep / 1024, "kb_per_sleeping": asleep / n, "start_s": start_s,
            "late_median_ms": statistics.median(late) * 1e3, "late_p99_ms": late[int(n * 0.99) - 1] * 1e3,
            "late_max_ms": late[-1] * 1e3,
        }

    return trio.run(main)
