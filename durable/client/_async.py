"""``durable.AsyncClient``: the client's operations as coroutines, for asyncio and trio code alike.

Each call is handed to the client's own loop (:mod:`._portal`) and awaited
on an :class:`anyio.Event` that the client's thread sets through the caller's
loop (``call_soon_threadsafe`` under asyncio, the trio token under trio): no
thread is held while a call waits, so thousands of ``wait()`` or
``events()`` calls can be pending at once. A client made by
:meth:`AsyncClient.sharing`, called from the trio run it shares, awaits each
call in the caller's own task instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, final

import outcome
import sniffio
import trio

from .._engine.engine import Engine
from .._engine.events import Event
from .._model.eventlog import check_event_range
from .._model.ids import check_instance_id
from .._model.records import InstanceStatus, WorkflowInstance
from ..stores import Store
from . import _ops
from ._ops import Page
from ._hub import Feed
from ._portal import LocalPortal, Portal, open_local
from ._sync import Client, _close, _list, _resume, _start, _wait

__all__ = ["AsyncClient", "EventFeed"]

_T = TypeVar("_T")


def _anyio() -> Any:
    try:
        import anyio
        import anyio.to_thread
    except ImportError:  # pragma: no cover - the extra is missing
        raise ImportError("durable.AsyncClient needs anyio: pip install 'durable[client]'") from None
    return anyio


def _current_token() -> trio.lowlevel.TrioToken | None:
    """The trio run this task is in, if any."""
    try:
        return trio.lowlevel.current_trio_token()
    except RuntimeError:
        return None


def _waker(set_event: Callable[[], None]) -> Callable[[], None]:
    """A function any thread may call to run ``set_event`` on the caller's event loop, soon."""
    library = sniffio.current_async_library()
    if library == "trio":
        token = trio.lowlevel.current_trio_token()

        def wake_trio() -> None:
            try:
                token.run_sync_soon(set_event)
            except trio.RunFinishedError:
                pass  # the caller's loop is gone: nobody waits

        return wake_trio
    if library == "asyncio":
        loop = asyncio.get_running_loop()

        def wake_asyncio() -> None:
            try:
                loop.call_soon_threadsafe(set_event)
            except RuntimeError:
                pass  # the caller's loop is closed: nobody waits

        return wake_asyncio
    raise RuntimeError(f"durable.AsyncClient runs under asyncio or trio, not {library}")


