"""The PostgreSQL store's queues: queued instances, their limits, claiming them; the worker registry.

A waiting instance is a row of ``instances`` with ``queue_state = 'waiting'``;
a claim takes them with ``FOR UPDATE SKIP LOCKED`` (racing workers never take
one twice, nor wait for each other). A queue with limits (``concurrency``,
``rate_limit``) is claimed under its ``queues`` row lock, so the in-flight
count and the recent starts a claim reads are exact, whichever worker claims.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from psycopg import Cursor

from ..._model.queues import Admission, Queue, admit, record_starts
from ..._model.records import WorkflowInstance
from .owners import OwnerRow, alive, put_owner

Cur = Cursor[Any]


def get_queue(cur: Cur, name: str, lock: bool = False) -> Queue | None:
    """The queue ``name`` as registered (its row locked till commit if ``lock``), or ``None``."""
    cur.execute("SELECT record FROM queues WHERE name = %s" + (" FOR UPDATE" if lock else ""), (name,))
    row = cur.fetchone()
    return Queue.decode(row[0].encode()) if row is not None else None


def register_queue(cur: Cur, name: str, record: str) -> None:
    """Record a queue's limits (the last registration wins)."""
    cur.execute("INSERT INTO queues VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
                (name, record))


def enqueue(cur: Cur, inst: WorkflowInstance, due: bool = False) -> None:
    """Put a pending instance in its queue (and take its dedup id); ``due``: at once, whatever its
    ``not_before``."""
    assert inst.queue is not None
    queue = get_queue(cur, inst.queue)
    priority = inst.priority if queue is not None and queue.priority else 0
    cur.execute("UPDATE instances SET queue_state = 'waiting', queue_seq = nextval('queue_seq'), "
                "queue_priority = %s, queue_due = %s WHERE id = %s",
                (priority, None if due else inst.not_before, inst.id))
    if inst.dedup_id is not None:
        cur.execute("INSERT INTO dedup VALUES (%s, %s, %s) ON CONFLICT (queue, dedup_id) "
                    "DO UPDATE SET instance_id = EXCLUDED.instance_id", (inst.queue, inst.dedup_id, inst.id))


def unqueue(cur: Cur, inst: WorkflowInstance) -> None:
    """A finished (or deleted) instance leaves its queue: waiting or in flight, and its dedup id."""
    cur.execute("UPDATE instances SET queue_state = NULL WHERE id = %s AND queue_state IS NOT NULL", (inst.id,))
    if inst.queue is not None and inst.dedup_id is not None:
        cur.execute("DELETE FROM dedup WHERE queue = %s AND dedup_id = %s AND instance_id = %s",
                    (inst.queue, inst.dedup_id, inst.id))


def queue_depths(cur: Cur, name: str) -> tuple[int, int]:
    """``(waiting, in flight)`` of queue ``name``."""
    cur.execute("SELECT count(*) FILTER (WHERE queue_state = 'waiting'), "
                "count(*) FILTER (WHERE queue_state = 'inflight') FROM instances WHERE queue = %s "
                "AND queue_state IS NOT NULL", (name,))
    row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def in_flight(cur: Cur, name: str) -> int:
    cur.execute("SELECT count(*) FROM instances WHERE queue = %s AND queue_state = 'inflight'", (name,))
    row = cur.fetchone()
    assert row is not None
    return int(row[0])


def load_starts(cur: Cur, name: str) -> list[int]:
    """The recorded recent start times (µs) of queue ``name`` (what ``rate_limit`` counts)."""
    cur.execute("SELECT starts FROM queue_starts WHERE name = %s", (name,))
    row = cur.fetchone()
    return list(json.loads(row[0])) if row is not None else []


def save_starts(cur: Cur, name: str, adm: Admission, count: int, now_us: int, due_at: Callable[[int], None]) -> None:
    """Record ``count`` more starts of queue ``name`` at ``now_us`` (if it has a rate limit)."""
    starts, due = record_starts(adm, count, now_us)
    if starts is not None:
        cur.execute("INSERT INTO queue_starts VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET starts = "
                    "EXCLUDED.starts", (name, json.dumps(starts)))
    if due is not None:
        due_at(due)


STEP_ARRAYS = ("(SELECT array_agg(s.key ORDER BY s.key) FROM steps s WHERE s.instance_id = {i}.id), "
               "(SELECT array_agg(s.record ORDER BY s.key) FROM steps s WHERE s.instance_id = {i}.id)")
"""An instance's step keys and records, as two arrays in the same order (``{i}``: the instances table's name
or alias). Both are ordered by key: two aggregates over two scans are otherwise free to read the rows in
different orders (an index-only scan for the keys, a heap scan for the records), pairing keys with the wrong
records."""


def anything_waiting(cur: Cur, names: list[str]) -> bool:
    """Whether an instance waits in one of the queues ``names`` (due or not)."""
    cur.execute("SELECT EXISTS (SELECT 1 FROM instances WHERE queue_state = 'waiting' AND queue = ANY(%s))",
                (names,))
    row = cur.fetchone()
    return bool(row and row[0])


