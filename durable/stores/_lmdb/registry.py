"""The LMDB store's registry: the workflows and queues engines have served (``registry``).

``w NUL name``   -> the workflow's own queue (``@workflow(queue=)``), or empty: a workflow some
                    engine on this store registered (ever)
``o NUL owner``  -> JSON ``{"workflows": [...], "queues": [...], "jobs": [...]}``: what a
                    live engine serves (its liveness is its ``owners`` record)
"""

from __future__ import annotations

import json
from typing import Any

import lmdb

from .._lease import record_alive
from .env import Tables
from .leases import owner_in

__all__ = ["known_workflows", "put_worker", "servers", "workflow_queues"]


def put_worker(txn: lmdb.Transaction, t: Tables, owner_id: str, workflows: list[str], queues: list[str],
               job_queues: list[str], workflow_queues: dict[str, str]) -> None:
    """Record what an engine serves, and that its workflows exist (with their own queues)."""
    for name in workflows:
        txn.put(b"w\0" + name.encode(), workflow_queues.get(name, "").encode(), db=t.registry)
    record = {"workflows": sorted(workflows), "queues": sorted(queues), "jobs": sorted(job_queues)}
    txn.put(b"o\0" + owner_id.encode(), json.dumps(record).encode(), db=t.registry)


def known_workflows(txn: lmdb.Transaction, t: Tables) -> list[str]:
    """Every workflow name an engine on this store has registered."""
    out = []
    cursor = txn.cursor(db=t.registry)
    if cursor.set_range(b"w\0"):
        for k in cursor.iternext(keys=True, values=False):
            k = bytes(k)
            if not k.startswith(b"w\0"):
                break
            out.append(k[2:].decode())
    return out


def workflow_queues(txn: lmdb.Transaction, t: Tables) -> dict[str, str]:
    """The queue of each known workflow that names one."""
    out = {}
    cursor = txn.cursor(db=t.registry)
    if cursor.set_range(b"w\0"):
        for k, v in cursor:
            k = bytes(k)
            if not k.startswith(b"w\0"):
                break
            if v:
                out[k[2:].decode()] = bytes(v).decode()
    return out


def servers(txn: lmdb.Transaction, t: Tables) -> dict[str, dict[str, Any]]:
    """What each live engine serves, by owner id (records of dead engines are skipped)."""
    out: dict[str, dict[str, Any]] = {}
    cursor = txn.cursor(db=t.registry)
    if cursor.set_range(b"o\0"):
        for k, v in cursor:
            k = bytes(k)
            if not k.startswith(b"o\0"):
                break
            owner_id = k[2:].decode()
            if record_alive(owner_in(txn, t, owner_id)):
                out[owner_id] = json.loads(bytes(v))
    return out
