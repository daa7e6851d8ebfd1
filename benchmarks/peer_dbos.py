"""The peer: the same workloads on DBOS (``dbos`` 3.4) with its SQLite system database.

DBOS is configured with ``system_database_url="sqlite:///<file>"``; its
SQLite connections use SQLite's defaults, ``journal_mode=DELETE`` and
``synchronous=FULL``, so every commit is fsync'd: fully durable, like
durable's LMDB store. DBOS runs on asyncio; every workflow and step here is
``async`` and each measurement runs in one ``asyncio.run``.

What each workload uses:

- W1: one ``@DBOS.workflow`` awaiting N ``@DBOS.step`` calls in sequence.
- W2: N ``DBOS.start_workflow_async`` calls made at once (``asyncio.gather``),
  then every handle's ``get_result()``.
- W3: one workflow doing ``asyncio.gather`` of N step calls (DBOS supports
  concurrent steps in an async workflow; ids are assigned in call order).
- W4: the workflow killed in its last step is recovered by ``DBOS.launch()``
  in a new process (DBOS re-enqueues pending workflows on its internal queue,
  polled every second, which adds up to ~1 s to the total); completion is
  detected by polling the workflow's status every 5 ms.
- W5: in flight, as for durable, with an ``asyncio.Event``; the finished
  database is built by running one real workflow and cloning its rows (every
  table keyed by ``workflow_uuid``) under N new ids with one SQL statement
  per table.
- U: not comparable: DBOS workflows refuse to run before ``DBOS.launch()``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from dbos import DBOS, SetWorkflowID, WorkflowHandleAsync

from _common import MARKER, Sample, peak_rss_kb, per, settled_rss_kb, written_bytes

T = TypeVar("T")
INSTANCE_ID = "w4-resume"

_kill_at: int | None = None
_executed = 0
_entered_at = 0.0
_started_at = 0.0
_gate: asyncio.Event | None = None
_entered = 0


def _launch(store: str) -> None:
    DBOS(config={"name": "durable-bench", "system_database_url": f"sqlite:///{os.path.abspath(store)}",
                 "log_level": "WARNING"})
    DBOS.launch()


def _run(store: str, body: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run`` of ``body`` with DBOS launched on ``store`` around it."""

    async def main() -> T:
        _launch(store)
        return await body()

    try:
        return asyncio.run(main())
    finally:
        DBOS.destroy()


# -- workflows and steps ---------------------------------------------------


@DBOS.step()
async def tick(i: int) -> int:
    """A trivial step."""
    return i


@DBOS.workflow()
async def sequential(count: int) -> int:
    """``count`` steps in sequence (W1, W4)."""
    global _entered_at
    _entered_at = time.perf_counter()
    total = 0
    for i in range(count):
        total += await numbered(i)
    return total


