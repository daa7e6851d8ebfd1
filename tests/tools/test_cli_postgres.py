"""The ``durable`` commands on a PostgreSQL store: ``--store postgresql://...`` (and ``$DURABLE_STORE``) for run,
list, show, events, worker, signal, cancel, resume and migrate, as a role with a password that no output ever
shows; clients never create a store on a URL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from click.testing import CliRunner, Result
from psycopg import sql

from durable import Client, StoreError
from durable.cli._app import cli
from durable.stores._postgres.schema import SCHEMA_VERSION

FLOWS = str(Path(__file__).with_name("cli_flows.py"))
BIN = Path(sys.executable).parent
PLAIN: dict[str, str | None] = {"TTY_INTERACTIVE": None, "TTY_COMPATIBLE": None, "FORCE_COLOR": None,
                                "NO_COLOR": None, "DURABLE_STORE": None}
SECRET = "s3cret-" + uuid.uuid4().hex[:8]


@pytest.fixture
def url(pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A URL of the session's server as a role of this test's own, with a password, on a schema of its own
    (not created yet); the role and schema are dropped afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    role = f"r_{uuid.uuid4().hex[:10]}"
    schema = f"c_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        db = conn.info.dbname
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(SECRET)))
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(db), sql.Identifier(role)))
    parts = urlsplit(pg_url)
    host = parts.netloc.rpartition("@")[2]
    query = "&".join(q for q in [parts.query, f"schema={schema}"] if q)
    yield urlunsplit((parts.scheme, f"{role}:{quote(SECRET)}@{host}", parts.path, query, ""))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(sql.Identifier(db), sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def invoke(*args: str, code: int = 0, env: dict[str, str | None] | None = None) -> Result:
    """``durable ARGS`` in this process; its exit code checked, and its output free of the password."""
    result = CliRunner().invoke(cli, list(args), env={**PLAIN, **(env or {})})
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert SECRET not in result.output and SECRET not in result.stderr
    return result


def _durable(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "durable"), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _shown(url: str) -> str:
    return url.replace(quote(SECRET), "***")


def _status(url: str, iid: str) -> str:
    status: str = json.loads(invoke("show", iid, "--json", "-s", url).stdout)["status"]
    return status


def _until(url: str, iid: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _status(url, iid) != status:
        assert time.monotonic() < deadline, f"{iid} never became {status}"
        time.sleep(0.05)


def test_migrate_creates_then_finds_nothing_to_do_and_reads_create_nothing(url: str) -> None:
    missing = invoke("list", "-s", url, code=1)
    assert "no durable store at" in missing.stderr and "missing" in missing.stderr
    assert _shown(url).split("?")[0] in missing.stderr
    with pytest.raises(StoreError, match=r"no durable store here \(schema .* missing.*nothing was created"):
        Client(url)
    created = invoke("migrate", "-s", url)
    assert f"schema version none (created) -> {SCHEMA_VERSION}" in created.stdout and "***" in created.stdout
    again = invoke("migrate", "--store", url)
    assert f"schema version {SCHEMA_VERSION}, up to date; nothing to migrate" in again.stdout
    assert invoke("list", "-s", url).stdout.strip() == "no instances"
    with Client(url) as client:  # there now
        assert client.list().instances == []


def test_migrate_on_lmdb_has_nothing_to_do(tmp_path: Path) -> None:
    invoke("run", f"{FLOWS}:checkout", "book", "-q", "-s", str(tmp_path / "x.lmdb"))
    out = invoke("migrate", "-s", str(tmp_path / "x.lmdb")).stdout
    assert "nothing to migrate" in out and "upgrade on open" in out


def test_run_list_show_events_with_a_url(url: str) -> None:
    ran = invoke("run", f"{FLOWS}:checkout", "book", "2", "--id", "o-1", "-q", "-s", url)
    assert json.loads(ran.stdout)["payment"] == "paid 5"
    listed = invoke("list", "-s", url)
    assert "o-1" in listed.stdout and "checkout" in listed.stdout and "completed" in listed.stdout
    via_env = invoke("list", "--json", env={"DURABLE_STORE": url})
    assert [i["id"] for i in json.loads(via_env.stdout)] == ["o-1"]
    shown = invoke("show", "o-1", "-s", url)
    assert "completed" in shown.stdout and "reserve" in shown.stdout
    events = invoke("events", "o-", "-s", url)  # a prefix of the id
    names = [line.split()[2] for line in events.stdout.splitlines()]
    assert names[0] == "workflow.started" and names[-1] == "workflow.completed"
    nowhere = invoke("show", "zzz", "-s", url, code=1)
    assert "no instance 'zzz' in" in nowhere.stderr and "***" in nowhere.stderr


def test_a_worker_runs_what_is_queued_and_takes_signals_and_cancels(url: str, tmp_path: Path) -> None:
    invoke("migrate", "-s", url)
    worker = _durable("worker", FLOWS, "-s", url, "--poll", "30", cwd=tmp_path)
    try:
        approval = invoke("run", f"{FLOWS}:needs_approval", "desk", "--detach", "-s", url).stdout.strip()
        napping = invoke("run", f"{FLOWS}:napper", "3600", "--detach", "-s", url).stdout.strip()
        _until(url, napping, "running")  # (a new instance wakes the worker; its poll is 30 s)
        _until(url, approval, "running")
        sent = invoke("signal", approval[:12], "approve", "--data", '"yes"', "-s", url)
        assert f"sent approve to {approval}" in sent.stdout
        _until(url, approval, "completed", timeout=10)  # the signal woke it
        assert json.loads(invoke("show", approval, "--json", "-s", url).stdout)["output"] == {
            "item": "desk", "approval": "yes"}
        assert f"cancelled {napping}" in invoke("cancel", napping, "-s", url).stdout
        assert _status(url, napping) == "cancelled"
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, err
    assert SECRET not in out + err and f"store {_shown(url)}" in out
    assert f"completed {approval} (needs_approval)" in out


def test_resume_continues_an_instance_no_process_runs(url: str) -> None:
    iid = invoke("run", f"{FLOWS}:slow", "0.01", "2", "--detach", "-s", url).stdout.strip()
    out = invoke("resume", FLOWS, "-s", url).stdout
    assert f"resumed {iid}" in out and f"{iid} (slow): completed" in out
    assert invoke("resume", FLOWS, "-s", url).stdout.strip() == "nothing to resume"


def test_errors_show_the_url_without_its_password() -> None:
    bad = f"postgresql://bob:{SECRET}@127.0.0.1:1/db?connect_timeout=2"
    for args in (["list"], ["migrate"], ["show", "x"], ["cancel", "x"], ["signal", "x", "go"]):
        result = invoke(*args, "-s", bad, code=1)
        assert "postgresql://bob:***@127.0.0.1:1/db" in result.stderr and "cannot connect" in result.stderr
