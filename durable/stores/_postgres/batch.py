"""One batch of writes on the PostgreSQL store's write connection: few statements, few round trips.

The writer thread hands each batch of queued writes to :func:`run`. The
common writes of an engine (checkpoints, instance records, creates, event
appends, heartbeats) are not run one by one: consecutive ones form a
*segment*, run as one array statement (``unnest``) per kind of write:

- checkpoints alone (no instance record in the segment): one statement that
  locks the lease rows of every fenced write (``FOR UPDATE``, in id order:
  no deadlock between processes), checks each fence and upserts the steps
  that pass; the lease rows it read tell each write its outcome, exactly as
  :func:`tables.fence` would;
- with instance records: first one ``SELECT ... FOR UPDATE`` of their
  instance rows and one of the lease rows of every fenced write (in one
  round trip), then each write's outcome decided here, in batch order, as if
  the writes ran one by one (a record finishing an instance deletes its lease,
  so a later fenced write of it is refused), then one statement per kind;
- creates: one ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` with the
  leases of those created.

Any other write (claims, signals, cancels, queued creates...) is run as it
always was, ``fn(cur, *args)``, after what is queued before it was sent.
Statements whose results are not needed at once are queued and sent in
pipeline mode with the next read or with ``COMMIT``; events appended by the
batch are inserted by one statement sent last before ``COMMIT`` (see
``eventlog.py``). A batch that is one statement in all runs in autocommit:
one round trip, one commit.

A segment never holds two writes of which one creates an instance the other
touches (the segment ends before): the arrays hold each key once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

from ..._model.eventlog import terminal_event
from ..._model.records import InstanceStatus, WorkflowInstance
from ..._model.serde import encode_step
from ...errors import SerializationError
from .._lease import LeaseLost
from .._writer import WriteRequest
from . import eventlog, owners, tables

__all__ = ["FENCED_STEP", "Tx", "run"]

Rows = list[tuple[Any, ...]]
_Statement = tuple[str, Any, Callable[[Rows], None] | None]


class Tx:
    """A batch's transaction on the write connection (in autocommit mode: ``BEGIN`` is sent by this class,
    with the first statements, only if the batch is more than one statement)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.queued: list[_Statement] = []
        self.begun = False
        self.events: list[tuple[str, bytes]] = []
        self.owners: dict[str, owners.OwnerRow] = {}

    def defer(self, query: str, params: Any, on_rows: Callable[[Rows], None] | None = None) -> None:
        """Queue a statement; ``on_rows`` gets its rows once it ran (before the commit, or after it)."""
        self.queued.append((query, params, on_rows))

    def _owners(self) -> None:
        if self.owners:
            rows = list(self.owners.values())
            self.owners = {}
            self.defer("INSERT INTO owners (id, record, ttl, heartbeat) SELECT u.id, u.record, u.ttl, "
                       "now() - make_interval(secs => u.age) FROM unnest(%b::text[], %b::text[], "
                       "%b::float8[], %b::float8[]) AS u(id, record, ttl, age) ON CONFLICT (id) DO UPDATE SET "
                       "record = EXCLUDED.record, ttl = EXCLUDED.ttl, heartbeat = EXCLUDED.heartbeat",
                       ([r[0] for r in rows], [r[1] for r in rows], [float(r[2]) for r in rows],
                        [float(r[3]) for r in rows]))

    def _send(self, extra: list[tuple[str, Any]]) -> list[Rows]:
        """Send the queued statements (after ``BEGIN``, once) and ``extra`` in one round trip; the rows of each
        of ``extra``."""
        statements = self.queued
        self.queued = []
        if not self.begun:
            self.begun = True
            statements = [("BEGIN", None, None), *statements]
        conn = self.conn
        if len(statements) + len(extra) == 1:  # one statement: no pipeline needed
            cur = conn.cursor()
            query, params = extra[0] if extra else statements[0][:2]
            cur.execute(query, params)
            return [cur.fetchall()] if extra else []
        cursors: list[tuple[psycopg.Cursor[Any], Callable[[Rows], None] | None]] = []
        wanted: list[psycopg.Cursor[Any]] = []
        with conn.pipeline():
            for query, params, on_rows in statements:
                cur = conn.cursor()
                cur.execute(query, params)
                cursors.append((cur, on_rows))
            for query, params in extra:
                cur = conn.cursor()
                cur.execute(query, params)
                wanted.append(cur)
        for cur, on_rows in cursors:
            if on_rows is not None:
                on_rows(cur.fetchall())
        return [cur.fetchall() for cur in wanted]

    def query(self, *statements: tuple[str, Any]) -> list[Rows]:
        """Run what is queued and then ``statements``, in one round trip; their rows."""
        self._owners()
        return self._send(list(statements))

    def flush(self) -> None:
        """Run what is queued (and ``BEGIN``) now: a write run the usual way follows."""
        self._owners()
        if self.queued or not self.begun:
            self._send([])

    def commit(self, tail: list[tuple[str, Any]]) -> None:
        """Queue the collected events, then ``tail`` (the wake-ups), and commit: one round trip, in autocommit
        if it is one statement in all."""
        self._owners()
        if self.events:
            self.defer(*eventlog.append_statement(self.events))
        for query, params in tail:
            self.defer(query, params)
        if not self.begun and len(self.queued) == 1:
            query, params, on_rows = self.queued[0]
            self.queued = []
            cur = self.conn.cursor()
            cur.execute(query, params)  # autocommit: the statement is its transaction
            if on_rows is not None:
                on_rows(cur.fetchall())
            return
        if not self.begun and not self.queued:
            return  # nothing to write
        self.defer("COMMIT", None)
        self._send([])


