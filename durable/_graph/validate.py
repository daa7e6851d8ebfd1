"""Graph validation: a malformed graph is a :class:`~durable.GraphError` naming the workflow and state.

Both front-ends validate what they build (the builder in ``build()``, the
compiler at decoration), so the engine only ever runs well-formed graphs.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from .states import ChoiceState, Catch, Graph, MapState, ParallelState, PassState, SignalState, State, WaitState
from ..errors import GraphError

__all__ = ["catches_of", "has_loop", "same_shape", "validate_graph"]


def _targets(state: State) -> list[tuple[str, str]]:
    """(label, target) pairs of the transitions out of ``state``, catch edges included."""
    if isinstance(state, ChoiceState):
        out = [(f"choice {i}", w.next) for i, w in enumerate(state.choices)]
        if state.default is not None:
            out.append(("default", state.default))
        return out
    out = [("next", state.next)] if state.next is not None else []
    out.extend((f"catch {i}", c.next) for i, c in enumerate(catches_of(state)))
    return out


def catches_of(state: State) -> tuple[Catch, ...]:
    """The catchers of ``state`` (``()`` for the states that take none: choice, pass, wait)."""
    if isinstance(state, (ChoiceState, PassState, WaitState)):
        return ()
    return state.catch


def _seconds_ok(value: object) -> bool:
    """Whether ``value`` is a number of seconds >= 0 (not a bool, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")


def validate_graph(graph: Graph, *, workflow: str | None = None) -> None:
    """Raise :class:`GraphError` naming the workflow and state if ``graph`` is malformed.

    Checks: duplicate state names, ``next`` together with ``end``, a transition
    (or a catch) to an unknown state, a parallel with no branches, a map with a
    negative ``max_concurrency``, a wait's ``seconds`` or a signal's
    ``timeout`` that is not a number >= 0, a choice with no way out, states unreachable
    from the start (catch edges count), and no reachable end. Loops through a
    choice or a catch are allowed. Branch and iterator graphs are checked the
    same way.
    """
    wf = workflow or graph.name
    if not graph.states:
        raise GraphError("workflow has no states", workflow=wf)
    seen: set[str] = set()
    for s in graph.states:
        if s.name in seen:
            raise GraphError(f"duplicate state name {s.name!r}", workflow=wf, step=s.name)
        seen.add(s.name)
    for s in graph.states:
        if not isinstance(s, ChoiceState) and s.next is not None and s.end:
            raise GraphError("state has both next and end", workflow=wf, step=s.name)
        if isinstance(s, ChoiceState) and not s.choices and s.default is None:
            raise GraphError("choice has no choices and no default: no way out", workflow=wf, step=s.name)
        if isinstance(s, ParallelState):
            if not s.branches:
                raise GraphError("parallel state has no branches", workflow=wf, step=s.name)
            names = [b.name for b in s.branches]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise GraphError(f"parallel has duplicate branch names {dupes}", workflow=wf, step=s.name)
            for b in s.branches:
                validate_graph(b, workflow=f"{wf}/{s.name}/{b.name}")
        if isinstance(s, MapState):
            limit = s.max_concurrency
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                raise GraphError(f"max_concurrency must be an int >= 0 (0: no limit), got {limit!r}",
                                 workflow=wf, step=s.name)
            validate_graph(s.iterator, workflow=f"{wf}/{s.name}/{s.iterator.name}")
        if isinstance(s, WaitState) and s.seconds is not None and not _seconds_ok(s.seconds):
            raise GraphError(f"a wait takes a finite number of seconds >= 0, got {s.seconds!r}",
                             workflow=wf, step=s.name)
        if isinstance(s, SignalState) and s.timeout is not None and not _seconds_ok(s.timeout):
            raise GraphError(f"a signal's timeout takes a finite number of seconds >= 0 or None, got {s.timeout!r}",
                             workflow=wf, step=s.name)
        for label, target in _targets(s):
            if target in seen:
                continue
            if label.startswith("catch"):
                raise GraphError(f"catch target {target!r} is not a state of the workflow", workflow=wf, step=s.name)
            raise GraphError(f"transition to unknown state {target!r}", workflow=wf, step=s.name)
        if not isinstance(s, ChoiceState) and s.next is None and not s.end:
            raise GraphError("state has neither next nor end", workflow=wf, step=s.name)
    reachable: list[str] = []
    todo = [graph.states[0].name]
    while todo:
        name = todo.pop()
        if name in reachable:
            continue
        reachable.append(name)
        todo.extend(t for _, t in _targets(graph.state(name)))
    for s in graph.states:
        if s.name not in reachable:
            raise GraphError("state is unreachable from the start", workflow=wf, step=s.name)
    if not any(graph.state(n).end for n in reachable):
        raise GraphError("no end is reachable: every path loops forever", workflow=wf, step=graph.states[0].name)


def has_loop(graph: Graph) -> bool:
    """Whether a run of ``graph`` can visit a state twice: a loop through a choice or a catch
    (a compiled ``for``/``while``), in the graph or in one of its branches or iterators.

    Such a workflow's step count is not known in advance: its progress says so.
    """
    for g in _graphs(graph):
        state = {s.name: 0 for s in g.states}  # 0 unseen, 1 on the current path, 2 done
        for root in g.states:
            if state[root.name]:
                continue
            stack = [(root.name, iter([t for _, t in _targets(root)]))]
            state[root.name] = 1
            while stack:
                name, targets = stack[-1]
                nxt = next(targets, None)
                if nxt is None:
                    state[name] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    return True
                elif state.get(nxt) == 0:
                    state[nxt] = 1
                    stack.append((nxt, iter([t for _, t in _targets(g.state(nxt))])))
    return False


def _graphs(graph: Graph) -> list[Graph]:
    out = [graph]
    for s in graph.states:
        if isinstance(s, ParallelState):
            for b in s.branches:
                out.extend(_graphs(b))
        elif isinstance(s, MapState):
            out.extend(_graphs(s.iterator))
    return out


def same_shape(a: Graph, b: Graph) -> bool:
    """Whether two graphs are the same workflow: the same states, transitions, options and code.

    Callables compare by their code (a lambda built twice by the same line is
    the same), a child state's workflow by its name; so one builder function
    called twice gives graphs of the same shape, and another graph does not.
    """
    return a is b or _shape(a) == _shape(b)


def _shape(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool, type(None), type)):  # a class (an error to catch) by identity
        return value
    if isinstance(value, Graph):
        return ("graph", value.name, value.timeout, value.default_retry, value.source,
                tuple(_shape(s) for s in value.states))
    if isinstance(value, (tuple, list)):
        return tuple(_shape(v) for v in value)
    if attrs.has(type(value)):  # a state, a When, a Catch, a Retry: field by field
        return (type(value).__name__,) + tuple(_shape(getattr(value, f.name)) for f in attrs.fields(type(value)))
    code = getattr(value, "__code__", None)
    if code is not None:
        return ("code", code)
    if hasattr(value, "graph") and hasattr(value, "name"):  # a workflow spec (a child state's)
        return ("workflow", value.name)
    if isinstance(value, functools.partial):
        return ("partial", _shape(value.func), _shape(value.args), tuple(sorted(
            (k, _shape(v)) for k, v in value.keywords.items())))
    return value  # any other object (a callable instance...): by its own equality, so never wrongly "the same"
