"""The benchmark harness survives a slow machine: a child past its time limit, a wake-up before all sleep.

Behaviour only (what the report says and the exit code), never a timing:
speed is measured in benchmarks/, not asserted here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--no-peer", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def test_a_child_past_its_time_limit_is_killed_and_reported() -> None:
    """A workload that runs past its limit is cut off (its process group killed): its cells say
    'did not finish in N s' and durable's own miss fails the run, instead of the run hanging."""
    done = _run("--only", "W1", "--timeout", "W1=0.1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "W1 durable: did not finish in 0.1 s" in done.stdout + done.stderr  # the progress line
    assert "| did not finish in 0.1 s |" in done.stdout


def test_p1_reports_a_wake_up_that_came_before_every_workflow_slept() -> None:
    """P1 places its first wake-up after all are asleep (measured); forced too early, it reports how
    many were not asleep yet (a row of the table), and does not crash."""
    done = _run("--only", "P1", env={"BENCH_P1_FIRST_WAKE": "0.01"})  # before any machine starts 1,000
    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if "workflows not yet asleep at the first wake-up" in line)
    assert int(row.split("|")[3].strip().replace(",", "")) > 0


def test_the_clients_benchmark_runs_quick_and_prints_every_figure() -> None:
    """benchmarks/clients.py --quick (a Client and `durable worker` processes on one LMDB store) runs to the
    end, stops its workers, and prints each figure's label: starts and their floor, pick-up, drain, external
    jobs, event streams, idle worker. Figures are not judged here (PASS or MISS are both fine)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "clients.py"), "--quick"],
        capture_output=True, text=True, timeout=180, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for label in [
        "floor: synced one-put LMDB commits/s:",
        "starts/s, 1 thread, sequential:",
        "starts/s, 64 threads sharing one Client:",
        "starts/s, AsyncClient, 64 asyncio tasks:",
        "pick-up, start() return -> step body, median ms:",
        "pick-up, p99 ms:",
        "drain, 1 worker, instances/s (3 steps each):",
        "drain, 2 workers, instances/s:",
        "in-process step, ms per step (median gap):",
        "external step, same worker, ms per step:",
        "external step's added cost, same worker, ms:",
        "event streams, AsyncClient tasks: RSS growth, MB:",
        "event streams, AsyncClient tasks: KB per stream:",
        "idle worker CPU, % of a core:",
    ]:
        assert label in done.stdout, f"{label!r} missing:\n{done.stdout}"
    for target in ("pick-up, start() return -> step body, median ms:", "pick-up, p99 ms:",
                   "idle worker CPU, % of a core:"):
        line = next(x for x in done.stdout.splitlines() if x.startswith(target))
        assert "PASS" in line or "MISS" in line, line
    assert "| figure" in done.stdout  # the closing table


def test_the_postgres_benchmark_runs_quick_and_prints_every_figure() -> None:
    """benchmarks/postgres.py --quick --no-peer (its own throwaway PostgreSQL server, or the one
    DURABLE_TEST_POSTGRES_URL names) runs to the end: the commit floor, W1, W2 in one process and drained by
    one and two worker processes, W4, and the statement counts; each target's cell says PASS, FAIL or ?
    (without the peer). Figures are not judged here."""
    url = os.environ.get("DURABLE_TEST_POSTGRES_URL")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "postgres.py"), "--quick", "--no-peer",
         *(["--url", url] if url else [])],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for label in [
        "commit round trip: one INSERT, autocommit, median (µs)",
        "the same, mean (µs)",
        "sequential steps, µs per step",
        "durable ÷ commit floor (mean ÷ mean)",
        "W1 ÷ mean floor per repeat:",
        "2 workers ÷ 1 worker per pair (1 then 2, interleaved):",
        "workflows x 3 steps at once, one process, steps/s",
        "queued, 1 worker process, steps/s",
        "queued, 2 worker processes, steps/s",
        "2 workers ÷ 1 worker",
        "µs per finished step",
        "statements W1:",
        "statements W2:",
    ]:
        assert label in done.stdout, f"{label!r} missing:\n{done.stdout}"
    for target in ("durable ÷ commit floor (mean ÷ mean)", "2 workers ÷ 1 worker"):
        line = next(x for x in done.stdout.splitlines() if target in x and ("≥" in x or "≤" in x))
        assert "PASS" in line or "FAIL" in line, line


def test_the_web_benchmark_runs_quick_and_prints_every_figure() -> None:
    """benchmarks/web.py --quick (a `durable serve`-like server process, HTTP clients in other processes) runs to
    the end, stops its servers and clients, and prints each figure's label: starts through the API against a
    trivial route, RSS per open event stream and its floors, event latency with one stream and in a burst to
    all. Figures are not judged here (PASS or MISS are both fine)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "web.py"), "--quick"],
        capture_output=True, text=True, timeout=180, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for label in [
        "POST /trivial, 50 connections, requests/s:",
        "starts/s through the API, 50 connections:",
        "starts/s ÷ trivial requests/s:",
        "server CPU per trivial request ÷ per start:",
        "floor: synced one-put LMDB commits/s:",
        "server RSS per open SSE stream, KB:",
        "floor: RSS per idle stream, a Starlette StreamingResponse on Hypercorn, KB:",
        "floor: RSS per idle stream, a plain ASGI stream on Hypercorn, KB:",
        "event latency, 1 stream open, median ms:",
        "event latency, 1 stream open, p99 ms:",
        "event latency, burst to all streams, engine emit -> SSE client, median ms:",
        "event latency, burst to all streams, engine emit -> SSE client, p99 ms:",
        "event latency, burst, step body -> SSE client (the engine's checkpoint included), median ms:",
        "burst: emit -> the server's event bus (before any stream), median ms:",
        "burst, no stream open: emit -> event bus, median ms:",
    ]:
        assert label in done.stdout, f"{label!r} missing:\n{done.stdout}"
    for target in ("starts/s ÷ trivial requests/s:", "server RSS per open SSE stream, KB:",
                   "event latency, 1 stream open, p99 ms:",
                   "event latency, burst to all streams, engine emit -> SSE client, p99 ms:"):
        line = next(x for x in done.stdout.splitlines() if x.startswith(target))
        assert "PASS" in line or "MISS" in line, line
    assert "| figure" in done.stdout  # the closing table
