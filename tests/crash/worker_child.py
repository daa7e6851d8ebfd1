"""Workflows, queues and the processes of tests/crash/test_worker_crash.py and tests/crash/queue_torture.py.

    python tests/crash/worker_child.py worker STORE LOG OPTIONS_JSON
    python tests/crash/worker_child.py client STORE LOG PLAN_JSON

Both roles re-import this file as the module ``worker_child`` (not
``__main__``), so the external job ``ext`` is stored as
``("function", "worker_child", "ext")`` and every worker finds it by that name.

Every process appends lines to LOG with ``O_APPEND``, one ``write()`` per
line: the file's order is the real-time order of the writes, across
processes. A line is ``KIND PID FIELDS...``:

- ``ready PID ROLE [CONCURRENCY]``: the worker's engine is open (or the client's store);
- ``start PID IID STEP ATTEMPT WALL``: a step body began (``ext``: in the worker running the external job);
- ``end PID IID STEP``: the body is about to return (its checkpoint not written yet);
- ``done PID IID STEP KEY``: ``workflow.step.completed``: the step's checkpoint is committed;
- ``pre PID NOW_US``: this worker is about to claim queued instances (holding the claim lock);
- ``claimed PID NOW_US ID,ID,...``: that claim committed and took these instances (``-``: none);
- ``took PID ID,...``: this worker took over instances of dead engines (``Store.claim``);
- ``jobs PID KEY,...``: it claimed external jobs (``IID/KEY`` each);
- ``jobfin PID IID KEY OK``: ``finish_job`` returned (``OK``: whether the outcome was delivered);
- the client's: ``created``, ``dedup``, ``finished``, ``client-done`` (see :func:`client`).

Claims of queued instances, and the client's creates, are serialized by an
``flock`` on the file ``claim_lock`` (default ``LOG.claimlock``) held from
before the transaction until its line is written, so ``pre`` / ``claimed`` and
``created`` lines appear in the order they committed; a ``pre`` with no
``claimed`` after it is a claim cut off by a kill (committed or not). The
store's methods are wrapped on the worker's store object only (test
instrumentation: nothing of durable is changed).

A worker may be told to SIGKILL itself right after writing its N-th line of
a kind (``die``; a claim that took nothing does not count), which puts a kill
exactly between two durable moments: after ``start`` (mid-step), ``end`` (ran,
not checkpointed), ``done`` (checkpointed), ``claimed`` (claimed, not yet
running), ``pre`` (about to claim), ``took`` (taken over, not yet running),
``jobs`` (jobs claimed, not started), ``jobfin`` (outcome delivered, not yet
taken by its instance).
"""

from __future__ import annotations

import fcntl
import inspect
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

import durable
from durable import Engine, Queue, Retry, current_step, step, workflow

# -- the queues -------------------------------------------------------------------

QUEUES = [
    Queue("work", concurrency=2),  # test_worker_crash
    Queue("jobs", concurrency=2),  # the external jobs' queue: at most two jobs held at once, by all workers
    Queue("q", concurrency=3, priority=True),  # queue_torture: bounded, by priority
    Queue("r", concurrency=2, rate_limit=(4, 1.0)),  # queue_torture: bounded, rate-limited
    Queue("d", concurrency=2),  # queue_torture: dedup ids
    Queue("w1", worker_concurrency=1),  # test_worker_crash: one at a time in each worker
]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# -- logging -----------------------------------------------------------------------

_fd: int | None = None
_gates = ""  # directory of gate files
_die: dict[str, Any] | None = None  # {"kind": ..., "n": ..., "step": optional}
_counts: dict[str, int] = {}


def configure(log_path: str, gates: str = "", die: dict[str, Any] | None = None) -> None:
    global _fd, _gates, _die
    _fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _gates, _die = gates, die
    _counts.clear()


def log(kind: str, *fields: Any) -> None:
    """Append one line (one write: atomic, ordered); then SIGKILL this process if its plan says so."""
    assert _fd is not None, "configure() first"
    os.write(_fd, (" ".join([kind, str(os.getpid()), *map(str, fields)]) + "\n").encode())
    die = _die
    if die is not None and die["kind"] == kind and (die.get("step") is None or die["step"] in fields[1:2]) \
            and fields[-1:] != ("-",):  # (a claim that took nothing does not count)
        _counts[kind] = _counts.get(kind, 0) + 1
        if _counts[kind] >= die["n"]:
            os.kill(os.getpid(), signal.SIGKILL)


