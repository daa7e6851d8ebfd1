"""The package's layers, read from the imports themselves.

Every ``import`` and ``from ... import`` in ``durable/`` counts: at module
level, inside functions, and under ``if TYPE_CHECKING:``. Each module belongs
to one layer; a layer may import only the layers below it:

    tools (cli, testing) -> api (durable/__init__) -> front-ends -> engine -> graph -> model
    tools -> web (durable.web) -> client -> engine; web -> front-ends
                                                                    engine -> stores -> model

and no module may sit outside a layer. No two modules import each other,
directly or around a loop, except the cycles listed in ``ALLOWED_CYCLES``
with their reason.
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "durable"

#: layer -> the module prefixes in it (longest prefix wins)
LAYERS: dict[str, tuple[str, ...]] = {
    "model": ("durable._model", "durable.errors", "durable._version"),
    "graph": ("durable._graph",),
    "stores": ("durable.stores",),
    "engine": ("durable._engine",),
    "frontends": ("durable._frontends",),
    "client": ("durable.client",),
    "web": ("durable.web",),
    "api": ("durable", "durable._legacy"),
    "tools": ("durable.cli", "durable.testing", "durable.__main__"),
}

#: layer -> the layers it may import (itself included)
ALLOWED: dict[str, set[str]] = {
    "model": {"model"},
    "graph": {"graph", "model"},
    "stores": {"stores", "model"},
    "engine": {"engine", "graph", "stores", "model"},
    "frontends": {"frontends", "engine", "graph", "model"},
    "client": {"client", "engine", "graph", "stores", "model"},
    "api": {"api", "client", "frontends", "engine", "graph", "stores", "model"},
    "web": {"web", "client", "frontends", "engine", "graph", "stores", "model"},
    "tools": {"tools", "api", "web", "client", "frontends", "engine", "graph", "stores", "model"},
}

#: module cycles that are allowed, each with its reason
ALLOWED_CYCLES: dict[frozenset[str], str] = {
    frozenset({"durable._graph.states", "durable._graph.validate", "durable._graph.diagram"}): (
        "Graph.to_mermaid() and to_dot() are public methods of the recursive graph type; they import "
        "the renderer (diagram.py) when called, and the renderer reads the states (and their catch "
        "edges, through validate.catches_of)"
    ),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) of every import of a ``durable`` module in ``path``, wherever it stands."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "durable":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "durable":
                continue
            names_only = False
            for alias in node.names:  # `from . import x, y`: each may be a module of its own
                sub = f"{target}.{alias.name}"
                path = root.parent / Path(*sub.split("."))
                if path.with_suffix(".py").exists() or path.is_dir():
                    yield node.lineno, sub
                else:
                    names_only = True
            if names_only:
                yield node.lineno, target
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            # importlib.import_module("durable...") / __import__("durable..."): an import too
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            value = node.args[0].value
            if called in ("import_module", "__import__") and isinstance(value, str) and value.split(".")[0] == "durable":
                yield node.lineno, value


def layer_of(module: str) -> str | None:
    best: tuple[int, str] | None = None
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if prefix == "durable" and module != "durable":
                    continue  # only the package's own __init__ is "api"
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), layer)
    return best[1] if best else None


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def violations(root: Path) -> list[str]:
    """Every import that points up (or sideways into a layer not allowed), and every module outside a layer."""
    found: list[str] = []
    for name, path in modules(root).items():
        layer = layer_of(name)
        if layer is None:
            found.append(f"{name}: in no layer (put it in a layer's subpackage)")
            continue
        for line, target in imports(path, root):
            target_layer = layer_of(target)
            if target_layer is None:
                found.append(f"{name}:{line} imports {target}, which is in no layer")
            elif target_layer not in ALLOWED[layer]:
                found.append(f"{name}:{line} ({layer}) imports {target} ({target_layer}): points up the layers")
    return found


def cycles(root: Path) -> list[frozenset[str]]:
    """The strongly connected groups of modules (more than one) in the import graph."""
    graph: dict[str, set[str]] = {}
    names = modules(root)
    for name, path in names.items():
        graph[name] = {t for _, t in imports(path, root) if t in names and t != name}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(frozenset(group))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_every_import_points_down_the_layers() -> None:
    assert violations(PACKAGE) == []


def test_the_layers_themselves_have_no_cycle() -> None:
    seen: set[str] = set()
    done: set[str] = set()

    def walk(layer: str) -> None:
        assert layer not in seen or layer in done, f"layers form a cycle through {layer}"
        if layer in done:
            return
        seen.add(layer)
        for below in ALLOWED[layer] - {layer}:
            walk(below)
        done.add(layer)

    for layer in ALLOWED:
        walk(layer)


def test_no_import_cycle_between_modules() -> None:
    unexpected = [sorted(c) for c in cycles(PACKAGE) if c not in ALLOWED_CYCLES]
    assert unexpected == []


def test_every_subpackage_is_in_a_layer() -> None:
    for name in modules(PACKAGE):
        assert layer_of(name) is not None, name


# -- the checks catch what they are for ---------------------------------------------------


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "durable"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.mark.parametrize(("module", "line", "why"), [
    ("_model/records.py", "from .._graph.states import Graph", "(model) imports durable._graph.states (graph)"),
    ("_graph/catch.py", "from .._engine.run import Run", "(graph) imports durable._engine.run (engine)"),
    ("_engine/steps.py", "from .._frontends.decorators import step", "(engine) imports durable._frontends"),
    ("stores/_memory.py", "from .._engine.events import Event", "(stores) imports durable._engine.events (engine)"),
    ("_frontends/builder.py", "from ..stores._base import Store", "(frontends) imports durable.stores._base"),
    ("_model/clock.py", "from ..cli import main", "(model) imports durable.cli (tools)"),
    ("_graph/catch.py", "from .. import errors, _engine", "(graph) imports durable._engine (engine)"),
    ("_graph/catch.py", "import importlib; importlib.import_module('durable._engine.run')",
     "(graph) imports durable._engine.run (engine)"),
])
def test_an_upward_import_fails_the_check(package_copy: Path, module: str, line: str, why: str) -> None:
    assert violations(package_copy) == []
    path = package_copy / module
    path.write_text(path.read_text() + f"\n\ndef _late() -> None:\n    {line}\n")
    found = violations(package_copy)
    assert len(found) == 1 and why in found[0], found


def test_an_upward_import_under_type_checking_fails_the_check(package_copy: Path) -> None:
    path = package_copy / "_graph" / "context.py"
    path.write_text(path.read_text() + "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from .._engine.run import Run\n")
    assert any("(graph) imports durable._engine.run (engine)" in v for v in violations(package_copy))


def test_a_module_outside_the_layers_fails_the_check(package_copy: Path) -> None:
    (package_copy / "_helpers.py").write_text("X = 1\n")
    assert violations(package_copy) == ["durable._helpers: in no layer (put it in a layer's subpackage)"]


def test_a_new_cycle_fails_the_check(package_copy: Path) -> None:
    path = package_copy / "_engine" / "jobs.py"
    path.write_text(path.read_text() + "\n\ndef _late() -> None:\n    from .run import Run\n")
    assert frozenset({"durable._engine.jobs", "durable._engine.run"}) in cycles(package_copy)
