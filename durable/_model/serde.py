"""Encoding of stored records: a checksummed, versioned envelope around cloudpickle.

A record is stored as a tuple (store format 4): a tag naming its type
(``"step"`` or ``"instance"``), then its fields in a fixed order
(:data:`_STEP_LAYOUT`, :data:`_INSTANCE_LAYOUT`), pickled, behind an
envelope: one version byte, then (version 2) the CRC-32 of the pickle, so a
flipped byte anywhere in a record is found when it is read instead of
silently changing a stored value. Records of envelope version 1 (no
checksum) are still read. A tuple pickles and loads about three times faster
than the dict of the same fields, and is less than half its size.

Fields are only ever added at the end of a layout, never removed or
reordered. A record longer than this version's layout (a newer writer's, with
fields it added) is read with the extra fields ignored; a shorter one is
corrupt. Records of formats 1 to 3 (a dict of the fields, so missing fields
take their defaults and unknown ones are ignored) are still read.

A record's own times (``created_at``, ``started_at``...) that are in UTC, as
the engine's always are, are stored as integer microseconds since the epoch
(since store format 3): exact, and pickled ten times faster than an aware
``datetime``. A time in another zone is stored as the ``datetime`` itself, as
format 2 stored every time; both are read.

Encoding happens on the caller's side, before anything reaches the store, so
an unpicklable value raises :class:`SerializationError` and leaves the store
untouched. Decoding never raises anything but :class:`StoreError` for bad
bytes: a wrong envelope or checksum, a pickle that does not load, or fields of
the wrong shape or type (which would otherwise blow up later, far from the
store, as a ``TypeError`` while sorting or resuming).

(Over 400 lines, on purpose: one record format, its writer and its checking
reader side by side, so a field added to a layout is added to both in one
place.)
"""

from __future__ import annotations

import operator
import pickle
import pickletools
import struct
import zlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import attrs

from .clock import EPOCH
from .pickling import _from_main as _from_main  # durable._serde._from_main, named by 0.1.0's pickles
from .pickling import pickle_value as _pickle
from .ids import is_valid_id
from .records import InstanceStatus, StepResult, StepStatus, WorkflowInstance
from ..errors import SerializationError, StoreError

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES", "check_limit", "decode_instance", "decode_step", "decode_value", "encode_instance", "encode_step", "encode_value", "same_value",
]

_LEGACY = b"\x01"  # version byte + pickle (read only)
_ENVELOPE = b"\x02"  # version byte + CRC-32 of the pickle (4 bytes, big endian) + pickle
_CRC = struct.Struct(">I")
_R = TypeVar("_R", WorkflowInstance, StepResult)


def _seal(payload: bytes) -> bytes:
    """``payload`` (a pickle) behind the current envelope."""
    return _ENVELOPE + _CRC.pack(zlib.crc32(payload)) + payload


def _unseal(data: bytes, where: str, path: str | None) -> bytes | memoryview:
    """The pickle inside ``data``; :class:`StoreError` if the envelope or checksum is wrong."""
    if data[:1] == _ENVELOPE:
        if len(data) < 1 + _CRC.size:
            raise StoreError(f"corrupt record at {where}: truncated ({len(data)} bytes)", path=path)
        (crc,) = _CRC.unpack_from(data, 1)
        # crc32 and pickle read buffers: a large record is not copied (a small one's copy costs less than a view)
        checked = data[1 + _CRC.size:] if len(data) <= 4096 else memoryview(data)[1 + _CRC.size:]
        if zlib.crc32(checked) != crc:
            raise StoreError(f"corrupt record at {where}: checksum mismatch", path=path)
        return checked
    head = bytes(data[:1])
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


#: The default of ``max_payload_bytes``: the largest encoded input, output, step
#: result or signal payload a store takes (16 MiB).
DEFAULT_MAX_PAYLOAD_BYTES = 16 << 20


def check_limit(limit: int | None) -> int | None:
    """``limit`` if it is a usable ``max_payload_bytes`` (an int > 0, or ``None``: no limit), else ``ValueError``."""
    if limit is not None and (type(limit) is not int or limit <= 0):
        raise ValueError(f"max_payload_bytes must be a number of bytes > 0 (or None: no limit), got {limit!r}")
    return limit


