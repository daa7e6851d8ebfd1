"""The client's private trio loop: a thread that owns the store and runs every store call.

A store's writes are group-committed by a writer thread bound to one trio
run, so a client keeps its store in a trio run of its own, on a daemon
thread, and hands it coroutines from any thread (``trio.from_thread.run``).
Concurrent callers (threads, or tasks of an :class:`~durable.AsyncClient`)
share its commits. Wake-ups from other processes (an instance ended, events
appended) reach waiting calls through one listener, and this process's own
changes through :meth:`~durable.stores.Store.on_change`.

:class:`LocalPortal` offers the same to a client that shares a store already
running in the caller's trio run (an engine's: ``durable serve``), with no
thread of its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import outcome
import trio

from ..stores import Store
from ..stores._wake import WakeListener, split_wakeup, store_listener
from ._hub import EventHub, Feed

__all__ = ["LocalPortal", "Portal", "open_local"]

log = logging.getLogger("durable.client")
_T = TypeVar("_T")


def _closed() -> RuntimeError:
    return RuntimeError("the client is closed (it was closed while this call waited)")


class _Loop:
    """What both portals share: a nursery and token on the client's loop, waits for changes, the event hub."""

    store: Store
    poll: float
    _token: trio.lowlevel.TrioToken | None
    _nursery: trio.Nursery | None

    def _init_loop(self, store: Store, poll: float) -> None:
        self.store = store
        self.poll = poll
        self._token = None
        self._nursery = None
        self._listener: WakeListener | None = None
        self._waiters: dict[str, set[trio.Event]] = {}
        self._hub: EventHub | None = None
        self._hub_starting: trio.Event | None = None
        self._stop_observing: Callable[[], None] | None = None
        self._changes_pending = False

    def submit(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
               on_done: Callable[[outcome.Outcome[Any]], None]) -> Callable[[], None]:
        """Start ``await fn(*args)`` on the client's loop without waiting; ``on_done(outcome)`` is called on the
        loop's thread when it ends. Returns a function (callable from any thread) that cancels it."""
        token = self._token
        if token is None or not self._alive():
            raise RuntimeError("the client is closed")
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                result = await outcome.acapture(fn, *args)
                if isinstance(result, outcome.Error) and isinstance(result.error, trio.Cancelled):
                    result = outcome.Error(_closed())  # the client closed while the call waited: not the caller's
                on_done(result)
                return
            on_done(outcome.Error(RuntimeError("cancelled by its caller")))  # (who no longer waits for it)

        def spawn() -> None:
            try:
                assert self._nursery is not None
                self._nursery.start_soon(run)
            except RuntimeError:  # the loop is closing: no new task may start
                on_done(outcome.Error(_closed()))

        def cancel() -> None:
            try:
                token.run_sync_soon(scope.cancel)
            except trio.RunFinishedError:
                pass

        try:
            token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            raise RuntimeError("the client is closed") from None
        return cancel

    def _alive(self) -> bool:
        return True

    def wrote(self, kind: str, instance_id: str) -> None:
        """A write of this client's is committed (``work``, ``signal``, ``end``): tell whom it concerns in this
        process (a :class:`LocalPortal`'s engine; other processes hear of it through the store's wake-ups)."""

    # -- waiting for changes (on the loop) -------------------------------------------

    @contextlib.contextmanager
    def watch(self, instance_id: str) -> Iterator[trio.Event]:
        """An event set when the instance may have changed (ended, new events): registered at once, so a
        change after this call (say, between the caller's read and its wait) is not missed."""
        event = trio.Event()
        waiters = self._waiters.setdefault(instance_id, set())
        waiters.add(event)
        try:
            yield event
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(instance_id, None)

    async def feed(self, instance_id: str | None, workflow: str | None, after: int | None) -> Feed:
        """(On the loop) a feed of the event log: of one instance (from ``after``, default its first event), or
        of all (from ``after``, default: from now on), read through the client's one :class:`EventHub`."""
        hub = await self._running_hub()
        if after is None and instance_id is None:
            after = await self.store.last_event_id()  # from now: exactly what is stored after this call
        return hub.open(instance_id, workflow, after or 0)

    async def _running_hub(self) -> EventHub:
        if self._hub is not None:
            return self._hub
        if self._hub_starting is not None:
            await self._hub_starting.wait()
            assert self._hub is not None
            return self._hub
        self._hub_starting = trio.Event()
        hub = EventHub(self.store, self.poll)
        try:
            assert self._nursery is not None
            await self._nursery.start(hub.run)
            self._hub = hub
        finally:
            self._hub_starting.set()
            self._hub_starting = None
        return hub

    async def _listen(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take the store's wake-ups for the whole life of the client (from before the first wait): other
        processes' through a listener, this process's through the store's change observer."""
        token = trio.lowlevel.current_trio_token()

        def changed(kind: str, detail: str) -> None:  # (any thread: the LMDB store's writer)
            try:
                token.run_sync_soon(self._changed, detail)
            except trio.RunFinishedError:
                pass

        self._stop_observing = self.store.on_change(changed)
        listener = store_listener(self.store, ["end", "events"])
        if listener is None:
            task_status.started()
            return
        self._listener = listener
        try:
            await listener.open()
        except OSError:
            log.info("no wake-ups for store %r: waits poll", self.store)
            task_status.started()
            return
        task_status.started()
        await self._dispatch(listener)

    def _changed(self, instance_id: str) -> None:
        """The instance may have changed (``""``: any instance, from a bare wake-up or a reconnected listener)."""
        if instance_id:
            for event in self._waiters.get(instance_id, ()):
                event.set()
        else:
            for waiters in self._waiters.values():
                for event in waiters:
                    event.set()
        if self._hub is not None:
            self._hub.nudge()

    async def _dispatch(self, listener: WakeListener) -> None:
        while True:
            for datagram in await listener.wait():
                _, detail = split_wakeup(datagram)
                self._changed(detail.decode(errors="replace"))

    def _stop_listening(self) -> None:
        if self._stop_observing is not None:
            self._stop_observing()
            self._stop_observing = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None


class Portal(_Loop):
    """A trio run on a daemon thread, holding ``store`` (and its writer) until :meth:`close`."""

    def __init__(self, store: Store, *, close_store: bool, poll: float = 1.0) -> None:
        self._init_loop(store, poll)
        self._close_store = close_store
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="durable-client", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported by __init__ if it happens before the loop is ready
            if not self._ready.is_set():
                self._error = exc
                self._ready.set()
            else:
                log.exception("the client's loop ended with an error")

    async def _serve(self) -> None:
        self._stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.store.run)
                self._nursery = nursery
                await nursery.start(self._listen)
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._stop_listening()
            if self._close_store:
                self.store.close()

    def call(self, fn: Callable[..., Awaitable[_T]], *args: Any) -> _T:
        """Run ``await fn(*args)`` on the client's loop, from any other thread; its result (or error)."""
        if self._token is None or not self._thread.is_alive():
            raise RuntimeError("the client is closed")
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except (trio.RunFinishedError, trio.Cancelled):
            raise _closed() from None  # the client closed while the call waited

    def close(self) -> None:
        """Stop the loop (flushing the store's writes) and wait for its thread."""
        token, self._token = self._token, None
        if token is None:
            return
        try:
            trio.from_thread.run_sync(self._stop_loop, trio_token=token)
        except trio.RunFinishedError:
            pass
        self._thread.join()

    def _stop_loop(self) -> None:
        assert self._stop is not None
        self._stop.set()


