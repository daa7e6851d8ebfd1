"""Encoding of stored records: a checksummed, versioned envelope around cloudpickle.

A record is stored as its fields (a plain dict, so adding a field later does
not break old stores) pickled with cloudpickle, behind an envelope: one
version byte, then (version 2) the CRC-32 of the pickle, so a flipped byte
anywhere in a record is found when it is read instead of silently changing a
stored value. Records of envelope version 1 (no checksum) are still read.

A record's own times (``created_at``, ``started_at``...) that are in UTC, as
the engine's always are, are stored as integer microseconds since the epoch
(store format 3): exact, and pickled ten times faster than an aware
``datetime``. A time in another zone is stored as the ``datetime`` itself, as
format 2 stored every time; both are read.

Encoding happens on the caller's side, before anything reaches the store, so
an unpicklable value raises :class:`SerializationError` and leaves the store
untouched. Decoding never raises anything but :class:`StoreError` for bad
bytes: a wrong envelope or checksum, a pickle that does not load, or fields of
the wrong shape or type (which would otherwise blow up later, far from the
store, as a ``TypeError`` while sorting or resuming).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import struct
import sys
import types
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import attrs
import cloudpickle  # type: ignore[import-untyped]

from ._records import InstanceStatus, StepResult, StepStatus, WorkflowInstance
from .errors import SerializationError, StoreError

__all__ = ["decode_instance", "decode_step", "decode_value", "encode_instance", "encode_step", "encode_value"]

_LEGACY = b"\x01"  # version byte + pickle (read only)
_ENVELOPE = b"\x02"  # version byte + CRC-32 of the pickle (4 bytes, big endian) + pickle
_CRC = struct.Struct(">I")
_R = TypeVar("_R", WorkflowInstance, StepResult)


def _seal(payload: bytes) -> bytes:
    """``payload`` (a pickle) behind the current envelope."""
    return _ENVELOPE + _CRC.pack(zlib.crc32(payload)) + payload


def _unseal(data: bytes, where: str, path: str | None) -> bytes | memoryview:
    """The pickle inside ``data``; :class:`StoreError` if the envelope or checksum is wrong."""
    head = bytes(data[:1])
    if head == _ENVELOPE:
        if len(data) < 1 + _CRC.size:
            raise StoreError(f"corrupt record at {where}: truncated ({len(data)} bytes)", path=path)
        (crc,) = _CRC.unpack_from(data, 1)
        checked = memoryview(data)[1 + _CRC.size:]  # no copy: crc32 and pickle read buffers
        if zlib.crc32(checked) != crc:
            raise StoreError(f"corrupt record at {where}: checksum mismatch", path=path)
        return checked
    if head == _LEGACY:
        unchecked = bytes(data[1:])
        try:
            _check_memo(unchecked)
        except Exception as exc:
            raise StoreError(f"corrupt record at {where}: {type(exc).__name__}: {exc}", path=path) from exc
        return unchecked
    raise StoreError(f"corrupt record at {where}: unknown envelope {head!r}", path=path)


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def _check_memo(payload: bytes) -> None:
    """Refuse a pickle that stores into a memo slot far past its own length (``ValueError``).

    The C unpickler sizes its memo array to the largest index it is told to
    store at: five corrupt bytes (``LONG_BINPUT`` 2**30) make it allocate and
    clear gigabytes before failing, or not fail at all. A pickler numbers memo
    slots from 0, so no sound pickle uses an index beyond its own length.
    Checksummed records never reach the parser corrupt, so only unchecked
    (legacy) records pay for this scan.
    """
    for op, arg, _ in pickletools.genops(payload):
        if op.name in _MEMO_PUTS and not (isinstance(arg, int) and 0 <= arg <= len(payload)):
            raise ValueError(f"memo index {arg!r} out of range")


# How protocol 4+ writes the module name of a global from __main__: SHORT_BINUNICODE,
# length 8. A plain string value "__main__" matches too (and just takes the slow path);
# a string such as "__main__.fn" does not.
_MAIN_GLOBAL = b"\x8c\x08__main__"
assert pickle.HIGHEST_PROTOCOL >= 4


def _from_main(qualname: str, by_value: bytes) -> Any:
    """A class or function of a ``__main__`` module, as stored by :func:`_pickle`.

    This process's own if its ``__main__`` defines that name (the same script,
    resumed: an ``except MyError`` in the workflow must still match the
    replayed exception), else the copy stored by value (another program, such
    as the ``durable`` command, reading the record).
    """
    obj: Any = sys.modules.get("__main__")
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return pickle.loads(by_value)
    return obj


class _MainAwarePickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with ``__main__``'s named classes and functions stored as :func:`_from_main` calls."""

    def reducer_override(self, obj: Any) -> Any:
        if (isinstance(obj, (type, types.FunctionType)) and getattr(obj, "__module__", None) == "__main__"
                and "<" not in getattr(obj, "__qualname__", "<")):
            return _from_main, (obj.__qualname__, cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        return super().reducer_override(obj)


def _pickle(value: Any) -> bytes:
    """``value`` pickled: plain :mod:`pickle` when that is enough, else cloudpickle.

    Plain pickle is about ten times faster, and stores classes and functions
    by reference, which is right for anything importable. cloudpickle is used
    when plain pickle cannot pickle the value (lambdas, local classes) or when
    the result refers to ``__main__``, whose names another process (a CLI, a
    worker started differently) could not import: cloudpickle stores those by
    value, and a named class or function of ``__main__`` loads as the loading
    process's own when its ``__main__`` defines that name (:func:`_from_main`).
    Both load with :func:`pickle.loads`.
    """
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    else:
        if _MAIN_GLOBAL not in data:
            return data
    buffer = io.BytesIO()
    _MainAwarePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def _dumps(fields: dict[str, Any], cls: type, what: str, context: dict[str, Any]) -> bytes:
    # Field types are checked on read (_build); records are built by the engine,
    # whose own fields have the right types, and user values are of any type.
    try:
        data = _pickle(fields)
    except Exception as exc:  # pickling raises many types: PicklingError, TypeError, AttributeError...
        raise SerializationError(f"cannot checkpoint {what}: {type(exc).__name__}: {exc}", **context) from exc
    return _seal(data)


# -- the type each stored field must have -------------------------------------
# Checked on every read: attrs does not check types, and a record of the right
# shape but wrong types (corruption, a foreign writer) would otherwise surface
# later as a TypeError far from the store (sorting by created_at, a dict keyed
# by an unhashable step name, **kwargs with non-str keys...).

_Check = Callable[[Any], bool]


def _any(v: Any) -> bool:
    return True


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _opt_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _opt_time(v: Any) -> bool:
    return v is None or isinstance(v, datetime) or type(v) is int  # int: microseconds since the epoch, UTC


def _name(v: Any) -> bool:
    # What check_instance_id / check_workflow_name accept when a record is written.
    from .stores._base import is_valid_id  # here: stores import this module

    return is_valid_id(v)


def _kwargs(v: Any) -> bool:
    return isinstance(v, Mapping) and all(isinstance(k, str) for k in v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_FIELDS: dict[type, dict[str, _Check]] = {
    WorkflowInstance: {
        "id": _name, "workflow_name": _name, "status": _any, "input": _any, "current_step": _opt_str,
        "output": _any, "error": _opt_str, "created_at": _opt_time, "started_at": _opt_time,
        "completed_at": _opt_time, "deadline": _opt_time, "args": lambda v: isinstance(v, tuple),
        "kwargs": _kwargs, "error_type": _opt_str,
        # step_results is never stored (steps are stored apart): ignored if present.
    },
    StepResult: {
        "step_name": _str, "status": _any, "input": _any, "output": _any, "error": _opt_str,
        "started_at": _opt_time, "completed_at": _opt_time, "attempts": _int, "key": _str, "step_type": _str,
        "function": _opt_str, "exception": lambda v: v is None or isinstance(v, BaseException),
        "next_attempt_at": _opt_time,
    },
}
_STATUS: dict[type, type[InstanceStatus] | type[StepStatus]] = {
    WorkflowInstance: InstanceStatus, StepResult: StepStatus,
}


_NoneType = type(None)
# The exact types a field's value usually has: a value of one of them passes
# without calling its check (decoding runs once per checkpoint on resume).
_FAST: dict[type, dict[str, frozenset[type]]] = {
    cls: {
        name: frozenset({str} if check is _str else {str, _NoneType} if check is _opt_str
                        else {datetime, int, _NoneType} if check is _opt_time else {int} if check is _int
                        else {_NoneType} if name == "exception" else set())
        for name, check in checks.items() if check is not _any
    }
    for cls, checks in _FIELDS.items()
}
_KNOWN: dict[type, frozenset[str]] = {cls: frozenset(checks) for cls, checks in _FIELDS.items()}
_STATUS_BY_VALUE: dict[type, dict[Any, InstanceStatus | StepStatus]] = {
    cls: {s.value: s for s in status} for cls, status in _STATUS.items()
}
_TIMES: dict[type, tuple[str, ...]] = {
    cls: tuple(name for name, check in checks.items() if check is _opt_time) for cls, checks in _FIELDS.items()
}
_NAMES: dict[type, tuple[str, ...]] = {cls: tuple(a.name for a in attrs.fields(cls)) for cls in _FIELDS}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _fields_of(record: WorkflowInstance | StepResult) -> dict[str, Any]:
    """The fields of ``record`` as a dict, its UTC times as microseconds since the epoch."""
    cls = type(record)
    fields = {name: getattr(record, name) for name in _NAMES[cls]}
    for name in _TIMES[cls]:
        value = fields[name]
        if value is not None and value.tzinfo is UTC:
            fields[name] = (value - _EPOCH) // _MICROSECOND
    return fields


def _bad_field(fields: dict[str, Any], cls: type) -> str | None:
    """What is wrong with the types of ``fields`` (a record of ``cls``), or ``None``."""
    fast = _FAST[cls]
    checks = _FIELDS[cls]
    for name, value in fields.items():
        usual = fast.get(name)
        if usual is None or type(value) in usual:
            continue  # a field of any type, an unknown field (ignored), or the usual type
        if not checks[name](value):
            return f"field {name!r} of a {cls.__name__} record has a bad value of type {type(value).__name__}"
    return None


def _build(fields: Any, cls: type[_R]) -> _R:
    """``cls`` from the loaded ``fields``; ``ValueError``/``TypeError`` naming what is wrong."""
    if type(fields) is not dict:
        raise TypeError(f"not a {cls.__name__} record (a {type(fields).__name__})")
    problem = _bad_field(fields, cls)
    if problem is not None:
        raise TypeError(problem)
    if not fields.keys() <= _KNOWN[cls]:
        fields = {name: fields[name] for name in _FIELDS[cls] if name in fields}  # unknown fields: a newer writer's
    for name in _TIMES[cls]:
        value = fields.get(name)
        if type(value) is int:
            fields[name] = _EPOCH + timedelta(microseconds=value)  # OverflowError if out of range
    if "status" in fields:
        status = fields["status"]
        known = _STATUS_BY_VALUE[cls].get(status) if type(status) is str else None
        fields["status"] = known if known is not None else _STATUS[cls](status)  # ValueError if not a status
    return cls(**fields)  # TypeError if a required field is missing


def _loads(data: bytes, cls: type[_R], where: str, path: str | None) -> _R:
    payload = _unseal(data, where, path)
    # Exception covers what bad bytes can make pickle raise, MemoryError and
    # RecursionError included. Deliberately not BaseException: a
    # KeyboardInterrupt arriving while a record loads is not corruption and
    # must propagate; SystemExit, GeneratorExit or a BaseExceptionGroup can
    # only come from a record that calls code (a crafted REDUCE), and such
    # a record could as well call os._exit: catching them would promise a
    # safety that unpickling cannot give (see "Security" in the README: a
    # store is exactly as trusted as the code that reads it).
    try:
        fields = pickle.loads(payload)
    except (ImportError, AttributeError) as exc:
        if bytes(data[:1]) == _ENVELOPE:
            # The checksum held: the bytes are intact, the record names code
            # (a class, an exception type) this process cannot import.
            raise StoreError(
                f"cannot load the record at {where}: {type(exc).__name__}: {exc}; it refers to code this "
                "process cannot import (import the module that defines it, or run from the project's directory)",
                path=path,
            ) from exc
        raise StoreError(f"corrupt record at {where}: {type(exc).__name__}: {exc}", path=path) from exc
    except Exception as exc:
        raise StoreError(f"corrupt record at {where}: {type(exc).__name__}: {exc}", path=path) from exc
    try:
        return _build(fields, cls)
    except Exception as exc:
        raise StoreError(f"corrupt record at {where}: {type(exc).__name__}: {exc}", path=path) from exc


def encode_instance(inst: WorkflowInstance) -> bytes:
    """Bytes of ``inst`` without its step results (they are stored apart)."""
    fields = _fields_of(inst)
    del fields["step_results"]
    fields["status"] = InstanceStatus(inst.status).value
    fields["kwargs"] = dict(inst.kwargs)
    return _dumps(fields, WorkflowInstance, "instance", {"workflow": inst.workflow_name, "instance_id": inst.id})


def decode_instance(data: bytes, where: str = "instance", path: str | None = None) -> WorkflowInstance:
    """The instance encoded in ``data``; :class:`StoreError` if it is not one."""
    return _loads(data, WorkflowInstance, where, path)


def encode_step(step: StepResult, *, workflow: str | None = None, instance_id: str | None = None) -> bytes:
    """Bytes of one step's checkpoint."""
    fields = _fields_of(step)
    fields["status"] = StepStatus(step.status).value
    context = {"workflow": workflow, "instance_id": instance_id, "step": step.key or step.step_name}
    exc = fields.get("exception")
    if exc is not None:
        try:
            pickle.loads(_pickle(exc))  # some exceptions pickle but cannot load back
        except Exception:
            # Keep the failure storable: an unpicklable exception is replaced by
            # a plain one carrying the same type name and message.
            fields["exception"] = _portable_exception(exc)
    return _dumps(fields, StepResult, f"the {step.status} result of step {step.key or step.step_name!r}", context)


def encode_value(value: Any, what: str, **context: Any) -> bytes:
    """Bytes of a bare value (a signal's payload); :class:`SerializationError` naming ``what``."""
    try:
        data = _pickle(value)
    except Exception as exc:
        raise SerializationError(f"cannot store {what}: {type(exc).__name__}: {exc}", **context) from exc
    return _seal(data)


def decode_value(data: bytes, where: str, path: str | None = None) -> Any:
    """The value encoded in ``data``; :class:`StoreError` if it does not load."""
    payload = _unseal(data, where, path)
    try:
        return pickle.loads(payload)
    except Exception as exc:
        raise StoreError(f"corrupt record at {where}: {type(exc).__name__}: {exc}", path=path) from exc


def check_step_input(step: StepResult, *, instance_id: str | None = None) -> None:
    """:class:`SerializationError` if ``step``'s input cannot be stored; the input alone is pickled.

    What a store checks before queueing a marker it encodes only if it is
    written (most are superseded by the step's result in the same commit).
    """
    try:
        _pickle(step.input)
    except Exception as exc:
        raise SerializationError(
            f"cannot checkpoint the {step.status} result of step {step.key or step.step_name!r}: "
            f"{type(exc).__name__}: {exc}",
            instance_id=instance_id, step=step.key or step.step_name,
        ) from exc


def decode_step(data: bytes, where: str = "step", path: str | None = None) -> StepResult:
    """The step result encoded in ``data``; :class:`StoreError` if it is not one."""
    return _loads(data, StepResult, where, path)


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
