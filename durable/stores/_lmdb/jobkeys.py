"""Removing an instance's external jobs (apart from ``jobs.py``, which builds on the instance tables).

See ``jobs.py`` for the ``jobs``, ``jobq`` and ``jobheld`` tables.
"""

from __future__ import annotations

import lmdb

from .env import Tables

__all__ = ["delete_for"]


def delete_for(txn: lmdb.Transaction, t: Tables, instance_key: bytes) -> None:
    """Remove the jobs of an instance (it finished or was deleted): nobody will take them."""
    prefix = instance_key + b"\0"
    keys: list[bytes] = []
    cursor = txn.cursor(db=t.jobs)
    if cursor.set_range(prefix):
        for k in cursor.iternext(keys=True, values=False):
            if not bytes(k).startswith(prefix):
                break
            keys.append(bytes(k))
    if not keys:
        return
    doomed = set(keys)
    for k, v in list(txn.cursor(db=t.jobq)):
        if bytes(v) in doomed:
            txn.delete(bytes(k), db=t.jobq)
    for k in keys:
        txn.delete(k, db=t.jobs)
        txn.delete(k, db=t.jobheld)
