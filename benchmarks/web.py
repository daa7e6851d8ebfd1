"""Web: the HTTP API and its event streams, on the server ``durable serve`` runs: starts/s, RSS per stream, latency.

    python benchmarks/web.py [--quick] [--repeat N] [--dir PATH] [--timeout S] [--load wrk|python] [-v]

The server is ``_web_server.py``, a process of its own built as ``durable
serve`` builds its own (an ``Engine`` on an LMDB store, ``AsyncClient.
sharing(engine)``, ``create_app``, Hypercorn's trio worker with the same
settings, a worker on the same trio run unless told not to). The clients run
in other processes (``_web_clients.py``: plain sockets, one thread, no
durable), and the figures are read from the server's side where they can be
(its VmRSS in /proc/PID/status, its CPU in /proc/PID/stat). Each part runs in
a fresh child process (``_child.py``, as ``clients.py`` does), which starts
its servers and clients in its own process group and stops them whatever
happens. The machine may be shared and noisy: compare the figures as ratios
within one run.

1. **Starts through the API**: the server with no worker (the instances are
   only stored, never run) on a fresh LMDB store, serving one Starlette app:
   the durable app and, beside it, ``POST /trivial`` (parses a small JSON
   body, answers a small JSON object: what any request costs this server).
   50 keep-alive connections (``wrk -t1 -c50`` with a Lua script; or
   ``_web_clients.py load`` when wrk is not installed, or with ``--load
   python``) post, each as soon as its last answer came, either to
   ``/trivial`` or to ``/api/workflows/stored/instances`` with ``{"input":
   {"i": 1}}`` (each answered ``201`` once its instance is synced to disk),
   5 s each, alternating, after a warm-up of each; 3 repeats, medians.
   Figures: requests/s of each and their ratio (target: starts ≥ 0.70 x
   trivial), with the lowest and highest repeat's; the server's CPU per
   request (the CPU ratio tells the same with less noise from CPU the server
   did not get); the load generator's CPU (% of a core: near 100 %, the
   client would be the limit); latencies as wrk reports them; the floor,
   synced one-put LMDB commits/s (``_disk.py``, between the repeats), and the
   starts per LMDB commit (the store's last transaction id before and after:
   group commit).
2. **RSS per open event stream**: the server with its worker serving the
   durable app alone (as ``durable serve``), on a fresh store; 1,000
   instances of ``burst`` started (a Client in this process) and left
   waiting for signal ``go`` (``wait_for_signal``; past the engine's
   ``suspend_after`` they are unloaded from memory, as a long wait is). The
   server's VmRSS after a ``gc.collect()`` in it (on SIGUSR2), then with one
   ``GET /api/instances/{id}/events`` stream open to each instance (one
   connection each, from one client process), each past its first two
   events (replayed from the log) and left idle: the growth, per stream
   (target ≤ 20 KB). Then the floors, measured the same way in fresh servers
   of the same framework with no durable in them: an idle Starlette
   ``StreamingResponse`` per stream (what ``durable.web`` builds its streams
   on), and a plain ASGI function per stream (Hypercorn alone).
3. **Event latency, emit -> SSE client**: ``burst``'s step ``emit`` returns
   ``time.time()``, taken in its body, and the workflow returns
   ``time.time()`` taken at its end: the ``workflow.step.completed`` and
   ``workflow.completed`` events carry that in ``output``. The client stamps
   each ``recv()`` with ``time.time()`` as it returns (same host, same
   clock); an event's latency is the stamp of the ``recv`` that completed its
   message minus its ``output``: it covers the checkpoint's commit (and
   fsync), the event's append to the store's log and its commit, the
   client's one reader of that log, the stream's buffer, the SSE framing and
   the socket. (a) One stream open: an instance started, its stream opened
   and past its first two events, then signalled; its two stamped events;
   100 times. (b) The 1,000 streams of part 2 open when their 1,000
   instances are signalled at once (32 threads of a Client in this process):
   each instance's 6 events after its signal (signal step completed,
   progress, emit started, emit completed, progress, completed) make a burst
   of 6,000 events to 1,000 streams; the latencies of its 2,000 stamped
   events, the burst's length (first signal -> last event seen), the
   server's and the client's CPU. Target: p99 ≤ 100 ms. Where the time goes:
   the server's probes (``--probe``, armed for each burst) note when each
   stamped event reached the engine's event bus (emitted, its checkpoint
   committed: before any stream sees it) and how late a 1 ms sleep wakes
   (the trio loop's lag); and (c), before part 2, the same burst of 1,000
   instances with no stream open: its bus latencies, length and server CPU,
   the cost of running the instances alone.

``--quick``: 2 s per load run (after 1 s warm-ups), 1 repeat, 200 streams and
instances instead of 1,000, 20 single-stream rounds instead of 100; about
25 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _common import Row, Sample, Spawn
from _disk import lmdb_commit_us
from clients import last_txn, new_store, percentile, proc_cpu_s, start_many

from durable import Client, step, wait_for_signal, workflow

KEY = "WEB"
HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(HERE, "_web_server.py")
CLIENTS = os.path.join(HERE, "_web_clients.py")
START_PATH = "/api/workflows/stored/instances"
START_BODY = '{"input": {"i": 1}}'
TRIVIAL_PATH = "/trivial"
TRIVIAL_BODY = '{"input": {"i": 1}}'
STAMPED_PER_INSTANCE = 2  # emit's step.completed and workflow.completed
EVENTS_AFTER_SIGNAL = 6

ROWS = [
    Row("trivial_per_s", "POST /trivial, 50 connections, requests/s", better="higher", peer=False, fmt="{:,.0f}"),
    Row("starts_per_s", "starts/s through the API, 50 connections", better="higher", peer=False, fmt="{:,.0f}"),
    Row("starts_vs_trivial", "starts/s ÷ trivial requests/s", better="higher", limit=0.70, peer=False,
        fmt="{:,.2f}"),
    Row("starts_vs_trivial_lowest", "starts/s ÷ trivial requests/s, the lowest repeat", peer=False, fmt="{:,.2f}"),
    Row("starts_vs_trivial_highest", "starts/s ÷ trivial requests/s, the highest repeat", peer=False, fmt="{:,.2f}"),
    Row("cpu_trivial_vs_start", "server CPU per trivial request ÷ per start", peer=False, fmt="{:,.2f}"),
    Row("trivial_cpu_us", "POST /trivial, server CPU µs per request", peer=False, fmt="{:,.0f}"),
    Row("starts_cpu_us", "start through the API, server CPU µs per start", peer=False, fmt="{:,.0f}"),
    Row("trivial_server_cpu_pct", "POST /trivial, server CPU, % of a core", peer=False, fmt="{:,.0f}"),
    Row("starts_server_cpu_pct", "starts through the API, server CPU, % of a core", peer=False, fmt="{:,.0f}"),
    Row("trivial_client_cpu_pct", "POST /trivial, load generator CPU, % of a core", peer=False, fmt="{:,.0f}"),
    Row("starts_client_cpu_pct", "starts, load generator CPU, % of a core", peer=False, fmt="{:,.0f}"),
    Row("trivial_p50_ms", "POST /trivial, latency median ms", peer=False, fmt="{:,.2f}"),
    Row("trivial_p99_ms", "POST /trivial, latency p99 ms", peer=False, fmt="{:,.2f}"),
    Row("starts_p50_ms", "start through the API, latency median ms", peer=False, fmt="{:,.2f}"),
    Row("starts_p99_ms", "start through the API, latency p99 ms", peer=False, fmt="{:,.2f}"),
    Row("floor_commits_per_s", "floor: synced one-put LMDB commits/s", better="higher", peer=False, fmt="{:,.0f}"),
    Row("starts_per_commit", "starts per LMDB commit, through the API", better="higher", peer=False, fmt="{:,.1f}"),
    Row("rss_base_mb", "server RSS, 0 streams (instances waiting), MB", peer=False, fmt="{:,.1f}"),
    Row("rss_streams_mb", "server RSS, streams open, MB", peer=False, fmt="{:,.1f}"),
    Row("rss_per_stream_kb", "server RSS per open SSE stream, KB", limit=20, peer=False, fmt="{:,.1f}"),
    Row("asgi_rss_per_stream_kb", "floor: RSS per idle stream, a plain ASGI stream on Hypercorn, KB", peer=False,
        fmt="{:,.1f}"),
    Row("floor_rss_per_stream_kb", "floor: RSS per idle stream, a Starlette StreamingResponse on Hypercorn, KB",
        peer=False, fmt="{:,.1f}"),
    Row("rss_over_floor_kb", "RSS per stream above the Starlette floor (durable's own), KB", peer=False,
        fmt="{:,.1f}"),
    Row("rss_vs_floor", "RSS per stream ÷ the Starlette floor's", peer=False, fmt="{:,.2f}"),
    Row("streams_open_s", "streams opened (each past 2 events), s", peer=False, fmt="{:,.2f}"),
    Row("one_median_ms", "event latency, 1 stream open, median ms", peer=False, fmt="{:,.2f}"),
    Row("one_p99_ms", "event latency, 1 stream open, p99 ms", limit=100, peer=False, fmt="{:,.2f}"),
    Row("one_max_ms", "event latency, 1 stream open, max ms", peer=False, fmt="{:,.2f}"),
    Row("burst_from_bus_median_ms", "event latency, burst to all streams, engine emit -> SSE client, median ms",
        peer=False, fmt="{:,.2f}"),
    Row("burst_from_bus_p99_ms", "event latency, burst to all streams, engine emit -> SSE client, p99 ms",
        limit=100, peer=False, fmt="{:,.2f}"),
    Row("burst_median_ms", "event latency, burst, step body -> SSE client (the engine's checkpoint included), "
        "median ms", peer=False, fmt="{:,.2f}"),
    Row("burst_p99_ms", "event latency, burst, step body -> SSE client, p99 ms", peer=False, fmt="{:,.2f}"),
    Row("burst_max_ms", "event latency, burst to all streams, max ms", peer=False, fmt="{:,.2f}"),
    Row("burst_bus_median_ms", "burst: emit -> the server's event bus (before any stream), median ms", peer=False,
        fmt="{:,.2f}"),
    Row("burst_bus_p99_ms", "burst: emit -> the server's event bus, p99 ms", peer=False, fmt="{:,.2f}"),
    Row("burst_lag_max_ms", "burst: trio loop lag (a 1 ms sleep's overshoot), max ms", peer=False, fmt="{:,.1f}"),
    Row("burst_events", "burst: events delivered to the streams", peer=False, fmt="{:,.0f}"),
    Row("burst_s", "burst: first signal -> last event seen, s", peer=False, fmt="{:,.2f}"),
    Row("burst_signals_s", "burst: sending the signals (32 threads), s", peer=False, fmt="{:,.2f}"),
    Row("burst_events_per_s", "burst: events delivered per s", better="higher", peer=False, fmt="{:,.0f}"),
    Row("burst_server_cpu_s", "burst: server CPU, s", peer=False, fmt="{:,.2f}"),
    Row("burst_server_cpu_pct", "burst: server CPU, % of a core", peer=False, fmt="{:,.0f}"),
    Row("burst_client_cpu_pct", "burst: SSE client CPU, % of a core", peer=False, fmt="{:,.0f}"),
    Row("quiet_bus_median_ms", "burst, no stream open: emit -> event bus, median ms", peer=False, fmt="{:,.2f}"),
    Row("quiet_bus_p99_ms", "burst, no stream open: emit -> event bus, p99 ms", peer=False, fmt="{:,.2f}"),
    Row("quiet_lag_max_ms", "burst, no stream open: trio loop lag, max ms", peer=False, fmt="{:,.1f}"),
    Row("quiet_s", "burst, no stream open: first signal -> last instance completed, s", peer=False, fmt="{:,.2f}"),
    Row("quiet_server_cpu_s", "burst, no stream open: server CPU, s", peer=False, fmt="{:,.2f}"),
    Row("burst_cpu_vs_quiet", "burst: server CPU with the streams ÷ with none", peer=False, fmt="{:,.2f}"),
    Row("burst_cpu_per_event_us", "burst: server CPU per event delivered to a stream (the difference), µs",
        peer=False, fmt="{:,.0f}"),
]


@dataclass(frozen=True)
class Sizes:
    """This benchmark's sizes (``--quick``: the smaller ones)."""

    connections: int = 50
    seconds: float = 5.0  # per load run (whole seconds: wrk takes no less)
    warmup: float = 1.0  # per route, before the measured runs (whole seconds)
    repeats: int = 3
    streams: int = 1_000  # open streams = waiting instances (2., 3b.)
    rounds: int = 100  # single-stream rounds (3a.)
    settle: float = 1.5

    @classmethod
    def of(cls, quick: bool, repeat: int | None = None) -> Sizes:
        """Full or ``--quick`` sizes; ``repeat`` (``--repeat``) overrides the repeats."""
        sizes = cls(seconds=2.0, warmup=1.0, repeats=1, streams=200, rounds=20, settle=0.5) if quick else cls()
        if repeat is not None:
            sizes = cls(**{**sizes.__dict__, "repeats": max(1, repeat)})
        return sizes


