"""C: a Client and ``durable worker`` processes on one LMDB store: starts, pick-up, drain, external jobs, streams, idle.

    python benchmarks/clients.py [--quick] [--repeat N] [--dir PATH] [--timeout S] [-v]

Everything here crosses processes: a :class:`durable.Client` (or
``AsyncClient``) in one process, and ``durable worker benchmarks/clients.py``
processes (the real command, ``python -m durable worker``, logging to a file)
serving the store. Each part runs in a fresh child process (``_child.py``, as
in ``run.py``): the client's side, which starts its workers itself, in its
own process group, and stops them (SIGTERM, then SIGKILL) whatever happens;
a child past its time limit is killed with its group, workers and all. Stores
go in a temporary directory (``--dir`` picks the disk), removed at the end.
Also run by ``run.py`` as workload ``C`` (``--only C``).

1. **Starts** (no worker running: the instances stay queued): starts/s of
   one thread calling ``Client.start()`` in a loop (each returns once its
   instance is fsync'd), of 64 threads sharing one ``Client``, and of an
   ``AsyncClient`` with 64 asyncio tasks; the floor, measured in the same
   child between repeats: one-put LMDB commits/s, synced as durable syncs;
   and the client store's writes per commit (group commit).
2. **Pick-up**: ``start()`` returning in the client -> the first step's body
   running in the worker (``time.time()`` on both sides, one host), over
   sequential starts 10-20 ms apart (random), after 10 warm-ups. Targets:
   median ≤ 2 ms, p99 ≤ 20 ms.
3. **Drain**: workers started and warmed up, then stopped (SIGSTOP); 10,000
   three-step workflows enqueued by a Client (64 threads); the workers
   continued (SIGCONT) at once; instances/s from that moment to the last
   ``completed_at`` in the store. One worker, then two (a fresh store each),
   then one and two with ``--concurrency 100`` each. Also: the workers' CPU
   per instance (/proc/PID/stat), the LMDB commits per instance (the store's
   last transaction id before and after), and the share the busier worker
   ran (from their logs: 100% when one worker's look took the whole backlog).
4. **External jobs**: a workflow of N sequential ``@step(queue="jobs")``
   steps against one of N in-process steps, each step's body returning
   ``time.time()``: the gaps between consecutive bodies are the per-step
   cycle (median over every gap of every repeat), with the jobs run by the
   same worker, or by a second ``durable worker --jobs-only --queue jobs``.
5. **Event streams**: K instances waiting for a signal in a worker; in the
   client process, K concurrent ``events(id)`` iterators (an ``AsyncClient``
   with K asyncio tasks; then, in a fresh process, a ``Client`` with a thread
   per stream), each past its first event: VmRSS growth after a GC. Then 5
   of the instances are signalled, one after the other, the rest idle: the
   longest time one of those 5 streams took to see its end; then the rest
   are signalled: seconds until every stream has ended.
6. **Idle worker**: a warmed-up worker with nothing to do: CPU over 5 s
   (the run times of its threads, /proc/PID/task/*/schedstat, in ns: the
   10 ms ticks of /proc/PID/stat are too coarse here, shown too), as % of
   one core (target < 1 %), and the bytes it writes (/proc/PID/io). Then
   the same with nothing to do either but 10,000 unfinished instances in
   the store: queued on a queue it does not serve (``--queue other``), or
   on its own queue with ``delay=`` an hour.

``--quick``: 1,000 instances instead of 10,000, 50 pick-up samples instead
of 200, 100 streams instead of 1,000, idle windows of 2 s, 1 repeat; about
35 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from _common import Config, Row, Sample, Spawn, settled_rss_kb
from _disk import lmdb_commit_us

from durable import Client, LMDBStore, step, wait_for_signal, workflow

T = TypeVar("T")

KEY = "C"
TITLE = "Client + durable worker processes (full: 10,000 drained, 200 pick-ups, 1,000 streams)"
PEER_NA = "not run on DBOS in this suite"
HERE = os.path.abspath(__file__)

ROWS = [
    Row("floor_commits_per_s", "floor: synced one-put LMDB commits/s", better="higher", peer=False, fmt="{:,.0f}"),
    Row("starts_seq_per_s", "starts/s, 1 thread, sequential", better="higher", peer=False, fmt="{:,.0f}"),
    Row("starts_seq_vs_floor", "sequential starts/s ÷ floor commits/s", better="higher", peer=False,
        fmt="{:,.2f}"),
    Row("starts_threads_per_s", "starts/s, 64 threads sharing one Client", better="higher", peer=False,
        fmt="{:,.0f}"),
    Row("starts_threads_per_commit", "starts per commit, 64 threads", better="higher", peer=False, fmt="{:,.1f}"),
    Row("starts_async_per_s", "starts/s, AsyncClient, 64 asyncio tasks", better="higher", peer=False,
        fmt="{:,.0f}"),
    Row("pickup_median_ms", "pick-up, start() return -> step body, median ms", limit=2, peer=False,
        fmt="{:,.2f}"),
    Row("pickup_p99_ms", "pick-up, p99 ms", limit=20, peer=False, fmt="{:,.2f}"),
    Row("pickup_max_ms", "pick-up, max ms", peer=False, fmt="{:,.2f}"),
    Row("start_call_ms", "start() call, 10-20 ms apart, a worker serving, median ms", peer=False, fmt="{:,.2f}"),
    Row("start_call_alone_ms", "start() call, 10-20 ms apart, no worker, median ms", peer=False, fmt="{:,.2f}"),
    Row("drain1_per_s", "drain, 1 worker, instances/s (3 steps each)", better="higher", peer=False,
        fmt="{:,.0f}"),
    Row("drain1_cpu_us", "drain, 1 worker, worker CPU µs per instance", peer=False, fmt="{:,.0f}"),
    Row("drain1_commits", "drain, 1 worker, LMDB commits per instance", peer=False, fmt="{:,.3f}"),
    Row("drain1c_per_s", "drain, 1 worker --concurrency 100, instances/s", better="higher", peer=False,
        fmt="{:,.0f}"),
    Row("drain1c_cpu_us", "drain, 1 worker --concurrency 100, CPU µs per instance", peer=False, fmt="{:,.0f}"),
    Row("drain1c_commits", "drain, 1 worker --concurrency 100, LMDB commits per instance", peer=False,
        fmt="{:,.3f}"),
    Row("drain2_per_s", "drain, 2 workers, instances/s", better="higher", peer=False, fmt="{:,.0f}"),
    Row("drain2_cpu_us", "drain, 2 workers, workers' CPU µs per instance", peer=False, fmt="{:,.0f}"),
    Row("drain2_commits", "drain, 2 workers, LMDB commits per instance", peer=False, fmt="{:,.3f}"),
    Row("drain2_busier_pct", "drain, 2 workers, share run by the busier worker, %", peer=False, fmt="{:,.0f}"),
    Row("drain2c_per_s", "drain, 2 workers --concurrency 100, instances/s", better="higher", peer=False,
        fmt="{:,.0f}"),
    Row("drain2c_cpu_us", "drain, 2 workers --concurrency 100, CPU µs per instance", peer=False, fmt="{:,.0f}"),
    Row("drain2c_commits", "drain, 2 workers --concurrency 100, LMDB commits per instance", peer=False,
        fmt="{:,.3f}"),
    Row("drain2c_busier_pct", "drain, 2 workers --concurrency 100, busier worker's share, %", peer=False,
        fmt="{:,.0f}"),
    Row("enqueue_per_s", "enqueue for the 1-worker drain, 64 threads, starts/s", better="higher", peer=False,
        fmt="{:,.0f}"),
    Row("local_step_ms", "in-process step, ms per step (median gap)", peer=False, fmt="{:,.2f}"),
    Row("job_step_ms", "external step, same worker, ms per step", peer=False, fmt="{:,.2f}"),
    Row("job_added_ms", "external step's added cost, same worker, ms", peer=False, fmt="{:,.2f}"),
    Row("job_first_ms", "external step, same worker, first 5 steps, ms per step", peer=False, fmt="{:,.2f}"),
    Row("job_last_ms", "external step, same worker, last 5 steps, ms per step", peer=False, fmt="{:,.2f}"),
    Row("job2_step_ms", "external step, 2nd worker (--jobs-only), ms per step", peer=False, fmt="{:,.2f}"),
    Row("job2_added_ms", "external step's added cost, 2nd worker, ms", peer=False, fmt="{:,.2f}"),
    Row("streams_async_open_s", "event streams, AsyncClient: all opened (first event each), s", peer=False,
        fmt="{:,.2f}"),
    Row("streams_async_threads", "event streams, AsyncClient: threads in the process, all open", peer=False,
        fmt="{:,.0f}"),
    Row("streams_async_mb", "event streams, AsyncClient tasks: RSS growth, MB", peer=False, fmt="{:,.1f}"),
    Row("streams_async_kb", "event streams, AsyncClient tasks: KB per stream", peer=False, fmt="{:,.1f}"),
    Row("streams_async_one_s", "event streams, AsyncClient: 5 of them signalled, the slowest's end seen after, s",
        peer=False, fmt="{:,.2f}"),
    Row("streams_async_end_s", "event streams, AsyncClient: then signal the rest -> all ended, s", peer=False,
        fmt="{:,.2f}"),
    Row("streams_threads_open_s", "event streams, Client threads: all opened, s", peer=False, fmt="{:,.2f}"),
    Row("streams_threads_mb", "event streams, Client threads: RSS growth, MB", peer=False, fmt="{:,.1f}"),
    Row("streams_threads_kb", "event streams, Client threads: KB per stream", peer=False, fmt="{:,.1f}"),
    Row("streams_threads_one_s", "event streams, Client threads: 5 signalled, the slowest's end seen after, s",
        peer=False, fmt="{:,.2f}"),
    Row("streams_threads_end_s", "event streams, Client threads: then signal the rest -> all ended, s", peer=False,
        fmt="{:,.2f}"),
    Row("idle_cpu_pct", "idle worker CPU, % of a core", limit=1, peer=False, fmt="{:,.2f}"),
    Row("idle_kb_written_per_s", "idle worker, KB written to disk per s", peer=False, fmt="{:,.1f}"),
    Row("idle_other_cpu_pct", "idle worker, a backlog queued on another queue: CPU, % of a core", peer=False,
        fmt="{:,.2f}"),
    Row("idle_delayed_cpu_pct", "idle worker, a backlog delayed 1 h on its queue: CPU, % of a core", peer=False,
        fmt="{:,.2f}"),
    Row("idle_delayed_kb_written_per_s", "idle worker, a backlog delayed 1 h on its queue: KB written per s",
        peer=False, fmt="{:,.1f}"),
]


@dataclass(frozen=True)
class Sizes:
    """This workload's sizes (``--quick``: the smaller ones)."""

    seq_starts: int = 1_000  # per repeat
    concurrent_starts: int = 5_000  # per repeat
    threads: int = 64
    pickups: int = 200
    drain: int = 10_000
    chain: int = 50  # steps per external / in-process chain
    streams: int = 1_000
    idle_seconds: float = 5.0
    backlog: int = 10_000  # instances in the store while a worker idles (6.)
    settle: float = 1.5  # seconds left for a steady state before a reading (5., 6.)
    repeats: int = 3

    @classmethod
    def of(cls, quick: bool, repeat: int | None = None) -> Sizes:
        """Full or ``--quick`` sizes; ``repeat`` (``--repeat``) overrides the repeats."""
        sizes = cls(seq_starts=200, concurrent_starts=1_000, pickups=50, drain=1_000, chain=20, streams=100,
                    idle_seconds=2.0, backlog=1_000, settle=0.5, repeats=1) if quick else cls()
        if repeat is not None:
            sizes = cls(**{**sizes.__dict__, "repeats": max(1, repeat)})
        return sizes


