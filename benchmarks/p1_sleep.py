"""P1: 10,000 workflows in a durable sleep: memory while they sleep, and how late they wake.

Each workflow runs one step, then ``durable.sleep_until(wake_at)``, its
wake-up time an input: the wake-ups are spread over 10 s, and the first one
must come after every workflow is asleep (unloaded: suspended), so the
harness places it by measuring this machine, not by assuming its speed. A
calibration run first starts a few hundred sleepers (300, or all if fewer)
with a wake-up a day away, times them from the first start until all are
suspended, and cancels them. The first wake-up of the real run then comes
``SAFETY`` times the time that rate gives for all 10,000 plus ``MARGIN``
seconds after its first start.

RSS (after a GC) is read once all 10,000 are suspended, against the engine's
RSS before they started: a sleeping workflow must hold no task and nothing
but its timer entry. Each workflow notes how late its sleep returned
(wake-up -> the line after the sleep, which includes replaying its first
step), then runs one more step. Real time, LMDB store, fully durable.

Should the first wake-up still come before every workflow is asleep (a
machine that slowed down after the calibration), the run is not cut short:
it reports how many were not yet asleep then (the target is 0), no "all
asleep" RSS, and the lateness of only the workflows that reached their sleep
before their wake-up time. ``$BENCH_P1_FIRST_WAKE`` (seconds) forces the
first wake-up's offset, to try that path: ``BENCH_P1_FIRST_WAKE=0.2``.
"""

from __future__ import annotations

import os
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
    Row("not_asleep", "workflows not yet asleep at the first wake-up", limit=0, fmt="{:,.0f}"),
    Row("start_s", "start all (each a durable create + checkpoint), s", compare=False),
    Row("first_wake_s", "first wake-up after the first start, s (calibrated)", compare=False),
]
PEER_NA = "not run on DBOS in this suite"

SPREAD = 10.0  # seconds over which the wake-ups are spread
CALIBRATION = 300  # sleepers started to time this machine's starts (at most n)
SAFETY = 2.0  # the first wake-up: SAFETY x the calibrated time to start all n, plus MARGIN
MARGIN = 3.0  # seconds; above Engine(suspend_after=) (1 s), so each sleep unloads its workflow

_late: dict[int, float] = {}  # workflow -> seconds its sleep returned after its wake-up time
_slept: dict[int, datetime] = {}  # workflow -> when it first reached its sleep


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
    _slept.setdefault(i, datetime.now(wake_at.tzinfo))  # benchmark side effects only (the replay keeps the first)
    await durable.sleep_until(wake_at)
    _late[i] = (datetime.now(wake_at.tzinfo) - wake_at).total_seconds()
    return await after(i)


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """One fresh process and store per repeat."""
    return simple_repeats(__name__, "durable_run", cfg, spawn, 1, n=cfg.sizes.w5_inflight)


async def _start(engine: Engine, wake_ats: dict[int, datetime]) -> list[str]:
    """Start one sleeper per item, one after the other, as a client would; their ids."""
    return [await engine.workflows.start(nap, i, wake_at) for i, wake_at in wake_ats.items()]


async def _suspended_before(engine: Engine, count: int, deadline: datetime) -> int:
    """Wait until ``count`` workflows are suspended, or ``deadline`` comes; the most seen suspended before it."""
    most = 0
    while most < count:
        if engine.now() >= deadline:
            break
        most = max(most, len(engine.workflows.suspended_ids()))
        if most < count:
            await trio.sleep(0.01)
    return most


async def calibrate(engine: Engine, count: int) -> float:
    """Seconds per sleeper on this machine: ``count`` started, timed until all are suspended, then cancelled."""
    far = engine.now() + timedelta(days=1)
    t0 = time.perf_counter()
    ids = await _start(engine, {-2 - k: far for k in range(count)})
    assert await _suspended_before(engine, count, far) == count
    elapsed = time.perf_counter() - t0
    async with trio.open_nursery() as nursery:
        for iid in ids:
            nursery.start_soon(engine.workflows.cancel, iid)
    assert not engine.workflows.suspended_ids()
    return elapsed / count


def durable_run(store: str, n: int) -> Sample:
    """Child process: ``n`` sleeping workflows on a new store."""

    async def main() -> Sample:
        async with Engine.open(store) as engine:
            engine.workflows.register(nap)
            warm = engine.now() + timedelta(seconds=0.01)
            await engine.workflows.wait(await engine.workflows.start(nap, -1, warm))
            per_start = await calibrate(engine, min(CALIBRATION, n))
            offset = float(os.environ.get("BENCH_P1_FIRST_WAKE") or SAFETY * per_start * n + MARGIN)
            _late.clear()
            _slept.clear()
            base = settled_rss_kb()
            t0 = time.perf_counter()
            first = engine.now() + timedelta(seconds=offset)
            wake_ats = {i: first + timedelta(seconds=SPREAD * i / n) for i in range(n)}
            ids = await _start(engine, wake_ats)
            start_s = time.perf_counter() - t0
            all_asleep = await _suspended_before(engine, n, first) == n
            asleep_s = time.perf_counter() - t0
            asleep = settled_rss_kb() - base if all_asleep else None
            for iid in ids:
                inst = await engine.workflows.wait(iid)
                assert inst.status == "completed", inst.error
        assert len(_late) == n, len(_late)
        late = sorted(_late[i] for i in range(n) if _slept[i] < wake_ats[i])  # a real sleep
        not_asleep = 0 if all_asleep else sum(_slept[i] >= first for i in range(n))
        sample = {"start_s": start_s, "first_wake_s": offset, "calibration_ms": per_start * 1e3,
                  "not_asleep": not_asleep, "overdue": n - len(late)}
        if asleep is not None:
            sample.update(sleeping_mb=asleep / 1024, kb_per_sleeping=asleep / n, asleep_s=asleep_s)
        if late:
            sample.update(late_median_ms=statistics.median(late) * 1e3, late_max_ms=late[-1] * 1e3,
                          late_p99_ms=late[max(0, int(len(late) * 0.99) - 1)] * 1e3)
        return sample

    return trio.run(main)
