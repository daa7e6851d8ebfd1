"""Mermaid and Graphviz DOT rendering of graphs (durable/_graph/diagram.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from durable import Catch, Graph, PassState, When, workflow

ID = re.compile(r"n\d+")

# -- a tiny structural parser for the Mermaid the renderer emits ----------------

_M_LABEL = r'"([^"]*)"'  # mermaid strings cannot contain a raw double quote
_M_NODE = re.compile(
    r"(?P<id>\w+)(?:"
    r"\(\((?P<circle>[^()]*)\)\)"
    r"|\(\[" + _M_LABEL.replace("(", "(?P<stadium>", 1) + r"\]\)"
    r"|\[" + _M_LABEL.replace("(", "(?P<box>", 1) + r"\]"
    r"|\{" + _M_LABEL.replace("(", "(?P<diamond>", 1) + r"\}"
    r"|\{\{" + _M_LABEL.replace("(", "(?P<hexagon>", 1) + r"\}\}"
    r"|>" + _M_LABEL.replace("(", "(?P<flag>", 1) + r"\]"
    r"|\[\[" + _M_LABEL.replace("(", "(?P<subroutine>", 1) + r"\]\]"
    r")"
)
_M_EDGE = re.compile(r"(?P<src>\w+) (?:-->|-\.->)(?:\|" + _M_LABEL.replace("(", "(?P<label>", 1)
                     + r"\|)? (?P<dst>\w+)")
_M_SUB = re.compile(r"subgraph (?P<id>\w+) \[" + _M_LABEL.replace("(", "(?P<label>", 1) + r"\]")


def _unescape_mermaid(text: str) -> str:
    return text.replace("#quot;", '"')


@dataclass
class Mermaid:
    """What a flowchart declares: nodes, subgraphs, edges and who contains what."""

    header: str
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (shape, label)
    subgraphs: dict[str, str] = field(default_factory=dict)  # id -> label
    parent: dict[str, str | None] = field(default_factory=dict)  # node/subgraph id -> enclosing subgraph id
    edges: list[tuple[str, str | None, str]] = field(default_factory=list)

    def declared(self) -> set[str]:
        return set(self.nodes) | set(self.subgraphs)

    def ids_labelled(self, label: str) -> list[str]:
        return [i for i, (_, lab) in self.nodes.items() if lab == label] + [
            i for i, lab in self.subgraphs.items() if lab == label
        ]

    def id_of(self, label: str) -> str:
        found = self.ids_labelled(label)
        assert len(found) == 1, (label, found)
        return found[0]


def parse_mermaid(text: str) -> Mermaid:
    """Parse the renderer's Mermaid, failing on any line it does not recognise."""
    assert text.endswith("\n")
    lines = text.rstrip("\n").split("\n")
    out = Mermaid(header=lines[0])
    stack: list[str] = []
    for raw in lines[1:]:
        line = raw.strip()
        assert raw.startswith("    "), f"body line not indented: {raw!r}"
        if m := _M_SUB.fullmatch(line):
            sid = m["id"]
            assert sid not in out.declared(), f"id declared twice: {sid}"
            out.subgraphs[sid] = _unescape_mermaid(m["label"])
            out.parent[sid] = stack[-1] if stack else None
            stack.append(sid)
        elif line == "end":
            assert stack, "end without subgraph"
            stack.pop()
        elif line == "direction TB":
            assert stack, "direction outside a subgraph"
        elif m := _M_EDGE.fullmatch(line):
            label = m["label"]
            out.edges.append((m["src"], _unescape_mermaid(label) if label is not None else None, m["dst"]))
        elif m := _M_NODE.fullmatch(line):
            nid = m["id"]
            assert nid not in out.declared(), f"id declared twice: {nid}"
            for shape in ("circle", "stadium", "box", "diamond", "hexagon", "flag", "subroutine"):
                if m[shape] is not None:
                    out.nodes[nid] = (shape, _unescape_mermaid(m[shape]))
            out.parent[nid] = stack[-1] if stack else None
        else:
            raise AssertionError(f"unrecognised mermaid line: {raw!r}")
    assert not stack, f"unclosed subgraphs: {stack}"
    return out


def check_mermaid(text: str) -> Mermaid:
    """Parse and check the invariants every rendering must satisfy."""
    m = parse_mermaid(text)
    assert m.header == "flowchart TD"
    assert m.nodes["start"] == ("circle", "start")
    assert m.nodes["stop"] == ("circle", "end")
    for i in m.declared() - {"start", "stop"}:
        assert ID.fullmatch(i), f"generated id {i!r} is not n<digits>"
    for src, _, dst in m.edges:
        assert src in m.declared(), f"edge from undeclared {src}"
        assert dst in m.declared(), f"edge to undeclared {dst}"
    assert sum(1 for s, _, _ in m.edges if s == "start") <= 1
    return m


