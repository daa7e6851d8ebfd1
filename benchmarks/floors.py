"""Floors: how close to physically possible each target of ``run.py`` is on this machine.

    python benchmarks/floors.py [--dir PATH] [--quick]

A *floor* is the least a workload can cost with no engine at all: only the work
any durable engine on trio + LMDB must do (sync the disk, hand a commit to a
writer thread and back, keep a trio task per workflow). No engine beats its
floor, so a floor near its target leaves the engine little room, and one
above it makes the target unreachable on this machine.

The figures vary with the machine (disk, CPU, kernel, other load): run it on a
quiet machine. ``--dir`` selects the disk (a tmpfs makes fsync free); the
stores go to a temporary directory there, removed afterwards. Each memory
floor runs in a fresh child process. ``--quick``: a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import lmdb
import trio
import trio.testing

from _common import settled_rss_kb
from _disk import fsync_us, lmdb_commit_us
from _report import _filesystem, load_average, pipe_table

W1_US, W2_STEPS_PER_S, W5_KB = 300, 20_000, 3  # run.py's targets: µs per step, steps/s, KB per workflow


@dataclass(frozen=True)
class Floor:
    """One row: a floor, the target it bounds, and what it is."""

    name: str
    value: float
    unit: str
    bounds: str
    why: str
    target: float | None = None  # the target in the same unit, if the floor is directly comparable
    higher: bool = False  # the target is a minimum (a rate), not a maximum

    def cells(self) -> list[str]:
        """The table row; the value with 2 decimals below 10, 1 below 100; the budget: the share of the
        target's budget (time or memory per unit of work) the floor alone takes."""
        value = f"{self.value:,.{2 if self.value < 10 else 1 if self.value < 100 else 0}f}"
        share = None if self.target is None else self.target / self.value if self.higher else self.value / self.target
        budget = "" if share is None else f"{share:.0%}"
        return [self.name, value, self.unit, self.bounds, budget, self.why]


def _no_abort(_: Any) -> trio.lowlevel.Abort:
    """A parked task here cannot be cancelled (nothing cancels it)."""
    return trio.lowlevel.Abort.FAILED


def _wake_all(tasks: list[trio.lowlevel.Task]) -> None:
    """Reschedule every parked task of a committed batch (on the trio thread, like durable's writer)."""
    for task in tasks:
        trio.lowlevel.reschedule(task)


def wake_latencies_us(count: int) -> tuple[float, float]:
    """Median latencies of durable's two hand-offs (trio -> worker thread, worker -> trio) in µs.

    Trio -> thread: the trio task releases a ``threading.Lock`` the worker
    blocks on; timed until the worker runs. Thread -> trio: the worker calls
    ``run_sync_soon(reschedule, task)`` on the trio token; timed until the trio
    task parked in ``wait_task_rescheduled`` runs again.
    """
    to_thread: list[int] = []
    to_trio: list[int] = []
    go = threading.Lock()
    go.acquire()
    sent = [0]  # perf_counter_ns() when the current hand-off started

    async def main() -> None:
        token, task = trio.lowlevel.current_trio_token(), trio.lowlevel.current_task()

        def worker() -> None:
            for _ in range(count):
                go.acquire()
                to_thread.append(time.perf_counter_ns() - sent[0])
                sent[0] = time.perf_counter_ns()
                token.run_sync_soon(trio.lowlevel.reschedule, task)

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        for _ in range(count):
            sent[0] = time.perf_counter_ns()
            go.release()
            await trio.lowlevel.wait_task_rescheduled(_no_abort)
            to_trio.append(time.perf_counter_ns() - sent[0])
        thread.join()

    trio.run(main)
    return statistics.median(to_thread) / 1e3, statistics.median(to_trio) / 1e3


