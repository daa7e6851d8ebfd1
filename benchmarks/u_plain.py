"""U: a unit-test style call, ``await wf(...)`` of a 10-step workflow outside any engine.

Outside an engine a ``@workflow`` runs as a plain async function and its
steps run with their retry policies, nothing stored. Timed over 1,000 calls
in one ``trio.run`` after 50 warm-up calls; reported in microseconds per call.
DBOS has no equivalent: its workflows and steps refuse to run before
``DBOS.launch()`` ("Executor accessed before DBOS was launched"), so a DBOS
unit test needs a launched DBOS with a database.
"""

from __future__ import annotations

import time

import trio

from _common import Config, Row, Sample, Spawn, per

from durable import step, workflow

KEY = "U"
TITLE = "unit-test style: await wf() of {u_steps} steps, no engine"
ROWS = [
    Row("us_per_call", "µs per call", peer=False),
    Row("us_per_step", "µs per step", peer=False),
]
PEER_NA = "DBOS workflows cannot run before DBOS.launch() (no plain-function mode)"


@step
async def plain_tick(i: int) -> int:
    """A trivial step."""
    return i


@workflow
async def ten_steps(count: int) -> int:
    """``count`` steps in sequence."""
    total = 0
    for i in range(count):
        total += await plain_tick(i)
    return total


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """One fresh process per repeat."""
    return [spawn(__name__, "durable_run", steps=cfg.sizes.u_steps, calls=cfg.sizes.u_calls)
            for _ in range(cfg.repeats(3))]


def durable_run(steps: int, calls: int) -> Sample:
    """Child process: ``calls`` sequential ``await ten_steps(steps)``."""

    async def main() -> float:
        for _ in range(50):
            await ten_steps(steps)
        t0 = time.perf_counter()
        for _ in range(calls):
            assert await ten_steps(steps) == steps * (steps - 1) // 2
        return time.perf_counter() - t0

    elapsed = trio.run(main)
    return {"us_per_call": per(elapsed, calls), "us_per_step": per(elapsed, calls * steps)}
