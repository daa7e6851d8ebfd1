"""The PostgreSQL store's external jobs (``jobs``): queued, held by a worker, finished.

A job waits with ``holder`` NULL; a claim sets ``holder`` (``FOR UPDATE SKIP
LOCKED``); a job whose holder is gone is taken again by the next claim on its
queue (a conditional update: two workers never both take it). Finishing a
job removes it and queues its outcome as the instance's internal signal, in
one transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import Cursor

from ..._model.queues import admit
from .queues import get_queue, load_starts, save_starts
from .owners import OwnerRow, holders_alive, put_owner
from .tables import send_signal

Cur = Cursor[Any]


def enqueue(cur: Cur, instance_id: str, key: bytes, queue: str, data: bytes, signal: str) -> bool:
    """Queue a job unless it is queued or held already, or its outcome is delivered; whether it was new."""
    cur.execute("SELECT 1 FROM signals WHERE instance_id = %s AND name = %s LIMIT 1", (instance_id, signal))
    if cur.fetchone() is not None:
        return False  # done: its outcome waits for the workflow to take it
    cur.execute("INSERT INTO jobs (instance_id, key, queue, seq, record) VALUES (%s, %s, %s, nextval('queue_seq'), "
                "%s) ON CONFLICT (instance_id, key) DO NOTHING", (instance_id, key, queue, data))
    return cur.rowcount > 0


def claim(cur: Cur, owner: OwnerRow, served: list[tuple[str, int | None]], limit: int,
          now: datetime, now_us: int, ttl: float | None) -> list[bytes]:
    """Take up to ``limit`` jobs of the ``served`` queues: first those held by workers that are gone, then
    waiting ones, under each queue's ``concurrency`` (jobs held) and ``rate_limit``; their records."""
    owner_id = owner[0]
    put_owner(cur, *owner)
    names = [q for q, _ in served]
    out: list[bytes] = []
    cur.execute("SELECT instance_id, key, queue, holder FROM jobs WHERE holder IS NOT NULL AND holder <> %s "
                "AND queue = ANY(%s) ORDER BY seq", (owner_id, names))
    held_by_others = cur.fetchall()
    alive_of = holders_alive(cur, [r[3] for r in held_by_others], ttl)
    slots = dict(served)
    reclaimed: dict[str, int] = {}
    for iid, key, queue, holder in held_by_others:
        if alive_of[holder]:
            continue
        free = slots.get(queue)
        if len(out) >= limit or (free is not None and reclaimed.get(queue, 0) >= free):
            continue
        cur.execute("UPDATE jobs SET holder = %s WHERE instance_id = %s AND key = %s AND holder = %s "
                    "RETURNING record", (owner_id, iid, key, holder))
        row = cur.fetchone()
        if row is None:
            continue  # taken or finished meanwhile
        out.append(bytes(row[0]))
        reclaimed[queue] = reclaimed.get(queue, 0) + 1
    for q, free in served:
        queue = get_queue(cur, q)
        limited = queue is not None and (queue.concurrency is not None or queue.rate_limit is not None)
        if limited:
            queue = get_queue(cur, q, lock=True)

        def held() -> int:
            cur.execute("SELECT count(*) FROM jobs WHERE queue = %s AND holder IS NOT NULL", (q,))
            row = cur.fetchone()
            return int(row[0]) if row is not None else 0

        adm = admit(queue, in_flight=held, starts=load_starts(cur, q) if limited else [], now_us=now_us,
                    free=free - reclaimed.get(q, 0) if free is not None else None, remaining=limit - len(out))
        if adm.allowed <= 0:
            continue
        cur.execute("UPDATE jobs SET holder = %s WHERE (instance_id, key) IN (SELECT instance_id, key FROM jobs "
                    "WHERE queue = %s AND holder IS NULL ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED) "
                    "RETURNING seq, record", (owner_id, q, adm.allowed))
        picked = sorted(cur.fetchall())
        out.extend(bytes(r[1]) for r in picked)
        save_starts(cur, q, adm, len(picked), now_us, lambda _: None)
    return out


def claimable(cur: Cur, owner_id: str, names: list[str], ttl: float | None) -> bool:
    """Whether a job of those queues waits, or is held by a worker that is gone (a read before a claim)."""
    cur.execute("SELECT EXISTS (SELECT 1 FROM jobs WHERE holder IS NULL AND queue = ANY(%s))", (names,))
    row = cur.fetchone()
    if row is not None and row[0]:
        return True
    cur.execute("SELECT DISTINCT holder FROM jobs WHERE holder IS NOT NULL AND holder <> %s AND queue = ANY(%s)",
                (owner_id, names))
    holders = [r[0] for r in cur.fetchall()]
    return not all(holders_alive(cur, holders, ttl).values())


def note_attempts(cur: Cur, instance_id: str, key: bytes, owner_id: str, data: bytes) -> bool:
    """Replace the record of a job this owner holds; ``False`` if it holds it no more."""
    cur.execute("UPDATE jobs SET record = %s WHERE instance_id = %s AND key = %s AND holder = %s",
                (data, instance_id, key, owner_id))
    return cur.rowcount > 0


def finish(cur: Cur, instance_id: str, key: bytes, owner_id: str, signal: str, payload: bytes) -> bool:
    """Remove a job this owner holds and queue its outcome signal; ``False`` (nothing written) if it holds it
    no more."""
    cur.execute("DELETE FROM jobs WHERE instance_id = %s AND key = %s AND holder = %s", (instance_id, key, owner_id))
    if cur.rowcount == 0:
        return False
    send_signal(cur, instance_id, signal, payload)
    return True


def waiting(cur: Cur, instance_id: str | None) -> list[tuple[str, bytes, bytes, str | None]]:
    """Jobs (of one instance, or all): ``(instance id, key, record, holder or None)`` each."""
    if instance_id is None:
        cur.execute("SELECT instance_id, key, record, holder FROM jobs ORDER BY instance_id, key")
    else:
        cur.execute("SELECT instance_id, key, record, holder FROM jobs WHERE instance_id = %s ORDER BY key",
                    (instance_id,))
    return [(r[0], bytes(r[1]), bytes(r[2]), r[3]) for r in cur.fetchall()]
