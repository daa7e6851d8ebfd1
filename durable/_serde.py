"""Encoding of stored records: a versioned envelope around cloudpickle.

A record is stored as its fields (a plain dict, so adding a field later does
not break old stores) pickled with cloudpickle, behind a one-byte envelope
version. Encoding happens on the caller's side, before anything reaches the
store, so an unpicklable value raises :class:`SerializationError` and leaves
the store untouched. Decoding failures raise :class:`StoreError`.
"""

from __future__ import annotations

import pickle
from typing import Any, TypeVar

import attrs
import cloudpickle  # type: ignore[import-untyped]

from ._records import InstanceStatus, StepResult, StepStatus, WorkflowInstance
from .errors import SerializationError, StoreError

__all__ = ["decode_instance", "decode_step", "encode_instance", "encode_step"]

_ENVELOPE = b"\x01"
_R = TypeVar("_R", WorkflowInstance, StepResult)


def _dumps(fields: dict[str, Any], what: str, context: dict[str, Any]) -> bytes:
    try:
        data: bytes = cloudpickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL)
        return _ENVELOPE + data
    except Exception as exc:  # pickling raises many types: PicklingError, TypeError, AttributeError...
        raise SerializationError(f"cannot checkpoint {what}: {type(exc).__name__}: {exc}", **context) from exc


def _loads(data: bytes, cls: type[_R], where: str, path: str | None) -> _R:
    if not data or data[:1] != _ENVELOPE:
        raise StoreError(f"corrupt record at {where}: unknown envelope {bytes(data[:1])!r}", path=path)
    try:
        fields = pickle.loads(data[1:])
    except Exception as exc:
        raise StoreError(f"corrupt record at {where}: {type(exc).__name__}: {exc}", path=path) from exc
    if not isinstance(fields, dict):
        raise StoreError(f"corrupt record at {where}: not a {cls.__name__} record", path=path)
    known = {f.name for f in attrs.fields(cls)}
    try:
        return cls(**{k: v for k, v in fields.items() if k in known})
    except Exception as exc:
        raise StoreError(f"corrupt record at {where}: {type(exc).__name__}: {exc}", path=path) from exc


def encode_instance(inst: WorkflowInstance) -> bytes:
    """Bytes of ``inst`` without its step results (they are stored apart)."""
    fields = attrs.asdict(inst, recurse=False)
    del fields["step_results"]
    fields["status"] = InstanceStatus(inst.status).value
    fields["kwargs"] = dict(inst.kwargs)
    return _dumps(fields, "instance", {"workflow": inst.workflow_name, "instance_id": inst.id})


def decode_instance(data: bytes, where: str = "instance", path: str | None = None) -> WorkflowInstance:
    """The instance encoded in ``data``; :class:`StoreError` if it is not one."""
    inst = _loads(data, WorkflowInstance, where, path)
    try:
        return attrs.evolve(inst, status=InstanceStatus(inst.status))
    except ValueError as exc:
        raise StoreError(f"corrupt record at {where}: {exc}", path=path) from exc


def encode_step(step: StepResult, *, workflow: str | None = None, instance_id: str | None = None) -> bytes:
    """Bytes of one step's checkpoint."""
    fields = attrs.asdict(step, recurse=False)
    fields["status"] = StepStatus(step.status).value
    context = {"workflow": workflow, "instance_id": instance_id, "step": step.key or step.step_name}
    exc = fields.get("exception")
    if exc is not None:
        try:
            pickle.loads(cloudpickle.dumps(exc))  # some exceptions pickle but cannot load back
        except Exception:
            # Keep the failure storable: an unpicklable exception is replaced by
            # a plain one carrying the same type name and message.
            fields["exception"] = _portable_exception(exc)
    return _dumps(fields, f"the {step.status} result of step {step.key or step.step_name!r}", context)


def decode_step(data: bytes, where: str = "step", path: str | None = None) -> StepResult:
    """The step result encoded in ``data``; :class:`StoreError` if it is not one."""
    step = _loads(data, StepResult, where, path)
    try:
        return attrs.evolve(step, status=StepStatus(step.status))
    except ValueError as exc:
        raise StoreError(f"corrupt record at {where}: {exc}", path=path) from exc


class UnpicklableError(Exception):
    """Stands in for a step's exception that could not be pickled: same type name and message."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}"


def _portable_exception(exc: BaseException) -> BaseException:
    return UnpicklableError(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc))
