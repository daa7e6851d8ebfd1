"""Wake-ups of suspended instances: one heap and one trio task per engine.

A workflow that sleeps for long is not kept in memory: its run ends (it stays
``running`` in the store, leased to this engine) and its wake-up time goes on
this heap. When the time comes the engine continues it by replaying its
checkpoints. One entry costs a tuple on the heap; the task exists only while
the heap is not empty.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import attrs
import trio

__all__ = ["Timers"]


@attrs.define(eq=False)
class Timers:
    """Calls ``fire(instance_id)`` at each entry's trio time, earliest first.

    Entries are never removed: ``fire`` checks whether the instance still
    wants waking (it may have been cancelled, or woken earlier by a signal).
    """

    fire: Callable[[str], None]
    _heap: list[tuple[float, int, str]] = attrs.field(factory=list)
    _seq: itertools.count[int] = attrs.field(factory=itertools.count)
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _running: bool = False

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, nursery: trio.Nursery, when: float, instance_id: str) -> None:
        """Wake ``instance_id`` at trio time ``when``."""
        heapq.heappush(self._heap, (when, next(self._seq), instance_id))
        if not self._running:
            self._running = True
            nursery.start_soon(self._loop)
        elif self._heap[0][2] == instance_id:
            self._changed.set()  # a new earliest entry: the loop sleeps until it instead

    async def _loop(self) -> None:
        try:
            while self._heap:
                when = self._heap[0][0]
                if when > trio.current_time():
                    self._changed = trio.Event()
                    with trio.move_on_at(when):
                        await self._changed.wait()
                    continue
                _, _, instance_id = heapq.heappop(self._heap)
                self.fire(instance_id)
        finally:
            self._running = False