# -- what the workers run (they load this file: `durable worker benchmarks/clients.py`) --------------------------


@step
async def stamp() -> float:
    """The first step of :func:`pickup`: when its body runs."""
    return time.time()


@workflow
async def pickup(tag: int) -> float:
    """One step that says when it started."""
    return await stamp()


@step
async def tick(i: int) -> int:
    """A trivial step."""
    return i


@workflow
async def three(i: int) -> int:
    """Three trivial steps (the drained workload; also what the starts create)."""
    return await tick(i) + await tick(i + 1) + await tick(i + 2)


@step
async def local_mark(i: int) -> tuple[float, int]:
    """An in-process step: when its body ran, and where."""
    return time.time(), os.getpid()


@step(queue="jobs")
async def job_mark(i: int) -> tuple[float, int]:
    """An external job on queue ``jobs``: when its body ran, and where."""
    return time.time(), os.getpid()


@workflow
async def local_chain(n: int) -> list[tuple[float, int]]:
    """``n`` in-process steps in sequence."""
    return [await local_mark(i) for i in range(n)]


@workflow
async def job_chain(n: int) -> list[tuple[float, int]]:
    """``n`` external steps in sequence."""
    return [await job_mark(i) for i in range(n)]


@workflow
async def held() -> Any:
    """Waits for signal ``go`` (an instance that stays running)."""
    return await wait_for_signal("go")


