"""The decorator front-end: ``@step``, ``step(fn, ...)``, ``@workflow`` on a function.

A ``@step`` call inside a running workflow goes through the engine's
checkpointed step call (:func:`~durable._engine.steps.run_step`) under the key
``scope/name#occurrence``; outside any engine it runs as a plain function with
its retries. A ``@workflow`` function compiles its source into a
:class:`~durable.Graph` at decoration (for diagrams, progress and validation)
and, when the engine runs it, is simply awaited: replay is the coroutine
running again from the top, each finished step returning its checkpoint.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, final, overload

from .active import Active, active, in_workflow, plain_default_retry
from .arguments import ArgumentChecks
from .._graph.context import step_info_var
from .._graph.validate import has_loop
from .._engine.children import child_step
from .builder import callable_name
from .._graph.states import STEP_TYPES, Graph, TaskState
from .plain import run_plain
from .._model.retry import Retry, effective_retry
from .._engine.run import Run, Scope
from .._engine.steps import Prepare, StepSpec, run_step
from .._engine.external import job_step, target_ref
from .._engine.jobs import as_async_call, is_async_callable
from .._model.ids import check_workflow_name

__all__ = ["StepFunction", "WorkflowFunction", "decorate_workflow", "step"]

P = ParamSpec("P")
R = TypeVar("R")


def _short(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _check_options(retry: Retry | None, timeout: float | None, what: str) -> None:
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"{what}: retry must be a Retry, got {retry!r}")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError(f"{what}: timeout must be a number of seconds > 0, got {timeout!r}")


async def _call_step(sf: StepFunction[Any, Any], fn: Callable[..., Any], args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
    current = active.get()  # read when awaited: a parallel() branch has its own scope
    if current is None:
        policy = (sf.retry or Retry()).merged_over(plain_default_retry.get())
        return await run_plain(sf.name, fn, args, kwargs, policy, sf.timeout)
    if step_info_var.get() is not None:
        # Awaited by a running step: a plain call, part of that step (its retries
        # and timeout apply; its result is the calling step's business, not a checkpoint).
        policy = (sf.retry or Retry()).merged_over(current.default_retry)
        return await run_plain(sf.name, fn, args, kwargs, policy, sf.timeout, nested=True)
    run = current.run
    record = getattr(run.definition, "record", None)
    if record is not None:
        record(sf.name)
    spec = sf.spec(current.default_retry)
    if sf.queue is not None:
        return await job_step(run, current.scope, spec, sf.queue, target_ref(sf), args, kwargs,
                              {"args": args, "kwargs": kwargs} if kwargs else args)
    if sf.calls_async(fn):
        return await run_step(run, current.scope, spec, job=(fn, args, kwargs))
    return await run_step(run, current.scope, spec, _prepare_sync(fn, args, kwargs))


def _prepare_sync(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Prepare:
    """How a sync ``@step`` runs: in a worker thread. (Not a closure of ``_call_step``: its
    variables would become cells, allocated on every call, for the async steps too.)"""

    def prepare() -> tuple[Any, Callable[[], Awaitable[Any]]]:
        return {"args": args, "kwargs": kwargs} if kwargs else args, as_async_call(fn, *args, **kwargs)

    return prepare


@final
class StepFunction(Generic[P, R]):
    """A function decorated with ``@step``: calling it gives an awaitable step.

    Inside a workflow run the step is checkpointed; elsewhere it runs as a
    plain function with its retries. The undecorated function is ``__wrapped__``.

    .. versionadded:: 0.1.0
    """

    #: how an external job's worker knows a looked-up name is a step (and runs ``__wrapped__``)
    __durable_step__ = True

    def __init__(self, fn: Callable[P, Any], *, name: str | None, retry: Retry | None,
                 timeout: float | None, queue: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"@step needs a function, got {fn!r}")
        _check_options(retry, timeout, f"@step {_short(fn)}")
        self.queue = check_workflow_name(queue) if queue is not None else None
        if queue is not None:
            target_ref(fn)  # TypeError now, not when a workflow reaches it: a worker must find it by name
        functools.update_wrapper(self, fn)
        self.__wrapped__ = fn
        self.name = name or _short(fn)
        self.retry = retry
        self.timeout = timeout
        self.function = callable_name(fn)
        self._checked: tuple[Callable[..., Any], bool] = (fn, is_async_callable(fn))
        # The StepSpec under each workflow default_retry seen, by identity (a
        # workflow's default_retry is one object for all its runs).
        self._specs: dict[int, tuple[Retry | None, StepSpec]] = {}

    def calls_async(self, fn: Callable[..., Any]) -> bool:
        """Whether calling ``fn`` (``__wrapped__``, which ``replace_step`` swaps) gives a coroutine."""
        checked = self._checked
        if checked[0] is not fn:
            checked = self._checked = (fn, is_async_callable(fn))
        return checked[1]

    def spec(self, default_retry: Retry | None) -> StepSpec:
        """How the engine runs this step in a workflow whose ``default_retry`` is given."""
        found = self._specs.get(id(default_retry))
        if found is not None and found[0] is default_retry:
            spec = found[1]
            if (spec.name is self.name and spec.function is self.function and spec.timeout is self.timeout
                    and spec.retry_given is self.retry):
                return spec  # (name, retry, timeout are plain attributes: one may have been set since)
        spec = StepSpec(name=self.name, function=self.function, timeout=self.timeout,
                        retry=effective_retry(self.retry, default_retry), retry_given=self.retry)
        if len(self._specs) >= 64:
            self._specs.clear()  # many distinct policies (made per run): do not grow without bound
        self._specs[id(default_retry)] = (default_retry, spec)
        return spec

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        return _call_step(self, self.__wrapped__, args, kwargs)  # the function as called (replace_step)

    def __await__(self) -> Generator[Any, None, R]:
        """``await step(fn)``: run ``fn()`` with no arguments as a step."""
        call: Coroutine[Any, Any, R] = _call_step(self, self.__wrapped__, (), {})
        return call.__await__()

    def __repr__(self) -> str:
        return f"<durable step {self.name!r} of {self.function}>"


class StepDecorator(Protocol):
    """What ``@step(name=..., retry=..., timeout=...)`` gives: it keeps the signature of what it decorates."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> StepFunction[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> StepFunction[P, R]: ...


