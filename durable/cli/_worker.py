"""``durable worker``: a long-running process that runs the unfinished instances no one else runs."""

from __future__ import annotations

import os
import time
from types import ModuleType

import click
import trio

from .._engine.engine import Engine
from .._engine.events import Event
from ._load import load_module, setup_engine
from ._logs import engine_logs
from ._options import store_option
from ._signals import until_signal

__all__ = ["worker_cmd"]


def _say(text: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {text}")


def _on_end(event: Event) -> None:
    detail = f": {event.error}" if event.error else ""
    _say(f"{event.name.split('.')[1]} {event.instance_id} ({event.workflow_name}){detail}")


def _to_take(in_flight: int, limit: int | None, concurrency: int | None) -> int | None:
    """How many instances one look may take over: at most ``limit``, and no more than the free slots.

    ``None``: no bound. ``0``: none (every slot is taken).
    """
    if concurrency is None:
        return limit
    free = max(0, concurrency - in_flight)
    return free if limit is None else min(limit, free)


async def _work(engine: Engine, poll: float, limit: int | None, concurrency: int | None) -> None:
    while True:
        take = _to_take(len(engine.workflows.running_ids()), limit, concurrency)
        if take != 0:
            for iid in await engine.workflows.resume(limit=take):
                inst = await engine.workflows.get_instance(iid)
                _say(f"running {iid} ({inst.workflow_name if inst else '?'})")
        await trio.sleep(poll)


async def _worker(store: str, modules: list[ModuleType], poll: float, limit: int | None, concurrency: int | None,
                  lease_ttl: float) -> None:
    async with Engine.open(store, lease_ttl=lease_ttl) as engine:
        loaded = setup_engine(engine, modules)
        cap = f"; at most {concurrency} instance(s) at once" if concurrency is not None else ""
        _say(f"durable worker {os.getpid()}: store {store}; workflows: {', '.join(loaded.workflows) or 'none'}; "
             f"jobs: {', '.join(loaded.jobs) or 'none'}; polling every {poll:g} s{cap}")
        if loaded.missing_jobs:
            _say(f"warning: no function for job(s) {', '.join(loaded.missing_jobs)}: define register_jobs(engine) "
                 "or functions of those names")
        for name in ("workflow.completed", "workflow.failed", "workflow.cancelled"):
            engine.events.on(name, _on_end)
        outcome = await until_signal(lambda: _work(engine, poll, limit, concurrency))
        left = engine.workflows.running_ids()
        _say(f"stopping on {outcome.signal_name or 'request'}: "
             f"{len(left)} instance(s) in flight left unfinished, for the next worker or `durable resume`")
    _say("stopped")


@click.command("worker")
@click.argument("modules", nargs=-1, required=True, metavar="FILE_OR_MODULE...")
@click.option("--poll", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Seconds between looks for instances to take over.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Take over at most N instances per look (lets several workers share new work). It does not "
                   "cap how many run at once: see --concurrency.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, metavar="N",
              help="Run at most N instances at once in this worker, taking over more only as they finish "
                   "(instances unloaded while they sleep or wait for a signal do not count). Without it: no cap.")
@click.option("--lease-ttl", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds without a heartbeat after which engines on other hosts count this one as gone.")
@store_option
def worker_cmd(modules: tuple[str, ...], poll: float, limit: int | None, concurrency: int | None, lease_ttl: float,
               store: str) -> None:
    """Run the workflows of the given files or modules until stopped.

    Registers their workflows and jobs (see `durable run` for what a module
    provides), then every --poll seconds takes over the unfinished instances
    of those workflows whose process is gone, and runs them: instances left by
    a crash or a stop, and those created with `durable run --detach`.
    Instances that a live process runs are left to it; several workers may
    share one store. Creates the store if it does not exist.

    --limit N caps how many instances each look takes over; --concurrency N
    caps how many run in this worker at once (a look then takes only as many
    as there are free slots). Without them a look takes every instance
    waiting.

    Ctrl-C or SIGTERM stops it cleanly (exit 0): steps in flight are
    cancelled and their instances left unfinished in the store, where the
    next worker or `durable resume` continues them (a step cut off runs again:
    steps run at least once). Nothing checkpointed is lost.
    """
    loaded = [load_module(m) for m in modules]
    with engine_logs():
        trio.run(_worker, store, loaded, poll, limit, concurrency, lease_ttl)
