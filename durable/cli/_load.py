"""Import ``FILE_OR_MODULE[:NAME]`` targets and find the workflows and jobs a module defines.

A target is a Python file (``path/to/flows.py``) or an importable module
(``package.flows``), optionally followed by ``:NAME``. A file is imported as
the module named after it (``flows``) with its directory first on
``sys.path``; a module is imported with the current directory on
``sys.path``. Import a module the same way in every process that runs its
workflows: step checkpoints record the ``module.function`` that wrote them.

What a module provides:

- workflows: its module-level ``@workflow`` functions and built graphs
  (graphs that are only branches of another found graph are left out);
- jobs: ``register_jobs(engine)``, if the module defines it, is called with
  the engine; then a job a builder task names that is still unregistered is
  looked up as a module-level function of that name, dashes read as
  underscores (job ``"validate-order"`` -> ``validate_order``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from .._frontends.builder import WorkflowBuilder
from .._frontends.decorators import StepFunction, WorkflowFunction
from .._graph.states import Graph, MapState, ParallelState, TaskState
from .._model.queues import Queue
from ._errors import CliError

if TYPE_CHECKING:
    from .._engine.engine import Engine

__all__ = [
    "Loaded",
    "Workflow",
    "find_workflows",
    "graph_of",
    "load_module",
    "load_target",
    "name_of",
    "setup_engine",
    "split_target",
]

Workflow: TypeAlias = "WorkflowFunction[Any, Any] | Graph"


@attrs.frozen
class Loaded:
    """What :func:`setup_engine` registered."""

    workflows: list[str]
    jobs: list[str]
    missing_jobs: list[str]
    queues: list[str] = attrs.field(factory=list)  # declared (durable.Queue) or named by a step, job or workflow


def split_target(target: str) -> tuple[str, str | None]:
    """``("path/or.module", "NAME")`` from ``FILE_OR_MODULE:NAME``; the name is ``None`` when absent."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or "/" in name or os.sep in name:
        return target, None
    return where, name or None