# -- the same for DOT --------------------------------------------------------------

_D_LABEL = r'"((?:[^"\\]|\\.)*)"'
_D_NODE = re.compile(r"(?P<id>\w+) \[label=" + _D_LABEL.replace("(", "(?P<label>", 1) + r", shape=(?P<shape>\w+)\];")
_D_POINT = re.compile(r"(?P<id>\w+) \[shape=point\];")
_D_SUB = re.compile(r"subgraph (?P<id>cluster_\w+) \{ label=" + _D_LABEL.replace("(", "(?P<label>", 1) + ";")
_D_EDGE = re.compile(
    r"(?P<src>\w+) -> (?P<dst>\w+)(?: \[(?:label=" + _D_LABEL.replace("(", "(?P<label>", 1)
    + r"(?P<catch>, style=dashed)?|(?P<dashed>style=dashed))\])?;"
)


def _unescape_dot(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], text)


@dataclass
class Dot:
    """What a digraph declares."""

    name: str
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (shape, label)
    clusters: dict[str, str] = field(default_factory=dict)
    parent: dict[str, str | None] = field(default_factory=dict)
    edges: list[tuple[str, str | None, str]] = field(default_factory=list)

    def id_of(self, label: str) -> str:
        found = [i for i, (_, lab) in self.nodes.items() if lab == label]
        assert len(found) == 1, (label, found)
        return found[0]


def parse_dot(text: str) -> Dot:
    """Parse the renderer's DOT, failing on any line it does not recognise."""
    assert text.endswith("\n")
    lines = text.rstrip("\n").split("\n")
    head = re.fullmatch(r"digraph " + _D_LABEL + r" \{", lines[0])
    assert head, lines[0]
    assert lines[-1] == "}"
    out = Dot(name=_unescape_dot(head[1]))
    stack: list[str] = []
    for raw in lines[1:-1]:
        line = raw.strip()
        if line == "start [shape=circle];":
            out.nodes["start"] = ("circle", "start")
        elif line == "stop [shape=doublecircle, label=end];":
            out.nodes["stop"] = ("doublecircle", "end")
        elif m := _D_SUB.fullmatch(line):
            out.clusters[m["id"]] = _unescape_dot(m["label"])
            out.parent[m["id"]] = stack[-1] if stack else None
            stack.append(m["id"])
        elif line == "}":
            assert stack
            stack.pop()
        elif m := _D_NODE.fullmatch(line):
            assert m["id"] not in out.nodes
            out.nodes[m["id"]] = (m["shape"], _unescape_dot(m["label"]))
            out.parent[m["id"]] = stack[-1] if stack else None
        elif m := _D_POINT.fullmatch(line):
            assert m["id"] not in out.nodes
            out.nodes[m["id"]] = ("point", "")
            out.parent[m["id"]] = stack[-1] if stack else None
        elif m := _D_EDGE.fullmatch(line):
            label = m["label"]
            if m["catch"]:
                label = "dashed: " + label
            out.edges.append(
                (m["src"], "dashed" if m["dashed"] else (_unescape_dot(label) if label is not None else None), m["dst"])
            )
        else:
            raise AssertionError(f"unrecognised dot line: {raw!r}")
    assert not stack
    return out


def check_dot(text: str) -> Dot:
    """Parse and check the invariants every DOT rendering must satisfy."""
    d = parse_dot(text)
    assert "start" in d.nodes and "stop" in d.nodes
    for i in set(d.nodes) - {"start", "stop"}:
        assert ID.fullmatch(i), i
    for i in d.clusters:
        assert re.fullmatch(r"cluster_n\d+", i), i
    for src, _, dst in d.edges:
        assert src in d.nodes, src
        assert dst in d.nodes, dst
    return d


# -- graphs ------------------------------------------------------------------------


def _linear() -> Graph:
    return workflow("linear").task("a", job="a").task("b", job="b").task("c", job="c").build()


def _complex() -> Graph:
    x = workflow.branch("x").task("x1", job="x1").task("x2", job="x2").build()
    y = workflow.branch("y").pass_("y1").build()
    return (
        workflow("orders")
        .task("fetch", job="jobs.fetch")
        .choice(
            "route",
            choices=[When(lambda ctx: True, "fetch"), When(lambda ctx: False, "fan", label="big order")],
            default="done",
        )
        .parallel("fan", branches=[x, y])
        .end("done")
        .build()
    )


