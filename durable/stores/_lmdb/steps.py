"""The LMDB store's ``steps`` table: ``id NUL step key`` -> encoded :class:`StepResult` (writer thread).

A durable checkpoint is encoded before it is queued and waits for its
commit; a "running" marker is queued without an await and encoded here only
if no later checkpoint of its key joins the same commit
(``LMDBStore.put_step_later``).
"""

from __future__ import annotations

import lmdb

from ..._model.records import StepResult
from ..._model.serde import encode_step
from ...errors import SerializationError
from .._lease import LeaseLost
from .env import Tables
from .instances import fence

__all__ = ["put"]


def put(txn: lmdb.Transaction, t: Tables, instance_id: str, key: bytes, step: StepResult, data: bytes | None,
        owner: str | None) -> LeaseLost | None:
    """Store ``step`` (``data``, or encoded now if ``None``: a marker), fenced by ``owner``."""
    lost = fence(txn, t, instance_id.encode(), owner)
    if lost is None:
        if data is None:
            try:
                data = encode_step(step, instance_id=instance_id)
            except SerializationError:
                return None  # the input changed since it was checked: bookkeeping, skipped
        txn.put(key, data, db=t.steps)
    return lost