# -- what the server runs (it imports this module: `import web`) ------------------------------------------------


@step
async def nop(i: int) -> int:
    """A trivial step (``stored`` never runs here: no worker serves part 1)."""
    return i


@workflow
async def stored(i: int) -> int:
    """What part 1 starts."""
    return await nop(i)


@step
async def emit(k: int) -> float:
    """When its body ran: its ``workflow.step.completed`` event carries it in ``output``."""
    return time.time()


@workflow
async def burst(steps: int = 1) -> float:
    """Waits for signal ``go``, runs ``steps`` ``emit`` steps, and returns when it ended (``time.time()`` read
    in the workflow's body, at its end: its ``workflow.completed`` event carries it)."""
    await wait_for_signal("go")
    for k in range(steps):
        await emit(k)
    return time.time()


# -- processes ---------------------------------------------------------------------------------------------------


class Server:
    """``_web_server.py`` serving ``app`` (``composite``, ``durable`` or ``floor``: see its doc) on ``store``,
    with a worker or not; stopped on exit (SIGTERM, then SIGKILL)."""

    def __init__(self, store: str, workdir: str, *, worker: bool, app: str = "composite", probe: bool = False) -> None:
        name = f"{os.path.basename(store)}-{app}"
        self.ready = os.path.join(workdir, f"ready-{name}")
        self.logfile = os.path.join(workdir, f"server-{name}.log")
        with open(self.logfile, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, SERVER, store, self.ready, "--app", app,
                                          *(["--worker"] if worker else []), *(["--probe"] if probe else [])],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
        self.url = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        with open(self.logfile, errors="replace") as f:
            return f.read()

    def __enter__(self) -> Server:
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(self.ready):
                self.check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not listen in 60 s:\n{self.log()[-3000:]}")
                time.sleep(0.02)
            with open(self.ready) as f:
                self.url = f.read().strip()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")

    def probes(self, on: bool) -> None:
        """Start or stop the server's probes (``--probe``): each :meth:`collect` returns their notes since the
        last."""
        with open(self.ready + ".probe", "w") as f:
            f.write("on" if on else "off")
        os.kill(self.pid, signal.SIGUSR1)
        time.sleep(0.05)  # taken

    def collect(self) -> dict[str, Any]:
        """A ``gc.collect()`` in the server (on SIGUSR2); then its VmRSS (KB, ``rss_kb``), read here from
        /proc/PID/status, its open event streams (``streams``) and its probes' notes since the last collect
        (``bus``, ``lag``), as it wrote them."""
        answer = self.ready + ".gc"
        if os.path.exists(answer):
            os.unlink(answer)
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while not os.path.exists(answer):
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not answer SIGUSR2 in 60 s")
            time.sleep(0.01)
        with open(answer) as f:
            notes: dict[str, Any] = json.load(f)
        with open(f"/proc/{self.pid}/status") as f:
            notes["rss_kb"] = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return notes

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Reader:
    """``_web_clients.py sse``: a process holding event streams, driven by JSON lines."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen([sys.executable, CLIENTS, "sse", url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the SSE client exited with {self.proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _wrk_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def load_run(tool: str, url: str, path: str, body: str, connections: int, seconds: float, workdir: str,
             server_pid: int) -> dict[str, float]:
    """One closed-loop load run: requests/s, non-2xx answers, latency median and p99 (wrk only), the server's
    and the load generator's CPU over it (% of a core)."""
    cpu_server, cpu_client, t0 = proc_cpu_s(server_pid), _children_cpu_s(), time.perf_counter()
    if tool == "wrk":
        script = os.path.join(workdir, "post.lua")
        with open(script, "w") as f:
            f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
        done = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
                               "-s", script, url + path], capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        out = done.stdout
        rate = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
        non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if non2xx or (errors and any(int(g) for g in errors.groups())):
            raise RuntimeError(f"wrk saw failed requests on {path}:\n{out}")
        p50 = _wrk_ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        p99 = _wrk_ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        result = {"rate": rate, "p50_ms": p50, "p99_ms": p99}
    else:
        done = subprocess.run([sys.executable, CLIENTS, "load", url, path, body, str(connections), str(seconds)],
                              capture_output=True, text=True, timeout=seconds + 60)
        if done.returncode != 0:
            raise RuntimeError(f"the load client failed ({done.returncode}):\n{done.stderr[-3000:]}")
        got = json.loads(done.stdout.strip().splitlines()[-1])
        if got["non2xx"]:
            raise RuntimeError(f"{got['non2xx']} answers on {path} were not 2xx")
        result = {"rate": got["requests"] / got["seconds"]}
    elapsed = time.perf_counter() - t0
    result["server_cpu_pct"] = (proc_cpu_s(server_pid) - cpu_server) / elapsed * 100
    result["client_cpu_pct"] = (_children_cpu_s() - cpu_client) / elapsed * 100
    return result


