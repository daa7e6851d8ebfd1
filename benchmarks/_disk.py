"""Disk probes: the floor under every durable figure on this machine.

A fully durable checkpoint costs at least one synced commit, so a workload
that commits once per step can never be faster per step than these.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import statistics
import time


def fsync_us(directory: str, count: int = 30) -> float:
    """Median time of a 4 KB write + fsync in ``directory``, in µs."""
    path = os.path.join(directory, "fsync-probe")
    times = []
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        for i in range(count):
            os.pwrite(fd, os.urandom(4096), i * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times) * 1e6


def lmdb_commit_us(directory: str, count: int = 100, metasync: bool = True) -> float | None:
    """Median time of one small put + commit in an LMDB environment opened as durable opens it (synced).

    ``metasync=False`` (one sync per commit instead of two; not durable against
    power loss for the last transaction, so durable never uses it) is for
    comparison only (``floors.py``).
    """
    try:
        import lmdb
    except ImportError:
        return None
    path = os.path.join(directory, "lmdb-probe")
    env = lmdb.open(path, map_size=16 << 20, sync=True, metasync=metasync, readahead=False)
    times = []
    try:
        for i in range(count):
            t0 = time.perf_counter()
            with env.begin(write=True) as txn:
                txn.put(f"key-{i}".encode(), os.urandom(100))
            times.append(time.perf_counter() - t0)
    finally:
        env.close()
        shutil.rmtree(path, ignore_errors=True)
    return statistics.median(times) * 1e6


def sqlite_commit_us(directory: str, count: int = 100) -> float:
    """Median time of one small insert + commit in SQLite as DBOS uses it (journal DELETE, synchronous FULL)."""
    path = os.path.join(directory, "sqlite-probe.db")
    con = sqlite3.connect(path, isolation_level=None)
    times = []
    try:
        con.execute("PRAGMA journal_mode=DELETE")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
        for i in range(count):
            t0 = time.perf_counter()
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO t VALUES (?, ?)", (f"key-{i}", os.urandom(100)))
            con.execute("COMMIT")
            times.append(time.perf_counter() - t0)
    finally:
        con.close()
        os.unlink(path)
    return statistics.median(times) * 1e6


def disk_info(directory: str) -> dict[str, str]:
    """The three probes, formatted."""
    lmdb_us = lmdb_commit_us(directory)
    return {
        "fsync 4 KB": f"{fsync_us(directory):,.0f} µs median",
        "LMDB commit": "lmdb not installed" if lmdb_us is None else f"{lmdb_us:,.0f} µs median (synced, as durable)",
        "SQLite commit": f"{sqlite_commit_us(directory):,.0f} µs median (journal DELETE, synchronous FULL, as DBOS)",
    }
