"""The LMDB store's leases: which engine runs which instance (``leases`` and ``owners`` tables).

``leases``  instance id -> id of the owner running it (unfinished instances)
``owners``  owner id -> JSON :class:`Owner` record (host, pid, heartbeat)
"""

from __future__ import annotations

from datetime import datetime, timedelta

import lmdb

from ..._model.clock import EPOCH

from .._lease import Owner, may_claim, record_alive
from .env import Tables
from . import queues
from .instances import finished

__all__ = ["claim", "delete_owner", "holders", "lost", "orphaned", "owner_in", "put_owner", "requeue"]


def owner_in(txn: lmdb.Transaction, t: Tables, owner_id: str) -> Owner | None:
    """The owner record ``owner_id``, if any."""
    data = txn.get(owner_id.encode(), db=t.owners)
    return Owner.decode(bytes(data)) if data is not None else None


def put_owner(txn: lmdb.Transaction, t: Tables, owner_id: bytes, record: bytes) -> None:
    """Store an owner record (a heartbeat)."""
    txn.put(owner_id, record, db=t.owners)


def delete_owner(txn: lmdb.Transaction, t: Tables, owner_id: bytes) -> None:
    """Remove an owner record (and what it served): its instances may be taken over at once.

    The queued instances it claimed but never started (an engine stopped right
    after a claim) go back to their queues: nothing else would run them.
    """
    from ..._model.serde import decode_instance

    txn.delete(owner_id, db=t.owners)
    txn.delete(b"o\0" + owner_id, db=t.registry)
    held = [bytes(k) for k, v in txn.cursor(db=t.leases) if bytes(v) == owner_id]
    for key in held:
        data = txn.get(key, db=t.instances)
        status = txn.get(key, db=t.status)
        if data is None or status is None or not bytes(status).startswith(b"pending\0"):
            continue
        inst = decode_instance(bytes(data))
        if inst.queue is not None and inst.started_at is None and txn.get(key, db=t.qpos) is None:
            txn.delete(key, db=t.leases)
            txn.delete(inst.queue.encode() + b"\0" + key, db=t.inflight)
            queues.enqueue(txn, t, inst, None if inst.not_before is None else _micros(inst.not_before))


def claim(txn: lmdb.Transaction, t: Tables, ids: list[str], owner: Owner, limit: int | None,
          take_queued: bool = False) -> list[str]:
    """Take the leases of those unfinished instances of ``ids`` whose holder is gone (at most ``limit``);
    with ``take_queued``, those waiting in a queue too (out of it, in flight: past the queue's limits)."""
    txn.put(owner.id.encode(), owner.encode(), db=t.owners)
    alive: dict[str, bool] = {}

    def is_alive(holder: str) -> bool:
        if holder not in alive:
            alive[holder] = record_alive(owner_in(txn, t, holder))
        return alive[holder]

    taken: list[str] = []
    for iid in ids:
        if limit is not None and len(taken) >= limit:
            break
        key = iid.encode()
        status = txn.get(key, db=t.status)
        if status is None or finished(bytes(status)):
            continue
        pos = txn.get(key, db=t.qpos)
        if pos is not None and not take_queued:
            continue  # waiting in a queue (for a worker's claim, under the queue's limits)
        holder = txn.get(key, db=t.leases)
        if may_claim(bytes(holder).decode() if holder is not None else None, owner.id, is_alive):
            if pos is not None:
                queue = queues.remove_waiting(txn, t, key)
                if queue is not None:
                    txn.put(queue + b"\0" + key, b"", db=t.inflight)
            txn.put(key, owner.id.encode(), db=t.leases)
            taken.append(iid)
    return taken


def orphaned(txn: lmdb.Transaction, t: Tables, owner_id: str) -> list[str]:
    """Unfinished instances leased to an owner that is gone (its record missing, or dead), not ``owner_id``."""
    alive: dict[bytes, bool] = {}
    me = owner_id.encode()
    out: list[str] = []
    for k, v in txn.cursor(db=t.leases):
        holder = bytes(v)
        if holder == me:
            continue
        if holder not in alive:
            alive[holder] = record_alive(owner_in(txn, t, holder.decode()))
        if not alive[holder]:
            status = txn.get(k, db=t.status)
            if status is not None and not finished(bytes(status)):
                out.append(bytes(k).decode())
    return out


def lost(txn: lmdb.Transaction, t: Tables, owner_id: str, ids: list[str]) -> list[str]:
    """Those of ``ids`` that ``owner_id`` no longer holds, or that finished."""
    me = owner_id.encode()
    out = []
    for iid in ids:
        key = iid.encode()
        status = txn.get(key, db=t.status)
        if txn.get(key, db=t.leases) != me or status is None or finished(bytes(status)):
            out.append(iid)
    return out


def holders(txn: lmdb.Transaction, t: Tables, ids: list[str]) -> dict[str, str]:
    """The owner id holding each of ``ids`` that is leased."""
    out = {}
    for iid in ids:
        holder = txn.get(iid.encode(), db=t.leases)
        if holder is not None:
            out[iid] = bytes(holder).decode()
    return out


def _micros(when: datetime) -> int:
    return (when - EPOCH) // timedelta(microseconds=1)


def requeue(txn: lmdb.Transaction, t: Tables, key: bytes, default_queue: str, now_us: int) -> bool:
    """Put an unfinished instance whose engine is gone back in its queue (the default one if it has none), for
    a worker to claim at once; ``False`` if it finished, waits in a queue already, or a live engine holds it."""
    from ..._model.serde import decode_instance, encode_instance
    from ..._model.records import replace_instance
    from .instances import put

    status = txn.get(key, db=t.status)
    data = txn.get(key, db=t.instances)
    if status is None or data is None or finished(bytes(status)) or txn.get(key, db=t.qpos) is not None:
        return False
    holder = txn.get(key, db=t.leases)
    if holder is not None and record_alive(owner_in(txn, t, bytes(holder).decode())):
        return False
    inst = decode_instance(bytes(data))
    txn.delete(key, db=t.leases)
    if inst.queue is None:
        inst = replace_instance(inst, queue=default_queue)
        put(txn, t, inst, encode_instance(inst))
    else:
        txn.delete(inst.queue.encode() + b"\0" + key, db=t.inflight)
    queues.enqueue(txn, t, inst, None)
    return True
