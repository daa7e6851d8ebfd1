"""The examples run as a user runs them, and both front-ends agree."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from durable import ChoiceState, ParallelState, TaskState

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # tests/project/ -> tests/ -> root


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["order_processing", "onboarding"])
def test_example_script_runs_end_to_end(name: str, tmp_path: Path) -> None:
    """`python examples/NAME.py` exits 0, printing events and a completed result for both versions."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--store", str(tmp_path / "s.lmdb")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(": completed ->") == 2
    assert "workflow.step.completed" in out.stdout and "workflow.completed" in out.stdout


@pytest.mark.parametrize(("name", "value"), [
    ("order_processing", {"order_id": "A"}),
    ("order_processing", {"order_id": "B", "out_of_stock": True}),
    ("onboarding", {"email": "e@x", "plan": "enterprise"}),
    ("onboarding", {"email": "f@x", "plan": "free"}),
])
async def test_builder_and_decorator_versions_agree(name: str, value: Any, tmp_path: Path) -> None:
    """Both versions of each example give the same output."""
    module = _load(name)
    builder_out, decorator_out = await module.main(tmp_path / "s.lmdb", value)
    assert builder_out == decorator_out


def _shape(graph: Any) -> list[str]:
    return [s.type for s in graph.walk() if isinstance(s, (TaskState, ChoiceState, ParallelState))]


def test_builder_and_decorator_diagrams_have_the_same_shape() -> None:
    """The decorator version compiles to the same kinds of states as the builder version."""
    orders = _load("order_processing")
    assert _shape(orders.order_workflow) == ["task", "choice", "parallel", "task", "task", "task"]
    assert sorted(_shape(orders.process_order.graph)) == sorted(_shape(orders.order_workflow))
    onboarding = _load("onboarding")
    assert sorted(_shape(onboarding.onboard.graph)) == sorted(_shape(onboarding.onboarding_workflow))
    for graph in (orders.process_order.graph, onboarding.onboard.graph):
        assert graph.to_mermaid().startswith("flowchart TD")


def test_crash_and_resume_example_survives_sigkill(tmp_path: Path) -> None:
    """A child killed with SIGKILL mid-step resumes in a new process; finished steps are not re-run."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "crash_and_resume.py"), "--store", str(tmp_path / "c.lmdb")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "finished steps were not run again" in out.stdout
    assert "fetch    ran 1 time(s)" in out.stdout and "charge   ran 2 time(s)" in out.stdout


def test_saga_example_compensates_and_survives_a_kill_mid_compensation(tmp_path: Path) -> None:
    """The booking saga is killed while undoing the hotel; the resumed run undoes the rest, nothing twice."""
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "saga.py"), "--store", str(tmp_path / "saga.lmdb")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "'status': 'rolled back'" in out.stdout
    assert "'undone': ['cancelled HT-Lisbon', 'cancelled FL-Lisbon']" in out.stdout
    assert "cancel_flight ran 1 time(s)" in out.stdout and "cancel_hotel  ran 2 time(s)" in out.stdout