# -- 1. starts through the API -----------------------------------------------------------------------------------


def api_starts(workdir: str, tool: str, connections: int, seconds: float, warmup: float, repeats: int) -> Sample:
    """Child: starts/s through the API against the same server's trivial JSON route, 50 connections each."""
    store = new_store(os.path.join(workdir, "api"))
    routes = {"trivial": (TRIVIAL_PATH, TRIVIAL_BODY), "starts": (START_PATH, START_BODY)}
    runs: dict[str, list[dict[str, float]]] = {"trivial": [], "starts": []}
    floor, per_commit = [], []
    with Server(store, workdir, worker=False) as server:
        for kind, (path, body) in routes.items():  # warm-up: connections, imports, the store's first pages
            load_run(tool, server.url, path, body, connections, warmup, workdir, server.pid)
        for r in range(repeats):
            floor.append(1e6 / (lmdb_commit_us(workdir, count=200) or float("nan")))
            for kind in (("trivial", "starts") if r % 2 == 0 else ("starts", "trivial")):
                path, body = routes[kind]
                txn0 = last_txn(store)
                run = load_run(tool, server.url, path, body, connections, seconds, workdir, server.pid)
                if kind == "starts":
                    commits = last_txn(store) - txn0
                    per_commit.append(run["rate"] * seconds / max(1, commits))
                runs[kind].append(run)
            server.check()
    out: Sample = {}
    for kind, got in runs.items():
        for key in got[0]:
            out[f"{kind}_{'per_s' if key == 'rate' else key}"] = statistics.median(g[key] for g in got)
        out[f"{kind}_cpu_us"] = statistics.median(g["server_cpu_pct"] / 100 / g["rate"] * 1e6 for g in got)
    out["starts_vs_trivial"] = out["starts_per_s"] / out["trivial_per_s"]
    paired = [s["rate"] / t["rate"] for s, t in zip(runs["starts"], runs["trivial"])]  # each repeat's pair
    out["starts_vs_trivial_lowest"], out["starts_vs_trivial_highest"] = min(paired), max(paired)
    out["cpu_trivial_vs_start"] = out["trivial_cpu_us"] / out["starts_cpu_us"]
    out["floor_commits_per_s"] = statistics.median(floor)
    out["starts_per_commit"] = statistics.median(per_commit)
    return out