# -- helpers ---------------------------------------------------------------------------------------------------


def new_store(path: str) -> str:
    """Create an empty LMDB store at ``path`` (a client never creates one)."""
    LMDBStore(path).close()
    return path


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0-100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()  # fields from the 3rd (state) on: utime is the 14th, stime 15th
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_cpu_ns(pid: int) -> int:
    """CPU nanoseconds used so far by the live threads of process ``pid`` (/proc/PID/task/*/schedstat): finer
    than the clock ticks of /proc/PID/stat, for a nearly idle process (a thread that ended is not counted)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended meanwhile
    return total


def last_txn(store: str) -> int:
    """The id of the store's last committed LMDB transaction: commits so far, whoever made them (read in a
    child process: LMDB forbids opening an environment twice in one process, and the client has it open)."""
    code = "import lmdb, sys; print(lmdb.open(sys.argv[1], readonly=True, max_dbs=0).info()['last_txnid'])"
    return int(subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True,
                              check=True).stdout)


def proc_written(pid: int) -> int:
    """Bytes process ``pid`` has caused to be written to storage (/proc/PID/io)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = int(value)
    return fields["write_bytes"] - fields["cancelled_write_bytes"]


_ORPHAN_GUARD = ("import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); "
                 "os.getppid() == int(sys.argv[1]) or os._exit(1); "
                 "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")
"""Run before a worker's own interpreter: ``PR_SET_PDEATHSIG`` (kept across ``execv``) SIGKILLs the worker
when the process that started it dies, however it dies; then it becomes ``python -m durable worker ...``."""


