"""Calls of durable's primitives, each compiled into a state of its own kind.

``durable.sleep`` / ``sleep_until`` -> a wait state, ``wait_for_signal`` -> a
signal state, a ``@workflow`` -> a child workflow state, ``durable.map`` -> a
map state, ``parallel()`` -> a parallel state. Calls are recognised through the
workflow module's globals (:class:`~durable._frontends.compiler.source.Scope`); the calls
inside a map's iterator or a parallel's branches are compiled by the caller's
``compile_call``.
"""

from __future__ import annotations

import ast
import inspect
from collections import Counter
from collections.abc import Callable
from typing import TypeAlias

from .graph import Hook, States, build_graph, clip
from .source import Frame, Scope
from ..._graph.diagram import duration_text
from ..._graph.states import Graph
from ...errors import GraphError

__all__ = ["CompileCall", "is_durable_map", "map_state", "parallel_state", "primitive_kind", "primitive_state"]

# parallel() arguments that can never be awaitable: a mistake worth failing decoration for.
_NOT_AWAITABLE = (ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.Lambda, ast.JoinedStr,
                  ast.ListComp, ast.SetComp, ast.DictComp)

CompileCall: TypeAlias = Callable[[States, Frame, ast.Call, list[Hook]], list[Hook]]
"""Compiles an awaited call entered from the hooks; returns the hooks leaving it."""


def primitive_kind(obj: object) -> str | None:
    """Which of durable's primitives ``obj`` is, by its ``__durable_primitive__`` marker; ``None`` for others.

    ``"sleep"``, ``"sleep_until"``, ``"wait_for_signal"``, ``"map"``,
    ``"workflow"`` (a ``@workflow`` function, awaited as a child workflow), or
    ``"value"`` (``durable.now()``, ``random()``, ``uuid4()``, ``patched()``...:
    recorded values, no state of the graph).
    A marker, not an identity check, so the compiler needs none of the
    modules that define the primitives.
    """
    if isinstance(obj, type):
        return None
    # A static lookup: a name the compiler resolves may be any object (a proxy
    # whose __getattr__ does things), and looking must not run its code.
    kind = inspect.getattr_static(obj, "__durable_primitive__", None)
    return kind if isinstance(kind, str) else None


def is_durable_map(scope: Scope, func: ast.expr) -> bool:
    """Whether the callee ``func`` is ``durable.map``: resolved through the module's globals,
    or a bare ``map``/``map_`` imported where the compiler cannot see it (the builtin
    ``map`` is never awaited)."""
    found, obj = scope.resolve(func)
    if not found:
        return isinstance(func, ast.Name)  # `await map(...)` with map imported inside the function
    return primitive_kind(obj) == "map"


def primitive_state(scope: Scope, g: States, f: Frame, call: ast.Call, hooks: list[Hook]) -> list[Hook] | None:
    """A wait, signal or child workflow state for a call of ``durable.sleep`` / ``sleep_until`` /
    ``wait_for_signal`` or of a ``@workflow``; ``None`` for any other call."""
    found, obj = scope.resolve(call.func)
    if not found:
        return None
    kind = primitive_kind(obj)
    if kind is None:
        return None
    if kind == "value":
        return hooks  # durable.now()/random()/uuid4()/patched(): recorded values, not steps
    keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
    if kind in ("sleep", "sleep_until"):
        until = kind == "sleep_until"
        arg = call.args[0] if call.args else keywords.get("when" if until else "seconds")
        seconds = _number(arg) if arg is not None and not until else None
        if seconds is not None and seconds >= 0:
            label = f"sleep {duration_text(seconds)}"
        else:
            seconds = None
            what = f.text(arg) if arg is not None else "?"
            label = clip(f"sleep until {what}" if until else f"sleep {what}")
        state = g.add("wait", "sleep", hooks, seconds=seconds)
        state["label"] = label  # the diagram's text: what the wait waits for
        return [(state, "next")]
    if kind == "wait_for_signal":
        arg = call.args[0] if call.args else keywords.get("name")
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            signal = arg.value
        else:
            signal = f.text(arg) if arg is not None else "?"
        timeout_node = keywords.get("timeout")
        timeout = _number(timeout_node) if timeout_node is not None else None
        default_node = keywords.get("default")
        default = default_node.value if isinstance(default_node, ast.Constant) else None
        state = g.add("signal", clip(f"signal:{signal}"), hooks, signal=signal,
                      timeout=timeout if timeout is not None and timeout >= 0 else None,
                      has_default=default_node is not None, default=default)
        return [(state, "next")]
    if kind == "workflow":
        name = getattr(obj, "name", None)
        if isinstance(name, str):
            state = g.add("workflow", clip(f"workflow:{name}"), hooks, workflow=name, definition=obj)
            return [(state, "next")]
    return None