# -- 2. and 3. streams: RSS, latency -----------------------------------------------------------------------------


def _latencies_ms(answer: dict[str, Any]) -> list[float]:
    return [(arrival - emitted) * 1e3 for arrival, _, emitted in answer["stamped"]]


def _wait_waiting(client: Client, count: int, timeout: float = 120) -> None:
    """Until no ``burst`` instance is still pending (each has reached its signal wait, or is about to)."""
    deadline = time.monotonic() + timeout
    while client.list(workflow="burst", status="pending", limit=1).instances:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} burst instances not all started in {timeout:g} s")
        time.sleep(0.05)


def _held(client: Client, count: int, settle: float) -> list[str]:
    """``count`` instances of ``burst`` started (32 threads), each waiting for its signal, unloaded from memory."""
    ids, _ = start_many(lambda i: client.start(burst), count, 32)
    _wait_waiting(client, count)
    time.sleep(settle + 1.5)  # each past the engine's suspend_after (1 s): unloaded, as a long wait is
    return ids


def _burst(client: Client, server: Server, reader: Reader | None, ids: list[str], key: str) -> Sample:
    """Signal every instance of ``ids`` at once (32 threads of ``client``); wait until each has ended: every
    stream past its end with a ``reader``, else no ``burst`` instance pending or running. Figures under ``key``: the
    latencies (at the SSE client, and at the server's event bus), the burst's length, the server's CPU (and
    the client's), the trio loop's longest lag."""
    count = len(ids)
    cpu_server, cpu_client = proc_cpu_s(server.pid), proc_cpu_s(reader.pid) if reader else 0.0
    server.collect()  # (the probes' notes so far: none, they were off)
    server.probes(True)
    t0 = time.time()
    _, signals_s = start_many(lambda i: client.signal(ids[i], "go"), count, 32)
    out: Sample = {}
    if reader is not None:
        answer = reader.call(op="ended", timeout=300)
        if answer["ended"] != count:
            raise RuntimeError(f"only {answer['ended']} of {count} streams ended")
        stamped = _latencies_ms(answer)
        if len(stamped) != STAMPED_PER_INSTANCE * count:
            raise RuntimeError(f"{len(stamped)} stamped events at the SSE client, not {STAMPED_PER_INSTANCE * count}")
        out[f"{key}_median_ms"] = statistics.median(stamped)
        out[f"{key}_p99_ms"] = percentile(stamped, 99)
        out[f"{key}_max_ms"] = max(stamped)
        out[f"{key}_events"] = events = answer["messages"] - 2 * count  # each had 2 before its signal
        end = max(arrival for arrival, _, _ in answer["stamped"])
        out[f"{key}_events_per_s"] = events / (end - t0)
        out[f"{key}_client_cpu_pct"] = (proc_cpu_s(reader.pid) - cpu_client) / (end - t0) * 100
    else:
        deadline = time.monotonic() + 300
        while any(client.list(workflow="burst", status=status, limit=1).instances for status in ("pending", "running")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the burst of {count} instances did not end in 300 s")
            time.sleep(0.02)
    cpu = proc_cpu_s(server.pid) - cpu_server  # (before the collect: its gc.collect() is not the burst's)
    notes: dict[str, list[list[float]]] = {"bus": [], "lag": []}
    deadline = time.monotonic() + 60
    while len(notes["bus"]) < STAMPED_PER_INSTANCE * count:  # (an instance is emitted after it is stored)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(notes['bus'])} stamped events on the server's bus, not "
                               f"{STAMPED_PER_INSTANCE * count}")
        got = server.collect()
        notes["bus"] += got["bus"]
        notes["lag"] += got["lag"]
        time.sleep(0.05)
    server.probes(False)
    bus = [(arrival - emitted) * 1e3 for arrival, emitted in notes["bus"]]
    if reader is not None:
        # From the engine's emit (its event bus, the checkpoint committed) to the SSE client: matched by the
        # stamp each stamped event carries.
        on_bus = {emitted: arrival for arrival, emitted in notes["bus"]}
        delivered = [(arrival - on_bus[emitted]) * 1e3 for arrival, _, emitted in answer["stamped"]
                     if emitted in on_bus]
        out[f"{key}_from_bus_median_ms"] = statistics.median(delivered)
        out[f"{key}_from_bus_p99_ms"] = percentile(delivered, 99)
    if reader is None:
        end = max(arrival for arrival, _ in notes["bus"])
    out[f"{key}_bus_median_ms"] = statistics.median(bus)
    out[f"{key}_bus_p99_ms"] = percentile(bus, 99)
    out[f"{key}_lag_max_ms"] = max((lag for t, lag in notes["lag"] if t0 <= t <= end + 0.1), default=0.0) * 1e3
    out[f"{key}_s"] = end - t0
    out[f"{key}_signals_s"] = signals_s
    out[f"{key}_server_cpu_s"] = cpu
    out[f"{key}_server_cpu_pct"] = cpu / (end - t0) * 100
    return out


