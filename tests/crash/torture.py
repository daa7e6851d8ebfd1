"""Kill-anywhere torture harness: SIGKILL a child running a mix of workflows, again and again.

    python tests/crash/torture.py --kills N --seed S --store DIR [--copies C]

1. A crash-free reference run (fresh store, one ``start`` child, no kills) gives
   each instance's expected output.
2. Rounds, until N kills were made: on a fresh store and log, start a child
   (``start`` mode until one child has logged ``started``, ``resume`` after), kill
   it with SIGKILL at a random moment, check the store opens cleanly, repeat;
   a round ends when a child exits 0 on its own with every instance finished.
   If the kill budget runs out mid-round, one last unkilled ``resume`` child
   finishes the round. (The workload finishes after a handful of kills, so
   more kills means more rounds, each on a fresh store.)
3. After every round, the invariants (see :func:`check_round` and
   :func:`check_events`). The store is read after every kill (it must open
   cleanly), and what it held then is what the next child started from.

Kill moments: a uniform 5-200 ms after the child logged that its engine is
open; right after the k-th new ``run`` line (between a step's execution and
its checkpoint); or a uniform 0-400 ms after spawning (during start-up, store
open and recovery).

Prints one summary line; exits 1 if there was any violation.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
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
    events: int = 0
    violations: list[str] = attrs.field(factory=list)
    wall: float = 0.0

    def summary(self) -> str:
        return (
            f"torture: kills={self.kills} rounds={self.rounds} children={self.children} "
            f"workflows={self.workflows} steps_executed={self.steps_executed} "
            f"reexecutions={self.reexecutions} events={self.events} violations={len(self.violations)} "
            f"wall={self.wall:.1f}s"
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

# What a store holds for one instance: its status (None: not created yet) and,
# per checkpoint key, (status, step name, step type, attempts).
Snapshot = dict[str, tuple[str | None, dict[str, tuple[str, str, str, int]]]]


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


def _read_all(store: Path, ids: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Every instance and its checkpoints, read in one open of the store (which must list running instances)."""

    async def read() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        s = LMDBStore(store)
        try:
            await s.get_running_instances()
            insts = {iid: await s.get_instance(iid) for iid in ids}
            steps = {iid: await s.get_steps(iid) for iid in ids}
            return insts, steps
        finally:
            s.close()

    return trio.run(read)


def _snapshot(insts: dict[str, Any], steps: dict[str, dict[str, Any]]) -> Snapshot:
    """Instance statuses and their steps' checkpoints; recorded values (``durable.random()``...) and
    patch markers are not steps: they have no events and no progress."""
    return {
        iid: (None if inst is None else _value(inst.status),
              {key: (_value(sr.status), sr.step_name, sr.step_type, sr.attempts) for key, sr in steps[iid].items()
               if sr.step_type not in ("value", "patch")})
        for iid, inst in insts.items()
    }


def _store_opens(store: Path, ids: list[str]) -> tuple[str | None, Snapshot]:
    """Open the store, list running instances, read every instance, close: (None if fine else the problem, contents)."""
    try:
        return None, _snapshot(*_read_all(store, ids))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}", {}


def _instance_ids(copies: int) -> list[str]:
    names = ["t-seq30", "t-par3", "t-branchy", "t-retry", "t-catch", "t-builder", "t-coin"]
    return [f"{n}-{k}" for k in range(copies) for n in names]


_MAX_ATTEMPTS: dict[str, int] | None = None


def max_attempts(key: str) -> int:
    """The max_attempts of the step at checkpoint ``key``, from the child's own definitions."""
    global _MAX_ATTEMPTS
    if _MAX_ATTEMPTS is None:
        spec = importlib.util.spec_from_file_location("_torture_child_defs", CHILD)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _MAX_ATTEMPTS = mod.max_attempts()
    return _MAX_ATTEMPTS[_step_name(key)]


def _step_name(key: str) -> str:
    return key.rsplit("/", 1)[-1].split("#")[0]


def _events_log(log: Path) -> Path:
    return log.with_name(log.name + ".events")  # torture_child.events_path


