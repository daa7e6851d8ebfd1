"""Records as JSON for the HTTP API: instances, steps and events, with values made JSON-safe and bounded.

Stored values (inputs, outputs, step results) are whatever the workflow code
returned: pickled Python. The API never sends a pickle: each value goes out
as JSON where it is JSON-like (dicts, lists, strings, numbers, attrs classes,
dataclasses, pydantic models, dates), else as its ``repr()``; long strings,
long lists and deep nesting are cut (a string ends with ``…``), so one huge
step output cannot blow up a page or a stream.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from datetime import date, datetime
from enum import Enum
from typing import Any

import attrs

from .._engine.events import Event
from .._model.records import StepResult, WorkflowInstance

__all__ = ["event_json", "instance_json", "iso", "jsonable", "step_json"]

#: characters of a string kept in a value sent to the browser
STRING_LIMIT = 2_000
#: items of a list or dict kept
ITEMS_LIMIT = 100
#: levels of nesting kept
DEPTH_LIMIT = 12


def iso(when: datetime | None) -> str | None:
    """A stored time as ISO 8601 (UTC, ``Z``), or ``None``."""
    if when is None:
        return None
    return when.isoformat().replace("+00:00", "Z")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


def jsonable(value: Any, *, limit: int = STRING_LIMIT, depth: int = 0) -> Any:
    """``value`` as JSON-safe data (bounded: see the module's doc)."""
    if value is None or isinstance(value, (bool, int)) and not isinstance(value, Enum):
        return value if not isinstance(value, int) or abs(value) < 2**53 or isinstance(value, bool) else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _cut(value, limit)
    if isinstance(value, Enum):
        return jsonable(value.value, limit=limit, depth=depth)
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if depth >= DEPTH_LIMIT:
        return _cut(repr(value), 200)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= ITEMS_LIMIT:
                out["…"] = f"{len(value) - ITEMS_LIMIT:,} more"
                break
            out[k if isinstance(k, str) else str(k)] = jsonable(v, limit=limit, depth=depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        kept = [jsonable(v, limit=limit, depth=depth + 1) for v in items[:ITEMS_LIMIT]]
        if len(items) > ITEMS_LIMIT:
            kept.append(f"… {len(items) - ITEMS_LIMIT:,} more")
        return kept
    if isinstance(value, (bytes, bytearray)):
        return _cut(repr(bytes(value)), limit)
    if attrs.has(type(value)):
        return jsonable(attrs.asdict(value, recurse=False), limit=limit, depth=depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, limit=limit,
                        depth=depth + 1)
    dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(dump):
        try:
            return jsonable(dump(mode="json"), limit=limit, depth=depth + 1)
        except Exception:
            pass
    if isinstance(value, BaseException):
        return _cut(f"{type(value).__name__}: {value}", limit)
    return _cut(repr(value), limit)


def _text(status: Any) -> str:
    return str(getattr(status, "value", status))


def _last_step(inst: WorkflowInstance) -> str | None:
    started = [s for s in inst.step_results.values() if s.started_at is not None]
    return max(started, key=lambda s: s.started_at or 0).step_name if started else None


def _progress(inst: WorkflowInstance, total: int | None) -> int | None:
    if inst.status == "completed":
        return 100
    if not total or not inst.step_results:
        return None
    done = sum(1 for s in inst.step_results.values() if s.status == "completed")
    return min(99, done * 100 // total)


def instance_json(inst: WorkflowInstance, *, detail: bool = False, total_steps: int | None = None) -> dict[str, Any]:
    """An instance's summary (with ``detail``: its input, output and step count too)."""
    out: dict[str, Any] = {
        "id": inst.id,
        "workflow": inst.workflow_name,
        "status": _text(inst.status),
        "queue": inst.queue,
        "priority": inst.priority,
        "parent_id": inst.parent_id,
        "created_at": iso(inst.created_at),
        "started_at": iso(inst.started_at),
        "completed_at": iso(inst.completed_at),
        "current_step": inst.current_step or _last_step(inst),
        "progress": _progress(inst, total_steps),
        "error": jsonable(inst.error),
        "error_type": inst.error_type,
    }
    if detail:
        out["input"] = jsonable(inst.input)
        out["output"] = jsonable(inst.output)
        out["total_steps"] = total_steps or None
    return out


def step_json(step: StepResult) -> dict[str, Any]:
    """A step's checkpoint."""
    duration = None
    if step.started_at is not None and step.completed_at is not None:
        duration = round((step.completed_at - step.started_at).total_seconds() * 1000, 3)
    return {
        "key": step.key,
        "name": step.step_name,
        "state": step.step_name,
        "type": step.step_type,
        "status": _text(step.status),
        "attempts": step.attempts,
        "started_at": iso(step.started_at),
        "completed_at": iso(step.completed_at),
        "duration_ms": duration,
        "error": jsonable(step.error),
        "output": jsonable(step.output),
        "input": jsonable(step.input),
    }


def ordered(steps: Mapping[str, StepResult]) -> list[StepResult]:
    """Checkpoints in the order they started."""
    return sorted(steps.values(), key=lambda s: (s.started_at is None, s.started_at or 0, s.key))


def event_json(event: Event) -> dict[str, Any]:
    """An event's fields that are set, JSON-safe."""
    return {k: jsonable(v) for k, v in event.to_dict().items()}
