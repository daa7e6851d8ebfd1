"""Kill-anywhere torture harness: SIGKILL a child running a mix of workflows, again and again.

    python tests/torture.py --kills N --seed S --store DIR [--copies C]

1. A crash-free reference run (fresh store, one ``start`` child, no kills) gives
   each instance's expected output.
2. Rounds, until N kills were made: on a fresh store and log, start a child
   (``start`` mode until one child has logged ``started``, ``resume`` after), kill
   it with SIGKILL at a random moment, check the store opens cleanly, repeat;
   a round ends when a child exits 0 on its own with every instance finished.
   If the kill budget runs out mid-round, one last unkilled ``resume`` child
   finishes the round. (The workload finishes after a handful of kills, so
   more kills means more rounds, each on a fresh store.)
3. After every round, the invariants (see :func:`check_round`).

Kill moments: a uniform 5-200 ms after the child logged that its engine is
open; right after the k-th new ``run`` line (between a step's execution and
its checkpoint); or a uniform 0-400 ms after spawning (during start-up, store
open and recovery).

Prints one summary line; exits 1 if there was any violation.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from durable.stores import LMDBStore

CHILD = Path(__file__).with_name("torture_child.py")
CHILD_TIMEOUT = 120.0  # a child that neither finishes nor gets killed within this is a violation

__all__ = ["Result", "main", "run_torture"]


@attrs.define
class Result:
    kills: int = 0
    rounds: int = 0
    children: int = 0
    workflows: int = 0
    steps_executed: int = 0
    reexecutions: int = 0
    violations: list[str] = attrs.field(factory=list)
    wall: float = 0.0

    def summary(self) -> str:
        return (
            f"torture: kills={self.kills} rounds={self.rounds} children={self.children} "
            f"workflows={self.workflows} steps_executed={self.steps_executed} "
            f"reexecutions={self.reexecutions} violations={len(self.violations)} wall={self.wall:.1f}s"
        )


# -- the child ---------------------------------------------------------------------


def _spawn(store: Path, log: Path, mode: str, copies: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(store), str(log), mode, str(copies)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


class _Tail:
    """New complete lines of LOG since a byte offset."""

    def __init__(self, log: Path, offset: int) -> None:
        self.log, self.offset, self.buf = log, offset, b""

    def lines(self) -> list[str]:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        self.buf += data
        *complete, self.buf = self.buf.split(b"\n")
        return [c.decode(errors="replace") for c in complete]


def _poll_until(proc: subprocess.Popen[bytes], tail: _Tail, done: Callable[[str], bool], timeout: float) -> bool:
    """Poll LOG until a new line satisfies ``done`` (True), or the child exits / time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in tail.lines():
            if done(line):
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0002)
    return False


def _kill(proc: subprocess.Popen[bytes]) -> int:
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait(timeout=CHILD_TIMEOUT)


def _run_child(store: Path, log: Path, mode: str, copies: int, rng: random.Random | None) -> tuple[int, str]:
    """Run one child; kill it at a random moment if ``rng`` is given. Returns (returncode, how)."""
    offset = log.stat().st_size if log.exists() else 0
    tail = _Tail(log, offset)
    proc = _spawn(store, log, mode, copies)
    try:
        if rng is None:
            return proc.wait(timeout=CHILD_TIMEOUT), "unkilled"
        r = rng.random()
        if r < 0.15:
            how = "startup"
            delay = rng.uniform(0.0, 0.4)
            try:
                return proc.wait(timeout=delay), how
            except subprocess.TimeoutExpired:
                return _kill(proc), how
        if not _poll_until(proc, tail, lambda line: line.startswith("child "), CHILD_TIMEOUT):
            return proc.wait(timeout=CHILD_TIMEOUT), "exited-before-ready"
        if r < 0.6:
            how = "delay"
            try:
                return proc.wait(timeout=rng.uniform(0.005, 0.2)), how
            except subprocess.TimeoutExpired:
                return _kill(proc), how
        how = "after-run-line"
        left = [rng.randint(1, 12)]

        def nth_run(line: str) -> bool:
            if line.startswith("run "):
                left[0] -= 1
            return left[0] <= 0

        if _poll_until(proc, tail, nth_run, CHILD_TIMEOUT):
            return _kill(proc), how
        return proc.wait(timeout=CHILD_TIMEOUT), how
    except subprocess.TimeoutExpired:
        _kill(proc)
        return -999, "hung"
    finally:
        if proc.stderr is not None:
            err = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
            if proc.returncode not in (0, -signal.SIGKILL) and err:
                sys.stderr.write(f"--- child stderr (rc={proc.returncode}) ---\n{err}\n")


