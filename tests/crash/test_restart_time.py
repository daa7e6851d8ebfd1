"""Time across restarts, with real crashes.

Each test runs a scenario of tests/crash/restart_child.py in a child process on an
LMDB store, SIGKILLs it (the parent does, on a line the child logs, or the
child does itself at an exact point), then resumes the store in a new engine
in this process, under a ``MockClock``: virtual time stands still unless the
test jumps it or trio autojumps to a sleeping task's deadline, so nothing
waits in real time.

The engine's wall clock follows trio's clock from an epoch taken at its first
reading in a trio run (``durable/_model/clock.py``), so a test reads ``engine.now()``
once and then ``clock.jump()``s: the engine sees that much wall-clock time
pass, as if the process had been down that long.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from trio.testing import MockClock

sys.path.insert(0, str(Path(__file__).parent))

import restart_child  # noqa: E402
from restart_child import INTERVAL, TIMEOUT  # noqa: E402

from durable import Engine  # noqa: E402

CHILD = Path(__file__).with_name("restart_child.py")
T = TypeVar("T")


def _kill_child(tmp_path: Path, scenario: str, until: str | None) -> tuple[Path, Path, list[str]]:
    """Run SCENARIO in a child; SIGKILL it once it logs ``until`` (or wait for it to kill itself).

    Returns (store, log, the child's log lines).
    """
    store, log = tmp_path / "s.lmdb", tmp_path / "log"
    proc = subprocess.Popen([sys.executable, str(CHILD), str(store), str(log), scenario])
    try:
        if until is not None:
            deadline = time.monotonic() + 60
            while until not in (log.read_text().splitlines() if log.exists() else []):
                assert proc.poll() is None, f"child exited with {proc.returncode} before logging {until!r}"
                assert time.monotonic() < deadline, f"child never logged {until!r}"
                time.sleep(0.005)
            os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return store, log, log.read_text().splitlines()


def _resume(store: Path, log: Path, clock: MockClock, body: Callable[[Engine], Awaitable[T]]) -> T:
    """Run ``body(engine)`` on a new engine over ``store``, in a trio run under ``clock``."""
    restart_child.configure(log, blocking=False)

    async def main() -> T:
        async with Engine.open(store) as engine:
            restart_child.register(engine)
            return await body(engine)

    return trio.run(main, clock=clock)


def _runs(lines: list[str], instance_id: str) -> list[tuple[str, int, float]]:
    """(step, attempt, trio time) of every step execution of one instance logged in ``lines``."""
    out = []
    for line in lines:
        parts = line.split()
        if parts[:1] == ["run"] and parts[1] == instance_id:
            out.append((parts[2], int(parts[3]), float(parts[4])))
    return out


# -- a deadline that passed while no process ran the instance --------------------------


@pytest.mark.parametrize("down_for", [TIMEOUT + 1, 0.0], ids=["past-deadline", "control-within-deadline"])
def test_deadline_passed_while_killed_times_out_on_resume(tmp_path: Path, down_for: float) -> None:
    """Killed mid-step; if the deadline passed meanwhile, resume ends it timed_out and runs nothing more.

    The control (no time passes) resumes and finishes it, re-running the
    interrupted step: so the first case's outcome is the deadline's doing.
    """
    store, log, child = _kill_child(tmp_path, "deadline", until="block d-1 b")
    assert [r[:2] for r in _runs(child, "d-1")] == [("a", 1), ("b", 1)]
    clock = MockClock()  # no autojump: nothing here may wait, and a deadline must never be jumped to

    async def body(engine: Engine) -> Any:
        stored = await engine.store.get_instance("d-1")
        assert stored is not None and stored.status in ("pending", "running") and stored.deadline is not None
        start = engine.now()  # the engine's wall clock starts from the real time now
        clock.jump(down_for)  # ... and the process was down this much longer
        resumed = await engine.workflows.resume()
        inst = await engine.workflows.wait("d-1")
        steps = await engine.store.get_steps("d-1")
        return stored, start, resumed, inst, steps

    stored, start, resumed, inst, steps = _resume(store, log, clock, body)
    after = log.read_text().splitlines()[len(child):]
    if down_for > 0:
        assert stored.deadline < start + timedelta(seconds=down_for)  # the jump carried "now" past it
        assert resumed == []
        assert inst.status == "timed_out"
        assert inst.error_type == "WorkflowTimeout"
        assert inst.completed_at is not None and inst.completed_at >= stored.deadline
        assert inst.output is None
        assert _runs(after, "d-1") == []  # neither the interrupted step b nor c ran again
        assert "c#0" not in steps and steps["a#0"].status == "completed"
        assert steps.get("b#0") is None or steps["b#0"].status != "completed"
    else:
        assert stored.deadline > start
        assert resumed == ["d-1"]
        assert inst.status == "completed" and inst.output == "xabc"
        assert [r[:2] for r in _runs(after, "d-1")] == [("b", 1), ("c", 1)]  # a replayed, b at least once


# -- a retry waiting out its backoff when the process died --------------------------------


def test_retry_backoff_resumes_with_its_attempt_count_and_waits_only_the_rest(tmp_path: Path) -> None:
    """Killed while waiting out the delay after attempt 1: the resumed process runs attempt 2, at next_attempt_at.

    The child kills itself once the waiting checkpoint (attempt 1, next
    attempt due ``INTERVAL`` s later) is committed. The new process starts its
    clock, jumps 40 s (the time it was "down"), and resumes: attempt 2 must
    come after the rest of the interval (about 60 s), not a whole one, and
    attempt 3 a whole interval after attempt 2 (backoff_rate 1, no jitter).
    """
    store, log, child = _kill_child(tmp_path, "backoff", until=None)
    assert [r[:2] for r in _runs(child, "r-1")] == [("a", 1), ("flaky", 1)]
    waiting = [line for line in child if line.startswith("waiting r-1 ")]
    assert len(waiting) == 1 and waiting[0].split()[2] == "1"
    down = 40.0
    clock = MockClock(autojump_threshold=0.05)  # jumps to the retry's sleep deadline, the only timer
    retries: list[Any] = []

    async def body(engine: Engine) -> Any:
        sr = (await engine.store.get_steps("r-1"))["flaky#0"]
        engine.now()  # start the engine's wall clock
        clock.jump(down)
        now, t0 = engine.now(), trio.current_time()
        engine.events.on("workflow.step.retry", retries.append)
        resumed = await engine.workflows.resume()
        inst = await engine.workflows.wait("r-1")
        final = (await engine.store.get_steps("r-1"))["flaky#0"]
        return sr, now, t0, resumed, inst, final

    sr, now, t0, resumed, inst, final = _resume(store, log, clock, body)
    assert resumed == ["r-1"]
    assert sr.status == "running" and sr.attempts == 1 and sr.next_attempt_at is not None
    assert sr.next_attempt_at.isoformat() == waiting[0].split()[3]
    rest = (sr.next_attempt_at - now).total_seconds()
    assert 0 < rest < INTERVAL - down  # the child's real seconds since the failure also count

    after = _runs(log.read_text().splitlines()[len(child):], "r-1")
    assert [r[:2] for r in after] == [("flaky", 2), ("flaky", 3), ("c", 1)]  # a replayed; attempt count kept
    (_, _, t2), (_, _, t3), _ = after
    assert t2 - t0 == pytest.approx(rest, abs=1e-3)  # waited only the rest of the interval
    assert t3 - t2 == pytest.approx(INTERVAL, abs=1e-3)
    assert [(e.attempt, e.max_attempts, e.delay) for e in retries] == [(2, 5, INTERVAL)]
    assert inst.status == "completed" and inst.output == "xafc"
    assert final.status == "completed" and final.attempts == 3 and final.next_attempt_at is None


# -- a cancelled instance stays cancelled ---------------------------------------------------


@pytest.mark.parametrize("scenario", ["cancel-pending", "cancel-later", "cancel-kill"])
def test_cancelled_instance_stays_cancelled_across_a_kill(tmp_path: Path, scenario: str) -> None:
    """cancel() then SIGKILL: a new process neither resumes nor runs the cancelled instance.

    ``cancel-pending``: cancelled before it ran a step, killed later while
    another instance sleeps in a step; ``cancel-later``: cancelled while its
    step ``b`` ran, killed later the same way; ``cancel-kill``: cancelled
    while ``b`` ran, killed the moment ``cancel()`` returned.
    """
    until = None if scenario == "cancel-kill" else "block c-2 z"
    store, log, child = _kill_child(tmp_path, scenario, until=until)
    assert "cancel c-1 True" in child
    cancel_at = child.index("cancel c-1 True")
    ran_before = [r[:2] for r in _runs(child[:cancel_at], "c-1")]
    assert ran_before == ([] if scenario == "cancel-pending" else [("a", 1), ("b", 1)])
    assert _runs(child[cancel_at:], "c-1") == []

    async def body(engine: Engine) -> Any:
        resumed = await engine.workflows.resume()
        other = await engine.workflows.wait("c-2") if "c-2" in resumed else None
        again = await engine.workflows.resume()
        inst = await engine.workflows.wait("c-1")
        return resumed, other, again, inst, await engine.store.get_steps("c-1")

    for restart in range(2):  # and once more, on yet another engine
        clock = MockClock(autojump_threshold=0.05)
        resumed, other, again, inst, steps = _resume(store, log, clock, body)
        assert "c-1" not in resumed and "c-1" not in again
        if restart == 0 and scenario != "cancel-kill":
            assert resumed == ["c-2"]  # the other instance does resume, and finishes
            assert other is not None and other.status == "completed" and other.output == "yz"
        else:
            assert resumed == []
        assert inst.status == "cancelled" and inst.error_type == "WorkflowCancelled"
        assert inst.output is None
        assert "c#0" not in steps
        assert steps.get("b#0") is None or steps["b#0"].status != "completed"
        if scenario == "cancel-pending":
            assert steps == {}
    assert _runs(log.read_text().splitlines()[len(child):], "c-1") == []  # no step of c-1 ran after the kill


# -- a durable sleep across a kill ------------------------------------------------------


@pytest.mark.parametrize("down_for", [restart_child.NAP + 5, 1000.0], ids=["woke-while-down", "still-asleep"])
def test_durable_sleep_survives_a_kill(tmp_path: Path, down_for: float) -> None:
    """Killed while unloaded by a durable sleep: after its wake-up time the resumed run continues at once;
    before it, it waits only the rest. The step before the sleep never runs again."""
    from datetime import datetime

    store, log, child = _kill_child(tmp_path, "nap", until=None)
    [wake_line] = [line for line in child if line.startswith("suspended n-1 ")]
    wake_at = datetime.fromisoformat(wake_line.split()[2])
    assert [r[:2] for r in _runs(child, "n-1")] == [("a", 1)]
    clock = MockClock(autojump_threshold=0.05)

    async def body(engine: Engine) -> Any:
        start = engine.now()
        clock.jump(down_for)
        t0 = trio.current_time()
        assert await engine.workflows.resume() == ["n-1"]
        inst = await engine.workflows.wait("n-1")
        return start, t0, inst

    start, t0, inst = _resume(store, log, clock, body)
    after = log.read_text().splitlines()[len(child):]
    assert inst.status == "completed" and inst.output == "xac"
    assert [r[:2] for r in _runs(after, "n-1")] == [("c", 1)]  # a replayed; c once
    [(_, _, ran_at)] = _runs(after, "n-1")
    remaining = (wake_at - start).total_seconds() - down_for
    if remaining <= 0:
        assert ran_at - t0 < 1.0  # at once
    else:
        assert remaining - 1.0 < ran_at - t0 < remaining + 1.0  # only the rest of the sleep
    assert inst.step_results["sleep"].status == "completed"
