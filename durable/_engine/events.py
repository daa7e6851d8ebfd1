"""Workflow events: the nine events of the TypeScript original, listeners and subscriptions.

Listeners registered with :meth:`EventBus.on` are called in the order they
were added; a sync listener runs inline, an async one in the engine's
nursery. A listener that raises is logged and never breaks a workflow.
:meth:`EventBus.subscribe` gives an async iterator (for an SSE stream, say).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from collections.abc import Set as AbstractSet
from typing import Any, Literal, final, get_args

import attrs
import trio

from ..errors import EventsDropped

__all__ = ["EVENT_NAMES", "TERMINAL_EVENTS", "Event", "EventBus", "EventName", "Subscription"]

log = logging.getLogger("durable.events")

EventName = Literal[
    "workflow.started",
    "workflow.progress",
    "workflow.completed",
    "workflow.failed",
    "workflow.cancelled",
    "workflow.step.started",
    "workflow.step.completed",
    "workflow.step.failed",
    "workflow.step.retry",
]
"""The name of an event: one of the nine (:data:`EVENT_NAMES`, in this order)."""

EVENT_NAMES: tuple[EventName, ...] = get_args(EventName)
"""The nine event names, in the order of :data:`EventName`."""

TERMINAL_EVENTS: frozenset[EventName] = frozenset({"workflow.completed", "workflow.failed", "workflow.cancelled"})

Listener = Callable[["Event"], None | Awaitable[None]]


@final
@attrs.frozen(kw_only=True)
class Event:
    """One event, with the original's fields in snake_case; unused fields are ``None``.

    .. versionadded:: 0.1.0
    """

    name: EventName
    instance_id: str
    workflow_name: str
    input: Any = None
    output: Any = None
    error: str | None = None
    progress: int | None = None
    current_step: str | None = None
    completed_steps: int | None = None
    total_steps: int | None = None
    step_name: str | None = None
    step_type: str | None = None
    attempt: int | None = None
    attempts: int | None = None
    max_attempts: int | None = None
    delay: float | None = None
    step_key: str | None = None  #: a step event's checkpoint key (``map#0/3/process#0``: item 3 of a map)
    status: str | None = None  #: a ``workflow.failed`` event's instance status (``failed`` or ``timed_out``), as stored
    #: its number in the store's event log (events read through a client; ``None`` for events delivered in
    #: the engine): store-wide, increasing, so a reader can go on after it (an SSE ``Last-Event-ID``)
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as a dict (for JSON or SSE)."""
        return {k: v for k in _EVENT_FIELDS if (v := getattr(self, k)) is not None}

    def detail(self) -> dict[str, Any]:
        """The fields that are set besides name, instance and workflow (what the store's event log keeps)."""
        return {k: v for k in _DETAIL_FIELDS if (v := getattr(self, k)) is not None}


_EVENT_FIELDS = tuple(a.name for a in attrs.fields(Event))
_DETAIL_FIELDS = tuple(n for n in _EVENT_FIELDS if n not in ("name", "instance_id", "workflow_name", "id"))


