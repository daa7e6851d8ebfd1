"""Queue torture: several worker processes serve bounded queues while they are SIGKILLed and restarted.

    python tests/crash/queue_torture.py --kills 40 --seed 1 [--workers 3] [--instances 40] [--store DIR]

Each round, on a fresh LMDB store (queues of :mod:`worker_child`):

1. a client process (``worker_child.py client``) starts the round's first
   wave of instances of ``flow`` (s1, the external job ext, s2; some with a
   durable nap) before any worker runs: on the priority queue ``q``
   (``concurrency=3``, ``priority=True``, random priorities, some delayed),
   the rate-limited queue ``r`` (``concurrency=2``, ``rate_limit=(4, 1.0)``)
   and the queue ``d`` with dedup ids (several starts per id, over the waves);
   every external job goes to queue ``jobs`` (``concurrency=2``: jobs held);
2. ``--workers`` worker processes (``worker_child.py worker``: workflows and
   external jobs of every queue) start, with random ``concurrency``,
   ``take_over_limit`` and ``job_concurrency``; meanwhile the client starts
   further waves, then waits for every instance it created;
3. workers are SIGKILLed and replaced until the round's share of ``--kills``
   is spent: by the harness (after a random delay, or just after the n-th
   next line of a random kind in the log), or by themselves right after a
   chosen line (mid-step, after a step body, after a checkpoint, before or
   after a claim, after a takeover, after claiming or finishing an external
   job: exact points); then the workers run unkilled until the client has
   seen every instance finish.

After each round, the invariants of :func:`check_log` over the shared log
(one ``O_APPEND`` file: its order is real time across processes) and the
store; and a start with each dedup id must be accepted again. Prints one
summary line; exits 1 if there was any violation. ``serve_cap_exceeded``
counts workers seen running more instances at once than their
``serve(concurrency=N)`` (an instance woken from a durable sleep or an
external job's wait must wait for a free slot too): each is a violation.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import worker_child  # noqa: E402  (the queues, and the workflow's expected output)
from durable._model.jobs import job_signal  # noqa: E402
from durable.stores import LMDBStore  # noqa: E402

CHILD = Path(__file__).with_name("worker_child.py")
STEPS = ("s1", "ext", "s2")
ROUND_TIMEOUT = 180.0  # a round whose client has not finished by then is a violation ("hung")

__all__ = ["Entry", "Facts", "Meta", "Result", "check_log", "init_store", "main", "parse_log", "read_depths",
           "read_store", "run_queue_torture", "worker_overlap"]


# -- the log ------------------------------------------------------------------------


@attrs.frozen
class Entry:
    """One line of the shared log: its index (real-time order), kind, writer's pid and fields."""

    pos: int
    kind: str
    pid: int
    f: tuple[str, ...]


def parse_log(path: Path) -> list[Entry]:
    """Every complete line of the log (one ``write()`` each: a kill never leaves half a line)."""
    data = path.read_bytes() if path.exists() else b""
    out: list[Entry] = []
    for n, raw in enumerate(data.decode(errors="replace").split("\n")[:-1]):
        parts = raw.split(" ")
        out.append(Entry(n, parts[0], int(parts[1]), tuple(parts[2:])))
    return out


# -- the store ----------------------------------------------------------------------


@attrs.define
class Facts:
    """What the store holds at the end of a round."""

    instances: dict[str, Any]  # id -> WorkflowInstance or None
    steps: dict[str, dict[str, Any]]  # id -> checkpoint key -> StepResult
    jobs: list[Any]  # external jobs still queued or held
    outcomes: dict[str, int]  # id -> job outcomes delivered and not taken
    depths: dict[str, tuple[int, int]]  # queue -> (waiting, in flight)
    events: dict[str, collections.Counter[str]]  # id -> stored event names


def init_store(path: Path) -> None:
    """Create the store with every queue of :mod:`worker_child` registered (a client needs them)."""

    async def go() -> None:
        s = LMDBStore(path)
        try:
            for q in worker_child.QUEUES:
                await s.register_queue(q)
        finally:
            s.close()

    trio.run(go)