class Workers:
    """``durable worker`` processes on one store, each with its own arguments and log file.

    Stopped on exit (SIGCONT in case they are stopped, SIGTERM, then SIGKILL
    after 5 s), whatever happened: use it as a context manager. On Linux each
    is also killed by the kernel if this process dies first (``_ORPHAN_GUARD``).
    """

    def __init__(self, store: str, logdir: str, *argvs: list[str], poll: float = 1.0) -> None:
        self.store = store
        self.logs: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            for i, extra in enumerate(argvs):
                log = os.path.join(logdir, f"worker-{os.path.basename(store)}-{i}.log")
                self.logs.append(log)
                with open(log, "wb") as out:
                    cmd = ["-m", "durable", "worker", HERE, "--store", store, "--poll", str(poll), *extra]
                    guard = ["-S", "-c", _ORPHAN_GUARD, str(os.getpid())] if sys.platform == "linux" else []
                    self.procs.append(subprocess.Popen([sys.executable, *guard, *cmd], stdout=out,
                                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=logdir))
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def log_text(self, i: int) -> str:
        with open(self.logs[i], errors="replace") as f:
            return f.read()

    def wait_ready(self, timeout: float = 60) -> None:
        """Until every worker has printed its start line (it serves right after); raise if one exited."""
        deadline = time.monotonic() + timeout
        pending = set(range(len(self.procs)))
        while pending:
            for i in list(pending):
                if self.procs[i].poll() is not None:
                    raise RuntimeError(f"worker {i} exited with {self.procs[i].returncode}:\n"
                                       f"{self.log_text(i)[-3000:]}")
                if "durable worker " in self.log_text(i):
                    pending.discard(i)
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker(s) {sorted(pending)} not ready in {timeout:g} s")
                time.sleep(0.02)

    def check_alive(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise RuntimeError(f"worker {i} exited with {p.returncode}:\n{self.log_text(i)[-3000:]}")

    def signal_all(self, signum: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signum)

    def ran(self, i: int, workflow_name: str) -> int:
        """How many instances of ``workflow_name`` worker ``i`` claimed (its log's ``running ID (NAME)`` lines)."""
        return sum(1 for line in self.log_text(i).splitlines()
                   if " running " in line and line.endswith(f"({workflow_name})"))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGCONT)
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def start_many(fn: Callable[[int], T], count: int, threads: int,
               watchdog: Callable[[], None] | None = None) -> tuple[list[T], float]:
    """``fn(i)`` for ``i`` in ``range(count)`` on ``threads`` threads at once; the results in order, and the
    seconds from their release to the last. ``watchdog`` is called whenever no call ended for a second."""
    ids: list[T | None] = [None] * count
    done = [0]
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    lock = threading.Lock()

    def run(first: int) -> None:
        barrier.wait()
        try:
            for i in range(first, count, threads):
                ids[i] = fn(i)
                with lock:
                    done[0] += 1
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    seen, since = 0, time.monotonic()
    for t in pool:
        while t.is_alive():
            t.join(0.05)
            if done[0] != seen:
                seen, since = done[0], time.monotonic()
            elif watchdog is not None and time.monotonic() - since > 1.0:
                watchdog()
                since = time.monotonic()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return [i for i in ids if i is not None], elapsed


def list_all(client: Client, workflow_name: str) -> list[Any]:
    """Every instance of ``workflow_name``, page after page."""
    found: list[Any] = []
    cursor = None
    while True:
        page = client.list(workflow=workflow_name, limit=1_000, cursor=cursor)
        found += page.instances
        cursor = page.next_cursor
        if cursor is None:
            return found


def warm_up(client: Client, workers: Workers, count: int = 5) -> None:
    """Every worker up (start line printed), and ``count`` pick-ups run: the workers serve."""
    workers.wait_ready()
    for k in range(count):
        inst = client.wait(client.start(pickup, -1 - k), timeout=60)
        assert inst.status == "completed", inst.error


# -- 1. starts -------------------------------------------------------------------------------------------------


def starts(workdir: str, seq: int, concurrent: int, threads: int, repeats: int) -> Sample:
    """Child: starts/s from a Client, sequential and concurrent; the floor measured between repeats."""
    store = new_store(os.path.join(workdir, "starts"))
    floor, seq_rates, thread_rates, per_commit, async_rates = [], [], [], [], []
    with Client(store) as client:
        for k in range(20):  # warm-up
            client.start(three, k)
        for _ in range(repeats):
            floor.append(1e6 / (lmdb_commit_us(workdir, count=200) or float("nan")))
            t0 = time.perf_counter()
            for i in range(seq):
                client.start(three, i)
            seq_rates.append(seq / (time.perf_counter() - t0))
            store_ = cast(LMDBStore, client.store)
            before = store_.stats()
            _, elapsed = start_many(lambda i: client.start(three, i), concurrent, threads)
            after = store_.stats()
            thread_rates.append(concurrent / elapsed)
            per_commit.append((after["writes"] - before["writes"]) / max(1, after["batches"] - before["batches"]))
    for _ in range(repeats):
        async_rates.append(asyncio.run(_async_starts(store, concurrent, threads)))
    floor_rate = statistics.median(floor)
    return {"floor_commits_per_s": floor_rate, "starts_seq_per_s": statistics.median(seq_rates),
            "starts_seq_vs_floor": statistics.median(seq_rates) / floor_rate,
            "starts_threads_per_s": statistics.median(thread_rates),
            "starts_threads_per_commit": statistics.median(per_commit),
            "starts_async_per_s": statistics.median(async_rates)}