# -- the store ------------------------------------------------------------------------


def _store_opens(store: Path) -> str | None:
    """Open the store, list running instances, close: None if fine, else the problem."""

    async def check() -> None:
        s = LMDBStore(store)
        try:
            await s.get_running_instances()
        finally:
            s.close()

    try:
        trio.run(check)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _read_store(store: Path, ids: list[str]) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        s = LMDBStore(store)
        try:
            return {iid: await s.get_instance(iid) for iid in ids}
        finally:
            s.close()

    return trio.run(read)


def _instance_ids(copies: int) -> list[str]:
    names = ["t-seq30", "t-par3", "t-branchy", "t-retry", "t-catch", "t-builder"]
    return [f"{n}-{k}" for k in range(copies) for n in names]


# -- invariants ---------------------------------------------------------------------


def check_round(
    store: Path, segments: list[list[str]], kills: int, reference: dict[str, Any], ids: list[str], tag: str
) -> tuple[list[str], int, int]:
    """The invariants of one round; returns (violations, step executions, re-executions).

    (a) every instance completed, with the reference run's output;
    (b1) an execution (instance, key, attempt) is repeated at most ``kills`` times;
    (b2) no step body runs again once its ``done`` line (written after its
         checkpoint) was logged, in the same child or a later one;
    (b3) no step body runs with an attempt above the one its final checkpoint
         (completed or failed) records, and that attempt was executed.
    """
    v: list[str] = []
    insts = _read_store(store, ids)
    for iid in ids:
        inst = insts[iid]
        if inst is None:
            v.append(f"{tag} (a) instance {iid} is missing from the store")
            continue
        if inst.status != "completed":
            v.append(f"{tag} (a) instance {iid} ended {getattr(inst.status, 'value', inst.status)} (error {inst.error!r}), not completed")
        elif inst.output != reference[iid]:
            v.append(f"{tag} (a) instance {iid} output {inst.output!r} != reference {reference[iid]!r}")

    runs: collections.Counter[tuple[str, str, int]] = collections.Counter()
    done_before: dict[tuple[str, str], int] = {}  # (instance, key) -> child index of its first done line
    executions = 0
    for child, lines in enumerate(segments):
        done_here: set[tuple[str, str]] = set()
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "run" and len(parts) == 4:
                iid, key, attempt = parts[1], parts[2], int(parts[3])
                executions += 1
                runs[(iid, key, attempt)] += 1
                if (iid, key) in done_before:
                    v.append(f"{tag} (b2) {iid} {key} attempt {attempt} ran in child #{child} after its checkpoint "
                             f"was logged done in child #{done_before[(iid, key)]}")
                elif (iid, key) in done_here:
                    v.append(f"{tag} (b2) {iid} {key} attempt {attempt} ran again in child #{child} after its "
                             "checkpoint was logged done in the same child")
            elif parts[0] == "done" and len(parts) == 4 and parts[3] != "-":
                iid, name, key = parts[1:]
                if key.rsplit("/", 1)[-1].split("#")[0] != name:
                    v.append(f"{tag} harness: done line {line!r}: key does not match the step name")
                done_here.add((iid, key))
        for k in done_here:
            done_before.setdefault(k, child)

    reexec = 0
    for (iid, key, attempt), n in sorted(runs.items()):
        if n > 1:
            reexec += n - 1
            if n - 1 > kills:
                v.append(f"{tag} (b1) {iid} {key} attempt {attempt} executed {n} times with only {kills} kill(s)")

    for iid, inst in insts.items():
        if inst is None:
            continue
        attempts_run: dict[str, set[int]] = collections.defaultdict(set)
        for (rid, key, attempt) in runs:
            if rid == iid:
                attempts_run[key].add(attempt)
        for key, sr in _steps(store, iid).items():
            if sr.step_type != "task" or sr.status not in ("completed", "failed"):
                continue
            ran = attempts_run.get(key, set())
            if sr.attempts not in ran:
                v.append(f"{tag} (b3) {iid} {key}: checkpoint says {getattr(sr.status, 'value', sr.status)} at attempt {sr.attempts}, "
                         f"but attempts run were {sorted(ran)}")
            later = sorted(a for a in ran if a > sr.attempts)
            if later:
                v.append(f"{tag} (b3) {iid} {key}: checkpoint says {getattr(sr.status, 'value', sr.status)} at attempt {sr.attempts}, "
                         f"but attempt(s) {later} ran")
    return v, executions, reexec


