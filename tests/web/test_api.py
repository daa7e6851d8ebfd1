"""The HTTP API as an ASGI app (httpx in the test's trio run), over an engine serving in the same run."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import durable
from durable import AsyncClient, Engine
from durable.web import create_app

import web_flows
from web_flows import hostile, signup, waiter

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """``api(**create_app options)``: an httpx client of the app, with an engine serving its workflows."""
    async with Engine.open(tmp_path / "store.lmdb", poll_interval=30) as engine:
        for wf in (signup, waiter, hostile):
            engine.workflows.register(wf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.serve)
            async with AsyncClient.sharing(engine) as client:
                opened: list[httpx.AsyncClient] = []

                def make(**options: Any) -> httpx.AsyncClient:
                    options.setdefault("workflows", [signup, waiter, hostile])
                    app = create_app(client, **options)
                    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
                    opened.append(http)
                    return http

                yield make
                for http in opened:
                    await http.aclose()
            nursery.cancel_scope.cancel()


async def _count(http: httpx.AsyncClient) -> int:
    return len((await http.get("/api/instances", params={"limit": 500})).json()["instances"])


async def _finished(http: httpx.AsyncClient, instance_id: str) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            body: dict[str, Any] = (await http.get(f"/api/instances/{instance_id}")).json()
            if body["status"] in ("completed", "failed", "cancelled", "timed_out"):
                return body
            await trio.sleep(0.01)


# -- workflows ------------------------------------------------------------------------------------


async def test_workflows_list_their_input_schema_graph_and_mermaid(api: Callable[..., httpx.AsyncClient]) -> None:
    http = api()
    found = {w["name"]: w for w in (await http.get("/api/workflows")).json()["workflows"]}
    assert set(found) >= {"signup", "waiter", "hostile"}
    s = found["signup"]
    assert s["kind"] == "function" and s["doc"] == "The original's onboarding route: typed input."
    assert s["input_schema"]["properties"]["plan"]["enum"] == ["free", "pro", "enterprise"]
    assert s["input_schema"]["required"] == ["email", "name"]
    assert [st["name"] for st in s["graph"]["states"]] == ["create-account"]
    assert s["mermaid"].startswith("flowchart") or "graph" in s["mermaid"]
    w = found["waiter"]
    kinds = [st["type"] for st in w["graph"]["states"]]
    assert "parallel" in kinds and "signal" in kinds
    par = next(st for st in w["graph"]["states"] if st["type"] == "parallel")
    assert sorted(b["states"][0]["name"] for b in par["branches"]) == ["left", "right"]
    one = (await http.get("/api/workflows/signup")).json()
    assert one["name"] == "signup"
    missing = await http.get("/api/workflows/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


# -- start ----------------------------------------------------------------------------------------


async def test_the_originals_route_rejects_a_malformed_email_and_an_unknown_plan_before_writing(
        api: Callable[..., httpx.AsyncClient]) -> None:
    http = api()
    r = await http.post("/api/workflows/signup/instances", headers=JSON,
                        json={"input": {"email": "ada@example", "name": "Ada", "plan": "gold"}})
    assert r.status_code == 422
    fields = {tuple(e["loc"]): e for e in r.json()["detail"]}
    assert set(fields) == {("body", "input", "email"), ("body", "input", "plan")}
    assert "pattern" in fields[("body", "input", "email")]["msg"]
    assert "'free', 'pro' or 'enterprise'" in fields[("body", "input", "plan")]["msg"]
    r = await http.post("/api/workflows/signup/instances", headers=JSON, json={"input": {"email": "a@b.io"}})
    assert r.status_code == 422 and [e["loc"] for e in r.json()["detail"]] == [["body", "input", "name"]]
    r = await http.post("/api/workflows/signup/instances", headers=JSON,
                        json={"input": {"email": "a@b.io", "name": "A", "extra": 1}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "input", "extra"]
    r = await http.post("/api/workflows/signup/instances", headers=JSON, json={"inptu": {}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "inptu"]
    assert await _count(http) == 0  # nothing written for any refused request


async def test_a_valid_start_is_stored_run_and_readable(api: Callable[..., httpx.AsyncClient]) -> None:
    http = api()
    r = await http.post("/api/workflows/signup/instances", headers=JSON,
                        json={"input": {"email": "ada@example.com", "name": "Ada", "plan": "pro"}})
    assert r.status_code == 201, r.text
    iid = r.json()["id"]
    assert r.headers["location"] == f"/api/instances/{iid}"
    done = await _finished(http, iid)
    assert done["status"] == "completed" and done["progress"] == 100
    assert done["output"] == {"user_id": "user-ada", "name": "Ada", "plan": "pro"}
    assert done["input"] is not None and done["workflow"] == "signup"
    steps = (await http.get(f"/api/instances/{iid}/steps")).json()["steps"]
    assert [(s["key"], s["status"], s["attempts"]) for s in steps] == [("create-account#0", "completed", 1)]
    assert steps[0]["duration_ms"] >= 0 and steps[0]["output"] == {"user_id": "user-ada"}


async def test_start_options_and_conflicts(api: Callable[..., httpx.AsyncClient]) -> None:
    http = api()
    body: dict[str, Any] = {"input": {"email": "a@b.io", "name": "A"}, "id": "my-id-1", "priority": 5}
    r = await http.post("/api/workflows/signup/instances", headers=JSON, json=body)
    assert r.status_code == 422 and "does not order by priority" in r.json()["detail"][0]["msg"]
    del body["priority"]
    r = await http.post("/api/workflows/signup/instances", headers=JSON, json=body)
    assert r.status_code == 201 and r.json()["id"] == "my-id-1"
    again = await http.post("/api/workflows/signup/instances", headers=JSON, json=body)
    assert again.status_code == 409 and "my-id-1" in again.json()["detail"]
    r = await http.post("/api/workflows/signup/instances", headers=JSON,
                        json={"input": {"email": "a@b.io", "name": "A"}, "queue": "no-such-queue"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "queue"]
    r = await http.post("/api/workflows/nope/instances", headers=JSON, json={"input": {}})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = await http.post("/api/workflows/signup/instances", headers=JSON, json={"input": {}, "priority": "high"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "priority"]


async def test_bodies_must_be_json_of_bounded_size_and_are_never_unpickled(
        api: Callable[..., httpx.AsyncClient]) -> None:
    http = api(max_body=2_000)
    import pickle

    r = await http.post("/api/workflows/signup/instances", headers={"Content-Type": "application/octet-stream"},
                        content=pickle.dumps({"input": {}}))
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = await http.post("/api/workflows/signup/instances", headers=JSON, content=pickle.dumps({"input": {}}))
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = await http.post("/api/workflows/signup/instances", headers=JSON, content=b'{"input": NaN}')
    assert r.status_code == 400
    big = json.dumps({"input": {"email": "a@b.io", "name": "x" * 5_000}})
    r = await http.post("/api/workflows/signup/instances", headers=JSON, content=big)
    assert r.status_code == 413 and "2,000" in r.json()["detail"]

    assert await _count(http) == 0


async def test_a_body_without_length_is_counted_as_it_streams_in() -> None:
    from durable.web._security import Gate

    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)

    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": b" " * 500, "more_body": True}] * 10

    async def receive() -> dict[str, Any]:
        return chunks.pop()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/x", "headers": [(b"content-type", b"application/json")]}
    await Gate(app, token=None, trusted_hosts=None, max_body=2_000)(scope, receive, send)
    assert sent[0]["status"] == 413 and not reached  # refused at 2,500 bytes, before the app saw it
    assert b"2,000" in sent[1]["body"]


# -- instances ------------------------------------------------------------------------------------


async def test_list_filters_and_cursor_pages(api: Callable[..., httpx.AsyncClient]) -> None:
    http = api()
    ids = []
    for n in range(5):
        r = await http.post("/api/workflows/signup/instances", headers=JSON,
                            json={"input": {"email": f"u{n}@b.io", "name": "A"}})
        ids.append(r.json()["id"])
    w = (await http.post("/api/workflows/waiter/instances", headers=JSON, json={"input": {}})).json()["id"]
    for iid in ids:
        await _finished(http, iid)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"workflow": "signup", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get("/api/instances", params=params)).json()
        seen += [i["id"] for i in page["instances"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    running = (await http.get("/api/instances", params={"status": "completed"})).json()["instances"]
    assert {i["id"] for i in running} == set(ids)
    assert w not in {i["id"] for i in running}
    for bad in ({"status": "done"}, {"limit": 0}, {"limit": "x"}, {"cursor": "garbage"}, {"colour": "red"}):
        r = await http.get("/api/instances", params=bad)
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"][0] == "query"


async def test_signal_cancel_resume_and_unknown_ids(api: Callable[..., httpx.AsyncClient]) -> None:
    http = api()
    iid = (await http.post("/api/workflows/waiter/instances", headers=JSON, json={"input": {"n": 3}})).json()["id"]
    r = await http.post(f"/api/instances/{iid}/signal", headers=JSON, json={"name": "go", "payload": {"ok": [1]}})
    assert r.status_code == 202 and r.json() == {"seq": 1}
    done = await _finished(http, iid)
    assert done["output"] == {"got": {"ok": [1]}, "a": 4, "b": 6}
    r = await http.post(f"/api/instances/{iid}/signal", headers=JSON, json={"name": "go"})
    assert r.status_code == 409 and "finished" in r.json()["detail"]
    r = await http.post(f"/api/instances/{iid}/signal", headers=JSON, json={"payload": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "name"]

    other = (await http.post("/api/workflows/waiter/instances", headers=JSON, json={"input": {}})).json()["id"]
    r = await http.post(f"/api/instances/{other}/cancel", headers=JSON)
    assert r.status_code == 200 and r.json() == {"cancelled": True}
    assert (await _finished(http, other))["status"] == "cancelled"
    assert (await http.post(f"/api/instances/{other}/cancel", headers=JSON)).json() == {"cancelled": False}
    assert (await http.post(f"/api/instances/{other}/resume", headers=JSON)).json() == {"resumed": False}
    for path in ("", "/steps"):
        r = await http.get(f"/api/instances/nope{path}")
        assert r.status_code == 404 and "nope" in r.json()["detail"]
    for action in ("cancel", "resume"):
        r = await http.post(f"/api/instances/nope/{action}", headers=JSON)
        assert r.status_code == 404, action
    r = await http.post("/api/instances/nope/signal", headers=JSON, json={"name": "go"})
    assert r.status_code == 404


async def test_values_go_out_as_bounded_json_text(api: Callable[..., httpx.AsyncClient]) -> None:
    http = api()
    iid = (await http.post("/api/workflows/hostile/instances", headers=JSON, json={})).json()["id"]
    done = await _finished(http, iid)
    assert done["output"] == "<script>window.__pwned = 1</script>"  # JSON text: the page shows it as text
    from durable.web._json import jsonable

    assert jsonable("x" * 5_000).endswith("(5,000 characters)")
    assert jsonable(list(range(500)))[-1] == "… 400 more"
    assert jsonable(object()).startswith("<object object")
    assert jsonable(float("nan")) == "nan"


# -- security -------------------------------------------------------------------------------------


async def test_a_token_is_required_on_every_route_and_compared_exactly(
        api: Callable[..., httpx.AsyncClient]) -> None:
    token = "s3cret-token-0123456789"
    http = api(token=token)
    for path in ("/", "/api/workflows", "/api/instances", "/api/events", "/api/openapi.json", "/static/app.js"):
        r = await http.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer")
    r = await http.get("/api/workflows", headers={"Authorization": "Bearer " + token[:-1] + "X"})
    assert r.status_code == 401 and "wrong" in r.json()["detail"]
    r = await http.get("/api/workflows", headers={"Authorization": "Bearer " + token})
    assert r.status_code == 200
    r = await http.post("/api/workflows/signup/instances", json={"input": {}},
                        headers={"Authorization": "Bearer " + token, "Content-Type": "text/plain"})
    assert r.status_code == 422  # the bearer header is no CSRF risk: taken, then validated
    r = await http.get("/?token=wrong")
    assert r.status_code == 401
    r = await http.get("/?token=" + token)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    http.cookies.set("durable_token", token)
    assert (await http.get("/")).status_code == 200
    assert (await http.get("/api/instances")).status_code == 200
    r = await http.post("/api/instances/x/cancel")  # a cookie alone: a form on another site could send it
    assert r.status_code == 415


async def test_trusted_hosts_no_cors_and_page_headers(api: Callable[..., httpx.AsyncClient]) -> None:
    http = api(trusted_hosts=["localhost", "127.0.0.1"])
    r = await http.get("/api/workflows")  # Host: testserver
    assert r.status_code == 421 and "testserver" in r.json()["detail"]
    r = await http.get("/api/workflows", headers={"Host": "127.0.0.1:8000"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    page = await http.get("/", headers={"Host": "localhost:8000"})
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    cors = api(cors_origins=["https://ops.example"])
    r = await cors.options("/api/workflows", headers={"Origin": "https://ops.example",
                                                      "Access-Control-Request-Method": "GET"})
    assert r.headers["access-control-allow-origin"] == "https://ops.example"


async def test_unknown_routes_and_methods_are_json_4xx(api: Callable[..., httpx.AsyncClient]) -> None:
    http = api(dashboard=False)
    r = await http.get("/api/nothing")
    assert r.status_code == 404 and "/api/nothing" in r.json()["detail"]
    r = await http.delete("/api/instances/x", headers=JSON)
    assert r.status_code == 405
    assert (await http.get("/")).status_code == 404  # no dashboard


async def test_the_openapi_document_names_every_route_and_each_workflows_input(
        api: Callable[..., httpx.AsyncClient]) -> None:
    http = api()
    doc = (await http.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    paths = doc["paths"]
    for path in ("/api/workflows", "/api/instances", "/api/instances/{instance_id}",
                 "/api/instances/{instance_id}/steps", "/api/instances/{instance_id}/cancel",
                 "/api/instances/{instance_id}/resume", "/api/instances/{instance_id}/signal",
                 "/api/instances/{instance_id}/events", "/api/events", "/api/workflows/signup/instances"):
        assert path in paths, path
    schema = paths["/api/workflows/signup/instances"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["input"]["properties"]["plan"]["enum"] == ["free", "pro", "enterprise"]


def test_create_app_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="AsyncClient"):
        create_app("store-path")  # type: ignore[arg-type]


async def test_flows_module_is_importable_for_workers() -> None:
    assert durable.__version__ and web_flows.signup.name == "signup"


async def test_review_fixes_redirects_streams_and_odd_digits(api: Callable[..., httpx.AsyncClient]) -> None:
    """A superscript digit is no event id (422, not 500); the token's redirect keeps a mount's prefix once and
    never names another site; a HEAD of a stream opens none."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    http = api()
    r = await http.get("/api/events", params={"after": "²"})
    assert r.status_code == 422 and "event id" in r.json()["detail"][0]["msg"]
    r = await http.head("/api/events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream") and not r.content

    token = "s3cret-token-0123456789"
    inner = api(token=token)
    app = inner._transport.app  # type: ignore[attr-defined]
    outer = httpx.AsyncClient(transport=httpx.ASGITransport(app=Starlette(routes=[Mount("/durable", app)])),
                              base_url="http://testserver")
    try:
        r = await outer.get("/durable/?token=" + token)
        assert r.status_code == 303 and r.headers["location"] == "/durable/"
        assert "Path=/durable" in r.headers["set-cookie"]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "method": "GET", "path": "//evil.example/", "raw_path": b"//evil.example/",
                   "root_path": "", "query_string": f"token={token}".encode(), "headers": []}, receive, send)
        assert sent[0]["status"] == 303
        assert dict(sent[0]["headers"])[b"location"] == b"/evil.example/"  # a path here, not another site
        r = await inner.get("/a%0d%0aSet-Cookie:%20x=1/?token=" + token)
        assert r.status_code == 303 and "\r" not in r.headers["location"] and "%0d%0a" in r.headers["location"]
    finally:
        await outer.aclose()
