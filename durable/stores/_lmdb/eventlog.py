"""The LMDB store's event log (``events``): every event of every instance, for readers in any process.

``events``  ``id NUL seq(8)`` -> an encoded event (``durable._model.eventlog``);
            ``seq`` is the store-wide sequence (``meta`` ``seq``), so an event's
            number is its id: increasing, never reused
``eventorder``  ``seq(8)`` -> ``id``: every instance's events in one order, for readers of them all
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import lmdb

from .env import Tables, next_seq

__all__ = ["append", "append_many", "delete_all", "last_id", "read", "read_all"]


def append(txn: lmdb.Transaction, t: Tables, instance_key: bytes, data: bytes) -> int:
    """Append one event to an instance's log; its id."""
    seq = next_seq(txn, t)
    number = seq.to_bytes(8, "big")
    txn.put(instance_key + b"\0" + number, data, db=t.events)
    txn.put(number, instance_key, db=t.eventorder, append=True)
    return seq


def append_many(txn: lmdb.Transaction, t: Tables,
                take: Callable[[], list[tuple[bytes, bytes | Callable[[], bytes]]]]) -> list[bytes]:
    """Append the events ``take()`` hands over (``(instance key, data)`` each, in order); the instance keys."""
    events = take()
    if not events:
        return []
    raw = txn.get(b"seq", db=t.meta)
    seq = int(bytes(raw)) if raw is not None else 0
    put = txn.put
    db = t.events
    order = t.eventorder
    for key, data in events:
        if not isinstance(data, bytes):
            try:
                data = data()  # encoded here, on the writer's thread
            except Exception:  # an event that cannot be stored must never fail the writes it rides with
                logging.getLogger("durable.store").exception("an event could not be encoded; it is left out")
                continue
        seq += 1
        number = seq.to_bytes(8, "big")
        put(key + b"\0" + number, data, db=db)
        put(number, key, db=order, append=True)
    txn.put(b"seq", str(seq).encode(), db=t.meta)
    return [key for key, _ in events]


def read(txn: lmdb.Transaction, t: Tables, instance_id: str, after: int, limit: int) -> list[tuple[int, bytes]]:
    """Up to ``limit`` events of an instance whose id is over ``after``, oldest first."""
    prefix = instance_id.encode() + b"\0"
    out: list[tuple[int, bytes]] = []
    cursor = txn.cursor(db=t.events)
    if cursor.set_range(prefix + (after + 1).to_bytes(8, "big")):
        for k, v in cursor:
            k = bytes(k)
            if not k.startswith(prefix) or len(out) >= limit:
                break
            out.append((int.from_bytes(k[len(prefix):], "big"), bytes(v)))
    return out


def read_all(txn: lmdb.Transaction, t: Tables, after: int, limit: int) -> list[tuple[int, str, bytes]]:
    """Up to ``limit`` events of every instance whose id is over ``after``, oldest first: ``(id, instance, data)``."""
    out: list[tuple[int, str, bytes]] = []
    cursor = txn.cursor(db=t.eventorder)
    get = txn.get
    if cursor.set_range((after + 1).to_bytes(8, "big")):
        for number, key in cursor:
            if len(out) >= limit:
                break
            number, key = bytes(number), bytes(key)
            data = get(key + b"\0" + number, db=t.events)
            if data is not None:
                out.append((int.from_bytes(number, "big"), key.decode(), bytes(data)))
    return out


def last_id(txn: lmdb.Transaction, t: Tables) -> int:
    """The id of the newest stored event (``0``: none)."""
    cursor = txn.cursor(db=t.eventorder)
    return int.from_bytes(bytes(cursor.key()), "big") if cursor.last() else 0


def delete_all(txn: lmdb.Transaction, t: Tables, instance_key: bytes) -> None:
    """Remove an instance's log."""
    prefix = instance_key + b"\0"
    cursor = txn.cursor(db=t.events)
    if cursor.set_range(prefix):
        while bytes(cursor.key()).startswith(prefix):
            txn.delete(bytes(cursor.key())[len(prefix):], db=t.eventorder)
            if not cursor.delete():
                break
