"""Join an instance record with its step checkpoints (shared by every store)."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .._records import StepResult, WorkflowInstance

__all__ = ["join_steps"]


def join_steps(instance: WorkflowInstance, steps: Iterable[StepResult]) -> WorkflowInstance:
    """``instance`` with ``step_results`` keyed by step name; the latest execution of a name wins."""
    ordered = sorted(steps, key=lambda s: (s.started_at is None, s.started_at or 0, s.key))
    current = instance.current_step
    if current is None and ordered and not instance.finished:
        current = ordered[-1].step_name  # not written per step: derived from the latest checkpoint
    return attrs.evolve(instance, step_results={s.step_name: s for s in ordered}, current_step=current)
