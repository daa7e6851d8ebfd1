"""Fencing on PostgreSQL: an engine paused past its lease (SIGSTOP) loses its instance to another engine, and
once it runs again (SIGCONT) its late writes are refused and it stops the instance cleanly.

The paused engine calls its host ``paused-host`` (see tests/crash/pg_fence_child.py): the store judges an
engine on this host by its pid, exactly (a stopped process is alive, so nothing is taken from it), and one on
another host by the age of its heartbeat on the database's clock against its ``lease_ttl``. A paused engine
on another host, or one cut off by a partition, is the case fencing is for.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

CHILD = Path(__file__).with_name("pg_fence_child.py")
TTL = 1.0
HOLD = 1.0  # pg_fence_child.HOLD: how long first sleeps in s2


def _spawn(url: str, schema: str, log: Path, role: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(CHILD), url, schema, str(log), role, str(TTL)])


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _wait_for(log: Path, line: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while line not in _lines(log):
        assert proc.poll() is None, f"child exited with {proc.returncode} before logging {line!r}: {_lines(log)}"
        assert time.monotonic() < deadline, f"child never logged {line!r}: {_lines(log)}"
        time.sleep(0.005)


def test_a_paused_engine_is_fenced_off_and_stops_its_instance_cleanly(
    pg_url: str, pg_store_factory: Callable[..., object], tmp_path: Path
) -> None:
    store = pg_store_factory()
    schema = store.schema  # type: ignore[attr-defined]
    log_a, log_b = tmp_path / "first.log", tmp_path / "second.log"

    async def stored() -> tuple[object, dict[str, object]]:
        inst = await store.get_instance("fence-1", steps=False)  # type: ignore[attr-defined]
        steps = {sr.step_name: (sr.status, sr.output) for sr in  # type: ignore[attr-defined]
                 (await store.get_steps("fence-1")).values()}  # type: ignore[attr-defined]
        return inst, steps

    first = _spawn(pg_url, schema, log_a, "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(log_a, "run s2 first", first)
        os.kill(first.pid, signal.SIGSTOP)  # inside s2, its checkpoint not written
        stopped_at = time.monotonic()
        second = _spawn(pg_url, schema, log_b, "second")
        assert second.wait(timeout=60) == 0, _lines(log_b)
        b = _lines(log_b)
        # second took it over only once first was gone: past first's lease_ttl, by the database's clock
        assert time.monotonic() - stopped_at > TTL * 2 / 3 - 0.05  # its last beat was up to TTL / 3 before the stop
        assert "took second" in b and b.index("took second") < b.index("run s2 second")
        successor_output = "x+s1:first+s2:second+s3:second"
        assert f"finished completed {json.dumps(successor_output)}" in b
        assert [ln for ln in b if ln.startswith("run ")] == ["run s2 second", "run s3 second"]  # s1: checkpointed
        inst, steps = trio.run(stored)
        assert inst is not None and inst.status == "completed" and inst.output == successor_output  # type: ignore[attr-defined]
        expect_steps = {"s1": ("completed", "x+s1:first"), "s2": ("completed", "x+s1:first+s2:second"),
                        "s3": ("completed", successor_output)}
        assert steps == expect_steps

        a_before = len(_lines(log_a))
        # s2's sleep is over (the clock ran on while it was stopped): on SIGCONT its body returns at once
        # and first writes its checkpoint, late; and its heartbeat finds the lease lost.
        time.sleep(max(0.0, stopped_at + HOLD + 0.3 - time.monotonic()))
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=60) == 0, _lines(log_a)
        a = _lines(log_a)
        late = a[a_before:]
        # Its late checkpoint of s2 was refused, and it wrote nothing else for the instance.
        assert "refused put_step s2#0 LeaseLost" in late, a
        assert not [ln for ln in late if ln.startswith("write ")], a
        assert not [ln for ln in late if ln.startswith("run ")], a  # s3 never ran in first
        # It stopped the instance cleanly: its wait() gives the successor's result, and it exits 0.
        assert late[-2:] == [f"finished completed {json.dumps(successor_output)}", "exit"], a
        # Nothing of the successor's progress was overwritten.
        assert trio.run(stored)[1] == expect_steps
        inst = trio.run(stored)[0]
        assert inst.status == "completed" and inst.output == successor_output  # type: ignore[attr-defined]
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait()
