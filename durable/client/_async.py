"""``durable.AsyncClient``: the client's operations as coroutines, for asyncio and trio code alike.

Each call is handed to the client's own loop (:mod:`._portal`) and awaited
on an :class:`anyio.Event` that the client's thread sets through the caller's
loop (``call_soon_threadsafe`` under asyncio, the trio token under trio): no
thread is held while a call waits, so thousands of ``wait()`` or
``events()`` calls can be pending at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, final

import outcome
import sniffio
import trio

from .._engine.events import Event
from .._model.eventlog import check_event_range
from .._model.records import InstanceStatus, WorkflowInstance
from ..stores import Store
from . import _ops
from ._ops import Page
from ._sync import Client, _batch, _list, _resume, _start, _wait

__all__ = ["AsyncClient"]

_T = TypeVar("_T")


def _anyio() -> Any:
    try:
        import anyio
        import anyio.to_thread
    except ImportError:  # pragma: no cover - the extra is missing
        raise ImportError("durable.AsyncClient needs anyio: pip install 'durable[client]'") from None
    return anyio


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
        self._client = Client(store, poll_interval=poll_interval)
        self._portal = self._client._portal

    @property
    def store(self) -> Store:
        """The store (used on the client's own loop)."""
        return self._client.store

    async def _call(self, fn: Callable[..., Awaitable[_T]], *args: Any, cancellable: bool) -> _T:
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
        """Flush and release the store."""
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
        return await self._call(_start, self.store, workflow, args, kwargs, id, queue, priority, dedup_id, seconds,
                                allow_unknown, if_exists, cancellable=False)

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
        return await self._call(_wait, self._portal, instance_id, timeout, self._client.poll_interval,
                                cancellable=True)

    async def events(self, instance_id: str, after: int | None = None) -> AsyncIterator[Event]:
        """The instance's events until its last, each with its ``id`` (see :meth:`Client.events`)."""
        check_event_range(after or 0, 1)
        position = after or 0
        while True:
            batch, ended = await self._call(_batch, self._portal, instance_id, position,
                                            self._client.poll_interval, cancellable=True)
            for event in batch:
                position = event.id or position
                yield event
            if ended:
                return

    async def cancel(self, instance_id: str) -> bool:
        """Cancel an unfinished instance (see :meth:`Client.cancel`)."""
        return await self._call(_ops.cancel, self.store, instance_id, cancellable=False)

    async def signal(self, instance_id: str, name: str, payload: Any = None) -> int:
        """Queue signal ``name`` for an unfinished instance (see :meth:`Client.signal`)."""
        return await self._call(_ops.signal, self.store, instance_id, name, payload, cancellable=False)

    async def resume(self, instance_id: str) -> bool:
        """Put an unfinished instance whose engine is gone back in its queue (see :meth:`Client.resume`)."""
        return await self._call(_resume, self.store, instance_id, cancellable=False)