# -- tests -------------------------------------------------------------------------


def test_mermaid_snapshot_linear() -> None:
    """A 3-state linear workflow renders to exactly this Mermaid text."""
    assert _linear().to_mermaid() == (
        "flowchart TD\n"
        "    start((start))\n"
        "    stop((end))\n"
        '    n0["a"]\n'
        '    n1["b"]\n'
        '    n2["c"]\n'
        "    n0 --> n1\n"
        "    n1 --> n2\n"
        "    start --> n0\n"
        "    n2 --> stop\n"
    )


def test_mermaid_starts_with_flowchart_td() -> None:
    """The Mermaid text's first line is 'flowchart TD'."""
    assert _linear().to_mermaid().split("\n")[0] == "flowchart TD"
    assert _complex().to_mermaid().startswith("flowchart TD\n")


def test_mermaid_linear_structure() -> None:
    """Each state is one node labelled by its name, chained start -> a -> b -> c -> end."""
    m = check_mermaid(_linear().to_mermaid())
    a, b, c = m.id_of("a"), m.id_of("b"), m.id_of("c")
    assert set(m.nodes) == {"start", "stop", a, b, c}
    assert sorted(m.edges, key=str) == sorted(
        [("start", None, a), (a, None, b), (b, None, c), (c, None, "stop")], key=str
    )


def test_mermaid_node_per_state_with_shape() -> None:
    """Every top-level and branch state has a node (tasks boxes, choices diamonds, passes stadiums)."""
    g = _complex()
    m = check_mermaid(g.to_mermaid())
    assert m.nodes[m.id_of("fetch (jobs.fetch)")][0] == "box"
    assert m.nodes[m.id_of("route")][0] == "diamond"
    assert m.nodes[m.id_of("done")][0] == "stadium"
    assert m.nodes[m.id_of("x1")][0] == "box"
    assert m.nodes[m.id_of("y1")][0] == "stadium"
    # one node or subgraph per state, plus one subgraph per branch, plus start/stop
    assert len(m.nodes) + len(m.subgraphs) == g.total_steps + 2 + 2


def test_mermaid_task_label_shows_job_when_it_differs() -> None:
    """A task whose job differs from its name is labelled 'name (job)'; otherwise just the name."""
    g = workflow("w").task("fetch", job="jobs.fetch").task("same", job="same").build()
    m = check_mermaid(g.to_mermaid())
    assert m.ids_labelled("fetch (jobs.fetch)") and m.ids_labelled("same")


def test_mermaid_start_and_end_markers() -> None:
    """start points at the first state; every ending state points at the end marker."""
    g = _complex()
    m = check_mermaid(g.to_mermaid())
    assert ("start", None, m.id_of("fetch (jobs.fetch)")) in m.edges
    into_stop = {s for s, _, d in m.edges if d == "stop"}
    assert into_stop == {m.id_of("done")}


def test_mermaid_several_ends() -> None:
    """Each state with end=True gets its own edge to the end marker."""
    g = (
        workflow("w")
        .choice("c", choices=[When(lambda ctx: True, "a")], default="b")
        .task("a", job="a", end=True)
        .task("b", job="b", end=True)
        .build()
    )
    m = check_mermaid(g.to_mermaid())
    assert {s for s, _, d in m.edges if d == "stop"} == {m.id_of("a"), m.id_of("b")}


def test_mermaid_choice_edges_labelled() -> None:
    """Choice edges are labelled '#1', '#2'... by position (or the When's label) and 'default'."""
    g = (
        workflow("w")
        .choice("c", choices=[When(lambda ctx: 1, "a"), When(lambda ctx: 0, "b"), When(lambda ctx: 0, "d", label="big")],
                default="e")
        .end("a").end("b").end("d").end("e")  # fmt: skip
        .build()
    )
    m = check_mermaid(g.to_mermaid())
    c = m.id_of("c")
    out = {(lab, dst) for s, lab, dst in m.edges if s == c}
    assert out == {("#1", m.id_of("a")), ("#2", m.id_of("b")), ("big", m.id_of("d")), ("default", m.id_of("e"))}


def test_mermaid_choice_loop_back_edge() -> None:
    """A choice looping back to an earlier state draws that edge."""
    m = check_mermaid(_complex().to_mermaid())
    assert (m.id_of("route"), "#1", m.id_of("fetch (jobs.fetch)")) in m.edges
    assert (m.id_of("fetch (jobs.fetch)"), None, m.id_of("route")) in m.edges


