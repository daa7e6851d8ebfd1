"""Rendering instances and steps: rich tables for people, JSON for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._model.records import StepResult, WorkflowInstance
from ..stores import Owner
from ..stores._lease import record_alive

__all__ = [
    "STATUS_STYLE",
    "VALUE_LIMIT",
    "WAIT_TYPES",
    "clip",
    "console",
    "error_detail",
    "fmt_duration",
    "fmt_time",
    "instance_dict",
    "ordered_steps",
    "owner_text",
    "print_instance",
    "print_instances",
    "step_dict",
    "step_label",
    "step_where",
    "to_json",
]

STATUS_STYLE = {
    "pending": "dim",
    "running": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "magenta",
    "timed_out": "red",
    "skipped": "dim",
    "retrying": "yellow",
    "waiting": "cyan",
    "interrupted": "magenta",
}

#: Step types whose running record's ``next_attempt_at`` is not a retry's due time but the wait's own
#: time: a signal wait's deadline (``None``: no time-out), a durable sleep's wake-up time.
WAIT_TYPES = frozenset({"signal", "sleep"})


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr); not a terminal: no colours, and wide enough never to wrap an id."""
    stream = sys.stderr if stderr else sys.stdout
    is_tty = getattr(stream, "isatty", lambda: False)()
    return Console(file=stream, highlight=False, width=None if is_tty else 200, soft_wrap=not is_tty)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


