"""Wake-ups of the PostgreSQL store: ``NOTIFY`` in each commit, ``LISTEN`` on a connection of each waiter.

Sending. Each batch of writes that carries wake-up notes (``work``,
``signal <id>``, ``end <id>``, ``events <id>``) ends, inside its own
transaction, with ``SELECT pg_notify(channel, payload) FROM unnest(...)``:
PostgreSQL delivers a notification only if its transaction commits, and only
after it has, so a waiter never looks before the change is visible. The
channel is one per schema (:func:`channel_of`); the payloads of one commit
are coalesced per kind (:func:`payloads`): ``<kind> <sender> [<id>, ...]``,
the ids a JSON list (an id may hold any character but NUL), split into
several notifications when one would pass PostgreSQL's 8,000-byte limit.
``<sender>`` is a random token of the store object that wrote, so its own
listeners skip what it sent (as LMDB's ``skip_own``): a process knows what it
wrote, and its store's :meth:`on_change` observers hear of it.

Listening. A :class:`PostgresListener` holds one connection of its own,
``LISTEN``-ing on the channel. It waits for the connection's socket on the
trio thread (``trio.lowlevel.wait_readable``), then reads what arrived with
libpq's non-blocking ``PQconsumeInput`` and ``PQnotifies`` (libpq keeps its
socket non-blocking, so neither call blocks the loop). Not a thread blocked
in ``Connection.notifies()``: that thread could not be cancelled from trio
(a waiter cancelled mid-wait would leave it parked until the next
notification or its timeout), each waiter would hold a thread, and a
notification would cost a thread hand-off; waiting on the socket is
cancellable like any trio wait and measured 1.5 ms p50 from ``NOTIFY`` to
the woken task. Only connecting (and ``LISTEN``) runs on a worker thread.

A dropped connection (the server restarted, the backend was terminated, the
network failed: TCP keepalives find a silent peer within about a minute) is
noticed when its socket reports the end; the listener reconnects with
backoff (0.1 s doubling to 5 s) from within :meth:`PostgresListener.wait`.
Notifications sent while it is disconnected are lost (PostgreSQL keeps none
for a session that is not listening): after reconnecting it returns one
wake-up of each kind with no id ("something of this kind may have changed,
look again"), and the waiters' poll (``poll_interval``) covers the rest, as
it covers every lost wake-up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import psycopg
import trio
from psycopg import sql

from ..._model.clock import pause_autojump, resume_autojump
from ...errors import StoreError
from .._wake import _check_kind

__all__ = ["MAX_PAYLOAD", "PostgresListener", "channel_of", "parse", "payloads"]

log = logging.getLogger("durable.wake")

#: The longest payload sent (PostgreSQL's limit is 8,000 bytes, less than a page).
MAX_PAYLOAD = 7900
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0


def channel_of(schema: str) -> str:
    """The notification channel of a store's schema: ``durable_<schema>``, or a digest of the schema where that
    would pass PostgreSQL's 63-byte identifiers."""
    name = f"durable_{schema}"
    if len(name.encode()) <= 63:
        return name
    return "durable_" + hashlib.sha256(schema.encode()).hexdigest()[:32]


def payloads(notes: Iterable[bytes], sender: str) -> list[str]:
    """The notification payloads of one commit's notes (``kind`` or ``kind <id>``; several notes of one write are
    joined by NUL): one per kind, its ids (deduplicated) in a JSON list, split to stay under :data:`MAX_PAYLOAD`."""
    by_kind: dict[str, dict[str, None]] = {}
    for joined in notes:
        for note in joined.split(b"\0"):
            kind_b, _, detail = note.partition(b" ")
            ids = by_kind.setdefault(kind_b.decode("ascii", "replace"), {})
            if detail:
                ids[detail.decode("utf-8", "replace")] = None
    out: list[str] = []
    for kind, ids in by_kind.items():
        head = f"{kind} {sender}"
        if not ids:
            out.append(head)
            continue
        chunk: list[str] = []
        size = len(head) + 3
        for iid in ids:
            item = json.dumps(iid)  # ascii: non-ascii characters escaped
            if chunk and size + len(item) + 2 > MAX_PAYLOAD:
                out.append(f"{head} [{', '.join(chunk)}]")
                chunk, size = [], len(head) + 3
            chunk.append(item)
            size += len(item) + 2
        out.append(f"{head} [{', '.join(chunk)}]")
    return out


def parse(payload: str, kinds: tuple[str, ...], skip: str | None) -> list[bytes]:
    """The wake-ups (``kind + b" " + id``, as :class:`~durable.stores._wake.Listener` returns them) of one
    payload, if its kind is one of ``kinds`` and its sender is not ``skip``; a bare kind gives ``kind + b" "``."""
    kind, _, rest = payload.partition(" ")
    if kind not in kinds:
        return []
    sender, _, ids = rest.partition(" ")
    if skip is not None and sender == skip:
        return []
    head = kind.encode() + b" "
    if not ids:
        return [head]
    try:
        found = json.loads(ids)
    except ValueError:
        return [head]
    if not isinstance(found, list):
        return [head]
    return [head + str(i).encode() for i in found] or [head]