def w2_floor_steps_per_s(directory: str, tasks: int, runs: int) -> float:
    """Median steps/s of ``runs`` runs of ``tasks`` bare workflows started at once, after a warm-up of 10.

    Each task writes an instance record, 3 steps (a pickled record each) and a
    finish record, each time waiting until it is committed. One writer thread,
    the least of durable's (durable/stores/_writer.py), commits everything
    queued in one synced transaction and reschedules the waiters through the
    trio token; its lock is held while it is idle, and only trio releases it.
    """
    path = os.path.join(directory, "w2-floor")
    env = lmdb.open(path, map_size=1 << 30, max_dbs=4, sync=True, metasync=True, readahead=False)
    instances, steps = env.open_db(b"instances"), env.open_db(b"steps")
    queue: deque[tuple[Any, bytes, bytes, trio.lowlevel.Task]] = deque()
    wake = threading.Lock()
    wake.acquire()
    stopping = [False]
    rates: list[float] = []

    def writer(token: trio.lowlevel.TrioToken) -> None:
        while True:
            wake.acquire()
            if not queue:
                if stopping[0]:
                    return
                continue  # a wake-up for a batch already taken
            batch = [queue.popleft() for _ in range(len(queue))]
            with env.begin(write=True) as txn:
                for db, key, value, _task in batch:
                    txn.put(key, value, db=db)
            token.run_sync_soon(_wake_all, [w[3] for w in batch])

    async def write(db: Any, key: bytes, value: bytes) -> None:
        queue.append((db, key, value, trio.lowlevel.current_task()))
        if wake.locked():
            wake.release()
        await trio.lowlevel.wait_task_rescheduled(_no_abort)

    async def workflow(i: int) -> None:
        wid = os.urandom(8).hex().encode()
        await write(instances, wid, pickle.dumps(("running", i, time.time())))
        x = i
        for s in range(3):
            x += 1
            await write(steps, b"%s\0%d" % (wid, s), pickle.dumps(("completed", x, time.time())))
        await write(instances, wid, pickle.dumps(("completed", x, time.time())))

    async def main() -> None:
        thread = threading.Thread(target=writer, args=(trio.lowlevel.current_trio_token(),), daemon=True)
        thread.start()
        try:
            for n in [10] + [tasks] * runs:  # a warm-up, then the runs
                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for i in range(n):
                        nursery.start_soon(workflow, i)
                rates.append(3 * n / (time.perf_counter() - t0))
        finally:
            stopping[0] = True
            if wake.locked():
                wake.release()
            thread.join()

    try:
        trio.run(main)
    finally:
        env.close()
        shutil.rmtree(path, ignore_errors=True)
    return statistics.median(rates[1:])


async def _bare(event: trio.Event) -> None:
    """A bare task blocked on ``event``; also the step body in :func:`_workflow`."""
    await event.wait()


async def _step(event: trio.Event) -> None:
    """The step's frame."""
    await _bare(event)


async def _workflow(event: trio.Event) -> None:
    """The workflow's frame, with the cancel scope that cancel() and a deadline need."""
    with trio.CancelScope():
        await _step(event)


def w5_child(kind: str, count: int) -> float:
    """In a fresh process: KB of RSS per task with ``count`` tasks blocked on one event (after a warm-up of 10)."""
    fn = _workflow if kind == "scoped" else _bare

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            warm = trio.Event()
            for _ in range(10):
                nursery.start_soon(fn, warm)
            await trio.testing.wait_all_tasks_blocked()
            warm.set()
            await trio.testing.wait_all_tasks_blocked()
            base = settled_rss_kb()
            event = trio.Event()
            for _ in range(count):
                nursery.start_soon(fn, event)
            await trio.testing.wait_all_tasks_blocked()
            used = settled_rss_kb() - base
            event.set()
        return used / count

    return trio.run(main)


def w5_floor_kb(kind: str, count: int) -> float:
    """Run :func:`w5_child` in a child process (no heap shared with this one or the other kind)."""
    out = subprocess.run([sys.executable, __file__, "--w5-child", kind, "--count", str(count)],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"the W5 child ({kind}) failed:\n{out.stderr}")
    return float(out.stdout.split()[-1])


