"""Running one measurement in a fresh child process (the parent's side of ``_child.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

from _common import MARKER, Sample, Spawn

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")


class ChildFailed(Exception):
    """A child process failed, hung, or did not report a result; carries its stderr."""


def _result(stdout: str) -> Sample | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            parsed: Sample = json.loads(line[len(MARKER):])
            return parsed
    return None


def make_spawn(cwd: str, timeout: float, log: Any = None) -> Spawn:
    """A :data:`~_common.Spawn` running children with ``sys.executable`` in ``cwd``.

    A child that runs longer than ``timeout`` seconds dumps its threads' stacks
    (``faulthandler``) and exits; its stderr ends up in :class:`ChildFailed`.
    Dirty pages are flushed (``os.sync()``) before each child starts, so the
    write-back of an earlier measurement (DBOS's, say) does not land on its
    syncs.
    """

    def spawn(module: str, function: str, *, expect_kill: bool = False, **kwargs: Any) -> Sample:
        cmd = [sys.executable, CHILD, module, function, json.dumps(kwargs)]
        os.sync()
        env = dict(os.environ, BENCH_CHILD_TIMEOUT=str(timeout))
        if log is not None:
            print(f"    $ {module}.{function}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})",
                  file=log, flush=True)
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout + 60)
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            raise ChildFailed(f"{module}.{function} hung past {timeout:g} s\n{err[-6000:]}") from None
        result = _result(proc.stdout)
        expected = -signal.SIGKILL if expect_kill else 0
        if proc.returncode != expected or result is None:
            raise ChildFailed(
                f"{module}.{function} exited with {proc.returncode} (expected {expected})"
                f"{'' if result is not None else ' without a result'}\n{proc.stderr[-6000:]}"
            )
        return result

    return spawn
