"""User onboarding, both ways: a workflow timeout, a default retry and a choice on the plan.

    python examples/onboarding.py [--store PATH] [--plan free|pro|enterprise]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import trio

from durable import Engine, Event, Retry, When, step, workflow

ATTEMPTS: dict[str, int] = {}


async def create_user_account(data: dict[str, Any]) -> dict[str, Any]:
    """Fails once, to show the default retry at work."""
    ATTEMPTS[data["email"]] = ATTEMPTS.get(data["email"], 0) + 1
    if ATTEMPTS[data["email"]] == 1:
        raise ConnectionError("directory service busy")
    return {"user_id": f"user-{data['email'].split('@')[0]}"}


async def send_email(data: dict[str, Any]) -> dict[str, Any]:
    """Pretend to send a templated e-mail."""
    return {"sent": True, "template": data["template"]}


async def setup_enterprise(data: dict[str, Any]) -> dict[str, Any]:
    """Enterprise set-up."""
    return {"sso": True, "user_id": data["user_id"]}


async def setup_standard(data: dict[str, Any]) -> dict[str, Any]:
    """Standard set-up."""
    return {"sso": False, "user_id": data["user_id"]}


onboarding_workflow = (
    workflow("user-onboarding")
    .timeout(24 * 3600)
    .default_retry(Retry(max_attempts=3, interval=0.05))
    .task("create-account", job="create-user-account", input=lambda ctx: ctx.input)
    .task(
        "send-welcome-email",
        job="send-email",
        input=lambda ctx: {
            "to": ctx.input["email"],
            "template": "welcome",
            "user_id": ctx.steps["create-account"]["user_id"],
        },
    )
    .choice(
        "check-plan",
        choices=[When(lambda ctx: ctx.input["plan"] == "enterprise", "enterprise-setup")],
        default="standard-setup",
    )
    .task("enterprise-setup", job="setup-enterprise",
          input=lambda ctx: {"user_id": ctx.steps["create-account"]["user_id"]}, next="complete")
    .task("standard-setup", job="setup-standard",
          input=lambda ctx: {"user_id": ctx.steps["create-account"]["user_id"]}, next="complete")
    .pass_(
        "complete",
        transform=lambda ctx: {
            "user_id": ctx.steps["create-account"]["user_id"],
            "plan": ctx.input["plan"],
            "setup_complete": True,
        },
        end=True,
    )
    .build()
)


def register_jobs(engine: Engine) -> None:
    """Register the jobs the builder version names."""
    engine.jobs.register("create-user-account", create_user_account)
    engine.jobs.register("send-email", send_email)
    engine.jobs.register("setup-enterprise", setup_enterprise)
    engine.jobs.register("setup-standard", setup_standard)


create_account = step(name="create-account")(create_user_account)
welcome = step(name="send-welcome-email")(send_email)
enterprise_setup = step(name="enterprise-setup")(setup_enterprise)
standard_setup = step(name="standard-setup")(setup_standard)


@workflow(name="user-onboarding-py", timeout=24 * 3600, default_retry=Retry(max_attempts=3, interval=0.05))
async def onboard(user: dict[str, Any]) -> dict[str, Any]:
    """The same onboarding as plain async Python."""
    account = await create_account(user)
    await welcome({"to": user["email"], "template": "welcome", "user_id": account["user_id"]})
    if user["plan"] == "enterprise":
        await enterprise_setup({"user_id": account["user_id"]})
    else:
        await standard_setup({"user_id": account["user_id"]})
    return {"user_id": account["user_id"], "plan": user["plan"], "setup_complete": True}


def print_event(event: Event) -> None:
    """Print one event on one line."""
    fields = {k: v for k, v in event.to_dict().items() if k not in ("name", "instance_id", "workflow_name")}
    print(f"  [{event.workflow_name}] {event.name} {fields}")


async def main(store: Path, user: dict[str, Any]) -> list[Any]:
    """Run both versions on the LMDB store at ``store``; returns both outputs."""
    outputs = []
    async with Engine.open(store) as engine:
        register_jobs(engine)
        engine.workflows.register(onboarding_workflow)
        engine.workflows.register(onboard)
        engine.events.on("*", print_event)
        for name in ("user-onboarding", "user-onboarding-py"):
            ATTEMPTS.clear()
            instance = await engine.workflows.wait(await engine.workflows.start(name, user))
            print(f"{name}: {instance.status} -> {instance.output}")
            outputs.append(instance.output)
    return outputs


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--plan", default="enterprise", choices=["free", "pro", "enterprise"])
    parser.add_argument("--email", default="ada@example.com")
    args = parser.parse_args()
    path = args.store or Path(tempfile.mkdtemp(prefix="durable-example-")) / "onboarding.lmdb"
    print(f"store: {path}")
    trio.run(main, path, {"email": args.email, "name": "Ada", "plan": args.plan})
