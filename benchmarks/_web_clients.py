"""The HTTP clients of ``web.py``, each in a process of its own, apart from the server they measure.

    python benchmarks/_web_clients.py sse URL             # event streams, driven by JSON lines on stdin
    python benchmarks/_web_clients.py load URL PATH BODY CONNECTIONS SECONDS

Neither imports durable: plain sockets and ``selectors`` (epoll) on one
thread, so the client's own cost is small and shows in its CPU (which
``web.py`` reads from /proc).

**sse**: holds any number of ``GET /api/instances/{id}/events`` streams, each
on its own connection (HTTP/1.1; the chunked body decoded; SSE messages split
on blank lines). Every ``recv`` is stamped with ``time.time()`` as it
returns, before anything is parsed: a message's arrival time is that of the
``recv`` that completed it. Commands, one JSON object a line on stdin; one
JSON line answers each on stdout, once it is done:

- ``{"op": "open", "ids": [...], "events": K}``: open a stream to each
  instance; answered once each has received K messages (``event:`` lines),
  with the seconds that took;
- ``{"op": "ended", "timeout": S}``: answered once every open stream has
  received its ``event: end`` (or after S seconds), with, per message whose
  ``data`` has a numeric ``output``, ``[arrival, name, output]``, and the
  count of messages;
- ``{"op": "close"}``: close every stream.

**load**: ``CONNECTIONS`` keep-alive connections, each sending ``POST PATH``
with the JSON ``BODY`` as soon as its previous response has been read in
full, for ``SECONDS``; prints one JSON line: responses completed in the
window, how many were not 2xx, and the seconds. The fallback when ``wrk`` is
not installed.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class Stream:
    """One SSE response on one connection: the HTTP head, the chunked body, the SSE messages."""

    __slots__ = ("sock", "head", "buf", "text", "chunk_left", "messages", "stamped", "ended", "status")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.head = True  # still reading the response's head
        self.buf = b""  # undecoded bytes
        self.text = b""  # body (chunks decoded) not yet split into messages
        self.chunk_left = 0  # > 0: bytes of the current chunk still to come; -1: its CRLF; 0: a size line
        self.messages = 0  # messages with an event: line
        self.stamped: list[tuple[float, str, str]] = []  # (arrival, event name, data) of messages with an output
        self.ended = False
        self.status = 0

    def feed(self, data: bytes, now: float) -> None:
        self.buf += data
        if self.head:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4:]
            self.status = int(head.split(" ", 2)[1])
            if self.status != 200 or "transfer-encoding: chunked" not in head.lower():
                raise RuntimeError(f"unexpected response head: {head!r}")
            self.head = False
        body = []
        while self.buf:
            if self.chunk_left > 0:  # inside a chunk's data
                take = self.buf[:self.chunk_left]
                body.append(take)
                self.chunk_left -= len(take)
                self.buf = self.buf[len(take):]
                if self.chunk_left == 0:
                    self.chunk_left = -1  # its CRLF next
            elif self.chunk_left < 0:  # the CRLF after a chunk's data
                if len(self.buf) < 2:
                    break
                self.buf = self.buf[2:]
                self.chunk_left = 0
            else:  # a chunk's size line
                line_end = self.buf.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(self.buf[:line_end].split(b";")[0], 16)
                self.buf = self.buf[line_end + 2:]
                if size == 0:
                    self.ended = True  # the response's last chunk
                    self.buf = b""
                    break
                self.chunk_left = size
        if not body:
            return
        self.text += b"".join(body)
        while True:
            cut = self.text.find(b"\n\n")
            if cut < 0:
                break
            message, self.text = self.text[:cut].decode(), self.text[cut + 2:]
            name, payload = "", ""
            for line in message.split("\n"):
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    payload = line[6:]
            if not name:
                continue  # retry:, keep-alive comment
            if name == "end":
                self.ended = True
                continue
            self.messages += 1
            if '"output":' in payload:
                self.stamped.append((now, name, payload))


def sse(url: str) -> None:
    """Hold streams as stdin commands; see the module's doc."""
    _raise_fd_limit()
    host, port = _address(url)
    sel = selectors.DefaultSelector()
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    sel.register(stdin, selectors.EVENT_READ, None)
    streams: list[Stream] = []
    pending: list[str] = []
    waiting: dict[str, Any] | None = None  # the command being answered
    since = 0.0
    line_buf = b""

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def start(cmd: dict[str, Any]) -> None:
        nonlocal waiting, since
        since = time.perf_counter()
        op = cmd["op"]
        if op == "open":
            for iid in cmd["ids"]:
                s = socket.create_connection((host, port))
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(f"GET /api/instances/{iid}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          f"Accept: text/event-stream\r\n\r\n".encode())
                s.setblocking(False)
                stream = Stream(s)
                sel.register(s, selectors.EVENT_READ, stream)
                streams.append(stream)
            waiting = cmd
        elif op == "ended":
            waiting = cmd
        elif op == "close":
            for stream in streams:
                sel.unregister(stream.sock)
                stream.sock.close()
            reply({"closed": len(streams)})
            streams.clear()
        else:
            reply({"error": f"unknown op {op!r}"})

    def check() -> None:
        nonlocal waiting
        if waiting is None:
            return
        elapsed = time.perf_counter() - since
        if waiting["op"] == "open":
            if all(s.messages >= waiting["events"] for s in streams):
                reply({"opened": len(streams), "seconds": elapsed})
                waiting = None
        elif waiting["op"] == "ended":
            done = all(s.ended for s in streams)
            if done or elapsed > waiting["timeout"]:
                stamped = []
                for s in streams:
                    for t, name, data in s.stamped:
                        output = json.loads(data).get("output")
                        if isinstance(output, float):
                            stamped.append([t, name, output])
                    s.stamped = []
                reply({"ended": sum(s.ended for s in streams), "streams": len(streams), "stamped": stamped,
                       "messages": sum(s.messages for s in streams), "seconds": elapsed})
                waiting = None

    while True:
        if waiting is None and pending:
            start(json.loads(pending.pop(0)))
            check()
            continue
        for key, _ in sel.select(timeout=0.05):
            now = time.time()
            if key.data is None:
                try:
                    chunk = os.read(stdin, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    return  # stdin closed: the benchmark is done
                line_buf += chunk
                *lines, line_buf = line_buf.split(b"\n")
                pending += [ln.decode() for ln in lines if ln.strip()]
                continue
            stream: Stream = key.data
            try:
                data = stream.sock.recv(262144)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(stream.sock)  # closed by the server (it should not: keep-alive)
                continue
            stream.feed(data, now)
        check()


def load(url: str, path: str, body: str, connections: int, seconds: float) -> None:
    """Closed-loop POSTs on keep-alive connections; prints the count; see the module's doc."""
    _raise_fd_limit()
    host, port = _address(url)
    payload = body.encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
    sel = selectors.DefaultSelector()
    bufs: dict[int, bytes] = {}
    done = bad = 0
    socks: list[socket.socket] = []
    for _ in range(connections):
        conn = socket.create_connection((host, port))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ, conn)
        bufs[conn.fileno()] = b""
        socks.append(conn)
    t0 = time.perf_counter()
    end = t0 + seconds
    for conn in socks:
        conn.send(request)
    while True:
        now = time.perf_counter()
        if now >= end:
            break
        for key, _ in sel.select(timeout=end - now):
            s: socket.socket = key.data
            fd = s.fileno()
            data = s.recv(65536)
            if not data:
                raise RuntimeError("the server closed a connection")
            buf = bufs[fd] + data
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                head = buf[:head_end].lower()
                at = head.find(b"content-length:")
                length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None])
                if len(buf) < head_end + 4 + length:
                    break
                status = int(head[9:12])
                buf = buf[head_end + 4 + length:]
                done += 1
                bad += not 200 <= status < 300
                s.send(request)
            bufs[fd] = buf
    elapsed = time.perf_counter() - t0
    print(json.dumps({"requests": done, "non2xx": bad, "seconds": elapsed}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "sse":
        sse(sys.argv[2])
    elif sys.argv[1] == "load":
        load(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), float(sys.argv[6]))
    else:
        raise SystemExit(__doc__)
