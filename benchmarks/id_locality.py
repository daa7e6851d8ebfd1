"""Disk writes as a store grows: generated (time-ordered) ids against random ids.

    python benchmarks/id_locality.py [--rounds N] [--dir PATH]

Runs W2's workload (1,000 workflows of 3 steps, started at once) ``--rounds``
times on one store, so the store grows by 1,000 instances a round, and prints
for each round the KB written to disk per workflow (``written_bytes()``:
``/proc/self/io``) and the steps per second. It does so twice, each on a fresh
store in a fresh process: once with the ids ``start()`` generates (version-7
UUIDs, time-ordered) and once with ``start()`` generating random version-4
UUIDs instead, as it did before (patched in that process only).

A random id sends each new instance's records (instance, status, index,
lease, steps) to a random page of each B-tree, so one group commit copies and
writes a page per record, and the bigger the store, the fewer records share a
page. Time-ordered ids put the instances started together next to each other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import trio

import durable._engine.driver
from _common import written_bytes
from _report import pipe_table
from durable import Engine
from w2_concurrent import three_steps

WORKFLOWS = 1_000


async def _round(engine: Engine) -> tuple[float, float]:
    """One round: KB written per workflow and steps/s."""
    ids: list[str] = [""] * WORKFLOWS

    async def start_one(i: int) -> None:
        ids[i] = await engine.workflows.start(three_steps, i)

    written = written_bytes()
    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(WORKFLOWS):
            nursery.start_soon(start_one, i)
    for wid in ids:
        assert (await engine.workflows.wait(wid)).status == "completed"
    elapsed = time.perf_counter() - t0
    return (written_bytes() - written) / WORKFLOWS / 1e3, 3 * WORKFLOWS / elapsed


def _random_id(created_at: object) -> str:
    """What ``start()`` generated before version-7 ids: a random version-4 UUID."""
    return uuid.uuid4().hex


def child(store: str, rounds: int, random_ids: bool) -> list[tuple[float, float]]:
    """In a fresh process: ``rounds`` rounds on a new store at ``store``."""
    if random_ids:
        # start() calls it by this name; were it renamed, the patch would silently measure generated ids
        assert callable(getattr(durable._engine.driver, "new_instance_id", None)), "start()'s id generator moved"
        durable._engine.driver.new_instance_id = _random_id  # type: ignore[attr-defined]

    async def main() -> list[tuple[float, float]]:
        async with Engine.open(store) as engine:
            engine.workflows.register(three_steps)
            return [await _round(engine) for _ in range(rounds)]

    return trio.run(main)


def main() -> None:
    """Run both kinds of id and print a table of rounds."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=15, help="rounds of 1,000 workflows on one store (default 15)")
    p.add_argument("--dir", default=None, help="where to put the stores (default: the system temp dir)")
    p.add_argument("--child", nargs=3, metavar=("STORE", "ROUNDS", "KIND"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        store, rounds, kind = args.child
        print(json.dumps(child(store, int(rounds), kind == "random")))
        return
    root = tempfile.mkdtemp(prefix="durable-ids-", dir=args.dir)
    figures: dict[str, list[list[float]]] = {}
    try:
        for kind in ("generated", "random"):
            os.sync()
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", os.path.join(root, kind), str(args.rounds), kind],
                check=True, capture_output=True, text=True,
            ).stdout
            figures[kind] = json.loads(out.splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    for r in range(args.rounds):
        (gen_kb, gen_rate), (rnd_kb, rnd_rate) = figures["generated"][r], figures["random"][r]
        ratio = f"{rnd_kb / gen_kb:,.1f}x" if gen_kb > 0 else "—"  # (a tmpfs writes nothing to a disk)
        rows.append([f"{(r + 1) * WORKFLOWS:,}", f"{gen_kb:,.1f}", f"{rnd_kb:,.1f}", ratio,
                     f"{gen_rate:,.0f}", f"{rnd_rate:,.0f}"])
    print(pipe_table(["instances in the store", "KB/workflow, generated ids", "KB/workflow, random ids",
                      "random / generated", "steps/s, generated", "steps/s, random"], rows, right=set(range(6))))


if __name__ == "__main__":
    main()