def _too_large(what: str, size: int, limit: int) -> str:
    return (f"{what} is {size:,} bytes encoded, over the limit of {limit:,} bytes "
            "(max_payload_bytes)")


def _oversized_part(parts: tuple[tuple[str, Any], ...], limit: int) -> tuple[str, int] | None:
    """The first of ``parts`` (name, value) whose own encoding is over ``limit``: (name, size), or ``None``.

    Only asked of a record over the limit: its values are measured apart, so
    that the limit is on each payload, not on the record's few hundred bytes
    of bookkeeping (and an instance whose input was accepted at ``start()``
    can always record its end).
    """
    for name, value in parts:
        if value is None:
            continue
        size = len(_pickle(value))
        if size > limit:
            return name, size
    return None


def same_value(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same value as far as a store can tell.

    Equal (``==``), or pickling to the same bytes: a value whose class
    compares by identity (no ``__eq__``) is not equal to its copy loaded back
    from a store, yet is the same value. ``False`` if either does not pickle.
    """
    try:
        if a == b:
            return True
    except Exception:  # an __eq__ that raises, or whose result has no truth value (an array)
        pass
    try:
        return _pickle(a) == _pickle(b)
    except Exception:
        return False


def _cannot(what: str, exc: Exception, **context: Any) -> SerializationError:
    return SerializationError(f"cannot checkpoint {what}: {type(exc).__name__}: {exc}", **context)


# -- the stored layouts (format 4) ---------------------------------------------
# A record is (tag, *fields) in these orders. Only ever append: records of an
# older layout must keep reading, and an older durable ignores what it does not
# know at the end (so a field whose absence older versions can live with needs
# no new store format). Each is also the order of its class's attrs fields
# (step results aside: they are stored apart), so records are built
# positionally; a test holds them equal.

_STEP_TAG = "step"
_STEP_LAYOUT = (
    "step_name", "status", "input", "output", "error", "started_at", "completed_at", "attempts", "key",
    "step_type", "function", "exception", "next_attempt_at", "seq",
)
_INSTANCE_TAG = "instance"
_INSTANCE_LAYOUT = (
    "id", "workflow_name", "status", "input", "current_step", "output", "error", "created_at", "started_at",
    "completed_at", "deadline", "args", "kwargs", "error_type", "queue", "priority", "dedup_id", "not_before",
    "parent_id",
)
_step_fields = operator.attrgetter(*_STEP_LAYOUT)
_instance_fields = operator.attrgetter(*_INSTANCE_LAYOUT)
_MICROSECOND = timedelta(microseconds=1)


def _stored_time(value: datetime | None) -> datetime | int | None:
    """A record's time as stored: microseconds since the epoch if it is in UTC, else the ``datetime`` itself."""
    if value is None or value.tzinfo is not UTC:
        return value
    return (value - EPOCH) // _MICROSECOND


def encode_instance(inst: WorkflowInstance, *, limit: int | None = None) -> bytes:
    """Bytes of ``inst`` without its step results (they are stored apart).

    :class:`SerializationError` if it does not pickle, or if its input or
    output is over ``limit`` bytes encoded.
    """
    (iid, workflow_name, status, input_, current_step, output, error, created_at, started_at, completed_at,
     deadline, args, kwargs, error_type, queue, priority, dedup_id, not_before, parent_id) = _instance_fields(inst)
    record = (
        _INSTANCE_TAG, iid, workflow_name,
        status.value if type(status) is InstanceStatus else InstanceStatus(status).value,
        input_, current_step, output, error, _stored_time(created_at), _stored_time(started_at),
        _stored_time(completed_at), _stored_time(deadline), args, dict(kwargs), error_type,
        queue, priority, dedup_id, _stored_time(not_before), parent_id,
    )
    try:
        data = _pickle(record)
        oversized = _oversized_part((("input", input_), ("output", output)), limit) \
            if limit is not None and len(data) > limit else None
    except Exception as exc:  # pickling raises many types: PicklingError, TypeError, AttributeError...
        raise _cannot("instance", exc, workflow=workflow_name, instance_id=iid) from exc
    if oversized is not None:
        raise SerializationError(_too_large(f"the instance's {oversized[0]}", oversized[1], limit or 0),
                                 workflow=workflow_name, instance_id=iid)
    return _seal(data)


def _step_what(step: StepResult) -> str:
    """How an error names a step record (built only on the error path: it costs more than the encoding)."""
    return f"the {step.status} result of step {step.key or step.step_name!r}"


def encode_step(step: StepResult, *, workflow: str | None = None, instance_id: str | None = None,
                limit: int | None = None) -> bytes:
    """Bytes of one step's checkpoint.

    :class:`SerializationError` naming the step if it does not pickle, or if
    its input or output is over ``limit`` bytes encoded.
    """
    (name, status, input_, output, error, started_at, completed_at, attempts, key, step_type, function, exception,
     next_attempt_at, seq) = _step_fields(step)
    if exception is not None:
        try:
            pickle.loads(_pickle(exception))  # some exceptions pickle but cannot load back
        except Exception:
            # Keep the failure storable: an unpicklable exception is replaced by
            # a plain one carrying the same type name and message.
            exception = _portable_exception(exception)
    record = (
        _STEP_TAG, name, status.value if type(status) is StepStatus else StepStatus(status).value, input_, output,
        error, _stored_time(started_at), _stored_time(completed_at), attempts, key, step_type, function, exception,
        _stored_time(next_attempt_at), seq,
    )
    try:
        data = _pickle(record)
        oversized = _oversized_part((("output", output), ("input", input_)), limit) \
            if limit is not None and len(data) > limit else None
    except Exception as exc:
        raise _cannot(_step_what(step), exc, workflow=workflow, instance_id=instance_id,
                      step=step.key or step.step_name) from exc
    if oversized is not None:
        raise SerializationError(f"cannot checkpoint {_step_what(step)}: " + _too_large(
                                     f"its {oversized[0]}", oversized[1], limit or 0),
                                 workflow=workflow, instance_id=instance_id, step=step.key or step.step_name)
    return _seal(data)


# -- decoding -------------------------------------------------------------------
# Every field's type is checked on every read: attrs does not check types, and
# a record of the right shape but wrong types (corruption, a foreign writer)
# would otherwise surface later as a TypeError far from the store (sorting by
# created_at, a dict keyed by an unhashable step name, **kwargs with non-str
# keys...). Each check tests the usual exact type first: decoding runs once per
# checkpoint on resume.

_STEP_STATUS: dict[str, StepStatus] = {s.value: s for s in StepStatus}
_INSTANCE_STATUS: dict[str, InstanceStatus] = {s.value: s for s in InstanceStatus}
_STEP_LENGTH = 1 + len(_STEP_LAYOUT)
_STEP_LENGTH_0_1 = _STEP_LENGTH - 1  # durable 0.1.0's step records: no seq
_INSTANCE_LENGTH = 1 + len(_INSTANCE_LAYOUT)
_INSTANCE_LENGTH_0_2 = _INSTANCE_LENGTH - 5  # before queues: no queue, priority, dedup_id, not_before, parent_id


def _bad(name: str, value: Any, cls: type) -> TypeError:
    return TypeError(f"field {name!r} of a {cls.__name__} record has a bad value of type {type(value).__name__}")


def _time(value: Any, name: str, cls: type) -> datetime | None:
    """A stored time (microseconds since the epoch in UTC, a ``datetime`` or ``None``) as a record's time."""
    if type(value) is int:
        return EPOCH + timedelta(0, 0, value)  # exact; OverflowError if out of range
    if value is None or isinstance(value, datetime):
        return value
    raise _bad(name, value, cls)


def _opt_str(value: Any, name: str, cls: type) -> None:
    if value is not None and type(value) is not str and not isinstance(value, str):
        raise _bad(name, value, cls)


def _check_shape(record: tuple[Any, ...], tag: str, length: int, cls: type, oldest: int | None = None) -> tuple[Any, ...]:
    """``record`` cut to ``length`` items (a newer writer's extra fields dropped), or padded with ``None``
    from ``oldest`` items (an older writer's, before fields were added); ``TypeError`` if it is not one."""
    if len(record) != length:
        if oldest is not None and oldest <= len(record) < length:
            record = record + (None,) * (length - len(record))
        elif len(record) < length:
            raise TypeError(f"not a {cls.__name__} record (a tuple of {len(record)} items, not {length})")
        else:
            record = record[:length]
    if record[0] != tag:
        found = repr(record[0][:40]) if type(record[0]) is str else f"a {type(record[0]).__name__}"
        raise TypeError(f"not a {cls.__name__} record (its tag is {found}, not {tag!r})")
    return record


def _step_from(record: tuple[Any, ...]) -> StepResult:
    (_, name, status, input_, output, error, started_at, completed_at, attempts, key, step_type, function, exception,
     next_attempt_at, seq) = _check_shape(record, _STEP_TAG, _STEP_LENGTH, StepResult, _STEP_LENGTH_0_1)
    if type(name) is not str and not isinstance(name, str):
        raise _bad("step_name", name, StepResult)
    known = _STEP_STATUS.get(status) if type(status) is str else None
    _opt_str(error, "error", StepResult)
    started_at = _time(started_at, "started_at", StepResult)
    completed_at = _time(completed_at, "completed_at", StepResult)
    if type(attempts) is not int and (not isinstance(attempts, int) or isinstance(attempts, bool)):
        raise _bad("attempts", attempts, StepResult)
    if type(key) is not str and not isinstance(key, str):
        raise _bad("key", key, StepResult)
    if type(step_type) is not str and not isinstance(step_type, str):
        raise _bad("step_type", step_type, StepResult)
    _opt_str(function, "function", StepResult)
    if exception is not None and not isinstance(exception, BaseException):
        raise _bad("exception", exception, StepResult)
    next_attempt_at = _time(next_attempt_at, "next_attempt_at", StepResult)
    if seq is not None and (type(seq) is not int or seq < 0):
        raise _bad("seq", seq, StepResult)
    return StepResult(
        name, known if known is not None else StepStatus(status),  # ValueError if not a status
        input_, output, error, started_at, completed_at, attempts, key, step_type, function, exception,
        next_attempt_at, seq,
    )


def _instance_from(record: tuple[Any, ...]) -> WorkflowInstance:
    (_, iid, workflow_name, status, input_, current_step, output, error, created_at, started_at, completed_at,
     deadline, args, kwargs, error_type, queue, priority, dedup_id, not_before, parent_id) = _check_shape(
        record, _INSTANCE_TAG, _INSTANCE_LENGTH, WorkflowInstance, _INSTANCE_LENGTH_0_2)
    # id and workflow name: what check_instance_id / check_workflow_name accept when a record is written
    if not is_valid_id(iid):
        raise _bad("id", iid, WorkflowInstance)
    if not is_valid_id(workflow_name):
        raise _bad("workflow_name", workflow_name, WorkflowInstance)
    known = _INSTANCE_STATUS.get(status) if type(status) is str else None
    _opt_str(current_step, "current_step", WorkflowInstance)
    _opt_str(error, "error", WorkflowInstance)
    created_at = _time(created_at, "created_at", WorkflowInstance)
    started_at = _time(started_at, "started_at", WorkflowInstance)
    completed_at = _time(completed_at, "completed_at", WorkflowInstance)
    deadline = _time(deadline, "deadline", WorkflowInstance)
    if not isinstance(args, tuple):
        raise _bad("args", args, WorkflowInstance)
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise _bad("kwargs", kwargs, WorkflowInstance)
    _opt_str(error_type, "error_type", WorkflowInstance)
    _opt_str(queue, "queue", WorkflowInstance)
    _opt_str(dedup_id, "dedup_id", WorkflowInstance)
    _opt_str(parent_id, "parent_id", WorkflowInstance)
    if priority is None:
        priority = 0  # a record from before queues
    elif type(priority) is not int:
        raise _bad("priority", priority, WorkflowInstance)
    not_before = _time(not_before, "not_before", WorkflowInstance)
    return WorkflowInstance(
        iid, workflow_name, known if known is not None else InstanceStatus(status),  # ValueError if not a status
        input_, current_step, output, error, {}, created_at, started_at, completed_at, deadline, args, kwargs,
        error_type, queue, priority, dedup_id, not_before, parent_id,
    )


_DEFAULTS: dict[type, dict[str, Any]] = {
    cls: {a.name: a.default for a in attrs.fields(cls)} for cls in (StepResult, WorkflowInstance)
}


def _from_dict(fields: dict[Any, Any], tag: str, layout: tuple[str, ...], cls: type) -> tuple[Any, ...]:
    """A record of formats 1 to 3 (a dict of fields) as a format-4 tuple.

    A missing field takes its default; an unknown one (a newer writer's, or a
    stored ``step_results``, which never overrides the steps stored apart) is
    ignored. ``TypeError`` if a field without a default is missing.
    """
    defaults = _DEFAULTS[cls]
    record: list[Any] = [tag]
    for name in layout:
        if name in fields:
            record.append(fields[name])
            continue
        default = defaults[name]
        if default is attrs.NOTHING:
            raise TypeError(f"a {cls.__name__} record without its field {name!r}")
        # (attrs types Factory as a function; at run time it is the class of factory defaults)
        record.append(default.factory() if isinstance(default, attrs.Factory) else default)  # type: ignore[arg-type]
    return tuple(record)


def _builder(from_tuple: Callable[[tuple[Any, ...]], _R], tag: str, layout: tuple[str, ...],
             cls: type) -> Callable[[Any], _R]:
    """What builds a record of ``cls`` from what its bytes unpickled to: a tuple, or a dict of formats 1 to 3."""

    def build(record: Any) -> _R:
        if type(record) is tuple:
            return from_tuple(record)
        if type(record) is dict:
            return from_tuple(_from_dict(record, tag, layout, cls))
        raise TypeError(f"not a {cls.__name__} record (a {type(record).__name__})")

    return build


_build_step = _builder(_step_from, _STEP_TAG, _STEP_LAYOUT, StepResult)
_build_instance = _builder(_instance_from, _INSTANCE_TAG, _INSTANCE_LAYOUT, WorkflowInstance)


def _loads(data: bytes, build: Callable[[Any], _R], where: str, path: str | None) -> _R:
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
        record = pickle.loads(payload)
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
        return build(record)
    except Exception as exc:
        raise StoreError(f"corrupt record at {where}: {type(exc).__name__}: {exc}", path=path) from exc


def decode_instance(data: bytes, where: str = "instance", path: str | None = None) -> WorkflowInstance:
    """The instance encoded in ``data``; :class:`StoreError` if it is not one."""
    return _loads(data, _build_instance, where, path)


def encode_value(value: Any, what: str, *, limit: int | None = None, **context: Any) -> bytes:
    """Bytes of a bare value (a signal's payload); :class:`SerializationError` naming ``what``
    if it does not pickle, or is over ``limit`` bytes encoded."""
    try:
        data = _pickle(value)
    except Exception as exc:
        raise SerializationError(f"cannot store {what}: {type(exc).__name__}: {exc}", **context) from exc
    if limit is not None and len(data) > limit:
        raise SerializationError(f"cannot store {what}: " + _too_large("it", len(data), limit), **context)
    return _seal(data)


def decode_value(data: bytes, where: str, path: str | None = None) -> Any:
    """The value encoded in ``data``; :class:`StoreError` if it does not load."""
    payload = _unseal(data, where, path)
    try:
        return pickle.loads(payload)
    except Exception as exc:
        raise StoreError(f"corrupt record at {where}: {type(exc).__name__}: {exc}", path=path) from exc


def decode_step(data: bytes, where: str = "step", path: str | None = None) -> StepResult:
    """The step result encoded in ``data``; :class:`StoreError` if it is not one."""
    return _loads(data, _build_step, where, path)


def check_step_input(step: StepResult, *, instance_id: str | None = None, limit: int | None = None) -> None:
    """:class:`SerializationError` if ``step``'s input cannot be stored (or is over ``limit`` bytes
    encoded); the input alone is pickled.

    What a store checks before queueing a marker it encodes only if it is
    written (most are superseded by the step's result in the same commit).
    """
    try:
        data = _pickle(step.input)
    except Exception as exc:
        raise SerializationError(
            f"cannot checkpoint {_step_what(step)}: {type(exc).__name__}: {exc}", instance_id=instance_id,
            step=step.key or step.step_name,
        ) from exc
    if limit is not None and len(data) > limit:
        raise SerializationError(f"cannot checkpoint {_step_what(step)}: " + _too_large("its input", len(data), limit),
                                 instance_id=instance_id, step=step.key or step.step_name)


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
