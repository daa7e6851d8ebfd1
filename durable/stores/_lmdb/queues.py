"""The LMDB store's queues: queued instances, their limits, and claiming them.

``queues``    queue name -> JSON :class:`~durable.Queue` (its limits, as last registered)
``queued``    ``queue NUL priority(4) seq(8)`` -> ``id NUL workflow NUL not_before``: instances
              waiting for a worker, in the order workers take them (higher priority
              first, then first in first out)
``qpos``      instance id -> its ``queued`` key (while it waits)
``inflight``  ``queue NUL id`` -> empty: taken by a worker and not finished (what
              ``concurrency`` counts)
``qstate``    queue name -> JSON list of recent start times (what ``rate_limit`` counts)
``dedup``     ``queue NUL dedup id`` -> the id of the unfinished instance holding it

Every claim runs in one write transaction, and LMDB has one writer at a time
across processes: the counts a claim reads are exact, whichever worker claims.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import attrs
import lmdb

from ..._model.queues import MAX_PRIORITY, Admission, Queue, admit, record_starts
from ..._model.records import WorkflowInstance
from .._lease import Owner
from .env import Tables, next_seq

__all__ = ["claim", "enqueue", "get_queue", "queue_depths", "register_queue", "unqueue"]

_NO_TIME = b""


def _queued_key(queue: str, priority: int, seq: int) -> bytes:
    return queue.encode() + b"\0" + (MAX_PRIORITY - priority).to_bytes(4, "big") + seq.to_bytes(8, "big")


def get_queue(txn: lmdb.Transaction, t: Tables, name: str) -> Queue | None:
    """The queue ``name`` as registered, or ``None``."""
    data = txn.get(name.encode(), db=t.queues)
    return Queue.decode(bytes(data)) if data is not None else None


def register_queue(txn: lmdb.Transaction, t: Tables, name: bytes, data: bytes) -> None:
    """Record a queue's limits (the last registration wins)."""
    txn.put(name, data, db=t.queues)


def dedup_holder(txn: lmdb.Transaction, t: Tables, inst: WorkflowInstance) -> str | None:
    """The id of the unfinished instance holding ``inst``'s dedup id in its queue, if another does."""
    if inst.dedup_id is None or inst.queue is None:
        return None
    found = txn.get(inst.queue.encode() + b"\0" + inst.dedup_id.encode(), db=t.dedup)
    if found is None or bytes(found) == inst.id.encode():
        return None
    return bytes(found).decode()


_DELAYED = b"\xff"  # a qpos value starting so names a ``delayed`` key (no UTF-8 queue name starts with 0xff)


def enqueue(txn: lmdb.Transaction, t: Tables, inst: WorkflowInstance, not_before_us: int | None) -> None:
    """Put a new pending instance in its queue (and take its dedup id).

    One with a ``not_before`` waits in ``delayed`` (by time) until a claim
    finds it due and moves it to its place in ``queued``: claims never read
    the entries that are not due yet.
    """
    assert inst.queue is not None
    queue = get_queue(txn, t, inst.queue)
    priority = inst.priority if queue is not None and queue.priority else 0
    key = _queued_key(inst.queue, priority, next_seq(txn, t))
    value = inst.id.encode() + b"\0" + inst.workflow_name.encode() + b"\0"
    if not_before_us is not None:
        delayed = max(0, not_before_us).to_bytes(8, "big") + key[-8:]
        txn.put(delayed, len(key).to_bytes(2, "big") + key + value, db=t.delayed)
        txn.put(inst.id.encode(), _DELAYED + delayed, db=t.qpos)
    else:
        txn.put(key, value, db=t.queued)
        txn.put(inst.id.encode(), key, db=t.qpos)
    if inst.dedup_id is not None:
        txn.put(inst.queue.encode() + b"\0" + inst.dedup_id.encode(), inst.id.encode(), db=t.dedup)


