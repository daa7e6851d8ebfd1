"""The LMDB store's event log (``events``): every event of every instance, for readers in any process.

``events``  ``id NUL seq(8)`` -> an encoded event (``durable._model.eventlog``);
            ``seq`` is the store-wide sequence (``meta`` ``seq``), so an event's
            number is its id: increasing, never reused
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import lmdb

from .env import Tables, next_seq

__all__ = ["append", "append_many", "delete_all", "read"]


def append(txn: lmdb.Transaction, t: Tables, instance_key: bytes, data: bytes) -> int:
    """Append one event to an instance's log; its id."""
    seq = next_seq(txn, t)
    txn.put(instance_key + b"\0" + seq.to_bytes(8, "big"), data, db=t.events)
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
    for key, data in events:
        if not isinstance(data, bytes):
            try:
                data = data()  # encoded here, on the writer's thread
            except Exception:  # an event that cannot be stored must never fail the writes it rides with
                logging.getLogger("durable.store").exception("an event could not be encoded; it is left out")
                continue
        seq += 1
        put(key + b"\0" + seq.to_bytes(8, "big"), data, db=db)
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


def delete_all(txn: lmdb.Transaction, t: Tables, instance_key: bytes) -> None:
    """Remove an instance's log."""
    prefix = instance_key + b"\0"
    cursor = txn.cursor(db=t.events)
    if cursor.set_range(prefix):
        while bytes(cursor.key()).startswith(prefix):
            if not cursor.delete():
                break