def run(tx: Tx, where: str, batch: list[WriteRequest], skip: set[int],
        drain: Callable[[WriteRequest], list[tuple[str, bytes]]]) -> None:
    """Run the writes of ``batch`` (but those of ``skip``) in ``tx``, in order, setting each one's ``result``
    (some once the batch committed); ``drain(r)``: the events an event drain ``r`` appends."""
    segment: list[WriteRequest] = []
    touched: set[str] = set()
    created: set[str] = set()

    def end_segment() -> None:
        if segment:
            _segment(tx, where, list(segment), drain)
            segment.clear()
            touched.clear()
            created.clear()

    with eventlog.collecting(tx.events):
        for i, r in enumerate(batch):
            if i in skip:
                continue
            kind = _kind(r)
            if kind is None:
                end_segment()
                tx.flush()
                with tx.conn.cursor() as cur:
                    r.result = r.fn(cur, *r.args)
                continue
            iid = _instance_of(r, kind)
            if iid is not None:
                if iid in created or (kind == "create" and iid in touched):
                    end_segment()
                touched.add(iid)
                if kind == "create":
                    created.add(iid)
            segment.append(r)
        end_segment()


def _kind(r: WriteRequest) -> str | None:
    """The kind of a write run in segments, or ``None`` (run alone)."""
    fn = r.fn
    if fn is tables.put_step:
        return "step"
    if fn is tables.put:
        return "put"
    if fn is owners.put_owner:
        return "owner"
    if getattr(fn, "drains_events", False):
        return "events"
    if fn is tables.create:
        inst: WorkflowInstance = r.args[1]
        status = InstanceStatus(inst.status)
        queued = inst.queue is not None and r.args[3] is None and status == InstanceStatus.PENDING
        if queued or status.finished or (inst.dedup_id is not None and inst.queue is not None):
            return None
        return "create"
    return None


def _instance_of(r: WriteRequest, kind: str) -> str | None:
    if kind == "step":
        return str(r.args[0])
    if kind in ("put", "create"):
        return str(r.args[1].id)
    return None


def _lost(instance_id: str, owner: str, lease: tuple[str | None, str | None] | None) -> LeaseLost | None:
    """As :func:`tables.fence`, from the lease row read (its owner and the instance's status), or ``None``."""
    if lease is None or lease[0] != owner:
        return LeaseLost(f"instance {instance_id!r} is no longer held by this engine")
    if lease[1] in tables.FINISHED:
        return LeaseLost(f"instance {instance_id!r} finished meanwhile")
    return None