@final
class AsyncClient:
    """:class:`Client`'s operations as coroutines; works under asyncio (FastAPI, Django...) and trio.

    Each call runs on the client's own loop; awaiting it holds no thread, and
    concurrent calls share the store's commits. Waiting calls (``get``,
    ``list``, ``wait``, ``events``) give way to cancellation at once (the
    operation is cancelled on the client's loop too); writes (``start``,
    ``cancel``, ``signal``, ``resume``) finish what they began first, so a
    cancelled caller never leaves a write half-known. Safe to share between
    tasks and threads.

    Args: as for :class:`Client`.

    .. versionadded:: 0.2.0
    """

    def __init__(self, store: str | os.PathLike[str] | Store, *, poll_interval: float = 1.0) -> None:
        self._anyio = _anyio()
        self._client: Client | None = Client(store, poll_interval=poll_interval)
        self._portal: Portal | LocalPortal = self._client._portal
        self._local: LocalPortal | None = None
        self._poll = self._client.poll_interval

    @classmethod
    @contextlib.asynccontextmanager
    async def sharing(cls, engine: Engine | Store, *, poll_interval: float = 1.0) -> AsyncIterator[AsyncClient]:
        """A client of an open :class:`~durable.Engine`'s store (or of a store already running in this trio
        run), with no thread of its own: ``async with AsyncClient.sharing(engine) as client:``.

        Its calls run as tasks of this trio run and share the engine's
        commits, and the engine hears of its writes at once (a start wakes
        its worker, a cancel stops the run); the store stays open when the
        block ends. This is how ``durable serve`` gives its HTTP API the
        worker's store. Use it under trio, in the engine's run.

        .. versionadded:: 0.2.0
        """
        notify = None
        if isinstance(engine, Engine):
            store, notify = engine.store, engine.wake
        elif isinstance(engine, Store):
            store = engine
        else:
            raise TypeError(f"AsyncClient.sharing() takes an open Engine or a Store, got {engine!r}")
        if not isinstance(poll_interval, (int, float)) or not 0 < poll_interval < 1e9:
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        async with open_local(store, float(poll_interval), notify) as portal:
            client = cls.__new__(cls)
            client._anyio = _anyio()
            client._client = None
            client._portal = portal
            client._local = portal
            client._poll = float(poll_interval)
            yield client

    @property
    def store(self) -> Store:
        """The store (used on the client's own loop)."""
        return self._portal.store

    async def _call(self, fn: Callable[..., Awaitable[_T]], *args: Any, cancellable: bool) -> _T:
        local = self._local
        if local is not None and local._token is not None:
            if _current_token() is local._token:
                # Sharing the caller's trio run: the call runs in the caller's task, no task or wake-up of its own.
                if cancellable:
                    return await fn(*args)
                with trio.CancelScope(shield=True):
                    return await fn(*args)
        done = self._anyio.Event()
        box: list[outcome.Outcome[_T]] = []
        wake = _waker(done.set)

        def on_done(result: outcome.Outcome[_T]) -> None:
            box.append(result)
            wake()

        cancel = self._portal.submit(fn, args, on_done)
        try:
            if cancellable:
                await done.wait()
            else:
                with self._anyio.CancelScope(shield=True):
                    await done.wait()
        except BaseException:
            cancel()
            raise
        return box[0].unwrap()

    async def aclose(self) -> None:
        """Flush and release the store (a client made by :meth:`sharing` only stops taking calls)."""
        if self._client is None:
            self._portal.close()
            return
        await self._anyio.to_thread.run_sync(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self, workflow: Any, /, *args: Any, id: str | None = None, queue: str | None = None,
                    priority: int = 0, dedup_id: str | None = None, delay: float | timedelta | None = None,
                    allow_unknown: bool = False, if_exists: Literal["return", "error"] = "return",
                    **kwargs: Any) -> str:
        """Store a new instance for a worker to run; its id once it is on disk (see :meth:`Client.start`)."""
        if if_exists not in ("return", "error"):
            raise ValueError(f"if_exists must be 'return' or 'error', got {if_exists!r}")
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        instance_id: str = await self._call(_start, self.store, workflow, args, kwargs, id, queue, priority,
                                            dedup_id, seconds, allow_unknown, if_exists, cancellable=False)
        self._portal.wrote("work", instance_id)
        return instance_id

    async def get(self, instance_id: str) -> WorkflowInstance | None:
        """The instance with its step results, or ``None``."""
        return await self._call(self.store.get_instance, instance_id, cancellable=True)

    async def list(self, *, workflow: str | None = None, status: InstanceStatus | str | None = None,
                   queue: str | None = None, parent: str | None = None, created_after: datetime | None = None,
                   created_before: datetime | None = None, limit: int = 100, cursor: str | None = None) -> Page:
        """A page of instances matching the filters (see :meth:`Client.list`)."""
        return await self._call(_list, self.store, workflow, status, queue, parent, created_after, created_before,
                                limit, cursor, cancellable=True)

    async def wait(self, instance_id: str, timeout: float | None = None) -> WorkflowInstance:
        """Return the instance once it has finished (see :meth:`Client.wait`)."""
        return await self._call(_wait, self._portal, instance_id, timeout, self._poll, cancellable=True)

    async def events(self, instance_id: str, after: int | None = None) -> AsyncIterator[Event]:
        """The instance's events until its last, each with its ``id`` (see :meth:`Client.events`)."""
        async with await self.subscribe(instance_id, after=after) as feed:
            async for event in feed:
                yield event

    async def all_events(self, *, after: int | None = None, workflow: str | None = None) -> AsyncIterator[Event]:
        """Every instance's events as they are stored (of ``workflow`` only, if given), from now on, or after
        event id ``after``; it never ends by itself.

        .. versionadded:: 0.2.0
        """
        async with await self.subscribe(None, after=after, workflow=workflow) as feed:
            async for event in feed:
                yield event

    async def subscribe(self, instance_id: str | None = None, *, after: int | None = None,
                        workflow: str | None = None) -> EventFeed:
        """An :class:`EventFeed` of one instance's events (from its first, or after event id ``after``), or of
        every instance's (``None``: from now on, or after ``after``; of ``workflow`` only, if given).

        Feeds are served by one reader of the store's event log per client,
        so a thousand open feeds cost one read per new event, and each holds a
        bounded buffer: a reader that falls behind reads on from the store.
        Unlike iterating :meth:`events`, :meth:`EventFeed.receive` takes a
        timeout, for keep-alives (an SSE server's).

        .. versionadded:: 0.2.0
        """
        check_event_range(after or 0, 1)
        if instance_id is not None:
            check_instance_id(instance_id)
        feed = await self._call(self._portal.feed, instance_id, workflow, after, cancellable=False)
        return EventFeed(self, feed)

    async def workflows(self) -> dict[str, str | None]:
        """The workflows engines on this store have registered, by name: each one's own queue (``None``: the
        default queue).

        .. versionadded:: 0.2.0
        """
        return await self._call(_ops.workflows, self.store, cancellable=True)

    async def cancel(self, instance_id: str) -> bool:
        """Cancel an unfinished instance (see :meth:`Client.cancel`)."""
        cancelled: bool = await self._call(_ops.cancel, self.store, instance_id, cancellable=False)
        if cancelled:
            self._portal.wrote("end", instance_id)
        return cancelled

    async def signal(self, instance_id: str, name: str, payload: Any = None) -> int:
        """Queue signal ``name`` for an unfinished instance (see :meth:`Client.signal`)."""
        seq: int = await self._call(_ops.signal, self.store, instance_id, name, payload, cancellable=False)
        self._portal.wrote("signal", instance_id)
        return seq

    async def resume(self, instance_id: str) -> bool:
        """Put an unfinished instance whose engine is gone back in its queue (see :meth:`Client.resume`)."""
        resumed: bool = await self._call(_resume, self.store, instance_id, cancellable=False)
        if resumed:
            self._portal.wrote("work", instance_id)
        return resumed


