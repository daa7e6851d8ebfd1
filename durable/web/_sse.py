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
import re
from collections.abc import Callable
from typing import Any

import anyio
import trio
from starlette.requests import Request
from starlette.responses import Response

from .._engine.events import Event
from .._model.eventlog import MAX_EVENT_ID
from .._model.ids import check_instance_id
from ..client import AsyncClient, EventFeed
from ..errors import InstanceNotFound
from ._json import event_json
from ._routes import error

__all__ = ["Streams", "frame"]

_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no")]
_RETRY = b"retry: 2000\n\n"
_KEEPALIVE = b": keep-alive\n\n"
_END = b"event: end\ndata: {}\n\n"
#: SSE messages kept encoded, by event id (a burst's events, sent to many streams)
_FRAME_CACHE = 4096


_DIGITS = re.compile(r"[0-9]{1,19}")


def frame(event: Event) -> str:
    """One SSE message."""
    data = json.dumps(event_json(event), separators=(",", ":"))  # (ASCII: a lone surrogate goes out escaped)
    return f"id: {event.id}\nevent: {event.name}\ndata: {data}\n\n"


def _last_event_id(request: Request) -> int | None | Response:
    raw = request.headers.get("last-event-id") or request.query_params.get("after")
    if raw is None or raw == "":
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_EVENT_ID:  # (ASCII digits: str.isdigit() takes '²')
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
        self._frames: dict[int, bytes] = {}

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
        if refused := self._refused(request):
            return refused
        feed = await self.client.subscribe(instance_id, after=after)
        first: list[Event] = []
        if inst.finished:
            try:
                first = await feed.receive()  # its log has ended: what is left of it, at once
            except InstanceNotFound:
                first = []  # (deleted meanwhile)
            if not first:
                await feed.aclose()
                return Response(status_code=204)  # EventSource stops reconnecting
        return self._respond(feed, first)

    def _refused(self, request: Request) -> Response | None:
        """Why no stream is opened for this request, or ``None``: the server is stopping (``503``), or it is a
        ``HEAD`` (the headers only: a stream is for ``GET``)."""
        if self.closing:
            return error(503, "the server is shutting down")
        if request.method == "HEAD":
            return Response(status_code=200, headers={k.decode(): v.decode() for k, v in _HEADERS})
        return None

    async def all(self, request: Request) -> Response:
        """``GET /api/events?workflow=``: every instance's events from now on (or after ``Last-Event-ID``)."""
        after = _last_event_id(request)
        if isinstance(after, Response):
            return after
        unknown = sorted(set(request.query_params) - {"workflow", "after"})
        if unknown:
            return error(422, [{"loc": ["query", k], "msg": "unknown parameter", "type": "extra_forbidden"}
                               for k in unknown])
        if refused := self._refused(request):
            return refused
        feed = await self.client.subscribe(None, after=after, workflow=request.query_params.get("workflow"))
        return self._respond(feed, [])

    def _respond(self, feed: EventFeed, first: list[Event]) -> Response:
        self._open.add(feed)
        return _Stream(self, feed, first)

    def frames(self, events: list[Event]) -> bytes:
        """The SSE messages of ``events``, each encoded once for every stream that sends it."""
        cache = self._frames
        out = []
        for event in events:
            key = event.id
            data = cache.get(key) if key is not None else None
            if data is None:
                data = frame(event).encode()
                if key is not None:
                    if len(cache) >= _FRAME_CACHE:
                        del cache[next(iter(cache))]  # the oldest
                    cache[key] = data
            out.append(data)
        return b"".join(out)


def _nowait(receive: Any) -> Callable[[], Any] | None:
    """``receive``'s non-blocking form where the server's ``receive`` is a trio memory channel's (Hypercorn's trio
    worker): a stream then checks for the client's disconnect at each wake-up, with no task of its own."""
    channel = getattr(receive, "__self__", None)
    if isinstance(channel, trio.MemoryReceiveChannel) and getattr(receive, "__name__", "") == "receive":
        nowait: Callable[[], Any] = channel.receive_nowait
        return nowait
    return None


class _Stream(Response):
    """An event stream as a plain ASGI loop in the request's own task (not a ``StreamingResponse``, which adds a
    task group and a disconnect-listening task to every stream).

    Under Hypercorn's trio worker the client's going away is seen without a
    second task: its ``http.disconnect`` is taken without blocking at each
    wake-up (an event, or a keep-alive, at most ``keepalive`` seconds apart);
    elsewhere (another server, asyncio) a task waits for it, as Starlette does.
    """

    def __init__(self, streams: Streams, feed: EventFeed, first: list[Event]) -> None:
        self.status_code = 200
        self.background = None
        self._streams = streams
        self._feed = feed
        self._first = first

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        streams, feed = self._streams, self._feed
        try:
            await send({"type": "http.response.start", "status": 200, "headers": list(_HEADERS)})
            nowait = _nowait(receive)
            if nowait is not None:
                await self._loop(send, lambda: _gone(nowait))
            else:
                async with anyio.create_task_group() as tg:
                    gone = False

                    async def watch() -> None:
                        nonlocal gone
                        while (await receive())["type"] != "http.disconnect":
                            pass
                        gone = True
                        tg.cancel_scope.cancel()

                    tg.start_soon(watch)
                    await self._loop(send, lambda: gone)
                    tg.cancel_scope.cancel()
        finally:
            streams._open.discard(feed)
            with anyio.CancelScope(shield=True):
                await feed.aclose()

    async def _loop(self, send: Any, gone: Callable[[], bool]) -> None:
        streams, feed = self._streams, self._feed
        chunk = _RETRY + (streams.frames(self._first) if self._first else b"")
        self._first = []
        while True:
            if feed.ended:
                chunk += _END
                break
            if streams.closing or feed not in streams._open or gone():
                break
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            events = await feed.receive(timeout=streams.keepalive)
            if events:
                chunk = streams.frames(events)
            elif not feed.ended and not streams.closing:
                chunk = _KEEPALIVE
            else:
                chunk = b""
        with anyio.CancelScope(shield=True):  # the last message: the response completes, whatever happens
            await send({"type": "http.response.body", "body": chunk, "more_body": False})


def _gone(nowait: Callable[[], Any]) -> bool:
    try:
        while True:
            if nowait()["type"] == "http.disconnect":
                return True
    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
        return False