@overload
def step(fn: Callable[P, Awaitable[R]], /) -> StepFunction[P, R]: ...
@overload
def step(fn: Callable[P, R], /) -> StepFunction[P, R]: ...
@overload
def step(*, name: str | None = None, retry: Retry | None = None,
         timeout: float | None = None, queue: str | None = None) -> StepDecorator: ...
@overload
def step(fn_or_name: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]: ...


def step(*args: Any, name: str | None = None, retry: Retry | None = None, timeout: float | None = None,
         queue: str | None = None, **kwargs: Any) -> Any:
    """Declare a step, or run any callable as one.

    - ``@step`` / ``@step(name=..., retry=Retry(...), timeout=...)`` on an async
      or sync function (a sync one runs in a worker thread);
    - ``@step(queue="gpu")``: an external job. The workflow does not run it:
      it queues it for a worker serving that queue (``durable worker --queue
      gpu``, in any process on the store), which runs it with its retries and
      timeout, and the workflow unloads until its result is checkpointed. The
      function must be defined at the top level of a module the worker loads.
    - ``await step(fn, *args, **kwargs)`` runs ``fn`` as a checkpointed step
      named after it; ``await step("name", fn, *args, **kwargs)`` names it.

    .. versionadded:: 0.1.0
    """
    if not args:
        if kwargs:
            raise TypeError(f"step() got unexpected options {sorted(kwargs)}; it takes name, retry, timeout, queue")

        def decorate(fn: Callable[P, Any]) -> StepFunction[P, Any]:
            return StepFunction(fn, name=name, retry=retry, timeout=timeout, queue=queue)

        return decorate
    first, rest = args[0], args[1:]
    if isinstance(first, str):
        if not rest or not callable(rest[0]):
            raise TypeError(f"step({first!r}, fn, ...) needs a callable after the name")
        fn = rest[0]
        return StepFunction(fn, name=first, retry=retry, timeout=timeout, queue=queue)(*rest[1:], **kwargs)
    if not callable(first):
        raise TypeError(f"step() takes a function (or a name and a function), got {first!r}")
    sf = first if isinstance(first, StepFunction) else StepFunction(first, name=name, retry=retry, timeout=timeout,
                                                                    queue=queue)
    if not rest and not kwargs:
        return sf  # @step, or `await step(fn)` (a StepFunction is awaitable)
    return sf(*rest, **kwargs)


def is_step(obj: object) -> bool:
    """True for ``@step`` functions (the compiler inlines other async helpers)."""
    return isinstance(obj, StepFunction)


