"""Instances unloaded from memory until something wakes them: a long sleep's time, a signal, a deadline.

A run that suspends (``Run.suspend``) ends; the instance stays ``running`` in
the store, leased to this engine. :class:`Sleepers` keeps what wakes it: a
timer entry (its wake-up time or deadline, whichever comes first) and, for a
signal wait, the signal's name, noticed when it is sent through this engine
or, from another process, by the :class:`~durable._engine.signal_hub.SignalHub`'s
poll. Waking means calling ``continue_instance(id)``, which replays the
instance from its checkpoints.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import attrs
import trio

from .run import Run
from .signal_hub import SignalHub
from .timers import Timers
from ..stores import Store

__all__ = ["Sleepers"]


@attrs.define(eq=False)
class _Sleeper:
    """A suspended instance: what wakes it besides its timer, and an event for wait()."""

    signal: str | None = None
    event: trio.Event | None = None
    queue: str | None = None  # its instance's queue (what a worker's caps count)


class Sleepers:
    """The suspended instances of one engine, and what wakes them."""

    def __init__(self, store: Store, now: Callable[[], datetime], nursery: Callable[[], trio.Nursery],
                 continue_instance: Callable[[str], Awaitable[bool]]) -> None:
        self._store = store
        self._now = now
        self._nursery = nursery  # the engine's, while it runs
        self._continue = continue_instance
        self.closed = False  # the engine is exiting: wake nothing more
        #: a worker's caps (serve(concurrency=), worker_concurrency): whether an instance of that queue may
        #: start running here now; a wake-up it refuses waits (in order) for retry_deferred()
        self.gate: Callable[[str | None], bool] | None = None
        self._reset()

    def _reset(self) -> None:
        self._suspended: dict[str, _Sleeper] = {}
        self._waking: dict[str, _Sleeper] = {}  # being continued right now
        self._deferred: list[str] = []  # due, but refused by the gate: woken as slots free up
        self._timers = Timers(self.wake)
        old = getattr(self, "signals", None)
        self.signals = SignalHub()
        if old is not None:
            self.signals.poll_interval = old.poll_interval  # (the engine's poll_interval, set once)

    def open(self) -> None:
        """The engine (re)starts: instances suspended in an earlier session are for resume() now."""
        self.closed = False
        self._reset()

    def holds(self, instance_id: str) -> bool:
        """Whether the instance is suspended here, or being continued from a suspension."""
        return instance_id in self._suspended or instance_id in self._waking

    def ids(self) -> list[str]:
        """The suspended instances' ids."""
        return list(self._suspended)

    def suspend(self, run: Run) -> None:
        """Wake ``run``'s instance at its wake-up time or deadline, whichever comes first, or on its signal."""
        if self.closed:
            return
        times = [t for t in (run.wake_at, run.instance.deadline) if t is not None]
        self._suspended[run.id] = _Sleeper(signal=run.wake_signal, queue=run.instance.queue)
        if times:
            delay = max(0.0, (min(times) - self._now()).total_seconds())
            self._timers.add(self._nursery(), trio.current_time() + delay, run.id)
        if run.wake_signal is not None:
            self.poll_signals()
            # A signal queued between the wait's last look and now must not be missed.
            self._nursery().start_soon(self._wake_if_signalled, run.id, run.wake_signal)

    def waking_queues(self) -> list[str | None]:
        """The queues of the instances being continued from a suspension right now."""
        return [s.queue for s in self._waking.values()]

    def wake(self, instance_id: str) -> None:
        """Continue a suspended instance now (its timer fired, or its signal came), if the gate lets it start."""
        sleeper = self._suspended.get(instance_id)
        if sleeper is None or self.closed:
            return  # cancelled meanwhile, or already being continued
        if self.gate is not None and not self.gate(sleeper.queue):
            if instance_id not in self._deferred:
                self._deferred.append(instance_id)  # continued by retry_deferred() once a slot frees
            return
        del self._suspended[instance_id]
        self._waking[instance_id] = sleeper
        self._nursery().start_soon(self._wake_up, instance_id, sleeper)

    def retry_deferred(self) -> None:
        """Wake the instances the gate refused, oldest first, while it lets them start."""
        while self._deferred and not self.closed:
            instance_id = self._deferred[0]
            sleeper = self._suspended.get(instance_id)
            if sleeper is not None and self.gate is not None and not self.gate(sleeper.queue):
                return
            self._deferred.pop(0)
            if sleeper is not None:
                self.wake(instance_id)

    def wake_for(self, instance_id: str, signal: str) -> None:
        """Signal ``signal`` was sent to the instance: wake it if it waits for that one."""
        sleeper = self._suspended.get(instance_id)
        if sleeper is not None and sleeper.signal == signal:
            self.wake(instance_id)

    def event(self, instance_id: str) -> trio.Event | None:
        """Set once the suspended (or waking) instance is continued or cancelled; ``None`` if it is neither."""
        sleeper = self._suspended.get(instance_id) or self._waking.get(instance_id)
        if sleeper is None:
            return None
        if sleeper.event is None:
            sleeper.event = trio.Event()
        return sleeper.event

    def drop(self, instance_id: str) -> None:
        """Forget a suspended instance (it was cancelled): its timer will find nothing to wake."""
        sleeper = self._suspended.pop(instance_id, None)
        if sleeper is not None and sleeper.event is not None:
            sleeper.event.set()

    async def _wake_up(self, instance_id: str, sleeper: _Sleeper) -> None:
        try:
            await self._continue(instance_id)
        finally:
            if self._waking.get(instance_id) is sleeper:
                del self._waking[instance_id]
            if sleeper.event is not None:
                sleeper.event.set()

    async def _wake_if_signalled(self, instance_id: str, name: str) -> None:
        sleeper = self._suspended.get(instance_id)
        if sleeper is not None and sleeper.signal == name and await self._store.peek_signal(instance_id, name):
            self.wake(instance_id)

    def poll_signals(self) -> None:
        """Watch for signals sent by other processes while anything here waits for one."""
        self.signals.start_polling(
            self._nursery(), self._store,
            waiting=lambda: self.signals.has_waiters() or any(s.signal for s in self._suspended.values()),
            changed=self._signals_changed,
        )

    def _signals_changed(self) -> None:
        self.signals.notify_all()
        for instance_id, sleeper in list(self._suspended.items()):
            if sleeper.signal is not None:
                self._nursery().start_soon(self._wake_if_signalled, instance_id, sleeper.signal)

    def signalled(self, instance_id: str) -> None:
        """Another process queued some signal for the instance (a wake-up): its waits look again.

        ``""`` (a bare wake-up: one naming its instance was dropped on the way): every wait looks again.
        """
        if not instance_id:
            if not self.closed:
                self._signals_changed()
            return
        self.signals.notify_instance(instance_id)
        sleeper = self._suspended.get(instance_id)
        if sleeper is not None and sleeper.signal is not None and not self.closed:
            self._nursery().start_soon(self._wake_if_signalled, instance_id, sleeper.signal)

    async def signal_sent(self, instance_id: str, name: str) -> None:
        """For a run waiting in memory: return once signal ``name`` may have been queued."""
        self.poll_signals()
        await self.signals.sent(instance_id, name)
