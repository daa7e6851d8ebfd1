"""The original's onboarding service: a typed HTTP route starts it, browsers watch it live.

    durable serve examples/onboarding_service.py        # then open http://127.0.0.1:8000/

or start one from the command line:

    curl -s -X POST http://127.0.0.1:8000/api/workflows/user-onboarding/instances \\
         -H 'Content-Type: application/json' \\
         -d '{"input": {"email": "ada@example.com", "name": "Ada", "plan": "pro"}}'

The input is validated against the workflow's signature before anything is
stored: a malformed e-mail or a plan other than free, pro or enterprise is a
``422`` naming the field. The workflow creates the account, sends the welcome
e-mail, waits (up to ``VERIFY_TIMEOUT`` seconds) for the ``email-verified``
signal (send it from the instance's page, or with ``POST
/api/instances/{id}/signal``), then sets up the plan's workspace and billing
in parallel.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import trio
from pydantic import Field, StringConstraints

from durable import Retry, parallel, step, wait_for_signal, workflow

#: seconds the workflow waits for the e-mail to be verified before it goes on unverified
VERIFY_TIMEOUT = 120.0
#: seconds each step pretends to work (so the dashboard shows it running)
WORK = 0.4

Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254,
                                         pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Plan = Literal["free", "pro", "enterprise"]


@step(name="create-account", retry=Retry(max_attempts=3, interval=0.2))
async def create_account(email: str, name: str) -> dict[str, Any]:
    """Create the user's account."""
    await trio.sleep(WORK)
    return {"user_id": "user-" + email.split("@")[0], "name": name}


@step(name="send-welcome-email")
async def send_welcome_email(email: str, name: str) -> dict[str, Any]:
    """Send the welcome e-mail with its verification link."""
    await trio.sleep(WORK)
    return {"sent": True, "to": email, "template": "welcome", "greeting": f"Welcome, {name}!"}


@step(name="setup-workspace")
async def setup_workspace(user_id: str, plan: str) -> dict[str, Any]:
    """Provision the plan's workspace."""
    await trio.sleep(WORK * 2)
    return {"workspace": f"ws-{user_id}", "sso": plan == "enterprise"}


@step(name="setup-billing")
async def setup_billing(user_id: str, plan: str) -> dict[str, Any]:
    """Open the billing account (none for the free plan)."""
    await trio.sleep(WORK)
    return {"billing": None if plan == "free" else f"acct-{user_id}", "plan": plan}


@workflow(name="user-onboarding", timeout=24 * 3600)
async def onboard(email: Email, name: Name, plan: Plan = "free") -> dict[str, Any]:
    """Onboard a new user: account, welcome e-mail, e-mail verification, then workspace and billing."""
    account = await create_account(email, name)
    await send_welcome_email(email, name)
    verified = await wait_for_signal("email-verified", timeout=VERIFY_TIMEOUT, default=False)
    workspace, billing = await parallel(setup_workspace(account["user_id"], plan),
                                        setup_billing(account["user_id"], plan))
    return {"user_id": account["user_id"], "plan": plan, "verified": bool(verified), **workspace, **billing}
