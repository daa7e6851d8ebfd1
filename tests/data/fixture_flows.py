"""Workflows behind ``tests/data/store-0.1.0`` (a store written by durable 0.1.0 before the layered layout).

Imported by ``make_store_0_1_0.py`` (which wrote the store, once, with the
0.1.0 code) and by ``tests/model/test_old_store.py`` (which opens a copy of it
with today's code and resumes what it left unfinished). Only the public API is
used, so the same file works on both sides of the move.
"""

from __future__ import annotations

import os
import signal

import durable
from durable import Catch, Retry, step, workflow

#: steps that actually ran in this process, in order (the resume test checks nothing re-ran)
RAN: list[str] = []
#: set by the writer: the next run of ``boom`` kills its process (SIGKILL) inside the step
CRASH = {"armed": False}


@step
async def add(x: int, y: int) -> int:
    RAN.append("add")
    return x + y


@step
async def double(x: int) -> dict[str, int]:
    RAN.append("double")
    return {"doubled": x * 2}


@step(retry=Retry(max_attempts=1))
async def explode(x: int) -> int:
    RAN.append("explode")
    raise ValueError(f"bad input {x}")


class Unpicklable(Exception):
    """An exception that cannot be pickled: stored as ``durable._serde.UnpicklableError``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.handle = lambda: None  # a lambda attribute: pickle refuses it

    def __reduce__(self) -> object:
        raise TypeError("not picklable")


@step(retry=Retry(max_attempts=1))
async def refuse(x: int) -> int:
    RAN.append("refuse")
    raise Unpicklable(f"cannot store {x}")


@step
async def boom(x: int) -> int:
    RAN.append("boom")
    if CRASH["armed"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return x + 100


@workflow
async def completes(x: int) -> dict[str, int]:
    total = await add(x, 1)
    return await double(total)


@workflow
async def fails(x: int) -> int:
    await add(x, 1)
    return await explode(x)


@workflow
async def fails_unpicklable(x: int) -> int:
    return await refuse(x)


@workflow
async def interrupted(x: int) -> int:
    first = await add(x, 1)
    return await boom(first)


@workflow
async def waits(x: int) -> object:
    first = await add(x, 1)
    payload = await durable.wait_for_signal("go")
    return {"first": first, "payload": payload}


def _shout(ctx: durable.Context) -> str:
    return str(ctx.input).upper()


async def _fail_job(value: object) -> object:
    raise KeyError("missing")


builder = (
    durable.workflow("builder-flow")
    .task("shout", job="shout", input=_shout)
    .task("lookup", job="lookup", retry=Retry(max_attempts=1), catch=[Catch(errors=["KeyError"], next="fallback")])
    .pass_("fallback", result="fell back", end=True)
    .build()
)


async def _shout_job(value: str) -> str:
    RAN.append("shout")
    return value + "!"


JOBS = {"shout": _shout_job, "lookup": _fail_job}