def _why_lost(tx: Tx, instance_id: str, owner: str) -> LeaseLost:
    """Why a fenced write found nothing to write on (read again: its statement wrote and said nothing).

    This read may come after the batch committed: if it fails on a connection that still works, the reason
    is left general rather than raised, since an error here would make the batch's writes run again one by
    one (and a signal taken twice). A broken connection still raises: its batch is reported in doubt."""
    try:
        row = tx.conn.execute("SELECT l.owner_id, i.status FROM leases l LEFT JOIN instances i "
                              "ON i.id = l.instance_id WHERE l.instance_id = %s", (instance_id,)).fetchone()
    except psycopg.Error:
        if tx.conn.broken:
            raise
        lost = None
    else:
        lost = _lost(instance_id, owner, (row[0], row[1]) if row is not None else None)
    return lost or LeaseLost(f"instance {instance_id!r} is no longer held by this engine")


_FENCED_STEPS = (
    "WITH u AS (SELECT * FROM unnest(%b::text[], %b::bytea[], %b::bytea[], %b::text[]) AS u(iid, key, rec, owner)), "
    "f AS MATERIALIZED (SELECT l.instance_id, l.owner_id, i.status FROM leases l LEFT JOIN instances i "
    "ON i.id = l.instance_id WHERE l.instance_id = ANY(%s) ORDER BY l.instance_id FOR UPDATE OF l), "
    "w AS (INSERT INTO steps (instance_id, key, record) SELECT u.iid, u.key, u.rec FROM u LEFT JOIN f "
    "ON f.instance_id = u.iid WHERE u.owner IS NULL OR (f.owner_id = u.owner AND (f.status IS NULL "
    "OR f.status <> ALL(%b::text[]))) ON CONFLICT (instance_id, key) DO UPDATE SET record = EXCLUDED.record) "
    "SELECT instance_id, owner_id, status FROM f")
# A lone checkpoint: the lease row locked (FOR UPDATE) and matched to the owner, then the upsert, in one
# statement. The instance's status is not read: a lease row exists only for an unfinished instance (every
# write that finishes one deletes its lease in the same transaction, and none leases a finished one). Measured
# about 25 µs faster per commit than an INSERT ... SELECT joining the lease and the instance.
FENCED_STEP = ("WITH f AS (SELECT 1 FROM leases WHERE instance_id = %s AND owner_id = %s FOR UPDATE) "
               "INSERT INTO steps (instance_id, key, record) SELECT %s, %s, %s FROM f "
               "ON CONFLICT (instance_id, key) DO UPDATE SET record = EXCLUDED.record RETURNING 1")
_STEPS = ("INSERT INTO steps (instance_id, key, record) SELECT * FROM unnest(%b::text[], %b::bytea[], %b::bytea[]) "
          "ON CONFLICT (instance_id, key) DO UPDATE SET record = EXCLUDED.record")
_COLUMNS = tables.COLUMNS.split(", ")
_TYPES = ["text", "text", "text", "text", "int4", "text", "text", "timestamptz", "timestamptz", "timestamptz",
          "timestamptz", "timestamptz", "text", "bytea"]
_UNNEST = "unnest(" + ", ".join(f"%b::{t}[]" for t in _TYPES) + ")"
# A record of a finished status also takes the instance out of its queue (queue_state NULL), in the same row
# version: one update of the row where a second statement made two, each writing every index.
_UPSERT = (f"INSERT INTO instances ({tables.COLUMNS}) SELECT * FROM {_UNNEST} ON CONFLICT (id) DO UPDATE SET "
           + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[1:])
           + ", queue_state = CASE WHEN EXCLUDED.status IN (" + ", ".join(f"'{s}'" for s in tables.FINISHED)
           + ") THEN NULL ELSE instances.queue_state END")
