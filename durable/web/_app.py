"""``create_app``: the HTTP API, the event streams and the dashboard, as one Starlette (ASGI) app."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..client import AsyncClient
from ._catalog import Catalog, Workflow
from ._openapi import openapi
from ._routes import JSONResponse, Routes, error
from ._security import ASGIApp, Gate, Receive, Scope, Send
from ._sse import Streams

__all__ = ["DurableApp", "create_app"]

STATIC = Path(__file__).parent / "static"
#: the largest request body taken, by default (bytes)
MAX_BODY = 1 << 20

_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


_INSTANCE_EVENTS = re.compile(r"/api/instances/([^/]+)/events")


def _streams_first(app: ASGIApp, streams: Streams) -> ASGIApp:
    """``app``, with the event streams' ``GET`` routes answered directly: an open stream is one task with a short
    stack (no router, middleware or exception wrappers kept alive under it for as long as it stays open)."""
    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET":
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root + "/"):
                path = path[len(root):]
            if path.endswith("/events") and path.startswith("/api/"):
                handler = None
                if path == "/api/events":
                    handler = streams.all
                else:
                    match = _INSTANCE_EVENTS.fullmatch(path)
                    if match is not None:
                        scope["path_params"] = {"instance_id": match[1]}
                        handler = streams.instance
                if handler is not None:
                    response = await handler(Request(scope, receive))
                    await response(scope, receive, send)
                    return
        await app(scope, receive, send)

    return dispatch


class DurableApp:
    """The ASGI app :func:`create_app` returns: call it as any ASGI app, or mount it.

    Attributes:
        streams: the open event streams; ``await app.streams.close()`` ends them
            (``durable serve`` does, first thing on shutdown).
        starlette: the Starlette app behind the gate.
    """

    def __init__(self, starlette: Starlette, gate: Gate, streams: Streams) -> None:
        self.starlette = starlette
        self._gate = gate
        self.streams = streams

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._gate(scope, receive, send)


def create_app(client: AsyncClient, *, workflows: Iterable[Workflow] = (), token: str | None = None,
               trusted_hosts: Sequence[str] | None = None, max_body: int = MAX_BODY,
               cors_origins: Sequence[str] = (), keepalive: float = 15.0, dashboard: bool = True) -> DurableApp:
    """The HTTP API over ``client``'s store, with its event streams and (unless ``dashboard=False``) the
    dashboard at ``/``: an ASGI app to serve (``durable serve`` does, with Hypercorn) or to mount in a
    Starlette or FastAPI application (``app.mount("/durable", create_app(client))``).

    Args:
        client: an :class:`~durable.AsyncClient` (of the store's path, or
            ``AsyncClient.sharing(engine.store)`` in an engine's trio run).
        workflows: the ``@workflow`` functions and built graphs whose code
            this app has: their starts are validated against their signatures
            (``422`` before anything is written) and the dashboard draws
            their graphs. Workflows that workers registered in the store are
            listed too, and started by name.
        token: a bearer token every request must carry (``Authorization:
            Bearer``, or the cookie the dashboard sets from ``/?token=``).
        trusted_hosts: the host names requests may address (``None``: any);
            ``durable serve`` on loopback without a token allows
            ``localhost``, ``127.0.0.1`` and ``[::1]`` only.
        max_body: the largest request body taken, in bytes (``413`` over it).
        cors_origins: origins allowed to call the API from other sites' pages
            (none by default: no CORS headers are sent).
        keepalive: seconds between keep-alive comments on an idle stream.
        dashboard: serve the dashboard at ``/`` (and its files at ``/static/``).

    Needs the ``web`` extra: ``pip install 'durable[web]'``.

    .. versionadded:: 0.2.0
    """
    if not isinstance(client, AsyncClient):
        raise TypeError(f"create_app() takes a durable.AsyncClient, got {client!r}")
    if type(max_body) is not int or max_body < 1:
        raise ValueError(f"max_body must be a positive int of bytes, got {max_body!r}")
    if not isinstance(keepalive, (int, float)) or not 0 < keepalive < 3600:
        raise ValueError(f"keepalive must be a number of seconds in (0, 3600), got {keepalive!r}")
    catalog = Catalog(workflows)
    api = Routes(client, catalog)
    streams = Streams(client, float(keepalive))

    def endpoint(name: str) -> Any:
        async def call(request: Request) -> Response:
            request.scope["endpoint_name"] = name
            return await api.handle(request)

        call.__name__ = name
        return call

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(openapi(await api._entries()))

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, f"no route {request.method} {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, f"{request.method} is not allowed on {request.url.path}")

    routes: list[Route | Mount] = [
        Route("/api/openapi.json", openapi_json, methods=["GET"]),
        Route("/api/workflows", endpoint("list_workflows"), methods=["GET"]),
        Route("/api/workflows/{name}", endpoint("get_workflow"), methods=["GET"]),
        Route("/api/workflows/{name}/instances", endpoint("start"), methods=["POST"]),
        Route("/api/instances", endpoint("list_instances"), methods=["GET"]),
        Route("/api/instances/{instance_id}", endpoint("get_instance"), methods=["GET"]),
        Route("/api/instances/{instance_id}/steps", endpoint("steps"), methods=["GET"]),
        Route("/api/instances/{instance_id}/cancel", endpoint("cancel"), methods=["POST"]),
        Route("/api/instances/{instance_id}/resume", endpoint("resume"), methods=["POST"]),
        Route("/api/instances/{instance_id}/signal", endpoint("signal"), methods=["POST"]),
        Route("/api/instances/{instance_id}/events", streams.instance, methods=["GET"]),
        Route("/api/events", streams.all, methods=["GET"]),
    ]
    if dashboard:
        async def index(request: Request) -> Response:
            return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

        routes += [Route("/", index, methods=["GET"]), Mount("/static", StaticFiles(directory=STATIC))]
    middleware = []
    if cors_origins:
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(CORSMiddleware, allow_origins=list(cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type",
                                                                                    "Last-Event-ID"]))
    starlette = Starlette(routes=routes, middleware=middleware,
                          exception_handlers={404: not_found, 405: not_allowed})
    inner: ASGIApp = starlette if cors_origins else _streams_first(starlette, streams)  # (CORS: through its middleware)
    gate = Gate(inner, token=token, trusted_hosts=trusted_hosts, max_body=max_body)
    return DurableApp(starlette, gate, streams)
