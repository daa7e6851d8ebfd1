"""``durable serve``: the HTTP API, the event streams, the dashboard and (unless ``--no-worker``) a worker,
in one process and one trio run (Hypercorn's trio worker)."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import time
from types import ModuleType
from typing import Any

import click
import trio

from .._engine.engine import Engine
from ..client import AsyncClient
from ._errors import CliError
from ._load import find_workflows, load_module, setup_engine
from ._logs import engine_logs
from ._options import store_option
from ._store import shown

__all__ = ["serve_cmd"]

_LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]", "::1"]
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{16,}$")


def _say(text: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {text}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, ``127.x``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hypercorn() -> tuple[Any, Any]:
    try:
        from hypercorn.config import Config
        from hypercorn.trio import serve
    except ImportError:
        raise CliError("durable serve needs the web extra: pip install 'durable[web]'") from None
    return Config, serve


async def _serve(store: str, modules: list[ModuleType], host: str, port: int, worker: bool, token: str | None,
                 poll: float, concurrency: int | None, queues: tuple[str, ...], lease_ttl: float, keepalive: float,
                 ready_file: str | None) -> None:
    from ..web import create_app

    Config, serve = _hypercorn()
    async with Engine.open(store, lease_ttl=lease_ttl, poll_interval=poll) as engine:
        loaded = setup_engine(engine, modules)
        workflows = [wf for module in modules for wf in find_workflows(module).values()]
        async with AsyncClient.sharing(engine, poll_interval=poll) as client:
            app = create_app(client, workflows=workflows, token=token, keepalive=keepalive,
                             trusted_hosts=None if token else _LOOPBACK_NAMES)
            config = Config()
            bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
            config.bind = [f"{bind_host}:{port}"]
            config.backlog = 4096  # (100 by default: a thousand browsers connecting at once were reset)
            config.graceful_timeout = 3.0
            config.accesslog = None
            config.errorlog = "-"
            config.keep_alive_timeout = 75.0
            stop = trio.Event()
            stopped_by: list[str] = []

            async def watch_signals() -> None:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        stopped_by.append(signal.Signals(signum).name)
                        stop.set()
                        return

            async def shutdown_trigger() -> None:
                await stop.wait()
                await app.streams.close()  # the streams first: Hypercorn then has no open response to wait for

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_signals)
                if worker:
                    served = sorted(set(queues)) if queues else sorted({"default", *loaded.queues})
                    nursery.start_soon(lambda: engine.serve(queues=served, concurrency=concurrency))
                else:
                    served = []
                hypercorn_done = trio.Event()

                async def run_hypercorn(*, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
                                        ) -> None:
                    try:
                        await serve(app, config, shutdown_trigger=shutdown_trigger, task_status=task_status)
                    finally:
                        hypercorn_done.set()
                        stop.set()

                bound: list[str] = await nursery.start(run_hypercorn)
                address = bound[0] if bound else f"http://{bind_host}:{port}"
                _say(f"durable serve {os.getpid()}: store {shown(store)}; dashboard and API at {address}/ "
                     f"(OpenAPI: {address}/api/openapi.json); workflows: {', '.join(loaded.workflows) or 'none'}; "
                     + (f"worker on queues {', '.join(served)}" if worker else "no worker (--no-worker)")
                     + ("; bearer token required" if token else ""))
                if ready_file:
                    with open(ready_file + ".tmp", "w") as f:
                        f.write(address)
                    os.replace(ready_file + ".tmp", ready_file)
                await stop.wait()
                with trio.move_on_after(config.graceful_timeout + 2):
                    await hypercorn_done.wait()  # the streams ended first: it closes at once
                nursery.cancel_scope.cancel()
            _say(f"stopping on {stopped_by[0] if stopped_by else 'request'}: "
                 f"{len(engine.workflows.running_ids())} instance(s) in flight left for the next worker")
    _say("stopped")


def _free_port_check(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@click.command("serve")
@click.argument("modules", nargs=-1, required=True, metavar="FILE_OR_MODULE...")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any address but loopback needs --token.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--no-worker", is_flag=True, help="Serve the API and dashboard only; workers run elsewhere.")
@click.option("--token", envvar="DURABLE_TOKEN", default=None, metavar="TOKEN",
              help="Bearer token every request must carry (also $DURABLE_TOKEN; at least 16 characters of "
                   "letters, digits and ._~+/=-). Required to listen on an address other than loopback.")
@click.option("--queue", "queues", multiple=True, metavar="NAME", help="Queues the worker serves (as durable worker).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, metavar="N",
              help="Run at most N instances at once in the worker.")
@click.option("--poll", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Seconds between looks where no wake-up reaches.")
@click.option("--lease-ttl", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds without a heartbeat after which other engines count this one as gone.")
@click.option("--keepalive", type=click.FloatRange(min=0.05, max=3600), default=15.0, show_default=True,
              help="Seconds between keep-alive comments on an idle event stream.")
@click.option("--ready-file", default=None, hidden=True, help="Write the server's address here once it listens.")
@store_option
def serve_cmd(modules: tuple[str, ...], host: str, port: int, no_worker: bool, token: str | None,
              queues: tuple[str, ...], concurrency: int | None, poll: float, lease_ttl: float, keepalive: float,
              ready_file: str | None, store: str) -> None:
    """Serve the HTTP API, live event streams and the dashboard for the given workflow files or modules.

    Opens the dashboard at http://127.0.0.1:8000/ by default: the instances,
    live; each instance's graph, steps, timeline and events; start, cancel,
    resume and signal buttons. The API is described at /api/openapi.json.
    Unless --no-worker, the same process also runs a worker for the modules'
    queues (as `durable worker`). Ctrl-C or SIGTERM ends the event streams,
    then stops; unfinished instances stay for the next worker.
    """
    if token is not None and not _TOKEN.match(token):
        raise CliError("--token must be at least 16 characters of letters, digits and ._~+/=- "
                       "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if not is_loopback(host) and token is None:
        raise CliError(f"refusing to listen on {host} without a token: anyone who reaches it could start and "
                       "cancel workflows. Set --token (or $DURABLE_TOKEN), or listen on 127.0.0.1")
    _hypercorn()
    _free_port_check(host, port)
    loaded = [load_module(m) for m in modules]
    with engine_logs():
        trio.run(_serve, store, loaded, host, port, not no_worker, token, poll, concurrency, queues, lease_ttl,
                 keepalive, ready_file)
