"""The workflows an HTTP API knows: their graphs as JSON and Mermaid, and their input, validated.

A workflow whose code the API has (passed to :func:`~durable.web.create_app`)
gets an input model built from its signature with pydantic: a decorator
workflow's input is an object with one member per parameter, checked against
the parameters' annotations (``Literal["free", "pro"]``, ``Annotated[str,
Field(pattern=...)]``, pydantic models...), so a malformed request is refused
with ``422`` and the failing fields before anything is written. A builder
workflow takes any JSON value as its input. A workflow known only by name (a
worker registered it) is started by name; its arguments are bound by the
worker that runs it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, Literal

import attrs
import pydantic

from .._frontends.arguments import _resolved_annotations
from .._frontends.decorators import WorkflowFunction
from .._graph.states import (
    ChildState, ChoiceState, Graph, MapState, ParallelState, SignalState, State, TaskState, WaitState,
)

__all__ = ["Catalog", "Entry", "graph_json"]

Workflow = WorkflowFunction[Any, Any] | Graph


def graph_json(graph: Graph) -> dict[str, Any]:
    """A graph's states as JSON: what the dashboard draws."""
    return {"name": graph.name, "states": [_state_json(s) for s in graph.states]}


def _state_json(state: State) -> dict[str, Any]:
    out: dict[str, Any] = {"name": state.name, "type": state.type, "label": state.label, "next": state.next,
                           "end": state.end}
    if isinstance(state, TaskState):
        out["queue"] = state.queue
    if isinstance(state, ChoiceState):
        out["choices"] = [{"next": w.next, "label": w.label} for w in state.choices]
        out["default"] = state.default
    if isinstance(state, ParallelState):
        out["branches"] = [graph_json(b) for b in state.branches]
    if isinstance(state, MapState):
        out["iterator"] = graph_json(state.iterator)
    if isinstance(state, SignalState):
        out["signal"] = state.signal
    if isinstance(state, ChildState):
        out["workflow"] = state.workflow
    if isinstance(state, WaitState) and state.seconds is not None:
        out["seconds"] = state.seconds
    catch = getattr(state, "catch", ())
    if catch:
        out["catch"] = [{"errors": [e if isinstance(e, str) else e.__name__ for e in c.errors], "next": c.next}
                        for c in catch]
    return out


def _input_model(wf: WorkflowFunction[Any, Any]) -> type[pydantic.BaseModel] | None:
    """A pydantic model of a decorator workflow's parameters; ``None`` if they cannot be one (``*args``)."""
    fn = wf.__wrapped__
    signature = inspect.signature(fn)
    annotations = _resolved_annotations(fn)
    fields: dict[str, Any] = {}
    extra: Literal["allow", "forbid"] = "forbid"
    for p in signature.parameters.values():
        if p.kind is p.VAR_POSITIONAL or p.kind is p.POSITIONAL_ONLY:
            return None
        if p.kind is p.VAR_KEYWORD:
            extra = "allow"
            continue
        annotation = annotations.get(p.name, Any)
        fields[p.name] = (annotation, ... if p.default is p.empty else p.default)
    try:
        model: type[pydantic.BaseModel] = pydantic.create_model(
            f"{wf.name}-input", __config__=pydantic.ConfigDict(extra=extra, arbitrary_types_allowed=True),
            **fields)
        model.model_json_schema()  # a type with no JSON schema: taken as any JSON below
    except Exception:
        return None
    return model


@attrs.define
class Entry:
    """One workflow the API knows."""

    name: str
    workflow: Workflow | None  #: its code, or ``None``: known by name only (from the store)
    queue: str | None = None
    model: type[pydantic.BaseModel] | None = None

    @property
    def kind(self) -> str:
        """``function``, ``graph``, or ``unknown`` (no code here)."""
        if self.workflow is None:
            return "unknown"
        return "graph" if isinstance(self.workflow, Graph) else "function"

    @property
    def total_steps(self) -> int | None:
        """Its graph's step count (``0``: it loops; ``None``: no code here)."""
        wf = self.workflow
        if wf is None:
            return None
        return (wf if isinstance(wf, Graph) else wf.graph).total_steps

    def input_schema(self) -> dict[str, Any]:
        """The JSON Schema of its input (``{}``: any JSON)."""
        if self.model is None:
            return {}
        schema: dict[str, Any] = self.model.model_json_schema()
        schema.pop("title", None)
        return schema

    def info(self) -> dict[str, Any]:
        """What ``GET /api/workflows`` says of it."""
        wf = self.workflow
        graph = None if wf is None else wf if isinstance(wf, Graph) else wf.graph
        doc = None
        if isinstance(wf, WorkflowFunction):
            doc = inspect.getdoc(wf.__wrapped__)
        return {
            "name": self.name,
            "queue": self.queue,
            "kind": self.kind,
            "doc": doc,
            "input_schema": self.input_schema(),
            "graph": graph_json(graph) if graph is not None else None,
            "mermaid": graph.to_mermaid() if graph is not None else None,
            "total_steps": self.total_steps,
        }

    def call(self, value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of a start with input ``value``.

        Raises:
            pydantic.ValidationError: ``value`` does not fit the workflow's parameters.
        """
        if isinstance(self.workflow, Graph):
            return (value,), {}
        if self.model is not None:
            checked = self.model.model_validate({} if value is None else value)
            kwargs = {name: getattr(checked, name) for name in type(checked).model_fields}
            kwargs.update(checked.model_extra or {})
            return (), kwargs
        if isinstance(value, dict):
            return (), value
        return (value,), {}


class Catalog:
    """The workflows of an app: those given with their code, and those only the store knows."""

    def __init__(self, workflows: Iterable[Workflow]) -> None:
        self._code: dict[str, Entry] = {}
        for wf in workflows:
            if not isinstance(wf, WorkflowFunction | Graph):
                raise TypeError(f"create_app(workflows=...) takes @workflow functions and built graphs, got {wf!r}")
            model = _input_model(wf) if isinstance(wf, WorkflowFunction) else None
            self._code[wf.name] = Entry(wf.name, wf, getattr(wf, "queue", None), model)

    def entries(self, known: Iterable[str], queues: dict[str, str]) -> list[Entry]:
        """Every workflow, by name: with code first, then those the store knows (``known``)."""
        out = dict(self._code)
        for name in known:
            if name not in out:
                out[name] = Entry(name, None, queues.get(name))
        return [out[n] for n in sorted(out)]

    def get(self, name: str) -> Entry | None:
        """The workflow with code called ``name``."""
        return self._code.get(name)
