"""The PostgreSQL store's owner records (``owners``): which engines are alive, judged on the database's clock."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

from psycopg import Cursor

from .._lease import Owner

Cur = Cursor[Any]

__all__ = ["OwnerRow", "alive", "holders_alive", "put_owner"]

OwnerRow = tuple[str, str, float, float]
"""An owner's row as written: its id, JSON record, ttl, and the age of its heartbeat when it was sent (s)."""


def alive(record: str | None, age: float | None, ttl: float | None) -> bool:
    """Whether an owner record (``None``: missing) names a live engine.

    On this host its pid decides (exact, as for LMDB); on another, its
    heartbeat's ``age`` on the database's clock against ``ttl`` (the store's
    ``lease_ttl``), or the record's own ttl when the store sets none.
    """
    if record is None:
        return False
    owner = Owner.decode(record.encode())
    if owner is None:
        return False
    if owner.host == socket.gethostname():
        return owner.is_alive()
    return age is not None and age < (ttl if ttl is not None else owner.ttl)


def holders_alive(cur: Cur, holders: Iterable[str], ttl: float | None) -> dict[str, bool]:
    """Whether each of ``holders`` (owner ids) is alive."""
    wanted = sorted(set(holders))
    out = dict.fromkeys(wanted, False)
    if wanted:
        cur.execute("SELECT id, record, extract(epoch FROM now() - heartbeat)::float8 FROM owners "
                    "WHERE id = ANY(%s)", (wanted,))
        for oid, record, age in cur.fetchall():
            out[oid] = alive(record, age, ttl)
    return out


def put_owner(cur: Cur, owner_id: str, record: str, ttl: float, age: float = 0.0) -> None:
    """Store an owner record with a heartbeat on the database's clock: ``now()`` less the ``age`` the beat
    had when it was sent (0 for a fresh one)."""
    cur.execute("INSERT INTO owners (id, record, ttl, heartbeat) VALUES (%s, %s, %s, now() - make_interval(secs => %s)) "
                "ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, ttl = EXCLUDED.ttl, "
                "heartbeat = EXCLUDED.heartbeat", (owner_id, record, ttl, age))