def to_json(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON; dates as ISO 8601, anything else JSON cannot hold as its ``str()``."""
    return json.dumps(value, default=_default, indent=indent, ensure_ascii=False)


#: characters of a value (an input, an output, an error) that ``show`` and ``events`` print without ``--full``
VALUE_LIMIT = 200


def clip(text: str, full: bool = False, limit: int = VALUE_LIMIT) -> str:
    """``text``, or (unless ``full``) its first ``limit`` characters, an ellipsis and its whole length."""
    if full or len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters; --full shows all)"


def fmt_time(value: datetime | None) -> str:
    """A stored (UTC) time in local time, to the millisecond; ``-`` for none."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fmt_duration(start: datetime | None, end: datetime | None) -> str:
    """``1.25 s``, ``3 min 4 s``, ``2 h 5 min``; ``-`` without both ends."""
    if start is None or end is None:
        return "-"
    seconds = max(0.0, (end - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()


def step_state(step: StepResult, finished: bool = False) -> tuple[str, datetime | None]:
    """A checkpoint's status as ``show`` reports it, and the time it waits for (if any).

    A running step of a ``finished`` instance (cancelled, failed, timed out) is
    ``interrupted``: it will never finish. Otherwise a running step is
    ``waiting`` when it is a signal wait or a durable sleep (until its deadline
    or wake-up time, if it has one), ``retrying`` when it waits out a retry's
    backoff (until the next attempt); else the stored status.
    """
    status = str(step.status)
    if status == "running":
        if finished:
            return "interrupted", None
        if step.step_type in WAIT_TYPES:
            return "waiting", step.next_attempt_at
        if step.next_attempt_at is not None:
            return "retrying", step.next_attempt_at
    return status, None


def step_dict(step: StepResult, finished: bool = False) -> dict[str, Any]:
    """One checkpoint (of a ``finished`` instance or not) as a JSON-ready dict (``state``: as ``show`` says)."""
    return {
        "key": step.key,
        "step": step.step_name,
        "type": step.step_type,
        "status": str(step.status),
        "state": step_state(step, finished)[0],
        "attempts": step.attempts,
        "started_at": step.started_at,
        "completed_at": step.completed_at,
        "duration": _seconds(step.started_at, step.completed_at),
        "input": step.input,
        "output": step.output,
        "error": step.error,
        "next_attempt_at": step.next_attempt_at,
        "function": step.function,
    }


def run_by_dict(owner: Owner | None) -> dict[str, Any] | None:
    """Who runs an unfinished instance, for JSON: its live lease holder's host and pid, else ``None``."""
    if owner is None or not record_alive(owner):
        return None
    return {"host": owner.host, "pid": owner.pid}


def instance_dict(inst: WorkflowInstance, steps: Mapping[str, StepResult] | None = None, *,
                  owners: Mapping[str, Owner | None] | None = None,
                  waiting: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An instance as a JSON-ready dict; with ``steps`` (by checkpoint key), its checkpoints too.

    With ``owners`` (lease holders by instance id), an unfinished instance has
    ``run_by``: the host and pid of the live process that runs it, or ``None``.
    """
    out: dict[str, Any] = {
        "id": inst.id,
        "workflow": inst.workflow_name,
        "status": str(inst.status),
        "current_step": inst.current_step,
        "created_at": inst.created_at,
        "started_at": inst.started_at,
        "completed_at": inst.completed_at,
        "deadline": inst.deadline,
        "duration": _seconds(inst.started_at, inst.completed_at),
        "input": inst.input,
        "output": inst.output,
        "error": inst.error,
        "error_type": inst.error_type,
        "queue": inst.queue,
    }
    if owners is not None and not inst.finished:
        out["run_by"] = run_by_dict(owners.get(inst.id))
    if waiting is not None and inst.id in waiting:
        out["waiting"] = waiting[inst.id]
    if steps is not None:
        out["steps"] = [step_dict(s, inst.finished) for s in ordered_steps(steps)]
    return out


def step_where(key: str | None, kinds: Mapping[str, str] | None = None) -> str:
    """Where a step sits inside maps and parallels, from its checkpoint key: ``item 3``, ``branch notify``.

    A key alternates scope and label: ``map#0/3/process_page#0`` is item 3
    of ``map#0``; nested levels are joined outermost first
    (``branch 1, item 3``); a top-level step gives ``""``. ``kinds`` maps a
    map's or parallel's own key to its step type (``map``, ``parallel``);
    without it, a digit label reads as an item unless the scope is a
    decorator ``parallel()``.
    """
    if not key or "/" not in key:
        return ""
    parts = key.split("/")
    where: list[str] = []
    for i in range(0, len(parts) - 1, 2):
        scope, label = "/".join(parts[: i + 1]), parts[i + 1]
        kind = (kinds or {}).get(scope)
        if kind is None:
            kind = "map" if label.isdigit() and parts[i].rsplit("#", 1)[0] != "parallel" else "parallel"
        where.append(f"item {label}" if kind == "map" else f"branch {label}")
    return ", ".join(where)


def step_label(name: str, key: str | None, kinds: Mapping[str, str] | None = None) -> str:
    """A step's name, with where it sits in maps and parallels: ``process_page [item 3]``."""
    where = step_where(key, kinds)
    return f"{name} [{where}]" if where else name


def error_detail(inst: WorkflowInstance) -> str | None:
    """The instance's error as shown beside its status, ``None`` if it has none or only repeats the status.

    A cancel records the error ``cancelled (workflow 'W', instance 'I')``:
    beside status ``cancelled``, of that very instance, it says nothing more.
    """
    error = inst.error
    if not error:
        return None
    suffix = f" (workflow {inst.workflow_name!r}, instance {inst.id!r})"
    message = error[: -len(suffix)] if error.endswith(suffix) else error
    return None if message.strip() == str(inst.status) else error


def ordered_steps(steps: Mapping[str, StepResult]) -> list[StepResult]:
    """Checkpoints in the order they started."""
    return sorted(steps.values(), key=lambda s: (s.started_at is None, s.started_at or 0, s.key))


def _status(value: object) -> Text:
    text = str(value)
    return Text(text, style=STATUS_STYLE.get(text, ""))


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else to_json(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_instances(out: Console, instances: Iterable[WorkflowInstance],
                    owners: Mapping[str, Owner | None] | None = None, waiting: Mapping[str, str] | None = None) -> None:
    """A table of instances: id, workflow, status, created, duration, current step, error.

    With ``owners`` (lease holders by instance id) and an unfinished instance
    among them, a RUN BY column says which process runs each unfinished one.
    """
    instances = list(instances)
    run_by = owners is not None and any(not i.finished for i in instances)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("WORKFLOW", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    table.add_column("DURATION", no_wrap=True, justify="right")
    if run_by:
        table.add_column("RUN BY", no_wrap=True)
    table.add_column("STEP")
    table.add_column("ERROR")
    for inst in instances:
        cells: list[str | Text] = [
            inst.id, inst.workflow_name, _status(inst.status), fmt_time(inst.created_at),
            fmt_duration(inst.started_at, inst.completed_at),
        ]
        if run_by:
            assert owners is not None
            note = (waiting or {}).get(inst.id)
            cells.append("" if inst.finished else note or owner_text(owners.get(inst.id), short=True))
        cells += ["" if inst.status == "completed" else inst.current_step or "", _short(error_detail(inst) or "")]
        table.add_row(*cells)
    out.print(table)


def owner_text(owner: Owner | None, *, short: bool = False) -> str:
    """Who runs an unfinished instance, for people: its live lease holder, or no live process."""
    if owner is not None and record_alive(owner):
        return f"process {owner.pid} on {owner.host}"
    return "no live process" if short else "no live process: a worker or `durable resume MODULE` continues it"


def print_instance(out: Console, inst: WorkflowInstance, steps: Mapping[str, StepResult],
                   owner: Owner | None = None, *, full: bool = False, waiting: str | None = None) -> None:
    """An instance's fields (and, unfinished, who runs it), then a table of its checkpoints.

    Its input, output and errors are cut to :data:`VALUE_LIMIT` characters unless ``full``.
    """
    rows: list[tuple[str, str | Text]] = [
        ("id", inst.id),
        ("workflow", inst.workflow_name),
        ("status", _status(inst.status)),
        ("created", fmt_time(inst.created_at)),
        ("started", fmt_time(inst.started_at)),
        ("finished", fmt_time(inst.completed_at)),
        ("duration", fmt_duration(inst.started_at, inst.completed_at)),
    ]
    if inst.deadline is not None:
        rows.append(("deadline", fmt_time(inst.deadline)))
    if inst.current_step and inst.status != "completed":
        rows.append(("current step", inst.current_step))
    if inst.queue is not None:
        rows.append(("queue", inst.queue))
    if not inst.finished:
        rows.append(("run by", waiting or owner_text(owner)))
    rows.append(("input", clip(to_json(inst.input), full)))
    if inst.status == "completed":
        rows.append(("output", clip(to_json(inst.output), full)))
    error = error_detail(inst)
    if error:
        rows.append(("error", clip(error, full)))
    # One line per field, never wrapped by rich: a long value (with --full) stays whole on its line.
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        line = Text(name.ljust(width + 2), style="bold")
        line.append(value if isinstance(value, Text) else Text(value))
        out.print(line, soft_wrap=True)
    out.print()
    if not steps:
        out.print("no step checkpoints" if inst.finished else "no steps checkpointed yet")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("STEP", no_wrap=True)
    table.add_column("TYPE", no_wrap=True)
    table.add_column("STATUS", no_wrap=True)
    table.add_column("ATTEMPTS", justify="right", no_wrap=True)
    table.add_column("STARTED", no_wrap=True)
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("ERROR")
    for step in ordered_steps(steps):
        state, until = step_state(step, inst.finished)
        status = _status(state)
        if state == "waiting" and until is not None:
            status.append(f" until {fmt_time(until)}")
        table.add_row(
            step.key, step.step_type, status, str(step.attempts), fmt_time(step.started_at),
            fmt_duration(step.started_at, step.completed_at), clip(step.error or "", full),
        )
    out.print(table)