def streams(workdir: str, count: int, rounds: int, settle: float) -> Sample:
    """Child: single-stream latency; a burst with no stream open; the server's RSS with ``count`` idle streams
    open; a burst to them; the same idle streams on the framework alone."""
    store = new_store(os.path.join(workdir, "streams"))
    out: Sample = {}
    with Server(store, workdir, worker=True, app="durable", probe=True) as server, Reader(server.url) as reader, \
            Client(store) as client:
        # 3a. one stream open: start, open its stream, past its first 2 events, signal, read to its end
        one: list[float] = []
        for k in range(5 + rounds):
            iid = client.start(burst)
            reader.call(op="open", ids=[iid], events=2)
            client.signal(iid, "go")
            answer = reader.call(op="ended", timeout=60)
            if answer["ended"] != 1 or len(answer["stamped"]) != STAMPED_PER_INSTANCE:
                raise RuntimeError(f"single stream {k}: {answer}")
            if k >= 5:  # the first 5 warm up (lazy imports, the client's reader of the log)
                one += _latencies_ms(answer)
            reader.call(op="close")
        out["one_median_ms"] = statistics.median(one)
        out["one_p99_ms"] = percentile(one, 99)
        out["one_max_ms"] = max(one)
        server.check()

        # 3c. the same burst with no stream open: what running the instances costs the server alone
        out.update(_burst(client, server, None, _held(client, count, settle), "quiet"))
        server.check()

        # 2. RSS: `count` instances waiting for their signal, unloaded; then a stream each
        ids = _held(client, count, settle)
        base = server.collect()["rss_kb"]
        opened = reader.call(op="open", ids=ids, events=2)
        time.sleep(settle)
        after = server.collect()
        if after["streams"] != count:
            raise RuntimeError(f"{after['streams']} streams open in the server, not {count}")
        out["rss_base_mb"] = base / 1024
        out["rss_streams_mb"] = after["rss_kb"] / 1024
        out["rss_per_stream_kb"] = (after["rss_kb"] - base) / count
        out["streams_open_s"] = opened["seconds"]

        # 3b. the burst: every instance signalled at once, every stream open
        out.update(_burst(client, server, reader, ids, "burst"))
        out["burst_cpu_vs_quiet"] = out["burst_server_cpu_s"] / out["quiet_server_cpu_s"]
        out["burst_cpu_per_event_us"] = (out["burst_server_cpu_s"] - out["quiet_server_cpu_s"]) / \
            out["burst_events"] * 1e6
        reader.call(op="close")
        server.check()

    # 2, the floors: as many idle streams on the framework alone: a Starlette StreamingResponse waiting on an
    # event (the floor app), then a plain ASGI function doing the same (Hypercorn alone)
    for app in ("floor", "asgi"):
        with Server(store, workdir, worker=False, app=app) as floor, Reader(floor.url) as reader:
            for _ in range(5):  # warm-up, as the durable server's single-stream rounds were
                reader.call(op="open", ids=ids[:20], events=2)
                reader.call(op="close")
            time.sleep(settle)
            base = floor.collect()["rss_kb"]
            reader.call(op="open", ids=ids, events=2)
            time.sleep(settle)
            after = floor.collect()
            if after["streams"] != count:
                raise RuntimeError(f"{after['streams']} streams open in the {app} server, not {count}")
            reader.call(op="close")
        out[f"{app}_rss_per_stream_kb"] = (after["rss_kb"] - base) / count
    out["rss_over_floor_kb"] = out["rss_per_stream_kb"] - out["floor_rss_per_stream_kb"]
    out["rss_vs_floor"] = out["rss_per_stream_kb"] / out["floor_rss_per_stream_kb"]
    return out