def test_mermaid_parallel_branches_are_nested_subgraphs() -> None:
    """A parallel is a subgraph holding one subgraph per branch, each holding the branch's states."""
    m = check_mermaid(_complex().to_mermaid())
    fan = m.id_of("fan (parallel)")
    assert fan in m.subgraphs and m.parent[fan] is None
    x, y = m.id_of("x"), m.id_of("y")
    assert x in m.subgraphs and y in m.subgraphs
    assert m.parent[x] == fan and m.parent[y] == fan
    assert m.parent[m.id_of("x1")] == x and m.parent[m.id_of("x2")] == x
    assert m.parent[m.id_of("y1")] == y
    assert (m.id_of("x1"), None, m.id_of("x2")) in m.edges
    # the parallel itself is an edge endpoint: in from the choice, out to the next state
    assert (m.id_of("route"), "big order", fan) in m.edges
    assert (fan, None, m.id_of("done")) in m.edges
    # top-level states are not inside any subgraph
    for label in ("fetch (jobs.fetch)", "route", "done"):
        assert m.parent[m.id_of(label)] is None


def test_mermaid_nested_parallel_in_branch() -> None:
    """A parallel inside a branch becomes a subgraph inside that branch's subgraph."""
    inner = workflow.branch("inner").task("i1", job="i1").build()
    outer = workflow.branch("outer").parallel("deep", branches=[inner]).build()
    g = workflow("w").parallel("top", branches=[outer]).build()
    m = check_mermaid(g.to_mermaid())
    top, o, deep, i = m.id_of("top (parallel)"), m.id_of("outer"), m.id_of("deep (parallel)"), m.id_of("inner")
    assert m.parent[o] == top and m.parent[deep] == o and m.parent[i] == deep
    assert m.parent[m.id_of("i1")] == i


def test_mermaid_awkward_names_give_valid_ids_and_escaped_labels() -> None:
    """Names with dashes, spaces and double quotes get n<digits> ids and #quot;-escaped labels."""
    names = ["with-dash", "with space", 'say "hi"', 'end', '"', "a|b", "x[y]{z}(w)"]
    b = workflow("w-x y")
    for n in names:
        b = b.task(n, job=n)
    br = workflow.branch('br "q" - 1').pass_('in "b"').build()
    b = b.choice('ch "1"', choices=[When(lambda ctx: True, names[0], label='lab "l"')], default='par "p"')
    b = b.parallel('par "p"', branches=[br])
    text = b.build().to_mermaid()
    m = check_mermaid(text)  # every line parses: no raw quote inside any label
    for n in names:
        assert m.ids_labelled(n), n
    assert m.ids_labelled('br "q" - 1') and m.ids_labelled('in "b"') and m.ids_labelled('par "p" (parallel)')
    assert 'say #quot;hi#quot;' in text
    assert '"say #quot;hi#quot;"' in text
    assert '|"lab #quot;l#quot;"|' in text
    assert 'say "hi"' not in text


def test_mermaid_newline_in_name_is_flattened() -> None:
    """A newline in a name does not split the Mermaid line."""
    g = Graph("w", (PassState(name="two\nlines", end=True),))
    m = check_mermaid(g.to_mermaid())
    assert m.ids_labelled("two lines")


def test_mermaid_empty_recorded_graph() -> None:
    """An empty (recorded) graph still renders: only the markers, no start edge."""
    m = check_mermaid(Graph("r", (), source="recorded").to_mermaid())
    assert set(m.nodes) == {"start", "stop"} and m.edges == []


def test_dot_linear_structure() -> None:
    """DOT: a digraph named after the workflow with start -> a -> b -> c -> stop."""
    d = check_dot(_linear().to_dot())
    assert d.name == "linear"
    a, b, c = d.id_of("a"), d.id_of("b"), d.id_of("c")
    assert all(d.nodes[i][0] == "box" for i in (a, b, c))
    assert sorted(d.edges, key=str) == sorted(
        [("start", None, a), (a, None, b), (b, None, c), (c, None, "stop")], key=str
    )


