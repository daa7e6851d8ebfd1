"""A workflow's arguments, checked against its signature and annotations at ``start()``.

:class:`ArgumentChecks` binds a ``start()``'s arguments to the workflow
function's parameters (an unexpected or missing one is a ``TypeError`` naming
the workflow and the parameter), and checks each annotated argument: with
pydantic installed (the ``validation`` extra), through a ``TypeAdapter`` in
lax mode, which converts JSON-ish values (``"5"`` for an ``int``); without it,
by ``isinstance`` for the plain types. A value of the right type is never
changed. Annotations are read at the first ``start()``, so they may name
classes defined after the workflow.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any, final

__all__ = ["ArgumentChecks"]


def _resolved_annotations(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s parameter annotations, evaluated; one that does not resolve (a forward reference
    to a name that does not exist, a local class) is left out: its parameter takes anything."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        pass
    inner = inspect.unwrap(fn)
    namespace = getattr(inner, "__globals__", {})
    out: dict[str, Any] = {}
    for name, annotation in getattr(inner, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # what get_type_hints does, one name at a time
            except Exception:
                continue
        out[name] = annotation
    return out


# Without pydantic: the annotations checked (never converted), and what each accepts.
_SIMPLE: dict[Any, tuple[type, ...]] = {
    bool: (bool,), int: (int,), float: (int, float), str: (str,), type(None): (type(None),),
    list: (list,), dict: (dict,),
}


def _simple_types(annotation: Any) -> tuple[type, ...] | None:
    """The classes an isinstance() check of ``annotation`` takes without pydantic, or ``None``: not checked.

    ``bool``, ``int``, ``float`` (an int too), ``str``, ``None``, ``list``,
    ``dict``; ``list[...]`` and ``dict[...]`` (the container, not its items);
    a union (``int | None``) of those; ``Annotated[T, ...]`` as ``T``.
    """
    if annotation is None:
        annotation = type(None)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _simple_types(typing.get_args(annotation)[0])
    try:
        found = _SIMPLE.get(annotation)
    except TypeError:  # unhashable
        return None
    if found is not None:
        return found
    if origin in (list, dict):
        return (origin,)
    if origin is typing.Union or origin is types.UnionType:
        parts = [_simple_types(a) for a in typing.get_args(annotation)]
        if all(p is not None for p in parts):
            return tuple(t for p in parts if p is not None for t in p)
    return None


def _type_text(annotation: Any) -> str:
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _value_text(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = "?"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _type_adapter() -> Any:
    """pydantic's ``TypeAdapter`` when pydantic is installed (the ``validation`` extra), else ``None``."""
    try:
        pydantic = importlib.import_module("pydantic")  # (by name: an optional dependency, typed or not)
    except ImportError:
        return None
    return getattr(pydantic, "TypeAdapter", None)  # None for pydantic 1


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


@final
class _ParameterCheck:
    """How one annotated parameter's value is checked, and converted when pydantic is installed.

    A value that already has the annotation's type (a plain class: an
    ``isinstance`` check; an int for a ``float``) is kept as it is. Else,
    with pydantic, it is validated in lax (Python) mode by a
    ``TypeAdapter`` of the annotation (``"5"`` becomes ``5`` for an ``int``);
    a result equal to the value and of its type keeps the value itself.
    Without pydantic, or for an annotation pydantic cannot handle, only the
    simple annotations of :func:`_simple_types` are checked, and nothing is
    converted.
    """

    def __init__(self, workflow: str, name: str, annotation: Any, adapter_class: Any) -> None:
        self.workflow = workflow
        self.name = name
        self.annotation = annotation
        plain = isinstance(annotation, type) and typing.get_origin(annotation) is None
        self.as_is: tuple[type, ...] | None = (
            (int, float) if annotation is float else (annotation,) if plain else
            (type(None),) if annotation is None else None
        )
        self.adapter: Any = None
        if adapter_class is not None:
            try:
                self.adapter = adapter_class(annotation)
            except Exception:  # a type pydantic has no schema for: checked as without pydantic
                self.adapter = None
        self.simple = _simple_types(annotation) if self.adapter is None else None

    @property
    def active(self) -> bool:
        return self.adapter is not None or self.simple is not None

    def __call__(self, value: Any, where: str) -> Any:
        as_is = self.as_is
        if as_is is not None:
            try:
                if isinstance(value, as_is):
                    return value
            except TypeError:  # a class isinstance() refuses (a Protocol that is not runtime-checkable)
                pass
        if self.adapter is not None:
            try:
                converted = self.adapter.validate_python(value)
            except Exception as exc:
                raise TypeError(self._message(value, where, _pydantic_detail(exc))) from None
            return value if _same(converted, value) else converted
        if self.simple is not None and not isinstance(value, self.simple):
            raise TypeError(self._message(value, where, None))
        return value

    def _message(self, value: Any, where: str, detail: str | None) -> str:
        text = (f"workflow {self.workflow!r}: argument {where!r} must be {_type_text(self.annotation)}, "
                f"got {_value_text(value)}")
        return f"{text}: {detail}" if detail else text


