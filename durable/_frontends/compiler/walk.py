"""Compile a ``@workflow`` function's source into a :class:`~durable.Graph` (its single job).

The coroutine is what runs; the graph serves inspection, diagrams, progress
totals and validation at decoration time. It is built from the same IR states
as the state-machine builder's. This module compiles the statements (the
control flow) and is the entry point; the state table and its freezing into a
graph are in ``graph``, reading the source and resolving names in
``source``, and the states of durable's primitives (sleep, signals,
child workflows, map, parallel) in ``primitives``. The mapping,
construct by construct:

- ``await f(...)`` -> a task named after the step's declared name when ``f``
  resolves to a ``@step``, else after the call site's callee text (``f``,
  ``self.charge``); ``await step(fn, ...)`` / ``await step("label", fn, ...)``
  -> a task named ``fn`` / ``label``. Awaits on ``trio`` are not steps. Names
  are only resolved to recognise helpers: "a step called on a name that is not
  a step is fine", so any other awaited call is a task.
- ``await helper(...)``, where ``helper`` is an ``async def`` of the same module
  that ``is_step`` rejects -> the helper's body, inlined (depth 5, no cycles).
- Repeated names are made unique: ``validate``, ``validate#2``... (label: ``validate``).
- ``if/elif/else`` -> choice ``if <cond>``: one rule (label = the condition) to
  the true branch, default to the else branch (or to what follows the if).
- ``match`` -> choice ``match <subject>``, a rule per case (``case "gold"``);
  an irrefutable ``case _`` is the default.
- ``for``/``async for``/``while`` with steps -> choice ``for x in xs`` /
  ``while <test>``: rule "next item" / "loop" enters the body, whose end goes
  back to the choice; the default leaves. Loops without steps are skipped.
- ``try/except`` -> the body, then a choice ``except <Types>`` whose "raised"
  rule(s) go to the handler(s) and whose default is the ``else`` / what follows;
  ``finally`` follows both.
- ``await parallel(a(x), b(x))`` -> a parallel state, a branch per argument
  named by its source text; ``parallel(*(f(x) for x in xs))`` -> one fan-out
  branch ``for x in xs``.
- ``await durable.map(fn, items, concurrency=N)`` (or ``map``/``map_``
  imported from ``durable``) -> a map state named ``map`` whose iterator is
  ``fn`` compiled as a call (a step's task, or a helper's steps inlined; a
  ``lambda x: f(x, y)`` is its call), labelled with ``fn``, the items and the bound.
- ``await durable.sleep(seconds)`` / ``await durable.sleep_until(when)`` (or
  ``sleep`` / ``sleep_until`` imported from ``durable``) -> a wait state named
  ``sleep``, as the runtime names the step; a duration of constants
  (``24 * 3600``) is drawn as such, any other argument as its source text.
- ``await durable.wait_for_signal("approve", timeout=..., default=...)`` -> a
  signal state named ``signal:approve`` (the runtime's step name).
- ``await child(...)``, where ``child`` resolves to a ``@workflow`` function
  -> a child workflow state named ``workflow:NAME`` (the runtime's step
  name), never inlined: it runs as an instance of its own.
- ``break`` leaves the loop (skipping its ``else``); ``continue`` goes back to it.
- ``return`` ends its path (a pass state ``return`` when no state precedes it
  on the path); ``raise`` too (a pass state ``raise``); so does falling off the
  end. Statements without awaits and nested definitions are ignored.

Approximations: an exception is drawn as raised after the try body's last step
(any of them may raise); a try body that always returns hides its handlers;
``return``/``raise`` paths skip ``finally``; every ``while`` (even ``while
True``) is drawn with an exit; both sides of ``a if c else b`` / ``x or y`` are
drawn in sequence; an await inside a comprehension is drawn once; a
``@workflow`` defined after the workflow calling it is not known yet when
the caller is decorated, so it is drawn as a task. If the graph
still breaks a rule of :func:`~durable._graph.validate.validate_graph`, it falls back to
the steps in source order.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from .graph import STEP_KINDS, Hook, States, build_graph, clip, connect
from .primitives import is_durable_map, map_state, parallel_state, primitive_state
from .source import Frame, Scope, awaits, load
from ..._graph.states import Graph

__all__ = ["compile_workflow"]


class _Compiler:
    """Compiles statements into mutable states; one per :func:`compile_workflow` call."""

    def __init__(self, fn: Callable[..., Any], name: str, is_step: Callable[[object], bool] | None) -> None:
        self.name = name
        self.scope = Scope(fn, is_step)

    # -- statements: each takes the hooks leading in and returns the hooks leading out --

    def block(self, g: States, f: Frame, body: list[ast.stmt], hooks: list[Hook]) -> list[Hook]:
        """Compile ``body`` entered from ``hooks``; returns the hooks leaving its end (``[]``: none do)."""
        for stmt in body:
            if not hooks:  # every path before returned: the rest is dead code
                break
            hooks = self.statement(g, f, stmt, hooks)
        return hooks

    def statement(self, g: States, f: Frame, stmt: ast.stmt, hooks: list[Hook]) -> list[Hook]:
        """Compile one statement entered from ``hooks``; returns the hooks leaving it."""
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return hooks
        if isinstance(stmt, ast.If):
            hooks = self.expr(g, f, stmt.test, hooks)
            return self.choice(g, f, f"if {f.text(stmt.test)}", [(f.text(stmt.test), stmt.body)], stmt.orelse, hooks)
        if isinstance(stmt, ast.Match):
            hooks = self.expr(g, f, stmt.subject, hooks)
            rules, default = [], None
            for case in stmt.cases:
                if isinstance(case.pattern, ast.MatchAs) and case.pattern.pattern is None and case.guard is None:
                    default = case.body  # `case _` / `case name`: irrefutable, the choice's default
                else:
                    guard = f" if {f.text(case.guard)}" if case.guard is not None else ""
                    rules.append((f"case {f.text(case.pattern)}{guard}", case.body))
            return self.choice(g, f, f"match {f.text(stmt.subject)}", rules, default or [], hooks)
        if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            return self.loop(g, f, stmt, hooks)
        if isinstance(stmt, (ast.Try, ast.TryStar)):
            return self.try_(g, f, stmt, hooks)
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                hooks = self.expr(g, f, item.context_expr, hooks)
            return self.block(g, f, stmt.body, hooks)
        hooks = self.expr(g, f, stmt, hooks)
        if isinstance(stmt, ast.Return):
            if f.returns is None:
                g.end(hooks, "return")
            else:  # in an inlined helper, return leaves the helper: the caller continues
                f.returns.extend(hooks)
            return []
        if isinstance(stmt, ast.Raise):
            g.end(hooks, "raise")  # approximation: a raise ends the path even inside try
            return []
        if isinstance(stmt, (ast.Break, ast.Continue)) and f.loops:
            continues, breaks = f.loops[-1]  # wired by loop() once the loop's choice is known
            (breaks if isinstance(stmt, ast.Break) else continues).extend(hooks)
            return []
        return hooks

    def choice(self, g: States, f: Frame, base: str, rules: list[tuple[str, list[ast.stmt]]],
               default: list[ast.stmt], hooks: list[Hook]) -> list[Hook]:
        """A choice state: a rule per (label, body), ``default`` otherwise; empty paths fall through."""
        mark = len(g.states)
        state = g.add("choice", clip(base), hooks,
                      rules=[[label, None] for label, _ in rules], default=None)
        out: list[Hook] = []
        for i, (_, body) in enumerate(rules):
            out += self.block(g, f, body, [(state, i)])
        out += self.block(g, f, default, [(state, "default")])
        if len(g.states) == mark + 1 and len(out) == len(rules) + 1 and all(s is state for s, _ in out):
            g.truncate(mark, hooks, f.exits())  # no branch does anything the graph can show: no choice
            return hooks
        return out

    def loop(self, g: States, f: Frame, stmt: ast.For | ast.AsyncFor | ast.While, hooks: list[Hook]) -> list[Hook]:
        """A loop with steps: a choice whose rule enters the body, whose body comes back to it."""
        before = hooks
        if isinstance(stmt, ast.While):
            mark = len(g.states)  # the test is evaluated on every turn: it is part of the loop
            hooks = self.expr(g, f, stmt.test, hooks)
            base, label = f"while {f.text(stmt.test)}", "loop"
        else:
            hooks = before = self.expr(g, f, stmt.iter, hooks)  # the iterable is evaluated once
            mark = len(g.states)
            base, label = f"for {f.text(stmt.target)} in {f.text(stmt.iter)}", "next item"
        state = g.add("choice", clip(base), hooks, rules=[[label, None]], default=None)
        head = g.since(mark)[0]["name"]  # the while test's first step, or the choice
        continues: list[Hook] = []
        breaks: list[Hook] = []
        f.loops.append((continues, breaks))
        out = self.block(g, f, stmt.body, [(state, 0)])
        f.loops.pop()
        if not any(s["kind"] in STEP_KINDS for s in g.since(mark)):
            g.truncate(mark, before, f.exits())  # no step in the loop: nothing to draw
            return before
        connect(out + continues, head)
        return self.block(g, f, stmt.orelse, [(state, "default")]) + breaks

    def try_(self, g: States, f: Frame, stmt: ast.Try | ast.TryStar, hooks: list[Hook]) -> list[Hook]:
        """The body, then a choice ``except <Types>``: "raised" to each handler, default onwards.

        Approximation: the exception is drawn as raised after the body's last
        step (any of them may raise); a body that always returns hides its handlers.
        """
        hooks = self.block(g, f, stmt.body, hooks)
        if hooks and stmt.handlers:
            types = [f.text(h.type) if h.type is not None else "" for h in stmt.handlers]
            labels = ["raised"] if len(types) == 1 else [f"raised {t or 'anything'}" for t in types]
            base = " ".join(["except", ", ".join(t for t in types if t)]).strip()
            hooks = self.choice(g, f, base, [(label, h.body) for label, h in zip(labels, stmt.handlers)],
                                stmt.orelse, hooks)
        elif hooks:
            hooks = self.block(g, f, stmt.orelse, hooks)
        return self.block(g, f, stmt.finalbody, hooks)

    # -- expressions --------------------------------------------------------------

    def expr(self, g: States, f: Frame, node: ast.AST, hooks: list[Hook]) -> list[Hook]:
        """The steps awaited in ``node``, in evaluation order (both sides of ``a if c else b``)."""
        for aw in awaits(node):
            if isinstance(aw.value, ast.Call):
                hooks = self.call(g, f, aw.value, hooks)
            elif (isinstance(aw.value, ast.Name) and self.scope.is_step
                  and self.scope.is_step(self.scope.globals.get(aw.value.id))):
                name = aw.value.id  # `await my_step`: a step awaited without arguments
                hooks = [(g.add("task", name, hooks, job=name), "next")]
        return hooks

    def call(self, g: States, f: Frame, call: ast.Call, hooks: list[Hook]) -> list[Hook]:
        """An awaited call: nothing (trio), a parallel, an inlined helper, or a task."""
        func = call.func
        root = func
        while isinstance(root, ast.Attribute):
            root = root.value
        resolved = self.scope.globals.get(func.id) if isinstance(func, ast.Name) else None
        in_trio = isinstance(root, ast.Name) and root.id == "trio"
        if in_trio or str(getattr(resolved, "__module__", "")).startswith("trio"):
            return hooks  # trio.sleep & co. (also `from trio import sleep`) are not steps
        last = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        primitive = primitive_state(self.scope, g, f, call, hooks)
        if primitive is not None:
            return primitive
        if last == "parallel":
            return parallel_state(g, f, call, hooks, self.call, self.name)
        if last in ("map", "map_") and is_durable_map(self.scope, func):
            return map_state(g, f, call, hooks, self.call)
        base = f.text(func)
        declared = getattr(resolved, "name", None)
        if self.scope.is_step is not None and self.scope.is_step(resolved) and isinstance(declared, str):
            base = declared  # a @step(name=...) is drawn under the name the runtime keys it by
        if last == "step" and call.args:  # step(fn, ...) / step("label", fn, ...): named like the runtime
            first = call.args[0]
            base = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else f.text(first)
        helper = self.scope.helper(f, resolved)
        loaded = load(helper) if helper is not None else None
        if helper is None or loaded is None:
            queue = getattr(resolved, "queue", None) if self.scope.is_step is not None and self.scope.is_step(
                resolved) else None
            return [(g.add("task", base, hooks, job=base, queue=queue), "next")]
        source, filename, first_line, node = loaded  # a helper coroutine: its steps, inlined
        returns: list[Hook] = []
        inner = Frame(source, filename, first_line, returns=returns, helpers=(*f.helpers, id(helper)))
        return self.block(g, inner, node.body, hooks) + returns


def compile_workflow(fn: Callable[..., Any], *, name: str, is_step: Callable[[object], bool] | None = None) -> Graph:
    """Compile the ``async def`` ``fn`` into a :class:`Graph` with ``source="source"``.

    Args:
        fn: the workflow function.
        name: the graph's (workflow's) name.
        is_step: tells steps from other objects; when given, awaited calls of
            same-module ``async def`` helpers that are not steps are inlined.

    Returns:
        The graph; an empty one with ``source="recorded"`` when ``fn`` has no
        readable source (a lambda, a function built with ``exec``), its steps
        being recorded as runs unfold.

    Raises:
        GraphError: ``parallel()`` is given something that cannot be awaited
            (the message names ``file:line``).
    """
    loaded = load(fn)
    if loaded is None:
        return Graph(name, (), source="recorded")
    source, filename, first_line, node = loaded
    compiler = _Compiler(fn, name, is_step)
    frame = Frame(source, filename, first_line, returns=None, helpers=(id(fn),))
    return build_graph(name, lambda g, hooks: compiler.block(g, frame, node.body, hooks))