_CREATE = (f"WITH ins AS (INSERT INTO instances ({tables.COLUMNS}) SELECT * FROM {_UNNEST} ON CONFLICT (id) DO NOTHING "
           "RETURNING id), lz AS (INSERT INTO leases (instance_id, owner_id) SELECT ins.id, o.owner FROM ins JOIN "
           "unnest(%b::text[], %b::text[]) AS o(id, owner) ON o.id = ins.id WHERE o.owner IS NOT NULL "
           "ON CONFLICT (instance_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, epoch = leases.epoch + 1) "
           "SELECT id FROM ins")


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(c) for c in zip(*rows)] if rows else [[] for _ in _TYPES]


def _step_data(r: WriteRequest) -> bytes | None:
    """A checkpoint's encoded record (a marker is encoded here); ``None`` if it cannot be (skipped)."""
    instance_id, _, step, data, _ = r.args
    if data is None:
        try:
            data = encode_step(step, instance_id=instance_id)
        except SerializationError:
            return None  # the input changed since it was checked: bookkeeping, skipped
    return bytes(data)


def _segment(tx: Tx, where: str, writes: list[WriteRequest],
             drain: Callable[[WriteRequest], list[tuple[str, bytes]]]) -> None:
    kinds = [_kind(r) for r in writes]
    keys = [(r.args[0], r.args[1]) for r, k in zip(writes, kinds) if k == "step"]
    if "put" in kinds or len(set(keys)) != len(keys):
        _decided(tx, where, writes, kinds, drain)
        return
    # No instance record: each write's outcome does not depend on the others'.
    steps: list[tuple[WriteRequest, bytes]] = []
    creates: list[WriteRequest] = []
    for r, kind in zip(writes, kinds):
        if kind == "owner":
            tx.owners[r.args[0]] = r.args
        elif kind == "events":
            tx.events.extend(drain(r))
        elif kind == "create":
            creates.append(r)
            if r.args[3] is not None:
                tx.owners[r.args[3][0]] = r.args[3]
        elif kind == "step":
            data = _step_data(r)
            if data is not None:
                steps.append((r, data))
    if steps:
        fenced = sorted({r.args[0] for r, _ in steps if r.args[4] is not None})

        def outcomes(rows: Rows, steps: list[tuple[WriteRequest, bytes]] = steps) -> None:
            leases = {row[0]: (row[1], row[2]) for row in rows}
            for r, _ in steps:
                owner = r.args[4]
                r.result = None if owner is None else _lost(r.args[0], owner, leases.get(r.args[0]))

        if len(steps) == 1 and fenced:  # a lone checkpoint (a sequential step): the cheapest statement
            (r1, data1), = steps

            def landed(rows: Rows, r: WriteRequest = r1) -> None:
                r.result = None if rows else _why_lost(tx, r.args[0], r.args[4])

            tx.defer(FENCED_STEP, (r1.args[0], r1.args[4], r1.args[0], r1.args[1], data1), landed)
        elif fenced:
            tx.defer(_FENCED_STEPS, ([r.args[0] for r, _ in steps], [r.args[1] for r, _ in steps],
                                     [d for _, d in steps], [r.args[4] for r, _ in steps], fenced, tables.FINISHED),
                     outcomes)
        else:
            tx.defer(_STEPS, ([r.args[0] for r, _ in steps], [r.args[1] for r, _ in steps], [d for _, d in steps]))
    if creates:
        rows = [tables.instance_row(r.args[1], r.args[2]) for r in creates]

        def made(found: Rows, creates: list[WriteRequest] = creates) -> None:
            new = {row[0] for row in found}
            for r in creates:
                r.result = r.args[1].id in new

        tx.defer(_CREATE, (*_columns(rows), [r.args[1].id for r in creates],
                           [r.args[3][0] if r.args[3] is not None and not InstanceStatus(r.args[1].status).finished
                            else None for r in creates]), made)  # a lease only of an unfinished instance