def _pydantic_detail(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            found = errors()
            parts = []
            for error in found[:3]:
                loc = "".join(f"[{p!r}]" for p in error.get("loc", ()))
                parts.append(f"{loc}: {error['msg']}" if loc else str(error["msg"]))
            return "; ".join(parts)
        except Exception:
            pass
    return f"{type(exc).__name__}: {exc}"


@final
class ArgumentChecks:
    """The checks of a ``@workflow`` function's annotated parameters, by name."""

    def __init__(self, fn: Callable[..., Any], signature: inspect.Signature, workflow: str) -> None:
        annotations = _resolved_annotations(fn) if any(
            p.annotation is not p.empty for p in signature.parameters.values()) else {}
        adapter_class = _type_adapter() if annotations else None
        self.checks: dict[str, _ParameterCheck] = {}
        self.kinds: dict[str, Any] = {}
        for param in signature.parameters.values():
            if param.name not in annotations:
                continue
            check = _ParameterCheck(workflow, param.name, annotations[param.name], adapter_class)
            if check.active:
                self.checks[param.name] = check
                self.kinds[param.name] = param.kind
        self.any = bool(self.checks)

    def resplit(self, bound: inspect.BoundArguments, positional: int,
                kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The (converted) values of ``bound`` as the call gave them: its first ``positional``
        arguments by position, the names of ``kwargs`` by name."""
        arguments = bound.arguments
        out_args: list[Any] = []
        out_kwargs: dict[str, Any] = {}
        for param in bound.signature.parameters.values():
            if param.kind is param.VAR_POSITIONAL:
                out_args.extend(arguments.get(param.name, ()))
            elif param.kind is param.VAR_KEYWORD:
                out_kwargs.update(arguments.get(param.name, {}))
            elif param.name in arguments:
                if param.name in kwargs:
                    out_kwargs[param.name] = arguments[param.name]
                else:
                    out_args.append(arguments[param.name])
        assert len(out_args) == positional
        return tuple(out_args), {key: out_kwargs[key] for key in kwargs}

    def positional(self, names: tuple[str, ...], args: tuple[Any, ...]) -> tuple[Any, ...]:
        """``args`` (one per name in ``names``) checked, and converted."""
        checks = self.checks
        return tuple(
            check(value, name) if (check := checks.get(name)) is not None else value
            for name, value in zip(names, args)
        )

    def bound(self, bound: inspect.BoundArguments) -> bool:
        """Check (and convert) ``bound``'s arguments in place; whether any value was replaced."""
        changed = False
        arguments = bound.arguments
        for name, check in self.checks.items():
            if name not in arguments:
                continue
            value = arguments[name]
            kind = self.kinds[name]
            if kind is inspect.Parameter.VAR_POSITIONAL:
                new: Any = tuple(check(v, f"{name}[{i}]") for i, v in enumerate(value))
                replaced = any(a is not b for a, b in zip(new, value))
            elif kind is inspect.Parameter.VAR_KEYWORD:
                new = {k: check(v, k) for k, v in value.items()}
                replaced = any(new[k] is not value[k] for k in value)
            else:
                new = check(value, name)
                replaced = new is not value
            if replaced:
                arguments[name] = new
                changed = True
        return changed