def _is_file(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec or os.path.isfile(spec)


def _on_path(directory: str) -> None:
    if directory not in sys.path:
        sys.path.insert(0, directory)


def load_module(spec: str) -> ModuleType:
    """Import the file or module ``spec``; :class:`CliError` in one line if that fails."""
    if _is_file(spec):
        return _load_file(spec)
    if not spec.replace(".", "").replace("_", "").isalnum() or spec.startswith(".") or ".." in spec:
        raise CliError(f"{spec!r} is neither a Python file nor a module name")
    _on_path(os.getcwd())
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise CliError(f"no module named {spec!r} (nor a file of that name)") from None
        raise CliError(f"error importing {spec}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise CliError(f"error importing {spec}: {type(exc).__name__}: {exc}") from None


def _load_file(spec: str) -> ModuleType:
    path = Path(spec).resolve()
    if not path.exists():
        raise CliError(f"no such file: {spec}")
    if path.is_dir():
        raise CliError(f"{spec} is a directory: name a .py file or a module")
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None:
        file = getattr(existing, "__file__", None)
        if file is not None and Path(file).resolve() == path:
            return existing
        raise CliError(
            f"cannot import {spec} as module {name!r}: a module of that name is already imported "
            f"from {file or 'the standard library'}; rename the file"
        )
    _on_path(str(path.parent))
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise CliError(f"cannot import {spec}: not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if not isinstance(exc, Exception):
            raise
        raise CliError(f"error importing {spec}: {type(exc).__name__}: {exc}") from None
    return module


def name_of(workflow: Workflow) -> str:
    """The name a workflow is registered under."""
    return workflow.name


def graph_of(workflow: Workflow) -> Graph:
    """The graph of a builder or decorator workflow."""
    return workflow if isinstance(workflow, Graph) else workflow.graph


def _branches(graph: Graph) -> list[Graph]:
    out: list[Graph] = []
    for state in graph.walk():
        if isinstance(state, ParallelState):
            out.extend(state.branches)
        elif isinstance(state, MapState):
            out.append(state.iterator)
    return out


def find_workflows(module: ModuleType) -> dict[str, Workflow]:
    """The module's workflows by registered name, in definition order."""
    found: list[Workflow] = []
    for value in vars(module).values():
        if isinstance(value, WorkflowFunction | Graph) and not any(value is f for f in found):
            found.append(value)
    branches = [b for f in found if isinstance(f, Graph) for b in _branches(f)]
    return {name_of(f): f for f in found if not any(f is b for b in branches)}


def _what(value: object) -> str:
    if isinstance(value, WorkflowBuilder):
        return "a workflow builder that was not built (call .build())"
    if isinstance(value, StepFunction):
        return "a @step function"
    if isinstance(value, ModuleType):
        return "a module"
    if isinstance(value, type):
        return f"a class ({value.__name__})"
    if callable(value):
        return f"a {type(value).__name__} not decorated with @workflow"
    return f"a {type(value).__name__}"


def load_target(target: str) -> tuple[ModuleType, Workflow]:
    """The module and the workflow named by ``FILE_OR_MODULE[:NAME]``.

    ``NAME`` is a module attribute or a registered workflow name; without it
    the module must define exactly one workflow.
    """
    spec, name = split_target(target)
    module = load_module(spec)
    workflows = find_workflows(module)
    listing = ", ".join(workflows) or "none"
    if name is None:
        if len(workflows) == 1:
            return module, next(iter(workflows.values()))
        if not workflows:
            raise CliError(f"{spec} defines no workflow (a @workflow function or a built workflow graph)")
        raise CliError(f"{spec} defines several workflows ({listing}): name one, as {spec}:NAME")
    value = getattr(module, name, None)
    if value is None:
        if name in workflows:
            return module, workflows[name]
        raise CliError(f"{spec} has no workflow {name!r} (its workflows: {listing})")
    if not isinstance(value, WorkflowFunction | Graph):
        raise CliError(f"{spec}:{name} is not a workflow but {_what(value)} (its workflows: {listing})")
    return module, value


def _job_function(modules: list[ModuleType], job: str) -> Any:
    for module in modules:
        for attr in (job, job.replace("-", "_").replace(".", "_").replace(" ", "_")):
            value = getattr(module, attr, None)
            if callable(value) and not isinstance(value, WorkflowFunction | Graph | type):
                return value
    return None


def setup_engine(engine: Engine, modules: list[ModuleType], extra: list[Workflow] | None = None) -> Loaded:
    """Register the workflows and jobs of ``modules`` (and ``extra`` workflows) with ``engine``."""
    workflows: dict[str, Workflow] = {}
    for module in modules:
        workflows.update(find_workflows(module))
    for wf in extra or []:
        workflows.setdefault(name_of(wf), wf)
    for module in modules:
        hook = getattr(module, "register_jobs", None)
        if callable(hook):
            try:
                hook(engine)
            except Exception as exc:
                raise CliError(
                    f"{module.__name__}.register_jobs(engine) raised {type(exc).__name__}: {exc}"
                ) from None
    queues: set[str] = set()
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, Queue):
                engine.queues.register(value)
                queues.add(value.name)
            elif isinstance(value, StepFunction) and value.queue is not None:
                queues.add(value.queue)  # an external job's queue, served by a worker of this module
    missing: list[str] = []
    for wf in workflows.values():
        engine.workflows.register(wf)
        own = getattr(wf, "queue", None)
        if own:
            queues.add(own)
        graph = wf if isinstance(wf, Graph) else wf.graph
        queues.update(s.queue for s in graph.walk() if isinstance(s, TaskState) and s.queue)
        if not isinstance(wf, Graph):
            continue
        for state in wf.walk():
            if not isinstance(state, TaskState) or state.fn is not None or state.job in engine.jobs:
                continue
            fn = _job_function(modules, state.job)
            if fn is not None:
                engine.jobs.register(state.job, fn)
            elif state.job not in missing:
                missing.append(state.job)
    queues.update(engine.jobs.queues())
    return Loaded(workflows=sorted(workflows), jobs=engine.jobs.names(), missing_jobs=missing, queues=sorted(queues))
