"""Workflows the CLI tests run (imported by file path: tests/tools/cli_flows.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

import durable
from durable import Engine, Retry, parallel, step, workflow


class OutOfStock(Exception):
    """Raised by reserve() for more than ten items."""


@step(retry=Retry(max_attempts=2, interval=0.01))
async def reserve(item: str, qty: int) -> dict[str, Any]:
    if qty > 10:
        raise OutOfStock(f"only 10 {item} left")
    return {"item": item, "qty": qty}


@step
async def charge(amount: float) -> str:
    return f"paid {amount:g}"


@step
def email(item: str) -> bool:
    return True


@workflow
async def checkout(item: str, qty: int = 1) -> dict[str, Any]:
    """Reserve, then charge and e-mail in parallel."""
    reserved = await reserve(item, qty)
    paid, sent = await parallel(charge(qty * 2.5), email(item))
    return {"reserved": reserved, "payment": paid, "emailed": sent}


@step
async def nap(seconds: float) -> float:
    await trio.sleep(seconds)
    return seconds


@workflow
async def slow(seconds: float = 0.2, times: int = 3) -> int:
    """``times`` steps of ``seconds`` each."""
    for _ in range(times):
        await nap(seconds)
    return times


# -- a builder workflow: one job registered by register_jobs(), one found by its name


async def price_order(data: dict[str, Any]) -> dict[str, Any]:
    return {"total": data["qty"] * 3}


def ship_order(data: dict[str, Any]) -> str:
    return "shipped"


@workflow
async def needs_approval(item: str) -> dict[str, Any]:
    """Waits for signal ``approve``; its payload becomes part of the output."""
    approval = await durable.wait_for_signal("approve", timeout=3600)
    return {"item": item, "approval": approval}


@workflow
async def napper(seconds: float = 3600) -> float:
    """One durable sleep of ``seconds``."""
    await durable.sleep(seconds)
    return seconds


_holding = 0  # hold() steps running now in this process
_most = 0  # the most that ran at once


@step
async def hold(gate: str) -> int:
    """Waits until the file GATE/open exists; appends a line to GATE/started, and keeps in GATE/most how many
    hold() steps ran at once in this process."""
    global _holding, _most
    _holding += 1
    _most = max(_most, _holding)
    Path(gate, "most").write_text(str(_most))
    with Path(gate, "started").open("a") as f:
        f.write("started\n")
    try:
        while not Path(gate, "open").exists():
            await trio.sleep(0.01)
    finally:
        _holding -= 1
    return _most


@workflow
async def gated(gate: str) -> int:
    """One hold(gate) step."""
    return await hold(gate)


@step
async def process_page(page: int, bad: int) -> int:
    if page == bad:
        raise ValueError(f"page {page} is unreadable")
    return page * 10


@workflow
async def pages(count: int = 4, bad: int = -1) -> list[int]:
    """process_page over ``count`` pages with durable.map (page ``bad`` fails)."""
    return await durable.map(lambda page: process_page(page, bad), range(count), concurrency=2)


def register_jobs(engine: Engine) -> None:
    """Called by the CLI with its engine."""
    engine.jobs.register("price", price_order)


notify_branch = workflow.branch("notify").task("ship", job="ship-order").build()

order = (
    workflow("order")
    .task("price", job="price")
    .parallel("fulfil", branches=[notify_branch])
    .pass_("done", transform=lambda ctx: {"total": ctx.steps["price"]["total"], "ok": True}, end=True)
    .build()
)

unbuilt = workflow("unbuilt").task("x", job="price")


def helper() -> None:
    """Not a workflow."""
