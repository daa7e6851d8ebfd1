"""Workflows for the PostgreSQL wake-up tests (imported by them, and by the worker processes they start)."""

from __future__ import annotations

import time

import trio

import durable
from durable import step, workflow


@step
async def stamp(tag: str) -> float:
    return time.time()


@workflow
async def stamped(tag: str) -> float:
    """Its output: the wall-clock time its first step ran (on this host)."""
    return await stamp(tag)


@workflow
async def waits_for_go(tag: str) -> str:
    got = await durable.wait_for_signal("go", timeout=600)
    return f"{tag}: {got}"


@step
async def long_sleep(seconds: float) -> None:
    await trio.sleep(seconds)


@workflow
async def sleeps_long(seconds: float) -> None:
    await long_sleep(seconds)
