"""The LMDB store's signal queue: the ``signals`` table, and a clock in ``meta``.

``id NUL name NUL seq`` (seq: 8 bytes, big-endian) -> the encoded payload.
One clock for every queue, bumped by each send, gives the sequence numbers
(so signals of one name are FIFO) and lets other processes notice a send.
"""

from __future__ import annotations

from typing import Any

import lmdb

from ..._model.serde import decode_value
from .._lease import LeaseLost
from .env import Tables
from .instances import fence

__all__ = ["clock", "peek", "send", "take"]

_SIGNAL_CLOCK = b"signal-clock"  # in meta: bumped by every send


def send(txn: lmdb.Transaction, t: Tables, prefix: bytes, data: bytes) -> int:
    """Queue the encoded payload ``data`` under ``prefix`` (``id NUL name NUL``); its sequence number."""
    raw = txn.get(_SIGNAL_CLOCK, db=t.meta)
    seq = (int(bytes(raw)) if raw is not None else 0) + 1  # one clock for every queue: FIFO per queue
    txn.put(_SIGNAL_CLOCK, str(seq).encode(), db=t.meta)
    txn.put(prefix + seq.to_bytes(8, "big"), data, db=t.signals)
    return seq


def peek(txn: lmdb.Transaction, t: Tables, path: str, prefix: bytes) -> tuple[int, Any] | None:
    """The oldest signal queued under ``prefix`` (sequence number, payload), or ``None``."""
    cursor = txn.cursor(db=t.signals)
    if not cursor.set_range(prefix):
        return None
    key = bytes(cursor.key())
    if not key.startswith(prefix) or len(key) != len(prefix) + 8:
        return None
    seq = int.from_bytes(key[len(prefix):], "big")
    return seq, decode_value(bytes(cursor.value()), f"{path}:signals/{key!r}", path)


def take(txn: lmdb.Transaction, t: Tables, instance_key: bytes, signal_key: bytes, step_key: bytes, data: bytes,
         owner: str | None) -> bool | LeaseLost:
    """Remove queued signal ``signal_key`` and store the wait's checkpoint ``data``; ``False`` if it is gone."""
    lost = fence(txn, t, instance_key, owner)
    if lost is not None:
        return lost
    if not txn.delete(signal_key, db=t.signals):
        return False
    txn.put(step_key, data, db=t.steps)
    return True


def clock(txn: lmdb.Transaction, t: Tables) -> int:
    """The signal clock: changes whenever a signal is sent, by any process."""
    raw = txn.get(_SIGNAL_CLOCK, db=t.meta)
    return int(bytes(raw)) if raw is not None else 0