def read_store(path: Path, ids: list[str]) -> Facts:
    """What the store holds for ``ids`` (read after every process using it has ended)."""
    from durable._model.eventlog import decode_event

    async def go() -> Facts:
        s = LMDBStore(path)
        try:
            insts = {iid: await s.get_instance(iid, steps=False) for iid in ids}
            steps = {iid: await s.get_steps(iid) for iid in ids}
            outcomes = {}
            events: dict[str, collections.Counter[str]] = {}
            for iid in ids:
                outcomes[iid] = int(await s.peek_signal(iid, job_signal("ext#0")) is not None)
                names: collections.Counter[str] = collections.Counter()
                after = 0
                while True:
                    batch = await s.read_events(iid, after, 500)
                    if not batch:
                        break
                    for eid, data in batch:
                        names[decode_event(data)[0]] += 1
                        after = eid
                events[iid] = names
            depths = {q.name: await s.queue_depths(q.name) for q in worker_child.QUEUES}
            return Facts(insts, steps, await s.get_jobs(), outcomes, depths, events)
        finally:
            s.close()

    return trio.run(go)


def read_depths(path: Path, queue: str) -> tuple[int, int]:
    """``(waiting, in flight)`` of one queue, read now."""

    async def go() -> tuple[int, int]:
        s = LMDBStore(path)
        try:
            return await s.queue_depths(queue)
        finally:
            s.close()

    return trio.run(go)


def _micros(when: Any) -> int | None:
    return None if when is None else (when - worker_child.EPOCH) // timedelta(microseconds=1)


# -- the invariants -------------------------------------------------------------------


@attrs.define
class Meta:
    """How an instance was started."""

    queue: str
    n: int
    priority: int = 0
    dedup: str | None = None


@attrs.define
class Stats:
    claims: int = 0
    lost_claims: int = 0
    takeovers: int = 0
    executions: int = 0
    reexecutions: int = 0
    job_reruns: int = 0
    most: dict[str, int] = attrs.field(factory=dict)  # queue -> most instances in flight at once (seen)
    dedup_refused: int = 0


