"""Crash a process mid-workflow with SIGKILL, then continue in a new process.

    python examples/crash_and_resume.py [--store PATH]

The script starts a child process that runs a four-step workflow on an LMDB
store. Each step appends a line to a log (and fsyncs it). As soon as step
``reserve`` has finished, the parent kills the child with SIGKILL (no cleanup,
no flush: a real crash) while ``charge`` is running. A second child opens the
same store and calls ``resume()``: ``fetch`` and ``reserve`` are not run again
(their results come from the store), ``charge`` runs again (it had not
finished: steps run at least once), then ``ship``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from durable import Engine, current_step, step, workflow

LOG = Path(os.environ.get("DURABLE_DEMO_LOG", "steps.log"))
SLOW = os.environ.get("DURABLE_DEMO_SLOW") == "1"


def _log(name: str) -> None:
    info = current_step()
    key = info.idempotency_key if info else name
    with LOG.open("a") as f:
        f.write(f"{os.getpid()} {name} {key}\n")
        f.flush()
        os.fsync(f.fileno())


@step
async def fetch(order_id: str) -> dict[str, str]:
    _log("fetch")
    return {"order_id": order_id, "item": "book"}


@step
async def reserve(order: dict[str, str]) -> str:
    _log("reserve")
    return f"reserved {order['item']}"


@step
async def charge(order: dict[str, str]) -> str:
    _log("charge")
    if SLOW:
        await trio.sleep(60)  # the first process is killed in here
    return "charged 42"


@step
async def ship(order: dict[str, str]) -> str:
    _log("ship")
    return f"shipped {order['order_id']}"


@workflow
async def checkout(order_id: str) -> list[str]:
    order = await fetch(order_id)
    return [await reserve(order), await charge(order), await ship(order)]


async def child(store: Path, mode: str) -> None:
    async with Engine.open(store) as engine:
        engine.workflows.register(checkout)
        if mode == "start":
            await engine.workflows.start(checkout, "ORD-7", id="order-7")
        else:
            print(f"  resumed: {await engine.workflows.resume()}", flush=True)
        instance = await engine.workflows.wait("order-7")
        print(f"  process {os.getpid()}: {instance.status} -> {instance.output}", flush=True)


def run_child(store: Path, log: Path, mode: str, slow: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DURABLE_DEMO_LOG=str(log), DURABLE_DEMO_SLOW="1" if slow else "0")
    return subprocess.Popen([sys.executable, __file__, "--child", mode, "--store", str(store)], env=env)


def demo(store: Path) -> int:
    if store.exists():
        print(f"{store} already exists: give a new --store path (the demo starts from an empty store)",
              file=sys.stderr)
        return 2
    log = store.parent / "steps.log"
    log.unlink(missing_ok=True)
    print(f"store: {store}\n1. first process runs the workflow...")
    first = run_child(store, log, "start", slow=True)
    deadline = time.monotonic() + 30
    while "charge" not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline or first.poll() is not None:
            print("the first process did not reach 'charge'", file=sys.stderr)
            first.kill()
            return 1
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    print(f"2. killed process {first.pid} with SIGKILL during 'charge'")
    print("3. a new process resumes from the store...")
    second = run_child(store, log, "resume", slow=False)
    if second.wait() != 0:
        return 1
    runs: dict[str, list[str]] = {}
    for line in log.read_text().splitlines():
        pid, name, _key = line.split(" ", 2)
        runs.setdefault(name, []).append(pid)
    print("4. what ran where:")
    for name in ("fetch", "reserve", "charge", "ship"):
        pids = runs.get(name, [])
        print(f"  {name:8} ran {len(pids)} time(s) in process(es) {', '.join(pids)}")
    ok = len(runs["fetch"]) == len(runs["reserve"]) == len(runs["ship"]) == 1 and len(runs["charge"]) == 2
    print("finished steps were not run again" if ok else "UNEXPECTED: a finished step ran again")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--child", choices=["start", "resume"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        trio.run(child, args.store, args.child)
    else:
        path = args.store or Path(tempfile.mkdtemp(prefix="durable-crash-")) / "crash.lmdb"
        sys.exit(demo(path))
