"""The commands that run or change instances: ``run``, ``resume``, ``cancel``."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import attrs
import click
import trio

from .._engine.engine import Engine
from .._model.queues import DEFAULT_QUEUE
from .._model.records import InstanceStatus, WorkflowInstance
from ..errors import IdConflict
from .._model.ids import is_valid_id
from ._errors import CliError
from ._load import Workflow, graph_of, load_module, load_target, name_of, setup_engine, split_target
from ._logs import engine_logs
from ._options import call_arguments, modules_option, store_option
from ._progress import RunProgress, choose_mode
from ._read import resolve_id
from ._render import console, error_detail, to_json
from ._signals import until_signal
from ._store import check_store, make_store, shown

__all__ = ["cancel_cmd", "resume_cmd", "run_cmd"]


@attrs.frozen
class _Ran:
    instance_id: str
    instance: WorkflowInstance | None = None  # None: detached
    problem: str | None = None  # why it could not be waited for


def _missing_jobs_warning(progress: RunProgress, wf: Workflow, missing: list[str], module: ModuleType) -> None:
    needed = [m for m in missing if any(getattr(s, "job", None) == m for s in graph_of(wf).walk())]
    if needed:
        progress.line(
            f"durable: warning: no function for job(s) {', '.join(needed)}: define register_jobs(engine) "
            f"in {module.__name__}, or functions of those names"
        )


async def _run(store: str, spec: str, module: ModuleType, wf: Workflow, args: tuple[Any, ...], kwargs: dict[str, Any],
               instance_id: str | None, detach: bool, progress: RunProgress) -> _Ran:
    async with Engine.open(store) as engine:
        loaded = setup_engine(engine, [module], extra=[wf])
        _missing_jobs_warning(progress, wf, loaded.missing_jobs, module)
        engine.events.on("*", progress.on_event)
        try:
            if detach:
                # Queued (on the workflow's own queue, else the default one): a worker claims it at once.
                iid = await engine.workflows.start(wf, *args, id=instance_id, queue=getattr(wf, "queue", None)
                                                   or DEFAULT_QUEUE, **kwargs)
            else:
                # Run here, whatever queue the workflow names: `durable run` is the worker of its own instance.
                definition = engine.workflows._definition(wf)
                iid = await engine.workflows.driver.start(definition, args, kwargs, instance_id, None,
                                                          if_exists="return")
        except IdConflict as exc:
            raise CliError(str(exc)) from None  # another input (or workflow) under that id: exit 1
        except (TypeError, ValueError) as exc:
            raise CliError(str(exc), exit_code=2) from None
        if detach:
            return _Ran(iid)
        here = iid in engine.workflows.running_ids()
        if not here:
            found = await engine.store.get_instance(iid)
            if found is not None and not found.finished:
                owner = await engine.store.get_lease(iid)
                if owner is None or not owner.is_alive():
                    return _Ran(iid, problem=(
                        f"instance {iid} already exists, unfinished, and no process runs it: continue it with "
                        f"`durable resume {spec} --store {shown(store)}` or a worker"
                    ))
                progress.started(iid, f": already running in process {owner.pid} on {owner.host}; waiting")
            else:
                progress.started(iid, ": already exists")
        else:
            progress.started(iid)
        with progress:
            instance = await engine.workflows.wait(iid)
        return _Ran(iid, instance)


@click.command("run", context_settings={"show_default": True})
@click.argument("target", metavar="FILE_OR_MODULE[:WORKFLOW]")
@click.argument("args", nargs=-1, metavar="[ARGS]...")
@click.option("--input", "input_json", metavar="JSON",
              help="The input as JSON: a builder workflow's input value; for a @workflow function a list "
                   "(positional arguments) or an object (keyword arguments).")
@click.option("--id", "instance_id", metavar="ID",
              help="The instance id: running again with the same id and input runs one instance and prints its "
                   "result; another input under an existing id is an error (exit 1).")
@click.option("--detach", is_flag=True, help="Only queue the instance (on the workflow's queue, else 'default'), "
              "print its id and exit: a worker runs it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@store_option
def run_cmd(target: str, args: tuple[str, ...], input_json: str | None, instance_id: str | None, detach: bool,
            quiet: bool, store: str) -> None:
    """Run a workflow to its end and print its result as JSON.

    Each ARG is parsed as JSON if it can be (42, true, '{"a": 1}'), else taken
    as a string. A builder workflow takes one input value; a @workflow
    function takes ARGS as its positional arguments. Put -- before ARGS that
    start with a dash.

    Progress goes to stderr (a progress bar in a terminal, plain lines
    otherwise), the result to stdout. Exits 1 with the error when the instance
    fails, times out or is cancelled, or when --id names an instance started
    with another input. On Ctrl-C or SIGTERM the instance is
    left unfinished in the store, for `durable resume` or a worker.
    """
    spec = split_target(target)[0]
    module, wf = load_target(target)
    call_args, call_kwargs = call_arguments(wf, args, input_json)
    if instance_id is not None and not is_valid_id(instance_id):
        raise CliError(f"--id {instance_id!r} is not a usable id: a non-empty string of at most 200 bytes, "
                       "without NUL", exit_code=2)
    err = console(stderr=True)
    progress = RunProgress(err, choose_mode(err, quiet), name_of(wf))
    with engine_logs():
        outcome = trio.run(until_signal, lambda: _run(store, spec, module, wf, call_args, call_kwargs, instance_id,
                                                      detach, progress))
    if outcome.signal is not None:
        raise CliError(
            f"interrupted by {outcome.signal_name}: the instance is left unfinished in {shown(store)}; continue it "
            f"with `durable resume {spec} --store {shown(store)}` or a worker",
            exit_code=130,
        )
    ran = outcome.result
    assert ran is not None
    if ran.problem is not None:
        raise CliError(ran.problem)
    if ran.instance is None:
        click.echo(ran.instance_id)
        return
    inst = ran.instance
    if inst.status == InstanceStatus.COMPLETED:
        click.echo(to_json(inst.output))
        return
    if inst.status == InstanceStatus.CANCELLED:
        detail = error_detail(inst)
        raise CliError(f"instance {inst.id} was cancelled" + (f": {detail}" if detail else ""))
    raise CliError(f"instance {inst.id} {inst.status}: {inst.error or 'no error recorded'}")


async def _resume(store: str, modules: list[ModuleType]) -> list[WorkflowInstance] | str:
    async with Engine.open(store) as engine:
        if not modules:
            unfinished = await engine.store.get_running_instances()
            if not unfinished:
                return []
            names = sorted({i.workflow_name for i in unfinished})
            return (f"{len(unfinished)} unfinished instance(s), of {', '.join(names)}: name the files or "
                    "modules that define their workflows, as in `durable resume FILE_OR_MODULE...`")
        loaded = setup_engine(engine, modules)
        # Those waiting in a queue first (under the queues' limits), then those whose process is gone.
        queues = sorted({DEFAULT_QUEUE, *loaded.queues, *(await engine.store.get_queues())})
        queued, _ = await engine.store.claim_queued(engine.owner, [(q, None) for q in queues],
                                                    frozenset(engine.workflows.names()), None, engine.now())
        ids = [i for i in queued if await engine.workflows.driver.continue_instance(i)]
        ids += await engine.workflows.resume()
        for iid in ids:
            click.echo(f"resumed {iid}")
        return [await engine.workflows.wait(iid) for iid in ids]


@click.command("resume")
@click.argument("modules", nargs=-1, metavar="[FILE_OR_MODULE]...")
@store_option
def resume_cmd(modules: tuple[str, ...], store: str) -> None:
    """Continue the unfinished instances no process is running, until they finish.

    Registers the workflows and jobs of the given files or modules, takes over
    every unfinished instance of those workflows whose process is gone (exited
    or crashed; instances a live process runs are left to it), runs them to
    their end and prints each one's status. Finished steps are not run again.
    Exits 1 if any of them failed. Without modules, says how many instances
    are unfinished. For a long-running process that also picks up new
    instances, use `durable worker`.
    """
    check_store(store)
    loaded = [load_module(m) for m in modules]
    with engine_logs():
        outcome = trio.run(until_signal, lambda: _resume(store, loaded))
    if outcome.signal is not None:
        raise CliError(f"interrupted by {outcome.signal_name}: unfinished instances stay in {shown(store)}",
                       exit_code=130)
    result = outcome.result
    if isinstance(result, str):
        raise CliError(result)
    assert result is not None
    if not result:
        click.echo("nothing to resume")
        return
    failed = 0
    for inst in result:
        error = error_detail(inst)
        detail = f": {error}" if error else ""
        click.echo(f"{inst.id} ({inst.workflow_name}): {inst.status}{detail}")
        failed += inst.status != InstanceStatus.COMPLETED
    if failed:
        raise CliError(f"{failed} of {len(result)} resumed instance(s) did not complete")


async def _cancel(path: str, text: str) -> str:
    store = make_store(path)
    try:
        async with Engine(store) as engine:
            inst = await resolve_id(store, text)
            if inst.finished:
                raise CliError(f"instance {inst.id} has already finished ({inst.status})")
            owner = await store.get_lease(inst.id)
            if not await engine.workflows.cancel(inst.id):
                raise CliError(f"instance {inst.id} has already finished")
            if owner is not None and owner.id != engine.owner.id and owner.is_alive():
                return (f"cancelled {inst.id} (process {owner.pid}, which runs it, stops at its next checkpoint, "
                        f"or within {owner.ttl / 3:g} s inside a long step)")
            return f"cancelled {inst.id}"
    finally:
        store.close()


@click.command("cancel")
@click.argument("instance_id", metavar="ID")
@store_option
@modules_option
def cancel_cmd(instance_id: str, store: str, modules: tuple[str, ...]) -> None:
    """Cancel an unfinished instance (ID may be a unique prefix).

    Status `cancelled` is on disk when this returns. If another process runs
    the instance, it stops at its next checkpoint, or within a third of its
    lease time (10 s by default) while inside a long step.
    """
    check_store(store)
    for m in modules:
        load_module(m)
    with engine_logs():
        message = trio.run(_cancel, store, instance_id)
    click.echo(message)
