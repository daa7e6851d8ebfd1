"""`durable worker` with queues and external jobs, as separate processes; `list`/`show` say what waits."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

FLOWS = str(Path(__file__).parent.parent / "client" / "client_flows.py")


def _durable(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "durable", *args], capture_output=True, text=True, timeout=60)


def _worker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "durable", "worker", FLOWS, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


def _show(store: str, iid: str) -> dict:  # type: ignore[type-arg]
    result = _durable("show", iid, "--json", "-s", store)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_a_job_waits_for_a_worker_of_its_queue_then_a_jobs_only_worker_runs_it(tmp_path: Path) -> None:
    store = str(tmp_path / "s.lmdb")
    iid = _durable("run", f"{FLOWS}:greet", "ada", "--detach", "-s", store).stdout.strip()
    assert _show(store, iid)["waiting"] == "waiting for a worker of queue default"
    flows = _worker("-s", store, "--queue", "default")  # workflows of default; nobody serves "jobs"
    try:
        deadline = time.monotonic() + 30
        while _show(store, iid).get("waiting") != "job decorate waiting for a worker of queue jobs":
            assert time.monotonic() < deadline and flows.poll() is None, _show(store, iid)
            time.sleep(0.05)
        listed = _durable("list", "-s", store).stdout
        assert "job decorate waiting for a worker of queue jobs" in listed
        jobs = _worker("-s", store, "--jobs-only", "--queue", "jobs")
        try:
            while _show(store, iid)["status"] != "completed":
                assert time.monotonic() < deadline + 30, _show(store, iid)
                time.sleep(0.05)
        finally:
            jobs_out = _stop(jobs)
    finally:
        flows_out = _stop(flows)
    assert _show(store, iid)["output"] == "** ADA **"
    assert "workflows: none (--jobs-only)" in jobs_out and f"job 'decorate' (jobs) of {iid}" in jobs_out
    assert f"running {iid} (greet)" in flows_out and f"completed {iid} (greet)" in flows_out
    assert "queues: default;" in flows_out
