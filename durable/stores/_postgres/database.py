"""The PostgreSQL store's connections: its writer, its readers, and how it waits on the database.

:class:`Database` is the part of :class:`~durable.stores._postgres.store.PostgresStore` that talks to the
server; the store's methods (the :class:`~durable.stores.Store` protocol, in ``store.py``) are table
functions (``tables.py``, ``queues.py``, ``jobs.py``, ``eventlog.py``) run through it, each a function of
a psycopg cursor.

Threads: psycopg's sync API only (its async API is asyncio-only), never blocking the trio thread. Durable
writes are queued on the group-commit :class:`~durable.stores._writer.Writer`, whose thread owns one
connection and runs each batch of queued writes in one transaction with one commit (the engine's concurrent
checkpoints share it). A lone checkpoint, when the writer thread is idle, is sent by the trio thread itself
on that connection, without blocking (``lone.py``). Without :meth:`Database.run` (a store used outside an
engine) a write runs in a worker thread instead, on that same connection under its lock. Reads run in
worker threads (``trio.to_thread``), each on a connection of a small pool, in autocommit: each read is one
statement, so one snapshot.

Faults: a connection error during a batch fails every write of it with a :class:`~durable.StoreError`
that names the store (its URL without password) and says the write may or may not have committed; the
engine stops that run (the instance stays for ``resume()``). The next batch reconnects, with backoff. A
deadlock or serialization failure between writers of several processes rolls the batch back and runs it
again. Any other error in a batch of several writes rolls it back and runs each write alone, so one bad
write does not fail the others.

Wake-ups: each batch of writes that changes what other processes wait for (work queued, a signal, an end,
events appended) sends ``NOTIFY`` on the schema's channel inside its own transaction, so only once it
commits; engines and clients wait on :meth:`Database.listener` (``LISTEN``), see ``listen.py``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import trio
from psycopg import sql

from ..._model.clock import pause_autojump, resume_autojump
from ..._model.serde import DEFAULT_MAX_PAYLOAD_BYTES, check_limit
from ...errors import StoreError
from .._base import StoreTooNew
from .._lease import Owner
from .._writer import WriteRequest, Writer, committed, outcome_of, run_writer, superseded
from . import eventlog, lone, tables
from .batch import FENCED_STEP, Tx, run as run_writes
from .listen import PostgresListener, channel_of, payloads
from .schema import SCHEMA_VERSION, migrate, schema_version
from .url import redact, split_schema

__all__ = ["Database"]

_T = TypeVar("_T")
_log = logging.getLogger("durable.store")
_RETRIES = 5  # runs of a batch that a deadlock or serialization failure rolled back
_BACKOFF = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # seconds between connection attempts of one batch
_READERS = 4  # reads at once (each on its own connection)
_LONE_STEP = lone.lone_query(FENCED_STEP)  # a lone checkpoint, written from the trio thread (lone.py)


class Database:
    """The connections of one :class:`PostgresStore` (its base): the write connection with its
    group-commit writer, the readers, the listener's connections, and their lifecycle."""

    def __init__(self, url: str, *, schema: str | None = None, lease_ttl: float | None = None,
                 lazy_delay: float = 0.1, max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES,
                 create: bool = True) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"url must be a PostgreSQL connection URL, got {type(url).__name__}")
        url, in_url = split_schema(url)
        if schema is None:
            schema = in_url if in_url is not None else "durable"
        elif in_url is not None and in_url != schema:
            raise ValueError(f"the URL names schema {in_url!r}, and schema= {schema!r}: give one")
        if not isinstance(schema, str) or not schema or "\0" in schema or len(schema) > 63:
            raise ValueError(f"schema must be a PostgreSQL identifier (1-63 characters), got {schema!r}")
        if lease_ttl is not None and not (isinstance(lease_ttl, (int, float)) and 0 < lease_ttl < float("inf")):
            raise ValueError(f"lease_ttl must be a positive number of seconds or None, got {lease_ttl!r}")
        if not isinstance(lazy_delay, (int, float)) or not 0 < lazy_delay < float("inf"):
            raise ValueError(f"lazy_delay must be a number of seconds > 0, got {lazy_delay!r}")
        self.max_payload_bytes = check_limit(max_payload_bytes)
        self._url = url
        self.url = redact(url)  #: the URL as shown (password replaced by ``***``)
        self.schema = schema
        self.lease_ttl = None if lease_ttl is None else float(lease_ttl)
        self._lazy_delay = float(lazy_delay)
        self._where = f"{self.url} (schema {schema})"
        self._create = bool(create)
        self.channel = channel_of(schema)  #: the ``LISTEN``/``NOTIFY`` channel of its wake-ups
        self._sender = secrets.token_hex(8)  # in the wake-ups this store object sends (its listeners skip them)
        self._closed = False
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._wconn: psycopg.Connection[Any] | None = None
        self._wlock = threading.RLock()  # the write connection: the writer thread, or an inline write
        self._writer: Writer | None = None
        self._lone_prepared: psycopg.Connection[Any] | None = None  # the connection its statement is prepared on
        self._lone_off: psycopg.Connection[Any] | None = None  # a connection that could not prepare it
        self._claimed: dict[str, tuple[Any, ...]] = {}  # rows the last claim_queued read (see there)
        self._later: list[WriteRequest] = []  # non-durable writes queued with no writer thread running
        self._later_lock = threading.Lock()
        self._readers: list[psycopg.Connection[Any]] = []  # idle reader connections
        self._readers_lock = threading.Lock()
        self._read_limiter: trio.CapacityLimiter | None = None
        self._events: list[tuple[str, bytes | Callable[[], bytes]]] = []
        self._events_lock = threading.Lock()
        self._drained: list[list[list[tuple[str, bytes | Callable[[], bytes]]]]] = []
        self._observers: list[Callable[[str, str], None]] = []
        self._owner_cache: tuple[Owner, str] | None = None
        self.batches = 0

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r}, schema={self.schema!r})"

    @property
    def path(self) -> None:
        """``None``: the store is no directory (its wake-ups do not go through files; see :attr:`url`)."""
        return None

    # -- connections -------------------------------------------------------------

    def fail(self, problem: str) -> StoreError:
        """A :class:`StoreError` naming the store (its URL without password)."""
        return StoreError(f"{self._where}: {problem}")

    def _connect(self, autocommit: bool) -> psycopg.Connection[Any]:
        """A new connection with the store's schema on its search path (migrated first, once per store)."""
        try:
            conn = psycopg.connect(self._url, autocommit=autocommit, application_name="durable")
        except psycopg.Error as exc:
            raise self.fail(f"cannot connect: {_message(exc)}") from None
        try:
            if not self._migrated:
                with self._migrate_lock:
                    if not self._migrated:
                        migrate(conn, self.schema, self._where, create=self._create)
                        self._migrated = True
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            if not autocommit:
                conn.commit()
        except StoreError:
            conn.close()
            raise
        except psycopg.Error as exc:
            conn.close()
            raise self.fail(f"cannot open the schema {self.schema!r}: {_message(exc)}") from None
        return conn

    def _write_conn(self) -> psycopg.Connection[Any]:
        """The write connection, (re)connected with backoff."""
        conn = self._wconn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._wconn = None
        self._wconn = self._connect_with_backoff()  # autocommit: batch.Tx sends BEGIN (or not: one statement)
        return self._wconn

    def _connect_with_backoff(self) -> psycopg.Connection[Any]:
        """A new autocommit connection, tried again after each pause of ``_BACKOFF`` (a restarting server is
        waited for); a store too new for this code is not tried again."""
        error: StoreError | None = None
        for pause in (0.0, *_BACKOFF):
            if pause:
                time.sleep(pause)
            try:
                return self._connect(autocommit=True)
            except StoreError as exc:
                error = exc
                if isinstance(exc, StoreTooNew):
                    break
        assert error is not None
        raise error

    # -- writing (the writer thread, or an inline write's thread) ---------------------

    def run_batch(self, batch: list[WriteRequest]) -> None:
        """Run every write of ``batch`` in one transaction and commit it, then tell the observers."""
        with self._wlock:
            committed = self._run_batch(batch)
        if committed:
            notes = [r.note for r in batch if r.note is not None and r.error is None]
            if notes:
                try:
                    self._notify(notes)
                except Exception:  # pragma: no cover - best effort
                    _log.exception("wake-ups after a commit failed")

    def _run_batch(self, batch: list[WriteRequest]) -> bool:
        """Run and commit ``batch``; whether it committed (a split batch notifies its parts itself)."""
        self.batches += 1
        for attempt in range(_RETRIES):
            try:
                conn = self._write_conn()
            except StoreError as exc:
                for r in batch:
                    r.error = exc
                return False
            try:
                skip = superseded(batch)
                tx = Tx(conn)
                run_writes(tx, self._where, batch, skip, self._drained_by)
                tx.commit(self._wakeups(batch, skip))
                return True
            except psycopg.errors.TransactionRollback:
                _rollback(conn)  # a deadlock or serialization failure with another writer: run it again
                for r in batch:
                    r.result = None
                time.sleep(0.001 * (attempt + 1))
                continue
            except psycopg.OperationalError as exc:
                if conn.closed or conn.broken:
                    err = self._in_doubt(conn, exc)
                    for r in batch:
                        r.error = err
                    return False
                return self._failed(conn, batch, exc)
            except BaseException as exc:
                return self._failed(conn, batch, exc)
        err = self.fail("write failed: deadlocked with other writers on every try; nothing of it was stored")
        for r in batch:
            r.error = err
        return False

    def _in_doubt(self, conn: psycopg.Connection[Any], exc: BaseException) -> StoreError:
        """The write connection broke during a write: drop it, and the error of every write it carried."""
        _close(conn)
        if self._wconn is conn:
            self._wconn = None
        return self.fail(f"the connection failed during a write, which may or may not have committed "
                         f"(the store reconnects on the next write): {_message(exc)}")

    def _failed(self, conn: psycopg.Connection[Any], batch: list[WriteRequest], exc: BaseException) -> bool:
        _rollback(conn)
        if len(batch) > 1:
            # One failing write must not fail the others that happened to share its transaction.
            for r in batch:
                r.result = None
                self.run_batch([r])
            return False
        err = self.fail(f"write failed, nothing of it was stored: {type(exc).__name__}: {_message(exc)}")
        for r in batch:
            r.error = err
        return False

    def _wakeups(self, batch: list[WriteRequest], skip: set[int]) -> list[tuple[str, Any]]:
        """(In the batch's transaction, last) the ``NOTIFY`` of the notes of its writes: delivered if it
        commits."""
        notes: list[bytes] = []
        for i, r in enumerate(batch):
            if r.note is None or i in skip:
                continue
            if r.note == b"events*":
                holder = r.args[0] if r.args else None
                if holder:  # the events this drain appended: (instance id, data)
                    notes.extend(b"events " + iid.encode() for iid, _ in holder[0])
            else:
                notes.append(r.note)
        if not notes:
            return []
        return [("SELECT pg_notify(%s, p) FROM unnest(%b::text[]) AS p", (self.channel, payloads(notes, self._sender)))]

    def listener(self, kinds: list[str] | tuple[str, ...]) -> PostgresListener:
        """A listener for this store's wake-ups of ``kinds`` (``work``, ``signal``, ``end``, ``events``), on a
        connection of its own (``LISTEN``); it skips those this store object sent. See ``listen.py``."""
        return PostgresListener(self._listen_conn, self.channel, kinds, skip=self._sender, where=self._where)

    def _listen_conn(self) -> psycopg.Connection[Any]:
        """(A worker thread) a connection for ``LISTEN``: TCP keepalives unless the URL sets its own, so a
        silent server (a network partition) is noticed within about a minute."""
        options: dict[str, Any] = {}
        try:
            given = psycopg.conninfo.conninfo_to_dict(self._url)
        except psycopg.Error:
            given = {}
        for key, value in (("keepalives_idle", 20), ("keepalives_interval", 10), ("keepalives_count", 4)):
            if key not in given:
                options[key] = value
        try:
            return psycopg.connect(self._url, autocommit=True, application_name="durable-listen", **options)
        except psycopg.Error as exc:
            raise self.fail(f"cannot connect: {_message(exc)}") from None

    def migrate(self) -> tuple[int, int]:
        """(Blocking) apply the pending migrations now: the schema's version before (``0``: none, it was
        created) and after. ``durable migrate`` runs it; stores also migrate on first use."""
        try:
            conn = psycopg.connect(self._url, autocommit=True, application_name="durable")
        except psycopg.Error as exc:
            raise self.fail(f"cannot connect: {_message(exc)}") from None
        try:
            with self._migrate_lock:
                before = migrate(conn, self.schema, self._where, create=self._create)
                self._migrated = True
            return before, SCHEMA_VERSION
        except psycopg.Error as exc:
            raise self.fail(f"cannot migrate the schema {self.schema!r}: {_message(exc)}") from None
        finally:
            _close(conn)

    def version(self) -> int | None:
        """(Blocking) the schema's version as stored, without migrating it; ``None``: no store there."""
        try:
            conn = psycopg.connect(self._url, autocommit=True, application_name="durable")
        except psycopg.Error as exc:
            raise self.fail(f"cannot connect: {_message(exc)}") from None
        try:
            return schema_version(conn, self.schema)
        except psycopg.Error as exc:
            raise self.fail(f"cannot read the schema {self.schema!r}: {_message(exc)}") from None
        finally:
            _close(conn)

    def _notify(self, notes: list[bytes]) -> None:
        """After a commit: tell this process's observers (``on_change``) of ends and appended events."""
        notes = [part for note in notes for part in note.split(b"\0")]
        if b"events*" in notes:
            drained, self._drained = self._drained, []
            notes = notes + [b"events " + iid.encode() for holder in drained for iid, _ in holder[0]]
        observers = self._observers
        if not observers:
            return
        sent: set[bytes] = set()
        for note in notes:
            if note == b"events*" or note in sent:
                continue
            sent.add(note)
            kind, _, detail = note.partition(b" ")
            if kind == b"end" or kind == b"events":
                for fn in observers:
                    try:
                        fn(kind.decode(), detail.decode())
                    except Exception:
                        _log.exception("a change observer failed")

    # -- writing (the trio thread) -----------------------------------------------------

    async def _write(self, fn: Callable[..., _T], args: tuple[Any, ...] = (), *, durable: bool = True,
                     key: bytes | None = None, note: bytes | None = None) -> _T:
        """Run ``fn(cur, *args)`` in the next batch's transaction; returns (or raises) what it did.

        A returned ``LeaseLost`` is raised here. Once queued, the write is
        not cancellable: the caller must not move on before knowing whether it landed.
        """
        if self._closed:
            raise self.fail("the store is closed")
        writer = self._writer
        if writer is not None and not durable:
            writer.submit(WriteRequest(fn, False, None, key, args, note=note))
            return None  # type: ignore[return-value]
        if writer is not None:
            done: _T = await committed(writer, WriteRequest(fn, True, trio.lowlevel.current_task(), key, args,
                                                            note=note))
            return done
        request = WriteRequest(fn, True, None, key, args, note=note)
        paused = pause_autojump()  # a mock clock must not leap ahead while the database commits
        try:
            await trio.to_thread.run_sync(self.run_batch, [*self._take_later(), request])
        finally:
            resume_autojump(paused)
        return outcome_of(request)  # type: ignore[no-any-return]

    async def _write_again(self, fn: Callable[..., _T], args: Callable[[], tuple[Any, ...]], *,
                           note: bytes | None = None) -> _T:
        """:meth:`_write` for an idempotent ``fn`` (an upsert): a write that failed, in doubt or for want of a
        connection (a restarting server), is made again after a backoff, ``len(_BACKOFF)`` times at most.
        Startup writes (a queue's limits, a worker's record) use it, so that a worker started while the
        database restarts comes up instead of exiting. ``args()`` gives each attempt its arguments."""
        for pause in (*_BACKOFF, None):
            try:
                return await self._write(fn, args(), note=note)
            except StoreError as exc:
                if pause is None or self._closed or isinstance(exc, StoreTooNew):
                    raise
                _log.info("%s; writing again in %.2g s", exc, pause)
                await trio.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _write_later(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), key: bytes | None = None,
                     note: bytes | None = None) -> None:
        """Queue ``fn(cur, *args)`` as a non-durable write, without waiting: with the writer thread's next
        batch, or (no writer running) with the next write or before the next read."""
        if self._closed:
            raise self.fail("the store is closed")
        request = WriteRequest(fn, False, None, key, args, note=note)
        writer = self._writer
        if writer is not None:
            writer.submit(request)
        else:
            with self._later_lock:
                self._later.append(request)

    def _take_later(self) -> list[WriteRequest]:
        with self._later_lock:
            taken, self._later = self._later, []
        return taken

    def _flush_later(self) -> None:
        """(A worker thread) commit the non-durable writes queued while no writer thread runs."""
        if self._later:
            batch = self._take_later()
            if batch:
                self.run_batch(batch)

    # -- reading -------------------------------------------------------------------------

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(cur, *args)`` on a reader connection, in a worker thread (one retry on a new connection if the
        connection failed: the server restarted, say)."""
        if self._closed:
            raise self.fail("the store is closed")
        if self._read_limiter is None:
            self._read_limiter = trio.CapacityLimiter(_READERS)
        paused = pause_autojump()  # a mock clock must not leap ahead while the database answers
        try:
            return await trio.to_thread.run_sync(self._read_sync, fn, args, limiter=self._read_limiter)
        finally:
            resume_autojump(paused)

    def _read_conn(self) -> psycopg.Connection[Any]:
        """A new reader connection, with the write connection's backoff (a restarting server: a read waits
        for it, as a write does, instead of failing its caller at once)."""
        return self._connect_with_backoff()

    def _read_sync(self, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        if self._later:
            self._flush_later()
        for attempt in (0, 1):
            with self._readers_lock:
                conn = self._readers.pop() if self._readers else None
            if conn is None or conn.closed or conn.broken:
                conn = self._read_conn()
            try:
                with conn.cursor() as cur:
                    result = fn(cur, *args)
            except psycopg.OperationalError as exc:
                _close(conn)
                if attempt == 0:
                    continue
                raise self.fail(f"read failed: {_message(exc)}") from None
            except psycopg.Error as exc:
                _close(conn)
                raise self.fail(f"read failed: {type(exc).__name__}: {_message(exc)}") from None
            except BaseException:
                self._give_back(conn)  # a record that does not decode: the connection itself is fine
                raise
            self._give_back(conn)
            return result
        raise AssertionError("unreachable")

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        """Return a reader's connection to the pool (closed instead if the store is closed)."""
        with self._readers_lock:
            if self._closed:
                _close(conn)
            else:
                self._readers.append(conn)

    async def _lone_step(self, instance_id: str, column: bytes, data: bytes, owner: str, key: bytes) -> bool:
        """Write a fenced checkpoint from this (the trio) thread if it is the only write to make and the writer
        thread is idle (see ``lone.py``); whether it was written. ``False``: the caller queues it as usual."""
        writer = self._writer
        if writer is None:
            return False
        taken = writer.claim_idle()
        if taken is None:
            return False
        unwritten = taken
        try:
            if any(r.durable or r.key != key for r in taken) or not self._wlock.acquire(blocking=False):
                return False  # other writes to make first (or the connection in use): one batch for all
            try:
                conn = self._wconn  # read holding both locks: the writer may have replaced it before
                if conn is None or conn.closed or conn.broken or conn is self._lone_off:
                    return False
                unwritten = []  # what was taken: this step's "running" marker, superseded by its result
                paused = pause_autojump()  # a mock clock must not leap ahead while the database commits
                try:
                    with trio.CancelScope(shield=True):  # sent: the caller must know whether it landed
                        written = await self._lone_send(conn, instance_id, column, data, owner)
                except psycopg.OperationalError as exc:
                    raise self._in_doubt(conn, exc) from None
                finally:
                    resume_autojump(paused)
            finally:
                self._wlock.release()
        finally:
            writer.release_idle(unwritten)
        if written:
            self.batches += 1
        return written

    async def _lone_send(self, conn: psycopg.Connection[Any], instance_id: str, column: bytes, data: bytes,
                         owner: str) -> bool:
        """``lone.send``, preparing the statement on ``conn`` first if it is not (or no longer) prepared there."""
        for _ in range(2):
            if self._lone_prepared is not conn:
                if not await lone.prepare(conn, _LONE_STEP):
                    self._lone_off = conn  # the writer writes them on this connection
                    return False
                self._lone_prepared = conn
            written = await lone.send(conn, instance_id, column, data, owner)
            if written is not None:
                return written
            self._lone_prepared = None  # deallocated (psycopg does after a rollback): prepare it again
        return False

    def _drain_events(self, cur: tables.Cur, holder: list[list[tuple[str, bytes | Callable[[], bytes]]]]) -> None:
        """The write that appends the buffered events: a marker, which a batch runs as :meth:`_drained_by` (its
        events appended by the batch's last statement, ``eventlog.append_statement``), never by calling it."""
        raise AssertionError("a batch appends the buffered events (batch.run, kind 'events'), not this call")

    _drain_events.drains_events = True  # type: ignore[attr-defined]

    def _take_events(self, holder: list[list[tuple[str, bytes | Callable[[], bytes]]]]
                     ) -> list[tuple[str, bytes | Callable[[], bytes]]]:
        """The buffered events, taken into ``holder`` once, so a transaction run again writes the same events
        again."""
        if not holder:
            with self._events_lock:
                taken, self._events = self._events, []
            holder.append(taken)
            self._drained.append(holder)
        return holder[0]

    def _drained_by(self, r: WriteRequest) -> list[tuple[str, bytes]]:
        """The events (encoded) that the drain ``r`` appends."""
        return eventlog.ready(self._take_events(r.args[0]))

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the group-commit writer thread until cancelled, then commit what is queued and stop it."""
        if self._closed:
            raise self.fail("the store is closed")
        writer = Writer(self.run_batch, trio.lowlevel.current_trio_token(), self._lazy_delay, "durable-postgres-writer")
        for r in self._take_later():
            writer.submit(r)
        await run_writer(writer, self._attach_writer, task_status)

    def _attach_writer(self, writer: Writer | None) -> None:
        self._writer = writer

    def stats(self) -> dict[str, Any]:
        """The writer's batch counts (for benchmarks and the CLI)."""
        w = self._writer
        return {"url": self.url, "schema": self.schema, "batches": self.batches,
                "writes": w.writes if w else 0}

    def close(self) -> None:
        """Commit the non-durable writes still queued (blocking), then close every connection."""
        if self._closed:
            return
        try:
            self._flush_later()
        finally:
            self._closed = True
            with self._wlock:
                if self._wconn is not None:
                    _close(self._wconn)
                    self._wconn = None
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for conn in readers:
                _close(conn)


def _message(exc: BaseException) -> str:
    """An error's message on one line (libpq's may span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _rollback(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.rollback()
    except psycopg.Error:
        _close(conn)


def _close(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except psycopg.Error:  # pragma: no cover
        pass
