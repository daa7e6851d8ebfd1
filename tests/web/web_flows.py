"""Workflows for the web tests: the original's typed onboarding route, and a few with known shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import StringConstraints

from durable import parallel, step, wait_for_signal, workflow

Email = Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$", max_length=254)]


@step(name="create-account")
async def create_account(email: str) -> dict[str, Any]:
    """Create the account."""
    return {"user_id": "user-" + email.split("@")[0]}


@step(name="left")
async def left(x: int) -> int:
    """One branch."""
    return x + 1


@step(name="right")
async def right(x: int) -> int:
    """The other branch."""
    return x * 2


@workflow(name="signup")
async def signup(email: Email, name: str, plan: Literal["free", "pro", "enterprise"] = "free") -> dict[str, Any]:
    """The original's onboarding route: typed input."""
    account = await create_account(email)
    return {**account, "name": name, "plan": plan}


@workflow(name="waiter")
async def waiter(n: int = 0) -> Any:
    """Waits for the ``go`` signal, then runs two steps in parallel."""
    got = await wait_for_signal("go")
    a, b = await parallel(left(n), right(n))
    return {"got": got, "a": a, "b": b}


@step(name="hostile")
async def hostile_step() -> str:
    """An output that must be shown as text."""
    return "<script>window.__pwned = 1</script>"


@workflow(name="hostile")
async def hostile() -> str:
    """Returns markup."""
    return await hostile_step()