@final
class Subscription:
    """An async iterator of events; ends after its instance's last event, or on :meth:`aclose`.

    It holds at most ``max_buffer`` events its reader has not taken yet. A
    reader that falls further behind is dropped: the events it already holds
    are still delivered, then iterating raises :class:`EventsDropped`, and it
    should read on from the store's event log (``Client.events(id,
    after=...)``), which keeps every event.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 bounded by ``max_buffer``.
    """

    def __init__(self, bus: EventBus, instance_id: str | None, names: frozenset[EventName] | None,
                 max_buffer: int = 10_000) -> None:
        self._bus = bus
        self.instance_id = instance_id
        self.names = names
        self.dropped = False  #: it fell more than ``max_buffer`` events behind and was dropped
        self._send, self._receive = trio.open_memory_channel[Event](max_buffer)

    def _offer(self, event: Event) -> None:
        if self.names is None or event.name in self.names:
            try:
                self._send.send_nowait(event)
            except trio.WouldBlock:
                self.dropped = True
                self._close()
                return
            except trio.ClosedResourceError:
                return
        if self.instance_id is not None and event.name in TERMINAL_EVENTS:
            self._close()

    def _close(self) -> None:
        self._bus._forget(self)
        self._send.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.dropped:
                raise EventsDropped(
                    "this subscription fell behind by more than its buffer and was dropped: read on from the "
                    "store's event log (Client.events(instance_id, after=the last event's id))",
                    instance_id=self.instance_id) from None
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving events."""
        self._close()
        await self._receive.aclose()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@final
class EventBus:
    """Delivers events to listeners and subscriptions.

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}
        self._subscriptions: set[Subscription] = set()  # of every instance
        self._by_instance: dict[str, set[Subscription]] = {}  # of one instance: offered only its events
        self._nursery: trio.Nursery | None = None
        #: the engine's event log writer, while it runs: ``(name, instance_id, workflow_name, fields)``
        self._recorder: Callable[[str, str, str, dict[str, Any]], None] | None = None

    def on(self, name: EventName | Literal["*"], fn: Listener) -> Callable[[], None]:
        """Call ``fn(event)`` for every event called ``name`` (``"*"``: every event).

        ``name`` is an :data:`EventName` or ``"*"``; any other name raises ``ValueError``.
        Returns a function that removes the listener.
        """
        if name != "*" and name not in EVENT_NAMES:
            raise ValueError(f"unknown event {name!r}; events are {', '.join(EVENT_NAMES)} or '*'")
        self._listeners.setdefault(name, []).append(fn)

        def off() -> None:
            listeners = self._listeners.get(name, [])
            if fn in listeners:
                listeners.remove(fn)

        return off

    def subscribe(self, instance_id: str | None = None, *, names: AbstractSet[EventName] | None = None,
                  max_buffer: int = 10_000) -> Subscription:
        """An async iterator of the events of one instance (or of all, with ``None``).

        It is registered at once, so no event emitted after this call is missed.
        For one instance it ends after ``workflow.completed`` / ``failed`` / ``cancelled``.
        A reader more than ``max_buffer`` events behind is dropped
        (:class:`~durable.EventsDropped`, see :class:`Subscription`).
        An event costs nothing for the subscriptions of other instances.
        """
        if type(max_buffer) is not int or max_buffer < 1:
            raise ValueError(f"max_buffer must be a positive int, got {max_buffer!r}")
        sub = Subscription(self, instance_id, frozenset(names) if names is not None else None, max_buffer)
        if instance_id is None:
            self._subscriptions.add(sub)
        else:
            self._by_instance.setdefault(instance_id, set()).add(sub)
        return sub

    def _forget(self, sub: Subscription) -> None:
        if sub.instance_id is None:
            self._subscriptions.discard(sub)
            return
        subs = self._by_instance.get(sub.instance_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_instance[sub.instance_id]

    @property
    def active(self) -> bool:
        """Whether anyone listens: the engine skips building events nobody receives."""
        return (self._recorder is not None or bool(self._subscriptions) or bool(self._by_instance)
                or any(self._listeners.values()))

    def emit(self, event: Event) -> None:
        """Deliver ``event`` (called by the engine)."""
        if self._recorder is not None:
            self._recorder(event.name, event.instance_id, event.workflow_name, event.detail())
        if self._subscriptions:
            for sub in list(self._subscriptions):
                sub._offer(event)
        mine = self._by_instance.get(event.instance_id)
        if mine:
            for sub in list(mine):
                sub._offer(event)
        for key in (event.name, "*"):
            for fn in list(self._listeners.get(key, ())):
                self._call(fn, event)

    def _call(self, fn: Listener, event: Event) -> None:
        try:
            if inspect.iscoroutinefunction(fn):
                if self._nursery is None:
                    log.warning("async listener %r dropped: no engine is running", fn)
                    return
                self._nursery.start_soon(self._call_async, fn, event)
                return
            result = fn(event)
            if inspect.isawaitable(result):
                if self._nursery is not None:
                    self._nursery.start_soon(self._await, result, fn, event)
        except Exception:
            log.exception("event listener %r raised on %s for instance %s", fn, event.name, event.instance_id)

    async def _call_async(self, fn: Listener, event: Event) -> None:
        try:
            result = fn(event)
            assert result is not None
            await result
        except Exception:
            log.exception("event listener %r raised on %s for instance %s", fn, event.name, event.instance_id)

    async def _await(self, awaitable: Awaitable[None], fn: Listener, event: Event) -> None:
        try:
            await awaitable
        except Exception:
            log.exception("event listener %r raised on %s for instance %s", fn, event.name, event.instance_id)

    @property
    def recording_only(self) -> bool:
        """Whether the store's event log is all that receives events (no listener, no subscription)."""
        return not self._subscriptions and not self._by_instance and not any(self._listeners.values())

    def _close_all(self) -> None:
        for sub in [*self._subscriptions, *(s for subs in self._by_instance.values() for s in subs)]:
            sub._close()