def _parse_events(lines: list[str], killed: bool, tag: str, v: list[str]) -> list[dict[str, Any]]:
    """The event records of one child, task ``step.started`` records given their ``key``."""
    out: list[dict[str, Any]] = []
    by_seq: dict[int, dict[str, Any]] = {}
    for n, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            if not (killed and n == len(lines) - 1):
                v.append(f"{tag} harness: unreadable event line {line!r}")
            continue
        if rec["ev"] == "key":
            started = by_seq.get(rec["seq"])
            if started is None or started["iid"] != rec["iid"] or started.get("key") is not None:
                v.append(f"{tag} harness: key line {line!r} matches no unresolved step.started")
            else:
                started["key"] = rec["key"]
            continue
        if "seq" in rec:
            rec["key"] = None
            by_seq[rec["seq"]] = rec
        out.append(rec)
    return out


# -- invariants ---------------------------------------------------------------------


@attrs.define
class Child:
    """What one child of a round did, and what the store held when it started."""

    lines: list[str]  # its lines of the main log
    events: list[dict[str, Any]]  # its event records (see torture_child)
    killed: bool
    before: Snapshot  # the store when it started ({} for a round's first child)


def check_round(
    store: Path, segments: list[list[str]], kills: int, reference: dict[str, Any], ids: list[str], tag: str,
    final: tuple[dict[str, Any], dict[str, dict[str, Any]]] | None = None,
) -> tuple[list[str], int, int]:
    """The invariants of one round; returns (violations, step executions, re-executions).

    (a) every instance completed, with the reference run's output;
    (b1) an execution (instance, key, attempt) is repeated at most ``kills`` times;
    (b2) no step body runs again once its ``done`` line (written after its
         checkpoint) was logged, in the same child or a later one;
    (b3) no step body runs with an attempt above the one its final checkpoint
         (completed or failed) records, and that attempt was executed;
    (b4) no checkpoint records more attempts than its step's ``max_attempts``,
         and no step body ran with an attempt number outside 1..max_attempts;
    (b5) a ``t-coin`` instance, which branches on a checkpointed random value,
         ran the step of one side only, across all its children: a replay took
         the side the first run took (and a divergence would have to be reported
         as ``NonDeterminismError``, not completed with both sides' effects).
    """
    v: list[str] = []
    insts, all_steps = final if final is not None else _read_all(store, ids)
    for iid in ids:
        inst = insts[iid]
        if inst is None:
            v.append(f"{tag} (a) instance {iid} is missing from the store")
            continue
        if inst.status != "completed":
            v.append(f"{tag} (a) instance {iid} ended {_value(inst.status)} (error {inst.error!r}), not completed")
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
                if not 1 <= attempt <= max_attempts(key):
                    v.append(f"{tag} (b4) {iid} {key} ran attempt {attempt} in child #{child}, "
                             f"but its step allows attempts 1..{max_attempts(key)}")
            elif parts[0] == "done" and len(parts) == 4 and parts[3] != "-":
                iid, name, key = parts[1:]
                if _step_name(key) != name:
                    v.append(f"{tag} harness: done line {line!r}: key does not match the step name")
                done_here.add((iid, key))
        for k in done_here:
            done_before.setdefault(k, child)

    for iid in ids:
        if not iid.startswith("t-coin-"):
            continue
        sides = sorted({_step_name(key) for (rid, key, _) in runs if rid == iid and _step_name(key) in ("heads", "tails")})
        if len(sides) > 1:
            inst = insts.get(iid)
            reported = inst is not None and inst.error_type == "NonDeterminismError"
            v.append(f"{tag} (b5) {iid}: both sides of its checkpointed coin ran ({sides}): "
                     + ("reported as NonDeterminismError" if reported else "and the divergence went unreported"))

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
        for key, sr in all_steps[iid].items():
            if sr.step_type != "task":
                continue
            if sr.attempts > max_attempts(key):
                v.append(f"{tag} (b4) {iid} {key}: checkpoint ({_value(sr.status)}) records attempt {sr.attempts}, "
                         f"above its step's max_attempts {max_attempts(key)}")
            if sr.status not in ("completed", "failed"):
                continue
            ran = attempts_run.get(key, set())
            if sr.attempts not in ran:
                v.append(f"{tag} (b3) {iid} {key}: checkpoint says {_value(sr.status)} at attempt {sr.attempts}, "
                         f"but attempts run were {sorted(ran)}")
            later = sorted(a for a in ran if a > sr.attempts)
            if later:
                v.append(f"{tag} (b3) {iid} {key}: checkpoint says {_value(sr.status)} at attempt {sr.attempts}, "
                         f"but attempt(s) {later} ran")
    return v, executions, reexec


def _names(keys: dict[str, tuple[str, str, str, int]]) -> collections.Counter[str]:
    return collections.Counter(name for (_, name, _, _) in keys.values())


