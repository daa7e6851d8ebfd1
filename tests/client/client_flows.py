"""Workflows a ``durable worker`` subprocess serves for the client tests."""

from __future__ import annotations

import durable
from durable import Queue, step, workflow

lines = Queue("lines", concurrency=1, priority=True)


@step
async def shout(name: str) -> str:
    return name.upper()


@step(queue="jobs")
def decorate(text: str) -> str:
    return f"** {text} **"


@workflow
async def greet(name: str) -> str:
    loud = await shout(name)
    return await decorate(loud)


@workflow
async def waiter(label: str) -> str:
    got = await durable.wait_for_signal("go", timeout=60)
    return f"{label}: {got}"


@workflow(queue="lines")
async def lined(n: int) -> int:
    return n
