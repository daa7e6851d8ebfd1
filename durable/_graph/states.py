"""The graph IR: frozen states (task, choice, parallel, map, pass, wait, signal, child workflow) and the graph.

Both front-ends produce a :class:`Graph`: the builder directly, the decorator by
compiling the workflow's source. The builder's graph is what the engine's
interpreter walks; a decorator workflow's graph serves inspection, diagrams,
progress totals and validation (``validate.py``). :class:`WorkflowSpec` is
what either front-end's workflow is before an engine runs it. This module is
pure: no I/O, no engine.

States and graphs nest (a parallel's branches and a map's iterator are
graphs, a child state names a workflow spec), so they are one module: a
recursive type whose annotations all resolve (``typing.get_type_hints``).
The diagrams are rendered by ``diagram.py``, which ``Graph.to_mermaid()`` and
``to_dot()`` import when called. (Over 400 lines for that reason: the eight
state classes and the graph are one recursive type, each with its docs.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Literal, Protocol, TypeAlias, final

import attrs

from .._model.retry import Retry
from .catch import error_matches
from .context import Context


__all__ = [
    "STEP_TYPES",
    "Catch",
    "ChildState",
    "ChoiceState",
    "Graph",
    "MapState",
    "ParallelState",
    "PassState",
    "State",
    "SignalState",
    "TaskState",
    "WaitState",
    "When",
    "WorkflowSpec",
]

OnError: TypeAlias = Literal["fail-fast", "wait-all"]
GraphSource: TypeAlias = Literal["builder", "source", "recorded"]

#: the state types that are steps of a decorator workflow's run (choices and
#: pass states are plain code there): a decorator workflow's progress total
STEP_TYPES = frozenset({"task", "parallel", "map", "wait", "signal", "workflow"})


@final
@attrs.frozen
class When:
    """One rule of a choice state: go to ``next`` when ``condition(ctx)`` is true.

    Args:
        condition: a function of the workflow :class:`~durable.Context`; ``None``
            in a graph compiled from source, where ``label`` holds the test.
        next: the state to go to.
        label: text shown on the diagram's edge (defaults to the rule's position).

    .. versionadded:: 0.1.0
    """

    condition: Callable[[Context], Any] | None
    next: str
    label: str | None = None


def _error_patterns(value: Any) -> tuple[type[BaseException] | str, ...]:
    if isinstance(value, (str, type)):
        value = [value]
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"Catch(errors=...) takes a list of exception types or names, got {value!r}") from None
    if not items:
        raise ValueError("Catch(errors=...) needs at least one exception type or name ('*' for any error)")
    for item in items:
        if not ((isinstance(item, str) and item) or (isinstance(item, type) and issubclass(item, BaseException))):
            raise TypeError(f"Catch(errors=...) takes exception types or type names, got {item!r}")
    return items


def _check_catch_next(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise TypeError(f"Catch(next=...) must name a state, got {value!r}")


@final
@attrs.frozen
class Catch:
    """A fallback of a task, parallel or map state: go to ``next`` when it fails with one of ``errors``.

    A state's catchers are tried in order once the state has failed for good
    (a task after its retries are exhausted); the first that matches wins and
    the workflow goes on at ``next``, with the error in ``ctx.error``. With no
    match the failure goes on up, as without a catch.

    Args:
        errors: exception types (matched with ``isinstance``), type names
            (``"ValueError"``, matched against the error's class and its base
            classes, as Step Functions' ``ErrorEquals``), or ``"*"`` /
            ``"States.ALL"`` for any error. A builder task's error is
            :class:`~durable.errors.StepFailed` wrapping the job's own error:
            both are matched, so ``errors=[ValueError]`` catches a job that
            raised ``ValueError``.
        next: the state to go to.

    .. versionadded:: 0.1.0
    """

    errors: tuple[type[BaseException] | str, ...] = attrs.field(converter=_error_patterns)
    next: str = attrs.field(validator=_check_catch_next)

    def matches(self, error: BaseException) -> bool:
        """Whether this catcher takes ``error``."""
        return error_matches(error, self.errors)

    @property
    def label(self) -> str:
        """How the diagrams label this catcher's edge: ``catch ValueError, KeyError``."""
        names = [e if isinstance(e, str) else e.__name__ for e in self.errors]
        return "catch " + ", ".join("*" if n == "States.ALL" else n for n in names)


def _catches(value: Iterable[Catch] | Catch | None) -> tuple[Catch, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, Catch) else tuple(value)
    for item in items:
        if not isinstance(item, Catch):
            raise TypeError(f"catch=[...] takes Catch(errors=[...], next=...) values, got {item!r}")
    return items


@attrs.frozen(kw_only=True)
class TaskState:
    """Run a job (builder) or a step call site (decorator).

    .. versionadded:: 0.1.0
    """

    name: str
    job: str
    fn: Callable[..., Any] | None = attrs.field(default=None, eq=False, repr=False)
    input: Callable[[Context], Any] | None = None
    output: Callable[[Any, Context], Any] | None = None
    retry: Retry | None = None
    timeout: float | None = None
    next: str | None = None
    end: bool = False
    label: str | None = None
    catch: tuple[Catch, ...] = attrs.field(default=(), converter=_catches)
    queue: str | None = None  #: run as an external job by a worker of this queue (``None``: in the workflow's process)

    type: str = attrs.field(default="task", init=False)


@attrs.frozen(kw_only=True)
class ChoiceState:
    """Go to the ``next`` of the first :class:`When` whose condition holds, else ``default``.

    .. versionadded:: 0.1.0
    """

    name: str
    choices: tuple[When, ...] = ()
    default: str | None = None
    label: str | None = None

    type: str = attrs.field(default="choice", init=False)
    end: bool = attrs.field(default=False, init=False)
    next: None = attrs.field(default=None, init=False)


@attrs.frozen(kw_only=True)
class ParallelState:
    """Run every branch concurrently; output is keyed by branch name.

    .. versionadded:: 0.1.0
    """

    name: str
    branches: tuple[Graph, ...]
    on_error: OnError = "fail-fast"
    next: str | None = None
    end: bool = False
    label: str | None = None
    catch: tuple[Catch, ...] = attrs.field(default=(), converter=_catches)

    type: str = attrs.field(default="parallel", init=False)


@attrs.frozen(kw_only=True)
class MapState:
    """Run the ``iterator`` graph once per item, at most ``max_concurrency`` at once; output in item order.

    Attributes:
        items: ``items(ctx)`` gives the list to map over (default: ``ctx.input``);
            ``None`` in a graph compiled from source.
        iterator: the graph each item runs, with the item as its ``ctx.input``.
        max_concurrency: items running at once at most; ``0`` means no limit
            (as Step Functions' ``MaxConcurrency``).
        on_error: ``"fail-fast"`` cancels the running items on the first
            failure; ``"wait-all"`` runs every item, then fails with
            :class:`~durable.errors.MapFailed` if any failed.

    .. versionadded:: 0.1.0
    """

    name: str
    iterator: Graph
    items: Callable[[Context], Iterable[Any]] | None = None
    max_concurrency: int = 0
    on_error: OnError = "fail-fast"
    next: str | None = None
    end: bool = False
    label: str | None = None
    catch: tuple[Catch, ...] = attrs.field(default=(), converter=_catches)

    type: str = attrs.field(default="map", init=False)


@attrs.frozen(kw_only=True)
class PassState:
    """Produce ``transform(ctx)``, or the static ``result``, or nothing.

    .. versionadded:: 0.1.0
    """

    name: str
    transform: Callable[[Context], Any] | None = None
    result: Any = None
    next: str | None = None
    end: bool = False
    label: str | None = None

    type: str = attrs.field(default="pass", init=False)


@attrs.frozen(kw_only=True)
class WaitState:
    """Wait durably: ``seconds`` after the state starts, or until the time ``until(ctx)`` gives.

    The wake-up time is checkpointed when the wait starts, so a restart waits
    only the rest (or goes on at once if it has passed). A long wait at the
    workflow's top level unloads the instance until then, as
    :func:`durable.sleep` does. The state's output is ``None``.

    Attributes:
        seconds: how long to wait (``>= 0``).
        until: ``until(ctx)`` gives the wake-up time, an aware ``datetime``;
            computed once, when the wait first starts.
        label: the text drawn for the state (a graph compiled from source
            sets it when the duration is not a constant).

    A builder wait has exactly one of ``seconds`` and ``until``; a wait
    compiled from source may have neither (its duration is not a constant).

    .. versionadded:: 0.1.0
    """

    name: str
    seconds: float | None = None
    until: Callable[[Context], datetime] | None = None
    next: str | None = None
    end: bool = False
    label: str | None = None

    type: str = attrs.field(default="wait", init=False)


@attrs.frozen(kw_only=True)
class SignalState:
    """Wait for signal ``signal`` sent with ``engine.workflows.signal(id, signal, payload)``; output: the payload.

    Attributes:
        signal: the signal's name.
        timeout: seconds to wait, counted from when the wait first started;
            ``None`` waits for ever.
        default: the output when the wait times out, if ``has_default``;
            otherwise a time-out fails the state with
            :class:`~durable.errors.SignalTimeout` (which ``catch`` can take).
        has_default: whether ``default`` is given.

    .. versionadded:: 0.1.0
    """

    name: str
    signal: str
    timeout: float | None = None
    default: Any = None
    has_default: bool = False
    next: str | None = None
    end: bool = False
    label: str | None = None
    catch: tuple[Catch, ...] = attrs.field(default=(), converter=_catches)

    type: str = attrs.field(default="signal", init=False)


@attrs.frozen(kw_only=True)
class ChildState:
    """Run another workflow as a child instance of its own; output: the child's output.

    Attributes:
        workflow: the child workflow's name.
        definition: what to run (a builder graph's or a ``@workflow``
            function's definition); ``None`` when the child is named by its
            registered name, looked up in ``engine.workflows`` when the state
            runs, or in a graph compiled from source.
        input: ``input(ctx)`` gives the child's input (default ``ctx.input``),
            passed as its one argument.
        output: ``output(result, ctx)`` turns the child's output into the
            state's output.

    A child that fails (or times out, or is cancelled) fails the state with
    :class:`~durable.errors.ChildWorkflowFailed`, which ``catch`` can take.

    .. versionadded:: 0.1.0
    """

    name: str
    workflow: str
    definition: WorkflowSpec | None = attrs.field(default=None, eq=False, repr=False)
    input: Callable[[Context], Any] | None = None
    output: Callable[[Any, Context], Any] | None = None
    next: str | None = None
    end: bool = False
    label: str | None = None
    catch: tuple[Catch, ...] = attrs.field(default=(), converter=_catches)

    type: str = attrs.field(default="workflow", init=False)


State: TypeAlias = (TaskState | ChoiceState | ParallelState | MapState | PassState | WaitState | SignalState
                    | ChildState)


@final
@attrs.frozen
class Graph:
    """A validated workflow graph.

    Attributes:
        name: the workflow's (or branch's) name.
        states: the states, in declaration order; the first is the start.
        timeout: the workflow's timeout in seconds, if any.
        default_retry: the retry policy steps inherit, field by field.
        source: ``"builder"``, ``"source"`` (compiled from the function's
            source) or ``"recorded"`` (no source: recorded as runs unfold).

    .. versionadded:: 0.1.0
    """

    name: str
    states: tuple[State, ...]
    timeout: float | None = None
    default_retry: Retry | None = None
    source: GraphSource = "builder"
    _by_name: dict[str, State] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {s.name: s for s in self.states})

    @property
    def start(self) -> str | None:
        """Name of the first state (``None`` for an empty recorded graph)."""
        return self.states[0].name if self.states else None

    def state(self, name: str) -> State:
        """The state called ``name``; ``KeyError`` if there is none."""
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def walk(self) -> Iterator[State]:
        """Every state, including those inside parallel branches and map iterators, depth first."""
        for s in self.states:
            yield s
            if isinstance(s, ParallelState):
                for branch in s.branches:
                    yield from branch.walk()
            elif isinstance(s, MapState):
                yield from s.iterator.walk()

    @property
    def total_steps(self) -> int:
        """Number of states, counting those inside branches and map iterators (once): progress's denominator.

        A map adds its iterator's states once per further item when it starts.
        """
        return sum(1 for _ in self.walk())

    def to_mermaid(self) -> str:
        """A Mermaid ``flowchart`` of the graph, ready to paste into any Mermaid viewer."""
        from .diagram import to_mermaid

        return to_mermaid(self)

    def to_dot(self) -> str:
        """A Graphviz DOT rendering of the graph."""
        from .diagram import to_dot

        return to_dot(self)


class WorkflowSpec(Protocol):
    """What a workflow is, whichever front-end made it: its name, graph, time limit and call shape.

    The engine's ``Definition`` extends it with ``execute(run)``; a
    :class:`ChildState` names the spec of the workflow it starts.
    """

    @property
    def name(self) -> str: ...

    @property
    def graph(self) -> Graph: ...

    @property
    def timeout(self) -> float | None: ...

    @property
    def total_steps(self) -> int:
        """How many step completions make a full run (progress's denominator)."""
        ...

    def make_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        """(input, args, kwargs) to store for a ``start()`` call with these arguments."""
        ...
