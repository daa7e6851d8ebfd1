"""Events: the nine names and their fields, listeners, subscriptions, progress."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from durable import Engine, Event, Retry, When, workflow
from durable._engine.events import EVENT_NAMES, EventBus


def _order_graph() -> Any:
    return (
        workflow("order")
        .task("validate", job="validate", retry=Retry(max_attempts=2, interval=1))
        .choice("stock", choices=[When(lambda c: c.steps["validate"]["ok"], "fulfill")], default="complete")
        .parallel("fulfill", branches=[
            workflow.branch("ship").task("ship", job="noop").build(),
            workflow.branch("mail").task("mail", job="noop").build(),
        ])
        .pass_("complete", result="done", end=True)
        .build()
    )


def _register(engine: Engine) -> None:
    tries: list[int] = []

    async def validate(x: Any) -> dict[str, bool]:
        tries.append(1)
        if len(tries) == 1:
            raise ValueError("first try fails")
        return {"ok": True}

    engine.jobs.register("validate", validate)
    engine.jobs.register("noop", lambda x: None)
    engine.workflows.register(_order_graph())


async def test_event_sequence_and_fields(engine: Engine, autojump_clock: Any) -> None:
    """A run emits started, step events (with retry), progress and completed, with the original's fields."""
    _register(engine)
    events: list[Event] = []
    engine.events.on("*", events.append)
    iid = await engine.workflows.start("order", {"id": 1})
    await engine.workflows.wait(iid)
    names = [e.name for e in events]
    assert set(names) == set(EVENT_NAMES) - {"workflow.failed", "workflow.cancelled", "workflow.step.failed"}
    assert names[0] == "workflow.started" and events[0].input == {"id": 1}
    assert names[-1] == "workflow.completed" and events[-1].output == "done"
    assert all(e.instance_id == iid and e.workflow_name == "order" for e in events)
    retry = next(e for e in events if e.name == "workflow.step.retry")
    assert (retry.step_name, retry.attempt, retry.max_attempts, retry.delay) == ("validate", 1, 2, 1.0)
    assert retry.error == "ValueError: first try fails"
    started = [e for e in events if e.name == "workflow.step.started"]
    assert {(e.step_name, e.step_type) for e in started} >= {("validate", "task"), ("stock", "choice"),
                                                           ("fulfill", "parallel"), ("complete", "pass")}
    done = next(e for e in events if e.name == "workflow.step.completed" and e.step_name == "validate")
    assert done.output == {"ok": True}
    progress = [e for e in events if e.name == "workflow.progress"]
    values = [e.progress for e in progress]
    assert values == sorted(values) and values[-1] == 100
    assert all(e.total_steps == 6 for e in progress)
    assert progress[-2].completed_steps == 6


async def test_failed_step_and_workflow_events(engine: Engine) -> None:
    """A failing step emits step.failed with attempts, then workflow.failed with the error."""

    async def bad(x: Any) -> None:
        raise RuntimeError("nope")

    engine.jobs.register("bad", bad)
    engine.workflows.register(workflow("f").task("t", job="bad").build())
    events: list[Event] = []
    engine.events.on("workflow.step.failed", events.append)
    engine.events.on("workflow.failed", events.append)
    await engine.workflows.wait(await engine.workflows.start("f"))
    assert [e.name for e in events] == ["workflow.step.failed", "workflow.failed"]
    assert events[0].attempts == 1 and events[0].error == "RuntimeError: nope"
    assert "nope" in (events[1].error or "")


