"""One reader of the store's event log per client, fanning events out to every open feed.

A client with a thousand open event streams reads each new event from the
store once: the :class:`EventHub` (a task on the client's loop) reads the log
of all instances after its cursor whenever a change is signalled (another
process's wake-up, or this process's own commit through
:meth:`~durable.stores.Store.on_change`), or every ``poll`` seconds, and
offers each event to the feeds of its instance and to the feeds of all
instances only: an event costs nothing for the feeds of other instances.

A :class:`Feed` first replays the log from the store after its reader's
position, then takes the hub's events from a bounded buffer, skipping what it
already delivered (events are ordered by id). A reader that falls behind by
more than the buffer is not buffered without bound: its buffer is dropped and
it replays from the store again, from where it was, so nothing is lost or
repeated and its memory stays bounded however slow it is.
"""

from __future__ import annotations

import logging
import trio

from .._engine.events import Event
from .._model.eventlog import TERMINAL_NAMES
from ..stores import Store
from ._ops import next_events, to_event

__all__ = ["EventHub", "Feed"]

log = logging.getLogger("durable.client")

#: events read from the store per look (the hub's, and a replaying feed's)
READ_BATCH = 500
#: events a feed holds for its reader before it drops them and replays from the store
FEED_BUFFER = 1_000


class Feed:
    """One reader's place in the event log: of one instance (ending after its last event), or of all.

    Owned by the loop of its :class:`EventHub`; read it with :meth:`next`.
    """

    def __init__(self, hub: EventHub, instance_id: str | None, workflow: str | None, after: int,
                 max_buffer: int = FEED_BUFFER) -> None:
        self.hub = hub
        self.instance_id = instance_id
        self.workflow = workflow
        self.position = after  #: the id of the last event delivered (or skipped as not wanted)
        self.ended = False  #: the instance's log ended, and every event of it was delivered
        self.closed = False  #: closed by its reader (or its client): :meth:`next` returns ``[]``
        self._buffer: list[Event] = []  # (a list: a deque's first block alone is over half a KB per idle feed)
        self._max_buffer = max_buffer
        self._replaying = True
        self._lost = False  # the buffer overflowed: replay from the store before taking it again
        self._changed = trio.Event()
        self.resyncs = 0  #: times the buffer overflowed and the feed read on from the store

    def offer(self, event: Event) -> None:
        """(The hub) one new event of this feed's instance, or of any instance for a feed of all."""
        if self._lost:
            return
        if len(self._buffer) >= self._max_buffer:
            self._buffer.clear()  # the reader is too slow: it reads on from the store instead
            self._lost = True
            self._replaying = True  # read on from the store until caught up (not one batch only)
            self.resyncs += 1
        else:
            self._buffer.append(event)
        self._changed.set()

    def _wanted(self, event: Event) -> bool:
        return self.workflow is None or event.workflow_name == self.workflow

    async def _replay(self) -> tuple[list[Event], bool]:
        """The next events stored after the position, and whether the instance's log ended."""
        store = self.hub.store
        if self.instance_id is not None:
            return await next_events(store, self.instance_id, self.position, READ_BATCH)
        while True:
            found = await store.read_all_events(self.position, READ_BATCH)
            events = [to_event(n, data, store.path) for n, _, data in found]
            wanted = [e for e in events if self._wanted(e)]
            if wanted or not events:
                return wanted, False
            self.position = events[-1].id or self.position  # none wanted: move past them, read on

    async def next(self, timeout: float | None = None) -> list[Event]:
        """The next events (at least one), or ``[]`` after ``timeout`` seconds or once the log has ended."""
        if self.ended or self.closed:
            return []
        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            while True:
                if self._replaying or self._lost:
                    self._lost = False
                    events, ended = await self._replay()
                    if events or ended:
                        return self._deliver(events, ended)
                    self._replaying = False  # caught up with the store: the buffer holds what came since
                taken = [e for e in self._drain() if (e.id or 0) > self.position and self._wanted(e)]
                if taken:
                    return self._deliver(taken, False)
                if self._lost:
                    continue
                if self.closed:
                    return []
                self._changed = trio.Event()
                await self._changed.wait()
        return []

    def _drain(self) -> list[Event]:
        out, self._buffer = self._buffer, []
        return out

    def _deliver(self, events: list[Event], ended: bool) -> list[Event]:
        if self.instance_id is not None:
            for i, e in enumerate(events):
                if e.name in TERMINAL_NAMES:
                    events, ended = events[:i + 1], True
                    break
        if events:
            self.position = max(self.position, events[-1].id or 0)
        if ended:
            self.ended = True
            self.close()
        return events

    def close(self) -> None:
        """Stop taking events from the hub."""
        self.closed = True
        self.hub.forget(self)
        self._changed.set()


class EventHub:
    """Reads the event log of all instances once for every feed of a client (see the module's doc)."""

    def __init__(self, store: Store, poll: float) -> None:
        self.store = store
        self.poll = poll
        self.cursor = 0  #: the id of the last event read and offered
        self._by_instance: dict[str, set[Feed]] = {}
        self._all: set[Feed] = set()
        self._nudged = trio.Event()

    def open(self, instance_id: str | None, workflow: str | None, after: int) -> Feed:
        """A feed registered at once: no event read after this call is missed."""
        feed = Feed(self, instance_id, workflow, after)
        if instance_id is None:
            self._all.add(feed)
        else:
            self._by_instance.setdefault(instance_id, set()).add(feed)
        return feed

    def forget(self, feed: Feed) -> None:
        """Stop offering events to ``feed``."""
        if feed.instance_id is None:
            self._all.discard(feed)
            return
        feeds = self._by_instance.get(feed.instance_id)
        if feeds is not None:
            feeds.discard(feed)
            if not feeds:
                del self._by_instance[feed.instance_id]

    @property
    def feeds(self) -> int:
        """How many feeds are open."""
        return len(self._all) + sum(len(f) for f in self._by_instance.values())

    def nudge(self) -> None:
        """(On the hub's loop) events may have been appended: read the log now."""
        self._nudged.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read and offer new events until cancelled."""
        self.cursor = await self.store.last_event_id()
        task_status.started()
        while True:
            with trio.move_on_after(self.poll):
                await self._nudged.wait()
            self._nudged = trio.Event()
            if not (self._all or self._by_instance):
                self.cursor = await self.store.last_event_id()  # nobody reads: skip what nobody waits for
                continue
            try:
                await self._read_on()
            except Exception:  # a store error: the feeds replay from the store on their own; look again
                log.exception("reading the event log failed; looking again in %g s", self.poll)

    async def _read_on(self) -> None:
        path = self.store.path
        while True:
            found = await self.store.read_all_events(self.cursor, READ_BATCH)
            for number, instance_id, data in found:  # (no checkpoint in between: offered as read)
                self.cursor = number
                feeds = self._by_instance.get(instance_id)
                if not feeds and not self._all:
                    continue
                try:
                    event = to_event(number, data, path)
                except Exception:
                    log.exception("event %d of instance %s cannot be read; it is skipped", number, instance_id)
                    continue
                for feed in list(feeds or ()):
                    feed.offer(event)
                for feed in list(self._all):
                    feed.offer(event)
            if len(found) < READ_BATCH:
                return
            await trio.sleep(0)  # a long backlog: let the readers run between batches