def check_log(entries: list[Entry], facts: Facts, meta: dict[str, Meta], tag: str,
              precreated: list[str] | None = None) -> tuple[list[str], Stats]:
    """The invariants of one store's run; returns (violations, figures).

    ``meta``: every instance created (id -> queue, input, priority, dedup id);
    ``precreated``: ids created, in this order, before the log's first line (else
    the client's ``created`` lines say when each was).

    (a) every instance completed with ``worker_child.expected(n)``; its stored
        event log ends with exactly one ``workflow.completed``, no failure;
    (b) no step body starts again after its ``done`` line (its checkpoint was
        committed); each (instance, step) has at most one ``done`` line;
    (c) each external job's outcome is delivered (``finish_job`` True) at most
        once, and every job and outcome is gone from the store at the end;
        every queue is empty, nothing in flight;
    (d) in flight: an instance counts from its claim (or its first line) to
        its last step body's end; at no point of the log do more instances of
        a queue overlap than its ``concurrency``; the same for the external
        jobs of queue ``jobs`` (held from their claim or first body line to
        their body's last end);
    (e) claims, replayed in commit order (they are serialized by the claim
        lock, creates too): each takes, per queue, exactly the first waiting
        instances that are due, in priority then creation order; never one
        before its delay; never more than ``rate_limit`` starts in a window
        (on the claims' own clocks, as the store counts them); an instance
        taken over (``took``) is never one still waiting in its queue;
    (g) nothing is taken from a live worker: no step body of an instance (or
        its external job) starts in one process while another, still alive
        (it writes a later line), is inside a body of that instance (job);
    (f) dedup: a start with a dedup id never succeeded while another instance
        with that id was unfinished (``dedupbad``), and every refusal named
        an instance created with that id.
    """
    v: list[str] = []
    st = Stats()
    queues = {q.name: q for q in worker_child.QUEUES}

    # (a)
    for iid, m in meta.items():
        inst = facts.instances.get(iid)
        if inst is None:
            v.append(f"{tag} (a) instance {iid} is missing from the store")
            continue
        if inst.status != "completed" or inst.output != worker_child.expected(m.n):
            v.append(f"{tag} (a) instance {iid} ended {inst.status} with {inst.output!r} (error {inst.error!r}), "
                     f"not completed with {worker_child.expected(m.n)!r}")
        ev = facts.events.get(iid, collections.Counter())
        if ev["workflow.completed"] != 1 or ev["workflow.failed"] or ev["workflow.cancelled"]:
            v.append(f"{tag} (a) instance {iid}: its event log has completed x{ev['workflow.completed']}, "
                     f"failed x{ev['workflow.failed']}, cancelled x{ev['workflow.cancelled']}")
        for key in ("s1#0", "ext#0", "s2#0"):
            sr = facts.steps.get(iid, {}).get(key)
            if sr is None or sr.status != "completed":
                v.append(f"{tag} (a) instance {iid}: checkpoint {key} is {sr and sr.status}, not completed")

    # (b), (c)
    done_at: dict[tuple[str, str], int] = {}
    dones: collections.Counter[tuple[str, str]] = collections.Counter()
    starts: collections.Counter[tuple[str, str]] = collections.Counter()
    delivered: collections.Counter[tuple[str, str]] = collections.Counter()
    for e in entries:
        if e.kind == "start":
            iid, name = e.f[0], e.f[1]
            st.executions += 1
            starts[(iid, name)] += 1
            if (iid, name) in done_at:
                v.append(f"{tag} (b) {iid} {name} started again (line {e.pos}, pid {e.pid}) after its checkpoint "
                         f"was logged done (line {done_at[(iid, name)]})")
        elif e.kind == "done" and e.f[1] in STEPS:
            dones[(e.f[0], e.f[1])] += 1
            done_at.setdefault((e.f[0], e.f[1]), e.pos)
        elif e.kind == "jobfin" and e.f[2] == "True":
            delivered[(e.f[0], e.f[1])] += 1
    for k, n in dones.items():
        if n > 1:
            v.append(f"{tag} (b) {k[0]} {k[1]}: {n} done lines (checkpointed {n} times)")
    for k, n in delivered.items():
        if n > 1:
            v.append(f"{tag} (c) {k[0]} job {k[1]}: its outcome was delivered {n} times")
    for k, n in starts.items():
        st.reexecutions += n - 1
        if k[1] == "ext":
            st.job_reruns += n - 1
    if facts.jobs:
        v.append(f"{tag} (c) jobs left in the store: {[(j.instance_id, j.step_key, h) for j, h in facts.jobs]}")
    for iid, n in facts.outcomes.items():
        if n:
            v.append(f"{tag} (c) {iid}: a job outcome signal is left untaken in the store")
    for name, depth in facts.depths.items():
        if depth != (0, 0):
            v.append(f"{tag} (c) queue {name}: (waiting, in flight) = {depth} at the end, not (0, 0)")

    # (g)
    last_line = {e.pid: e.pos for e in entries}
    running: dict[tuple[str, str], tuple[int, int]] = {}  # (iid, "ext" or "wf") -> (pid, line) of an open body
    for e in entries:
        if e.kind not in ("start", "end") or e.f[1] not in STEPS:
            continue
        key = (e.f[0], "ext" if e.f[1] == "ext" else "wf")
        if e.kind == "end":
            if running.get(key, (0, 0))[0] == e.pid:
                del running[key]
            continue
        other = running.get(key)
        if other is not None and other[0] != e.pid and last_line[other[0]] > e.pos:
            v.append(f"{tag} (g) {e.f[0]} {e.f[1]} started in pid {e.pid} (line {e.pos}) while pid {other[0]} "
                     f"ran its {'job' if key[1] == 'ext' else 'workflow'} (since line {other[1]}) and was alive "
                     f"(it wrote line {last_line[other[0]]})")
        running[key] = (e.pid, e.pos)

    # (d)
    first: dict[str, int] = {}
    last_end: dict[str, int] = {}
    for e in entries:
        if e.kind == "claimed":
            ids = [] if e.f[1] == "-" else e.f[1].split(",")
        elif e.kind == "took":
            ids = e.f[0].split(",")
        elif e.kind in ("start", "end", "done", "jobfin"):
            ids = [e.f[0]]
        else:
            continue
        for iid in ids:
            first.setdefault(iid, e.pos)
        if e.kind == "end":
            last_end[e.f[0]] = e.pos
    by_queue: dict[str, list[tuple[int, int, str]]] = collections.defaultdict(list)
    for iid, m in meta.items():
        if iid in first and iid in last_end:
            by_queue[m.queue].append((first[iid], last_end[iid], iid))
    # the external jobs (queue "jobs"): held from their claim (or first body line) to their body's last end
    job_first: dict[str, int] = {}
    job_end: dict[str, int] = {}
    for e in entries:
        if e.kind == "jobs":
            for key in e.f[0].split(","):
                if key.endswith("/ext#0"):
                    job_first.setdefault(key.split("/")[0], e.pos)
        elif e.kind in ("start", "end") and e.f[1] == "ext":
            job_first.setdefault(e.f[0], e.pos)
            if e.kind == "end":
                job_end[e.f[0]] = e.pos
    for iid, a in job_first.items():
        if iid in meta and iid in job_end:
            by_queue["jobs"].append((a, job_end[iid], iid))
    for name, spans in by_queue.items():
        bound = queues[name].concurrency
        marks = sorted([(a, 0, iid) for a, _, iid in spans] + [(b, 1, iid) for _, b, iid in spans])
        now: set[str] = set()
        most = 0
        reported = False
        for pos, end, iid in marks:
            if end:
                now.discard(iid)
                continue
            now.add(iid)
            most = max(most, len(now))
            if bound is not None and len(now) > bound and not reported:
                reported = True
                v.append(f"{tag} (d) queue {name} (concurrency {bound}): {len(now)} instances in flight at line "
                         f"{pos}: {sorted(now)}")
        st.most[name] = most

    # (e)
    claimed_logged: set[str] = set()
    for e in entries:
        if e.kind == "claimed" and e.f[1] != "-":
            claimed_logged.update(e.f[1].split(","))
    not_before = {iid: _micros(getattr(facts.instances.get(iid), "not_before", None)) for iid in meta}
    order: dict[str, tuple[int, int]] = {}
    waiting: dict[str, list[str]] = collections.defaultdict(list)

    def add(iid: str, seq: int) -> None:
        m = meta[iid]
        prio = m.priority if queues[m.queue].priority else 0
        order[iid] = (-prio, seq)
        waiting[m.queue].append(iid)
        waiting[m.queue].sort(key=order.__getitem__)

    for seq, iid in enumerate(precreated or []):
        add(iid, seq)
    rated: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)  # queue -> [(now, count)]
    pending: tuple[Entry, int] | None = None  # a "pre" whose "claimed" has not come yet

    def due(iid: str, now_us: int) -> bool:
        nb = not_before.get(iid)
        return nb is None or nb <= now_us

    def lost(pre: Entry) -> None:
        """A claim cut off by a kill: it took (if it committed) the head of each queue, instances never
        seen in a logged claim."""
        st.lost_claims += 1
        now_us = int(pre.f[0])
        for name in list(waiting):
            while True:
                head = next((i for i in waiting[name] if due(i, now_us)), None)
                if head is None or head in claimed_logged:
                    break
                waiting[name].remove(head)

    seq = len(precreated or [])
    for e in entries:
        if pending is not None and e.kind in ("pre", "claimed", "created") and e.pid != pending[0].pid:
            lost(pending[0])  # the lock passed on: the claim's worker died holding it
            pending = None
        if e.kind == "created":
            iid = e.f[0]
            if iid in meta:
                add(iid, seq)
                seq += 1
        elif e.kind == "pre":
            pending = (e, e.pos)
        elif e.kind == "claimed":
            if pending is None or pending[0].pid != e.pid:
                v.append(f"{tag} harness: claimed line {e.pos} with no pre line before it")
                continue
            pending = None
            st.claims += 1
            now_us = int(e.f[0])
            ids = [] if e.f[1] == "-" else e.f[1].split(",")
            per: dict[str, list[str]] = collections.defaultdict(list)
            for iid in ids:
                if iid not in meta:
                    v.append(f"{tag} (e) claim at line {e.pos} took {iid}, which was never created")
                    continue
                per[meta[iid].queue].append(iid)
            for name, got in per.items():
                heads = [i for i in waiting[name] if due(i, now_us)][:len(got)]
                if got != heads:
                    early = [i for i in got if not due(i, now_us)]
                    unknown = [i for i in got if i not in waiting[name]]
                    v.append(f"{tag} (e) claim at line {e.pos} (pid {e.pid}) took {got} from queue {name}; the "
                             f"first due waiting were {heads}" + (f"; before their delay: {early}" if early else "")
                             + (f"; not waiting: {unknown}" if unknown else ""))
                for iid in got:
                    if iid in waiting[name]:
                        waiting[name].remove(iid)
                rate = queues[name].rate_limit
                if rate is not None:
                    n, seconds = rate
                    window = int(seconds * 1_000_000)
                    before = sum(c for t, c in rated[name] if t > now_us - window)
                    if before + len(got) > n:
                        v.append(f"{tag} (e) queue {name} (rate_limit {n} per {seconds:g} s): the claim at line "
                                 f"{e.pos} started {len(got)} with {before} started in the window before it")
                    rated[name].append((now_us, len(got)))
        elif e.kind == "took":
            st.takeovers += len(e.f[0].split(","))
            for iid in e.f[0].split(","):
                found = meta.get(iid)
                if found is not None and iid in waiting[found.queue] and iid in claimed_logged:
                    v.append(f"{tag} (e) {iid} was taken over (line {e.pos}) while waiting in queue {found.queue}")
    if pending is not None:
        lost(pending[0])
    left = {name: ids for name, ids in waiting.items() if ids}
    if left:
        v.append(f"{tag} (e) never claimed, by the log: {left}")

    # (f)
    created_with: dict[str, set[str]] = collections.defaultdict(set)
    for iid, m in meta.items():
        if m.dedup is not None:
            created_with[m.dedup].add(iid)
    for e in entries:
        if e.kind == "dedupbad":
            v.append(f"{tag} (f) {e.f[0]} was created with dedup id {e.f[1]} while {e.f[2]} held it ({e.f[3]})")
        elif e.kind == "dedup":
            st.dedup_refused += 1
            if e.f[2] not in created_with[e.f[1]]:
                v.append(f"{tag} (f) start {e.f[0]} refused for dedup id {e.f[1]}, held by {e.f[2]}, which was "
                         "not created with it")
    return v, st


