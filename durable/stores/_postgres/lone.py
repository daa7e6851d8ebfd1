"""A lone checkpoint written from the trio thread, through libpq's non-blocking API.

A sequential step's checkpoint is usually the only write queued: handing it
to the writer thread and back costs two cross-thread wake-ups (about 80 µs
here, a third of a commit). When the writer thread is idle, the store writes
such a checkpoint itself instead: the statement the writer would run for it
(``batch.FENCED_STEP``, prepared once per connection) is sent on the write
connection's socket with ``psycopg.pq``, and the task waits for the answer
with ``trio.lowlevel.wait_readable``. The trio loop is never blocked, and
the writer thread is held off (``Writer.claim_idle``) until the answer is in,
so writes queued meanwhile are committed after this one, in order.

Anything but a clean answer is left to the writer: a statement that failed
on a working connection committed nothing (autocommit), and a fence that
refused the write is run again there to learn why. A connection that broke
is a write in doubt, as on the writer thread.
"""

from __future__ import annotations

import re

import psycopg
import trio
from psycopg import pq


__all__ = ["lone_query", "prepare", "send"]

_NAME = b"durable_lone_step"
_TEXT, _BYTEA = 25, 17
_NOT_PREPARED = b"26000"  # invalid_sql_statement_name


def _numbered(query: str, numbers: list[int]) -> bytes:
    """``query`` with its ``%s`` and ``%b`` placeholders replaced by ``$n``, in order."""
    it = iter(numbers)
    return re.sub(r"%[sb]", lambda _: f"${next(it)}", query).encode()


def lone_query(fenced_step: str) -> bytes:
    """The server-side form of the writer's lone fenced checkpoint (its parameters: instance id, owner, instance
    id again, key, record), numbered as :func:`send` passes them: instance id, key, record, owner."""
    return _numbered(fenced_step, [1, 4, 1, 2, 3])


async def _roundtrip(pgconn: pq.abc.PGconn) -> list[pq.abc.PGresult]:
    """Flush what was sent and wait (on the trio loop) for every result of it: ``get_result`` is only called
    when it will not block (``is_busy`` false), as psycopg does."""
    fd = pgconn.socket
    while pgconn.flush():
        await trio.lowlevel.wait_writable(fd)
    results: list[pq.abc.PGresult] = []
    while True:
        pgconn.consume_input()
        if pgconn.is_busy():
            await trio.lowlevel.wait_readable(fd)
            continue
        res = pgconn.get_result()
        if res is None:
            return results
        results.append(res)


async def prepare(conn: psycopg.Connection[object], query: bytes) -> bool:
    """Prepare the lone checkpoint's statement on ``conn`` (once per connection); whether it worked."""
    pgconn = conn.pgconn
    pgconn.send_prepare(_NAME, query, param_types=[_TEXT, _BYTEA, _BYTEA, _TEXT])
    results = await _roundtrip(pgconn)
    return bool(results) and all(r.status == pq.ExecStatus.COMMAND_OK for r in results)


async def send(conn: psycopg.Connection[object], instance_id: str, key: bytes, record: bytes,
               owner: str) -> bool | None:
    """Run the prepared lone checkpoint on ``conn`` (autocommit: its own transaction): ``True`` if it was
    written and committed, ``False`` if nothing was (a fence that refused it, a statement that failed on a
    working connection: the writer runs it again, and says why), ``None`` if the statement is not prepared
    on the connection any more (psycopg deallocates every prepared statement after a rollback: prepare it
    again). Raises ``psycopg.OperationalError`` if the connection broke (in doubt)."""
    pgconn = conn.pgconn
    iid = instance_id.encode()
    pgconn.send_query_prepared(_NAME, [iid, key, record, owner.encode()], param_formats=[0, 1, 1, 0])
    results = await _roundtrip(pgconn)
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection broke during the write")
    if len(results) == 1 and results[0].status == pq.ExecStatus.TUPLES_OK and results[0].ntuples == 1:
        return True
    if any(r.error_field(pq.DiagnosticField.SQLSTATE) == _NOT_PREPARED for r in results):
        return None
    return False
