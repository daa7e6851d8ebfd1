"""What the compiler reads of the code it compiles.

A function's source and ``def`` node (:func:`load`), the awaits of a node in
evaluation order (:func:`awaits`), the function being compiled (:class:`Frame`),
and the names of the workflow's module (:class:`Scope`: callees resolved
through its globals, same-module helper coroutines chosen for inlining).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .graph import Hook

__all__ = ["Frame", "Scope", "awaits", "load"]

_MAX_DEPTH = 5  # nested helper coroutines inlined at most this deep


@dataclass
class Frame:
    """The function being compiled: the workflow, or a helper inlined into it."""

    source: str
    filename: str
    first_line: int
    returns: list[Hook] | None  # None: ``return`` ends the graph; else the helper's exits
    helpers: tuple[int, ...]  # ids of the functions being compiled, outermost first (cycles, depth)
    loops: list[tuple[list[Hook], list[Hook]]] = field(default_factory=list)  # (continues, breaks)

    def exits(self) -> list[list[Hook]]:
        """The open exits that lead out of this frame: its returns, its loops' continues and breaks."""
        return [self.returns or [], *(h for loop in self.loops for h in loop)]

    def text(self, node: ast.AST) -> str:
        """The source text of ``node``, on one line."""
        return " ".join((ast.get_source_segment(self.source, node) or ast.unparse(node)).split())


def load(fn: Callable[..., Any]) -> tuple[str, str, int, ast.AsyncFunctionDef | ast.FunctionDef] | None:
    """(source, file name, first line, def node) of ``fn``; ``None`` when its source is unavailable."""
    name = getattr(fn, "__name__", None)
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        first_line = inspect.getsourcelines(fn)[1]
        filename = inspect.getsourcefile(fn) or inspect.getfile(fn)
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None  # built by exec/eval, a builtin, or source that no longer parses
    defs = [n for n in ast.walk(tree) if isinstance(n, (ast.AsyncFunctionDef, ast.FunctionDef))]
    node = next((d for d in defs if d.name == name), None)
    return None if node is None else (source, filename, first_line, node)  # a lambda has no def


def awaits(node: ast.AST) -> list[ast.Await]:
    """The awaits in ``node``, inner ones first (evaluation order), skipping nested definitions."""
    found: list[ast.Await] = []

    def visit(n: ast.AST) -> None:
        for child in ast.iter_child_nodes(n):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
                visit(child)
        if isinstance(n, ast.Await):
            found.append(n)

    visit(node)
    return found


class Scope:
    """The names of the workflow's module, as the compiler sees them through its globals."""

    def __init__(self, fn: Callable[..., Any], is_step: Callable[[object], bool] | None) -> None:
        self.is_step = is_step
        self.globals: dict[str, Any] = getattr(fn, "__globals__", {})
        self.module = getattr(fn, "__module__", None)

    def helper(self, f: Frame, obj: object) -> Callable[..., Any] | None:
        """The async helper to inline for a callee resolving to ``obj``, if it is one."""
        target = getattr(obj, "__wrapped__", obj)
        if obj is None or self.is_step is None or self.is_step(obj) or not inspect.iscoroutinefunction(target):
            return None
        if getattr(target, "__module__", None) != self.module or id(target) in f.helpers:
            return None  # another module's coroutine, or a cycle: drawn as a task
        return target if len(f.helpers) <= _MAX_DEPTH else None

    def resolve(self, func: ast.expr) -> tuple[bool, Any]:
        """(found, object) of the callee ``func`` (``name`` or ``a.b.name``), through the module's globals.

        ``found`` is false when ``func``'s root name is not a global (a local,
        a name imported inside the function) or ``func`` is no dotted name.
        """
        parts: list[str] = []
        node = func
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self.globals:
            return False, None
        obj: Any = self.globals[node.id]
        for part in reversed(parts):
            obj = getattr(obj, part, None)
        return True, obj
