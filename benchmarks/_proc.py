"""Running one measurement in a fresh child process (the parent's side of ``_child.py``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

from _common import MARKER, Sample, Spawn

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
DUMP_WAIT = 2.0
"""Seconds a child past its limit gets to write its stacks (on ``SIGUSR1``) before its group is killed."""


class ChildFailed(Exception):
    """A child process failed, hung, or did not report a result; carries its stderr."""


class ChildTimedOut(ChildFailed):
    """A child process ran past its time limit; its whole process group was killed."""

    def __init__(self, message: str, limit: float) -> None:
        super().__init__(message)
        self.limit = limit


def _result(stdout: str) -> Sample | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            parsed: Sample = json.loads(line[len(MARKER):])
            return parsed
    return None


_THREAD = re.compile(r"^(Current thread|Thread) 0x[0-9a-f]+ \(most recent call first\):$", re.M)


def condense_stacks(stderr: str, limit: int = 8000) -> str:
    """A child's stderr with its ``faulthandler`` dump condensed: each distinct stack once, with a count.

    What it wrote before the dump is kept (its end). ``faulthandler`` dumps
    at most 100 threads, newest first; a child with 10,000 threads waiting on
    the same lock shows one stack "x 100".
    """
    first = _THREAD.search(stderr)
    if first is None:
        return stderr[-limit:]
    before, dump = stderr[:first.start()], stderr[first.start():]
    stacks: dict[str, list[str]] = {}
    more = ""
    for block in re.split(r"\n\s*\n", dump):
        lines = block.strip("\n").splitlines()
        if lines == ["..."]:
            more = "\n\n(more threads, not dumped)"
            continue
        if not lines:
            continue
        head, frames = (lines[0], lines[1:]) if _THREAD.match(lines[0]) else ("", lines)
        stacks.setdefault("\n".join(frames) or "  (no Python frame)", []).append(head)
    parts = [f"{len(heads)} thread(s){' (current among them)' if any(h.startswith('Current') for h in heads) else ''}:"
             f"\n{frames}" for frames, heads in stacks.items()]
    text = "stacks when the limit came (faulthandler: at most 100 threads, newest first):\n" + "\n\n".join(parts) + more
    return (before[-2000:] + "\n" + text)[:limit]


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child's process group (the child leads it: ``start_new_session``), threads and all."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _drain(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """What the child wrote, once its group is dead; give up on pipes a stray grandchild keeps open."""
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return "", "(its output pipes stayed open after the kill)"


def make_spawn(cwd: str, limit: float, log: Any = None) -> Spawn:
    """A :data:`~_common.Spawn` running children with ``sys.executable`` in ``cwd``.

    Each child runs in a process group of its own and may run ``limit``
    seconds: past that it is sent ``SIGUSR1`` (it dumps its threads' stacks,
    see ``_child.py``), and after :data:`DUMP_WAIT` seconds more its whole
    process group is killed (``SIGKILL``), whatever it is doing: a child with
    10,000 threads waiting on a connection pool holds the CPUs until then.
    That raises :class:`ChildTimedOut`, with the end of its stderr.
    Dirty pages are flushed (``os.sync()``) before each child starts, so the
    write-back of an earlier measurement (DBOS's, say) does not land on its
    syncs. With a ``log``, each child is printed as it starts, and its wall
    time when it ends.
    """

    def spawn(module: str, function: str, *, expect_kill: bool = False, **kwargs: Any) -> Sample:
        cmd = [sys.executable, CHILD, module, function, json.dumps(kwargs)]
        os.sync()
        env = dict(os.environ, BENCH_CHILD_TIMEOUT=str(limit))
        if log is not None:
            print(f"    $ {module}.{function}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
                  f"  [limit {limit:g} s]", file=log, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own group: killed whole; Ctrl-C is handled here
        timed_out = False
        try:
            try:
                stdout, stderr = proc.communicate(timeout=limit)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    proc.send_signal(signal.SIGUSR1)  # dump the stacks (_child.py), reading its pipes meanwhile
                    _, stderr = proc.communicate(timeout=DUMP_WAIT)  # it ended by itself after all
                    _kill_group(proc)  # anything it left in its group
                except subprocess.TimeoutExpired:
                    _kill_group(proc)
                    _, stderr = _drain(proc)
        except BaseException:
            _kill_group(proc)  # Ctrl-C, or any error here: never leave a child running
            proc.wait()
            raise
        if timed_out:
            if log is not None:
                print(f"      did not finish in {limit:g} s: process group killed", file=log, flush=True)
            raise ChildTimedOut(f"{module}.{function} did not finish in {limit:g} s (its process group was killed)"
                                f"\n{condense_stacks(stderr)}", limit)
        if log is not None:
            print(f"      {time.perf_counter() - t0:.1f} s", file=log, flush=True)
        result = _result(stdout)
        expected = -signal.SIGKILL if expect_kill else 0
        if proc.returncode != expected or result is None:
            raise ChildFailed(
                f"{module}.{function} exited with {proc.returncode} (expected {expected})"
                f"{'' if result is not None else ' without a result'}\n{stderr[-6000:]}"
            )
        return result

    return spawn
