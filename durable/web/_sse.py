"""Server-Sent Events: an instance's events (``/api/instances/{id}/events``) and all instances'
(``/api/events``), from the store's event log, for browsers' ``EventSource``.

Each message carries the event's store-wide ``id:``, so a reconnecting
``EventSource`` sends ``Last-Event-ID`` and goes on after it, nothing lost or
repeated. An instance's stream replays its log from the start (or after
``Last-Event-ID``), then follows it live, and ends after its last event with
an ``end`` message; reconnecting to an ended log gets ``204``, which tells
``EventSource`` to stop. A comment every ``keepalive`` seconds keeps proxies
from closing an idle stream. Events come from the client's one reader of the
log (:class:`~durable.client._hub.EventHub`), each stream holding a bounded
buffer: a stream whose browser reads too slowly reads on from the store. On
shutdown, :meth:`Streams.close` ends every stream first, so the server stops
at once instead of waiting out its graceful timeout.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .._engine.events import Event
from .._model.eventlog import MAX_EVENT_ID
from .._model.ids import check_instance_id
from ..client import AsyncClient, EventFeed
from ._json import event_json
from ._routes import error

__all__ = ["Streams", "frame"]

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def frame(event: Event) -> str:
    """One SSE message."""
    data = json.dumps(event_json(event), separators=(",", ":"))  # (ASCII: a lone surrogate goes out escaped)
    return f"id: {event.id}\nevent: {event.name}\ndata: {data}\n\n"


def _last_event_id(request: Request) -> int | None | Response:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) > MAX_EVENT_ID:
        return error(422, [{"loc": ["header", "last-event-id"], "type": "int_parsing",
                            "msg": f"Last-Event-ID (or ?after=) must be an event id, got {raw[:40]!r}"}])
    return int(raw)


class Streams:
    """The open streams of an app: opened, and ended all at once on shutdown."""

    def __init__(self, client: AsyncClient, keepalive: float) -> None:
        self.client = client
        self.keepalive = keepalive
        self._open: set[EventFeed] = set()
        self.closing = False

    @property
    def count(self) -> int:
        """How many streams are open."""
        return len(self._open)

    async def close(self) -> None:
        """End every open stream (each sends nothing more and finishes its response)."""
        self.closing = True
        feeds, self._open = list(self._open), set()
        for feed in feeds:
            await feed.aclose()

    async def instance(self, request: Request) -> Response:
        """``GET /api/instances/{id}/events``."""
        raw_id = request.path_params["instance_id"]
        try:
            instance_id = check_instance_id(raw_id)
        except (TypeError, ValueError) as exc:
            return error(404, f"no instance {raw_id!r}: {exc}")
        after = _last_event_id(request)
        if isinstance(after, Response):
            return after
        inst = await self.client.get(instance_id)
        if inst is None:
            return error(404, f"no instance {instance_id!r}")
        feed = await self.client.subscribe(instance_id, after=after)
        first: list[Event] = []
        if inst.finished:
            first = await feed.receive()  # its log has ended: what is left of it, at once
            if not first:
                await feed.aclose()
                return Response(status_code=204)  # EventSource stops reconnecting
        return self._respond(feed, first)

    async def all(self, request: Request) -> Response:
        """``GET /api/events?workflow=``: every instance's events from now on (or after ``Last-Event-ID``)."""
        after = _last_event_id(request)
        if isinstance(after, Response):
            return after
        unknown = sorted(set(request.query_params) - {"workflow", "after"})
        if unknown:
            return error(422, [{"loc": ["query", k], "msg": "unknown parameter", "type": "extra_forbidden"}
                               for k in unknown])
        feed = await self.client.subscribe(None, after=after, workflow=request.query_params.get("workflow"))
        return self._respond(feed, [])

    def _respond(self, feed: EventFeed, first: list[Event]) -> Response:
        if self.closing:
            return error(503, "the server is shutting down")
        self._open.add(feed)
        return StreamingResponse(self._messages(feed, first), media_type="text/event-stream", headers=_HEADERS)

    async def _messages(self, feed: EventFeed, first: list[Event]) -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            events = first
            while True:
                if events:
                    yield "".join(frame(e) for e in events)
                if feed.ended:
                    yield "event: end\ndata: {}\n\n"
                    return
                if self.closing or feed not in self._open:
                    return
                events = await feed.receive(timeout=self.keepalive)
                if not events and not feed.ended and not self.closing:
                    yield ": keep-alive\n\n"
        finally:
            self._open.discard(feed)
            with anyio.CancelScope(shield=True):
                await feed.aclose()
