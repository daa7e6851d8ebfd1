"""Kill-anywhere torture: 30 SIGKILLs at random moments, then every invariant of tests/torture.py holds."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torture  # noqa: E402


def test_thirty_random_sigkills_break_no_invariant(tmp_path: Path) -> None:
    """Reference outputs, at-most-kills re-executions, no re-run after a checkpoint, a store that always opens."""
    res = torture.run_torture(kills=30, seed=20261124, store_dir=tmp_path)
    print(res.summary())
    assert res.kills == 30
    assert res.steps_executed > 0 and res.workflows >= 12
    assert not res.violations, "\n".join([res.summary(), *res.violations])