def test_dot_shapes_choices_and_clusters() -> None:
    """DOT: choice diamond with labelled edges, pass ellipse, parallel a cluster of branch clusters."""
    d = check_dot(_complex().to_dot())
    route = d.id_of("route")
    assert d.nodes[route][0] == "diamond"
    assert d.nodes[d.id_of("done")][0] == "ellipse"
    assert d.nodes[d.id_of("fetch\n(jobs.fetch)")][0] == "box"
    labels = {lab for s, lab, _ in d.edges if s == route}
    assert labels == {"#1", "big order", "default"}
    fan_cluster = next(c for c, lab in d.clusters.items() if lab == "fan (parallel)")
    branch_clusters = {lab: c for c, lab in d.clusters.items() if d.parent[c] == fan_cluster}
    assert set(branch_clusters) == {"x", "y"}
    assert d.parent[d.id_of("x1")] == branch_clusters["x"]
    assert d.parent[d.id_of("y1")] == branch_clusters["y"]
    # the parallel's point fans out (dashed) to each branch's first state
    point = next(i for i, (shape, _) in d.nodes.items() if shape == "point")
    assert d.parent[point] == fan_cluster
    dashed = {dst for s, lab, dst in d.edges if s == point and lab == "dashed"}
    assert dashed == {d.id_of("x1"), d.id_of("y1")}
    assert (route, "big order", point) in d.edges
    assert (point, None, d.id_of("done")) in d.edges
    assert {s for s, _, dst in d.edges if dst == "stop"} == {d.id_of("done")}


def test_dot_awkward_names_are_escaped() -> None:
    """DOT labels escape quotes and backslashes; ids stay n<digits>."""
    names = ["with-dash", "with space", 'say "hi"', "back\\slash"]
    b = workflow('w "q"')
    for n in names:
        b = b.task(n, job=n)
    text = b.build().to_dot()
    d = check_dot(text)
    assert d.name == 'w "q"'
    for n in names:
        d.id_of(n)
    assert r'label="say \"hi\""' in text
    assert r'label="back\\slash"' in text


def test_dot_empty_recorded_graph() -> None:
    """An empty (recorded) graph renders to a digraph with only the markers."""
    d = check_dot(Graph("r", (), source="recorded").to_dot())
    assert set(d.nodes) == {"start", "stop"} and d.edges == []


# -- wait, signal and child-workflow states ------------------------------------------


def _primitives() -> Graph:
    kid = workflow("kid").task("k", job="k").build()
    return (
        workflow("primitives")
        .wait("cool-off", seconds=3600)
        .wait_for_signal("approve", timeout=600, catch=[Catch(["SignalTimeout"], next="escalate")])
        .task("charge", workflow=kid, catch=[Catch(["ChildWorkflowFailed"], next="escalate")])
        .task("by-name", workflow="kid", end=True)
        .task("escalate", job="escalate", end=True)
        .build()
    )


def test_mermaid_draws_wait_signal_and_child_as_their_own_shapes() -> None:
    """A wait is a hexagon, a signal a flag, a child workflow a subroutine; catch edges are dashed."""
    m = check_mermaid(_primitives().to_mermaid())
    assert m.nodes[m.id_of("⏳ cool-off wait 1h")][0] == "hexagon"
    assert m.nodes[m.id_of("✉ signal approve timeout 10m")][0] == "flag"
    assert m.nodes[m.id_of("charge (child: kid)")][0] == "subroutine"
    assert m.nodes[m.id_of("by-name (child: kid)")][0] == "subroutine"
    wait, signal, child = (m.id_of(x) for x in (
        "⏳ cool-off wait 1h", "✉ signal approve timeout 10m", "charge (child: kid)"))
    escalate = m.id_of("escalate")
    assert (wait, None, signal) in m.edges and (signal, None, child) in m.edges
    assert (signal, "catch SignalTimeout", escalate) in m.edges
    assert (child, "catch ChildWorkflowFailed", escalate) in m.edges
    assert {s for s, _, d in m.edges if d == "stop"} == {m.id_of("by-name (child: kid)"), escalate}


def test_dot_draws_wait_signal_and_child_as_their_own_shapes() -> None:
    """DOT: hexagon, cds and box3d; catch edges labelled and dashed."""
    d = check_dot(_primitives().to_dot())
    wait, signal, child = (d.id_of(x) for x in (
        "⏳ cool-off\nwait 1h", "✉ signal approve\ntimeout 10m", "charge\n(child: kid)"))
    assert [d.nodes[i][0] for i in (wait, signal, child)] == ["hexagon", "cds", "box3d"]
    assert (signal, "dashed: catch SignalTimeout", d.id_of("escalate")) in d.edges
    assert (child, "dashed: catch ChildWorkflowFailed", d.id_of("escalate")) in d.edges
