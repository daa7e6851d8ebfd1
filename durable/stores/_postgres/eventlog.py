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

Packing (schema version 3): consecutive events one batch appends for one instance are one row (the order of
the whole log stays the order of appending), keyed by the last of their ids, with their count in ``n`` (ids ``id - n + 1`` to ``id``, in order) and, when there are several,
each event's bytes behind its length (4 bytes, big endian) in ``data``. A three-step workflow appends about ten
events in three or four batches: a row, its two index entries and its WAL record each cost the server about as
much for one event as for several. A reader pages by event id as before (:func:`unpack`).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from psycopg import Cursor

from ...errors import StoreError

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


_LENGTH = struct.Struct(">I")

ROW_EVENTS = 64
"""The most events one row holds (a reader paging through a row reads all of it for each page)."""


def pack(events: list[tuple[str, bytes]]) -> tuple[list[str], list[int], list[bytes]]:
    """``events`` in rows, one per run of consecutive events of one instance (so the log keeps the order they
    were appended in, across instances too): the rows' instance ids, event counts and data."""
    ids: list[str] = []
    groups: list[list[bytes]] = []
    for iid, data in events:
        if ids and ids[-1] == iid and len(groups[-1]) < ROW_EVENTS:
            groups[-1].append(data)
        else:
            ids.append(iid)
            groups.append([data])
    counts = [len(group) for group in groups]
    datas = [group[0] if len(group) == 1 else b"".join(_LENGTH.pack(len(d)) + d for d in group) for group in groups]
    return ids, counts, datas


def unpack(last: int, n: int, data: bytes) -> list[tuple[int, bytes]]:
    """The events of one row: ``(id, bytes)`` each, in order (``last``: the row's id, its last event's)."""
    if n == 1:
        return [(last, data)]
    out: list[tuple[int, bytes]] = []
    at = 0
    for k in range(n):
        size = _LENGTH.unpack_from(data, at)[0] if at + 4 <= len(data) else -1
        if size < 0 or at + 4 + size > len(data):
            break
        out.append((last - n + 1 + k, data[at + 4:at + 4 + size]))
        at += 4 + size
    if len(out) != n or at != len(data):
        raise StoreError(f"corrupt record at events/{last}: {n} events packed, their lengths do not add up "
                         f"to the row's {len(data)} bytes", path=None)
    return out


def _ends(counts: list[int]) -> list[int]:
    """Each row's last event, counted from the batch's first (1-based)."""
    out, total = [], 0
    for n in counts:
        total += n
        out.append(total)
    return out


def append_statement(events: list[tuple[str, bytes]]) -> tuple[str, tuple[Any, ...]]:
    """One statement appending ``events`` in order, a row per instance: it takes their ids (locking the
    ``event_seq`` row till commit) and inserts them. Send it last before ``COMMIT``."""
    ids, counts, datas = pack(events)
    total = len(events)
    return ("WITH s AS (UPDATE meta SET value = value + %s WHERE key = 'event_seq' RETURNING value) "
            "INSERT INTO events (id, instance_id, data, n) SELECT s.value - %s + u.e, u.iid, u.data, u.n FROM s, "
            "unnest(%b::bigint[], %b::text[], %b::bytea[], %b::int[]) AS u(e, iid, data, n)",
            (total, total, _ends(counts), ids, datas, counts))


# A row's id is its last event's: each row read (``id > after``) holds one event after ``after`` at least, so
# ``limit`` rows hold ``limit`` such events, if there are that many (only the first can hold some before).


def read(cur: Cur, instance_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
    """The instance's first ``limit`` events after id ``after``."""
    if limit <= 0:
        return []
    cur.execute("SELECT id, n, data FROM events WHERE instance_id = %s AND id > %s ORDER BY id LIMIT %s",
                (instance_id, after, limit))
    out = [e for i, n, d in cur.fetchall() for e in unpack(int(i), int(n), bytes(d)) if e[0] > after]
    return out[:limit]


def read_all(cur: Cur, after: int, limit: int) -> list[tuple[int, str, bytes]]:
    """Every instance's first ``limit`` events after id ``after``, in id order."""
    if limit <= 0:
        return []
    cur.execute("SELECT id, instance_id, n, data FROM events WHERE id > %s ORDER BY id LIMIT %s", (after, limit))
    out = [(eid, str(iid), data) for i, iid, n, d in cur.fetchall() for eid, data in unpack(int(i), int(n), bytes(d))
           if eid > after]
    return out[:limit]


def last_id(cur: Cur) -> int:
    cur.execute("SELECT coalesce(max(id), 0) FROM events")
    row = cur.fetchone()
    return int(row[0]) if row is not None else 0