def _decided(tx: Tx, where: str, writes: list[WriteRequest], kinds: list[str | None],
             drain: Callable[[WriteRequest], list[tuple[str, bytes]]]) -> None:
    """A segment with instance records: lock and read first, decide each write here in order, then write."""
    puts = sorted({r.args[1].id for r, k in zip(writes, kinds) if k == "put"})
    fenced = sorted({_instance_of(r, k) or "" for r, k in zip(writes, kinds)
                     if (k == "step" and r.args[4] is not None) or (k == "put" and r.args[3] is not None)})
    reads: list[tuple[str, Any]] = []
    if puts:
        reads.append(("SELECT id, status FROM instances WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (puts,)))
    if fenced:
        reads.append(("SELECT l.instance_id, l.owner_id, i.status FROM leases l LEFT JOIN instances i "
                      "ON i.id = l.instance_id WHERE l.instance_id = ANY(%s) ORDER BY l.instance_id "
                      "FOR UPDATE OF l", (fenced,)))
    found = tx.query(*reads) if reads else []
    status: dict[str, str | None] = {}
    leases: dict[str, tuple[str | None, str | None]] = {}
    if puts:
        status.update((row[0], row[1]) for row in found.pop(0))
    if fenced:
        for iid, holder, st in found.pop(0):
            leases[iid] = (holder, status.get(iid, st))
    steps: dict[tuple[str, bytes], bytes] = {}
    records: dict[str, tuple[Any, ...]] = {}
    deleted: list[str] = []
    ended: list[WorkflowInstance] = []
    creates: list[WriteRequest] = []
    for r, kind in zip(writes, kinds):
        if kind == "owner":
            tx.owners[r.args[0]] = r.args
        elif kind == "events":
            tx.events.extend(drain(r))
        elif kind == "create":  # of an instance no other write of the segment touches
            creates.append(r)
            if r.args[3] is not None:
                tx.owners[r.args[3][0]] = r.args[3]
        elif kind == "step":
            iid, key, owner = r.args[0], r.args[1], r.args[4]
            lost = None if owner is None else _lost(iid, owner, leases.get(iid))
            r.result = lost
            if lost is None:
                data = _step_data(r)
                if data is not None:
                    steps.pop((iid, key), None)
                    steps[(iid, key)] = data
        elif kind == "put":
            _, inst, data, owner = r.args
            iid = inst.id
            old = status.get(iid)
            new = InstanceStatus(inst.status).value
            if old is not None and old != new and old in tables.FINISHED:
                r.result = LeaseLost(f"instance {iid!r} finished meanwhile") if owner is not None else None
                continue
            lost = None if owner is None else _lost(iid, owner, leases.get(iid))
            r.result = lost
            if lost is not None:
                continue
            records.pop(iid, None)
            records[iid] = tables.instance_row(inst, data)
            status[iid] = new
            if iid in leases:
                leases[iid] = (leases[iid][0], new)
            if new in tables.FINISHED:
                leases.pop(iid, None)
                deleted.append(iid)
                if old is None or old not in tables.FINISHED:
                    ended.append(inst)
                    event = terminal_event(inst)
                    if event is not None:
                        tx.events.append((iid, event))
    if steps:
        tx.defer(_STEPS, ([k[0] for k in steps], [k[1] for k in steps], list(steps.values())))
    if records:
        tx.defer(_UPSERT, tuple(_columns(list(records.values()))))
    if deleted:
        tx.defer("DELETE FROM leases WHERE instance_id = ANY(%s)", (sorted(set(deleted)),))
    if ended:
        ids = sorted({inst.id for inst in ended})  # (out of their queues already: _UPSERT)
        for inst in ended:
            if inst.queue is not None and inst.dedup_id is not None:
                tx.defer("DELETE FROM dedup WHERE queue = %s AND dedup_id = %s AND instance_id = %s",
                         (inst.queue, inst.dedup_id, inst.id))
        tx.defer("DELETE FROM jobs WHERE instance_id = ANY(%s)", (ids,))
    if creates:
        _segment(tx, where, creates, drain)
