"""Queue torture (tests/crash/queue_torture.py): three workers SIGKILLed and restarted while they serve bounded
queues; and the checker itself, on made-up logs, so that a run without violations means something."""

from __future__ import annotations

import collections
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import queue_torture as qt  # noqa: E402
import worker_child  # noqa: E402

from durable import InstanceStatus, StepResult, StepStatus, WorkflowInstance  # noqa: E402


def test_workers_killed_at_random_keep_every_queue_invariant(tmp_path: Path) -> None:
    """Every instance completes once with its output; no checkpointed step re-runs; each job outcome is
    delivered once; claims follow priority, delay and rate limit; concurrency bounds hold; dedup holds."""
    lines: list[str] = []
    res = qt.run_queue_torture(kills=20, seed=20260101, store_dir=tmp_path, workers=3, instances=30,
                               kills_per_round=10, out=lines.append)
    print("\n".join(lines))
    print(res.summary())
    assert res.kills >= 20 and res.rounds >= 2
    assert res.instances >= 20 and res.claims > 0 and res.dedup_refused > 0
    assert 1 <= res.most.get("q", 0) <= 3 and res.most.get("r", 0) <= 2
    assert not res.violations, "\n".join([res.summary(), *res.violations])


# -- the checker finds what it looks for ----------------------------------------------------


def _entries(text: str) -> list[qt.Entry]:
    return [qt.Entry(n, *(lambda p: (p[0], int(p[1]), tuple(p[2:])))(line.split())) for n, line in
            enumerate(ln for ln in text.strip().splitlines())]


def _facts(meta: dict[str, qt.Meta], **over: Any) -> qt.Facts:
    insts = {iid: WorkflowInstance(id=iid, workflow_name="flow", status=InstanceStatus.COMPLETED,
                                   output=worker_child.expected(m.n), queue=m.queue) for iid, m in meta.items()}
    steps = {iid: {k: StepResult(step_name=k[:-2], status=StepStatus.COMPLETED, key=k)
                   for k in ("s1#0", "ext#0", "s2#0")} for iid in meta}
    events = {iid: collections.Counter({"workflow.completed": 1}) for iid in meta}
    facts = qt.Facts(insts, steps, [], {iid: 0 for iid in meta}, {q.name: (0, 0) for q in worker_child.QUEUES},
                     events)
    for k, val in over.items():
        setattr(facts, k, val)
    return facts


def _run(iid: str, pid: int = 1) -> str:
    """The lines of one clean run of ``iid`` in worker ``pid``."""
    return "\n".join(f"start {pid} {iid} {s} 1 0\nend {pid} {iid} {s}\ndone {pid} {iid} {s} {s}#0"
                     for s in qt.STEPS) + f"\njobfin {pid} {iid} ext#0 True"


def _check(text: str, meta: dict[str, qt.Meta], order: list[str] | None = None, **facts: Any) -> list[str]:
    v, _ = qt.check_log(_entries(text), _facts(meta, **facts), meta, "", precreated=order or list(meta))
    return v


W = {f"i{k}": qt.Meta("work", k) for k in (1, 2, 3)}  # queue work: concurrency 2, FIFO


def test_the_checker_passes_a_clean_log() -> None:
    text = f"pre 1 5 work\nclaimed 1 5 i1,i2\n{_run('i1')}\n{_run('i2')}\npre 1 6 work\nclaimed 1 6 i3\n{_run('i3')}"
    assert _check(text, W) == []


@pytest.mark.parametrize(("name", "text", "found"), [
    ("rerun after checkpoint",
     "pre 1 5 work\nclaimed 1 5 i1,i2\n{i1}\nstart 2 i1 s2 1 0\nend 2 i1 s2\n{i2}\npre 1 6 work\nclaimed 1 6 i3\n{i3}",
     "(b) i1 s2 started again"),
    ("three in flight",
     "pre 1 5 work\nclaimed 1 5 i1,i2\npre 1 6 work\nclaimed 1 6 i3\n{i1}\n{i2}\n{i3}", "(d) queue work"),
    ("out of order", "pre 1 5 work\nclaimed 1 5 i2\n{i2}\npre 1 6 work\nclaimed 1 6 i1,i3\n{i1}\n{i3}",
     "took ['i2'] from queue work; the first due waiting were ['i1']"),
    ("outcome twice",
     "pre 1 5 work\nclaimed 1 5 i1,i2\n{i1}\njobfin 2 i1 ext#0 True\n{i2}\npre 1 6 work\nclaimed 1 6 i3\n{i3}",
     "(c) i1 job ext#0: its outcome was delivered 2 times"),
    ("a job taken from a live worker",
     "pre 1 5 work\nclaimed 1 5 i1,i2\nstart 2 i1 ext 1 0\nstart 3 i1 ext 1 0\nend 2 i1 ext\n{i1}\n{i2}\n"
     "pre 1 6 work\nclaimed 1 6 i3\n{i3}",
     "(g) i1 ext started in pid 3 (line 3) while pid 2 ran its job"),
    ("an instance run by two live workers",
     "pre 1 5 work\nclaimed 1 5 i1,i2\nstart 1 i1 s1 1 0\nstart 2 i1 s1 1 0\n{i1}\n{i2}\n"
     "pre 1 6 work\nclaimed 1 6 i3\n{i3}",
     "(g) i1 s1 started in pid 2 (line 3) while pid 1 ran its workflow"),
    ("taken over while queued",
     "pre 1 5 work\nclaimed 1 5 i1,i2\ntook 2 i3\n{i1}\n{i2}\npre 1 6 work\nclaimed 1 6 i3\n{i3}",
     "i3 was taken over (line 2) while waiting"),
])
def test_the_checker_finds(name: str, text: str, found: str) -> None:
    text = text.format(i1=_run("i1"), i2=_run("i2"), i3=_run("i3"))
    v = _check(text, W)
    assert any(found in x for x in v), (name, v)