# -- steps and the workflow ---------------------------------------------------------


async def _hold(hold: Any) -> None:
    """``None``: return at once; a number: sleep that long; a str: wait until the gate file exists."""
    if hold is None:
        await trio.sleep(0)
    elif isinstance(hold, str):
        path = os.path.join(_gates, hold)
        while not os.path.exists(path):
            await trio.sleep(0.01)
    else:
        await trio.sleep(float(hold))


async def _body(name: str, value: str, hold: Any) -> str:
    info = current_step()
    assert info is not None
    log("start", info.instance_id, name, info.attempt, f"{time.time():.6f}")
    await _hold(hold)
    log("end", info.instance_id, name)
    return f"{value}+{name}"


@step
async def s1(value: str, hold: Any = None) -> str:
    return await _body("s1", value, hold)


@step(queue="jobs")
async def ext(value: str, hold: Any = None) -> str:
    """An external job: queued by the workflow, run by a worker serving ``jobs``."""
    return await _body("ext", value, hold)


@step
async def s2(value: str, hold: Any = None) -> str:
    return await _body("s2", value, hold)


@workflow(name="flow")
async def flow(n: int, holds: dict[str, Any]) -> str:
    """s1, then the external job ext, (a durable nap if asked), then s2: ``"n+s1+ext+s2"``."""
    a = await s1(str(n), holds.get("s1"))
    b = await ext(a, holds.get("ext"))
    if holds.get("nap"):
        await durable.sleep(float(holds["nap"]))  # longer than suspend_after: unloads, stays in flight
    c: str = await s2(b, holds.get("s2"))
    return c


def expected(n: int) -> str:
    return f"{n}+s1+ext+s2"


RETRY = Retry(max_attempts=3, interval=0.3, backoff_rate=1, max_interval=0.3, jitter="none")


@step(queue="jobs", retry=RETRY)
async def ext_fail(value: str) -> str:
    """An external job that always fails, after a short while: it uses up its ``RETRY`` attempts."""
    info = current_step()
    assert info is not None
    log("start", info.instance_id, "ext_fail", info.attempt, f"{time.time():.6f}")
    await trio.sleep(0.05)
    log("end", info.instance_id, "ext_fail")
    raise ValueError(f"{value}: ext_fail always fails")


@workflow(name="retrying")
async def retrying(n: int) -> str:
    try:
        return await ext_fail(str(n))
    except Exception as exc:
        return f"caught {type(exc).__name__}"


# -- a worker ----------------------------------------------------------------------


def _instrument(store: Any, lock_path: str) -> None:
    """Log what the store's claims took (see the module docstring); claims serialized by an flock.

    The wrappers take any arguments and pass them on as they are (named by the
    store's own signatures), so they follow changes of those signatures.
    """
    claim_queued, claim, claim_jobs, finish_job = store.claim_queued, store.claim, store.claim_jobs, store.finish_job
    sig = {f.__name__: inspect.signature(f) for f in (claim_queued, finish_job)}
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)

    async def logged_claim_queued(*args: Any, **kwargs: Any) -> Any:
        now = sig["claim_queued"].bind(*args, **kwargs).arguments["now"]
        now_us = (now - EPOCH) // timedelta(microseconds=1)  # as the store counts it
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # blocks this loop for at most another process's one commit
        try:
            log("pre", now_us)
            taken, due = await claim_queued(*args, **kwargs)
            log("claimed", now_us, ",".join(taken) or "-")
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
        return taken, due

    async def logged_claim(*args: Any, **kwargs: Any) -> Any:
        taken = await claim(*args, **kwargs)
        if taken:
            log("took", ",".join(taken))
        return taken

    async def logged_claim_jobs(*args: Any, **kwargs: Any) -> Any:
        found = await claim_jobs(*args, **kwargs)
        if found:
            log("jobs", ",".join(f"{j.instance_id}/{j.step_key}" for j in found))
        return found

    async def logged_finish_job(*args: Any, **kwargs: Any) -> Any:
        job = sig["finish_job"].bind(*args, **kwargs).arguments["job"]
        done = await finish_job(*args, **kwargs)
        log("jobfin", job.instance_id, job.step_key, done)
        return done

    store.claim_queued, store.claim = logged_claim_queued, logged_claim
    store.claim_jobs, store.finish_job = logged_claim_jobs, logged_finish_job