# -- running it ------------------------------------------------------------------------------------------------


PARTS: list[tuple[str, Callable[[Sizes, str], dict[str, Any]]]] = [
    ("api_starts", lambda s, tool: dict(tool=tool, connections=s.connections, seconds=s.seconds, warmup=s.warmup,
                                        repeats=s.repeats)),
    ("streams", lambda s, tool: dict(count=s.streams, rounds=s.rounds, settle=s.settle)),
]


def _fmt(row: Row, value: float) -> str:
    return row.fmt.format(value)


def _verdict(row: Row, value: float) -> str:
    if row.limit is None:
        return ""
    ok = value <= row.limit if row.better == "lower" else value >= row.limit
    target = ("≤ " if row.better == "lower" else "≥ ") + f"{row.limit:g}"
    return f"{'PASS' if ok else 'MISS'} (target {target})"


METHOD = """\
method: server = one process as `durable serve` builds it (Hypercorn trio worker, Engine on LMDB, create_app);
  clients in other processes (no durable in them).
  starts: {tool}, {connections} keep-alive connections, closed loop, {seconds:g} s per run, POST /trivial (beside
  the durable app in one Starlette app) and starts alternating, {repeats} repeat(s), medians; no worker.
  RSS: server VmRSS (/proc/PID/status) after gc.collect() in it, {streams:,} instances waiting for a signal,
  before and with one idle SSE stream each; the floors: the same streams on Starlette + Hypercorn alone.
  latency: emit = time.time() in the step's body (workflow.step.completed output) and at the workflow's end
  (workflow.completed output); arrival = time.time() at the client's recv() that completed the message; one
  host, one clock. bus = when the server's engine emitted it (a listener on its event bus)."""


