"""W2: 1,000 workflows of 3 trivial steps started at once: steps/s and workflows/s.

All ``start()`` calls are made concurrently (one trio task each, so their
creations share group commits), then every instance is waited for. Timed from
the first ``start()`` to the last completion; a warm-up of 10 workflows runs
first in the same engine.
"""

from __future__ import annotations

import time

import trio

from _common import Config, Row, Sample, Spawn, simple_repeats, written_bytes
from durable import Engine, step, workflow

KEY = "W2"
TITLE = "{w2_workflows:,} workflows x 3 steps, started at once"
ROWS = [
    Row("steps_per_s", "steps per second", better="higher", limit=20_000, ratio=20, fmt="{:,.0f}"),
    Row("workflows_per_s", "workflows per second", better="higher", fmt="{:,.0f}"),
    Row("kb_written", "KB written to disk per workflow"),
]


@step
async def first(i: int) -> int:
    """A trivial step."""
    return i + 1


@step
async def second(i: int) -> int:
    """A trivial step."""
    return i * 2


@step
async def third(i: int) -> int:
    """A trivial step."""
    return i - 1


@workflow
async def three_steps(i: int) -> int:
    """Three steps in sequence."""
    return await third(await second(await first(i)))


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """One fresh process and store per repeat."""
    module, function = (__name__, "durable_run") if side == "durable" else ("peer_dbos", "w2")
    return simple_repeats(module, function, cfg, spawn, 3, n=cfg.sizes.w2_workflows)


async def start_all(engine: Engine, n: int) -> list[str]:
    """Start ``n`` instances concurrently; their ids in order."""
    ids: list[str] = [""] * n

    async def start_one(i: int) -> None:
        ids[i] = await engine.workflows.start(three_steps, i)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(start_one, i)
    return ids


def durable_run(store: str, n: int) -> Sample:
    """Child process: start ``n`` workflows at once on a new store and wait for all."""

    async def main() -> tuple[float, int]:
        async with Engine.open(store) as engine:
            engine.workflows.register(three_steps)
            for wid in await start_all(engine, 10):  # warm-up
                await engine.workflows.wait(wid)
            written = written_bytes()
            t0 = time.perf_counter()
            ids = await start_all(engine, n)
            for i, wid in enumerate(ids):
                instance = await engine.workflows.wait(wid)
                assert instance.status == "completed" and instance.output == (i + 1) * 2 - 1, instance
            return time.perf_counter() - t0, written_bytes() - written

    elapsed, written = trio.run(main)
    return {"seconds": elapsed, "steps_per_s": 3 * n / elapsed, "workflows_per_s": n / elapsed,
            "kb_written": written / n / 1e3}
