"""The builder's interpreter: walks a graph's states, running each task as a checkpointed step.

Every state execution takes the next checkpoint key of its scope, so a state
visited twice (a loop through a choice) has two checkpoints, and a resumed
instance re-walks the graph from the start, replaying finished states from
their checkpoints until it reaches the first unfinished one.

A wait state is a durable sleep (:func:`~durable._engine.sleep.sleep_step`), a
signal state a wait for a signal (:func:`~durable._engine.signals.signal_step`), a
child state a child workflow call (:func:`~durable._engine.children.child_step`):
the same cores the decorator's ``durable.sleep``, ``durable.wait_for_signal``
and awaited ``@workflow`` use, each under the state's name, so
``ctx.steps[name]``, the instance's ``step_results[name]`` and the checkpoint
key ``name#n`` all use the state's name.

A task, parallel, map, signal or child state that fails for good is matched against its
``catch`` list; the first :class:`~durable.Catch` that matches sends the walk
to its ``next`` state with the error in ``ctx.error``. A failed state replays
by re-raising its stored exception, so the same catcher is taken on replay.
"""

from __future__ import annotations

import functools
from collections import ChainMap
from collections.abc import Callable, MutableMapping
from datetime import datetime, timedelta
from typing import Any, cast, final

from .._graph.catch import CaughtError
from .._graph.validate import has_loop, same_shape
from .children import child_step
from .._graph.context import Context
from .._graph.states import (
    ChildState,
    ChoiceState,
    Graph,
    MapState,
    ParallelState,
    PassState,
    SignalState,
    State,
    TaskState,
    WaitState,
)
from .jobs import as_async_call, inline_call, job_overrides
from .fanout import run_map, run_parallel
from .._model.records import StepStatus
from .._model.retry import Retry, effective_retry
from .run import Definition, Run, Scope
from .signals import signal_step
from .sleep import sleep_step
from .external import job_step, target_ref
from .steps import StepSpec, run_step
from ..errors import ChildWorkflowFailed, DurableError, NoChoiceMatched, NonDeterminismError, WorkflowNotFound

__all__ = ["GraphDefinition", "catch_target", "run_graph"]


@final
class GraphDefinition:
    """Adapts a builder :class:`Graph` to what the engine runs."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def __eq__(self, other: object) -> bool:
        """The same workflow: graphs of the same shape (one builder function called twice gives two)."""
        return isinstance(other, GraphDefinition) and same_shape(self.graph, other.graph)

    def __hash__(self) -> int:
        return hash(self.graph.name)

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def timeout(self) -> float | None:
        return self.graph.timeout

    @functools.cached_property
    def required_jobs(self) -> frozenset[str]:
        """The job names its tasks run from ``engine.jobs`` (tasks given a callable need none)."""
        return frozenset(s.job for s in self.graph.walk() if isinstance(s, TaskState) and s.fn is None)

    @functools.cached_property
    def total_steps(self) -> int:
        """The graph's states (``0``, unknown, when it loops)."""
        return 0 if has_loop(self.graph) else self.graph.total_steps

    def make_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        if kwargs or len(args) > 1:
            raise TypeError(f"workflow {self.name!r} is a builder workflow: start it with one input value")
        return (args[0] if args else None), (), {}

    async def execute(self, run: Run) -> Any:
        return await run_graph(run, self.graph, Scope(), {}, run.instance.input, self.graph.default_retry)


async def run_graph(
    run: Run, graph: Graph, scope: Scope, steps: MutableMapping[str, Any], input: Any, default_retry: Retry | None
) -> Any:
    """Walk ``graph`` from its first state to an end; returns the last state's output."""
    ctx = Context(input, steps, run.snapshot)
    state = graph.state(graph.states[0].name)
    while True:
        run.current_step = state.name
        if isinstance(state, ChoiceState):
            target = await run_step(run, scope, _choice_spec(run, state, ctx))
            state = graph.state(target)
            continue
        try:
            output = await _run_state(run, scope, state, ctx, default_retry)
        except Exception as exc:
            handler = catch_target(run, state, exc)
            if handler is None:
                raise
            ctx.error = CaughtError.of(state.name, exc)
            state = graph.state(handler)
            continue
        steps[state.name] = output
        if state.end or state.next is None:
            return output
        state = graph.state(state.next)