@final
class WorkflowFunction(Generic[P, R]):
    """A function decorated with ``@workflow``.

    Awaiting it outside an engine runs it as a plain async function (steps run
    directly, with their retries). Register it with an engine to run it
    durably. ``graph`` is its compiled :class:`~durable.Graph`.

    .. versionadded:: 0.1.0
    """

    #: how the compiler knows an awaited ``@workflow`` call is a child workflow
    __durable_primitive__ = "workflow"

    def __init__(self, fn: Callable[P, Awaitable[R]], *, name: str | None, timeout: float | None,
                 default_retry: Retry | None, queue: str | None = None) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@workflow needs an 'async def' function, got {fn!r}")
        _check_options(default_retry, timeout, f"@workflow {_short(fn)}")
        #: the queue a start goes to unless it names one (``None``: it runs in the engine that starts it)
        self.queue = check_workflow_name(queue) if queue is not None else None
        functools.update_wrapper(self, fn)
        self.__wrapped__ = fn
        self._name = check_workflow_name(name or _short(fn))
        self._timeout = float(timeout) if timeout is not None else None
        self.default_retry = default_retry
        self._signature = inspect.signature(fn)
        params = self._signature.parameters.values()
        # Names of a signature of plain positional parameters without defaults:
        # a call with exactly that many positional arguments needs no bind().
        self._plain_names = tuple(p.name for p in params) if all(
            p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in params
        ) else None
        self._var_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
        # Each annotated parameter's check (and conversion), made at the first
        # start(): an annotation may name a class defined after the function.
        self._arguments: ArgumentChecks | None = None
        self._graph = self._compile()
        self._recorded: list[str] = []
        self._total_steps = 0 if has_loop(self._graph) else sum(
            1 for s in self._graph.walk() if s.type in STEP_TYPES)

    def _compile(self) -> Graph:
        from .compiler.walk import compile_workflow

        graph = compile_workflow(self.__wrapped__, name=self._name, is_step=is_step)
        return Graph(graph.name, graph.states, timeout=self._timeout, default_retry=self.default_retry,
                     source=graph.source)

    # -- the Definition protocol (what the engine runs) ----------------------

    @property
    def __durable_definition__(self) -> WorkflowFunction[P, R]:
        return self

    @property
    def name(self) -> str:
        """The registered name (the function's name unless given)."""
        return self._name

    @property
    def timeout(self) -> float | None:
        """Seconds allowed for a whole instance, or ``None``."""
        return self._timeout

    @property
    def graph(self) -> Graph:
        """The compiled graph; for a function without source, the steps the last run executed."""
        if self._graph.source != "recorded":
            return self._graph
        states = tuple(
            TaskState(name=n, job=n, next=self._recorded[i + 1] if i + 1 < len(self._recorded) else None,
                      end=i + 1 == len(self._recorded))
            for i, n in enumerate(self._recorded)
        )
        return Graph(self._name, states, timeout=self._timeout, default_retry=self.default_retry, source="recorded")

    @property
    def total_steps(self) -> int:
        """Steps, parallels, maps, sleeps, signal waits and child calls in the graph: progress's denominator.

        ``0`` (unknown) when the graph loops: how many times is known only as it runs.
        """
        return self._total_steps

    def make_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """(input, args, kwargs) of a ``start()`` with these arguments: bound to the signature, checked, converted.

        ``TypeError`` naming the workflow (and the parameter) for an
        unexpected or missing argument, or a value that does not fit its
        parameter's annotation (see :class:`ArgumentChecks`).
        """
        checks = self._arguments
        if checks is None:
            checks = self._arguments = ArgumentChecks(self.__wrapped__, self._signature, self._name)
        names = self._plain_names
        if names is not None and not kwargs and len(args) == len(names):
            values = checks.positional(names, args) if checks.any else tuple(args)
            return dict(zip(names, values)), values, {}
        if not self._var_keyword:
            params = self._signature.parameters
            for key in kwargs:
                param = params.get(key)
                if param is None or param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
                    takes = ", ".join(params) or "no arguments"
                    raise TypeError(f"workflow {self._name!r}: unexpected argument {key!r} (it takes {takes})")
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"workflow {self._name!r}: {exc}") from None
        if checks.any and checks.bound(bound):
            return dict(bound.arguments), *checks.resplit(bound, len(args), kwargs)
        return dict(bound.arguments), tuple(args), dict(kwargs)

    async def execute(self, run: Run) -> R:
        token = active.set(Active(run, Scope(), self.default_retry))
        try:
            return await self.__wrapped__(*run.instance.args, **run.instance.kwargs)
        finally:
            active.reset(token)

    def record(self, name: str) -> None:
        """Note a step the current run executed (graphs of functions without source)."""
        if self._graph.source == "recorded" and name not in self._recorded:
            self._recorded.append(name)

    # -- calling it ------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Awaited inside a workflow run: a child workflow (an instance of its own, see
        :mod:`durable._engine.children`); anywhere else: the workflow body as a plain coroutine."""
        return self._call(args, kwargs)

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        current = in_workflow()  # plain code (no engine, or inside a running step): the body, plainly
        if current is None:
            return await self._plain(*args, **kwargs)
        output: R = await child_step(current.run, current.scope, self, args, kwargs)
        return output

    async def _plain(self, *args: Any, **kwargs: Any) -> R:
        token = plain_default_retry.set(self.default_retry)
        try:
            return await self.__wrapped__(*args, **kwargs)
        finally:
            plain_default_retry.reset(token)

    def __repr__(self) -> str:
        return f"<durable workflow {self._name!r}>"


def decorate_workflow(fn: Callable[..., Any], *, name: str | None = None, timeout: float | None = None,
                      default_retry: Retry | None = None, queue: str | None = None) -> WorkflowFunction[Any, Any]:
    """``@workflow`` / ``@workflow(name=..., timeout=..., default_retry=..., queue=...)``."""
    return WorkflowFunction(fn, name=name, timeout=timeout, default_retry=default_retry, queue=queue)
