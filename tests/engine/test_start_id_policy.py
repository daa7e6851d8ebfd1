"""start(id=...) of an existing id: the same input returns it, another input (or if_exists="error") is an IdConflict."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from durable import DurableError, Engine, IdConflict, MemoryStore, step, workflow

RAN: list[str] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


@step
async def record(tag: str) -> str:
    RAN.append(tag)
    return tag


@workflow
async def greet(name: str, times: int = 1) -> str:
    return await record(f"{name}x{times}")


@workflow
async def other(name: str) -> str:
    return name


class Opaque:
    """Compares by identity: a copy loaded back from a store is not == the original."""

    def __init__(self, value: int) -> None:
        self.value = value


@workflow
async def takes_opaque(thing: Any) -> int:
    value: int = thing.value
    return value


async def test_same_input_returns_the_existing_instance(engine: Engine) -> None:
    """Starting again with one id and the same arguments (positional or by name) runs nothing and returns the id."""
    first = await engine.workflows.start(greet, "ann", 2, id="g-1")
    await engine.workflows.wait(first)
    assert await engine.workflows.start(greet, "ann", 2, id="g-1") == "g-1"
    assert await engine.workflows.start(greet, name="ann", times=2, id="g-1") == "g-1"
    assert RAN == ["annx2"]


async def test_another_input_is_an_id_conflict(engine: Engine) -> None:
    """Another input under an existing id raises IdConflict naming the id, the workflow and the difference."""
    await engine.workflows.wait(await engine.workflows.start(greet, "ann", id="g-2"))
    with pytest.raises(IdConflict) as caught:
        await engine.workflows.start(greet, "bob", id="g-2")
    err = caught.value
    assert isinstance(err, DurableError)
    assert err.instance_id == "g-2" and err.workflow == "greet" and err.existing_workflow == "greet"
    text = str(err)
    assert "'g-2'" in text and "'greet'" in text and "different input" in text
    assert "'bob'" in text and "'ann'" in text  # what is stored, what was given
    assert RAN == ["annx1"]
    stored = await engine.store.get_instance("g-2")
    assert stored is not None and stored.input == {"name": "ann"}


async def test_another_input_while_the_instance_runs(engine: Engine) -> None:
    """The check holds for an unfinished instance too, and for builder workflows (their one input value)."""
    gate = trio.Event()

    async def wait_for_gate(x: Any) -> Any:
        await gate.wait()
        return x

    engine.jobs.register("gate", wait_for_gate)
    engine.workflows.register(workflow("gated").task("wait", job="gate").build())
    await engine.workflows.start("gated", {"n": 1}, id="b-1")
    assert await engine.workflows.start("gated", {"n": 1}, id="b-1") == "b-1"
    with pytest.raises(IdConflict, match="different input"):
        await engine.workflows.start("gated", {"n": 2}, id="b-1")
    gate.set()
    assert (await engine.workflows.wait("b-1")).output == {"n": 1}


async def test_if_exists_error_refuses_any_existing_id(engine: Engine) -> None:
    await engine.workflows.wait(await engine.workflows.start(greet, "ann", id="g-3"))
    with pytest.raises(IdConflict, match="already exists") as caught:
        await engine.workflows.start(greet, "ann", id="g-3", if_exists="error")
    assert caught.value.instance_id == "g-3" and caught.value.workflow == "greet"
    # A new id starts as usual.
    assert await engine.workflows.start(greet, "ann", id="g-4", if_exists="error") == "g-4"
    await engine.workflows.wait("g-4")
    assert RAN == ["annx1", "annx1"]


async def test_if_exists_takes_only_its_two_values(engine: Engine) -> None:
    with pytest.raises(ValueError, match="if_exists must be 'return' or 'error'"):
        await engine.workflows.start(greet, "ann", id="g-5", if_exists="replace")  # type: ignore[arg-type]
    assert await engine.store.get_instance("g-5") is None


async def test_another_workflow_under_the_id_is_an_id_conflict(engine: Engine) -> None:
    await engine.workflows.wait(await engine.workflows.start(greet, "ann", id="g-6"))
    with pytest.raises(IdConflict, match="already belongs to an instance of workflow 'greet'") as caught:
        await engine.workflows.start(other, "ann", id="g-6")
    assert caught.value.existing_workflow == "greet" and caught.value.workflow == "other"


async def test_an_input_compared_by_identity_is_still_the_same_input(engine: Engine) -> None:
    """A value without __eq__ loads back as another object: it is compared by what it pickles to."""
    await engine.workflows.wait(await engine.workflows.start(takes_opaque, Opaque(3), id="o-1"))
    assert await engine.workflows.start(takes_opaque, Opaque(3), id="o-1") == "o-1"
    with pytest.raises(IdConflict):
        await engine.workflows.start(takes_opaque, Opaque(4), id="o-1")


# -- a child's start, replayed -----------------------------------------------------

CHILD_INPUT = {"n": 1}
CHILD_GATE: dict[str, trio.Event] = {}


@step
async def hold(tag: str) -> str:
    RAN.append(tag)
    gate = CHILD_GATE.get("gate")
    if gate is not None:
        await gate.wait()
    return tag


@workflow
async def kid(n: int) -> str:
    return await hold(f"kid-{n}")


@workflow
async def nondeterministic_parent() -> str:
    # Wrong on purpose: reads state between steps, so the child's input differs on replay.
    return await kid(CHILD_INPUT["n"])


async def test_a_replayed_child_start_returns_the_child_whatever_its_input() -> None:
    """A parent replaying its child call finds the child it started, even if it would now pass another input."""
    store = MemoryStore()
    CHILD_GATE["gate"] = trio.Event()
    try:
        async with Engine(store=store) as engine:
            parent_id = await engine.workflows.start(nondeterministic_parent, id="p-1")
            while RAN != ["kid-1"]:
                await trio.sleep(0.001)
        # The engine stopped with parent and child unfinished, as after a crash.
        CHILD_INPUT["n"] = 2
        CHILD_GATE.pop("gate").set()
        async with Engine(store=store) as engine:
            engine.workflows.register(nondeterministic_parent)
            engine.workflows.register(kid)
            await engine.workflows.resume()
            inst = await engine.workflows.wait(parent_id)
        assert inst.status == "completed", inst.error
        assert inst.output == "kid-1"
    finally:
        CHILD_INPUT["n"] = 1
        CHILD_GATE.clear()
