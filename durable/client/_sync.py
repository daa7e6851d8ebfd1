"""``durable.Client``: start, watch and control workflow instances from any code, with no engine running."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Literal, final

import trio

from .._engine.events import Event
from .._model.eventlog import check_event_range
from .._model.records import InstanceStatus, WorkflowInstance
from ..errors import StoreError
from ..stores import LMDBStore, Store
from . import _ops
from ._ops import Page
from ._hub import Feed
from ._portal import LocalPortal, Portal

__all__ = ["Client"]

_LONGEST_WAIT = 1.0  # an events() batch returns at least this often, events or not (the iterator looks again)


def open_store(store: str | os.PathLike[str] | Store) -> tuple[Store, bool]:
    """The store a client uses, and whether the client opened it (and closes it)."""
    if not isinstance(store, (str, os.PathLike)):
        if not isinstance(store, Store):
            raise TypeError(f"a client takes a store path or a Store, got {store!r}")
        return store, False
    path = os.fspath(store)
    if isinstance(path, str) and path.lower().startswith(("postgresql://", "postgres://")):
        return _open_postgres(path), True
    if not os.path.exists(path):
        raise StoreError(f"{path}: no durable store here (a worker, Engine.open() or a durable command creates "
                         "one); nothing was created", path=path)
    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "data.mdb")):
        raise StoreError(f"{path}: not a durable store (no data.mdb in a directory); nothing was written", path=path)
    return LMDBStore(path), True


def _open_postgres(url: str) -> Store:
    """The :class:`~durable.PostgresStore` a URL names, if a store is there (its schema is never created)."""
    from ..stores import PostgresStore

    pg = PostgresStore(url, create=False)
    try:
        if pg.version() is None:
            raise pg.fail(f"no durable store here (schema {pg.schema!r} missing: a worker, Engine.open() or "
                          "`durable migrate` creates it); nothing was created")
    except BaseException:
        pg.close()
        raise
    return pg


@final
class Client:
    """Start, watch and control workflow instances in a store, from plain (synchronous) code.

    Args:
        store: the store's path (an existing LMDB store: a client never creates
            one), a ``postgresql://`` URL (an existing :class:`~durable.PostgresStore`
            schema, default ``durable``, or the URL's ``?schema=``), or a
            :class:`~durable.Store` that no engine in this process uses.
        poll_interval: seconds between looks where no wake-up reaches a
            waiting call (``wait``, ``events``); on one host with an LMDB
            store, or with PostgreSQL (``LISTEN``), a change wakes them at once.

    Nothing runs in the caller: ``start()`` stores a pending instance on a
    queue, and a worker (``durable worker``, ``Engine.serve()``) claims and
    runs it. The client keeps the store in a trio loop of its own, on a
    background thread; it is safe to share between threads. Close it
    (``close()``, or ``with Client(...) as client:``) to flush and release
    the store. For asyncio or trio code, use :class:`AsyncClient`.

    Raises:
        StoreError: ``store`` does not exist or is not a durable store.

    .. versionadded:: 0.2.0
    """

    def __init__(self, store: str | os.PathLike[str] | Store, *, poll_interval: float = 1.0) -> None:
        if not isinstance(poll_interval, (int, float)) or not 0 < poll_interval < 1e9:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        opened, owns = open_store(store)
        self.poll_interval = float(poll_interval)
        self._portal = Portal(opened, close_store=owns, poll=self.poll_interval)

    @property
    def store(self) -> Store:
        """The store (used on the client's own loop: call its methods through the client)."""
        return self._portal.store

    def close(self) -> None:
        """Flush and release the store; the client cannot be used after this."""
        self._portal.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- starting -------------------------------------------------------------

    def start(self, workflow: Any, /, *args: Any, id: str | None = None, queue: str | None = None,
              priority: int = 0, dedup_id: str | None = None, delay: float | timedelta | None = None,
              allow_unknown: bool = False, if_exists: Literal["return", "error"] = "return", **kwargs: Any) -> str:
        """Store a new instance for a worker to run; its id, once it is on disk (fsync'd).

        Args:
            workflow: a ``@workflow`` function or built graph (its arguments
                are checked against its signature here), or a workflow name
                (an engine on the store must have registered it, unless
                ``allow_unknown``).
            *args: the input: a decorator workflow's arguments; one value
                for a builder workflow.
            id: a caller-chosen id (as for ``engine.workflows.start``, with ``if_exists``).
            queue: the queue (default: the workflow's own, else ``"default"``);
                a :class:`~durable.QueueNotFound` if no one declared it on the store.
            priority: its place in a queue declared with ``priority=True``
                (higher first; first in first out within a priority).
            dedup_id: at most one unfinished instance of the queue holds it:
                a second start raises :class:`~durable.Deduplicated`.
            delay: seconds (or a timedelta) before a worker may start it.
            allow_unknown: queue a workflow name that no engine has registered yet.
            if_exists: see ``engine.workflows.start``.
            **kwargs: keyword arguments of a decorator workflow's call.

        Raises:
            WorkflowNotFound, QueueNotFound, Deduplicated, IdConflict,
            TypeError (arguments that do not fit the workflow),
            SerializationError (an input that cannot be stored): nothing is written.
        """
        if if_exists not in ("return", "error"):
            raise ValueError(f"if_exists must be 'return' or 'error', got {if_exists!r}")
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        id_: str = self._portal.call(_start, self.store, workflow, args, kwargs, id, queue, priority, dedup_id,
                                     seconds, allow_unknown, if_exists)
        return id_

    # -- reading --------------------------------------------------------------

    def get(self, instance_id: str) -> WorkflowInstance | None:
        """The instance with its step results, or ``None``."""
        found: WorkflowInstance | None = self._portal.call(self.store.get_instance, instance_id)
        return found

    def list(self, *, workflow: str | None = None, status: InstanceStatus | str | None = None,
             queue: str | None = None, parent: str | None = None, created_after: datetime | None = None,
             created_before: datetime | None = None, limit: int = 100, cursor: str | None = None) -> Page:
        """Instances matching every filter given, oldest first, a page of ``limit`` at a time.

        Pass the page's ``next_cursor`` as ``cursor`` for the next page: it
        marks a place (creation time and id), so paging goes on even when the
        instance it was taken from has since left the listing. Step results
        are not included (``get()`` has them).
        """
        page: Page = self._portal.call(_list, self.store, workflow, status, queue, parent, created_after,
                                       created_before, limit, cursor)
        return page

    def wait(self, instance_id: str, timeout: float | None = None) -> WorkflowInstance:
        """Block until the instance has finished (woken by its end, not by polling, where the store can); returns it.

        Raises:
            InstanceNotFound: there is no such instance.
            TimeoutError: it did not finish within ``timeout`` seconds.
        """
        inst: WorkflowInstance = self._portal.call(_wait, self._portal, instance_id, timeout, self.poll_interval)
        return inst

    def events(self, instance_id: str, after: int | None = None) -> Iterator[Event]:
        """The instance's events, from its first (or after event id ``after``), until its last.

        Every event has ``id``: store-wide, increasing; pass the last one seen as
        ``after`` to go on from there (an SSE ``Last-Event-ID``). Events are
        read from the store a batch at a time as they are consumed, so a slow
        reader holds no more than a batch in memory. The iterator ends after
        the instance's ``workflow.completed``, ``failed`` or ``cancelled``.
        """
        check_event_range(after or 0, 1)  # (at the call, not at the first event)
        feed = self._portal.call(self._portal.feed, instance_id, None, after or 0)
        try:
            while not feed.ended:
                yield from self._portal.call(feed.next, _LONGEST_WAIT)
        finally:
            self._portal.call(_close, feed)

    # -- control --------------------------------------------------------------

    def workflows(self) -> dict[str, str | None]:
        """The workflows engines on this store have registered, by name: each one's own queue (``None``: the
        default queue).

        .. versionadded:: 0.2.0
        """
        found: dict[str, str | None] = self._portal.call(_ops.workflows, self.store)
        return found

    def cancel(self, instance_id: str) -> bool:
        """Cancel an unfinished instance (and its running children); ``False`` if it had finished or does not exist.

        The status ``cancelled`` is durable when this returns; the engine
        running it stops it when woken (at once on one host) or at its next heartbeat.
        """
        done: bool = self._portal.call(_ops.cancel, self.store, instance_id)
        return done

    def signal(self, instance_id: str, name: str, payload: Any = None) -> int:
        """Queue signal ``name`` for an unfinished instance, durably; its sequence number."""
        seq: int = self._portal.call(_ops.signal, self.store, instance_id, name, payload)
        return seq

    def resume(self, instance_id: str) -> bool:
        """Put an unfinished instance whose engine is gone back in its queue, for a worker to run now.

        ``False`` if it finished, waits in its queue already, or a live
        engine runs it (workers also take such instances over by themselves,
        every ``poll_interval``).

        Raises:
            InstanceNotFound: there is no such instance.
        """
        done: bool = self._portal.call(_resume, self.store, instance_id)
        return done


async def _start(store: Store, workflow: Any, args: tuple[Any, ...], kwargs: dict[str, Any], id: str | None,
                 queue: str | None, priority: int, dedup_id: str | None, delay: float | None, allow_unknown: bool,
                 if_exists: Literal["return", "error"]) -> str:
    return await _ops.start(store, workflow, args, kwargs, id=id, queue=queue, priority=priority, dedup_id=dedup_id,
                            delay=delay, allow_unknown=allow_unknown, if_exists=if_exists)


async def _list(store: Store, workflow: str | None, status: InstanceStatus | str | None, queue: str | None,
                parent: str | None, created_after: datetime | None, created_before: datetime | None, limit: int,
                cursor: str | None) -> Page:
    return await _ops.list_page(store, workflow=workflow, status=status, queue=queue, parent=parent,
                                created_after=created_after, created_before=created_before, limit=limit, cursor=cursor)


async def _wait(portal: Portal | LocalPortal, instance_id: str, timeout: float | None, poll: float) -> WorkflowInstance:
    with trio.move_on_after(timeout if timeout is not None else float("inf")):
        while True:
            with portal.watch(instance_id) as changed:  # before the read: an end right after it wakes us
                inst = await _ops.get_existing(portal.store, instance_id)
                if inst.finished:
                    full = await portal.store.get_instance(instance_id)
                    return full or inst
                with trio.move_on_after(poll):
                    await changed.wait()
    raise TimeoutError(f"instance {instance_id!r} did not finish within {timeout:g} s")


async def _close(feed: Feed) -> None:
    feed.close()


async def _resume(store: Store, instance_id: str) -> bool:
    await _ops.get_existing(store, instance_id)
    return await store.requeue(instance_id)
