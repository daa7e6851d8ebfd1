"""The server ``web.py`` measures: ``durable serve``'s process, and the bare framework beside it.

    python benchmarks/_web_server.py STORE READY_FILE [--app composite|durable|floor|asgi] [--worker] [--probe]
                                     [--poll S]

Built as ``durable serve`` builds its own (durable/cli/_serve.py): an
``Engine`` on the LMDB store at ``STORE``, an ``AsyncClient.sharing(engine)``,
``create_app(client, workflows=...)`` with the workflows of ``web.py`` and the
loopback host names as trusted hosts, served by Hypercorn's trio worker in the
engine's trio run, with the same Hypercorn settings (backlog 4096, keep-alive
75 s, no access log); a worker (``engine.serve()``) on the same run with
``--worker``, none without (the instances are only stored). What Hypercorn
serves (``--app``):

- ``composite`` (the default): one Starlette app holding the durable app
  (mounted at the root, unchanged) and, next to it, ``POST /trivial``: it
  parses its JSON body and answers a small JSON object, the baseline a start
  through the API is compared with;
- ``durable``: the durable app alone, as ``durable serve`` serves it (an
  outer Starlette app's layers would hold memory in every open stream);
- ``floor``: no durable at all (no engine, no store opened): a Starlette app
  whose ``GET /api/instances/{id}/events`` is a ``StreamingResponse`` that
  sends a ``retry:`` line and two small events, then waits on a
  ``trio.Event`` that never fires (a keep-alive comment every 15 s, as
  durable's streams): what one idle SSE stream costs in this framework stack
  alone, the floor under durable's;
- ``asgi``: the same stream as a plain ASGI function, no Starlette: what
  Hypercorn alone holds per stream.

With ``--probe`` (the durable apps), two probes record, in the server, while
they are on (``SIGUSR1`` reads ``on`` or ``off`` from ``READY_FILE.probe``),
where an event's time goes: a listener on the engine's event bus notes, for each
event whose ``output`` is a float (``web.py``'s emit times), when it reached
the bus (emitted by the engine, its checkpoint committed), and a task
sleeping 1 ms in a loop notes how late each wake-up came (the trio loop's
lag: how long one pass over the runnable tasks takes).

On ``SIGUSR2`` it runs ``gc.collect()``, then writes ``{"rss_kb": VmRSS,
"streams": open event streams, "bus": [[arrival, output], ...], "lag": [[time,
seconds late], ...]}`` (the probes' notes since the last ``SIGUSR2``) to
``READY_FILE.gc`` (a temporary name, then renamed), so the RSS the benchmark
reads from /proc/PID/status is not left to the collector's timing. Once it listens it writes ``http://127.0.0.1:PORT``
to ``READY_FILE`` (the same way). SIGTERM or SIGINT ends the streams, then
the server, as ``durable serve`` does. On Linux it is killed by the kernel
if the process that started it dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import time

import trio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LOOPBACK = ["localhost", "127.0.0.1", "[::1]", "::1"]
KEEPALIVE = 15.0  # seconds, as create_app's default
PROBES: dict[str, list[tuple[float, float]]] = {"bus": [], "lag": []}
ARMED = [trio.Event()]  # set from SIGUSR1 to SIGUSR2: the probes record


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


@contextlib.asynccontextmanager
async def _durable_app(store: str, kind: str, worker: bool, probe: bool, poll: float
                       ) -> AsyncIterator[tuple[Any, Callable[[], int], Callable[[], Awaitable[None]]]]:
    """The app to serve, its open stream count, and what ends its streams; the engine's worker running in it."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Mount, Route

    import web  # the benchmark's workflows
    from durable import AsyncClient, Engine
    from durable.cli._load import find_workflows, setup_engine
    from durable.web import create_app

    async with Engine.open(store, poll_interval=poll) as engine:
        setup_engine(engine, [web])
        workflows = list(find_workflows(web).values())
        async with AsyncClient.sharing(engine, poll_interval=poll) as client, trio.open_nursery() as nursery:
            durable_app = create_app(client, workflows=workflows, trusted_hosts=LOOPBACK)

            async def trivial(request: Request) -> Response:
                body = json.loads(await request.body())
                return JSONResponse({"ok": True, "keys": len(body)})

            app: Any = durable_app
            if kind == "composite":
                app = Starlette(routes=[Route("/trivial", trivial, methods=["POST"]), Mount("", app=durable_app)])
            if worker:
                nursery.start_soon(lambda: engine.serve(queues=["default"]))
            if probe:
                def on_event(event: Any) -> None:
                    if ARMED[0].is_set() and isinstance(event.output, float):
                        PROBES["bus"].append((time.time(), event.output))

                async def lag() -> None:
                    while True:
                        await ARMED[0].wait()
                        t0 = time.perf_counter()
                        await trio.sleep(0.001)
                        PROBES["lag"].append((time.time(), time.perf_counter() - t0 - 0.001))

                engine.events.on("*", on_event)
                nursery.start_soon(lag)
            yield app, lambda: durable_app.streams.count, durable_app.streams.close
            nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def _floor_app() -> AsyncIterator[tuple[Any, Callable[[], int], Callable[[], Awaitable[None]]]]:
    """The framework alone: a Starlette ``StreamingResponse`` per stream, waiting on an event."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    never = trio.Event()
    open_streams = [0]

    async def messages(instance_id: str) -> AsyncIterator[str]:
        open_streams[0] += 1
        try:
            yield "retry: 2000\n\n"
            for n, name in enumerate(("workflow.started", "workflow.step.started")):
                yield f"id: {n + 1}\nevent: {name}\ndata: {json.dumps({'instance_id': instance_id})}\n\n"
            while not never.is_set():
                with trio.move_on_after(KEEPALIVE):
                    await never.wait()
                if not never.is_set():
                    yield ": keep-alive\n\n"
        finally:
            open_streams[0] -= 1

    async def events(request: Request) -> Response:
        return StreamingResponse(messages(request.path_params["instance_id"]), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def close() -> None:
        never.set()

    yield Starlette(routes=[Route("/api/instances/{instance_id}/events", events, methods=["GET"])]), \
        lambda: open_streams[0], close


@contextlib.asynccontextmanager
async def _asgi_app() -> AsyncIterator[tuple[Any, Callable[[], int], Callable[[], Awaitable[None]]]]:
    """Hypercorn alone: the floor app's stream as a plain ASGI function, in the request's one task (it waits on
    ``receive()`` for the client's disconnect, where Starlette starts a second task)."""
    scopes: set[trio.CancelScope] = set()
    open_streams = [0]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        instance_id = scope["path"].split("/")[3]
        await receive()  # the request (a GET: no body)
        open_streams[0] += 1
        with trio.CancelScope() as cancel:
            scopes.add(cancel)
            try:
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
                await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
                for n, name in enumerate(("workflow.started", "workflow.step.started")):
                    data = json.dumps({"instance_id": instance_id})
                    await send({"type": "http.response.body", "more_body": True,
                                "body": f"id: {n + 1}\nevent: {name}\ndata: {data}\n\n".encode()})
                while True:
                    with trio.move_on_after(KEEPALIVE):
                        if (await receive())["type"] == "http.disconnect":
                            return
                    await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
            finally:
                scopes.discard(cancel)
                open_streams[0] -= 1
        await send({"type": "http.response.body", "body": b"", "more_body": False})  # closed by close()

    async def close() -> None:
        for cancel in list(scopes):
            cancel.cancel()

    yield app, lambda: open_streams[0], close


async def _serve(store: str, ready_file: str, kind: str, worker: bool, probe: bool, poll: float) -> None:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    opened = (_floor_app() if kind == "floor" else _asgi_app() if kind == "asgi" else
              _durable_app(store, kind, worker, probe, poll))
    async with opened as (app, count_streams, close_streams):
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.backlog = 4096
        config.graceful_timeout = 3.0
        config.accesslog = None
        config.errorlog = "-"
        config.keep_alive_timeout = 75.0
        stop = trio.Event()

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2) as signals:
                async for signum in signals:
                    if signum == signal.SIGUSR1:
                        with open(ready_file + ".probe") as f:
                            on = f.read().strip() == "on"
                        if on:
                            ARMED[0].set()
                        elif ARMED[0].is_set():
                            ARMED[0] = trio.Event()  # (the lag probe waits on the unset one)
                        continue
                    if signum != signal.SIGUSR2:
                        stop.set()
                        return
                    gc.collect()
                    notes = {k: list(v) for k, v in PROBES.items()}
                    for v in PROBES.values():
                        v.clear()
                    _write(ready_file + ".gc", json.dumps({"rss_kb": _rss_kb(), "streams": count_streams(), **notes}))

        async def shutdown_trigger() -> None:
            await stop.wait()
            await close_streams()  # the streams first: Hypercorn then has no open response to wait for

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_signals)
            done = trio.Event()

            async def run_hypercorn(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                try:
                    await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
                finally:
                    done.set()
                    stop.set()

            bound: list[str] = await nursery.start(run_hypercorn)
            _write(ready_file, bound[0])
            await stop.wait()
            with trio.move_on_after(config.graceful_timeout + 2):
                await done.wait()
            nursery.cancel_scope.cancel()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("ready_file")
    p.add_argument("--app", choices=["composite", "durable", "floor", "asgi"], default="composite",
                   help="what to serve (see the module's doc)")
    p.add_argument("--worker", action="store_true", help="also run a worker on queue default")
    p.add_argument("--probe", action="store_true", help="record the event bus's and the trio loop's probes")
    p.add_argument("--poll", type=float, default=1.0)
    args = p.parse_args()
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the benchmark
    trio.run(_serve, args.store, args.ready_file, args.app, args.worker, args.probe, args.poll)


if __name__ == "__main__":
    main()
