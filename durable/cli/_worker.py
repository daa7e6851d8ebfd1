"""``durable worker``: a long-running process that serves queues: queued instances, external jobs, and the
unfinished instances no one else runs."""

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
from ._store import shown
from ._signals import until_signal

__all__ = ["worker_cmd"]


def _say(text: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {text}", nl=True)


def _on_end(event: Event) -> None:
    detail = f": {event.error}" if event.error else ""
    _say(f"{event.name.split('.')[1]} {event.instance_id} ({event.workflow_name}){detail}")


async def _worker(store: str, modules: list[ModuleType], poll: float, limit: int | None, concurrency: int | None,
                  lease_ttl: float, queues: tuple[str, ...], jobs_only: bool, job_concurrency: int) -> None:
    async with Engine.open(store, lease_ttl=lease_ttl, poll_interval=poll) as engine:
        loaded = setup_engine(engine, modules)
        served = sorted(set(queues)) if queues else sorted({"default", *loaded.queues})
        workflows_ = "none (--jobs-only)" if jobs_only else (", ".join(loaded.workflows) or "none")
        cap = f"; at most {concurrency} instance(s) at once" if concurrency is not None else ""
        _say(f"durable worker {os.getpid()}: store {shown(store)}; queues: {', '.join(served)}; workflows: {workflows_}; "
             f"jobs: {', '.join(loaded.jobs) or 'none'}; woken by new work, else looking every {poll:g} s{cap}")
        if loaded.missing_jobs:
            _say(f"warning: no function for job(s) {', '.join(loaded.missing_jobs)}: define register_jobs(engine) "
                 "or functions of those names")
        for name in ("workflow.completed", "workflow.failed", "workflow.cancelled"):
            engine.events.on(name, _on_end)

        def claimed(what: str, instance_id: str) -> None:
            found = engine._driver.runs.get(instance_id)
            _say(f"{what} {instance_id}" + (f" ({found.name})" if found is not None else ""))

        engine._on_claim = claimed

        async def serve() -> None:
            await engine.serve(queues=served, concurrency=concurrency, workflows=not jobs_only,
                               job_concurrency=job_concurrency, take_over_limit=limit)

        outcome = await until_signal(serve)
        left = engine.workflows.running_ids()
        _say(f"stopping on {outcome.signal_name or 'request'}: "
             f"{len(left)} instance(s) in flight left unfinished, for the next worker or `durable resume`")
    _say("stopped")


@click.command("worker")
@click.argument("modules", nargs=-1, required=True, metavar="FILE_OR_MODULE...")
@click.option("--queue", "queues", multiple=True, metavar="NAME",
              help="Serve this queue (repeat for several). Default: every queue the modules declare "
                   "(durable.Queue), name (@workflow(queue=), @step(queue=), task(queue=)), and 'default'.")
@click.option("--jobs-only", is_flag=True,
              help="Run only the external jobs of the served queues, no workflow instances.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, metavar="N",
              help="Run at most N instances at once in this worker, taking more only as they finish "
                   "(instances unloaded while they sleep or wait do not count). Without it: no cap.")
@click.option("--job-concurrency", type=click.IntRange(min=1), default=16, show_default=True, metavar="N",
              help="Run at most N external jobs at once in this worker.")
@click.option("--poll", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
              help="Seconds between looks where no wake-up reaches (and for instances whose process died).")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Take over at most N instances of dead processes per look (lets several workers share them).")
@click.option("--lease-ttl", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds without a heartbeat after which engines on other hosts count this one as gone.")
@store_option
def worker_cmd(modules: tuple[str, ...], queues: tuple[str, ...], jobs_only: bool, concurrency: int | None,
               job_concurrency: int, poll: float, limit: int | None, lease_ttl: float, store: str) -> None:
    """Serve queues with the workflows and jobs of the given files or modules, until stopped.

    Registers their workflows, jobs and queues (module-level durable.Queue
    objects), records in the store what it serves, then claims the instances
    and external jobs waiting on its queues, honouring every queue's limits
    (concurrency across all workers, per-worker concurrency, rate limit,
    priority), and runs them. New work wakes it at once (LMDB: from this
    host; PostgreSQL: from any host); every --poll seconds it also takes
    over unfinished instances whose process is gone. A worker started while
    its store is down waits for it. Several workers may share one store: none runs an
    instance another runs. Creates the store if it does not exist.

    Ctrl-C or SIGTERM stops it cleanly (exit 0): steps in flight are
    cancelled and their instances left unfinished in the store, where the
    next worker or `durable resume` continues them (a step cut off runs again:
    steps run at least once). Nothing checkpointed is lost.
    """
    loaded = [load_module(m) for m in modules]
    with engine_logs():
        trio.run(_worker, store, loaded, poll, limit, concurrency, lease_ttl, queues, jobs_only, job_concurrency)
