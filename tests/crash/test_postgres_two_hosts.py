"""Two hosts, one database: ``durable worker`` on ``host-a`` and on ``host-b`` share queued instances; when
``host-b``'s worker is SIGKILLed, ``host-a`` takes its instances over once its lease expired, and every
instance ends with each checkpointed step run once.

Each worker runs in a UTS namespace of its own (``unshare --uts``), so its ``socket.gethostname()`` is really
``host-a`` or ``host-b``: the name the store judges liveness by (an engine on the same host by its pid, one
on another host only by the age of its heartbeat, on the database's clock, against its ``lease_ttl``). The
two share this machine's file system and the server's Unix socket, not a network: a worker cut off by a
partition is tests/crash/test_postgres_fencing.py's paused engine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

APP = Path(__file__).with_name("pg_hosts_app.py")
TTL = 2.0
N = 40


def _why_not() -> str | None:
    if shutil.which("unshare") is None:
        return "the two-host test needs util-linux's unshare"
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
        return "the two-host test needs to create UTS namespaces (root, or a user namespace)"
    return None


def _worker(host: str, url: str, log: Path, err: Path) -> subprocess.Popen[bytes]:
    # unshare and sh exec: the pid is the worker's own, so a SIGKILL hits the worker.
    script = (f'hostname {host} && exec "$0" -m durable worker "$1" --store "$2" --lease-ttl {TTL} '
              "--poll 0.2 --concurrency 4")
    env = {**os.environ, "DURABLE_HOSTS_LOG": str(log), "PYTHONUNBUFFERED": "1"}
    with err.open("wb") as errf:
        return subprocess.Popen(["unshare", "--uts", "sh", "-c", script, sys.executable, str(APP), url],
                                env=env, stdout=subprocess.DEVNULL, stderr=errf)


def _registered(pg_url: str, schema: str) -> int:
    """How many workers have recorded what they serve."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_url, autocommit=True) as conn:
        try:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}.servers").format(sql.Identifier(schema))).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def _heartbeat(pg_url: str, schema: str, host: str) -> float:
    """The time of the last heartbeat of the engine on ``host`` (seconds since the epoch)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(sql.SQL("SELECT max(extract(epoch FROM heartbeat))::float8 FROM {}.owners "
                                   "WHERE record::json->>'host' = %s").format(sql.Identifier(schema)),
                           (host,)).fetchone()
    assert row is not None and row[0] is not None, f"no heartbeat of {host}"
    return float(row[0])


async def _midway_on(store: Any, pg_url: str, schema: str, host: str) -> bool:
    """Whether an unfinished instance leased to the engine on ``host`` has a completed step and steps to run."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_url, autocommit=True) as conn:
        held = [r[0] for r in conn.execute(sql.SQL(
            "SELECT l.instance_id FROM {0}.leases l JOIN {0}.owners o ON o.id = l.owner_id "
            "WHERE o.record::json->>'host' = %s").format(sql.Identifier(schema)), (host,)).fetchall()]
    for iid in held:
        done = [s for s in (await store.get_steps(iid)).values() if s.status == "completed"]
        if 0 < len(done) < 3:
            return True
    return False


def _lines(log: Path) -> list[list[str]]:
    """``[time, host, pid, start|end, instance, key]`` per complete line."""
    if not log.exists():
        return []
    return [ln.split(" ") for ln in log.read_text().splitlines() if ln.count(" ") == 5]


