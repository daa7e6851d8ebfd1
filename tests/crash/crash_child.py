"""Child process for tests/crash/test_crash.py: runs a 4-step workflow and blocks at a chosen point.

argv: STORE LOG MODE(start|resume) FRONT(builder|decorator) POINT(during|after|none) STEP
Every step execution appends "run NAME" to LOG; after a step's checkpoint the
'workflow.step.completed' listener appends "done NAME". POINT=during blocks
inside step STEP for the parent to SIGKILL the child; POINT=after makes the
child SIGKILL itself in the listener, right after STEP's checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import trio

from durable import Engine, step, workflow

STORE, LOG, MODE, FRONT, POINT, STOP = sys.argv[1:7]


def log(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


async def job(name: str, value: Any) -> str:
    log(f"run {name}")
    if POINT == "during" and name == STOP:
        await trio.sleep_forever()
    return f"{value}+{name}"


@step
async def a(v: Any) -> str:
    return await job("a", v)


@step
async def b(v: Any) -> str:
    return await job("b", v)


@step
async def c(v: Any) -> str:
    return await job("c", v)


@step
async def d(v: Any) -> str:
    return await job("d", v)


@workflow(name="chain")
async def chain_py(v: str) -> str:
    return await d(await c(await b(await a(v))))


chain_builder = (
    workflow("chain")
    .task("a", job="a")
    .task("b", job="b", input=lambda ctx: ctx.steps["a"])
    .task("c", job="c", input=lambda ctx: ctx.steps["b"])
    .task("d", job="d", input=lambda ctx: ctx.steps["c"])
    .build()
)


async def main() -> None:
    async with Engine.open(STORE) as engine:
        for n in "abcd":
            engine.jobs.register(n, lambda v, n=n: job(n, v))
        engine.workflows.register(chain_builder if FRONT == "builder" else chain_py)

        def completed(event: Any) -> None:
            log(f"done {event.step_name}")
            if POINT == "after" and event.step_name == STOP:
                os.kill(os.getpid(), signal.SIGKILL)  # nothing after this checkpoint runs

        engine.events.on("workflow.step.completed", completed)
        if MODE == "start":
            await engine.workflows.start("chain", "x", id="crash-1")
        else:
            await engine.workflows.resume()
        inst = await engine.workflows.wait("crash-1")
        log(f"finished {inst.status} {inst.output}")


trio.run(main)
