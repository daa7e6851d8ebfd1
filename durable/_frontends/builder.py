"""The state-machine builder: ``workflow("name").task(...).choice(...)...build()``.

The builder only assembles and validates a :class:`~durable.Graph`; the
engine's interpreter runs it. A state given neither ``next`` nor ``end`` falls
through to the next declared state, and the last such state ends the workflow.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, final

import attrs

from .._graph.states import (
    Catch,
    ChildState,
    ChoiceState,
    Graph,
    MapState,
    OnError,
    ParallelState,
    PassState,
    SignalState,
    State,
    TaskState,
    WaitState,
    When,
)
from .._graph.validate import validate_graph
from .._model.retry import Retry
from ..errors import GraphError
from .._model.ids import check_signal_name, check_workflow_name

if TYPE_CHECKING:
    from .._graph.context import Context
    from .._engine.run import Definition

__all__ = ["WorkflowBuilder", "callable_name"]

_NO_DEFAULT: Any = object()  # wait_for_signal(default=...) not given: a time-out fails the state


def callable_name(fn: Callable[..., Any]) -> str:
    """A name for ``fn`` that is the same in every process: ``module.qualname``, never a repr.

    Partials are named after the function they wrap; callable objects after their class.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    target: Any = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', None) or '?'}.{target.__qualname__}"


def _catch_list(catch: Iterable[Catch] | Catch | None, workflow: str, state: str) -> tuple[Catch, ...]:
    if catch is None:
        return ()
    items = (catch,) if isinstance(catch, Catch) else tuple(catch)
    for item in items:
        if not isinstance(item, Catch):
            raise TypeError(f"state {state!r} of workflow {workflow!r}: catch takes Catch(errors=[...], next=...) "
                            f"values, got {item!r}")
    return items


def _job_name(job: str | Callable[..., Any]) -> tuple[str, Callable[..., Any] | None]:
    if isinstance(job, str):
        return job, None
    if callable(job):
        return callable_name(job), job
    raise TypeError(f"task job must be a registered job name or a callable, got {job!r}")


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")


def _child(workflow: object, builder: str, state: str) -> tuple[str, Definition | None]:
    """(name, definition) of a task's ``workflow=``: a registered name (looked up when the state runs),
    a built graph, or a ``@workflow`` function."""
    if isinstance(workflow, str):
        try:
            return check_workflow_name(workflow), None
        except ValueError as exc:
            raise GraphError(f"workflow=: {exc}", workflow=builder, step=state) from None
    if isinstance(workflow, Graph):
        from .._engine.interpreter import GraphDefinition

        return workflow.name, GraphDefinition(workflow)
    definition = getattr(workflow, "__durable_definition__", None)
    if definition is None:
        raise TypeError(f"task {state!r} of workflow {builder!r}: workflow= takes a registered workflow name, "
                        f"a built graph or a @workflow function, got {workflow!r}")
    return str(definition.name), definition