def promote(txn: lmdb.Transaction, t: Tables, now_us: int) -> None:
    """Move the delayed entries that are due (``not_before`` <= now) to their places in ``queued``."""
    cursor = txn.cursor(db=t.delayed)
    due: list[tuple[bytes, bytes]] = []
    if cursor.first():
        for k, v in cursor:
            if int.from_bytes(bytes(k)[:8], "big") > now_us:
                break
            due.append((bytes(k), bytes(v)))
    for k, v in due:
        size = int.from_bytes(v[:2], "big")
        key, value = v[2:2 + size], v[2 + size:]
        txn.delete(k, db=t.delayed)
        txn.put(key, value, db=t.queued)
        txn.put(value.split(b"\0", 1)[0], key, db=t.qpos)


def first_delayed(txn: lmdb.Transaction, t: Tables) -> int | None:
    """When the earliest delayed entry comes due (µs), if any."""
    cursor = txn.cursor(db=t.delayed)
    return int.from_bytes(bytes(cursor.key())[:8], "big") if cursor.first() else None


def remove_waiting(txn: lmdb.Transaction, t: Tables, instance_key: bytes) -> bytes | None:
    """Take an instance out of its queue (waiting or delayed); its queue's name, or ``None`` if it was in none."""
    pos = txn.get(instance_key, db=t.qpos)
    if pos is None:
        return None
    pos = bytes(pos)
    txn.delete(instance_key, db=t.qpos)
    if pos.startswith(_DELAYED):
        found = txn.get(pos[1:], db=t.delayed)
        txn.delete(pos[1:], db=t.delayed)
        if found is None:
            return None
        found = bytes(found)
        pos = found[2:2 + int.from_bytes(found[:2], "big")]
    else:
        txn.delete(pos, db=t.queued)
    return pos.split(b"\0", 1)[0]


def unqueue(txn: lmdb.Transaction, t: Tables, inst: WorkflowInstance) -> None:
    """A finished (or deleted) instance leaves its queue: waiting entry, in-flight entry, dedup id."""
    key = inst.id.encode()
    remove_waiting(txn, t, key)
    if inst.queue is not None:
        txn.delete(inst.queue.encode() + b"\0" + key, db=t.inflight)
        if inst.dedup_id is not None:
            dkey = inst.queue.encode() + b"\0" + inst.dedup_id.encode()
            if txn.get(dkey, db=t.dedup) == key:
                txn.delete(dkey, db=t.dedup)


def _count(txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes) -> int:
    cursor = txn.cursor(db=db)
    n = 0
    if cursor.set_range(prefix):
        for raw in cursor.iternext(keys=True, values=False):
            if not bytes(raw).startswith(prefix):
                break
            n += 1
    return n


def queue_depths(txn: lmdb.Transaction, t: Tables, name: str) -> tuple[int, int]:
    """``(waiting, in flight)`` of queue ``name``."""
    prefix = name.encode() + b"\0"
    delayed = sum(1 for _, v in txn.cursor(db=t.delayed) if bytes(v)[2:].startswith(prefix))
    return _count(txn, t.queued, prefix) + delayed, _count(txn, t.inflight, prefix)


def load_starts(txn: lmdb.Transaction, t: Tables, name: str) -> list[int]:
    """The recorded recent start times (µs) of queue ``name`` (what ``rate_limit`` counts)."""
    raw = txn.get(name.encode(), db=t.qstate)
    return list(json.loads(bytes(raw))) if raw is not None else []


def save_starts(txn: lmdb.Transaction, t: Tables, name: str, adm: Admission, count: int, now_us: int,
                due_at: Callable[[int], None]) -> None:
    """Record ``count`` more starts of queue ``name`` at ``now_us`` (if it has a rate limit)."""
    starts, due = record_starts(adm, count, now_us)
    if starts is not None:
        txn.put(name.encode(), json.dumps(starts).encode(), db=t.qstate)
    if due is not None:
        due_at(due)