def catch_target(run: Run, state: State, error: BaseException) -> str | None:
    """The ``next`` of the first catcher of ``state`` matching ``error``; ``None`` when none does.

    Never catches what must end the run: a diverged replay, a failed
    checkpoint write (the run is poisoned), or a cancellation, a stop or a
    workflow timeout (the run's scope is cancelled).
    """
    catchers = getattr(state, "catch", ())
    if not catchers or run.fatal is not None or run.cancel_scope.cancel_called:
        return None
    if isinstance(error, NonDeterminismError):
        return None
    for catcher in catchers:
        if catcher.matches(error):
            return str(catcher.next)
    return None


async def _run_state(run: Run, scope: Scope, state: State, ctx: Context, default_retry: Retry | None) -> Any:
    if isinstance(state, TaskState):
        queue = state.queue or run.host.jobs.queue_of(state.job)
        if queue is not None and state.job not in job_overrides.get():
            return await _run_external(run, scope, state, ctx, default_retry, queue)
        return await run_step(run, scope, _task_spec(run, state, ctx, default_retry))
    if isinstance(state, PassState):
        return await run_step(run, scope, _pass_spec(state, ctx))
    if isinstance(state, MapState):
        return await _run_map_state(run, scope, state, ctx, default_retry)
    if isinstance(state, WaitState):
        await sleep_step(run, scope, state.name, _wake_time(run, state, ctx))
        return None
    if isinstance(state, SignalState):
        if state.has_default:
            return await signal_step(run, scope, state.signal, state.timeout, state.default, step_name=state.name)
        return await signal_step(run, scope, state.signal, state.timeout, step_name=state.name)
    if isinstance(state, ChildState):
        return await _run_child_state(run, scope, state, ctx)
    assert isinstance(state, ParallelState)
    return await _run_parallel_state(run, scope, state, ctx, default_retry)


def _wake_time(run: Run, state: WaitState, ctx: Context) -> Callable[[datetime], datetime]:
    """``wake_time(start)`` for :func:`sleep_step`: ``start + seconds``, or ``until(ctx)``."""
    seconds, until = state.seconds, state.until
    if seconds is not None:
        return lambda start: start + timedelta(seconds=seconds)
    if until is not None:
        def wake(start: datetime) -> datetime:
            return until(ctx)

        return wake
    raise run.fail(DurableError, "a wait state needs seconds or until", step=state.name)


async def _run_child_state(run: Run, scope: Scope, state: ChildState, ctx: Context) -> Any:
    # A finished call replays from its checkpoint as child_step would, but
    # without computing the input or looking the child up: a child named by its
    # registered name need not be registered to replay (assert_replays' engine,
    # a resume before the child is registered again).
    ahead = run.checkpoints.get(scope.peek_key(state.name))  # child_step's key
    if ahead is not None and ahead.status in (StepStatus.COMPLETED, StepStatus.FAILED):
        _, _, rec = run.next_checkpoint(scope, state.name, ChildWorkflowFailed)  # returns, or raises its error
        result = rec.output if rec is not None else None
    else:
        spec = state.definition
        if spec is None:
            try:
                definition = run.host.definition(state.workflow)
            except WorkflowNotFound as exc:
                raise run.fail(WorkflowNotFound, f"child workflow of state {state.name!r}: {exc.message}",
                               step=state.name) from None
        elif callable(getattr(spec, "execute", None)):
            # The front-ends put runnable definitions (a graph's, a @workflow's) in child states.
            definition = cast(Definition, spec)
        else:
            raise run.fail(DurableError, f"child state {state.name!r} names {spec!r}, which cannot run as a workflow",
                           step=state.name)
        value = state.input(ctx) if state.input is not None else ctx.input
        result = await child_step(run, scope, definition, (value,), {}, step_name=state.name)
    return state.output(result, ctx) if state.output is not None else result


