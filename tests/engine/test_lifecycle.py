"""Races and failures around cancel, stop, time-outs and checkpoint writes (found in review)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from durable import Engine, MemoryStore, StepStatus, Store, StoreError, step, workflow

CALLS: Counter[str] = Counter()


@step
async def forever() -> None:
    CALLS["forever"] += 1
    await trio.sleep_forever()


@workflow
async def hangs() -> None:
    await forever()


async def test_cancel_right_after_start_is_final(store: Store) -> None:
    """cancel() before the instance ever ran leaves it cancelled for good, in this engine and the next."""
    async with Engine(store=store) as engine:
        iid = await engine.workflows.start(hangs)
        assert await engine.workflows.cancel(iid)
        assert (await engine.workflows.wait(iid)).status == "cancelled"
    async with Engine(store=store) as engine:
        engine.workflows.register(hangs)
        assert await engine.workflows.resume() == []
        assert (await engine.workflows.get_instance(iid)).status == "cancelled"  # type: ignore[union-attr]


@step
async def slow_cleanup() -> None:
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(1)


@workflow
async def cleans_up() -> None:
    await slow_cleanup()


async def test_cancel_during_stop_still_cancels(durable_engine: Engine) -> None:
    """A cancel() that lands while the engine is stopping the instance still records cancelled."""
    engine = durable_engine
    iid = await engine.workflows.start(cleans_up)
    await trio.sleep(1)
    async with trio.open_nursery() as n:
        n.start_soon(engine.workflows.stop)
        await trio.testing.wait_all_tasks_blocked()
        assert await engine.workflows.cancel(iid) is True
    assert (await engine.store.get_instance(iid)).status == "cancelled"  # type: ignore[union-attr]
    assert await engine.workflows.resume() == []


@step
async def messy_cleanup() -> None:
    async def child() -> None:
        try:
            await trio.sleep(100)
        except trio.Cancelled:
            raise ValueError("cleanup failed") from None

    async with trio.open_nursery() as n:
        n.start_soon(child)
        await trio.sleep(100)


@workflow(timeout=10)
async def messy() -> None:
    await messy_cleanup()


async def test_errors_raised_while_cancelling_never_reach_the_engine(durable_engine: Engine) -> None:
    """A step whose clean-up raises during cancel or time-out does not crash the engine or other instances."""
    engine = durable_engine
    bystander = await engine.workflows.start(hangs)
    a = await engine.workflows.start(messy)
    await trio.sleep(1)
    assert await engine.workflows.cancel(a)
    b = await engine.workflows.start(messy)
    assert (await engine.workflows.wait(b)).status == "timed_out"
    assert (await engine.workflows.get_instance(bystander)).status == "running"  # type: ignore[union-attr]
    await engine.workflows.cancel(bystander)


@step
async def call_api() -> str:
    try:
        await trio.sleep(1000)
    except trio.Cancelled as exc:
        raise ConnectionError("request aborted") from exc
    return "ok"


@workflow
async def api() -> str:
    return await call_api()


async def test_stop_is_not_a_step_failure(store_path: Path) -> None:
    """A step that turns the engine's stop into an error is not checkpointed failed; resume runs it again."""
    async with Engine.open(store_path) as engine:
        iid = await engine.workflows.start(api)
        await trio.testing.wait_all_tasks_blocked()
    async with Engine.open(store_path) as engine:
        steps = await engine.store.get_steps(iid)
        assert [s.status for s in steps.values()] == [StepStatus.RUNNING]
        assert (await engine.store.get_instance(iid)).status == "running"  # type: ignore[union-attr]


class FailingStore:
    """A MemoryStore whose first durable 'completed' checkpoint write fails."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_step(self, instance_id: str, result: Any, *, durable: bool = True, owner: str | None = None) -> None:
        if durable and not self.failed and result.status == "completed":
            self.failed = True
            raise StoreError("disk full (simulated)")
        await self.inner.put_step(instance_id, result, durable=durable, owner=owner)


@step
async def charge() -> str:
    CALLS["charge"] += 1
    return "charged"


@workflow
async def catches_everything() -> str:
    try:
        return await charge()
    except Exception as exc:
        await charge()  # must never run: the first result was not stored
        return f"fallback after {type(exc).__name__}"


async def test_a_failed_checkpoint_write_ends_the_run() -> None:
    """If a step's checkpoint cannot be written, the run stops even when the code catches the error.

    A failing store is not the workflow's failure: the instance is left
    unfinished, wait() raises the store's error, and resume() continues it
    once the store works again.
    """
    CALLS.clear()
    async with Engine(store=FailingStore()) as engine:  # type: ignore[arg-type]
        iid = await engine.workflows.start(catches_everything)
        with pytest.raises(StoreError, match="disk full"):
            await engine.workflows.wait(iid)
        assert CALLS["charge"] == 1  # the except path never ran
        assert (await engine.store.get_instance(iid)).status == "running"  # type: ignore[union-attr]
        assert await engine.workflows.resume() == [iid]
        inst = await engine.workflows.wait(iid)
    assert inst.status == "completed" and inst.output == "charged"
    assert CALLS["charge"] == 2  # its checkpoint was never written: it runs again (at least once)


class MarkerRecordingStore:
    """A wrapper delegating to a MemoryStore (``put_step_later`` included) through ``__getattr__``.

    The optional ``put_step_later`` is looked up on the store's class, so every
    write, markers included, goes through this wrapper's own ``put_step``.
    """

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.writes: list[tuple[str, bool]] = []
        self.refuse_markers = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # the inner store's put_step_later is not this store's

    async def put_step(self, instance_id: str, result: Any, *, durable: bool = True, owner: str | None = None) -> None:
        if not durable and self.refuse_markers:
            raise StoreError("read-only (simulated)")
        self.writes.append((str(result.status), durable))
        await self.inner.put_step(instance_id, result, durable=durable, owner=owner)


async def test_a_store_without_put_step_later_gets_markers_through_put_step() -> None:
    """The engine falls back to ``put_step(durable=False)`` for "running" markers; a failing one stops the run."""
    CALLS.clear()
    store = MarkerRecordingStore()
    async with Engine(store=store) as engine:  # type: ignore[arg-type]
        inst = await engine.workflows.wait(await engine.workflows.start(catches_everything))
        assert inst.status == "completed" and inst.output == "charged"
        assert store.writes == [("running", False), ("completed", True)]
        store.refuse_markers = True
        iid = await engine.workflows.start(catches_everything)
        with pytest.raises(StoreError, match="read-only"):
            await engine.workflows.wait(iid)
    assert CALLS["charge"] == 1  # the second instance's step never ran: its marker could not be written