async def _async_starts(store: str, count: int, tasks: int) -> float:
    """Starts/s of an AsyncClient with ``tasks`` asyncio tasks sharing ``count`` starts."""
    from durable import AsyncClient

    async with AsyncClient(store) as client:
        for k in range(10):  # warm-up (and anyio's worker threads)
            await client.start(three, k)
        go = asyncio.Event()

        async def run(first: int) -> None:
            await go.wait()
            for i in range(first, count, tasks):
                await client.start(three, i)

        jobs = [asyncio.create_task(run(k)) for k in range(tasks)]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        go.set()
        await asyncio.gather(*jobs)
        return count / (time.perf_counter() - t0)


# -- 2. pick-up latency ----------------------------------------------------------------------------------------


def pickup_latency(workdir: str, samples: int) -> Sample:
    """Child: start() return -> first step body in a worker process, sequential starts 10-20 ms apart."""
    store = new_store(os.path.join(workdir, "pickup"))
    rng = random.Random(7)
    alone = []
    with Client(new_store(os.path.join(workdir, "alone"))) as client:  # the same starts, nobody listening
        for k in range(10 + samples):
            t_call = time.time()
            client.start(pickup, k)
            if k >= 10:
                alone.append((time.time() - t_call) * 1e3)
            time.sleep(max(0.0, t_call + rng.uniform(0.010, 0.020) - time.time()))
    with Workers(store, workdir, []) as workers, Client(store) as client:
        warm_up(client, workers, 10)
        time.sleep(0.5)
        sent: list[tuple[str, float, float]] = []  # id, before start(), after start()
        for k in range(samples):
            t_call = time.time()
            iid = client.start(pickup, k)
            t_ret = time.time()
            sent.append((iid, t_call, t_ret))
            time.sleep(max(0.0, t_call + rng.uniform(0.010, 0.020) - time.time()))
        latencies, calls = [], []
        for iid, t_call, t_ret in sent:
            inst = client.wait(iid, timeout=60)
            assert inst.status == "completed", inst.error
            latencies.append((inst.output - t_ret) * 1e3)
            calls.append((t_ret - t_call) * 1e3)
        workers.check_alive()
    return {"pickup_median_ms": statistics.median(latencies), "pickup_p99_ms": percentile(latencies, 99),
            "pickup_max_ms": max(latencies), "pickup_min_ms": min(latencies),
            "start_call_ms": statistics.median(calls), "start_call_p99_ms": percentile(calls, 99),
            "start_call_alone_ms": statistics.median(alone)}


# -- 3. drain ------------------------------------------------------------------------------------------------


def drain(workdir: str, count: int, workers: int, threads: int, repeats: int, concurrency: int | None = None) -> Sample:
    """Child: ``count`` queued three-step workflows drained by ``workers`` worker processes (fresh store each
    repeat; each worker ``--concurrency`` if given); instances/s from their SIGCONT to the last completion."""
    argv = ["--concurrency", str(concurrency)] if concurrency is not None else []
    rates, cpu, busier, enqueue, commits, nudges = [], [], [], [], [], 0
    for r in range(repeats):
        store = new_store(os.path.join(workdir, f"drain{workers}-{r}"))
        with Workers(store, workdir, *([argv] * workers)) as procs, Client(store) as client:
            warm_up(client, procs, 2 * workers)
            time.sleep(0.5)  # let their lazy writes land: a stopped worker must not hold LMDB's write lock
            procs.signal_all(signal.SIGSTOP)

            def nudge() -> None:  # no start ended for a second: a worker stopped inside a write? let it finish
                nonlocal nudges
                nudges += 1
                procs.signal_all(signal.SIGCONT)
                time.sleep(0.05)
                procs.signal_all(signal.SIGSTOP)

            ids, elapsed = start_many(lambda i: client.start(three, i), count, threads, nudge)
            enqueue.append(count / elapsed)
            txn0 = last_txn(store)
            cpu0 = sum(proc_cpu_s(pid) for pid in procs.pids)
            t0 = time.time()
            procs.signal_all(signal.SIGCONT)
            for iid in ids:
                inst = client.wait(iid, timeout=300)
                assert inst.status == "completed", inst.error
            cpu1 = sum(proc_cpu_s(pid) for pid in procs.pids)
            commits.append((last_txn(store) - txn0) / count)
            wanted = set(ids)
            ends = [i.completed_at.timestamp() for i in list_all(client, three.name)
                    if i.id in wanted and i.completed_at]
            assert len(ends) == count, (len(ends), count)
            rates.append(count / (max(ends) - t0))
            cpu.append((cpu1 - cpu0) / count * 1e6)
            ran = [procs.ran(i, three.name) for i in range(workers)]
            busier.append(100 * max(ran) / max(1, sum(ran)))
            procs.check_alive()
    key = f"drain{workers}{'c' if concurrency is not None else ''}"
    out = {f"{key}_per_s": statistics.median(rates), f"{key}_cpu_us": statistics.median(cpu),
           f"{key}_commits": statistics.median(commits),
           f"{key}_enqueue_per_s": statistics.median(enqueue), f"{key}_nudges": float(nudges)}
    if key == "drain1":
        out["enqueue_per_s"] = out.pop(f"{key}_enqueue_per_s")
    if workers > 1:
        out[f"{key}_busier_pct"] = statistics.median(busier)
    return out


