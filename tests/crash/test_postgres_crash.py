"""Real crashes on PostgreSQL: a child process running a workflow on a ``PostgresStore`` is SIGKILLed at a
chosen point, then a new process resumes it from the same schema; no checkpointed step runs again.

The children are tests/crash/crash_child.py's, unchanged, run through tests/crash/pg_wrap.py (which puts
them on this test's own schema of the session's server, see ``pg_url`` in tests/conftest.py). Both
processes are on this host: the dead child's lease is taken over at once, its pid being gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

WRAP = Path(__file__).with_name("pg_wrap.py")
CHILD = Path(__file__).with_name("crash_child.py")


def _spawn(url: str, schema: str, log: Path, mode: str, front: str, point: str, step: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(WRAP), schema, str(CHILD), url, str(log), mode, front, point, step])


def _wait_for(log: Path, line: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while line not in (log.read_text().splitlines() if log.exists() else []):
        assert proc.poll() is None, f"child exited with {proc.returncode} before logging {line!r}"
        assert time.monotonic() < deadline, f"child never logged {line!r}"
        time.sleep(0.005)


@pytest.mark.parametrize("front", ["builder", "decorator"])
@pytest.mark.parametrize(("point", "step"), [("during", "b"), ("after", "b"), ("during", "a"), ("after", "d")])
def test_sigkill_then_resume_never_reruns_a_checkpointed_step(
    pg_url: str, pg_store_factory: Callable[..., object], tmp_path: Path, front: str, point: str, step: str
) -> None:
    """After a SIGKILL, a new process finishes the workflow from the same schema; no step whose checkpoint
    was committed runs again, and each stored checkpoint holds the value of the run that wrote it."""
    import trio

    schema = pg_store_factory().schema  # type: ignore[attr-defined]
    log = tmp_path / "log"
    child = _spawn(pg_url, schema, log, "start", front, point, step)
    if point == "during":
        _wait_for(log, f"run {step}", child)
        os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    before = log.read_text().splitlines()
    done_before = {line.split()[1] for line in before if line.startswith("done ")}

    store = pg_store_factory()

    async def stored() -> dict[str, object]:
        return {sr.step_name: sr.status for sr in (await store.get_steps("crash-1")).values()}  # type: ignore[attr-defined]

    # Every step logged done (after its checkpoint's commit) is in the schema, completed.
    at_kill = trio.run(stored)
    assert all(at_kill.get(name) == "completed" for name in done_before), (done_before, at_kill)

    resumed = _spawn(pg_url, schema, log, "resume", front, "none", "")
    assert resumed.wait(timeout=60) == 0
    after = log.read_text().splitlines()[len(before):]
    assert after[-1] == "finished completed x+a+b+c+d"
    rerun = {line.split()[1] for line in after if line.startswith("run ")}
    assert not (rerun & done_before), f"checkpointed steps ran again: {rerun & done_before}"
    if point == "during":
        assert step in rerun  # the interrupted step runs again: at least once
    assert rerun | done_before == set("abcd")
    final = trio.run(stored)
    assert {name: final.get(name) for name in "abcd"} == dict.fromkeys("abcd", "completed")