@attrs.define
class Selection:
    """What a claim would take, queue by queue (found by reads only: :func:`select`)."""

    picks: list[tuple[str, Admission, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]] = attrs.Factory(list)
    next_due: int | None = None

    promote: bool = False  #: delayed entries are due: a claim must move them to the queue first

    def due_at(self, when: int) -> None:
        self.next_due = when if self.next_due is None else min(self.next_due, when)

    @property
    def writes(self) -> bool:
        """Whether applying it writes anything (something to take, a stale entry to drop, entries come due)."""
        return self.promote or any(picked or stale for _, _, picked, stale in self.picks)


def select(txn: lmdb.Transaction, t: Tables, served: list[tuple[str, int | None]],
           workflows: frozenset[str] | None, limit: int | None, now_us: int) -> Selection:
    """What :func:`claim` takes, by reads alone: per queue, its admission, the entries to take, and the stale
    entries (of instances finished or gone) to drop."""
    sel = Selection()
    first = first_delayed(txn, t)
    if first is not None:
        if first <= now_us:
            sel.promote = True
        else:
            sel.due_at(first)
    count = 0
    for name, free in served:
        prefix = name.encode() + b"\0"
        adm = admit(get_queue(txn, t, name), in_flight=lambda: _count(txn, t.inflight, prefix),
                    starts=load_starts(txn, t, name), now_us=now_us, free=free,
                    remaining=limit - count if limit is not None else None)
        if adm.due is not None:
            sel.due_at(adm.due)
        if adm.allowed <= 0:
            continue
        picked: list[tuple[bytes, bytes]] = []
        stale: list[tuple[bytes, bytes]] = []
        cursor = txn.cursor(db=t.queued)
        if cursor.set_range(prefix):
            for k, v in cursor:
                k = bytes(k)
                if not k.startswith(prefix):
                    break
                iid, workflow, nb = bytes(v).split(b"\0", 2)
                status = txn.get(iid, db=t.status)
                if status is None or not bytes(status).startswith(b"pending\0"):
                    stale.append((k, iid))  # finished or gone meanwhile (an older writer): never hold a slot
                    continue
                if workflows is not None and workflow.decode() not in workflows:
                    continue
                if nb and int(nb) > now_us:
                    sel.due_at(int(nb))
                    continue
                picked.append((k, iid))
                if len(picked) >= adm.allowed:
                    break
        count += len(picked)
        sel.picks.append((name, adm, picked, stale))
    return sel


def claim(txn: lmdb.Transaction, t: Tables, owner: Owner, served: list[tuple[str, int | None]],
          workflows: frozenset[str] | None, limit: int | None, now_us: int) -> tuple[list[str], int | None]:
    """Take waiting instances of the ``served`` queues (each with this worker's free slots, ``None``: any).

    Honours each queue's ``concurrency`` and ``rate_limit`` as stored, takes only
    instances of ``workflows`` (``None``: any) that are due, at most ``limit`` in
    all. Returns the ids taken (leased to ``owner``, in flight) and the earliest
    time (µs) a skipped instance or a rate limit will let one more be taken, if any.
    """
    txn.put(owner.id.encode(), owner.encode(), db=t.owners)
    me = owner.id.encode()
    promote(txn, t, now_us)
    sel = select(txn, t, served, workflows, limit, now_us)
    taken: list[str] = []
    for name, adm, picked, stale in sel.picks:
        prefix = name.encode() + b"\0"
        for k, iid in stale:
            txn.delete(k, db=t.queued)
            txn.delete(iid, db=t.qpos)
        for k, iid in picked:
            txn.delete(k, db=t.queued)
            txn.delete(iid, db=t.qpos)
            txn.put(prefix + iid, b"", db=t.inflight)
            txn.put(iid, me, db=t.leases)
            taken.append(iid.decode())
        save_starts(txn, t, name, adm, len(picked), now_us, sel.due_at)
    return taken, sel.next_due