# -- 4. external jobs ------------------------------------------------------------------------------------------


def external(workdir: str, steps: int, repeats: int, split: bool) -> Sample:
    """Child: per-step cycle of ``steps`` sequential external steps against in-process ones; the jobs run by the
    same worker, or (``split``) by a second one (``--jobs-only --queue jobs``)."""
    store = new_store(os.path.join(workdir, f"external-{'split' if split else 'same'}"))
    argvs = [["--queue", "default"], ["--jobs-only", "--queue", "jobs"]] if split else [[]]
    gaps: dict[str, list[float]] = {"local": [], "job": []}
    first: dict[str, list[float]] = {"local": [], "job": []}  # the first 5 gaps of each run
    last: dict[str, list[float]] = {"local": [], "job": []}  # the last 5: a growth shows a per-step replay
    with Workers(store, workdir, *argvs) as workers, Client(store) as client:
        warm_up(client, workers)
        for fn in (local_chain, job_chain):
            client.wait(client.start(fn, 5), timeout=60)
        for _ in range(repeats):
            for kind, fn in (("local", local_chain), ("job", job_chain)):
                inst = client.wait(client.start(fn, steps), timeout=120)
                assert inst.status == "completed", inst.error
                marks = inst.output
                pids = {pid for _, pid in marks}
                expect = workers.pids[1] if split and kind == "job" else workers.pids[0]
                assert pids == {expect}, (kind, pids, workers.pids)
                run = [(b[0] - a[0]) * 1e3 for a, b in zip(marks, marks[1:])]
                gaps[kind] += run
                first[kind] += run[:5]
                last[kind] += run[-5:]
        workers.check_alive()
    local, job = statistics.median(gaps["local"]), statistics.median(gaps["job"])
    if split:
        return {"job2_step_ms": job, "job2_added_ms": job - local, "local2_step_ms": local}
    return {"local_step_ms": local, "job_step_ms": job, "job_added_ms": job - local,
            "job_first_ms": statistics.median(first["job"]), "job_last_ms": statistics.median(last["job"]),
            "local_first_ms": statistics.median(first["local"]), "local_last_ms": statistics.median(last["local"])}


# -- 5. event streams --------------------------------------------------------------------------------------------


def streams(workdir: str, count: int, mode: str, settle: float) -> Sample:
    """Child: RSS growth of this process with ``count`` open ``events(id)`` streams (``mode``: ``async`` for an
    AsyncClient with a task each, ``threads`` for a Client with a thread each); then signal all and time until
    every stream has ended."""
    store = new_store(os.path.join(workdir, f"streams-{mode}"))
    with Workers(store, workdir, []) as workers:
        if mode == "async":
            out = asyncio.run(_async_streams(store, workers, count, settle))
        else:
            out = _thread_streams(store, workers, count, settle)
        workers.check_alive()
    return {f"streams_{mode}_{k}": v for k, v in out.items()}


def _held_instances(client: Client, workers: Workers, count: int) -> list[str]:
    warm_up(client, workers)
    ids, _ = start_many(lambda i: client.start(held), count + 1, 32)
    return ids


PROBES = 5
"""Streams whose instance alone is signalled first: how long until each sees its end, all the others open."""


def _signal_each(client: Client, ids: list[str]) -> dict[str, float]:
    """Signal each instance in turn; when each signal was sent (``perf_counter``)."""
    sent = {}
    for iid in ids:
        sent[iid] = time.perf_counter()
        client.signal(iid, "go", 0)
    return sent


def _measured(base_kb: int, count: int, t_open: float) -> dict[str, float]:
    """RSS growth over ``base_kb`` after a GC, in all and per stream; the seconds the streams took to open."""
    grown = settled_rss_kb() - base_kb
    return {"mb": grown / 1024, "kb": grown / count, "open_s": t_open, "threads": float(threading.active_count())}


