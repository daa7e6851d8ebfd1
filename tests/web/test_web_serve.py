"""``durable serve`` as a real process, with a ``durable worker`` in another: the API over HTTP, and the
Server-Sent Event streams a browser's EventSource reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

FLOWS = str(Path(__file__).with_name("web_flows.py"))
JSON = {"Content-Type": "application/json"}


def _durable(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "durable", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str], timeout: float = 15) -> tuple[str, str, float]:
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err, time.monotonic() - began


def _ready(path: Path, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "durable serve did not start"
        time.sleep(0.02)
    return path.read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``durable serve --no-worker`` on a free port, and a ``durable worker`` process on the same store."""
    tmp = tmp_path_factory.mktemp("serve")
    store = str(tmp / "store.lmdb")
    ready = tmp / "ready"
    api = _durable("serve", FLOWS, "-s", store, "--port", "0", "--no-worker", "--keepalive", "0.3",
                   "--ready-file", str(ready))
    worker = None
    try:
        url = _ready(ready, api)
        worker = _durable("worker", FLOWS, "-s", store)
        with httpx.Client(base_url=url) as http:
            deadline = time.monotonic() + 30
            while "waiter" not in {w["name"] for w in http.get("/api/workflows").json()["workflows"]
                                   if w["kind"] != "unknown"} or not _worker_up(http):
                assert time.monotonic() < deadline and worker.poll() is None
                time.sleep(0.05)
        yield url
    finally:
        for proc in (worker, api):
            if proc is not None and proc.poll() is None:
                _stop(proc)


