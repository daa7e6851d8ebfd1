"""Stored events: the record format of an instance's event log, and the terminal event of a finished instance.

Engines append every event of the instances they run to the store (``Store.append_event``),
so any process can read an instance's events (``Client.events``), with the
id the store gives each (a store-wide sequence number, increasing) to go on
after. An event is stored as ``(name, instance_id, workflow_name, fields)``:
the fields that are set, in the record codec of :mod:`durable._model.serde`.
The event that ends an instance's log (``workflow.completed``, ``failed``
or ``cancelled``) is written by the store in the same transaction as the
instance's final status, so the log of a finished instance always ends with it.
"""

from __future__ import annotations

from typing import Any

from .records import InstanceStatus, WorkflowInstance
from .serde import decode_value, encode_value

__all__ = ["MAX_EVENT_ID", "StoredEvent", "check_event_range", "decode_event", "encode_detail", "encode_event",
           "terminal_event"]

MAX_EVENT_ID = (1 << 63) - 1
"""Event ids are below this (8-byte keys)."""


def check_event_range(after: object, limit: object) -> None:
    """``ValueError`` unless ``after`` is an event id (an int in ``[0, MAX_EVENT_ID]``) and ``limit`` an int >= 0."""
    if type(after) is not int or not 0 <= after <= MAX_EVENT_ID:
        raise ValueError(f"after must be an event id (an int from 0 to {MAX_EVENT_ID}), got {after!r}")
    if type(limit) is not int or limit < 0:
        raise ValueError(f"limit must be an int >= 0, got {limit!r}")

StoredEvent = tuple[str, str, str, dict[str, Any]]
"""``(name, instance_id, workflow_name, fields)``: an event as stored."""

TERMINAL_NAMES = frozenset({"workflow.completed", "workflow.failed", "workflow.cancelled"})


def encode_event(name: str, instance_id: str, workflow_name: str, fields: dict[str, Any]) -> bytes:
    """The stored bytes of one event; a field that cannot be stored (an output that does not pickle) is dropped."""
    try:
        return encode_value((name, instance_id, workflow_name, fields), f"event {name}", instance_id=instance_id)
    except Exception:
        kept = {k: v for k, v in fields.items() if k not in ("input", "output")}
        return encode_value((name, instance_id, workflow_name, kept), f"event {name}", instance_id=instance_id)


def encode_detail(name: str, instance_id: str, workflow_name: str, fields: dict[str, Any]) -> bytes:
    """:func:`encode_event` of the fields that are set (``None`` ones left out)."""
    return encode_event(name, instance_id, workflow_name, {k: v for k, v in fields.items() if v is not None})


def decode_event(data: bytes, where: str = "event", path: str | None = None) -> StoredEvent:
    """An event from :func:`encode_event`'s bytes."""
    value = decode_value(data, where, path)
    name, instance_id, workflow_name, fields = value
    return str(name), str(instance_id), str(workflow_name), dict(fields)


def terminal_event(inst: WorkflowInstance) -> bytes | None:
    """The stored event that ends a finished instance's log (``None`` while it runs)."""
    status = InstanceStatus(inst.status)
    if not status.finished:
        return None
    if status == InstanceStatus.COMPLETED:
        return encode_event("workflow.completed", inst.id, inst.workflow_name, {"output": inst.output})
    name = "workflow.cancelled" if status == InstanceStatus.CANCELLED else "workflow.failed"
    return encode_event(name, inst.id, inst.workflow_name, {"error": inst.error, "status": status.value})
