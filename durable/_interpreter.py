"""The builder's interpreter: walks a graph's states, running each task as a checkpointed step.

Every state execution takes the next checkpoint key of its scope, so a state
visited twice (a loop through a choice) has two checkpoints, and a resumed
instance re-walks the graph from the start, replaying finished states from
their checkpoints until it reaches the first unfinished one.

A task, parallel or map state that fails for good is matched against its
``catch`` list; the first :class:`~durable.Catch` that matches sends the walk
to its ``next`` state with the error in ``ctx.error``. A failed state replays
by re-raising its stored exception, so the same catcher is taken on replay.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import MutableMapping
from typing import Any, cast, final

from ._catch import CaughtError, catch_target
from ._context import Context
from ._ir import ChoiceState, Graph, MapState, ParallelState, PassState, State, TaskState
from ._jobs import as_async_call, inline_call
from ._parallel import run_map, run_parallel
from ._retry import Retry, effective_retry
from ._run import Run, Scope
from ._steps import StepSpec, run_step
from .errors import NoChoiceMatched

__all__ = ["GraphDefinition", "run_graph"]


@final
class GraphDefinition:
    """Adapts a builder :class:`Graph` to what the engine runs."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def timeout(self) -> float | None:
        return self.graph.timeout

    @property
    def total_steps(self) -> int:
        return self.graph.total_steps

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


async def _run_state(run: Run, scope: Scope, state: State, ctx: Context, default_retry: Retry | None) -> Any:
    if isinstance(state, TaskState):
        return await run_step(run, scope, _task_spec(run, state, ctx, default_retry))
    if isinstance(state, PassState):
        return await run_step(run, scope, _pass_spec(state, ctx))
    if isinstance(state, MapState):
        return await _run_map_state(run, scope, state, ctx, default_retry)
    assert isinstance(state, ParallelState)
    return await _run_parallel_state(run, scope, state, ctx, default_retry)


def _task_spec(run: Run, state: TaskState, ctx: Context, default_retry: Retry | None) -> StepSpec:
    def prepare() -> tuple[Any, Any]:
        job = state.fn or run.engine.jobs.get(state.job, workflow=run.name, instance_id=run.id, step=state.name)
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
