"""A FastAPI app (asyncio) that hands user onboarding to durable workers, and streams its progress.

The HTTP process never runs a workflow: ``POST /onboard`` stores an instance
of ``onboard`` on its queue with a :class:`durable.AsyncClient` and returns its
id at once (202); a ``durable worker`` process runs it, and the welcome e-mail
as an external job of the queue ``emails``. ``GET /instances/{id}`` reads the
instance back, and ``GET /instances/{id}/events`` streams its events as
Server-Sent Events, resuming after the ``Last-Event-ID`` a reconnecting
browser sends. This one file is both the web app and the worker's module.

Run it (uvicorn is not a dependency of durable: ``pip install uvicorn``), from
the repository's root, in two shells:

    durable worker examples/fastapi_app.py --store durable.lmdb     # creates the store; leave it running
    DURABLE_STORE=durable.lmdb uvicorn examples.fastapi_app:app

Start the worker first: a client never creates a store. (``DURABLE_STORE``, which
the app reads when it starts, is also the ``durable`` command's default ``--store``.) Then:

    curl -s -X POST localhost:8000/onboard -H 'content-type: application/json' \\
         -d '{"email": "ada@example.com", "name": "Ada", "plan": "pro"}'          # {"id": "..."}
    curl -N localhost:8000/instances/ID/events                                     # the events, as they happen
    curl -s localhost:8000/instances/ID                                            # status, output, error

``examples/test_fastapi_app.py`` does the same against a real worker process.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

import durable
from durable import AsyncClient, Retry, step, workflow

# -- the workflow (what `durable worker examples/fastapi_app.py` finds) ----------------------------

#: The queue the welcome e-mail job goes to; `durable worker` finds it here and records it in the store.
#: At most two e-mails are sent at once, across every worker on the store.
emails = durable.Queue("emails", concurrency=2)


@step
async def validate(email: str, name: str, plan: str) -> dict[str, str]:
    """Normalise the sign-up (a real app would check the address is not taken)."""
    return {"email": email.strip().lower(), "name": name.strip(), "plan": plan}


@step(retry=Retry(max_attempts=3, interval=0.5))
async def create_account(user: dict[str, str]) -> dict[str, str]:
    """Create the account (a real app would write to its database, keyed by the step's idempotency key)."""
    return {"user_id": "user-" + user["email"].split("@")[0], "plan": user["plan"]}


@step(queue="emails", retry=Retry(max_attempts=5, interval=1.0), timeout=30)
async def send_welcome_email(email: str, user_id: str) -> dict[str, Any]:
    """An external job: a worker serving the queue "emails" runs it, with these retries and this timeout."""
    return {"to": email, "template": "welcome", "user_id": user_id, "sent": True}


@workflow(timeout=24 * 3600)
async def onboard(email: str, name: str, plan: str) -> dict[str, Any]:
    """Validate the sign-up, create the account, send the welcome e-mail."""
    user = await validate(email, name, plan)
    account = await create_account(user)
    mail = await send_welcome_email(user["email"], account["user_id"])
    return {"user_id": account["user_id"], "plan": account["plan"], "welcome_sent": mail["sent"]}


# -- the web app --------------------------------------------------------------------------------------


class SignUp(BaseModel):
    """The body of ``POST /onboard``."""

    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)  # a shape check, not a mailbox check
    name: str = Field(min_length=1, max_length=200)
    plan: Literal["free", "pro", "enterprise"] = "free"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One client for the whole process (a process must not open one LMDB store twice), closed on shutdown."""
    client = AsyncClient(os.environ.get("DURABLE_STORE", "durable.lmdb"))
    app.state.durable = client
    try:
        yield
    finally:
        await client.aclose()


app = FastAPI(title="durable onboarding", lifespan=lifespan)


def client_of(request: Request) -> AsyncClient:
    """The process's client, made by :func:`lifespan`."""
    client: AsyncClient = request.app.state.durable
    return client


@app.post("/onboard", status_code=202)
async def start_onboarding(body: SignUp, request: Request) -> dict[str, str]:
    """Queue an onboarding for a worker; its id once it is on disk."""
    instance_id = await client_of(request).start(onboard, body.email, body.name, body.plan)
    return {"id": instance_id}


@app.get("/instances/{instance_id}")
async def get_instance(instance_id: str, request: Request) -> dict[str, Any]:
    """Where an instance is: its status, current step, output or error."""
    instance = await client_of(request).get(instance_id)
    if instance is None:
        raise HTTPException(status_code=404, detail=f"no instance {instance_id!r}")
    return {
        "id": instance.id,
        "workflow": instance.workflow_name,
        "status": instance.status.value,
        "current_step": instance.current_step,
        "output": instance.output,
        "error": instance.error,
    }


@app.get("/instances/{instance_id}/events")
async def stream_events(instance_id: str, request: Request,
                        last_event_id: str | None = Header(default=None)) -> StreamingResponse:
    """The instance's events as Server-Sent Events, from the first (or after ``Last-Event-ID``) to its last."""
    client = client_of(request)
    if await client.get(instance_id) is None:
        raise HTTPException(status_code=404, detail=f"no instance {instance_id!r}")
    after: int | None = None
    if last_event_id:
        text = last_event_id.strip()
        if not text.isdigit() or len(text) > 19 or int(text) > 2**63 - 1:
            raise HTTPException(status_code=400, detail="Last-Event-ID must be an event id (an integer)")
        after = int(text)

    async def sse() -> AsyncIterator[str]:
        async for event in client.events(instance_id, after=after):
            data = json.dumps(event.to_dict(), default=str)  # outputs may hold datetimes and the like
            yield f"id: {event.id}\nevent: {event.name}\ndata: {data}\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