def test_workers_on_two_hosts_share_the_work_and_one_takes_over_the_others(
        pg_url: str, pg_store_factory: Callable[..., object], tmp_path: Path) -> None:
    why = _why_not()
    if why is not None:
        pytest.skip(why)
    from durable import Client

    store = pg_store_factory()
    schema = store.schema  # type: ignore[attr-defined]
    store.migrate()  # type: ignore[attr-defined]  # (a client never creates a store)
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"
    log = tmp_path / "steps.log"
    a = _worker("host-a", url, log, tmp_path / "a.err")
    b = _worker("host-b", url, log, tmp_path / "b.err")
    killed_at = 0.0
    try:
        deadline = time.monotonic() + 60
        while _registered(pg_url, schema) < 2:  # both serve before anything is queued: both get work
            assert a.poll() is None and b.poll() is None, (tmp_path / "a.err").read_text() + (tmp_path / "b.err").read_text()
            assert time.monotonic() < deadline, "the workers never registered"
            time.sleep(0.02)
        with Client(url) as client:
            ids = [client.start("hosts", i, id=f"h{i:02d}", queue="default") for i in range(N)]
        while sum(1 for ln in _lines(log) if ln[1] == "host-b" and ln[3] == "end") < 8:
            assert a.poll() is None and b.poll() is None, (tmp_path / "a.err").read_text() + (tmp_path / "b.err").read_text()
            assert time.monotonic() < deadline, f"host-b ran too little: {_lines(log)[-5:]}"
            time.sleep(0.002)
        # Killed while it runs an instance with a step checkpointed (committed) and steps left: the one host-a
        # must continue from that checkpoint. (A step's logged end may not have committed yet.)
        while not trio.run(_midway_on, store, pg_url, schema, "host-b"):
            assert a.poll() is None and b.poll() is None, (tmp_path / "a.err").read_text() + (tmp_path / "b.err").read_text()
            assert time.monotonic() < deadline, f"host-b never held an instance midway: {_lines(log)[-5:]}"
            time.sleep(0.002)
        os.kill(b.pid, signal.SIGKILL)
        killed_at = time.time()
        b.wait()
        b_beat = _heartbeat(pg_url, schema, "host-b")  # its last, on the database's clock (this machine's)

        async def finished() -> list[object]:
            insts = [await store.get_instance(i) for i in ids]  # type: ignore[attr-defined]
            return [x for x in insts if x is not None and x.finished]  # type: ignore[attr-defined]

        while len(trio.run(finished)) < N:
            assert a.poll() is None, (tmp_path / "a.err").read_text()
            assert time.monotonic() < deadline, f"not every instance finished: {_lines(log)[-5:]}"
            time.sleep(0.05)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()

    lines = _lines(log)
    starts = [ln for ln in lines if ln[3] == "start"]
    by_b = {ln[4] for ln in starts if ln[1] == "host-b"}
    assert {ln[1] for ln in starts} == {"host-a", "host-b"}  # both hosts took instances
    # A step runs at most once on each host; twice in all only if host-b was killed with it unsaved.
    runs = Counter((ln[1], ln[4], ln[5]) for ln in starts)
    assert max(runs.values()) == 1, [k for k, c in runs.items() if c > 1]
    # host-a ran steps of instances host-b had begun (taken over), and only once host-b's last heartbeat was
    # older than its lease_ttl.
    taken = [ln for ln in starts if ln[1] == "host-a" and ln[4] in by_b and float(ln[0]) > killed_at]
    assert taken, "host-a took over none of host-b's instances"
    assert b_beat <= killed_at and min(float(ln[0]) for ln in taken) >= b_beat + TTL - 0.05

    async def outcome() -> dict[str, tuple[object, dict[str, object]]]:
        out = {}
        for i in ids:
            inst = await store.get_instance(i)  # type: ignore[attr-defined]
            steps = await store.get_steps(i)  # type: ignore[attr-defined]
            out[i] = (inst, {k: sr.output for k, sr in steps.items()})
        return out

    for iid, (inst, steps) in trio.run(outcome).items():
        assert inst.status == "completed", (iid, inst.error)  # type: ignore[attr-defined]
        assert inst.output == [steps["h1#0"], steps["h2#0"], steps["h3#0"]]  # type: ignore[attr-defined]
        ended = [ln for ln in lines if ln[3] == "end" and ln[4] == iid]
        # A checkpointed step ran no more after it was saved: its saved host is the last one to end it.
        for key in ("h1#0", "h2#0", "h3#0"):
            last = [ln[1] for ln in ended if ln[5] == key][-1]
            assert steps[key] == last, (iid, key, ended)
    mixed = [iid for iid, (inst, _) in trio.run(outcome).items() if set(inst.output) == {"host-a", "host-b"}]  # type: ignore[attr-defined]
    assert mixed, "no instance continued on host-a after steps checkpointed on host-b"