def claim(cur: Cur, owner: OwnerRow, served: list[tuple[str, int | None]],
          workflows: frozenset[str] | None, limit: int | None, now: datetime,
          now_us: int) -> tuple[list[str], int | None, dict[str, tuple[Any, ...]]]:
    """Take waiting instances of the ``served`` queues (each with this worker's free slots, ``None``: any),
    under each queue's limits, only of ``workflows`` (``None``: any), due at ``now``, at most ``limit`` in all.
    Returns the ids taken (leased to the owner, in flight), the earliest time (µs) a skipped instance or a
    rate limit lets one more be taken, if any, and what the worker reads next of each instance taken, read
    by the claim itself: ``(id, record, step keys, step records)`` (see ``tables.load_with_checkpoints``)."""
    owner_id = owner[0]
    put_owner(cur, *owner)
    next_due: list[int] = []
    taken: list[str] = []
    rows: dict[str, tuple[Any, ...]] = {}
    names = [name for name, _ in served]
    cur.execute("SELECT min(d.queue_due) FROM unnest(%s::text[]) AS q(name), LATERAL (SELECT queue_due "
                "FROM instances WHERE queue_state = 'waiting' AND queue_due IS NOT NULL AND queue = q.name "
                "AND queue_due > %s ORDER BY queue_due LIMIT 1) AS d", (names, now))  # one probe per queue
    row = cur.fetchone()
    if row is not None and row[0] is not None:
        next_due.append(_micros(row[0]))
    for name, free in served:
        queue = get_queue(cur, name)
        limited = queue is not None and (queue.concurrency is not None or queue.rate_limit is not None)
        if limited:
            queue = get_queue(cur, name, lock=True)  # one claim of this queue at a time: exact counts
        adm = admit(queue, in_flight=lambda: in_flight(cur, name), starts=load_starts(cur, name) if limited else [],
                    now_us=now_us, free=free, remaining=limit - len(taken) if limit is not None else None)
        if adm.due is not None:
            next_due.append(adm.due)
        if adm.allowed <= 0:
            continue
        query = ("UPDATE instances SET queue_state = 'inflight' WHERE id IN (SELECT id FROM instances "
                 "WHERE queue_state = 'waiting' AND queue = %s AND status = 'pending' "
                 "AND (queue_due IS NULL OR queue_due <= %s)")
        params: list[Any] = [name, now]
        if workflows is not None:
            query += " AND workflow = ANY(%s)"
            params.append(sorted(workflows))
        query += (" ORDER BY queue_priority DESC, queue_seq LIMIT %s FOR UPDATE SKIP LOCKED) "
                  "RETURNING id, queue_priority, queue_seq, record, " + STEP_ARRAYS.format(i="instances"))
        params.append(adm.allowed)
        cur.execute(query, params)
        found = sorted(cur.fetchall(), key=lambda r: (-r[1], r[2]))
        picked = [r[0] for r in found]
        rows.update((r[0], (r[0], r[3], r[4], r[5])) for r in found)
        if picked:
            cur.execute("INSERT INTO leases (instance_id, owner_id) SELECT unnest(%b::text[]), %s "
                        "ON CONFLICT (instance_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, "
                        "epoch = leases.epoch + 1", (picked, owner_id))
        taken.extend(picked)
        save_starts(cur, name, adm, len(picked), now_us, next_due.append)
    return taken, min(next_due) if next_due else None, rows


def _micros(when: datetime) -> int:
    from ..._model.clock import EPOCH
    from datetime import timedelta

    return (when - EPOCH) // timedelta(microseconds=1)


# -- the worker registry -----------------------------------------------------------------


def put_worker(cur: Cur, owner_id: str, workflows: list[str], queues: list[str], job_queues: list[str],
               workflow_queues: dict[str, str]) -> None:
    """Record what an engine serves, and that its workflows exist (with their own queues)."""
    for name in sorted(workflows):
        cur.execute("INSERT INTO workflows VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET queue = EXCLUDED.queue",
                    (name, workflow_queues.get(name) or None))
    record = {"workflows": sorted(workflows), "queues": sorted(queues), "jobs": sorted(job_queues)}
    cur.execute("INSERT INTO servers VALUES (%s, %s) ON CONFLICT (owner_id) DO UPDATE SET record = EXCLUDED.record",
                (owner_id, json.dumps(record)))


def known_workflows(cur: Cur) -> list[str]:
    cur.execute("SELECT name FROM workflows ORDER BY name")
    return [r[0] for r in cur.fetchall()]


def workflow_queues(cur: Cur) -> dict[str, str]:
    cur.execute("SELECT name, queue FROM workflows WHERE queue IS NOT NULL ORDER BY name")
    return {r[0]: r[1] for r in cur.fetchall()}


def servers(cur: Cur, ttl: float | None) -> dict[str, dict[str, Any]]:
    """What each live engine serves, by owner id (records of dead engines are skipped)."""
    cur.execute("SELECT s.owner_id, s.record, o.record, extract(epoch FROM now() - o.heartbeat)::float8 "
                "FROM servers s JOIN owners o ON o.id = s.owner_id ORDER BY s.owner_id")
    return {oid: json.loads(rec) for oid, rec, orec, age in cur.fetchall() if alive(orec, age, ttl)}
