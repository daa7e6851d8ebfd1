"""The graph a compilation builds: a table of mutable states wired by hooks, frozen into a :class:`Graph`.

A mutable state is a dict (kind, name, base, next, end, plus rules/default for
choices, branches/label for parallels). A hook is a dangling exit of a state:
(state, slot) with slot "next", "default" or a choice rule's index. Compiling a
block takes the hooks that lead into it and returns the hooks that leave it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

import attrs

from ..._graph.states import (
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
    When,
)
from ..._graph.validate import validate_graph
from ...errors import GraphError


__all__ = ["STEP_KINDS", "Hook", "States", "build_graph", "clip", "connect"]

_NAME_LIMIT = 60  # choice names are clipped to this many characters
STEP_KINDS = ("task", "parallel", "map", "wait", "signal", "workflow")  # kinds of mutable states that are steps

Hook: TypeAlias = tuple[dict[str, Any], str | int]
"""A dangling exit of a mutable state: (state, slot), slot "next", "default" or a choice rule's index."""


def connect(hooks: list[Hook], target: str | None) -> None:
    """Point every hook at ``target`` (``None`` re-opens them)."""
    for state, slot in hooks:
        if slot == "next" or slot == "default":
            state[slot] = target
        else:
            state["rules"][slot][1] = target


def clip(text: str) -> str:
    """``text`` clipped to the state name limit."""
    return text if len(text) <= _NAME_LIMIT else text[: _NAME_LIMIT - 3] + "..."


class States:
    """The mutable states of one graph (the workflow, or one parallel branch), in creation order."""

    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, base: str, hooks: list[Hook], **fields: Any) -> dict[str, Any]:
        """A new state named ``base`` (``base#n`` for the n-th), entered from ``hooks``."""
        self.counts[base] += 1
        n = self.counts[base]
        state = {"kind": kind, "name": base if n == 1 else f"{base}#{n}", "base": base,
                 "next": None, "end": False, **fields}
        self.states[state["name"]] = state
        connect(hooks, state["name"])
        return state

    def since(self, mark: int) -> list[dict[str, Any]]:
        """States created after the first ``mark`` ones."""
        return list(self.states.values())[mark:]

    def truncate(self, mark: int, hooks: list[Hook], pending: Iterable[list[Hook]]) -> None:
        """Forget the states created after ``mark``, re-open ``hooks``, drop exits into them from ``pending``
        (the open exits of the frame being compiled: ``Frame.exits()``)."""
        gone = self.since(mark)
        for state in gone:
            del self.states[state["name"]]
            self.counts[state["base"]] -= 1
        connect(hooks, None)
        ids = {id(s) for s in gone}
        for exits in pending:
            exits[:] = [h for h in exits if id(h[0]) not in ids]

    def end(self, hooks: list[Hook], base: str) -> None:
        """End the paths of ``hooks``: a state's own ``end``, else a shared pass state ``base``."""
        need: list[Hook] = []
        for state, slot in hooks:
            if slot == "next" and state["kind"] != "choice" and state["kind"] != "start":
                state["end"] = True
            else:  # a choice's rule or default, or the start: needs a state to go to
                need.append((state, slot))
        if need:
            self.add("pass", base, need, end=True)


def build_graph(name: str, build: Callable[[States, list[Hook]], list[Hook]]) -> Graph:
    """Build a graph from a start hook; paths left open fall off the end and end."""
    g = States()
    start: dict[str, Any] = {"kind": "start", "name": "", "next": None}
    g.end(build(g, [(start, "next")]), "return")  # a graph with no state gets one pass "return"
    return _freeze(g, name, start["next"])


def _frozen(s: dict[str, Any]) -> State:
    """The IR state of the mutable state ``s``; an open ``next`` ends the path."""
    label = s.get("label") or (s["base"] if s["name"] != s["base"] else None)
    if s["kind"] == "choice":
        rules = tuple(When(None, target, lbl) for lbl, target in s["rules"] if target is not None)
        return ChoiceState(name=s["name"], choices=rules, default=s["default"], label=label)
    end = s["end"] or s["next"] is None
    common: dict[str, Any] = {"name": s["name"], "next": None if end else s["next"], "end": end, "label": label}
    if s["kind"] == "task":
        return TaskState(job=s["job"], queue=s.get("queue"), **common)
    if s["kind"] == "parallel":
        return ParallelState(branches=s["branches"], **common)
    if s["kind"] == "map":
        return MapState(iterator=s["iterator"], max_concurrency=s["max_concurrency"], on_error=s["on_error"],
                        **common)
    if s["kind"] == "wait":
        return WaitState(seconds=s["seconds"], **common)
    if s["kind"] == "signal":
        return SignalState(signal=s["signal"], timeout=s["timeout"], has_default=s["has_default"],
                           default=s["default"], **common)
    if s["kind"] == "workflow":
        return ChildState(workflow=s["workflow"], definition=s["definition"], **common)
    return PassState(**common)


def _freeze(g: States, name: str, entry: str) -> Graph:
    """The validated IR graph of ``g``, ``entry`` first.

    If an approximation left the graph invalid (say an unreachable state),
    fall back to its steps in source order, one after the other, so that
    decoration never fails on a workflow Python accepts.
    """
    order = [g.states[entry], *(s for s in g.states.values() if s["name"] != entry)]
    graph = Graph(name, tuple(_frozen(s) for s in order), source="source")
    try:
        validate_graph(graph)
    except GraphError:
        steps: list[TaskState | ParallelState | MapState | PassState | WaitState | SignalState | ChildState] = [
            s for s in graph.states if isinstance(s, (TaskState, ParallelState, MapState, WaitState, SignalState,
                                                      ChildState))] or [PassState(name="return")]
        linear: list[State] = [
            attrs.evolve(s, next=None if i + 1 == len(steps) else steps[i + 1].name, end=i + 1 == len(steps))
            for i, s in enumerate(steps)]
        graph = Graph(name, tuple(linear), source="source")
    return graph