@final
class WorkflowBuilder:
    """Assembles a workflow graph state by state; :meth:`build` validates it.

    Every method returns the builder, so calls chain as in the TypeScript original.

    .. versionadded:: 0.1.0
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a workflow name must be a non-empty str, got {name!r}")
        try:
            check_workflow_name(name)
        except ValueError as exc:
            raise GraphError(str(exc), workflow=name[:40]) from None
        self._name = name
        self._states: list[State] = []
        self._timeout: float | None = None
        self._default_retry: Retry | None = None

    def _add(self, state: State) -> WorkflowBuilder:
        if not isinstance(state.name, str) or not state.name:
            raise GraphError(f"a state name must be a non-empty str, got {state.name!r}", workflow=self._name)
        self._states.append(state)
        return self

    def task(
        self,
        name: str,
        *,
        job: str | Callable[..., Any] | None = None,
        workflow: Any = None,
        input: Callable[[Context], Any] | None = None,
        output: Callable[[Any, Context], Any] | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        next: str | None = None,
        end: bool = False,
        catch: Sequence[Catch] = (),
        queue: str | None = None,
    ) -> WorkflowBuilder:
        """Add a task running ``job`` (a name registered with ``engine.jobs``, or a callable), or a child ``workflow``.

        Args:
            name: the state's name, unique in this workflow.
            job: the job to run; it is called with the task's input.
            workflow: instead of a job, a workflow to run as a child instance
                of its own (a :class:`~durable.ChildState`): a built graph, a
                ``@workflow`` function, or a registered workflow name (looked
                up in ``engine.workflows`` when the state runs). The task's
                input is the child's one argument (a builder child's input, a
                ``@workflow`` child's single positional argument); the child's
                output is the state's. Its id is ``{parent id}/{name}#{n}``, so
                a replay finds the same child. A failed, timed-out or
                cancelled child fails the state with
                :class:`~durable.ChildWorkflowFailed`. Exactly one of ``job``
                and ``workflow``; a child takes no ``retry`` or ``timeout``
                (it has its own; its deadline is bounded by the parent's).
            input: ``input(ctx)`` computes the job's input (default: ``ctx.input``).
            output: ``output(result, ctx)`` turns the job's result into the step's output
                (for a child, applied to the child's output each time the state runs or replays).
            retry: this task's retry policy, merged field by field over ``default_retry``.
            timeout: seconds allowed for each attempt.
            next: the state to go to afterwards.
            end: end the workflow after this task.
            catch: :class:`~durable.Catch` fallbacks, tried in order once the
                task has failed after its retries; the first that matches
                sends the workflow to its ``next``, with the error in ``ctx.error``.
            queue: run the job as an external job: a worker serving this queue
                (``durable worker --queue NAME``) runs it, with this task's
                retry and timeout, and the workflow unloads until its result
                is stored. The worker finds a job name in its own
                ``engine.jobs``, a callable by its module and name. (A job
                registered with ``engine.jobs.register(..., queue=)`` goes to
                its queue without this.)
        """
        if (job is None) == (workflow is None):
            raise GraphError("a task takes job= or workflow=, exactly one", workflow=self._name, step=name)
        if workflow is not None:
            if retry is not None or timeout is not None or queue is not None:
                raise GraphError("a child workflow task takes no retry, timeout or queue: the child has its own",
                                 workflow=self._name, step=name)
            child_name, definition = _child(workflow, self._name, name)
            return self._add(ChildState(name=name, workflow=child_name, definition=definition, input=input,
                                        output=output, next=next, end=end,
                                        catch=_catch_list(catch, self._name, name)))
        assert job is not None
        job_name, fn = _job_name(job)
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"task {name!r}: retry must be a Retry, got {retry!r}")
        if timeout is not None and timeout <= 0:
            raise GraphError(f"timeout must be > 0, got {timeout!r}", workflow=self._name, step=name)
        if queue is not None:
            try:
                check_workflow_name(queue)
            except ValueError as exc:
                raise GraphError(f"queue: {exc}", workflow=self._name, step=name) from None
        return self._add(
            TaskState(
                name=name, job=job_name, fn=fn, input=input, output=output, queue=queue,
                retry=retry, timeout=timeout, next=next, end=end, catch=_catch_list(catch, self._name, name),
            )
        )

    def choice(self, name: str, *, choices: Sequence[When], default: str | None = None) -> WorkflowBuilder:
        """Add a choice: the first :class:`When` whose condition holds picks the next state.

        With no match and no ``default``, the instance fails with
        :class:`~durable.errors.NoChoiceMatched`.
        """
        rules = tuple(choices)
        for rule in rules:
            if not isinstance(rule, When):
                raise TypeError(f"choice {name!r}: choices must be When(condition, next), got {rule!r}")
        return self._add(ChoiceState(name=name, choices=rules, default=default))

    def parallel(
        self,
        name: str,
        *,
        branches: Iterable[Graph],
        on_error: OnError = "fail-fast",
        next: str | None = None,
        end: bool = False,
        catch: Sequence[Catch] = (),
    ) -> WorkflowBuilder:
        """Add a parallel state running each branch (built with ``workflow.branch(name)``) at once.

        Its output is a dict keyed by branch name. ``on_error="fail-fast"``
        cancels the other branches on the first failure; ``"wait-all"`` lets
        every branch finish, then fails with every branch's error
        (:class:`~durable.ParallelFailed`). ``catch`` as for :meth:`task`.
        """
        if on_error not in ("fail-fast", "wait-all"):
            raise GraphError(f"on_error must be 'fail-fast' or 'wait-all', got {on_error!r}", workflow=self._name, step=name)
        graphs = tuple(branches)
        for b in graphs:
            if not isinstance(b, Graph):
                raise TypeError(f"parallel {name!r}: branches must be built graphs, got {b!r}")
        return self._add(ParallelState(name=name, branches=graphs, on_error=on_error, next=next, end=end,
                                       catch=_catch_list(catch, self._name, name)))

    def map(
        self,
        name: str,
        *,
        iterator: Graph,
        items: Callable[[Context], Iterable[Any]] | None = None,
        max_concurrency: int = 0,
        on_error: OnError = "fail-fast",
        next: str | None = None,
        end: bool = False,
        catch: Sequence[Catch] = (),
    ) -> WorkflowBuilder:
        """Add a map state: run ``iterator`` once per item, at most ``max_concurrency`` at once.

        As Step Functions' ``Map`` state. Its output is the list of the
        iterator's outputs, in item order.

        Args:
            name: the state's name.
            iterator: the graph each item runs (built with ``workflow.branch(name)``);
                its ``ctx.input`` is the item, its ``ctx.steps`` start with the
                outputs finished before the map.
            items: ``items(ctx)`` gives the items (default: ``ctx.input``, which
                must then be a list). Computed from ``ctx`` on every replay:
                it must give as many items each time.
            max_concurrency: items running at once at most; ``0`` (default)
                means no limit, as Step Functions' ``MaxConcurrency``.
            on_error: ``"fail-fast"`` cancels the running items on the first
                failure; ``"wait-all"`` runs every item, then fails with
                :class:`~durable.errors.MapFailed` (each failed item's error by index).
            next, end: where to go afterwards.
            catch: :class:`~durable.Catch` fallbacks, as for :meth:`task`.
        """
        if on_error not in ("fail-fast", "wait-all"):
            raise GraphError(f"on_error must be 'fail-fast' or 'wait-all', got {on_error!r}", workflow=self._name, step=name)
        if not isinstance(iterator, Graph):
            raise TypeError(f"map {name!r}: iterator must be a built graph (workflow.branch(...)...build()), "
                            f"got {iterator!r}")
        if items is not None and not callable(items):
            raise TypeError(f"map {name!r}: items must be a function of ctx, got {items!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 0:
            raise GraphError(f"max_concurrency must be an int >= 0 (0: no limit), got {max_concurrency!r}",
                             workflow=self._name, step=name)
        return self._add(MapState(name=name, iterator=iterator, items=items, max_concurrency=max_concurrency,
                                  on_error=on_error, next=next, end=end, catch=_catch_list(catch, self._name, name)))

    def pass_(
        self,
        name: str,
        *,
        transform: Callable[[Context], Any] | None = None,
        result: Any = None,
        next: str | None = None,
        end: bool = False,
    ) -> WorkflowBuilder:
        """Add a pass state whose output is ``transform(ctx)``, or the static ``result``."""
        if transform is not None and result is not None:
            raise GraphError("pass state takes transform or result, not both", workflow=self._name, step=name)
        return self._add(PassState(name=name, transform=transform, result=result, next=next, end=end))

    def wait(
        self,
        name: str,
        *,
        seconds: float | None = None,
        until: Callable[[Context], datetime] | None = None,
        next: str | None = None,
        end: bool = False,
    ) -> WorkflowBuilder:
        """Add a wait state: a durable sleep of ``seconds``, or until the time ``until(ctx)`` gives.

        The wake-up time is checkpointed when the wait starts: a process that
        restarts after it goes on at once, one that restarts before it waits
        only the rest. A wait at the workflow's top level longer than the
        engine's ``suspend_after`` unloads the instance until then (as
        :func:`durable.sleep` does); in a parallel branch or a map item it
        waits in memory. The state's output is ``None``; its step is of type
        ``sleep``.

        Args:
            name: the state's name.
            seconds: how long to wait, ``>= 0``.
            until: ``until(ctx)`` gives the wake-up time, an aware ``datetime``
                (at once if it has passed); computed once, when the wait first starts.
            next, end: where to go afterwards.

        Exactly one of ``seconds`` and ``until``.
        """
        if (seconds is None) == (until is None):
            raise GraphError("a wait takes seconds= or until=, exactly one", workflow=self._name, step=name)
        if seconds is not None and not _seconds(seconds):
            raise GraphError(f"a wait takes a finite number of seconds >= 0, got {seconds!r}",
                             workflow=self._name, step=name)
        if until is not None and not callable(until):
            raise TypeError(f"wait {name!r} of workflow {self._name!r}: until must be a function of ctx "
                            f"giving an aware datetime, got {until!r}")
        return self._add(WaitState(name=name, seconds=float(seconds) if seconds is not None else None,
                                   until=until, next=next, end=end))

    def wait_for_signal(
        self,
        name: str,
        *,
        signal: str | None = None,
        timeout: float | None = None,
        default: Any = _NO_DEFAULT,
        next: str | None = None,
        end: bool = False,
        catch: Sequence[Catch] = (),
    ) -> WorkflowBuilder:
        """Add a signal state: wait for a signal sent with ``engine.workflows.signal(id, signal, payload)``.

        The payload is the state's output (``ctx.steps[name]``). Signals are
        queued durably when sent, before or during the wait, and each is
        taken once. A wait at the workflow's top level unloads the instance
        until the signal comes or the wait times out.

        Args:
            name: the state's name.
            signal: the signal's name (default: the state's name).
            timeout: seconds to wait, counted from when the wait first started
                (across restarts); ``None`` waits for ever.
            default: the output when the wait times out; without it a time-out
                fails the state with :class:`~durable.SignalTimeout`.
            next, end: where to go afterwards.
            catch: :class:`~durable.Catch` fallbacks, as for :meth:`task`
                (``Catch(["SignalTimeout"], next=...)`` takes a time-out).
        """
        sig = name if signal is None else signal
        try:
            check_signal_name(sig)
        except ValueError as exc:
            raise GraphError(str(exc), workflow=self._name, step=name if isinstance(name, str) else None) from None
        if timeout is not None and not _seconds(timeout):
            raise GraphError(f"a signal's timeout takes a finite number of seconds >= 0 or None, got {timeout!r}",
                             workflow=self._name, step=name)
        has_default = default is not _NO_DEFAULT
        return self._add(SignalState(
            name=name, signal=sig, timeout=float(timeout) if timeout is not None else None,
            default=default if has_default else None, has_default=has_default, next=next, end=end,
            catch=_catch_list(catch, self._name, name)))

    def end(self, name: str) -> WorkflowBuilder:
        """Shorthand for a pass state that ends the workflow."""
        return self.pass_(name, end=True)

    def default_retry(self, retry: Retry) -> WorkflowBuilder:
        """The retry policy every task inherits; a task's own ``retry`` overrides it field by field."""
        if not isinstance(retry, Retry):
            raise TypeError(f"default_retry takes a Retry, got {retry!r}")
        self._default_retry = retry
        return self

    def timeout(self, seconds: float) -> WorkflowBuilder:
        """Time allowed for the whole workflow; past it the instance ends ``timed_out``."""
        if seconds <= 0:
            raise GraphError(f"timeout must be > 0, got {seconds!r}", workflow=self._name)
        self._timeout = float(seconds)
        return self

    def build(self) -> Graph:
        """Resolve fall-through transitions and validate; raises :class:`GraphError`."""
        states: list[State] = []
        for i, s in enumerate(self._states):
            if not isinstance(s, ChoiceState) and s.next is None and not s.end:
                if i + 1 < len(self._states):
                    s = attrs.evolve(s, next=self._states[i + 1].name)
                else:
                    s = attrs.evolve(s, end=True)
            states.append(s)
        graph = Graph(self._name, tuple(states), timeout=self._timeout, default_retry=self._default_retry)
        validate_graph(graph)
        return graph