def map_state(g: States, f: Frame, call: ast.Call, hooks: list[Hook], compile_call: CompileCall) -> list[Hook]:
    """A map state: the iterator is ``fn`` compiled as a call; the label tells the items and the bound."""
    keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
    fn = call.args[0] if call.args else keywords.get("fn")
    items = call.args[1] if len(call.args) > 1 else keywords.get("items")
    if fn is None or isinstance(fn, ast.Starred):
        return [(g.add("task", f.text(call.func), hooks, job=f.text(call.func)), "next")]
    bound_node = keywords.get("concurrency")
    bound = 10
    if isinstance(bound_node, ast.Constant) and isinstance(bound_node.value, int):
        bound = max(0, bound_node.value)
    elif bound_node is not None:
        bound = 0
    on_error_node = keywords.get("on_error")
    on_error = on_error_node.value if isinstance(on_error_node, ast.Constant) else "fail-fast"
    if bound_node is not None and not isinstance(bound_node, ast.Constant):
        limit = f"at most {f.text(bound_node)} at once"
    else:
        limit = f"at most {bound} at once" if bound else "no limit"
    fn_text = f.text(fn)
    over = f" over {f.text(items)}" if items is not None else ""
    frame = Frame(f.source, f.filename, f.first_line, returns=None, helpers=f.helpers)

    def build(sub: States, start: list[Hook]) -> list[Hook]:
        if isinstance(fn, ast.Lambda) and isinstance(fn.body, ast.Call):
            return compile_call(sub, frame, fn.body, start)  # `lambda x: pack(x, "gift")`
        if isinstance(fn, ast.Lambda):
            return [(sub.add("task", fn_text, start, job=fn_text), "next")]
        return compile_call(sub, frame, ast.Call(func=fn, args=[], keywords=[]), start)

    iterator = build_graph(clip(fn_text), build)
    state = g.add("map", "map", hooks, iterator=iterator, max_concurrency=bound,
                  on_error=on_error if on_error in ("fail-fast", "wait-all") else "fail-fast")
    state["label"] = clip(f"{state['name']} {fn_text}{over} ({limit})")
    return [(state, "next")]


def parallel_state(g: States, f: Frame, call: ast.Call, hooks: list[Hook], compile_call: CompileCall,
                   workflow: str) -> list[Hook]:
    """A parallel state: a branch per argument, a fan-out branch per starred comprehension."""
    branches: list[Graph] = []
    names: Counter[str] = Counter()
    fan_out = False
    args: list[ast.expr] = []
    for arg in call.args:  # `*[a(), b()]` is just a(), b()
        spread = isinstance(arg, ast.Starred) and isinstance(arg.value, (ast.List, ast.Tuple))
        args.extend(arg.value.elts if spread else [arg])  # type: ignore[attr-defined]
    for arg in args:  # keywords (on_error=) do not change the graph
        element: ast.expr = arg
        if isinstance(arg, ast.Starred) and isinstance(arg.value, (ast.GeneratorExp, ast.ListComp)):
            fan_out, element = True, arg.value.elt
            label = " ".join(f"for {f.text(c.target)} in {f.text(c.iter)}" for c in arg.value.generators)
        elif isinstance(arg, ast.Starred):
            fan_out, label = True, f.text(arg)  # `*calls`: unknown awaitables, one task
            element = arg.value
        elif isinstance(arg, _NOT_AWAITABLE):
            line = f.first_line + arg.lineno - 1
            raise GraphError(f"{f.filename}:{line}: parallel() takes awaitables (step or helper calls), "
                             f"got {f.text(arg)}", workflow=workflow)
        else:
            label = f.text(arg)
        names[label] += 1
        branch_name = label if names[label] == 1 else f"{label}#{names[label]}"
        branch_frame = Frame(f.source, f.filename, f.first_line, returns=None, helpers=f.helpers)

        def build(sub: States, start: list[Hook], el: ast.expr = element,
                  bf: Frame = branch_frame) -> list[Hook]:
            if isinstance(el, ast.Call):
                return compile_call(sub, bf, el, start)
            return [(sub.add("task", bf.text(el), start, job=bf.text(el)), "next")]

        branches.append(build_graph(branch_name, build))
    if not branches:
        return hooks  # `await parallel()` awaits nothing
    state = g.add("parallel", "parallel", hooks, branches=tuple(branches))
    if fan_out:
        state["label"] = f"{state['name']}: fan-out, one branch per item"
    return [(state, "next")]


def _number(node: ast.AST) -> float | None:
    """The value of a number made of constants (``3600``, ``24 * 60 * 60``, ``1.5``); ``None`` otherwise."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _number(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _number(node.left), _number(node.right)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        return left / right if right else None
    return None
