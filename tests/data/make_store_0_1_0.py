"""Writes ``tests/data/store-0.1.0``: run once, with durable 0.1.0 (commit b73ee50), before the layered layout.

    python tests/data/make_store_0_1_0.py tests/data/store-0.1.0

Kept for the record: today's code must go on reading that store (the
pickles in it name ``durable._serde`` functions and classes by module path),
so it is never rewritten by newer code. What it holds:

- ``done-1``: ``completes(1)``, completed (``{"doubled": 4}``);
- ``failed-1``: ``fails(5)``, failed in ``explode`` with a stored ``ValueError``;
- ``unpicklable-1``: ``fails_unpicklable(7)``, failed with an error stored as
  ``durable._serde.UnpicklableError``;
- ``main-1``: ``carries_main(3)``, completed with an instance of a class defined in
  ``__main__`` (stored through ``durable._serde._from_main``);
- ``builder-1``: the builder workflow, completed through its catch;
- ``waits-1``: ``waits(10)``, unfinished, waiting for signal ``go``
  (``add`` checkpointed);
- ``interrupted-1``: ``interrupted(20)``, unfinished: ``add`` checkpointed,
  then the process was SIGKILLed inside ``boom``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).parent))

import durable  # noqa: E402
import fixture_flows as flows  # noqa: E402


@dataclass(frozen=True)
class Point:
    """Defined in ``__main__``: stored by value, loaded through ``_from_main``."""

    x: int
    y: int


@durable.step
async def make_point(n: int) -> Point:
    return Point(n, n * 2)


@durable.workflow
async def carries_main(n: int) -> Point:
    return await make_point(n)


async def main(path: str) -> None:
    async with durable.Engine.open(path) as engine:
        for name, fn in flows.JOBS.items():
            engine.jobs.register(name, fn)
        for wf in (flows.completes, flows.fails, flows.fails_unpicklable, flows.interrupted, flows.waits,
                   carries_main, flows.builder):
            engine.workflows.register(wf)
        for wf, arg, iid in [(flows.completes, 1, "done-1"), (flows.fails, 5, "failed-1"),
                             (flows.fails_unpicklable, 7, "unpicklable-1"), (carries_main, 3, "main-1"),
                             ("builder-flow", "hi", "builder-1")]:
            await engine.workflows.start(wf, arg, id=iid)
            await engine.workflows.wait(iid)
        await engine.workflows.start(flows.waits, 10, id="waits-1")
        while not engine.workflows.suspended_ids():
            await trio.sleep(0.01)
        flows.CRASH["armed"] = True
        await engine.workflows.start(flows.interrupted, 20, id="interrupted-1")
        await engine.workflows.wait("interrupted-1")
    raise SystemExit("unreachable: boom kills this process")


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