def _worker_up(http: httpx.Client) -> bool:
    r = http.post("/api/workflows/signup/instances", headers=JSON,
                  json={"input": {"email": "probe@b.io", "name": "P"}})
    iid = r.json()["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if http.get(f"/api/instances/{iid}").json()["status"] == "completed":
            return True
        time.sleep(0.05)
    return False


def _messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """SSE messages as dicts: ``{"id", "event", "data"}``, or ``{"comment": ...}``."""
    message: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if message:
                yield message
            message = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            field, _, value = line.partition(":")
            message[field] = value[1:] if value.startswith(" ") else value


def _read_stream(http: httpx.Client, path: str, headers: dict[str, str] | None = None,
                 stop_after: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    with http.stream("GET", path, headers=headers or {}, timeout=30) as r:
        if r.status_code != 200:
            return r.status_code, []
        assert r.headers["content-type"].startswith("text/event-stream")
        for m in _messages(r.iter_lines()):
            got.append(m)
            if stop_after is not None and sum(1 for g in got if "id" in g) >= stop_after:
                break
    return 200, got


def test_an_instances_stream_replays_then_follows_live_and_ends(server: str) -> None:
    with httpx.Client(base_url=server) as http:
        iid = http.post("/api/workflows/waiter/instances", headers=JSON, json={"input": {"n": 2}}).json()["id"]
        first_status, first = _read_stream(http, f"/api/instances/{iid}/events", stop_after=2)
        assert first_status == 200 and [m["event"] for m in first if "id" in m][:1] == ["workflow.started"]
        last_seen = [m for m in first if "id" in m][-1]["id"]
        http.post(f"/api/instances/{iid}/signal", headers=JSON, json={"name": "go", "payload": "now"})
        # Reconnecting as EventSource does: after Last-Event-ID, nothing lost or repeated, to the end.
        status, rest = _read_stream(http, f"/api/instances/{iid}/events", headers={"Last-Event-ID": last_seen})
        assert status == 200
        events = [m for m in rest if "id" in m]
        assert rest[-1] == {"event": "end", "data": "{}"}
        ids = [int(m["id"]) for m in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids[0] > int(last_seen)
        names = [m["event"] for m in events]
        assert names[-1] == "workflow.completed"
        assert names.count("workflow.step.completed") >= 3  # the signal, left and right
        data = [json.loads(m["data"]) for m in events]
        assert all(d["instance_id"] == iid and d["workflow_name"] == "waiter" for d in data)
        assert data[-1]["output"] == {"got": "now", "a": 3, "b": 4}
        # The whole log from the start equals what the two connections saw together.
        status, whole = _read_stream(http, f"/api/instances/{iid}/events")
        whole_ids = [int(m["id"]) for m in whole if "id" in m]
        assert whole_ids == [int(m["id"]) for m in first if "id" in m] + ids
        # After the end: 204, which tells EventSource to stop reconnecting.
        status, _ = _read_stream(http, f"/api/instances/{iid}/events", headers={"Last-Event-ID": str(ids[-1])})
        assert status == 204
        assert _read_stream(http, "/api/instances/no-such/events")[0] == 404
        assert _read_stream(http, f"/api/instances/{iid}/events", headers={"Last-Event-ID": "x"})[0] == 422


def test_the_all_instances_stream_filters_by_workflow_and_keeps_alive(server: str) -> None:
    with httpx.Client(base_url=server) as http:
        got: list[dict[str, Any]] = []
        with http.stream("GET", "/api/events", params={"workflow": "signup"}, timeout=30) as r:
            assert r.status_code == 200
            lines = _messages(r.iter_lines())
            assert next(lines) == {"retry": "2000"}
            assert next(lines) == {"comment": "keep-alive"}  # nothing yet: a comment within --keepalive
            http.post("/api/workflows/waiter/instances", headers=JSON, json={"input": {}})
            iid = http.post("/api/workflows/signup/instances", headers=JSON,
                            json={"input": {"email": "all@b.io", "name": "A"}}).json()["id"]
            for m in lines:
                if "id" in m:
                    got.append(m)
                    if m["event"] == "workflow.completed":
                        break
        data = [json.loads(m["data"]) for m in got]
        assert {d["workflow_name"] for d in data} == {"signup"}
        assert [d["name"] for d in data][0] == "workflow.started" and data[0]["instance_id"] == iid


def test_the_api_answers_over_http_with_the_worker_in_another_process(server: str) -> None:
    with httpx.Client(base_url=server) as http:
        r = http.post("/api/workflows/signup/instances", headers=JSON,
                      json={"input": {"email": "bad", "name": "A", "plan": "gold"}})
        assert r.status_code == 422 and len(r.json()["detail"]) == 2
        iid = http.post("/api/workflows/signup/instances", headers=JSON,
                        json={"input": {"email": "ok@b.io", "name": "A"}}).json()["id"]
        deadline = time.monotonic() + 20
        while http.get(f"/api/instances/{iid}").json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert http.get(f"/api/instances/{iid}/steps").json()["steps"][0]["status"] == "completed"
        assert http.get("/", headers={"Host": "evil.example:80"}).status_code == 421  # loopback, no token
        assert http.get("/").status_code == 200


def test_shutdown_ends_open_streams_first_and_exits_at_once(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    proc = _durable("serve", FLOWS, "-s", str(tmp_path / "store.lmdb"), "--port", "0", "--ready-file", str(ready))
    url = _ready(ready, proc)
    with httpx.Client(base_url=url) as http:
        iid = http.post("/api/workflows/waiter/instances", headers=JSON, json={"input": {}}).json()["id"]
        with http.stream("GET", f"/api/instances/{iid}/events", timeout=30) as r:
            lines = r.iter_lines()
            assert next(lines) == "retry: 2000"
            _, err, took = _stop(proc)
            rest = list(lines)  # the server ended the stream: the response completes
        assert not any(line.startswith("event: workflow.completed") for line in rest)
    assert took < 5, err  # not Hypercorn's graceful timeout for a stream left open
    # The instance stays unfinished in the store, for the next worker.
    proc = _durable("list", "-s", str(tmp_path / "store.lmdb"))
    out, _ = proc.communicate(timeout=30)
    assert iid[:8] in out


def test_it_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    proc = _durable("serve", FLOWS, "-s", str(tmp_path / "s"), "--host", "0.0.0.0", "--port", "0")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "without a token" in err
    proc = _durable("serve", FLOWS, "-s", str(tmp_path / "s"), "--token", "short")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "at least 16 characters" in err and "short" not in err.split("--token")[0]
    env = {**os.environ, "DURABLE_TOKEN": "a-long-enough-token-1234"}
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-m", "durable", "serve", FLOWS, "-s", str(tmp_path / "t"),
                             "--host", "0.0.0.0", "--port", "0", "--no-worker", "--ready-file", str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = _ready(ready, proc).replace("0.0.0.0", "127.0.0.1")
    try:
        with httpx.Client(base_url=url) as http:
            assert http.get("/api/workflows").status_code == 401
            ok = http.get("/api/workflows", headers={"Authorization": "Bearer a-long-enough-token-1234"})
            assert ok.status_code == 200
    finally:
        out, err, _ = _stop(proc)
    assert "a-long-enough-token-1234" not in out + err  # the token is never printed
