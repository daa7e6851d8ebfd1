"""``durable.AsyncClient``: the client's operations as coroutines, for asyncio and trio code alike (via anyio)."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar, final

from .._engine.events import Event
from .._model.records import InstanceStatus, WorkflowInstance
from ..stores import Store
from ._ops import Page
from ._sync import Client

__all__ = ["AsyncClient"]

_T = TypeVar("_T")


def _anyio() -> Any:
    try:
        import anyio
        import anyio.to_thread
    except ImportError:  # pragma: no cover - the extra is missing
        raise ImportError("durable.AsyncClient needs anyio: pip install 'durable[client]'") from None
    return anyio


@final
class AsyncClient:
    """:class:`Client`'s operations as coroutines; works under asyncio (FastAPI, Django...) and trio.

    Each call hands the operation to the client's own loop and awaits it
    without blocking the caller's event loop; concurrent calls share the
    store's commits. Waiting calls (``wait``, ``events``) give way to
    cancellation at once; writes (``start``, ``cancel``, ``signal``,
    ``resume``) finish what they began first, so a cancelled caller never
    leaves a write half-known. Safe to share between tasks and threads.

    Args: as for :class:`Client`.

    .. versionadded:: 0.2.0
    """

    def __init__(self, store: str | os.PathLike[str] | Store, *, poll_interval: float = 1.0) -> None:
        self._anyio = _anyio()
        self._client = Client(store, poll_interval=poll_interval)

    @property
    def store(self) -> Store:
        """The store (used on the client's own loop)."""
        return self._client.store

    async def _run(self, fn: Callable[..., _T], *args: Any, cancellable: bool, **kwargs: Any) -> _T:
        call = functools.partial(fn, *args, **kwargs)
        result: _T = await self._anyio.to_thread.run_sync(call, abandon_on_cancel=cancellable)
        return result

    async def aclose(self) -> None:
        """Flush and release the store."""
        await self._run(self._client.close, cancellable=False)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self, workflow: Any, /, *args: Any, id: str | None = None, queue: str | None = None,
                    priority: int = 0, dedup_id: str | None = None, delay: float | timedelta | None = None,
                    allow_unknown: bool = False, if_exists: Literal["return", "error"] = "return",
                    **kwargs: Any) -> str:
        """Store a new instance for a worker to run; its id once it is on disk (see :meth:`Client.start`)."""
        return await self._run(self._client.start, workflow, *args, id=id, queue=queue, priority=priority,
                               dedup_id=dedup_id, delay=delay, allow_unknown=allow_unknown, if_exists=if_exists,
                               cancellable=False, **kwargs)

    async def get(self, instance_id: str) -> WorkflowInstance | None:
        """The instance with its step results, or ``None``."""
        return await self._run(self._client.get, instance_id, cancellable=True)

    async def list(self, *, workflow: str | None = None, status: InstanceStatus | str | None = None,
                   queue: str | None = None, parent: str | None = None, created_after: datetime | None = None,
                   created_before: datetime | None = None, limit: int = 100, cursor: str | None = None) -> Page:
        """A page of instances matching the filters (see :meth:`Client.list`)."""
        return await self._run(self._client.list, workflow=workflow, status=status, queue=queue, parent=parent,
                               created_after=created_after, created_before=created_before, limit=limit,
                               cursor=cursor, cancellable=True)

    async def wait(self, instance_id: str, timeout: float | None = None) -> WorkflowInstance:
        """Return the instance once it has finished (see :meth:`Client.wait`)."""
        return await self._run(self._client.wait, instance_id, timeout, cancellable=True)

    async def events(self, instance_id: str, after: int | None = None) -> AsyncIterator[Event]:
        """The instance's events until its last, each with its ``id`` (see :meth:`Client.events`)."""
        from ._sync import _batch

        position = after or 0
        portal = self._client._portal
        poll = self._client.poll_interval
        while True:
            batch, ended = await self._run(portal.call, _batch, portal, instance_id, position, poll,
                                           cancellable=True)
            for event in batch:
                position = event.id or position
                yield event
            if ended:
                return

    async def cancel(self, instance_id: str) -> bool:
        """Cancel an unfinished instance (see :meth:`Client.cancel`)."""
        return await self._run(self._client.cancel, instance_id, cancellable=False)

    async def signal(self, instance_id: str, name: str, payload: Any = None) -> int:
        """Queue signal ``name`` for an unfinished instance (see :meth:`Client.signal`)."""
        return await self._run(self._client.signal, instance_id, name, payload, cancellable=False)

    async def resume(self, instance_id: str) -> bool:
        """Put an unfinished instance whose engine is gone back in its queue (see :meth:`Client.resume`)."""
        return await self._run(self._client.resume, instance_id, cancellable=False)
