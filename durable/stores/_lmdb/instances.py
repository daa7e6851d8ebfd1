"""The LMDB store's instance tables: ``instances``, ``status``, ``index``; and the lease fence every write passes.

``instances``  instance id -> encoded :class:`WorkflowInstance` (no step results)
``status``     instance id -> ``status NUL workflow`` (what the index holds now)
``index``      ``status NUL workflow NUL id`` -> empty: finds running instances
               without reading finished ones

Functions of a transaction: the reads run in ``env.read()``, the writes in
the group-commit writer's transaction (``env.write(fn, ...)``).
"""

from __future__ import annotations

import lmdb

from ..._model.ids import is_valid_id
from ..._model.records import InstanceStatus, StepResult, WorkflowInstance
from ..._model.eventlog import terminal_event
from ..._model.serde import decode_instance, decode_step
from ...errors import StoreError
from .._base import step_key_bytes
from .._join import join_steps
from .._lease import LeaseLost
from . import eventlog, jobkeys, queues
from .env import Tables

__all__ = ["create", "delete", "fence", "finished", "load", "load_steps", "put", "scan_index"]

_FINISHED = tuple(s.value.encode() + b"\0" for s in InstanceStatus if s.finished)


def finished(status_entry: bytes) -> bool:
    """Whether a ``status`` database entry (``status NUL workflow``) is a finished status."""
    return status_entry.startswith(_FINISHED)


# -- reads --------------------------------------------------------------------------


def load_steps(txn: lmdb.Transaction, t: Tables, path: str, instance_id: str) -> dict[str, StepResult]:
    """Every checkpoint of an instance, keyed by checkpoint key."""
    prefix = instance_id.encode() + b"\0"
    out: dict[str, StepResult] = {}
    cursor = txn.cursor(db=t.steps)
    if cursor.set_range(prefix):
        for k, v in cursor:
            k, v = bytes(k), bytes(v)
            if not k.startswith(prefix):
                break
            where = f"{path}:steps/{k!r}"
            step = decode_step(v, where, path)
            try:
                stored_as: bytes | None = step_key_bytes(instance_id, step.key)
            except UnicodeEncodeError:  # a key no write could have stored (a lone surrogate)
                stored_as = None
            if stored_as != k:
                raise StoreError(f"corrupt record at {where}: it holds step {step.key!r}", path=path)
            out[step.key] = step
    return out


def load(txn: lmdb.Transaction, t: Tables, path: str, instance_id: str,
         with_steps: bool = True) -> WorkflowInstance | None:
    """The instance (with its step results unless ``with_steps`` is false), or ``None``."""
    if not is_valid_id(instance_id):
        return None
    data = txn.get(instance_id.encode(), db=t.instances)
    if data is None:
        return None
    where = f"{path}:instances/{instance_id}"
    inst = decode_instance(bytes(data), where, path)
    if inst.id != instance_id:
        raise StoreError(f"corrupt record at {where}: it holds instance {inst.id!r}", path=path)
    if with_steps:
        inst = join_steps(inst, load_steps(txn, t, path, instance_id).values())
    return inst


def scan_index(txn: lmdb.Transaction, t: Tables, path: str, prefixes: list[bytes],
               steps: bool, waiting: bool = True) -> list[WorkflowInstance]:
    """The instances whose ``index`` entries start with one of ``prefixes``, oldest first (``waiting=False``: not
    those waiting in a queue, which are not read)."""
    out: list[WorkflowInstance] = []
    cursor = txn.cursor(db=t.index)
    for prefix in prefixes:
        if not cursor.set_range(prefix):
            continue
        for raw in cursor.iternext(keys=True, values=False):
            k = bytes(raw)
            if not k.startswith(prefix):
                break
            instance_id = k.rsplit(b"\0", 1)[1]
            if not waiting and txn.get(instance_id, db=t.qpos) is not None:
                continue  # waiting in a queue (or for its delay)
            inst = load(txn, t, path, instance_id.decode(), steps)
            if inst is not None:
                out.append(inst)
    out.sort(key=lambda i: (i.created_at is None, i.created_at or 0, i.id))
    return out


# -- writes (writer thread) ---------------------------------------------------------


def fence(txn: lmdb.Transaction, t: Tables, key: bytes, owner: str | None) -> LeaseLost | None:
    """Why a write fenced by ``owner`` must not land, or ``None``."""
    if owner is None:
        return None
    holder = txn.get(key, db=t.leases)
    if holder is None or bytes(holder) != owner.encode():
        return LeaseLost(f"instance {key.decode()!r} is no longer held by this engine")
    status = txn.get(key, db=t.status)
    if status is not None and finished(bytes(status)):
        return LeaseLost(f"instance {key.decode()!r} finished meanwhile")
    return None


