"""Workers killed with SIGKILL mid-work (real processes), then replaced: nothing lost, nothing checkpointed re-run.

Each test starts its instances of ``worker_child.flow`` (s1, the external job
ext, s2) on queue ``work`` (``concurrency=2``) from this process, with a
``durable.Client``, before any worker runs; then worker processes
(``worker_child.py worker``: ``Engine.serve`` over the LMDB store) claim and
run them, and one is SIGKILLed at a chosen point: by this process once the
shared log shows the point reached, or by the worker itself right after
writing a chosen line. A new worker takes over. The invariants are
``queue_torture.check_log``'s: every instance completed with its output,
exactly one terminal event each; no step body started after its checkpoint
was logged done; each job outcome delivered and checkpointed once, no job or
outcome left; claims in queue order; at no point more instances of the queue
in flight (claim or first line .. last step body end) than its concurrency.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import queue_torture as qt  # noqa: E402
import worker_child  # noqa: E402

import durable  # noqa: E402

ALL = ["work", "jobs", "w1"]


class Rig:
    """A store, a shared log, gate files, and the worker processes of one test."""

    def __init__(self, tmp_path: Path) -> None:
        self.store, self.log, self.gates = tmp_path / "s.lmdb", tmp_path / "log", tmp_path / "gates"
        self.gates.mkdir()
        qt.init_store(self.store)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.meta: dict[str, qt.Meta] = {}
        self.order: list[str] = []

    def start(self, count: int, holds: dict[str, Any], queue: str = "work", workflow: Any = None) -> list[str]:
        """Start ``count`` instances (before any worker runs: the claims' order is known)."""
        ids = []
        with durable.Client(self.store) as c:
            for k in range(count):
                n = len(self.order) + 1
                iid = f"i{n:02d}"
                if workflow is None:
                    c.start(worker_child.flow, n, holds, id=iid, queue=queue)
                else:
                    c.start(workflow, n, id=iid, queue=queue)
                self.meta[iid] = qt.Meta(queue, n)
                self.order.append(iid)
                ids.append(iid)
        return ids

    def worker(self, queues: list[str] | None = None, **opts: Any) -> subprocess.Popen[bytes]:
        opts = {"queues": queues or ALL, "gates": str(self.gates), "poll": 0.1, **opts}
        proc = qt._spawn("worker", self.store, self.log, opts)
        self.procs.append(proc)
        return proc

    def lines(self) -> list[qt.Entry]:
        return qt.parse_log(self.log)

    def wait_for(self, pred: Callable[[list[qt.Entry]], bool], proc: subprocess.Popen[bytes] | None = None,
                  timeout: float = 30) -> list[qt.Entry]:
        deadline = time.monotonic() + timeout
        while True:
            entries = self.lines()
            if pred(entries):
                return entries
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"worker {proc.pid} exited with {proc.returncode}: {qt._stderr(proc)[-3000:]}")
            assert time.monotonic() < deadline, "timed out; log tail:\n" + "\n".join(
                f"{e.kind} {e.pid} {' '.join(e.f)}" for e in entries[-30:])
            time.sleep(0.005)

    def killed(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
        """Wait for ``proc`` to die of SIGKILL (its own, or sent here first if ``timeout`` is 0)."""
        if timeout == 0:
            os.kill(proc.pid, signal.SIGKILL)
        try:
            rc = proc.wait(timeout=timeout or 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"worker {proc.pid} did not die within {timeout} s") from None
        assert rc == -signal.SIGKILL, f"worker {proc.pid} exited with {rc}: {qt._stderr(proc)[-3000:]}"

    def open_gate(self, name: str) -> None:
        (self.gates / name).touch()

    def finish(self, timeout: float = 30) -> dict[str, Any]:
        """Wait for every instance to finish; stop the workers; the instances as stored."""
        out = {}
        try:
            with durable.Client(self.store, poll_interval=0.1) as c:
                for iid in self.order:
                    out[iid] = c.wait(iid, timeout=timeout)
        finally:
            self.stop()
        return out

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            rc = p.wait()
            err = qt._stderr(p)
            assert rc in (0, -signal.SIGKILL), f"worker {p.pid} exited with {rc}: {err[-3000:]}"

    def check(self) -> list[qt.Entry]:
        """Every invariant of ``queue_torture.check_log`` holds; returns the log."""
        entries = self.lines()
        facts = qt.read_store(self.store, self.order)
        violations, _ = qt.check_log(entries, facts, self.meta, "", precreated=self.order)
        assert not violations, "\n".join(violations)
        return entries


def runs(entries: list[qt.Entry], iid: str, step: str) -> list[int]:
    """The pids that started ``step`` of ``iid``, in order."""
    return [e.pid for e in entries if e.kind == "start" and e.f[0] == iid and e.f[1] == step]


def starts_of(step: str) -> Callable[[list[qt.Entry]], list[qt.Entry]]:
    return lambda entries: [e for e in entries if e.kind == "start" and e.f[1] == step]


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        for p in r.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_worker_killed_mid_step_is_taken_over_and_its_queue_stays_bounded(rig: Rig) -> None:
    """Two instances blocked in s1 (the queue's bound), SIGKILL: still in flight until a new worker takes them
    over; they run s1 again (it was not checkpointed), the rest runs once, never more than two in flight."""
    ids = rig.start(5, {"s1": "g1"})
    a = rig.worker()
    rig.wait_for(lambda es: len(starts_of("s1")(es)) == 2, a)
    depths = qt.read_depths(rig.store, "work")
    assert depths == (3, 2)  # two in flight: the bound; no third claim while they block
    rig.killed(a, timeout=0)
    assert qt.read_depths(rig.store, "work") == (3, 2)  # a dead worker's instances stay in flight
    blocked = [e.f[0] for e in starts_of("s1")(rig.lines())]
    rig.open_gate("g1")
    b = rig.worker()
    out = rig.finish()
    assert {iid: inst.output for iid, inst in out.items()} == {iid: f"{n}+s1+ext+s2" for n, iid in
                                                               enumerate(ids, 1)}
    entries = rig.check()
    for iid in ids:
        expected = [a.pid, b.pid] if iid in blocked else [b.pid]
        assert runs(entries, iid, "s1") == expected, iid  # at least once: again after the kill; else once
        assert len(runs(entries, iid, "ext")) == len(runs(entries, iid, "s2")) == 1
    took = {iid for e in entries if e.kind == "took" and e.pid == b.pid for iid in e.f[0].split(",")}
    assert took == set(blocked)


def test_job_worker_and_workflow_worker_killed_while_jobs_run(rig: Rig) -> None:
    """A --jobs-only worker killed while it runs two external jobs, and the workflow worker whose instances
    wait for them: new workers run the jobs again (not checkpointed), deliver each outcome once, and the
    instances take it once; s1, checkpointed before, never runs again."""
    ids = rig.start(4, {"ext": "g2"})
    w = rig.worker(["work"])
    j = rig.worker(["jobs"], jobs_only=True)
    rig.wait_for(lambda es: len(starts_of("ext")(es)) == 2, j)
    rig.killed(j, timeout=0)
    rig.killed(w, timeout=0)
    entries = rig.lines()
    in_jobs = [e.f[0] for e in starts_of("ext")(entries)]
    assert all(e.pid == j.pid for e in starts_of("ext")(entries))
    assert {e.f[0] for e in entries if e.kind == "done" and e.f[1] == "s1"} == set(in_jobs)
    rig.open_gate("g2")
    w2 = rig.worker(["work"])
    j2 = rig.worker(["jobs"], jobs_only=True)
    rig.finish()
    entries = rig.check()
    for iid in ids:
        assert runs(entries, iid, "s1") == [w.pid if iid in in_jobs else w2.pid]
        assert runs(entries, iid, "ext") == ([j.pid, j2.pid] if iid in in_jobs else [j2.pid])
        delivered = [e for e in entries if e.kind == "jobfin" and e.f[0] == iid]
        assert [(e.pid, e.f[2]) for e in delivered] == [(j2.pid, "True")]
        assert [e.pid for e in entries if e.kind == "done" and e.f[0] == iid and e.f[1] == "ext"] == [w2.pid]


# (kind, step, n): the worker SIGKILLs itself right after its n-th such line
POINTS = [
    ("start", "s1", 2),  # mid-step: the body runs again
    ("end", "s2", 1),  # the body ran, its checkpoint not written: runs again
    ("done", "s1", 3),  # right after a checkpoint: never runs again
    ("done", "ext", 1),  # right after the job's outcome was checkpointed
    ("claimed", None, 2),  # claimed, not started: stays in flight until taken over
    ("jobs", None, 1),  # external jobs claimed, not started
    ("jobfin", None, 1),  # a job's outcome delivered, not yet taken by its instance
    ("start", "ext", 2),  # mid-job
]


@pytest.mark.parametrize(("kind", "step", "n"), POINTS, ids=[f"{k}-{s or 'any'}-{n}" for k, s, n in POINTS])
def test_a_worker_killing_itself_at_a_durable_moment(rig: Rig, kind: str, step: str | None, n: int) -> None:
    """The worker SIGKILLs itself right after a chosen line; a new worker finishes; every invariant holds,
    and what the kill point implies: a cut-off body ran again, a checkpointed one did not."""
    rig.start(4, {"s1": 0.02, "ext": 0.02, "s2": 0.02})
    a = rig.worker(die={"kind": kind, "step": step, "n": n})
    rig.killed(a)
    before = rig.lines()
    last = [e for e in before if e.pid == a.pid][-1]
    assert last.kind == kind and (step is None or last.f[1] == step), last
    b = rig.worker()
    rig.finish()
    entries = rig.check()
    after = entries[len(before):]
    if kind in ("start", "end"):
        assert runs(after, last.f[0], last.f[1]) == [b.pid]  # cut off before its checkpoint: at least once
    elif kind == "done":
        assert runs(after, last.f[0], last.f[1]) == []
    elif kind == "jobfin":
        assert last.f[2] == "True"
        assert runs(after, last.f[0], "ext") == []  # its outcome was delivered: it never runs again
        assert [e.pid for e in after if e.kind == "done" and e.f[0] == last.f[0] and e.f[1] == "ext"] == [b.pid]
    elif kind == "claimed":
        took = {iid for e in after if e.kind == "took" for iid in e.f[0].split(",")}
        assert set(last.f[1].split(",")) <= took  # taken over by the new worker, not claimed again
    elif kind == "jobs":
        for key in last.f[0].split(","):
            iid = key.split("/")[0]
            assert runs(after, iid, "ext") == [b.pid]


def test_worker_concurrency_holds_when_a_worker_takes_over(rig: Rig) -> None:
    """Queue ``w1`` allows one instance per worker. Worker A runs X; A is killed; worker B claims Y from the
    queue, then takes X over: two of w1's instances run at once in B."""
    rig.start(2, {"s1": "g3"}, queue="w1")
    a = rig.worker()
    rig.wait_for(lambda es: len(starts_of("s1")(es)) == 1, a)
    rig.killed(a, timeout=0)
    b = rig.worker()

    def settled(es: list[qt.Entry]) -> bool:
        """B's first look (a claim, then a takeover) is over, and what it took runs (blocked at the gate)."""
        mine = [e for e in es if e.pid == b.pid]
        if len([e for e in mine if e.kind == "pre"]) < 2:
            return False
        taken = {i for e in mine if e.kind in ("claimed", "took") and e.f[-1] != "-" for i in e.f[-1].split(",")}
        return taken <= {e.f[0] for e in mine if e.kind == "start"}

    rig.wait_for(settled, b)
    rig.open_gate("g3")
    rig.finish()
    entries = rig.check()
    most = qt.worker_overlap(entries, rig.meta)
    assert most[("w1", b.pid)] <= 1, f"worker B ran {most[('w1', b.pid)]} of w1's instances at once"


def test_an_external_jobs_retries_survive_a_worker_kill(rig: Rig) -> None:
    """``ext_fail`` always fails, with max_attempts=3. Its worker is killed after attempt 2 began; the next
    worker should go on from there (attempt 2 again at most, then 3), not start over at attempt 1."""
    [iid] = rig.start(1, {}, workflow=worker_child.retrying)
    a = rig.worker()
    rig.wait_for(lambda es: [e.f[2] for e in starts_of("ext_fail")(es)] == ["1", "2"], a)
    rig.killed(a, timeout=0)
    rig.worker()
    out = rig.finish()
    assert out[iid].output == "caught ValueError"
    attempts = collections.Counter(e.f[2] for e in starts_of("ext_fail")(rig.lines()))
    assert max(int(k) for k in attempts) <= 3
    assert attempts["1"] == 1, f"attempt numbers run: {dict(attempts)}"
