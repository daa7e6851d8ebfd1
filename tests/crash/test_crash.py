"""Real crashes: a child process killed with SIGKILL at a chosen point, then resumed by a new process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("crash_child.py")


def _spawn(store: Path, log: Path, mode: str, front: str, point: str, step: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(CHILD), str(store), str(log), mode, front, point, step])


def _wait_for(log: Path, line: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while line not in (log.read_text().splitlines() if log.exists() else []):
        assert proc.poll() is None, f"child exited with {proc.returncode} before logging {line!r}"
        assert time.monotonic() < deadline, f"child never logged {line!r}"
        time.sleep(0.005)


@pytest.mark.parametrize("front", ["builder", "decorator"])
@pytest.mark.parametrize(("point", "step"), [("during", "b"), ("after", "b"), ("during", "a"), ("after", "d")])
def test_sigkill_then_resume_never_reruns_a_checkpointed_step(
    tmp_path: Path, front: str, point: str, step: str
) -> None:
    """After a SIGKILL, a new process finishes the workflow; no step whose checkpoint was written runs again."""
    store, log = tmp_path / "s.lmdb", tmp_path / "log"
    child = _spawn(store, log, "start", front, point, step)
    if point == "during":
        _wait_for(log, f"run {step}", child)
        os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    before = log.read_text().splitlines()
    done_before = {line.split()[1] for line in before if line.startswith("done ")}
    resumed = _spawn(store, log, "resume", front, "none", "")
    assert resumed.wait(timeout=60) == 0
    after = log.read_text().splitlines()[len(before):]
    assert after[-1] == "finished completed x+a+b+c+d"
    rerun = {line.split()[1] for line in after if line.startswith("run ")}
    assert not (rerun & done_before), f"checkpointed steps ran again: {rerun & done_before}"
    if point == "during":
        assert step in rerun  # the interrupted step runs again: at least once
    assert rerun | done_before == set("abcd")