@final
class EventFeed:
    """A reader's place in the event log (see :meth:`AsyncClient.subscribe`): ``async for event in feed``, or
    :meth:`receive` with a timeout. Close it (``async with``, or :meth:`aclose`) when done.

    .. versionadded:: 0.2.0
    """

    def __init__(self, client: AsyncClient, feed: Feed) -> None:
        self._client = client
        self._feed = feed
        self._pending: list[Event] = []

    @property
    def ended(self) -> bool:
        """The instance's log has ended and every event of it was received (never, for a feed of all)."""
        return self._feed.ended and not self._pending

    @property
    def position(self) -> int:
        """The id of the last event received (``Last-Event-ID``)."""
        return self._feed.position

    async def receive(self, timeout: float | None = None) -> list[Event]:
        """The next events (one or more); ``[]`` once ended, or when none came within ``timeout`` seconds.

        Raises:
            InstanceNotFound: the feed's instance does not exist.
        """
        if self._pending:
            out, self._pending = self._pending, []
            return out
        if self._feed.ended:
            return []
        local = self._client._local
        if local is not None and local._token is not None and local._token is _current_token():
            return await self._feed.next(timeout)  # (sharing this trio run: no call of its own)
        return await self._client._call(self._feed.next, timeout, cancellable=True)

    def __aiter__(self) -> EventFeed:
        return self

    async def __anext__(self) -> Event:
        while not self._pending:
            if self._feed.ended:
                raise StopAsyncIteration
            self._pending = await self._client._call(self._feed.next, None, cancellable=True)
        return self._pending.pop(0)

    async def aclose(self) -> None:
        """Stop taking events."""
        try:
            await self._client._call(_close, self._feed, cancellable=False)
        except RuntimeError:
            pass  # the client is closed: so is the feed

    async def __aenter__(self) -> EventFeed:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