def main(argv: list[str] | None = None) -> int:
    """Standalone: each part in a child process, each figure printed as it comes, then a table."""
    from _proc import ChildFailed, make_spawn
    from _report import _filesystem, load_average, pipe_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repeat: about 30 s")
    p.add_argument("--repeat", type=int, default=None, help="repeats of the load runs (default 3; --quick 1)")
    p.add_argument("--dir", default=None, help="where the temporary stores go (default: the system temp dir)")
    p.add_argument("--timeout", type=float, default=None, help="seconds each child may run (default 180 quick, 600)")
    p.add_argument("--load", choices=["wrk", "python"], default=None,
                   help="the load generator of part 1 (default: wrk if installed, else _web_clients.py load)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every child process started")
    args = p.parse_args(argv)
    sizes = Sizes.of(args.quick, args.repeat)
    tool = args.load or ("wrk" if shutil.which("wrk") else "python")
    root = tempfile.mkdtemp(prefix="durable-web-", dir=args.dir)
    started, load = time.perf_counter(), load_average()
    rows = {row.key: row for row in ROWS}
    found: dict[str, float] = {}

    def report(sample: Sample) -> None:
        for key, value in sample.items():
            if key in rows:
                found[key] = value
                row = rows[key]
                print(f"{row.label}: {_fmt(row, value)} {_verdict(row, value)}".rstrip(), flush=True)
        extra = {k: v for k, v in sample.items() if k not in rows}
        if extra:
            print("  (also: " + ", ".join(f"{k} {v:,.2f}" for k, v in extra.items()) + ")", flush=True)

    try:
        print(f"stores in {root} ({_filesystem(root)}); python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
              f"load generator {tool}; {'quick' if args.quick else 'full'} run: {sizes}", flush=True)
        print(METHOD.format(tool=tool, **sizes.__dict__), flush=True)
        spawn: Spawn = make_spawn(root, args.timeout or (180 if args.quick else 600),
                                  sys.stderr if args.verbose else None)
        try:
            for n, (function, kwargs) in enumerate(PARTS):
                partdir = os.path.join(root, f"{n}-{function}")
                os.makedirs(partdir)
                try:
                    report(spawn("web", function, workdir=partdir, **kwargs(sizes, tool)))
                finally:
                    shutil.rmtree(partdir, ignore_errors=True)
        except ChildFailed as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print()
    print(pipe_table(["figure", "value", "target"],
                     [[row.label, _fmt(row, found[row.key]), _verdict(row, found[row.key])]
                      for row in ROWS if row.key in found], right={1}))
    print()
    print(f"total time: {time.perf_counter() - started:.0f} s; load average at start {load}, at end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