async def worker(store_path: str, opts: dict[str, Any]) -> None:
    """Serve ``opts["queues"]`` (``jobs_only``: their external jobs only) until killed."""
    async with Engine.open(store_path, lease_ttl=opts.get("lease_ttl", 2.0), poll_interval=opts.get("poll", 0.2),
                           suspend_after=opts.get("suspend_after", 0.1)) as engine:
        for q in QUEUES:
            engine.queues.register(q)
        engine.workflows.register(flow)
        engine.workflows.register(retrying)
        engine.events.on("workflow.step.completed",
                         lambda e: log("done", e.instance_id, e.step_name, e.step_key))
        _instrument(engine.store, opts["claim_lock"])
        role = "jobs-only" if opts.get("jobs_only") else "worker"
        log("ready", role, opts.get("concurrency") or "-")
        await engine.serve(queues=opts["queues"], workflows=not opts.get("jobs_only"),
                           concurrency=opts.get("concurrency"), job_concurrency=opts.get("job_concurrency", 16),
                           take_over_limit=opts.get("take_over_limit"))


# -- a client ----------------------------------------------------------------------


def client(store_path: str, plan: dict[str, Any]) -> None:
    """Start the plan's instances in waves, then wait for every one created; log each outcome.

    ``plan["waves"]``: a list of ``{"after": seconds since the previous wave, "starts": [...]}``; a start is
    ``{"id", "n", "queue", "priority", "dedup", "delay", "holds"}``. Lines:

    - ``created PID IID QUEUE PRIORITY DEDUP DELAY`` (``-`` for none);
    - ``dedup PID IID DEDUP EXISTING EXISTING_STATUS``: refused (``Deduplicated``), the holder and its status
      read just after;
    - ``dedupbad PID IID DEDUP OTHER STATUS``: a start with a dedup id succeeded while another instance
      created with that dedup id was unfinished (read just after the start: a finished status is final);
    - ``wave PID K``: wave K is durable; ``finished PID IID STATUS OUTPUT_JSON``; ``client-done PID``.
    """
    created: list[str] = []
    by_dedup: dict[str, list[str]] = {}
    lock_fd = os.open(plan["claim_lock"], os.O_RDWR | os.O_CREAT, 0o644)
    with durable.Client(store_path, poll_interval=0.2) as c:
        log("ready", "client")
        for k, wave in enumerate(plan["waves"]):
            time.sleep(wave.get("after", 0))
            for s in wave["starts"]:
                holds = s.get("holds") or {}
                # Under the claim lock: a create and its line come in the order of the claims around it.
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                try:
                    iid = c.start(flow, s["n"], holds, id=s["id"], queue=s["queue"], priority=s.get("priority", 0),
                                  dedup_id=s.get("dedup"), delay=s.get("delay"))
                    log("created", iid, s["queue"], s.get("priority", 0), s.get("dedup") or "-",
                        s.get("delay") or "-")
                except durable.Deduplicated as exc:
                    iid, existing = None, str(exc.existing_id)
                finally:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)
                if iid is None:
                    holder = c.get(existing)
                    log("dedup", s["id"], s["dedup"], existing, holder.status.value if holder else "missing")
                    continue
                created.append(iid)
                if s.get("dedup"):
                    for other in by_dedup.get(s["dedup"], []):
                        inst = c.get(other)
                        if inst is None or not inst.finished:
                            log("dedupbad", iid, s["dedup"], other, inst.status.value if inst else "missing")
                    by_dedup.setdefault(s["dedup"], []).append(iid)
            log("wave", k)
        for iid in created:
            inst = c.wait(iid, timeout=plan.get("timeout", 120))
            log("finished", iid, inst.status.value, json.dumps(inst.output))
    log("client-done")


# -- entry point ---------------------------------------------------------------------


def main(argv: list[str]) -> None:
    role, store_path, log_path, arg = argv[:4]
    opts = json.loads(arg)
    configure(log_path, opts.get("gates", ""), opts.get("die"))
    opts.setdefault("claim_lock", log_path + ".claimlock")
    if role == "worker":
        trio.run(worker, store_path, opts)
    elif role == "client":
        client(store_path, opts)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import worker_child  # the module every process names the job function by

    worker_child.main(sys.argv[1:])
