"""The engine: owns the store, the registries, the event bus and one nursery.

Everything the engine runs (instances, the store's writer thread, async event
listeners) lives in the nursery it opens on ``async with``; leaving the block
stops every instance (they stay ``running`` in the store, for ``resume()``)
and flushes the store.
"""

from __future__ import annotations

import os
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from types import TracebackType
from typing import final

import trio

from . import _clock
from ._events import EventBus
from ._jobs import JobRegistry
from ._service import WorkflowService
from .stores import LMDBStore, MemoryStore, Store

__all__ = ["Engine"]


@final
class Engine:
    """Runs workflows; use as ``async with Engine(store=...) as engine:``.

    Args:
        store: where instances and checkpoints are kept (default: a new
            :class:`MemoryStore`).

    Attributes:
        workflows: register, start, wait for, inspect, cancel and resume instances.
        jobs: the jobs builder tasks run by name.
        events: listeners and subscriptions for the workflow events.
        store: the store.

    .. versionadded:: 0.1.0
    """

    def __init__(self, store: Store | None = None) -> None:
        self.store: Store = store if store is not None else MemoryStore()
        self.jobs = JobRegistry()
        self.events = EventBus()
        self.workflows = WorkflowService(self)
        self._owns_store = False
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str] = "durable.lmdb", **store_options: object) -> Engine:
        """An engine over the :class:`LMDBStore` at ``path``; closes the store when it exits.

        Use as ``async with Engine.open("orders.lmdb") as engine:``.
        """
        engine = cls(LMDBStore(path, **store_options))  # type: ignore[arg-type]
        engine._owns_store = True
        return engine

    def now(self) -> datetime:
        """The engine's wall-clock time, following trio's clock (so ``MockClock`` moves it)."""
        return _clock.now()

    @property
    def nursery(self) -> trio.Nursery:
        """The engine's nursery; only valid inside ``async with``."""
        if self._nursery is None:
            raise RuntimeError("the engine is not running: use it inside 'async with Engine(...) as engine:'")
        return self._nursery

    async def __aenter__(self) -> Engine:
        if self._nursery is not None:
            raise RuntimeError("this engine is already running")
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        try:
            await self._nursery.start(self.store.run)
        except BaseException as exc:
            await self._exit(type(exc), exc, exc.__traceback__)
            raise
        self.events._nursery = self._nursery
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._exit(exc_type, exc, tb)

    async def _exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._nursery is not None and self._nursery_cm is not None
        try:
            with trio.CancelScope(shield=True):
                await self.workflows.stop()
            self._nursery.cancel_scope.cancel()
            # The body's own exception propagates as it is: handing it to the
            # nursery would wrap it in an ExceptionGroup.
            await self._nursery_cm.__aexit__(None, None, None)
            return None
        finally:
            self.events._close_all()
            self.events._nursery = None
            self._nursery = None
            if self._owns_store:
                self.store.close()
