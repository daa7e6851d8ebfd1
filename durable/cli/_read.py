"""The commands that read a store: ``list``, ``show``, ``events``, and ``graph`` (which reads code)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
import trio

from .._model.records import InstanceStatus, StepResult, WorkflowInstance
from ..stores import Owner, Store
from ._errors import CliError
from ._graph import marked_dot, marked_mermaid
from ._history import HistoryEvent, derive, format_event
from ._load import find_workflows, graph_of, load_module, load_target
from ._options import modules_option, store_option
from ._render import VALUE_LIMIT, console, instance_dict, print_instance, print_instances, to_json
from ._signals import until_signal
from ._store import all_instances, name_of_store, open_store

__all__ = ["events_cmd", "graph_cmd", "list_cmd", "resolve_id", "show_cmd"]

_FORMATS = click.Choice(["mermaid", "dot"])


def _import(modules: tuple[str, ...]) -> list[Any]:
    return [load_module(m) for m in modules]


async def resolve_id(store: Store, text: str) -> WorkflowInstance:
    """The instance with id ``text``, or the only one whose id starts with it; :class:`CliError` otherwise."""
    inst = await store.get_instance(text)
    if inst is not None:
        return inst
    matches = [i for i in await all_instances(store) if i.id.startswith(text)] if text else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CliError(f"{len(matches)} instances have ids starting with {text!r}: give more of the id")
    raise CliError(f"no instance {text!r} in {name_of_store(store)}")


@click.command("list")
@click.option("--workflow", "-w", metavar="NAME", help="Only instances of this workflow.")
@click.option("--status", type=click.Choice([s.value for s in InstanceStatus]), help="Only instances with this status.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show the N most recent.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@store_option
@modules_option
def list_cmd(workflow: str | None, status: str | None, limit: int, as_json: bool, store: str,
             modules: tuple[str, ...]) -> None:
    """List instances, most recent first.

    An unfinished instance shows who runs it (RUN BY): the process that holds
    its lease, or "no live process" when that process is gone (exited or
    crashed) or nothing ever ran it (`run --detach`): a worker or `durable
    resume` continues it.
    """
    _import(modules)
    wanted = InstanceStatus(status) if status is not None else None
    with open_store(store) as s:
        instances, owners, waiting = trio.run(_list, s, workflow, wanted, limit)
    if as_json:
        click.echo(to_json([instance_dict(i, owners=owners, waiting=waiting) for i in instances], indent=2))
    elif not instances:
        click.echo("no instances")
    else:
        print_instances(console(), instances, owners, waiting)


async def _list(store: Store, workflow: str | None, status: InstanceStatus | None,
                limit: int) -> tuple[list[WorkflowInstance], dict[str, Owner | None], dict[str, str]]:
    """The ``limit`` most recent instances, the lease holder of each unfinished one (one read each), and what
    those waiting on a queue wait for."""
    shown = (await all_instances(store, workflow, status))[::-1][:limit]
    owners = {i.id: await store.get_lease(i.id) for i in shown if not i.finished}
    return shown, owners, await waiting_for(store, [i for i in shown if not i.finished], owners)


async def waiting_for(store: Store, unfinished: list[WorkflowInstance],
                      owners: Mapping[str, Owner | None]) -> dict[str, str]:
    """For each unfinished instance that waits on a queue (to start, or for an external job), what it waits for:
    ``"queued on gpu"``, or ``"waiting for a worker of queue gpu"`` when no live worker serves that queue."""
    if not unfinished:
        return {}
    servers = (await store.servers()).values()
    runs = {q for s in servers for q in s.get("queues", [])}
    runs_jobs = {q for s in servers for q in s.get("jobs", [])}
    out: dict[str, str] = {}
    for inst in unfinished:
        if inst.queue is not None and inst.status == InstanceStatus.PENDING and owners.get(inst.id) is None:
            out[inst.id] = (f"queued on {inst.queue}" if inst.queue in runs
                            else f"waiting for a worker of queue {inst.queue}")
        for job, holder in await store.get_jobs(inst.id):
            if holder is not None:
                out[inst.id] = f"job {job.step_name} running on queue {job.queue}"
            elif job.queue in runs_jobs:
                out[inst.id] = f"job {job.step_name} queued on {job.queue}"
            else:
                out[inst.id] = f"job {job.step_name} waiting for a worker of queue {job.queue}"
    return out


async def _load_instance(store: Store, text: str) -> tuple[WorkflowInstance, dict[str, StepResult], Owner | None,
                                                               str | None]:
    inst = await resolve_id(store, text)
    owner = await store.get_lease(inst.id)
    waiting = await waiting_for(store, [inst] if not inst.finished else [], {inst.id: owner})
    return inst, await store.get_steps(inst.id), owner, waiting.get(inst.id)


_FULL_HELP = (f"Print inputs, outputs and errors whole (else each is cut to {VALUE_LIMIT} characters, its whole "
              "length noted). --json always prints them whole.")


@click.command("show")
@click.argument("instance_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the instance and its steps as JSON.")
@click.option("--full", is_flag=True, help=_FULL_HELP)
@click.option("--graph", "graph", is_flag=True,
              help="Print the workflow's diagram with each state's status marked (needs --module).")
@click.option("--format", "fmt", type=_FORMATS, default="mermaid", show_default=True, help="Diagram format for --graph.")
@store_option
@modules_option
def show_cmd(instance_id: str, as_json: bool, full: bool, graph: bool, fmt: str, store: str,
             modules: tuple[str, ...]) -> None:
    """Show an instance and a table of its steps (ID may be a unique prefix).

    With --graph, print the workflow's diagram instead, each state marked with
    its status; the diagram comes from the workflow's code, so name the file or
    module that defines it with --module.
    """
    if graph and not modules:
        raise CliError("show --graph needs the workflow's definition: name its file or module with --module",
                       exit_code=2)
    loaded = _import(modules)
    with open_store(store) as s:
        inst, steps, owner, waiting = trio.run(_load_instance, s, instance_id)
    if graph:
        workflows = {name: wf for module in loaded for name, wf in find_workflows(module).items()}
        wf = workflows.get(inst.workflow_name)
        if wf is None:
            raise CliError(f"workflow {inst.workflow_name!r} is not defined in {', '.join(modules)} "
                           f"(found: {', '.join(workflows) or 'none'})")
        render = marked_mermaid if fmt == "mermaid" else marked_dot
        click.echo(render(graph_of(wf), inst, steps), nl=False)
    elif as_json:
        click.echo(to_json(instance_dict(inst, steps, owners={inst.id: owner},
                                         waiting={inst.id: waiting} if waiting else None), indent=2))
    else:
        print_instance(console(), inst, steps, owner, full=full, waiting=waiting)


def _emit(item: HistoryEvent, as_json: bool, full: bool) -> None:
    click.echo(to_json(item.to_dict()) if as_json else format_event(item, full))


async def _follow(store: Store, instance_id: str, as_json: bool, full: bool, interval: float) -> None:
    seen: set[tuple[str, ...]] = set()
    owner = await store.get_lease(instance_id)
    if owner is None or not owner.is_alive():
        inst = await store.get_instance(instance_id, steps=False)
        if inst is not None and not inst.finished:
            click.echo(f"durable: note: no live process runs {instance_id}; it goes on once a worker or "
                       "`durable resume MODULE` continues it", err=True)
    while True:
        inst = await store.get_instance(instance_id)
        if inst is None:
            raise CliError(f"instance {instance_id!r} disappeared from {name_of_store(store)}")
        steps: Mapping[str, StepResult] = await store.get_steps(instance_id)
        for item in derive(inst, steps):
            if item.ident not in seen:
                seen.add(item.ident)
                _emit(item, as_json, full)
        if inst.finished:
            return
        await trio.sleep(interval)


@click.command("events")
@click.argument("instance_id", metavar="ID")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events until the instance finishes.")
@click.option("--interval", type=click.FloatRange(min=0.01), default=0.2, show_default=True,
              help="Seconds between polls of the store with --follow.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
@click.option("--full", is_flag=True, help=_FULL_HELP)
@store_option
@modules_option
def events_cmd(instance_id: str, follow: bool, interval: float, as_json: bool, full: bool, store: str,
               modules: tuple[str, ...]) -> None:
    """Print an instance's events, derived from its stored checkpoints.

    Events are delivered only inside the process that runs an instance and are
    not stored: this command rebuilds them from the instance record and its
    step checkpoints (workflow started; each step started, retrying, completed
    or failed, with times and attempts; the final event). A checkpoint keeps a
    step's latest state, so earlier failed attempts show only as its attempt
    count; progress events are not derived. With --follow it polls the store
    (works while another process runs the instance) and exits once the
    instance has finished.
    """
    _import(modules)
    with open_store(store) as s:
        inst = trio.run(resolve_id, s, instance_id)
        if not follow:
            for item in derive(inst, trio.run(s.get_steps, inst.id)):
                _emit(item, as_json, full)
            return
        outcome = trio.run(until_signal, lambda: _follow(s, inst.id, as_json, full, interval))
    if outcome.signal is not None:
        raise SystemExit(130)


@click.command("graph")
@click.argument("target", metavar="FILE_OR_MODULE[:WORKFLOW]")
@click.option("--format", "fmt", type=_FORMATS, default="mermaid", show_default=True, help="Diagram format.")
def graph_cmd(target: str, fmt: str) -> None:
    """Print a workflow's diagram (Mermaid or Graphviz DOT).

    Works for @workflow functions (the graph compiled from their source) and
    builder workflows alike. WORKFLOW may be omitted when the module defines
    only one.
    """
    _, wf = load_target(target)
    graph = graph_of(wf)
    click.echo(graph.to_mermaid() if fmt == "mermaid" else graph.to_dot(), nl=False)
