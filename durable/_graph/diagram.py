"""Render a :class:`~durable.Graph` as Mermaid or Graphviz DOT text.

Node ids are generated (``n0``, ``n1``, ...) so that any state name, with
dashes, spaces or quotes, gives a diagram the viewers accept; the state's name
is the node's label. A parallel is a subgraph (cluster) of its branches; a
map a subgraph of its iterator, titled with its concurrency bound, whose
nodes are numbered under the map's own id (``n3_0``, ``n3_1``...) so the
numbering of every other node is the same as without the map. Catch edges
are dashed and labelled with the errors they catch.

Node shapes by kind, Mermaid / DOT: task ``[box]`` / box, choice ``{rhombus}``
/ diamond, pass ``([stadium])`` / ellipse, wait ``{{hexagon}}`` / hexagon
(``⏳ name`` and how long), signal ``>flag]`` / cds (``✉ signal NAME``),
child workflow ``[[subroutine]]`` / box3d (``child: NAME``).
"""

from __future__ import annotations

from collections.abc import Iterator

from .states import (
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
from .validate import catches_of

__all__ = ["duration_text", "to_dot", "to_mermaid"]

_DOT_SHAPES = {"choice": "diamond", "pass": "ellipse", "wait": "hexagon", "signal": "cds", "workflow": "box3d"}


class _Ids:
    def __init__(self, prefix: str = "n") -> None:
        self._n = 0
        self._prefix = prefix

    def new(self) -> str:
        self._n += 1
        return f"{self._prefix}{self._n - 1}"


def _map_title(state: MapState) -> str:
    if state.label:
        return state.label
    bound = f"at most {state.max_concurrency} at once" if state.max_concurrency else "no limit"
    return f"{state.name} (map, {bound})"


def _mermaid_label(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("\n", " ") + '"'


def duration_text(seconds: float) -> str:
    """``1h 30m``, ``2d``, ``45s``, ``0.5s``: a number of seconds for a diagram."""
    if seconds < 60:
        return f"{seconds:g}s"
    parts: list[str] = []
    rest = round(seconds)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return " ".join(parts)


def _wait_text(state: WaitState) -> str:
    head = f"⏳ {state.label or state.name}"
    if state.label:
        return head
    if state.seconds is not None:
        return f"{head}\nwait {duration_text(state.seconds)}"
    if state.until is not None:
        fn = getattr(state.until, "__name__", "")
        return f"{head}\nwait until {fn}()" if fn.isidentifier() else f"{head}\nwait until a time"
    return head


def _signal_text(state: SignalState) -> str:
    head = state.label or state.name
    text = f"signal {state.signal}" if head in (state.signal, f"signal:{state.signal}") else (
        f"{head}\nsignal {state.signal}")
    if state.timeout is not None:
        text += f"\ntimeout {duration_text(state.timeout)}"
    return f"✉ {text}"


def _child_text(state: ChildState) -> str:
    head = state.label or state.name
    if head in (state.workflow, f"workflow:{state.workflow}"):
        return f"child: {state.workflow}"
    return f"{head}\n(child: {state.workflow})"


def _node_text(state: State) -> str:
    if isinstance(state, TaskState):
        text = state.label or (f"{state.name}\n({state.job})" if state.job != state.name else state.name)
        return f"{text}\n⇢ queue {state.queue}" if state.queue is not None else text
    if isinstance(state, WaitState):
        return _wait_text(state)
    if isinstance(state, SignalState):
        return _signal_text(state)
    if isinstance(state, ChildState):
        return _child_text(state)
    return state.label or state.name


def _edges(state: State) -> Iterator[tuple[str, str | None, bool]]:
    """(target, label, dashed) of each edge out of ``state``; catch edges are the dashed ones."""
    if isinstance(state, ChoiceState):
        for i, rule in enumerate(state.choices):
            yield rule.next, rule.label or f"#{i + 1}", False
        if state.default is not None:
            yield state.default, "default", False
        return
    if state.next is not None:
        yield state.next, None, False
    for catcher in catches_of(state):
        yield catcher.next, catcher.label, True


def _mermaid_body(graph: Graph, ids: _Ids, indent: str) -> tuple[list[str], str, list[str]]:
    """Lines for ``graph``; returns (lines, id of the start node, ids of end nodes)."""
    lines: list[str] = []
    node = {s.name: ids.new() for s in graph.states}
    ends: list[str] = []
    for s in graph.states:
        nid = node[s.name]
        label = _mermaid_label(_node_text(s))
        if isinstance(s, ParallelState):
            lines.append(f"{indent}subgraph {nid} [{_mermaid_label(s.label or s.name + ' (parallel)')}]")
            lines.append(f"{indent}  direction TB")
            for branch in s.branches:
                bid = ids.new()
                lines.append(f"{indent}  subgraph {bid} [{_mermaid_label(branch.name)}]")
                inner, _, _ = _mermaid_body(branch, ids, indent + "    ")
                lines.extend(inner)
                lines.append(f"{indent}  end")
            lines.append(f"{indent}end")
        elif isinstance(s, MapState):
            lines.append(f"{indent}subgraph {nid} [{_mermaid_label(_map_title(s))}]")
            lines.append(f"{indent}  direction TB")
            inner, _, _ = _mermaid_body(s.iterator, _Ids(f"{nid}_"), indent + "  ")
            lines.extend(inner)
            lines.append(f"{indent}end")
        elif isinstance(s, ChoiceState):
            lines.append(f"{indent}{nid}{{{label}}}")
        elif isinstance(s, PassState):
            lines.append(f"{indent}{nid}([{label}])")
        elif isinstance(s, WaitState):
            lines.append(f"{indent}{nid}{{{{{label}}}}}")
        elif isinstance(s, SignalState):
            lines.append(f"{indent}{nid}>{label}]")
        elif isinstance(s, ChildState):
            lines.append(f"{indent}{nid}[[{label}]]")
        else:
            lines.append(f"{indent}{nid}[{label}]")
    for s in graph.states:
        for target, edge_label, dashed in _edges(s):
            line = "-.->" if dashed else "-->"
            arrow = f"{line}|{_mermaid_label(edge_label)}|" if edge_label else line
            lines.append(f"{indent}{node[s.name]} {arrow} {node[target]}")
        if s.end:
            ends.append(node[s.name])
    return lines, node[graph.states[0].name] if graph.states else "", ends


def to_mermaid(graph: Graph) -> str:
    """A Mermaid ``flowchart TD`` of ``graph`` with start and end markers."""
    ids = _Ids()
    body, start, ends = _mermaid_body(graph, ids, "    ")
    lines = ["flowchart TD", "    start((start))", "    stop((end))"]
    lines.extend(body)
    if start:
        lines.append(f"    start --> {start}")
    lines.extend(f"    {e} --> stop" for e in ends)
    return "\n".join(lines) + "\n"


def _dot_label(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_body(graph: Graph, ids: _Ids, indent: str) -> tuple[list[str], dict[str, str], list[str]]:
    lines: list[str] = []
    node: dict[str, str] = {}
    ends: list[str] = []
    for s in graph.states:
        nid = ids.new()
        node[s.name] = nid
        if isinstance(s, ParallelState):
            lines.append(f"{indent}subgraph cluster_{nid} {{ label={_dot_label(s.name + ' (parallel)')};")
            lines.append(f"{indent}  {nid} [shape=point];")
            for branch in s.branches:
                lines.append(f"{indent}  subgraph cluster_{ids.new()} {{ label={_dot_label(branch.name)};")
                inner, inner_nodes, _ = _dot_body(branch, ids, indent + "    ")
                lines.extend(inner)
                if branch.states:
                    lines.append(f"{indent}    {nid} -> {inner_nodes[branch.states[0].name]} [style=dashed];")
                lines.append(f"{indent}  }}")
            lines.append(f"{indent}}}")
            continue
        if isinstance(s, MapState):
            lines.append(f"{indent}subgraph cluster_{nid} {{ label={_dot_label(_map_title(s))};")
            lines.append(f"{indent}  {nid} [shape=point];")
            inner, inner_nodes, _ = _dot_body(s.iterator, _Ids(f"{nid}_"), indent + "  ")
            lines.extend(inner)
            if s.iterator.states:
                lines.append(f"{indent}  {nid} -> {inner_nodes[s.iterator.states[0].name]} [style=dashed];")
            lines.append(f"{indent}}}")
            continue
        shape = _DOT_SHAPES.get(s.type, "box")
        lines.append(f"{indent}{nid} [label={_dot_label(_node_text(s))}, shape={shape}];")
    for s in graph.states:
        for target, edge_label, dashed in _edges(s):
            attrs = ([f"label={_dot_label(edge_label)}"] if edge_label else []) + (["style=dashed"] if dashed else [])
            attr = f" [{', '.join(attrs)}]" if attrs else ""
            lines.append(f"{indent}{node[s.name]} -> {node[target]}{attr};")
        if s.end:
            ends.append(node[s.name])
    return lines, node, ends


def to_dot(graph: Graph) -> str:
    """A Graphviz ``digraph`` of ``graph``."""
    ids = _Ids()
    body, node, ends = _dot_body(graph, ids, "  ")
    lines = [f"digraph {_dot_label(graph.name)} {{", "  start [shape=circle];", "  stop [shape=doublecircle, label=end];"]
    lines.extend(body)
    if graph.states:
        lines.append(f"  start -> {node[graph.states[0].name]};")
    lines.extend(f"  {e} -> stop;" for e in ends)
    lines.append("}")
    return "\n".join(lines) + "\n"
