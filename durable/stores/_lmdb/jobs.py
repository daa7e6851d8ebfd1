"""The LMDB store's external jobs (``jobs``, ``jobq``, ``jobheld``).

``jobs``     ``instance id NUL step key`` -> an encoded :class:`~durable._model.jobs.JobRecord`
``jobq``     ``queue NUL seq(8)`` -> job key: jobs waiting for a worker, oldest first
``jobheld``  job key -> ``owner id NUL queue``: jobs a worker has taken

A job whose worker is gone (its owner record dead or expired) is taken again
by the next claim on its queue. Finishing a job removes it and queues its
outcome as the instance's internal signal, in one transaction.
"""

from __future__ import annotations

import lmdb

from ..._model.queues import admit
from .._lease import Owner, record_alive
from . import signals
from .jobkeys import delete_for
from .queues import get_queue, load_starts, save_starts
from .env import Tables, next_seq
from .leases import owner_in

__all__ = ["claim", "delete_for", "enqueue", "finish", "note_attempts", "waiting"]


def enqueue(txn: lmdb.Transaction, t: Tables, job_key: bytes, queue: bytes, data: bytes,
            outcome_prefix: bytes) -> bool:
    """Queue a job unless it is queued or held already, or its outcome is delivered (a replay queues it
    again); whether it was new."""
    if txn.get(job_key, db=t.jobs) is not None:
        return False
    cursor = txn.cursor(db=t.signals)
    if cursor.set_range(outcome_prefix) and bytes(cursor.key()).startswith(outcome_prefix):
        return False  # done: its outcome waits for the workflow to take it
    txn.put(job_key, data, db=t.jobs)
    txn.put(queue + b"\0" + next_seq(txn, t).to_bytes(8, "big"), job_key, db=t.jobq)
    return True


def claim(txn: lmdb.Transaction, t: Tables, owner: Owner, served: list[tuple[str, int | None]], limit: int,
          now_us: int) -> list[tuple[bytes, bytes]]:
    """Take up to ``limit`` jobs of the ``served`` queues (each with this worker's free slots; ``None``: any):
    first those held by workers that are gone (they count in flight already), then waiting ones, under each
    queue's ``concurrency`` (jobs held) and ``rate_limit`` (starts, shared with the queue's instances).
    ``(key, data)`` each."""
    txn.put(owner.id.encode(), owner.encode(), db=t.owners)
    me = owner.id.encode()
    out: list[tuple[bytes, bytes]] = []
    wanted = {q.encode() for q, _ in served}
    held: dict[bytes, int] = {}
    alive: dict[bytes, bool] = {}
    stale: list[tuple[bytes, bytes]] = []
    for k, v in txn.cursor(db=t.jobheld):
        holder, _, queue = bytes(v).partition(b"\0")
        held[queue] = held.get(queue, 0) + 1
        if queue not in wanted or holder == me:
            continue
        if holder not in alive:
            alive[holder] = record_alive(owner_in(txn, t, holder.decode()))
        if not alive[holder]:
            stale.append((bytes(k), queue))
    slots = {q.encode(): free for q, free in served}
    reclaimed: dict[bytes, int] = {}
    for job_key, queue in stale:
        free = slots.get(queue)
        if len(out) >= limit or (free is not None and reclaimed.get(queue, 0) >= free):
            continue  # this worker has no slot for it: another worker (or a later look) takes it
        data = txn.get(job_key, db=t.jobs)
        if data is None:
            txn.delete(job_key, db=t.jobheld)
            continue
        txn.put(job_key, me + b"\0" + queue, db=t.jobheld)
        out.append((job_key, bytes(data)))
        reclaimed[queue] = reclaimed.get(queue, 0) + 1
    for q, free in served:
        qb = q.encode()
        adm = admit(get_queue(txn, t, q), in_flight=lambda: held.get(qb, 0), starts=load_starts(txn, t, q),
                    now_us=now_us, free=free - reclaimed.get(qb, 0) if free is not None else None,
                    remaining=limit - len(out))
        if adm.allowed <= 0:
            continue
        prefix = qb + b"\0"
        picked: list[tuple[bytes, bytes]] = []
        cursor = txn.cursor(db=t.jobq)
        if cursor.set_range(prefix):
            for k, v in cursor:
                if len(picked) >= adm.allowed or not bytes(k).startswith(prefix):
                    break
                picked.append((bytes(k), bytes(v)))
        started = 0
        for k, job_key in picked:
            txn.delete(k, db=t.jobq)
            data = txn.get(job_key, db=t.jobs)
            if data is None:
                continue  # cancelled meanwhile
            txn.put(job_key, me + b"\0" + qb, db=t.jobheld)
            out.append((job_key, bytes(data)))
            started += 1
        save_starts(txn, t, q, adm, started, now_us, lambda _: None)
    return out


def stale_held(txn: lmdb.Transaction, t: Tables, owner_id: str, queues: list[str]) -> bool:
    """Whether a job of ``queues`` is held by a worker that is gone (one to take over)."""
    wanted = {q.encode() for q in queues}
    me = owner_id.encode()
    alive: dict[bytes, bool] = {}
    for _, v in txn.cursor(db=t.jobheld):
        holder, _, queue = bytes(v).partition(b"\0")
        if queue in wanted and holder != me:
            if holder not in alive:
                alive[holder] = record_alive(owner_in(txn, t, holder.decode()))
            if not alive[holder]:
                return True
    return False


def note_attempts(txn: lmdb.Transaction, t: Tables, job_key: bytes, owner_id: bytes, data: bytes) -> bool:
    """Replace the record of a job this owner holds (its attempts so far); ``False`` if it holds it no more."""
    held = txn.get(job_key, db=t.jobheld)
    if held is None or bytes(held).partition(b"\0")[0] != owner_id or txn.get(job_key, db=t.jobs) is None:
        return False
    txn.put(job_key, data, db=t.jobs)
    return True


def finish(txn: lmdb.Transaction, t: Tables, job_key: bytes, owner_id: bytes, signal_prefix: bytes,
           payload: bytes) -> bool:
    """Remove a job this owner holds and queue its outcome signal; ``False`` (nothing written) if it holds it no more."""
    held = txn.get(job_key, db=t.jobheld)
    if held is None or bytes(held).partition(b"\0")[0] != owner_id or txn.get(job_key, db=t.jobs) is None:
        return False
    txn.delete(job_key, db=t.jobheld)
    txn.delete(job_key, db=t.jobs)
    signals.send(txn, t, signal_prefix, payload)
    return True


def waiting(txn: lmdb.Transaction, t: Tables, instance_id: str | None) -> list[tuple[bytes, bytes, bytes | None]]:
    """Jobs (of one instance, or all): ``(key, data, holder or None)`` each."""
    prefix = instance_id.encode() + b"\0" if instance_id is not None else b""
    out: list[tuple[bytes, bytes, bytes | None]] = []
    cursor = txn.cursor(db=t.jobs)
    if cursor.set_range(prefix) if prefix else cursor.first():
        for k, v in cursor:
            k = bytes(k)
            if not k.startswith(prefix):
                break
            held = txn.get(k, db=t.jobheld)
            out.append((k, bytes(v), bytes(held).partition(b"\0")[0] if held is not None else None))
    return out
