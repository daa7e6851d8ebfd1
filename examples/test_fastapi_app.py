"""The FastAPI example end to end: the app under asyncio, a real `durable worker` process running the workflow.

Run it with

    pytest examples/test_fastapi_app.py

It starts `python -m durable worker examples/fastapi_app.py --store <tmp>`,
waits for the worker to say it is up (the worker creates the store, which the
app's client needs), then drives the app in this process through httpx's ASGI
transport, with the app's lifespan entered by hand (the transport does not run
it). The app's client is the only handle on the store in this process: a
process must not open one LMDB store twice, so the test counts instances
through that client too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from fastapi_app import app

APP = Path(__file__).resolve().parent / "fastapi_app.py"
STEPS = ["validate", "create_account", "send_welcome_email"]


def parse_sse(text: str) -> list[dict[str, Any]]:
    """The events of a Server-Sent Events body: ``{"id": int, "event": str, "data": dict}`` each."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        assert set(fields) == {"id", "event", "data"}, block
        events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


@contextmanager
def running_worker(store: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A `durable worker` process serving the example's module on ``store``; stopped with SIGTERM on exit."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DURABLE_STORE", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "durable", "worker", str(APP), "--store", str(store)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while b"durable worker " not in log.read_bytes():  # printed once the store is open and the module loaded
            assert proc.poll() is None, f"the worker exited {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the worker did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to the app in this process, inside the app's lifespan (its durable client)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


async def count_instances() -> int:
    """How many instances the store holds (through the app's own client)."""
    page = await app.state.durable.list(limit=1000)
    return len(page.instances)


async def scenario() -> str:
    with anyio.fail_after(60):
        async with http_client() as http:
            # Start: 202 and the id, once the instance is on disk.
            started = await http.post("/onboard", json={"email": "Ada@Example.com", "name": "Ada", "plan": "pro"})
            assert started.status_code == 202, started.text
            instance_id: str = started.json()["id"]

            # The events as SSE, until the instance ends.
            response = await http.get(f"/instances/{instance_id}/events")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = parse_sse(response.text)
            ids = [e["id"] for e in events]
            names = [e["event"] for e in events]
            assert ids == sorted(set(ids)), ids  # strictly increasing
            assert names[0] == "workflow.started" and names[-1] == "workflow.completed", names
            completed = [e["data"]["step_name"] for e in events if e["event"] == "workflow.step.completed"]
            assert completed == STEPS
            for e in events:
                assert e["data"]["name"] == e["event"] and e["data"]["id"] == e["id"]
                assert e["data"]["instance_id"] == instance_id
            output = {"user_id": "user-ada", "plan": "pro", "welcome_sent": True}
            assert events[-1]["data"]["output"] == output

            # The instance itself.
            got = await http.get(f"/instances/{instance_id}")
            assert got.status_code == 200
            body = got.json()
            assert body["status"] == "completed" and body["output"] == output and body["error"] is None
            assert body["workflow"] == "onboard"

            # A reconnecting browser sends the last id it saw: it gets exactly the events after it.
            again = await http.get(f"/instances/{instance_id}/events", headers={"Last-Event-ID": str(ids[1])})
            assert again.status_code == 200
            assert parse_sse(again.text) == events[2:]
            after_last = await http.get(f"/instances/{instance_id}/events", headers={"Last-Event-ID": str(ids[-1])})
            assert parse_sse(after_last.text) == []
            bad_id = await http.get(f"/instances/{instance_id}/events", headers={"Last-Event-ID": "x"})
            assert bad_id.status_code == 400

            # Unknown instances.
            assert (await http.get("/instances/no-such-instance")).status_code == 404
            assert (await http.get("/instances/no-such-instance/events")).status_code == 404

            # Bad input is refused before anything is started.
            for bad in ({"email": "ada.example.com", "name": "Ada", "plan": "pro"},
                        {"email": "ada@example.com", "name": "Ada", "plan": "gold"},
                        {"email": "ada@example.com", "plan": "pro"}):
                refused = await http.post("/onboard", json=bad)
                assert refused.status_code == 422, refused.text
            assert await count_instances() == 1
            return instance_id


def test_onboarding_over_http_with_a_worker_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST starts, SSE streams every event (and resumes after Last-Event-ID), GET reads the result."""
    store = tmp_path / "app.lmdb"
    log = tmp_path / "worker.log"
    monkeypatch.setenv("DURABLE_STORE", str(store))  # read by the app's lifespan
    with running_worker(store, log) as worker:
        instance_id = anyio.run(scenario, backend="asyncio")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, log.read_text()
    out = log.read_text()
    assert f"job 'send_welcome_email' (emails) of {instance_id}" in out  # the e-mail ran as a job of "emails"
    assert f"completed {instance_id} (onboard)" in out
    assert "queues: default, emails; workflows: onboard" in out
