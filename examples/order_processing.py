"""Order processing, written both ways: the state-machine builder and plain async Python.

Validate the order, then either fulfil it (shipping and confirmation in
parallel) or put it on backorder, then complete. Run it with

    python examples/order_processing.py [--store PATH] [--order ORD-1] [--out-of-stock]

It runs both versions on an LMDB store, printing every event and each result.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import trio

from durable import Engine, Event, Retry, When, parallel, step, workflow

# -- the jobs (what the steps do) ------------------------------------------------


async def validate_order(data: dict[str, Any]) -> dict[str, Any]:
    """Pretend to check the order against the inventory."""
    await trio.sleep(0.01)
    return {"order_id": data["order_id"], "in_stock": not data.get("out_of_stock", False), "amount": 42}


def create_shipment(data: dict[str, Any]) -> dict[str, Any]:
    """A blocking call (it runs in a worker thread)."""
    return {"tracking": f"TRK-{data['order_id']}"}


async def send_confirmation(data: dict[str, Any]) -> dict[str, Any]:
    """Pretend to send an e-mail."""
    return {"sent": True, "to": data["order_id"]}


async def create_backorder(data: dict[str, Any]) -> dict[str, Any]:
    """Pretend to record a backorder."""
    return {"backorder": data["order_id"]}


# -- 1. the builder version -------------------------------------------------------

order_workflow = (
    workflow("process-order")
    .task("validate", job="validate-order", input=lambda ctx: ctx.input, retry=Retry(max_attempts=3))
    .choice(
        "check-inventory",
        choices=[When(lambda ctx: ctx.steps["validate"]["in_stock"], "fulfill")],
        default="backorder",
    )
    .parallel(
        "fulfill",
        branches=[
            workflow.branch("shipping").task("ship", job="create-shipment").build(),
            workflow.branch("notification").task("notify", job="send-confirmation").build(),
        ],
        next="complete",
    )
    .task("backorder", job="create-backorder", next="complete")
    .pass_(
        "complete",
        transform=lambda ctx: {
            "order": ctx.input["order_id"],
            "fulfilled": "fulfill" in ctx.steps,
            "done": True,
        },
        end=True,
    )
    .build()
)


def register_jobs(engine: Engine) -> None:
    """Register the jobs the builder version names."""
    engine.jobs.register("validate-order", validate_order)
    engine.jobs.register("create-shipment", create_shipment)
    engine.jobs.register("send-confirmation", send_confirmation)
    engine.jobs.register("create-backorder", create_backorder)


# -- 2. the decorator version -----------------------------------------------------

validate = step(name="validate", retry=Retry(max_attempts=3))(validate_order)
ship = step(name="ship")(create_shipment)
notify = step(name="notify")(send_confirmation)
backorder = step(name="backorder")(create_backorder)


@workflow(name="process-order-py")
async def process_order(order: dict[str, Any]) -> dict[str, Any]:
    """The same workflow as plain async Python."""
    v = await validate(order)
    if v["in_stock"]:
        await parallel(ship(order), notify(order))
        fulfilled = True
    else:
        await backorder(order)
        fulfilled = False
    return {"order": order["order_id"], "fulfilled": fulfilled, "done": True}


# -- running it -------------------------------------------------------------------


def print_event(event: Event) -> None:
    """Print one event on one line."""
    fields = {k: v for k, v in event.to_dict().items() if k not in ("name", "instance_id", "workflow_name")}
    print(f"  [{event.workflow_name}] {event.name} {fields}")


async def main(store: Path, order: dict[str, Any]) -> list[Any]:
    """Run both versions on the LMDB store at ``store``; returns both outputs."""
    outputs = []
    async with Engine.open(store) as engine:
        register_jobs(engine)
        engine.workflows.register(order_workflow)
        engine.workflows.register(process_order)
        engine.events.on("*", print_event)
        for name in ("process-order", "process-order-py"):
            instance_id = await engine.workflows.start(name, order)
            instance = await engine.workflows.wait(instance_id)
            print(f"{name}: {instance.status} -> {instance.output}")
            outputs.append(instance.output)
    return outputs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="LMDB store directory (default: a temporary one)")
    parser.add_argument("--order", default="ORD-1")
    parser.add_argument("--out-of-stock", action="store_true")
    args = parser.parse_args()
    path = args.store or Path(tempfile.mkdtemp(prefix="durable-example-")) / "orders.lmdb"
    print(f"store: {path}")
    trio.run(main, path, {"order_id": args.order, "out_of_stock": args.out_of_stock})