def _bodies(entries: list[Entry]) -> list[tuple[int, int, int, str]]:
    """Step bodies of the workflows themselves (not external jobs): ``(start, end, pid, iid)`` each, from its
    ``start`` line to its ``end`` line, or, if its worker was killed first, to that worker's last line."""
    last_line = {e.pid: e.pos for e in entries}
    open_: dict[tuple[int, str, str], int] = {}
    spans: list[tuple[int, int, int, str]] = []
    for e in entries:
        if e.kind == "start" and e.f[1] in ("s1", "s2"):
            open_[(e.pid, e.f[0], e.f[1])] = e.pos
        elif e.kind == "end":
            began = open_.pop((e.pid, e.f[0], e.f[1]), None)
            if began is not None:
                spans.append((began, e.pos, e.pid, e.f[0]))
    for (pid, iid, _), began in open_.items():
        spans.append((began, last_line[pid], pid, iid))
    return spans


def worker_overlap(entries: list[Entry], meta: dict[str, Meta]) -> dict[tuple[str, int], int]:
    """(queue, worker pid) -> the most instances of the queue with a step body running in that worker at once."""
    spans = _bodies(entries)
    most: dict[tuple[str, int], int] = {}
    for a, _, pid, iid in spans:
        m = meta.get(iid)
        if m is None:
            continue
        here = {j for (a2, b2, p2, j) in spans if p2 == pid and a2 <= a <= b2 and j in meta and meta[j].queue == m.queue}
        key = (m.queue, pid)
        most[key] = max(most.get(key, 0), len(here))
    return most