class LocalPortal(_Loop):
    """The portal of a client sharing a store that already runs in the caller's trio run (see :func:`open_local`)."""

    def __init__(self, store: Store, poll: float, notify: Callable[[str, str], None] | None) -> None:
        self._init_loop(store, poll)
        self._notify = notify

    def wrote(self, kind: str, instance_id: str) -> None:
        """Tell the engine sharing the store (no wake-up reaches its own process)."""
        if self._notify is not None:
            self._notify(kind, instance_id)

    def close(self) -> None:
        """Refuse further calls (the store stays open: it is its owner's)."""
        self._token = None


@contextlib.asynccontextmanager
async def open_local(store: Store, poll: float,
                     notify: Callable[[str, str], None] | None = None) -> AsyncIterator[LocalPortal]:
    """A :class:`LocalPortal` on the current trio run, whose tasks (the hub, the listener) end with the block;
    ``notify(kind, instance_id)`` is called after each of its writes (an engine's :meth:`~durable.Engine.wake`)."""
    portal = LocalPortal(store, poll, notify)
    try:
        async with trio.open_nursery() as nursery:
            portal._nursery = nursery
            await nursery.start(portal._listen)
            portal._token = trio.lowlevel.current_trio_token()
            try:
                yield portal
            finally:
                portal.close()
                nursery.cancel_scope.cancel()
    finally:
        portal._stop_listening()
