"""``durable run``: an --id started with another input, and arguments checked against the workflow's signature."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from durable.cli._app import cli

FLOWS = str(Path(__file__).with_name("cli_flows.py"))
PLAIN: dict[str, str | None] = {"TTY_INTERACTIVE": None, "TTY_COMPATIBLE": None, "FORCE_COLOR": None,
                                "NO_COLOR": None}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A store path in a fresh directory (the cwd); sys.path as it was afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("DURABLE_STORE", raising=False)
    yield str(tmp_path / "t.lmdb")


def invoke(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(cli, list(args), env=PLAIN)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def error_line(result: Result) -> str:
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("durable: "), result.stderr
    return lines[-1]


def test_run_with_an_existing_id_and_another_input_exits_1(store: str) -> None:
    """`durable run slow 999 --id slow-1` after `slow 0.01`: an error naming the id, not the old result."""
    first = invoke("run", f"{FLOWS}:slow", "0.01", "1", "--id", "slow-1", "-s", store, "-q")
    assert json.loads(first.stdout) == 1
    again = invoke("run", f"{FLOWS}:slow", "0.01", "1", "--id", "slow-1", "-s", store, "-q")
    assert again.stdout == first.stdout  # the same input: the stored result
    conflict = invoke("run", f"{FLOWS}:slow", "999", "--id", "slow-1", "-s", store, "-q", code=1)
    line = error_line(conflict)
    assert "'slow-1'" in line and "different input" in line and "'slow'" in line
    assert conflict.stdout == ""


def test_run_with_arguments_of_the_wrong_type_exits_2_naming_the_parameter(store: str) -> None:
    """checkout(item: str, qty: int): `checkout x y` is a usage error before anything is stored."""
    result = invoke("run", f"{FLOWS}:checkout", "x", "y", "-s", store, code=2)
    line = error_line(result)
    assert "workflow 'checkout'" in line and "argument 'qty' must be int, got 'y' (str)" in line
    result = invoke("run", f"{FLOWS}:checkout", "--input", '{"item": "x", "qty": 1, "gift": true}', "-s", store,
                    code=2)
    assert "unexpected argument 'gift'" in error_line(result)
    assert not Path(store).exists()


def test_run_converts_arguments_with_pydantic(store: str) -> None:
    pytest.importorskip("pydantic")
    result = invoke("run", f"{FLOWS}:checkout", "book", '"2"', "-s", store, "-q")
    assert json.loads(result.stdout)["reserved"] == {"item": "book", "qty": 2}