def put(txn: lmdb.Transaction, t: Tables, inst: WorkflowInstance, data: bytes,
        owner: str | None = None) -> LeaseLost | None:
    """Store the instance record ``data`` of ``inst`` and index its status (fenced by ``owner``)."""
    key = inst.id.encode()
    found = txn.get(key, db=t.status)
    old = bytes(found) if found is not None else None
    new = f"{InstanceStatus(inst.status).value}\0{inst.workflow_name}".encode()
    if old is not None and old != new and finished(old):
        # A finished status is final: a late write (another process, a race) never reopens it.
        return LeaseLost(f"instance {inst.id!r} finished meanwhile") if owner is not None else None
    lost = fence(txn, t, key, owner)
    if lost is not None:
        return lost
    if finished(new):
        txn.delete(key, db=t.leases)
        if old is None or not finished(old):
            _ended(txn, t, inst, key)
    if old != new:
        if old is not None:
            txn.delete(old + b"\0" + key, db=t.index)
        txn.put(key, new, db=t.status)
        txn.put(new + b"\0" + key, b"", db=t.index)
    txn.put(key, data, db=t.instances)
    return None


def _ended(txn: lmdb.Transaction, t: Tables, inst: WorkflowInstance, key: bytes) -> None:
    """An instance reached a finished status: it leaves its queue, its jobs go, its event log ends."""
    queues.unqueue(txn, t, inst)
    jobkeys.delete_for(txn, t, key)
    event = terminal_event(inst)
    if event is not None:
        eventlog.append(txn, t, key, event)


def create(txn: lmdb.Transaction, t: Tables, inst: WorkflowInstance, data: bytes,
           owner: tuple[bytes, bytes] | None, not_before_us: int | None = None) -> bool | str:
    """Store a new instance unless its id exists, leased to ``owner`` (its id and record, encoded).

    ``False`` if the id exists; the id of the unfinished instance holding its
    dedup id in its queue, if one does (nothing written); else ``True``. A
    pending instance with a queue and no owner is queued for a worker.
    """
    key = inst.id.encode()
    if txn.get(key, db=t.instances) is not None:
        return False
    holder = queues.dedup_holder(txn, t, inst)
    if holder is not None:
        return holder
    put(txn, t, inst, data)
    if inst.queue is not None and owner is None and inst.status == InstanceStatus.PENDING:
        queues.enqueue(txn, t, inst, not_before_us)
    if owner is not None:
        owner_id, encoded = owner
        txn.put(owner_id, encoded, db=t.owners)
        txn.put(key, owner_id, db=t.leases)
    return True


def cancel(txn: lmdb.Transaction, t: Tables, key: bytes, fields: dict[str, object]) -> WorkflowInstance | None:
    """Record an unfinished instance ``cancelled`` (``fields``: error, error_type, completed_at); the record
    written, or ``None`` if it is missing or finished (read in this transaction: no race with its engine)."""
    from ..._model.records import replace_instance
    from ..._model.serde import encode_instance

    status = txn.get(key, db=t.status)
    data = txn.get(key, db=t.instances)
    if status is None or data is None or finished(bytes(status)):
        return None
    inst = replace_instance(decode_instance(bytes(data)), status=InstanceStatus.CANCELLED, **fields)
    put(txn, t, inst, encode_instance(inst))
    return inst


def delete(txn: lmdb.Transaction, t: Tables, key: bytes) -> bool:
    """Remove an instance with its checkpoints, signals, lease, queue entries, jobs and events."""
    data = txn.get(key, db=t.instances)
    if data is not None:
        try:
            queues.unqueue(txn, t, decode_instance(bytes(data)))
        except StoreError:
            pass  # a corrupt record: what it held in queues cannot be known
    jobkeys.delete_for(txn, t, key)
    eventlog.delete_all(txn, t, key)
    old = txn.get(key, db=t.status)
    if old is not None:
        txn.delete(bytes(old) + b"\0" + key, db=t.index)
        txn.delete(key, db=t.status)
    prefix = key + b"\0"
    for db in (t.steps, t.signals):
        cursor = txn.cursor(db=db)
        if cursor.set_range(prefix):
            while bytes(cursor.key()).startswith(prefix):
                if not cursor.delete():
                    break
    txn.delete(key, db=t.leases)
    return bool(txn.delete(key, db=t.instances))

