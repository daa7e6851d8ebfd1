"""Testing the order-processing workflows the way a user of `durable` would.

Nothing here is specific to this repository: installing `durable` (with
pytest and pytest-trio) provides the `durable_*` fixtures, and
`durable.testing` provides the helpers. Run it with

    pytest examples/test_order_processing.py

(this project's pytest configuration sets `trio_mode = true`, so `async def`
tests run on trio; in your project, set it too, or mark tests `@pytest.mark.trio`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from durable import Engine, Event, MemoryStore
from durable.testing import assert_replays, crash_and_resume, replace_step, run
from order_processing import (
    order_workflow,
    process_order,
    notify,
    register_jobs,
    send_confirmation,
    ship,
    validate,
    validate_order,
)

IN_STOCK = {"order_id": "ORD-1"}
OUT_OF_STOCK = {"order_id": "ORD-2", "out_of_stock": True}


# -- no engine at all ----------------------------------------------------------------


async def test_the_workflow_is_a_plain_async_function() -> None:
    """Awaited directly, the workflow runs its steps as plain calls: nothing is stored."""
    assert await process_order(IN_STOCK) == {"order": "ORD-1", "fulfilled": True, "done": True}
    assert await process_order(OUT_OF_STOCK) == {"order": "ORD-2", "fulfilled": False, "done": True}


def test_run_from_a_sync_test() -> None:
    """durable.testing.run: an in-memory engine under an autojumping clock, from a plain test."""
    instance = run(process_order, IN_STOCK)
    assert instance.status == "completed"
    assert set(instance.step_results) == {"validate", "ship", "notify", "parallel"}


# -- the fixtures ---------------------------------------------------------------------


async def test_builder_version_on_the_engine_fixture(durable_engine: Engine, durable_events: list[Event]) -> None:
    """The builder version runs its registered jobs; the events show each state and progress to 100."""
    register_jobs(durable_engine)
    durable_engine.workflows.register(order_workflow)
    instance_id = await durable_engine.workflows.start("process-order", IN_STOCK)
    instance = await durable_engine.workflows.wait(instance_id)
    assert instance.output == {"order": "ORD-1", "fulfilled": True, "done": True}
    steps = [e.step_name for e in durable_events if e.name == "workflow.step.completed"]
    assert steps[0] == "validate" and steps[-1] == "complete"
    assert [e.progress for e in durable_events if e.name == "workflow.progress"][-1] == 100
    await assert_replays(durable_engine, instance_id)


@pytest.mark.parametrize("order", [IN_STOCK, OUT_OF_STOCK])
async def test_both_versions_agree_on_lmdb(durable_lmdb_engine: Engine, order: dict[str, Any]) -> None:
    """On a real LMDB store, the builder and decorator versions give the same output and both replay."""
    register_jobs(durable_lmdb_engine)
    outputs = []
    for workflow in (order_workflow, process_order):
        instance_id = await durable_lmdb_engine.workflows.start(workflow, order)
        instance = await durable_lmdb_engine.workflows.wait(instance_id)
        assert instance.status == "completed"
        await assert_replays(durable_lmdb_engine, instance_id)
        outputs.append(instance.output)
    assert outputs[0] == outputs[1]


# -- fakes, failures and crashes --------------------------------------------------------


async def test_a_failing_shipment_fails_the_order(durable_engine: Engine) -> None:
    """replace_step swaps the shipping step for a fake that fails; the instance fails naming the error."""

    def broken_shipment(order: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("carrier unreachable")

    with replace_step(ship, broken_shipment):
        instance = await durable_engine.workflows.wait(await durable_engine.workflows.start(process_order, IN_STOCK))
    assert instance.status == "failed"
    assert instance.error_type == "RuntimeError" and "carrier unreachable" in (instance.error or "")


async def test_validation_is_retried(durable_engine: Engine, durable_events: list[Event]) -> None:
    """validate retries up to three attempts; the backoff takes no real time under the fixture's clock."""
    attempts: list[int] = []

    async def flaky_validate(order: dict[str, Any]) -> dict[str, Any]:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("inventory service down")
        return await validate_order(order)

    with replace_step(validate, flaky_validate):
        instance = await durable_engine.workflows.wait(await durable_engine.workflows.start(process_order, IN_STOCK))
    assert instance.status == "completed" and len(attempts) == 3
    assert [e.attempt for e in durable_events if e.name == "workflow.step.retry"] == [1, 2]


async def test_a_crash_after_validation_does_not_validate_again(durable_clock: Any) -> None:
    """Crash right after `validate` is checkpointed, resume: validate ran once, the rest ran once."""
    calls: Counter[str] = Counter()

    async def counted_validate(order: dict[str, Any]) -> dict[str, Any]:
        calls["validate"] += 1
        return await validate_order(order)

    async def counted_notify(order: dict[str, Any]) -> dict[str, Any]:
        calls["notify"] += 1
        return await send_confirmation(order)

    store = MemoryStore()
    with replace_step(validate, counted_validate), replace_step(notify, counted_notify):
        instance = await crash_and_resume(process_order, IN_STOCK, after="validate", store=store)
    assert instance.status == "completed"
    assert calls == Counter({"validate": 1, "notify": 1})
    await assert_replays(store, instance.id, workflow=process_order)

