"""The PostgreSQL store's event log (``events``): every event of every instance, for readers anywhere.

Ids come from the ``event_seq`` counter in ``meta``, updated under its row
lock, which is held until the transaction commits: a transaction that takes
ids after another commits after it, so ids increase in commit order even with
writers in several processes, and a reader paging by id never skips an event
committed late. So that the lock is held as briefly as can be (it serializes
the commits of every writer that appends events), a batch does not take ids
when its writes append events: they are collected (:func:`collecting`) and
appended by one statement, :func:`append_statement`, that takes the ids and
inserts the events, sent last before ``COMMIT`` and in the same round trip:
the row lock is held from there to the end of the commit, no longer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import Cursor

Cur = Cursor[Any]


def _take_ids(cur: Cur, n: int) -> int:
    cur.execute("UPDATE meta SET value = value + %s WHERE key = 'event_seq' RETURNING value", (n,))
    row = cur.fetchone()
    assert row is not None
    return int(row[0]) - n + 1


_collect = threading.local()


@contextmanager
def collecting(into: list[tuple[str, bytes]]) -> Iterator[None]:
    """While in this block, :func:`append` on this thread collects events ``into`` the list (appended later,
    by :func:`append_statement`, last in the batch's transaction) instead of writing them."""
    before = getattr(_collect, "into", None)
    _collect.into = into
    try:
        yield
    finally:
        _collect.into = before


def append(cur: Cur, instance_id: str, data: bytes) -> None:
    """Append one event to an instance's log (collected, if a batch collects its events)."""
    into: list[tuple[str, bytes]] | None = getattr(_collect, "into", None)
    if into is not None:
        into.append((instance_id, data))
        return
    first = _take_ids(cur, 1)
    cur.execute("INSERT INTO events (id, instance_id, data) VALUES (%s, %s, %s)", (first, instance_id, data))


def ready(events: list[tuple[str, bytes | Callable[[], bytes]]]) -> list[tuple[str, bytes]]:
    """The events with their data encoded (on the writer's thread); one that cannot be encoded is left out."""
    out: list[tuple[str, bytes]] = []
    for iid, data in events:
        if not isinstance(data, bytes):
            try:
                data = data()
            except Exception:  # an event that cannot be stored must never fail the writes it rides with
                logging.getLogger("durable.store").exception("an event could not be encoded; it is left out")
                continue
        out.append((iid, data))
    return out


def append_statement(events: list[tuple[str, bytes]]) -> tuple[str, tuple[Any, ...]]:
    """One statement appending ``events`` in order: it takes their ids (locking the ``event_seq`` row till
    commit) and inserts them. Send it last before ``COMMIT``."""
    n = len(events)
    return ("WITH s AS (UPDATE meta SET value = value + %s WHERE key = 'event_seq' RETURNING value) "
            "INSERT INTO events (id, instance_id, data) SELECT s.value - %s + u.n, u.iid, u.data FROM s, "
            "unnest(%b::text[], %b::bytea[]) WITH ORDINALITY AS u(iid, data, n)",
            (n, n, [i for i, _ in events], [d for _, d in events]))


def append_many(cur: Cur, take: Callable[[], list[tuple[str, bytes | Callable[[], bytes]]]]) -> list[str]:
    """Append the events ``take()`` hands over (``(instance id, data)`` each, in order); the instance ids."""
    events = take()
    ready: list[tuple[str, bytes]] = []
    for iid, data in events:
        if not isinstance(data, bytes):
            try:
                data = data()  # encoded here, on the writer's thread
            except Exception:  # an event that cannot be stored must never fail the writes it rides with
                logging.getLogger("durable.store").exception("an event could not be encoded; it is left out")
                continue
        ready.append((iid, data))
    if ready:
        first = _take_ids(cur, len(ready))
        cur.execute("INSERT INTO events (id, instance_id, data) SELECT * FROM unnest(%b::bigint[], %b::text[], "
                    "%b::bytea[])", (list(range(first, first + len(ready))), [i for i, _ in ready],
                                     [d for _, d in ready]))
    return [iid for iid, _ in events]


def read(cur: Cur, instance_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
    cur.execute("SELECT id, data FROM events WHERE instance_id = %s AND id > %s ORDER BY id LIMIT %s",
                (instance_id, after, limit))
    return [(int(i), bytes(d)) for i, d in cur.fetchall()]


def read_all(cur: Cur, after: int, limit: int) -> list[tuple[int, str, bytes]]:
    cur.execute("SELECT id, instance_id, data FROM events WHERE id > %s ORDER BY id LIMIT %s", (after, limit))
    return [(int(i), str(iid), bytes(d)) for i, iid, d in cur.fetchall()]


def last_id(cur: Cur) -> int:
    cur.execute("SELECT coalesce(max(id), 0) FROM events")
    row = cur.fetchone()
    return int(row[0]) if row is not None else 0
