"""The API fuzzed from its own OpenAPI document (schemathesis): no 500s, a 4xx that names the problem for
every malformed request, and nothing written for a refused one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, given, settings

from durable import AsyncClient, Client, Engine
from durable.web import create_app
from web_flows import hostile, signup, waiter

WORKFLOWS = [signup, waiter, hostile]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store where an engine registered the workflows (so starts by name are known), with one instance."""
    path = tmp_path_factory.mktemp("fuzz") / "store.lmdb"

    async def register() -> None:
        async with Engine.open(path) as engine:
            for wf in WORKFLOWS:
                engine.workflows.register(wf)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(engine.serve)  # (a serving engine records its workflows in the store)
                while len(await engine.store.known_workflows()) < len(WORKFLOWS):
                    await trio.sleep(0.01)
                nursery.cancel_scope.cancel()

    trio.run(register)
    with Client(path) as c:
        c.start(waiter, id="known-instance")
    return path


@pytest.fixture(scope="module")
def client(store: Path) -> Iterator[AsyncClient]:
    c = AsyncClient(store)
    yield c
    c._client.close()  # type: ignore[union-attr]


def _operations(client: AsyncClient) -> list[Any]:
    app = create_app(client, workflows=WORKFLOWS, max_body=64_000)
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    # (the event streams never end by themselves: covered by test_web_serve.py)
    return [r.ok() for r in schema.get_all_operations() if not r.ok().path.endswith("events")]


def test_the_document_covers_every_route(client: AsyncClient) -> None:
    names = {f"{op.method.upper()} {op.path}" for op in _operations(client)}
    assert {"POST /api/workflows/signup/instances", "POST /api/instances/{instance_id}/signal",
            "GET /api/instances", "POST /api/workflows/{name}/instances"} <= names


@pytest.mark.parametrize("index", range(12))
def test_no_request_gets_a_500_and_every_refusal_says_why(index: int, client: AsyncClient) -> None:
    operations = _operations(client)
    if index >= len(operations):
        pytest.fail(f"the document has {len(operations)} operations; lower the parametrize range")
    operation = operations[index]
    sync = client._client
    assert sync is not None

    @given(case=operation.as_strategy())
    @settings(max_examples=int(os.environ.get("DURABLE_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def fuzz(case: Any) -> None:
        before = [(i.id, i.status) for i in sync.list(limit=10_000).instances]
        headers = {"Content-Type": "application/json"} if case.method.upper() == "POST" else {}
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert body["detail"], body
            if isinstance(body["detail"], list):
                assert all(e["loc"] and e["msg"] for e in body["detail"]), body
            after = [(i.id, i.status) for i in sync.list(limit=10_000).instances]
            assert after == before, f"a refused request wrote: {case.method} {case.path}"

    fuzz()
