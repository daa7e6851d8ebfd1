"""A workflow's diagram with each state marked by the status of an instance's checkpoints.

The diagrams are those of :meth:`Graph.to_mermaid` / :meth:`Graph.to_dot`,
with styling appended: Mermaid ``classDef`` lines and a ``class`` line per
status, DOT fill colours. A state is marked with the status of the latest
checkpoint of its step name (a decorator workflow's ``validate#2``, its
second call site, counts as ``validate``); states with no checkpoint stay
unmarked.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

from .._graph.states import Graph, ParallelState, State
from .._model.records import InstanceStatus, StepResult, StepStatus, WorkflowInstance
from ._render import ordered_steps

__all__ = ["COLOURS", "dot_node_ids", "marked_dot", "marked_mermaid", "mermaid_node_ids", "state_statuses"]

#: fill and stroke colour per status
COLOURS = {
    "completed": ("#d1fae5", "#059669"),
    "failed": ("#fee2e2", "#dc2626"),
    "running": ("#fef3c7", "#d97706"),
    "pending": ("#f3f4f6", "#9ca3af"),
    "skipped": ("#f3f4f6", "#9ca3af"),
}


def mermaid_node_ids(graph: Graph) -> list[tuple[State, str]]:
    """(state, node id) pairs, numbered as :func:`durable._diagram.to_mermaid` numbers them."""
    counter = itertools.count()
    out: list[tuple[State, str]] = []

    def body(g: Graph) -> None:
        ids = {s.name: f"n{next(counter)}" for s in g.states}  # a level's states first
        for s in g.states:
            out.append((s, ids[s.name]))
            if isinstance(s, ParallelState):
                for branch in s.branches:
                    next(counter)  # the branch's subgraph
                    body(branch)

    body(graph)
    return out


def dot_node_ids(graph: Graph) -> list[tuple[State, str]]:
    """(state, node id) pairs, numbered as :func:`durable._diagram.to_dot` numbers them."""
    counter = itertools.count()
    out: list[tuple[State, str]] = []

    def body(g: Graph) -> None:
        for s in g.states:
            out.append((s, f"n{next(counter)}"))
            if isinstance(s, ParallelState):
                for branch in s.branches:
                    next(counter)  # the branch's cluster
                    body(branch)

    body(graph)
    return out


def state_statuses(steps: Mapping[str, StepResult]) -> dict[str, str]:
    """Step name -> status of its latest checkpoint (a retry that waits counts as running)."""
    out: dict[str, str] = {}
    for step in ordered_steps(steps):
        out[step.step_name] = str(StepStatus(step.status))
    return out


def _marks(pairs: list[tuple[State, str]], steps: Mapping[str, StepResult]) -> Iterator[tuple[str, str]]:
    statuses = state_statuses(steps)
    for state, node in pairs:
        status = statuses.get(state.name)
        if status is None and "#" in state.name:
            status = statuses.get(state.name.rsplit("#", 1)[0])
        if status is not None:
            yield node, status


def marked_mermaid(graph: Graph, inst: WorkflowInstance, steps: Mapping[str, StepResult]) -> str:
    """The Mermaid diagram of ``graph`` with each state's status marked by a class."""
    lines = graph.to_mermaid().rstrip("\n").split("\n")
    by_status: dict[str, list[str]] = {}
    for node, status in _marks(mermaid_node_ids(graph), steps):
        by_status.setdefault(status, []).append(node)
    if inst.status == InstanceStatus.COMPLETED:
        by_status.setdefault("completed", []).extend(["start", "stop"])
    elif inst.started_at is not None:
        by_status.setdefault("completed", []).append("start")
    for status, (fill, stroke) in COLOURS.items():
        if status in by_status:
            lines.append(f"    classDef {status} fill:{fill},stroke:{stroke}")
    for status, nodes in by_status.items():
        lines.append(f"    class {','.join(nodes)} {status}")
    return "\n".join(lines) + "\n"


def marked_dot(graph: Graph, inst: WorkflowInstance, steps: Mapping[str, StepResult]) -> str:
    """The DOT diagram of ``graph`` with each state filled in its status's colour."""
    lines = graph.to_dot().rstrip("\n").split("\n")
    closing = lines.pop()  # "}"
    marks = list(_marks(dot_node_ids(graph), steps))
    if inst.status == InstanceStatus.COMPLETED:
        marks += [("start", "completed"), ("stop", "completed")]
    for node, status in marks:
        fill, stroke = COLOURS[status]
        lines.append(f'  {node} [style=filled, fillcolor="{fill}", color="{stroke}"];')
    lines.append(closing)
    return "\n".join(lines) + "\n"