def check_events(
    children: list[Child], after: Snapshot, outputs: dict[str, Any], totals: dict[str, int], ids: list[str], tag: str,
    *, unkilled_end: bool = True,
) -> list[str]:
    """The engine's events against the store; returns the violations.

    In every child, for every instance:

    (e1) progress never goes backwards, and stays below 100 until completion;
    (e2) ``step.retry`` only for an attempt below the step's ``max_attempts``
         (and with that ``max_attempts``), ``step.failed`` never above it;
    (e3) ``workflow.started`` at most once per instance in a round, in the
         child that created the instance.

    For the events of each instance's final run (the child after which the
    store holds it finished), with ``before`` the checkpoints that child
    started from and ``new`` the ones it finished:

    (e4) ``step.completed`` (``step.failed``) events exactly for the new
         completed (failed) checkpoints: the same step names the same number of
         times, a task's event at the key whose body just ran; none for a step
         replayed from its checkpoint;
    (e5) ``step.started`` exactly once for every new checkpoint (by step name),
         a task's at the key whose body ran next, never at a key that was
         already completed or failed when the child started (replayed steps do
         not emit ``started``);
    (e6) ``workflow.completed`` at most once, last, with the stored output;
         present if the child was not killed; no ``workflow.failed`` /
         ``workflow.cancelled``;
    (e7) one ``workflow.progress`` per new completed checkpoint, then (on
         completion) one at 100 just before ``workflow.completed``;
         ``total_steps`` constant and equal to the crash-free run's;
         ``completed_steps`` strictly increasing, and the final one equals the
         instance's completed checkpoints in the store (as in a crash-free
         run, also when a parallel was replayed from its checkpoint).
    """
    v: list[str] = []
    started_in: dict[str, list[int]] = collections.defaultdict(list)
    for c, child in enumerate(children):
        by_iid: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for rec in child.events:
            by_iid[rec["iid"]].append(rec)
        for iid, evs in by_iid.items():
            last = -1
            for e in evs:
                name = e["ev"]
                if name == "workflow.progress":
                    if e["progress"] < last:
                        v.append(f"{tag} (e1) {iid} child #{c}: progress went back from {last} to {e['progress']}")
                    last = e["progress"]
                elif name == "workflow.completed" and last != 100:
                    v.append(f"{tag} (e1) {iid} child #{c}: workflow.completed after progress {last}, not 100")
                elif name == "workflow.step.retry":
                    m = max_attempts(e["step_name"])
                    if e.get("max_attempts") != m or not 1 <= e.get("attempt", 0) < m:
                        v.append(f"{tag} (e2) {iid} child #{c}: step.retry {e} for a step with max_attempts {m}")
                elif name == "workflow.step.failed" and e.get("step_type") == "task":
                    if e.get("attempts", 0) > max_attempts(e["step_name"]):
                        v.append(f"{tag} (e2) {iid} child #{c}: step.failed {e} above max_attempts "
                                 f"{max_attempts(e['step_name'])}")
                elif name == "workflow.started":
                    started_in[iid].append(c)
            if 100 in [e.get("progress") for e in evs[:-2]]:
                v.append(f"{tag} (e1) {iid} child #{c}: progress 100 before the end")

    for iid in ids:
        status, after_keys = after.get(iid, (None, {}))
        created = [c for c, child in enumerate(children) if child.before.get(iid, (None, {}))[0] is None]
        creator = created[-1] if created else None  # the last child that started without the instance
        if started_in[iid] and (len(started_in[iid]) > 1 or started_in[iid][0] != creator):
            v.append(f"{tag} (e3) {iid}: workflow.started in children {started_in[iid]}, "
                     f"but the instance was created by child #{creator}")
        if status is None or status not in ("completed", "failed", "timed_out", "cancelled"):
            continue  # check_round reports it
        finals = [c for c, child in enumerate(children)
                  if child.before.get(iid, (None, {}))[0] in (None, "pending", "running")]
        if not finals:
            v.append(f"{tag} harness: {iid} was already finished before the round's first child")
            continue
        k = finals[-1]
        child = children[k]
        before = child.before.get(iid, (None, {}))[1]
        evs = [e for e in child.events if e["iid"] == iid]
        w = f"{tag} {iid} (final run: child #{k}{', killed' if child.killed else ''})"

        def new(st: str) -> dict[str, tuple[str, str, str, int]]:
            return {key: r for key, r in after_keys.items() if r[0] == st and (key not in before or before[key][0] != st)}

        new_done, new_failed = new("completed"), new("failed")
        was_finished = {key for key, r in before.items() if r[0] in ("completed", "failed")}
        by_name: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for e in evs:
            by_name[e["ev"]].append(e)

        # (e4)
        for ev_name, expected in (("workflow.step.completed", new_done), ("workflow.step.failed", new_failed)):
            got = collections.Counter(e["step_name"] for e in by_name[ev_name])
            if got != _names(expected):
                v.append(f"{w} (e4) {ev_name} events by step name {dict(got)} != the checkpoints this run "
                         f"finished {dict(_names(expected))}")
        for e in by_name["workflow.step.completed"]:
            if e.get("step_type") == "task":
                key = e.get("key")
                if key is None:
                    v.append(f"{w} harness: step.completed of task {e['step_name']} with no step body run before it")
                elif key not in new_done:
                    v.append(f"{w} (e4) step.completed at {key}, which is not a checkpoint this run completed "
                             f"(before: {before.get(key)}, after: {after_keys.get(key)})")
        # (e5)
        got = collections.Counter(e["step_name"] for e in by_name["workflow.step.started"])
        if got != _names(new_done) + _names(new_failed):
            v.append(f"{w} (e5) step.started events by step name {dict(got)} != the checkpoints this run "
                     f"finished {dict(_names(new_done) + _names(new_failed))}")
        for e in by_name["workflow.step.started"]:
            if e.get("step_type") != "task":
                continue
            key = e.get("key")
            if key is None:
                v.append(f"{w} (e5) step.started of task {e['step_name']} whose step body never ran after it")
            elif key in was_finished:
                v.append(f"{w} (e5) step.started at {key}, checkpointed {before[key][0]} before this run started")
        # (e6)
        for bad in ("workflow.failed", "workflow.cancelled"):
            if by_name[bad]:
                v.append(f"{w} (e6) {bad} emitted: {by_name[bad]}")
        done_evs = by_name["workflow.completed"]
        if len(done_evs) > 1:
            v.append(f"{w} (e6) workflow.completed emitted {len(done_evs)} times")
        if done_evs:
            if evs[-1] is not done_evs[-1]:
                first = next(i for i, e in enumerate(evs) if e is done_evs[0])
                v.append(f"{w} (e6) events after workflow.completed: {evs[first + 1:]}")
            want = json.loads(json.dumps(outputs.get(iid), default=repr))
            if done_evs[0].get("output") != want:
                v.append(f"{w} (e6) workflow.completed output {done_evs[0].get('output')!r} != stored {want!r}")
        elif unkilled_end and not child.killed:
            v.append(f"{w} (e6) no workflow.completed, though the child was not killed")
        # (e7)
        prog = by_name["workflow.progress"]
        pos = {id(e): i for i, e in enumerate(evs)}
        # The completion's progress event (100): last, or just before workflow.completed (a kill may fall between).
        closing = prog[-1] if prog and prog[-1]["progress"] == 100 and pos[id(prog[-1])] >= len(evs) - 2 else None
        steps_prog = prog[:-1] if closing is not None else prog
        if done_evs and (closing is None or pos[id(closing)] != len(evs) - 2):
            v.append(f"{w} (e7) workflow.completed not right after a progress 100 event")
        if closing is not None:
            reported = closing.get("completed_steps")
            n_done = sum(1 for r in after_keys.values() if r[0] == "completed")
            if reported != n_done:
                v.append(f"{w} (e7) final completed_steps {reported} != {n_done} completed checkpoints")
        if len(steps_prog) != len(new_done):
            v.append(f"{w} (e7) {len(steps_prog)} step progress events for {len(new_done)} steps completed in this run")
        if any(p["progress"] >= 100 for p in steps_prog):
            v.append(f"{w} (e7) progress 100 before completion: {[p['progress'] for p in steps_prog]}")
        counts: list[int] = [p.get("completed_steps", -1) for p in steps_prog]
        if any(b <= a for a, b in zip(counts, counts[1:])):
            v.append(f"{w} (e7) completed_steps not strictly increasing: {counts}")
        tot = {p.get("total_steps") for p in prog}
        if tot and tot != {totals.get(iid)}:
            v.append(f"{w} (e7) total_steps {sorted(tot, key=str)} != the crash-free run's {totals.get(iid)}")
    return v