async def test_raising_listener_is_logged_not_fatal(engine: Engine, autojump_clock: Any,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A listener that raises is logged; the workflow still completes."""
    _register(engine)

    def broken(e: Event) -> None:
        raise RuntimeError("listener bug")

    async def broken_async(e: Event) -> None:
        raise RuntimeError("async listener bug")

    engine.events.on("workflow.progress", broken)
    engine.events.on("workflow.step.started", broken_async)
    with caplog.at_level(logging.ERROR, logger="durable.events"):
        inst = await engine.workflows.wait(await engine.workflows.start("order", 1))
        await trio.testing.wait_all_tasks_blocked()
    assert inst.status == "completed"
    assert "listener bug" in caplog.text and "async listener bug" in caplog.text


async def test_async_listener_and_unsubscribe(engine: Engine, autojump_clock: Any) -> None:
    """Async listeners run in the engine's nursery; the function on() returns removes the listener."""
    _register(engine)
    got: list[str] = []

    async def listener(e: Event) -> None:
        await trio.sleep(0)
        got.append(e.name)

    off = engine.events.on("workflow.completed", listener)
    await engine.workflows.wait(await engine.workflows.start("order", 1))
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["workflow.completed"]
    off()
    await engine.workflows.wait(await engine.workflows.start("order", 2))
    await trio.testing.wait_all_tasks_blocked()
    assert got == ["workflow.completed"]


async def test_unknown_event_name_is_refused(engine: Engine) -> None:
    """on() with a name that is not one of the nine events raises ValueError listing them."""
    with pytest.raises(ValueError, match="workflow.progress"):
        engine.events.on("workflow.done", lambda e: None)


async def test_subscribe_streams_one_instance_until_it_ends(engine: Engine, autojump_clock: Any) -> None:
    """subscribe(id) yields that instance's events in order and stops after the terminal one."""
    _register(engine)
    iid = "sub-1"
    sub = engine.events.subscribe(iid)
    other = await engine.workflows.start("order", 0)
    await engine.workflows.start("order", 1, id=iid)
    names = [e.name async for e in sub]
    assert names[0] == "workflow.started" and names[-1] == "workflow.completed"
    await engine.workflows.wait(other)
    async with engine.events.subscribe(names={"workflow.completed"}) as all_sub:
        third = await engine.workflows.start("order", 3)
        first = await all_sub.__anext__()
    assert first.instance_id == third and first.name == "workflow.completed"
    assert first.to_dict()["name"] == "workflow.completed"


async def test_progress_moves_through_a_loop_and_says_the_total_is_unknown(engine: Engine) -> None:
    """A step awaited in a ``for`` loop: progress rises with every iteration, never goes back, stays
    below 100 until the end, and the events say the total is unknown (``total_steps`` is None)."""
    import durable

    @durable.step
    async def tick(i: int) -> int:
        return i

    @durable.workflow
    async def loops(n: int) -> int:
        total = 0
        for i in range(n):
            total += await tick(i)
        return total

    seen: list[Event] = []
    engine.events.on("workflow.progress", seen.append)
    engine.workflows.register(loops)
    await engine.workflows.wait(await engine.workflows.start(loops, 12))
    progress = [e.progress for e in seen]
    assert len(progress) == 13 and progress[-1] == 100
    assert all(a is not None and b is not None and a < b for a, b in zip(progress, progress[1:])), progress
    assert all(e.total_steps is None for e in seen[:-1])


async def test_a_reader_that_falls_behind_is_dropped_not_buffered_without_bound() -> None:
    from durable import EventsDropped
    from durable._engine.events import Event as Ev

    bus = EventBus()
    slow = bus.subscribe("i-1", max_buffer=3)
    other = bus.subscribe("i-2", max_buffer=3)
    for n in range(5):
        bus.emit(Ev(name="workflow.progress", instance_id="i-1", workflow_name="w", progress=n))
    assert slow.dropped and not other.dropped and "i-1" not in bus._by_instance  # forgotten at once
    got = [e.progress async for e in _until_dropped(slow)]
    assert got == [0, 1, 2]  # what it held is still delivered, then EventsDropped
    with pytest.raises(EventsDropped, match="read on from the store's event log"):
        await slow.__anext__()
    with pytest.raises(ValueError):
        bus.subscribe(max_buffer=0)
    await other.aclose()
    assert bus._by_instance == {} and not bus.active


async def _until_dropped(sub: Any) -> Any:
    from durable import EventsDropped

    while True:
        try:
            yield await sub.__anext__()
        except EventsDropped:
            return


async def test_events_of_one_instance_are_not_offered_to_another_s_subscriptions() -> None:
    from durable._engine.events import Event as Ev

    bus = EventBus()
    subs = [bus.subscribe(f"i-{n}") for n in range(100)]
    offered: list[str] = []
    for sub in subs:
        original = sub._offer
        sub._offer = lambda event, original=original, sub=sub: (offered.append(sub.instance_id), original(event))  # type: ignore[method-assign]
    bus.emit(Ev(name="workflow.progress", instance_id="i-7", workflow_name="w", progress=1))
    assert offered == ["i-7"]