def _steps(store: Path, iid: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        s = LMDBStore(store)
        try:
            return await s.get_steps(iid)
        finally:
            s.close()

    return trio.run(read)


# -- driver ------------------------------------------------------------------------------


def _segment(log: Path, offset: int) -> tuple[list[str], int]:
    data = log.read_bytes() if log.exists() else b""
    return data[offset:].decode(errors="replace").splitlines(), len(data)


def reference_run(workdir: Path, copies: int) -> dict[str, Any]:
    store, log = workdir / "ref.lmdb", workdir / "ref.log"
    rc, _ = _run_child(store, log, "start", copies, None)
    if rc != 0:
        raise AssertionError(f"the crash-free reference child exited with {rc}")
    ids = _instance_ids(copies)
    insts = _read_store(store, ids)
    bad = {iid: (i and i.status) for iid, i in insts.items() if i is None or i.status != "completed"}
    if bad:
        raise AssertionError(f"the crash-free reference run did not complete every instance: {bad}")
    lines, _ = _segment(log, 0)
    runs = collections.Counter(tuple(line.split()[1:]) for line in lines if line.startswith("run "))
    dup = [k for k, n in runs.items() if n > 1]
    if dup:
        raise AssertionError(f"the crash-free reference run executed some steps twice: {dup}")
    return {iid: inst.output for iid, inst in insts.items()}


def run_torture(kills: int, seed: int, store_dir: str | os.PathLike[str], copies: int = 2,
                out: Callable[[str], None] | None = None) -> Result:
    """Run the whole torture; returns the figures and the violations found."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    workdir = Path(store_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    res = Result()
    reference = reference_run(workdir, copies)
    ids = _instance_ids(copies)
    while res.kills < kills or res.rounds == 0:
        tag = f"[round {res.rounds}]"
        store, log = workdir / f"r{res.rounds}.lmdb", workdir / f"r{res.rounds}.log"
        for p in (store, log):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        segments: list[list[str]] = []
        round_kills, offset, started, round_v = 0, 0, False, []
        while True:
            mode = "resume" if started else "start"
            unkilled = res.kills >= kills
            rc, how = _run_child(store, log, mode, copies, None if unkilled else rng)
            res.children += 1
            lines, offset = _segment(log, offset)
            segments.append(lines)
            started = started or "started" in lines
            if rc == -signal.SIGKILL:
                res.kills += 1
                round_kills += 1
                problem = _store_opens(store)
                if problem:
                    round_v.append(f"{tag} (c) after kill #{res.kills} ({how}) the store does not open: {problem}")
                    break
                continue
            if rc != 0:
                round_v.append(f"{tag} child #{len(segments) - 1} ({mode}, {how}) exited with {rc}")
                break
            if "exit" not in lines:
                round_v.append(f"{tag} child #{len(segments) - 1} exited 0 without logging exit")
            break
        v, execs, reexec = check_round(store, segments, round_kills, reference, ids, tag)
        round_v += v
        res.violations += round_v
        res.rounds += 1
        res.workflows += len(ids)
        res.steps_executed += execs
        res.reexecutions += reexec
        if out is not None:
            out(f"{tag} kills={round_kills} children={len(segments)} steps={execs} reexec={reexec} "
                f"violations={len(round_v)} total_kills={res.kills}")
            for line in round_v:
                out("  VIOLATION " + line)
        if round_v and any("(c)" in x or "hung" in x for x in round_v):
            break  # the store is broken: further rounds would say nothing new
    res.wall = time.monotonic() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=30, help="SIGKILLs to make in all (default 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", default=None, help="working directory for stores and logs (default: a temp dir)")
    ap.add_argument("--copies", type=int, default=2, help="instances of each workflow (default 2)")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    args = ap.parse_args(argv)
    workdir = args.store or tempfile.mkdtemp(prefix="torture-")
    res = run_torture(args.kills, args.seed, workdir, args.copies,
                      out=None if args.quiet else lambda s: print(s, flush=True))
    for line in res.violations[:50]:
        print("VIOLATION", line)
    print(res.summary(), flush=True)
    return 1 if res.violations else 0


if __name__ == "__main__":
    sys.exit(main())