def serve_cap_exceeded(entries: list[Entry]) -> list[tuple[int, int, int]]:
    """Workers that ran more instances at once than their ``serve(concurrency=N)``: ``(pid, N, most)`` each.

    (An instance unloaded by a durable sleep or an external job's wait counts again when it wakes: it waits
    for a free slot.)
    """
    caps = {e.pid: int(e.f[1]) for e in entries if e.kind == "ready" and e.f[0] == "worker" and e.f[1:2] != ("-",)}
    spans = _bodies(entries)
    out = []
    for pid, cap in caps.items():
        mine = [s for s in spans if s[2] == pid]
        most = max((len({j for (a2, b2, _, j) in mine if a2 <= a <= b2}) for a, _, _, _ in mine), default=0)
        if most > cap:
            out.append((pid, cap, most))
    return out


# -- a round ------------------------------------------------------------------------------


@attrs.define
class Result:
    kills: int = 0
    self_kills: int = 0
    rounds: int = 0
    workers_spawned: int = 0
    instances: int = 0
    dedup_refused: int = 0
    claims: int = 0
    lost_claims: int = 0
    takeovers: int = 0
    executions: int = 0
    reexecutions: int = 0
    job_reruns: int = 0
    most: dict[str, int] = attrs.field(factory=dict)
    serve_cap_exceeded: int = 0  # workers seen running more than their serve(concurrency=) (violations)
    kill_kinds: collections.Counter[str] = attrs.field(factory=collections.Counter)
    violations: list[str] = attrs.field(factory=list)
    wall: float = 0.0

    def summary(self) -> str:
        most = ",".join(f"{q}={n}" for q, n in sorted(self.most.items()))
        return (f"queue torture: kills={self.kills} (self={self.self_kills}) rounds={self.rounds} "
                f"workers={self.workers_spawned} instances={self.instances} dedup_refused={self.dedup_refused} "
                f"claims={self.claims} lost_claims={self.lost_claims} takeovers={self.takeovers} "
                f"steps_executed={self.executions} reexecutions={self.reexecutions} job_reruns={self.job_reruns} "
                f"max_in_flight=[{most}] serve_cap_exceeded={self.serve_cap_exceeded} "
                f"violations={len(self.violations)} wall={self.wall:.1f}s")


