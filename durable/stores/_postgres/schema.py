"""The PostgreSQL store's tables, and the versioned migrations that create them.

Every table lives in the store's own schema (``durable`` by default). Text
columns that hold ids and names sort bytewise (``COLLATE "C"``), so listings
come out in the order the other stores give.

``schema_version``  one row: the version of the newest migration applied
``meta``            counters: ``signal_clock`` (bumped by every signal sent; signals' sequence numbers),
                    ``event_seq`` (the newest event id: updated under its row lock, so ids are given in
                    commit order even with several writers)
``instances``       one row per instance: the columns people query, and the encoded record (``bytea``,
                    the record format of :mod:`durable._model.serde`, step results stored apart);
                    ``queue_state`` is ``waiting`` (in its queue, for a worker), ``inflight`` (taken by a
                    worker, not finished) or NULL; ``queue_seq`` and ``queue_priority`` order the waiting,
                    ``queue_due`` is when a waiting one may be taken (``NULL``: now; those with a time are
                    indexed by queue and time, ``instances_due``, since version 2)
``steps``           ``(instance id, key)`` -> an encoded :class:`~durable.StepResult`; the key is the
                    step's checkpoint key (hashed past about 400 bytes, as LMDB's)
``signals``         queued signals: ``seq`` (from ``signal_clock``), instance, name, encoded payload
``leases``          instance id -> the owner running it, and an epoch bumped when it changes hands
``owners``          owner id -> its JSON :class:`~durable.stores.Owner` record, its ttl, and its heartbeat on
                    the database's clock (``now()``)
``queues``          queue name -> JSON :class:`~durable.Queue`; ``queue_starts``: recent start times (µs)
``dedup``           ``(queue, dedup id)`` -> the unfinished queued instance holding it
``jobs``            external jobs: ``(instance id, key)``, queue, order, encoded record, the owner holding it
``workflows``       every workflow an engine registered (with its own queue); ``servers``: what each engine
                    serves (JSON)
``events``          the event log: id (store-wide, increasing, never reused), instance id, encoded event
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from ...errors import StoreError
from .._base import StoreTooNew

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "schema_version"]

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
INSERT INTO meta VALUES ('signal_clock', 0), ('event_seq', 0);
CREATE SEQUENCE queue_seq;
CREATE TABLE instances (
    id text COLLATE "C" PRIMARY KEY,
    workflow text COLLATE "C" NOT NULL,
    status text NOT NULL,
    queue text COLLATE "C",
    priority integer NOT NULL DEFAULT 0,
    parent_id text COLLATE "C",
    dedup_id text COLLATE "C",
    created_at timestamptz,
    started_at timestamptz,
    completed_at timestamptz,
    deadline timestamptz,
    not_before timestamptz,
    current_step text,
    queue_state text,
    queue_seq bigint,
    queue_priority integer,
    queue_due timestamptz,
    record bytea NOT NULL
);
CREATE INDEX instances_by_status ON instances (status, created_at, id);
CREATE INDEX instances_by_workflow ON instances (workflow, status, created_at, id);
CREATE INDEX instances_by_parent ON instances (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX instances_waiting ON instances (queue, queue_priority DESC, queue_seq) WHERE queue_state = 'waiting';
CREATE INDEX instances_inflight ON instances (queue) WHERE queue_state = 'inflight';
CREATE TABLE steps (
    instance_id text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (instance_id, key)
);
CREATE TABLE signals (
    seq bigint PRIMARY KEY,
    instance_id text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    payload bytea NOT NULL
);
CREATE INDEX signals_by_name ON signals (instance_id, name, seq);
CREATE TABLE leases (
    instance_id text COLLATE "C" PRIMARY KEY,
    owner_id text COLLATE "C" NOT NULL,
    epoch bigint NOT NULL DEFAULT 1
);
CREATE INDEX leases_by_owner ON leases (owner_id);
CREATE TABLE owners (
    id text COLLATE "C" PRIMARY KEY,
    record text NOT NULL,
    ttl double precision NOT NULL,
    heartbeat timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE queues (name text COLLATE "C" PRIMARY KEY, record text NOT NULL);
CREATE TABLE queue_starts (name text COLLATE "C" PRIMARY KEY, starts text NOT NULL);
CREATE TABLE dedup (
    queue text COLLATE "C" NOT NULL,
    dedup_id text COLLATE "C" NOT NULL,
    instance_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (queue, dedup_id)
);
CREATE TABLE jobs (
    instance_id text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    queue text COLLATE "C" NOT NULL,
    seq bigint NOT NULL,
    record bytea NOT NULL,
    holder text COLLATE "C",
    PRIMARY KEY (instance_id, key)
);
CREATE INDEX jobs_waiting ON jobs (queue, seq) WHERE holder IS NULL;
CREATE INDEX jobs_held ON jobs (queue) WHERE holder IS NOT NULL;
CREATE TABLE workflows (name text COLLATE "C" PRIMARY KEY, queue text COLLATE "C");
CREATE TABLE servers (owner_id text COLLATE "C" PRIMARY KEY, record text NOT NULL);
CREATE TABLE events (
    id bigint PRIMARY KEY,
    instance_id text COLLATE "C" NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX events_by_instance ON events (instance_id, id);
"""),
    # 2: the earliest time a delayed instance may be taken, per queue, from an index (a claim read it by
    # scanning every waiting instance of its queues, the whole backlog, each time).
    (2, """
CREATE INDEX instances_due ON instances (queue, queue_due) WHERE queue_state = 'waiting' AND queue_due IS NOT NULL;
"""),
    # 3: consecutive events one batch appends for one instance share a row (ids id - n + 1 .. id; see eventlog.py):
    # a row, its index entries and its WAL record cost about as much for one event as for several.
    (3, """
ALTER TABLE events ADD COLUMN n integer NOT NULL DEFAULT 1;
"""),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

_LOCK_KEY = 0x64757261626c65  # "durable": the advisory lock migrations take (one migrator at a time)


def schema_version(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> int | None:
    """The version of the store in ``schema`` (``None``: no store there), read without changing anything."""
    row = conn.execute("SELECT to_regclass(format('%%I.schema_version', %s::text)) IS NOT NULL",
                       (schema,)).fetchone()
    if row is None or not row[0]:
        return None
    found = conn.execute(sql.SQL("SELECT version FROM {}.schema_version").format(sql.Identifier(schema))).fetchone()
    return int(str(found[0])) if found is not None else 0


def migrate(conn: psycopg.Connection[tuple[object, ...]], schema: str, where: str, *, create: bool = True) -> int:
    """Bring ``schema`` up to :data:`SCHEMA_VERSION` in one transaction (under an advisory lock, so
    concurrent openers wait for one another); the version it had before (0: new).

    Raises:
        StoreError: the schema is of a newer version than this code knows; or, with ``create=False``,
            there is no store in ``schema`` (nothing is created).
    """
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_KEY >> 32, schema))
        if not create and schema_version(conn, schema) is None:
            raise StoreError(f"{where}: no durable store here (schema {schema!r} missing: a worker, Engine.open() "
                             "or `durable migrate` creates it); nothing was created", path=None)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        current = int(str(row[0])) if row is not None else 0
        if current > SCHEMA_VERSION:
            raise StoreTooNew(f"{where}: schema {schema!r} is of version {current}, newer than this durable "
                             f"knows ({SCHEMA_VERSION}): upgrade durable to use it", path=None)
        for version, script in MIGRATIONS:
            if version > current:
                conn.execute(script)
        if row is None:
            conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
        elif current < SCHEMA_VERSION:
            conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
    return current
