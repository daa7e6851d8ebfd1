"""A booking saga: when a later booking fails, undo the finished ones; survive a crash while undoing.

    python examples/saga.py [--store PATH]

The workflow books a flight, a hotel and a car, in that order. The car rental
refuses, so the workflow compensates what it had booked, newest first:
cancel the hotel, then cancel the flight. Compensations are steps like any
other: each is checkpointed, and a crash in the middle of them loses nothing.

The script runs the workflow in a child process and kills it with SIGKILL
while ``cancel_hotel`` runs (half-way through compensating). A second process
resumes the instance from the LMDB store: the bookings and the car's failure
replay from their checkpoints (``try/except`` takes the same path), the
interrupted ``cancel_hotel`` runs again (at least once: it uses its
idempotency key), and ``cancel_flight`` runs once. Each step appends a line to
a log, so the script can show what ran where.

The same saga with the builder would put ``catch=[Catch(["CarUnavailable"],
next="cancel-hotel")]`` on the car task; see docs/primitives.md.
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
from typing import Any

import trio

from durable import Engine, current_step, step, workflow

LOG = Path(os.environ.get("DURABLE_SAGA_LOG", "saga.log"))
SLOW = os.environ.get("DURABLE_SAGA_SLOW") == "1"


class CarUnavailable(Exception):
    """The car rental has nothing left."""


def _log(name: str) -> str:
    info = current_step()
    key = info.idempotency_key if info else name  # what a real service would deduplicate on
    with LOG.open("a") as f:
        f.write(f"{os.getpid()} {name} {key}\n")
        f.flush()
        os.fsync(f.fileno())
    return key


@step
async def book_flight(trip: dict[str, Any]) -> str:
    _log("book_flight")
    return f"FL-{trip['to']}"


@step
async def book_hotel(trip: dict[str, Any]) -> str:
    _log("book_hotel")
    return f"HT-{trip['to']}"


@step
async def book_car(trip: dict[str, Any]) -> str:
    _log("book_car")
    raise CarUnavailable(f"no car left in {trip['to']}")


@step
async def cancel_hotel(booking: str) -> str:
    _log("cancel_hotel")
    if SLOW:
        await trio.sleep(60)  # the first process is killed in here, mid-compensation
    return f"cancelled {booking}"


@step
async def cancel_flight(booking: str) -> str:
    _log("cancel_flight")
    return f"cancelled {booking}"


@workflow
async def book_trip(trip: dict[str, Any]) -> dict[str, Any]:
    """Book everything, or nothing: on a failure, undo the finished bookings, newest first."""
    undo: list[tuple[Any, str]] = []
    try:
        flight = await book_flight(trip)
        undo.append((cancel_flight, flight))
        hotel = await book_hotel(trip)
        undo.append((cancel_hotel, hotel))
        car = await book_car(trip)
        return {"status": "booked", "flight": flight, "hotel": hotel, "car": car}
    except CarUnavailable as exc:
        undone = [await compensate(booking) for compensate, booking in reversed(undo)]
        return {"status": "rolled back", "reason": str(exc), "undone": undone}


async def child(store: Path, mode: str) -> None:
    async with Engine.open(store) as engine:
        engine.workflows.register(book_trip)
        if mode == "start":
            await engine.workflows.start(book_trip, {"to": "Lisbon"}, id="trip-1")
        else:
            print(f"  resumed: {await engine.workflows.resume()}", flush=True)
        instance = await engine.workflows.wait("trip-1")
        print(f"  process {os.getpid()}: {instance.status} -> {instance.output}", flush=True)


def run_child(store: Path, log: Path, mode: str, slow: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DURABLE_SAGA_LOG=str(log), DURABLE_SAGA_SLOW="1" if slow else "0")
    return subprocess.Popen([sys.executable, __file__, "--child", mode, "--store", str(store)], env=env)


def demo(store: Path) -> int:
    if store.exists():
        print(f"{store} already exists: give a new --store path", file=sys.stderr)
        return 2
    log = store.parent / "saga.log"
    log.unlink(missing_ok=True)
    print(f"store: {store}\n1. first process books the trip; the car fails; it starts compensating...")
    first = run_child(store, log, "start", slow=True)
    deadline = time.monotonic() + 30
    while "cancel_hotel" not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline or first.poll() is not None:
            print("the first process did not reach 'cancel_hotel'", file=sys.stderr)
            first.kill()
            return 1
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    print(f"2. killed process {first.pid} with SIGKILL during 'cancel_hotel'")
    print("3. a new process resumes the saga from the store...")
    second = run_child(store, log, "resume", slow=False)
    if second.wait() != 0:
        return 1
    runs: dict[str, list[str]] = {}
    keys: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        pid, name, key = line.split(" ", 2)
        runs.setdefault(name, []).append(pid)
        keys.setdefault(name, set()).add(key)
    print("4. what ran where:")
    for name in ("book_flight", "book_hotel", "book_car", "cancel_hotel", "cancel_flight"):
        pids = runs.get(name, [])
        print(f"  {name:13} ran {len(pids)} time(s) in process(es) {', '.join(pids)}")
    once = all(len(runs.get(n, [])) == 1 for n in ("book_flight", "book_hotel", "book_car", "cancel_flight"))
    ok = once and len(runs.get("cancel_hotel", [])) == 2 and len(keys["cancel_hotel"]) == 1
    print("every finished step ran once; the interrupted compensation ran again under the same idempotency key"
          if ok else "UNEXPECTED: a finished step ran again")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--child", choices=["start", "resume"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        trio.run(child, args.store, args.child)
    else:
        path = args.store or Path(tempfile.mkdtemp(prefix="durable-saga-")) / "saga.lmdb"
        sys.exit(demo(path))