def test_the_checker_lets_a_dead_workers_body_run_again() -> None:
    """A body cut off by a kill (its worker wrote nothing after) runs again elsewhere: at least once, no (g)."""
    text = (f"pre 1 5 work\nclaimed 1 5 i1,i2\nstart 1 i1 s1 1 0\ntook 2 i1\n{_run('i1', 2)}\n{_run('i2', 2)}\n"
            f"pre 2 6 work\nclaimed 2 6 i3\n{_run('i3', 2)}")
    assert _check(text, W) == []


def test_the_checker_finds_a_lost_claim_and_what_it_took() -> None:
    """A ``pre`` whose worker died before ``claimed``: its instances are the queue's head, never claimed
    by a logged claim; a later claim that skips them is a violation only if they were not taken."""
    text = f"pre 7 5 work\npre 1 6 work\nclaimed 1 6 i3\ntook 1 i1,i2\n{_run('i1')}\n{_run('i2')}\n{_run('i3')}"
    v, st = qt.check_log(_entries(text), _facts(W), W, "", precreated=list(W))
    assert st.lost_claims == 1
    assert any("(d) queue work" in x for x in v)  # i1, i2 (lost claim, in flight) and i3: three at once
    text = f"pre 7 5 work\npre 1 6 work\nclaimed 1 6 i1\n{_run('i1')}\n{_run('i2')}\n{_run('i3')}"
    v, _ = qt.check_log(_entries(text), _facts(W), W, "", precreated=list(W))
    assert any("never claimed" in x for x in v), v  # a lost claim takes the head only: i2, i3 were left


def test_the_checker_finds_priority_delay_and_rate_violations() -> None:
    q = {"a": qt.Meta("q", 1, priority=0), "b": qt.Meta("q", 2, priority=5)}
    text = f"pre 1 5 q\nclaimed 1 5 a\n{_run('a')}\npre 1 6 q\nclaimed 1 6 b\n{_run('b')}"
    assert any("first due waiting were ['b']" in x for x in _check(text, q))
    text = f"pre 1 5 q\nclaimed 1 5 b\n{_run('b')}\npre 1 6 q\nclaimed 1 6 a\n{_run('a')}"
    assert _check(text, q) == []
    facts = _facts(q)
    facts.instances["b"] = WorkflowInstance(id="b", workflow_name="flow", status=InstanceStatus.COMPLETED,
                                            output=worker_child.expected(2), queue="q",
                                            not_before=worker_child.EPOCH + timedelta(microseconds=100))
    v, _ = qt.check_log(_entries(text), facts, q, "", precreated=["a", "b"])
    assert any("before their delay: ['b']" in x for x in v), v
    r = {f"r{k}": qt.Meta("r", k) for k in range(1, 6)}  # rate_limit (4, 1.0): a fifth start within 1 s
    text = "\n".join(f"pre 1 {k} r\nclaimed 1 {k} r{k}\n{_run(f'r{k}')}" for k in range(1, 6))
    assert any("rate_limit 4 per 1 s" in x for x in _check(text, r))
    text = "\n".join(f"pre 1 {k * 300_000} r\nclaimed 1 {k * 300_000} r{k}\n{_run(f'r{k}')}" for k in range(1, 6))
    assert _check(text, r) == []


def test_the_checker_finds_dedup_and_store_violations() -> None:
    text = f"pre 1 5 work\nclaimed 1 5 i1,i2\n{_run('i1')}\n{_run('i2')}\npre 1 6 work\nclaimed 1 6 i3\n{_run('i3')}"
    assert any("(f)" in x for x in _check(text + "\ndedupbad 3 i3 k i2 running", W))
    assert any("(c) queue work" in x for x in _check(text, W, depths={"work": (0, 1)}))
    assert any("(c) i2: a job outcome" in x for x in _check(text, W, outcomes={"i1": 0, "i2": 1, "i3": 0}))
    bad = _facts(W).events
    bad["i1"]["workflow.completed"] = 2
    assert any("(a) instance i1: its event log" in x for x in _check(text, W, events=bad))