async def _async_streams(store: str, workers: Workers, count: int, settle: float) -> dict[str, float]:
    from durable import AsyncClient

    async with AsyncClient(store) as aclient:
        client = aclient._client  # the same client, for the set-up and the signals (plain threads)
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(None, _held_instances, client, workers, count)
        warm, ids = ids[0], ids[1:]
        async for _ in aclient.events(warm):  # a first stream: lazy imports, the client's listener
            break
        await asyncio.sleep(settle)
        base = settled_rss_kb()
        opened = 0
        all_open = asyncio.Event()
        ended: dict[str, float] = {}

        async def follow(iid: str) -> None:
            nonlocal opened
            first = True
            async for _ in aclient.events(iid):
                if first:
                    first = False
                    opened += 1
                    if opened == count:
                        all_open.set()
            ended[iid] = time.perf_counter()

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(follow(iid)) for iid in ids]
        await asyncio.wait_for(all_open.wait(), 300)
        t_open = time.perf_counter() - t0
        await asyncio.sleep(settle)  # every stream back in its waiting call
        peak = _measured(base, count, t_open)
        probes = ids[::max(1, count // PROBES)][:PROBES]
        sent = await loop.run_in_executor(None, _signal_each, client, probes)
        while len(ended) < len(probes):
            await asyncio.sleep(0.005)
        peak["one_s"] = max(ended[iid] - sent[iid] for iid in probes)
        t_sig = time.perf_counter()
        rest = [iid for iid in ids if iid not in sent]
        await loop.run_in_executor(None, lambda: start_many(lambda i: client.signal(rest[i], "go", i),
                                                            len(rest), 32))
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
        t_end = time.perf_counter()
        peak["end_s"] = t_end - t_sig
        client.signal(warm, "go")
        return peak


def _thread_streams(store: str, workers: Workers, count: int, settle: float) -> dict[str, float]:
    with Client(store) as client:
        ids = _held_instances(client, workers, count)
        warm, ids = ids[0], ids[1:]
        for _ in client.events(warm):
            break
        time.sleep(settle)
        base = settled_rss_kb()
        opened = [0]
        lock = threading.Lock()
        all_open = threading.Event()
        ended: dict[str, float] = {}

        def follow(iid: str) -> None:
            first = True
            for _ in client.events(iid):
                if first:
                    first = False
                    with lock:
                        opened[0] += 1
                        if opened[0] == count:
                            all_open.set()
            ended[iid] = time.perf_counter()

        t0 = time.perf_counter()
        pool = [threading.Thread(target=follow, args=(iid,), daemon=True) for iid in ids]
        for t in pool:
            t.start()
        if not all_open.wait(300):
            raise RuntimeError(f"only {opened[0]} of {count} streams opened in 300 s")
        t_open = time.perf_counter() - t0
        time.sleep(settle)
        peak = _measured(base, count, t_open)
        probes = ids[::max(1, count // PROBES)][:PROBES]
        sent = _signal_each(client, probes)
        deadline = time.monotonic() + 300
        while len(ended) < len(probes) and time.monotonic() < deadline:
            time.sleep(0.005)
        peak["one_s"] = max(ended[iid] - sent[iid] for iid in probes)
        t_sig = time.perf_counter()
        rest = [iid for iid in ids if iid not in sent]
        start_many(lambda i: client.signal(rest[i], "go", i), len(rest), 32)
        for t in pool:
            t.join(300)
        peak["end_s"] = time.perf_counter() - t_sig
        client.signal(warm, "go")
        return peak


# -- 6. idle worker ----------------------------------------------------------------------------------------------


def _idle_cpu(workers: Workers, seconds: float, settle: float = 1.5) -> tuple[float, float, float]:
    """After ``settle`` seconds, the first worker's CPU over ``seconds``: % of a core from its threads' run times,
    the same from its clock ticks, and the KB/s it wrote."""
    time.sleep(settle)
    pid = workers.pids[0]
    cpu0, ticks0, io0, t0 = proc_cpu_ns(pid), proc_cpu_s(pid), proc_written(pid), time.monotonic()
    time.sleep(seconds)
    cpu1, ticks1, io1, t1 = proc_cpu_ns(pid), proc_cpu_s(pid), proc_written(pid), time.monotonic()
    workers.check_alive()
    return (cpu1 - cpu0) / 1e9 / (t1 - t0) * 100, (ticks1 - ticks0) / (t1 - t0) * 100, (io1 - io0) / 1024 / (t1 - t0)


def idle(workdir: str, seconds: float, backlog: int, settle: float) -> Sample:
    """Child: CPU and disk writes of a warmed-up ``durable worker`` with nothing to do, over ``seconds``; then of
    a worker with nothing to do in a store holding ``backlog`` unfinished instances: queued on a queue it does not
    serve, or on its own queue but not due for an hour (``delay=``)."""
    out: Sample = {}
    store = new_store(os.path.join(workdir, "idle"))
    with Workers(store, workdir, []) as workers:
        with Client(store) as client:
            warm_up(client, workers)
        out["idle_cpu_pct"], out["idle_cpu_pct_ticks"], out["idle_kb_written_per_s"] = _idle_cpu(workers, seconds,
                                                                                                   settle)
    for kind, delay, argv in (("other", None, ["--queue", "other"]), ("delayed", 3600.0, [])):
        store = new_store(os.path.join(workdir, f"idle-{kind}"))
        with Client(store) as client:
            start_many(lambda i: client.start(three, i, delay=delay), backlog, 64)
        with Workers(store, workdir, argv) as workers:
            workers.wait_ready()
            cpu, _, written = _idle_cpu(workers, seconds, settle)
        out[f"idle_{kind}_cpu_pct"], out[f"idle_{kind}_kb_written_per_s"] = cpu, written
    return out


# -- running it ------------------------------------------------------------------------------------------------


PARTS: list[tuple[str, Callable[[Sizes], dict[str, Any]]]] = [
    ("starts", lambda s: dict(seq=s.seq_starts, concurrent=s.concurrent_starts, threads=s.threads,
                              repeats=s.repeats)),
    ("pickup_latency", lambda s: dict(samples=s.pickups)),
    ("drain", lambda s: dict(count=s.drain, workers=1, threads=s.threads, repeats=s.repeats)),
    ("drain", lambda s: dict(count=s.drain, workers=1, threads=s.threads, repeats=s.repeats, concurrency=100)),
    ("drain", lambda s: dict(count=s.drain, workers=2, threads=s.threads, repeats=s.repeats)),
    ("drain", lambda s: dict(count=s.drain, workers=2, threads=s.threads, repeats=s.repeats, concurrency=100)),
    ("external", lambda s: dict(steps=s.chain, repeats=s.repeats, split=False)),
    ("external", lambda s: dict(steps=s.chain, repeats=s.repeats, split=True)),
    ("streams", lambda s: dict(count=s.streams, mode="async", settle=s.settle)),
    ("streams", lambda s: dict(count=s.streams, mode="threads", settle=s.settle)),
    ("idle", lambda s: dict(seconds=s.idle_seconds, backlog=s.backlog, settle=s.settle)),
]


def run_parts(sizes: Sizes, workdir: str, spawn: Spawn, report: Callable[[Sample], None] | None = None) -> list[Sample]:
    """Each part in a fresh child process, in a directory of its own; its sample (and ``report(sample)``)."""
    samples = []
    for n, (function, kwargs) in enumerate(PARTS):
        partdir = os.path.join(workdir, f"{n}-{function}")
        os.makedirs(partdir)
        try:
            sample = spawn("clients", function, workdir=partdir,
                           **kwargs(sizes))
        finally:
            shutil.rmtree(partdir, ignore_errors=True)
        samples.append(sample)
        if report is not None:
            report(sample)
    return samples


def measure(side: str, cfg: Config, spawn: Spawn) -> list[Sample]:
    """``run.py``'s entry point (durable only): every part once, each in its own child process."""
    return run_parts(Sizes.of(cfg.quick, cfg.repeat), cfg.workdir, spawn)


def _fmt(row: Row, value: float) -> str:
    return row.fmt.format(value)


def _verdict(row: Row, value: float) -> str:
    if row.limit is None:
        return ""
    ok = value <= row.limit if row.better == "lower" else value >= row.limit
    target = ("≤ " if row.better == "lower" else "≥ ") + f"{row.limit:g}"
    return f"{'PASS' if ok else 'MISS'} (target {target})"


def main(argv: list[str] | None = None) -> int:
    """Standalone: every part, each figure printed as it comes, then a table."""
    from _proc import ChildFailed, make_spawn
    from _report import _filesystem, load_average, pipe_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repeat: about 30 s")
    p.add_argument("--repeat", type=int, default=None, help="repeats where a part repeats (default 3; --quick 1)")
    p.add_argument("--dir", default=None, help="where the temporary stores go (default: the system temp dir)")
    p.add_argument("--timeout", type=float, default=None, help="seconds each child may run (default 120 quick, 600)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every child process started")
    args = p.parse_args(argv)
    sizes = Sizes.of(args.quick, args.repeat)
    root = tempfile.mkdtemp(prefix="durable-clients-", dir=args.dir)
    started, load = time.perf_counter(), load_average()
    rows = {row.key: row for row in ROWS}
    found: dict[str, float] = {}

    def report(sample: Sample) -> None:
        for key, value in sample.items():
            if key in rows:
                found[key] = value
                row = rows[key]
                print(f"{row.label}: {_fmt(row, value)} {_verdict(row, value)}".rstrip(), flush=True)
        extra = {k: v for k, v in sample.items() if k not in rows}
        if extra:
            print("  (also: " + ", ".join(f"{k} {v:,.2f}" for k, v in extra.items()) + ")", flush=True)

    try:
        print(f"stores in {root} ({_filesystem(root)}); python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
              f"{'quick' if args.quick else 'full'} run: {sizes}", flush=True)
        spawn = make_spawn(root, args.timeout or (120 if args.quick else 600), sys.stderr if args.verbose else None)
        try:
            run_parts(sizes, root, spawn, report)
        except ChildFailed as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(pipe_table(["figure", "value", "target"],
                     [[row.label, _fmt(row, found[row.key]), _verdict(row, found[row.key])]
                      for row in ROWS if row.key in found], right={1}))
    print()
    print(f"total time: {time.perf_counter() - started:.0f} s; load average at start {load}, at end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