@DBOS.step()
async def numbered(i: int) -> int:
    """A trivial step; step ``_kill_at`` kills the process before returning (W4)."""
    global _executed
    _executed += 1
    if i == _kill_at:
        sys.stdout.write(MARKER + json.dumps({"crash_us_per_step": per(time.perf_counter() - _started_at, i)}) + "\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return i


@DBOS.workflow()
async def three_steps(i: int) -> int:
    """Three steps in sequence (W2)."""
    return await tick(await tick(await tick(i)))


@DBOS.workflow()
async def fan_out(count: int) -> int:
    """``count`` concurrent steps (W3)."""
    return sum(await asyncio.gather(*(tick(i) for i in range(count))))


@DBOS.step()
async def hold(i: int) -> int:
    """Block until the gate opens (W5)."""
    global _entered
    _entered += 1
    assert _gate is not None
    await _gate.wait()
    return i


@DBOS.workflow()
async def held(i: int) -> int:
    """One step that blocks until the gate opens (W5)."""
    return await hold(i)


@DBOS.workflow()
async def one_step(i: int) -> int:
    """One trivial step (W5's finished database)."""
    return await tick(i)


async def _result(workflow: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    handle: WorkflowHandleAsync[T] = await DBOS.start_workflow_async(workflow, *args)
    return await handle.get_result()


async def _start_all(workflow: Callable[..., Coroutine[Any, Any, Any]], n: int) -> list[WorkflowHandleAsync[Any]]:
    return list(await asyncio.gather(*(DBOS.start_workflow_async(workflow, i) for i in range(n))))


# -- W1 .. W3 --------------------------------------------------------------


def w1(store: str, n: int) -> Sample:
    """W1 on DBOS: one workflow of ``n`` sequential steps."""

    async def body() -> float:
        await _result(sequential, 10)  # warm-up
        t0 = time.perf_counter()
        assert await _result(sequential, n) == n * (n - 1) // 2
        return time.perf_counter() - t0

    elapsed = _run(store + ".sqlite", body)
    return {"seconds": elapsed, "us_per_step": per(elapsed, n)}


def w2(store: str, n: int) -> Sample:
    """W2 on DBOS: ``n`` workflows of 3 steps started at once."""

    async def body() -> tuple[float, int]:
        for h in await _start_all(three_steps, 10):  # warm-up
            await h.get_result()
        written = written_bytes()
        t0 = time.perf_counter()
        handles = await _start_all(three_steps, n)
        results = await asyncio.gather(*(h.get_result() for h in handles))
        elapsed = time.perf_counter() - t0
        assert results == list(range(n)), results[:5]
        return elapsed, written_bytes() - written

    elapsed, written = _run(store + ".sqlite", body)
    return {"seconds": elapsed, "steps_per_s": 3 * n / elapsed, "workflows_per_s": n / elapsed,
            "kb_written": written / n / 1e3}


def w3(store: str, n: int) -> Sample:
    """W3 on DBOS: one workflow gathering ``n`` steps."""

    async def body() -> float:
        await _result(fan_out, 10)  # warm-up
        t0 = time.perf_counter()
        assert await _result(fan_out, n) == n * (n - 1) // 2
        return time.perf_counter() - t0

    elapsed = _run(store + ".sqlite", body)
    return {"seconds": elapsed, "total_ms": elapsed * 1e3, "us_per_branch": per(elapsed, n)}


# -- W4 ----------------------------------------------------------------------


def w4_crash(store: str, n: int) -> Sample:
    """W4 on DBOS: run the ``n``-step workflow until its last step kills the process."""
    global _kill_at
    _kill_at = n - 1

    async def body() -> None:
        global _started_at
        _started_at = time.perf_counter()
        with SetWorkflowID(INSTANCE_ID):
            handle = await DBOS.start_workflow_async(sequential, n)
        await handle.get_result()

    _run(store, body)
    raise AssertionError("the workflow finished: the process should have been killed in its last step")


def w4_replay(store: str, n: int) -> Sample:
    """W4 on DBOS: launch on the crashed database (recovery), poll until the workflow succeeds."""

    async def main() -> Sample:
        t0 = time.perf_counter()
        _launch(store)
        t_open = time.perf_counter()
        while True:
            status = await DBOS.get_workflow_status_async(INSTANCE_ID)
            assert status is not None
            if status.status not in ("PENDING", "ENQUEUED"):
                break
            await asyncio.sleep(0.005)
        t_done = time.perf_counter()
        assert status.status == "SUCCESS", status
        assert _executed == 1, f"{_executed} step bodies ran on recovery; only step {n} should have"
        finished = n - 1
        return {"total_ms": (t_done - t0) * 1e3, "us_per_step": per(t_done - t0, finished),
                "replay_us_per_step": per(t_done - _entered_at, finished), "open_ms": (t_open - t0) * 1e3}

    try:
        return asyncio.run(main())
    finally:
        DBOS.destroy()


# -- W5 ----------------------------------------------------------------------


def w5_inflight(store: str, n: int) -> Sample:
    """W5 on DBOS: RSS with ``n`` workflows blocked inside a step at once."""

    async def body() -> Sample:
        global _gate, _entered
        _gate = asyncio.Event()
        _gate.set()
        for h in await _start_all(held, 100):  # warm-up
            await h.get_result()
        baseline = settled_rss_kb()
        _gate, _entered = asyncio.Event(), 0
        handles = await _start_all(held, n)
        async with asyncio.timeout(600):
            while _entered < n:
                await asyncio.sleep(0.01)
        loaded, peak, threads = settled_rss_kb(), peak_rss_kb(), threading.active_count()
        _gate.set()
        assert await asyncio.gather(*(h.get_result() for h in handles)) == list(range(n))
        return {"baseline_mb": baseline / 1024, "inflight_mb": loaded / 1024, "peak_mb": peak / 1024,
                "peak_end_mb": peak_rss_kb() / 1024, "kb_per_inflight": (loaded - baseline) / n,
                "threads": threads}

    return _run(store, body)


def w5_fill(store: str, n: int) -> Sample:
    """W5 on DBOS: one real finished workflow, its rows cloned ``n`` times with SQL."""

    async def body() -> None:
        with SetWorkflowID("template"):
            handle = await DBOS.start_workflow_async(one_step, 7)
        assert await handle.get_result() == 7

    _run(store, body)
    t0 = time.perf_counter()
    con = sqlite3.connect(store)
    try:
        with con:
            con.execute("CREATE TEMP TABLE seq AS WITH RECURSIVE s(i) AS "
                        "(SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < ?) SELECT i FROM s", (n - 1,))
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                columns = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
                if "workflow_uuid" not in columns:
                    continue
                select = ", ".join("printf('done-%07d', seq.i)" if c == "workflow_uuid" else f't."{c}"'
                                   for c in columns)
                names = ", ".join(f'"{c}"' for c in columns)
                con.execute(f'INSERT INTO "{table}" ({names}) SELECT {select} FROM "{table}" AS t, seq '
                            "WHERE t.workflow_uuid = 'template'")
        count = con.execute("SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'").fetchone()[0]
        assert count == n + 1, count
    finally:
        con.close()
    return {"fill_s": time.perf_counter() - t0, "store_mb": os.path.getsize(store) / 1e6}


def w5_open_rss(store: str) -> Sample:
    """W5 on DBOS: RSS after launching on ``store`` (recovery included) and running one workflow."""

    async def main() -> Sample:
        t0 = time.perf_counter()
        _launch(store)
        elapsed = time.perf_counter() - t0
        assert await _result(one_step, 1) == 1
        return {"rss_mb": settled_rss_kb() / 1024, "open_resume_ms": elapsed * 1e3}

    try:
        return asyncio.run(main())
    finally:
        DBOS.destroy()
