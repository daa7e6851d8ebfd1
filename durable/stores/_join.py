"""Join an instance record with its step checkpoints (shared by every store)."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .._records import StepResult, WorkflowInstance

__all__ = ["join_steps"]


def join_steps(instance: WorkflowInstance, steps: Iterable[StepResult]) -> WorkflowInstance:
    """``instance`` with ``step_results`` keyed by step name; the latest execution of a name wins."""
    ordered = sorted(steps, key=lambda s: (s.started_at is None, s.started_at or 0, s.key))
    return attrs.evolve(instance, step_results={s.step_name: s for s in ordered})