def make_plan(rng: random.Random, rnd: int, instances: int) -> dict[str, Any]:
    """The client's waves: most of ``q`` up front, then more of every queue; dedup ids over all waves."""

    def holds() -> dict[str, Any]:
        h: dict[str, Any] = {s: round(rng.uniform(0, 0.03), 4) for s in STEPS}
        if rng.random() < 0.2:
            h["nap"] = round(rng.uniform(0.15, 0.3), 3)  # longer than suspend_after: unloads while in flight
        return h

    counter = [0]

    def start(queue: str, **kw: Any) -> dict[str, Any]:
        counter[0] += 1
        k = counter[0]
        s: dict[str, Any] = {"id": f"r{rnd}-{queue}-{k:03d}", "n": k, "queue": queue, "holds": holds()}
        if queue == "q":
            s["priority"] = rng.choice([0, 0, 1, 5, 10])
        if queue in ("q", "r") and rng.random() < 0.15:
            s["delay"] = round(rng.uniform(0.2, 1.0), 3)
        s.update(kw)
        return s

    n_waves = 4
    n_q = max(4, instances // 2)
    n_r = max(2, instances // 4)
    keys = [f"key{j}" for j in range(3)]
    waves: list[dict[str, Any]] = [{"after": 0, "starts": []} for _ in range(n_waves)]
    for i in range(n_q):
        waves[0 if i < (2 * n_q) // 3 else rng.randrange(1, n_waves)]["starts"].append(start("q"))
    for _ in range(n_r):
        waves[rng.randrange(n_waves)]["starts"].append(start("r"))
    for w in range(n_waves):
        for key in keys:
            for _ in range(rng.choice([1, 1, 2])):  # twice in one wave: the second is refused
                waves[w]["starts"].append(start("d", dedup=key))
        rng.shuffle(waves[w]["starts"])
        if w:
            waves[w]["after"] = round(rng.uniform(0.2, 0.6), 3)
    return {"waves": waves, "timeout": ROUND_TIMEOUT}


_DIE_KINDS = [("start", None), ("start", "ext"), ("end", None), ("done", None), ("done", "ext"), ("claimed", None),
              ("pre", None), ("jobs", None), ("jobfin", None), ("took", None)]


_LINE_KINDS = ["start", "start", "end", "done", "claimed", "took", "jobs", "jobfin"]

_err_files: dict[int, Path] = {}  # pid -> its stderr file


def _spawn(role: str, store: Path, log: Path, opts: dict[str, Any], err: Path | None = None) -> subprocess.Popen[bytes]:
    """A child process; its stderr goes to ``err`` (default: next to the log), never to a pipe that could fill."""
    err = err or log.with_name(f"{log.name}.err-{role}-{time.monotonic_ns()}")
    with open(err, "wb") as f:
        proc = subprocess.Popen([sys.executable, str(CHILD), role, str(store), str(log), json.dumps(opts)],
                                stdout=subprocess.DEVNULL, stderr=f)
    _err_files[proc.pid] = err
    return proc


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    """The tail of what ``proc`` wrote to stderr."""
    path = _err_files.get(proc.pid)
    try:
        return path.read_text(errors="replace")[-3000:] if path is not None else ""
    except OSError:
        return ""


class _Tail:
    """New complete lines of the log since the last look."""

    def __init__(self, log: Path) -> None:
        self.log, self.offset, self.buf, self.n = log, 0, b"", 0

    def lines(self) -> list[Entry]:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        self.buf += data
        *complete, self.buf = self.buf.split(b"\n")
        out = []
        for raw in complete:
            parts = raw.decode(errors="replace").split(" ")
            out.append(Entry(self.n, parts[0], int(parts[1]), tuple(parts[2:])))
            self.n += 1
        return out


def _wait_line(log: Path, pred: Any, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(pred(e) for e in parse_log(log)):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def run_round(rng: random.Random, workdir: Path, rnd: int, kills: int, workers: int, instances: int,
              res: Result, out: Any = None) -> list[str]:
    """One round on a fresh store with at most ``kills`` kills; returns its violations (adds its figures)."""
    tag = f"[round {rnd}]"
    store, log = workdir / f"q{rnd}.lmdb", workdir / f"q{rnd}.log"
    for path in (store, log, Path(str(log) + ".claimlock")):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    init_store(store)
    plan = make_plan(rng, rnd, instances)
    plan["claim_lock"] = str(log) + ".claimlock"
    v: list[str] = []
    client = _spawn("client", store, log, plan, err=workdir / f"q{rnd}.err-client")
    if not _wait_line(log, lambda e: e.kind == "wave" and e.f[0] == "0", client, 60):
        client.kill()
        client.wait()
        return [f"{tag} the client did not start its first wave: {_stderr(client)}"]

    round_kills = 0
    procs: list[subprocess.Popen[bytes] | None] = [None] * workers
    plans: list[dict[str, Any] | None] = [None] * workers
    respawn_at = [0.0] * workers
    shot: dict[int, str] = {}  # pid -> how the harness killed it
    tail = _Tail(log)

    def new_trigger() -> tuple[str, Any, int]:
        """The harness's next kill: after a random delay, or right after the n-th next line of a kind."""
        if rng.random() < 0.4:
            return ("delay", time.monotonic() + rng.uniform(0.05, 0.5), 0)
        return ("line", rng.choice(_LINE_KINDS), rng.randint(1, 4))

    trigger = new_trigger()

    def spawn(i: int) -> None:
        opts: dict[str, Any] = {
            "queues": [q.name for q in worker_child.QUEUES],
            "concurrency": rng.choice([None, None, 2, 4]),
            "take_over_limit": rng.choice([None, 1, 2]),
            "job_concurrency": rng.choice([1, 2, 16]),
            "poll": 0.2,
        }
        if round_kills < kills and rng.random() < 0.5:
            kind, step = rng.choice(_DIE_KINDS)
            opts["die"] = {"kind": kind, "step": step, "n": rng.randint(1, 4)}
        plans[i] = opts.get("die")
        procs[i] = _spawn("worker", store, log, opts, err=workdir / f"q{rnd}.err{res.workers_spawned}")
        res.workers_spawned += 1

    def shoot(p: subprocess.Popen[bytes], how: str) -> None:
        shot[p.pid] = how
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    for i in range(workers):
        spawn(i)
    t0 = time.monotonic()
    broken = False
    while client.poll() is None and not broken:
        now = time.monotonic()
        if now - t0 > ROUND_TIMEOUT:
            v.append(f"{tag} hung: the client has not finished after {ROUND_TIMEOUT:g} s")
            break
        for i, p in enumerate(procs):
            if p is None:
                if now >= respawn_at[i]:
                    spawn(i)
                continue
            rc = p.poll()
            if rc is None:
                continue
            if rc == -signal.SIGKILL:
                # (a self-kill planned before the budget ran out may come after: it is counted too)
                round_kills += 1
                die = plans[i]
                if p.pid in shot:
                    how = shot[p.pid]
                else:
                    assert die is not None
                    how = f"self:{die['kind']}{'/' + die['step'] if die['step'] else ''}"
                    res.self_kills += 1
                res.kill_kinds[how] += 1
            else:
                v.append(f"{tag} worker {p.pid} exited with {rc}: {_stderr(p)}")
                broken = True  # (a worker that cannot run would only fail again: end the round)
            procs[i] = None
            respawn_at[i] = now + rng.uniform(0.0, 0.3)
        new = tail.lines()
        if round_kills < kills:
            alive = {p.pid: p for p in procs if p is not None and p.poll() is None and p.pid not in shot}
            if trigger[0] == "delay" and now >= trigger[1]:
                if alive:
                    shoot(rng.choice(list(alive.values())), "harness:delay")
                trigger = new_trigger()
            elif trigger[0] == "line":
                for e in new:
                    if e.kind == trigger[1] and e.pid in alive and e.f[-1:] != ("-",):
                        trigger = (trigger[0], trigger[1], trigger[2] - 1)
                        if trigger[2] <= 0:
                            shoot(alive[e.pid], f"harness:after-{e.kind}")
                            trigger = new_trigger()
                            break
        time.sleep(0.002)
    if client.poll() is None:
        client.kill()
    crc = client.wait()
    if crc != 0 and not any("hung" in x for x in v):
        v.append(f"{tag} the client exited with {crc}: {_stderr(client)}")
    for p in procs:
        if p is not None and p.poll() is None:
            p.kill()  # idle: every instance has finished (not counted as a kill)
        if p is not None:
            rc = p.wait()
            if rc not in (0, -signal.SIGKILL):
                v.append(f"{tag} worker {p.pid} exited with {rc}: {_stderr(p)}")

    entries = parse_log(log)
    meta: dict[str, Meta] = {}
    for e in entries:
        if e.kind == "created":
            meta[e.f[0]] = Meta(e.f[1], int(e.f[0].rsplit("-", 1)[1]), int(e.f[2]),
                                None if e.f[3] == "-" else e.f[3])
    facts = read_store(store, list(meta))
    cv, st = check_log(entries, facts, meta, tag)
    v += cv
    # dedup ids are free again once their instances finished
    v += _check_dedup_freed(store, sorted({m.dedup for m in meta.values() if m.dedup}), tag, rnd, plan)
    exceeded = serve_cap_exceeded(entries)
    res.serve_cap_exceeded += len(exceeded)
    v += [f"{tag}: worker {pid} ran {most} instances at once, over its serve(concurrency={cap})"
          for pid, cap, most in exceeded]
    res.kills += round_kills
    res.rounds += 1
    res.instances += len(meta)
    res.dedup_refused += st.dedup_refused
    res.claims += st.claims
    res.lost_claims += st.lost_claims
    res.takeovers += st.takeovers
    res.executions += st.executions
    res.reexecutions += st.reexecutions
    res.job_reruns += st.job_reruns
    for q, n in st.most.items():
        res.most[q] = max(res.most.get(q, 0), n)
    if out is not None:
        out(f"{tag} kills={round_kills} instances={len(meta)} claims={st.claims} lost_claims={st.lost_claims} "
            f"takeovers={st.takeovers} reexec={st.reexecutions} job_reruns={st.job_reruns} most={st.most} "
            f"violations={len(v)}")
        for line in v[:20]:
            out("  VIOLATION " + line)
    return v


def _check_dedup_freed(store: Path, keys: list[str], tag: str, rnd: int, plan: dict[str, Any]) -> list[str]:
    import durable

    v: list[str] = []
    with durable.Client(store) as c:
        for key in keys:
            try:
                c.start(worker_child.flow, 0, {}, id=f"r{rnd}-after-{key}", queue="d", dedup_id=key)
            except durable.Deduplicated as exc:
                v.append(f"{tag} (f) dedup id {key} is still held by {exc.existing_id} after every instance finished")
    return v


def run_queue_torture(kills: int, seed: int, store_dir: str | os.PathLike[str], workers: int = 3,
                      instances: int = 40, kills_per_round: int = 12, out: Any = None) -> Result:
    t0 = time.monotonic()
    rng = random.Random(seed)
    workdir = Path(store_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    res = Result()
    while res.kills < kills or res.rounds == 0:
        v = run_round(rng, workdir, res.rounds, min(kills_per_round, kills - res.kills), workers, instances, res, out)
        res.violations += v
        if any("hung" in x or "exited with" in x for x in v):
            break  # the same would happen again
    res.wall = time.monotonic() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=40, help="SIGKILLs of workers in all (default 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=3, help="worker processes at once (default 3)")
    ap.add_argument("--instances", type=int, default=40, help="instances per round, about (default 40)")
    ap.add_argument("--kills-per-round", type=int, default=12)
    ap.add_argument("--store", default=None, help="working directory (default: a temp dir)")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    args = ap.parse_args(argv)
    workdir = args.store or tempfile.mkdtemp(prefix="queue-torture-")
    res = run_queue_torture(args.kills, args.seed, workdir, args.workers, args.instances, args.kills_per_round,
                            out=None if args.quiet else lambda s: print(s, flush=True))
    for line in res.violations[:50]:
        print("VIOLATION", line)
    print("kills by kind:", dict(sorted(res.kill_kinds.items())))
    print(res.summary(), flush=True)
    return 1 if res.violations else 0


if __name__ == "__main__":
    sys.exit(main())