class PostgresListener:
    """Receives a PostgreSQL store's wake-ups of some kinds (``LISTEN`` on a connection of its own).

    The same interface as the LMDB store's :class:`~durable.stores._wake.Listener`: :meth:`open`, :meth:`wait`
    (datagrams ``kind + b" " + id``), :meth:`close`. Made by :meth:`PostgresStore.listener
    <durable.stores.PostgresStore.listener>`.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], channel: str, kinds: Iterable[str], *,
                 skip: str | None, where: str) -> None:
        if isinstance(kinds, str):
            raise TypeError("kinds is an iterable of words, not a single string")
        self.kinds: tuple[str, ...] = tuple(dict.fromkeys(_check_kind(k) for k in kinds))
        if not self.kinds:
            raise ValueError("a listener needs at least one kind")
        self.channel = channel
        self._make = connect
        self._skip = skip
        self._where = where
        self._conn: psycopg.Connection[Any] | None = None
        self._fd = -1
        self._pending: list[bytes] = []
        self._opened = False
        self._closed = False
        self._delay = 0.0
        self._retry_at = -math.inf
        self._failing = False
        self._since = -math.inf
        self.connects = 0  #: how many times it connected (so ``connects - 1`` reconnections)

    @property
    def available(self) -> bool:
        """Whether it is listening now (``False``: disconnected, or closed; waiters only poll meanwhile)."""
        return self._conn is not None and not self._closed

    async def open(self) -> None:
        """Connect and ``LISTEN`` (idempotent). If the server cannot be reached, it does not raise: it logs,
        and :meth:`wait` tries again with backoff (meanwhile waiters poll)."""
        if self._closed:
            raise trio.ClosedResourceError("this wake-up listener is closed")
        if self._opened:
            return
        self._opened = True
        await self._connect()

    def _connect_sync(self) -> psycopg.Connection[Any]:
        conn = self._make()
        try:
            conn.add_notify_handler(self._on_notify)  # those read while LISTEN runs
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    def _on_notify(self, notify: psycopg.Notify) -> None:
        self._pending.extend(parse(notify.payload, self.kinds, self._skip))

    async def _connect(self) -> bool:
        """One try at connecting; whether it is listening now."""
        paused = pause_autojump()  # a mock clock must not leap ahead while the server answers
        try:
            conn = await trio.to_thread.run_sync(self._connect_sync)
        except (StoreError, psycopg.Error, OSError) as exc:
            self._delay = min(max(self._delay * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
            self._retry_at = trio.current_time() + self._delay
            text = " ".join(str(exc).split())
            (log.debug if self._failing else log.warning)(
                "%s: cannot listen for wake-ups (polling meanwhile; trying again in %g s): %s",
                self._where, self._delay, text)
            self._failing = True
            return False
        finally:
            resume_autojump(paused)
        if self._closed:  # closed by another task while connecting
            _close(conn)
            return False
        if self._failing or self.connects:
            log.info("%s: listening for wake-ups again", self._where)
        self._conn, self._fd = conn, conn.pgconn.socket
        self._failing = False
        self._since = trio.current_time()
        self.connects += 1
        return True

    def _drop(self, why: BaseException | str) -> None:
        """The connection failed: close it; :meth:`wait` reconnects."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._forget_fd()
            _close(conn)
        text = " ".join(str(why).split())
        log.warning("%s: the wake-up connection dropped (reconnecting; wake-ups sent meanwhile are lost, "
                    "the poll finds their changes): %s", self._where, text)
        now = trio.current_time()
        if now - self._since > 10 * _BACKOFF_MAX:
            self._delay = 0.0  # it had been up a while: at once (a failing try backs off)
        else:  # dropped soon after connecting (a server restarting, say): back off
            self._delay = min(max(self._delay * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
        self._retry_at = now + self._delay

    def _forget_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                trio.lowlevel.notify_closing(fd)  # a task in wait_readable(fd) gets ClosedResourceError
            except RuntimeError:  # outside trio: nobody can be waiting
                pass

    def _take(self) -> list[bytes]:
        """What arrived, without blocking (``[]``: nothing, or the connection dropped)."""
        conn = self._conn
        if conn is not None:
            pgconn = conn.pgconn
            try:
                pgconn.consume_input()
            except psycopg.Error as exc:
                self._drop(exc)
            else:
                if pgconn.status != psycopg.pq.ConnStatus.OK:
                    self._drop("the connection is bad")
                else:
                    while (n := pgconn.notifies()) is not None:
                        self._pending.extend(parse(n.extra.decode("utf-8", "replace"), self.kinds, self._skip))
        got, self._pending = self._pending, []
        return list(dict.fromkeys(got))

    async def wait(self, timeout: float | None = None) -> list[bytes]:
        """Wait for wake-ups: every one arrived (at least one), or ``[]`` after ``timeout`` seconds.

        Each is ``kind + b" " + id`` (see :func:`~durable.stores._wake.split_wakeup`); an empty id means "some
        change of this kind, look again" (after a reconnection, or a payload that could not be read). Raises
        :class:`RuntimeError` before :meth:`open`, and :class:`trio.ClosedResourceError` once closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("this wake-up listener is closed")
        if not self._opened:
            raise RuntimeError("call open() before wait()")
        deadline = math.inf if timeout is None else trio.current_time() + max(timeout, 0.0)
        await trio.lowlevel.checkpoint_if_cancelled()
        got = self._take()
        if got:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return got
        with trio.move_on_at(deadline):
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("this wake-up listener is closed")
                if self._conn is None:
                    await trio.sleep_until(self._retry_at)
                    if await self._connect():
                        # Whatever was sent while disconnected is lost: every kind, no id ("look again").
                        return [k.encode() + b" " for k in self.kinds]
                    continue
                await trio.lowlevel.wait_readable(self._fd)
                got = self._take()
                if got:
                    return got
        return []

    def close(self) -> None:
        """Close the connection (``UNLISTEN`` with it). Idempotent; safe inside or outside trio."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            self._forget_fd()
            _close(conn)

    async def __aenter__(self) -> PostgresListener:
        """Open the listener."""
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Close the listener."""
        self.close()

    def __repr__(self) -> str:
        return f"PostgresListener(kinds={'+'.join(self.kinds)!r}, channel={self.channel!r})"


def _close(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except psycopg.Error:  # pragma: no cover
        pass