# -- driver ------------------------------------------------------------------------------


def _segment(log: Path, offset: int) -> tuple[list[str], int]:
    data = log.read_bytes() if log.exists() else b""
    return data[offset:].decode(errors="replace").splitlines(), len(data)


def reference_run(workdir: Path, copies: int) -> tuple[dict[str, Any], dict[str, int]]:
    """The crash-free run: (output, total_steps of its progress events) per instance."""
    store, log = workdir / "ref.lmdb", workdir / "ref.log"
    for p in (store, log, _events_log(log)):
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    rc, _ = _run_child(store, log, "start", copies, None)
    if rc != 0:
        raise AssertionError(f"the crash-free reference child exited with {rc}")
    ids = _instance_ids(copies)
    insts, steps = _read_all(store, ids)
    bad = {iid: (i and i.status) for iid, i in insts.items() if i is None or i.status != "completed"}
    if bad:
        raise AssertionError(f"the crash-free reference run did not complete every instance: {bad}")
    lines, _ = _segment(log, 0)
    runs = collections.Counter(tuple(line.split()[1:]) for line in lines if line.startswith("run "))
    dup = [k for k, n in runs.items() if n > 1]
    if dup:
        raise AssertionError(f"the crash-free reference run executed some steps twice: {dup}")
    v: list[str] = []
    events = _parse_events(_segment(_events_log(log), 0)[0], False, "[reference]", v)
    totals: dict[str, int | None] = {}
    for e in events:
        if e["ev"] == "workflow.progress":
            totals.setdefault(e["iid"], e.get("total_steps"))  # None: a looping workflow (unknown total)
    outputs = {iid: inst.output for iid, inst in insts.items()}
    child = Child(lines, events, killed=False, before={})
    v += check_events([child], _snapshot(insts, steps), outputs, totals, ids, "[reference]")
    if v:
        raise AssertionError("the crash-free reference run's events are inconsistent:\n" + "\n".join(v))
    return outputs, totals