async def _run_external(run: Run, scope: Scope, state: TaskState, ctx: Context, default_retry: Retry | None,
                        queue: str) -> Any:
    """A task whose job runs on ``queue`` (an external job): by name, or its callable by reference."""
    spec = _task_spec(run, state, ctx, default_retry)
    if state.fn is not None and state.job not in run.host.jobs:
        try:
            target: Any = target_ref(state.fn)
        except TypeError as exc:
            raise run.fail(DurableError, f"task {state.name!r} on queue {queue!r}: {exc}", step=state.name) from None
    else:
        target = state.job
    value = state.input(ctx) if state.input is not None else ctx.input
    return await job_step(run, scope, spec, queue, target, (value,), {}, value)


def _task_spec(run: Run, state: TaskState, ctx: Context, default_retry: Retry | None) -> StepSpec:
    def prepare() -> tuple[Any, Any]:
        job = job_overrides.get().get(state.job) or state.fn or run.host.jobs.get(
            state.job, workflow=run.name, instance_id=run.id, step=state.name)
        value = state.input(ctx) if state.input is not None else ctx.input
        return value, as_async_call(job, value)

    output_fn = state.output
    return StepSpec(
        name=state.name,
        function=state.job,
        prepare=prepare,
        retry=effective_retry(state.retry, default_retry),
        timeout=state.timeout,
        output=(lambda result: output_fn(result, ctx)) if output_fn is not None else None,
        wrap_errors=True,
    )


def _pass_spec(state: PassState, ctx: Context) -> StepSpec:
    def prepare() -> tuple[Any, Any]:
        if state.transform is not None:
            transform = state.transform
            return None, inline_call(lambda: transform(ctx))
        return None, inline_call(lambda: state.result)

    return StepSpec(name=state.name, function=None, prepare=prepare, step_type="pass", durable=False)


def _choice_spec(run: Run, state: ChoiceState, ctx: Context) -> StepSpec:
    def choose() -> str:
        for rule in state.choices:
            if rule.condition is not None and rule.condition(ctx):
                return rule.next
        if state.default is not None:
            return state.default
        raise run.fail(NoChoiceMatched, "no condition of the choice matched and it has no default", step=state.name)

    return StepSpec(name=state.name, function=None, prepare=lambda: (None, inline_call(choose)),
                    step_type="choice", durable=False)


async def _run_parallel_state(
    run: Run, scope: Scope, state: ParallelState, ctx: Context, default_retry: Retry | None
) -> dict[str, Any]:
    # Each branch sees the steps finished before the parallel plus its own; after
    # it, the parallel's output (keyed by branch) is what the workflow sees, the
    # same on a first run and on replay.
    def make(branch: Graph) -> Any:
        own = dict(ctx.steps)

        async def go(branch_scope: Scope) -> Any:
            return await run_graph(run, branch, branch_scope, own, ctx.input, default_retry)

        return go

    output: dict[str, Any] = await run_parallel(
        run, scope, name=state.name, labels=[b.name for b in state.branches],
        branches=[make(b) for b in state.branches], on_error=state.on_error, keyed=True,
    )
    return output


async def _run_map_state(
    run: Run, scope: Scope, state: MapState, ctx: Context, default_retry: Retry | None
) -> list[Any]:
    # Each item's walk sees the steps finished before the map plus its own (a
    # ChainMap: no copy per item), and the item as its ctx.input.
    source = state.items(ctx) if state.items is not None else ctx.input
    if isinstance(source, (str, bytes, dict)) or not hasattr(source, "__iter__"):
        raise TypeError(f"map state {state.name!r} of workflow {run.name!r}: items must be a list "
                        f"(from items(ctx), or ctx.input), got {type(source).__name__}")
    values = list(source)
    iterator = state.iterator
    before = cast(MutableMapping[str, Any], ctx.steps)  # only read: each item writes to its own first map

    async def item(i: int, item_scope: Scope) -> Any:
        return await run_graph(run, iterator, item_scope, ChainMap({}, before), values[i], default_retry)

    return await run_map(
        run, scope, name=state.name, count=len(values), item=item, concurrency=state.max_concurrency,
        on_error=state.on_error, steps_per_item=iterator.total_steps,
    )
