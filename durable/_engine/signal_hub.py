"""Who in this engine waits for which signal, and how a sent signal reaches them.

A signal sent through this engine wakes its waiters at once. One sent by
another process (another engine, the ``durable signal`` command) is noticed
by polling the store's signal clock every ``poll_interval`` real seconds, and
only while something here waits. The poll's timer is a thread's, not trio's:
a periodic trio timer would make an autojumping ``MockClock`` leap ahead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ..stores import Store

__all__ = ["SignalHub"]

log = logging.getLogger("durable.engine")


class SignalHub:
    """The signal waiters of one engine: runs waiting in memory, and suspended instances."""

    def __init__(self, poll_interval: float = 0.2) -> None:
        self.poll_interval = poll_interval
        self._events: dict[tuple[str, str], trio.Event] = {}  # (instance, name) -> set when one may be queued
        self._polling = False

    async def sent(self, instance_id: str, name: str) -> None:
        """Return once a signal ``name`` may have been queued for the instance (then peek again)."""
        key = (instance_id, name)
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = trio.Event()
        await event.wait()

    def notify(self, instance_id: str, name: str) -> None:
        """A signal ``name`` was queued for the instance: wake whoever waits for it in memory."""
        event = self._events.pop((instance_id, name), None)
        if event is not None:
            event.set()

    def notify_instance(self, instance_id: str) -> None:
        """Some signal was queued for the instance: its waiters in memory peek again."""
        for key in [k for k in self._events if k[0] == instance_id]:
            self._events.pop(key).set()

    def notify_all(self) -> None:
        """Some signal was queued somewhere: every waiter in memory peeks again."""
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    def start_polling(self, nursery: trio.Nursery, store: Store, waiting: Callable[[], bool],
                      changed: Callable[[], None]) -> None:
        """Poll the store's signal clock while ``waiting()``; call ``changed()`` when it moves."""
        if self._polling:
            return
        self._polling = True
        token = trio.lowlevel.current_trio_token()
        stop = threading.Event()
        last: list[int | None] = [None]

        async def tick() -> None:
            try:
                clock = await store.signal_clock()
            except Exception:
                log.exception("could not read the store's signal clock")
                return
            if clock != last[0]:
                # (also on the first look: a signal sent after a waiter's last peek but
                # before this baseline was read would otherwise never be noticed)
                changed()
            last[0] = clock

        def schedule() -> None:
            if not waiting():
                stop.set()
                self._polling = False
                return
            nursery.start_soon(tick)

        def loop() -> None:
            try:
                trio.from_thread.run_sync(schedule, trio_token=token)
                while not stop.wait(self.poll_interval):
                    trio.from_thread.run_sync(schedule, trio_token=token)
            except (trio.RunFinishedError, trio.Cancelled, RuntimeError):
                return  # the engine or the trio run ended

        threading.Thread(target=loop, name="durable-signal-poll", daemon=True).start()

    def has_waiters(self) -> bool:
        """Whether any run in memory waits for a signal."""
        return bool(self._events)
