"""The API's gate, as plain ASGI middleware in front of every route: token, host, CSRF and body size.

- **Token**: with a token set, every request (API, streams, dashboard) must
  carry it, as ``Authorization: Bearer <token>`` or in the ``durable_token``
  cookie that opening the dashboard once as ``/?token=<token>`` sets
  (``HttpOnly``, ``SameSite=Strict``); compared in constant time.
- **Host**: ``trusted_hosts`` (``durable serve`` on loopback without a token:
  ``localhost``, ``127.0.0.1``, ``[::1]``) refuses requests naming another
  host, so a web page cannot reach the API through DNS rebinding.
- **CSRF**: a request that changes something (not GET, HEAD or OPTIONS) must
  be ``Content-Type: application/json``, or carry the bearer header: a form or
  an ``<img>`` on another site can send neither without a CORS preflight, which
  no route answers (CORS is off unless configured).
- **Body size**: a body over ``max_body`` bytes is refused with ``413``, by its
  ``Content-Length`` or as it streams in.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import anyio

__all__ = ["COOKIE", "Gate"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "durable_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def _reply(send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers", [])}


def _last_shielded(send: Send) -> Send:
    """``send``, with a response's last message shielded from cancellation.

    Starlette sends a streamed or file response's last message from a task
    group that cancels itself when the server reports the client gone, which
    Hypercorn does while that very message is being sent: the rest of the
    server's work in that call (closing the socket at shutdown, starting the
    keep-alive timer) would be cancelled, and the connection left open until
    the graceful timeout.
    """
    async def shielded(message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            with anyio.CancelScope(shield=True):
                await send(message)
        else:
            await send(message)

    return shielded


class Gate:
    """ASGI middleware enforcing the module's rules in front of ``app``."""

    def __init__(self, app: ASGIApp, *, token: str | None, trusted_hosts: Sequence[str] | None,
                 max_body: int) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._hosts = frozenset(h.lower() for h in trusted_hosts) if trusted_hosts is not None else None
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self._hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1").lower()
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self._hosts:
                await _reply(send, 421, f"this server answers for {', '.join(sorted(self._hosts))} only, "
                                        f"not host {host!r}")
                return
        bearer = headers.get(b"authorization", b"")
        has_bearer = bearer[:7].lower() == b"bearer "
        if self._token is not None and not await self._authorised(scope, headers, bearer, has_bearer, send):
            return
        method = scope.get("method", "GET")
        if method not in _SAFE_METHODS:
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json" and not has_bearer:
                await _reply(send, 415, "a request that changes something must be sent with "
                                        "'Content-Type: application/json' (its body may be empty)")
                return
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                await _reply(send, 400, "the Content-Length header is not a number")
                return
            if size > self._max_body:
                await _reply(send, 413, f"the request body is {size:,} bytes; this server takes at most "
                                        f"{self._max_body:,}")
                return
        send = _last_shielded(send)
        if method in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        # Read the whole body first (at most max_body bytes), then hand it to the app in one message.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self._max_body:
                await _reply(send, 413, f"the request body is over {self._max_body:,} bytes, the most this server "
                                        "takes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        given = False

        async def replay() -> Message:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _authorised(self, scope: Scope, headers: dict[bytes, bytes], bearer: bytes, has_bearer: bool,
                          send: Send) -> bool:
        assert self._token is not None
        if has_bearer:
            if hmac.compare_digest(bearer[7:].strip(), self._token):
                return True
            await _reply(send, 401, "wrong bearer token", [(b"www-authenticate", b'Bearer error="invalid_token"')])
            return False
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
        except Exception:
            pass
        morsel = cookie.get(COOKIE)
        if morsel is not None and hmac.compare_digest(morsel.value.encode(), self._token):
            return True
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if given and scope.get("method") == "GET" and hmac.compare_digest(given[0].encode(), self._token):
            # The dashboard opened with ?token=...: keep it in a cookie, and take it out of the address bar. The
            # address is the request's own path as it came (percent-encoded: no CR/LF, no '?' made from %3F),
            # with one leading slash (never '//host': another site).
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            raw = scope.get("raw_path") or quote(scope.get("path", "/")).encode()
            path = "/" + bytes(raw).decode("latin-1").lstrip("/")
            location = path + ("?" + rest if rest else "")
            cookie_path = scope.get("root_path", "") or "/"
            await send({"type": "http.response.start", "status": 303, "headers": [
                (b"location", location.encode("latin-1")),
                (b"set-cookie", f"{COOKIE}={given[0]}; HttpOnly; SameSite=Strict; Path={cookie_path}".encode()),
                (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return False
        await _reply(send, 401, "this server needs a token: send 'Authorization: Bearer <token>', or open the "
                                "dashboard once as /?token=<token>", [(b"www-authenticate", b"Bearer")])
        return False
