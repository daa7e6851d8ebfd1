"""Join an instance record with its step checkpoints (shared by every store)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._model.records import StepResult, WorkflowInstance, replace_instance

__all__ = ["join_steps"]


def join_steps(instance: WorkflowInstance, steps: Iterable[StepResult]) -> WorkflowInstance:
    """``instance`` with ``step_results`` keyed by step name; the latest execution of a name wins."""
    ordered = sorted(steps, key=_started)
    current = instance.current_step
    if current is None and ordered and not instance.finished:
        current = ordered[-1].step_name  # not written per step: derived from the latest checkpoint
    return replace_instance(instance, step_results={s.step_name: s for s in ordered}, current_step=current)


def _started(step: StepResult) -> tuple[bool, Any, str]:
    """The order of a step's executions: by start time (none last), then by key."""
    return step.started_at is None, step.started_at or 0, step.key