def measure(directory: str, quick: bool) -> list[Floor]:
    """Every floor, in table order."""
    k = 10 if quick else 1
    fsync = fsync_us(directory, count=100 // k)
    commit = lmdb_commit_us(directory, count=300 // k)
    one_sync = lmdb_commit_us(directory, count=300 // k, metasync=False)
    assert commit is not None and one_sync is not None
    rounds = 3000 // k
    to_thread, to_trio = wake_latencies_us(rounds)
    tasks = 1000 // k
    steps_per_s = w2_floor_steps_per_s(directory, tasks, 3)
    inflight = 10_000 // k
    w1, w5 = f"W1 ≤ {W1_US} µs/step", f"W5 ≤ {W5_KB} KB/workflow"
    return [
        Floor("fsync 4 KB", fsync, "µs", w1, "4 KB pwrite + fsync: what one sync costs on this disk", W1_US),
        Floor("LMDB synced commit", commit, "µs", w1, "put + commit as durable opens LMDB: fdatasync of the data "
              "pages, then the meta page through an O_DSYNC fd (2 syncs)", W1_US),
        Floor("LMDB commit, metasync=False", one_sync, "µs", "none (information)",
              "1 sync; NOT durable against power loss for the last transaction (durable never uses it)"),
        Floor("wake trio -> thread", to_thread, "µs", w1,
              f"trio task releases a threading.Lock a worker thread blocks on (median of {rounds:,})", W1_US),
        Floor("wake thread -> trio", to_trio, "µs", w1,
              f"worker: run_sync_soon(reschedule, task) until the parked trio task runs (median of {rounds:,})", W1_US),
        Floor("W1 floor", commit + to_thread + to_trio, "µs/step", w1,
              "synced commit + both wake-ups: a sequential step through a writer thread", W1_US),
        Floor("W2 floor", steps_per_s, "steps/s", f"W2 ≥ {W2_STEPS_PER_S:,} steps/s",
              f"{tasks:,} tasks at once: instance, 3 pickled steps, finish, each awaiting its group commit; "
              "median of 3", W2_STEPS_PER_S, higher=True),
        Floor("W5 floor, bare task", w5_floor_kb("bare", inflight), "KB/task", w5,
              f"RSS per trio task (1 coroutine frame) blocked on a shared trio.Event, {inflight:,} at once", W5_KB),
        Floor("W5 floor, 3 frames + scope", w5_floor_kb("scoped", inflight), "KB/task", w5,
              "workflow, step and step-body frames + a CancelScope: a workflow blocked in a step", W5_KB),
    ]


def main(argv: list[str] | None = None) -> int:
    """Measure every floor in a temporary directory under ``--dir`` and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=None, help="where to put the temporary stores (default: the system temp dir)")
    p.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    p.add_argument("--w5-child", choices=["bare", "scoped"], help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=10_000, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.w5_child:
        print(w5_child(args.w5_child, args.count))
        return 0
    root = tempfile.mkdtemp(prefix="durable-floors-", dir=args.dir)
    started, load = time.perf_counter(), load_average()
    try:
        print(f"stores in {root} ({_filesystem(root)}); python {sys.version.split()[0]}; "
              f"{os.cpu_count()} CPUs; {'quick' if args.quick else 'full'} run", flush=True)
        floors = measure(root, args.quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(pipe_table(["floor", "measured", "unit", "bounds", "budget", "what it is"],
                     [f.cells() for f in floors], right={1, 4}))
    print()
    print("budget: the share of the target's budget (time per step, or memory per workflow) the floor alone takes; "
          "above 100% the target cannot be met on this machine.")
    print(f"total time: {time.perf_counter() - started:.1f} s; load average at start {load}, at end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
