"""W4: resume after a real crash: replay cost per finished step.

A child process runs a workflow of 10,000 steps on a fresh LMDB store and
kills itself with ``SIGKILL`` inside the body of step 10,000, so steps
1..9,999 are checkpointed and step 10,000 is not. The crashed store is then
copied once per repeat, and a new process times, on each copy, opening the
store, ``resume()`` and ``wait()`` until the instance completes: 9,999 steps
replay from their checkpoints and step 10,000 runs (once: that is checked).

Reported: the whole open -> completion time, the same per finished step (the
target), and, for information, the time from the workflow body's entry to
completion per finished step (replay alone, without opening the store).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time

import trio

from _common import MARKER, Config, Row, Sample, Spawn, per
from durable import Engine, step, workflow

KEY = "W4"
TITLE = "resume a {w4_steps:,}-step workflow SIGKILLed in its last step"
ROWS = [
    Row("total_ms", "open -> completion, ms"),
    Row("us_per_step", "µs per finished step", limit=20),
    Row("replay_us_per_step", "µs per step, body entry -> done"),
    Row("crash_us_per_step", "µs per step, first run (until kill)"),
]
INSTANCE_ID = "w4-resume"

_kill_at: int | None = None  # the step index whose body kills the process (first run only)
_executed = 0  # step bodies executed in this process
_entered_at = 0.0  # when the workflow body last started (replay begins there)
_started_at = 0.0


def report_and_die(result: Sample) -> None:
    """Print ``result`` for the parent (see ``_child.py``), then SIGKILL this process."""
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@step
async def numbered(i: int) -> int:
    """A trivial step; step ``_kill_at`` kills the process before returning."""
    global _executed
    _executed += 1
    if i == _kill_at:
        report_and_die({"crash_us_per_step": per(time.perf_counter() - _started_at, i)})
    return i


@workflow
async def long_chain(count: int) -> int:
    """``count`` steps in sequence."""
    global _entered_at
    _entered_at = time.perf_counter()  # a timing side effect only: replay takes the same path
    total = 0
    for i in range(count):
        total += await numbered(i)
    return total


def copy_store(src: str, dst: str) -> None:
    """Copy a store (an LMDB directory, or a SQLite file with its journal) while nothing has it open."""
    if os.path.isdir(src):
        shutil.copytree(src, dst)
        return
    for suffix in ("", "-journal", "-wal", "-shm"):
        if os.path.exists(src + suffix):
            shutil.copy2(src + suffix, dst + suffix)


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """One crashed run, then one fresh process per repeat resuming a copy of its store."""
    n = cfg.sizes.w4_steps
    module, crash, replay, ext = ((__name__, "durable_crash", "durable_replay", "") if side == "durable"
                                  else ("peer_dbos", "w4_crash", "w4_replay", ".sqlite"))
    crashed = os.path.join(cfg.workdir, "crashed") + ext
    first = spawn(module, crash, expect_kill=True, store=crashed, n=n)
    samples = []
    for i in range(cfg.repeats(3)):
        copy = os.path.join(cfg.workdir, f"copy-{i}") + ext
        copy_store(crashed, copy)
        samples.append({**first, **spawn(module, replay, store=copy, n=n)})
    return samples


def durable_crash(store: str, n: int) -> Sample:
    """Child process: run the ``n``-step workflow until step ``n`` kills the process."""
    global _kill_at, _started_at
    _kill_at = n - 1

    async def main() -> None:
        global _started_at
        async with Engine.open(store) as engine:
            engine.workflows.register(long_chain)
            _started_at = time.perf_counter()
            await engine.workflows.start(long_chain, n, id=INSTANCE_ID)
            await engine.workflows.wait(INSTANCE_ID)

    trio.run(main)
    raise AssertionError("the workflow finished: the process should have been killed in its last step")


def durable_replay(store: str, n: int) -> Sample:
    """Child process: open the crashed store, resume, wait for completion; times each part."""

    async def main() -> Sample:
        t0 = time.perf_counter()
        async with Engine.open(store) as engine:
            engine.workflows.register(long_chain)
            t_open = time.perf_counter()
            resumed = await engine.workflows.resume()
            t_resume = time.perf_counter()
            instance = await engine.workflows.wait(INSTANCE_ID)
            t_done = time.perf_counter()
        assert resumed == [INSTANCE_ID], resumed
        assert instance.status == "completed" and instance.output == n * (n - 1) // 2, instance
        assert _executed == 1, f"{_executed} step bodies ran on resume; only step {n} should have"
        finished = n - 1
        return {
            "total_ms": (t_done - t0) * 1e3, "us_per_step": per(t_done - t0, finished),
            "replay_us_per_step": per(t_done - _entered_at, finished),
            "open_ms": (t_open - t0) * 1e3, "resume_call_ms": (t_resume - t_open) * 1e3,
        }

    return trio.run(main)