def run_torture(kills: int, seed: int, store_dir: str | os.PathLike[str], copies: int = 2,
                out: Callable[[str], None] | None = None) -> Result:
    """Run the whole torture; returns the figures and the violations found."""
    t0 = time.monotonic()
    rng = random.Random(seed)
    workdir = Path(store_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    res = Result()
    reference, totals = reference_run(workdir, copies)
    ids = _instance_ids(copies)
    while res.kills < kills or res.rounds == 0:
        tag = f"[round {res.rounds}]"
        store, log = workdir / f"r{res.rounds}.lmdb", workdir / f"r{res.rounds}.log"
        events_log = _events_log(log)
        for p in (store, log, events_log):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        children: list[Child] = []
        round_kills, offset, ev_offset, started = 0, 0, 0, False
        round_v: list[str] = []
        before: Snapshot = {}
        complete = False  # the round's last child exited 0 on its own
        while True:
            mode = "resume" if started else "start"
            unkilled = res.kills >= kills
            rc, how = _run_child(store, log, mode, copies, None if unkilled else rng)
            res.children += 1
            lines, offset = _segment(log, offset)
            ev_lines, ev_offset = _segment(events_log, ev_offset)
            killed = rc == -signal.SIGKILL
            events = _parse_events(ev_lines, killed, f"{tag} child #{len(children)}", round_v)
            children.append(Child(lines, events, killed, before))
            started = started or "started" in lines
            if killed:
                res.kills += 1
                round_kills += 1
                problem, before = _store_opens(store, ids)
                if problem:
                    round_v.append(f"{tag} (c) after kill #{res.kills} ({how}) the store does not open: {problem}")
                    break
                continue
            if rc != 0:
                round_v.append(f"{tag} child #{len(children) - 1} ({mode}, {how}) exited with {rc}")
                break
            if "exit" not in lines:
                round_v.append(f"{tag} child #{len(children) - 1} exited 0 without logging exit")
            complete = True
            break
        segments = [c.lines for c in children]
        final = _read_all(store, ids)
        v, execs, reexec = check_round(store, segments, round_kills, reference, ids, tag, final=final)
        round_v += v
        if complete:
            outputs = {iid: (inst.output if inst is not None else None) for iid, inst in final[0].items()}
            round_v += check_events(children, _snapshot(*final), outputs, totals, ids, tag)
        res.violations += round_v
        res.rounds += 1
        res.workflows += len(ids)
        res.steps_executed += execs
        res.reexecutions += reexec
        res.events += sum(len(c.events) for c in children)
        if out is not None:
            out(f"{tag} kills={round_kills} children={len(children)} steps={execs} reexec={reexec} "
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
