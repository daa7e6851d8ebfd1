"""An instance's history, derived from what the store holds.

Events are delivered in the process that runs an instance and are not
stored, so another process (``durable events``) rebuilds them from the
instance record and its step checkpoints: ``workflow.started``, per step
``workflow.step.started`` / ``retry`` / ``completed`` / ``failed`` with their
times, attempts and checkpoint key (``step_key``), and the final
``workflow.completed`` / ``failed`` / ``cancelled``. A checkpoint holds a
step's latest state only: a step that was retried shows its attempt count,
and the retry it is waiting out now, not each earlier failure. A signal wait
or a durable sleep that has not ended yet has only its ``started`` event: its
record's ``next_attempt_at`` is the wait's deadline or wake-up time, not a
retry. ``workflow.progress`` is not derived.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from .._model.clock import EPOCH
from .._engine.events import Event, EventName
from .._model.records import InstanceStatus, StepResult, StepStatus, WorkflowInstance
from ._render import WAIT_TYPES, clip, fmt_time, ordered_steps, step_where, to_json

__all__ = ["HistoryEvent", "derive", "format_event"]



@attrs.frozen
class HistoryEvent:
    """One derived event, with when it happened (``None`` if unknown) and an identity for de-duplication."""

    at: datetime | None
    event: Event
    ident: tuple[str, ...]
    key: str | None = None  # the step's checkpoint key
    where: str = ""  # the step's item or branch in maps and parallels: "item 3", "branch 0"

    def to_dict(self) -> dict[str, Any]:
        """The event's fields plus ``at`` (a step's event has its ``step_key``)."""
        return {"at": self.at, **self.event.to_dict()}


def derive(inst: WorkflowInstance, steps: Mapping[str, StepResult]) -> list[HistoryEvent]:
    """The events that the stored ``inst`` and its checkpoints ``steps`` (by key) account for, in order."""
    base: dict[str, Any] = {"instance_id": inst.id, "workflow_name": inst.workflow_name}
    out: list[HistoryEvent] = []
    kinds = {s.key: s.step_type for s in steps.values() if s.step_type in ("map", "parallel")}

    def add(at: datetime | None, ident: tuple[str, ...], name: EventName, **fields: Any) -> None:
        key = ident[1] if len(ident) > 1 else None
        out.append(HistoryEvent(at, Event(name=name, **base, **fields), ident, key, step_where(key, kinds)))

    if inst.started_at is not None:
        add(inst.started_at, ("started",), "workflow.started", input=inst.input)
    for step in ordered_steps(steps):
        common = {"step_name": step.step_name, "step_type": step.step_type, "step_key": step.key}
        add(step.started_at, ("step.started", step.key), "workflow.step.started", current_step=step.step_name,
            **common)
        if step.status == StepStatus.RUNNING:
            # A retry waiting out its backoff; a wait's next_attempt_at is its own deadline, not a retry.
            if step.next_attempt_at is not None and step.step_type not in WAIT_TYPES:
                add(step.next_attempt_at, ("step.retry", step.key, str(step.attempts)), "workflow.step.retry",
                    step_name=step.step_name, attempt=step.attempts, error=step.error, step_key=step.key)
        elif step.status == StepStatus.COMPLETED:
            add(step.completed_at, ("step.completed", step.key), "workflow.step.completed", output=step.output,
                attempts=step.attempts, **common)
        elif step.status == StepStatus.FAILED:
            add(step.completed_at, ("step.failed", step.key), "workflow.step.failed", error=step.error,
                attempts=step.attempts, **common)
    status = InstanceStatus(inst.status)
    if status == InstanceStatus.COMPLETED:
        add(inst.completed_at, ("end",), "workflow.completed", output=inst.output)
    elif status in (InstanceStatus.FAILED, InstanceStatus.TIMED_OUT):
        add(inst.completed_at, ("end",), "workflow.failed", error=inst.error)
    elif status == InstanceStatus.CANCELLED:
        add(inst.completed_at, ("end",), "workflow.cancelled", error=inst.error)
    # Sorted by time, stably; an event without a time keeps its place after the one before it.
    filled: list[datetime | None] = []
    for item in out:
        filled.append(item.at if item.at is not None else (filled[-1] if filled else None))
    order = sorted(range(len(out)), key=lambda i: (filled[i] is not None, filled[i] or EPOCH, i))
    return [out[i] for i in order]


def format_event(item: HistoryEvent, full: bool = False) -> str:
    """One line: local time, event name, the step's key (and item or branch), then the event's own fields.

    A field's value (an input, an output, an error) is cut to
    :data:`~durable.cli._render.VALUE_LIMIT` characters unless ``full``.
    """
    fields = item.event.to_dict()
    for key in ("name", "instance_id", "workflow_name", "current_step", "step_key"):
        fields.pop(key, None)
    parts = [fmt_time(item.at), f"{item.event.name:<24}"]
    step = fields.pop("step_name", None)
    if step is not None:
        parts.append((item.key or str(step)) + (f" [{item.where}]" if item.where else ""))
    fields.pop("step_type", None)
    for key, value in fields.items():
        text = value if isinstance(value, str) and key == "error" else to_json(value)
        parts.append(f"{key}={clip(text, full)}")
    return "  ".join(parts)
