"""What user code can see of the run it is part of.

:class:`Context` is handed to a builder's ``input`` / ``output`` /
``transform`` / ``condition`` functions. :func:`current_step` tells a running
step its idempotency key. Both are views: they never change the run.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from typing import Any, final

import attrs

from .._model.records import WorkflowInstance
from .catch import CaughtError

__all__ = ["Context", "StepInfo", "current_step", "step_info_var"]


@final
class Context:
    """The workflow context of the TypeScript original.

    Attributes:
        input: the workflow's input.
        steps: outputs of the steps finished so far, keyed by step name.
        error: the error the last :class:`~durable.Catch` of this graph (or
            branch) caught, as a :class:`~durable.CaughtError`; ``None`` before any.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_instance_fn", "error", "input", "steps")

    def __init__(self, input: Any, steps: Mapping[str, Any], instance: Callable[[], WorkflowInstance]) -> None:
        self.input = input
        self.steps = steps
        self._instance_fn = instance
        self.error: CaughtError | None = None

    @property
    def instance(self) -> WorkflowInstance:
        """A snapshot of the current instance, with its step results so far."""
        return self._instance_fn()

    def get_step_result(self, name: str, default: Any = None) -> Any:
        """The output of step ``name``, or ``default`` if it has not finished."""
        return self.steps.get(name, default)

    def __repr__(self) -> str:
        return f"Context(input={self.input!r}, steps={dict(self.steps)!r})"


@final
@attrs.frozen
class StepInfo:
    """Who the running step is; returned by :func:`current_step`.

    Attributes:
        workflow: the workflow's name.
        instance_id: the instance's id.
        key: the step's checkpoint key (``scope/name#occurrence``).
        attempt: the attempt number, from 1.
        idempotency_key: ``"{instance_id}/{key}"``: the same every time this
            step runs, including re-execution after a crash; give it to
            external services to deduplicate side effects.

    .. versionadded:: 0.1.0
    """

    workflow: str
    instance_id: str
    key: str
    attempt: int

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and re-execution: ``instance_id/key``."""
        return f"{self.instance_id}/{self.key}"


step_info_var: contextvars.ContextVar[StepInfo | None] = contextvars.ContextVar("durable_step", default=None)


def current_step() -> StepInfo | None:
    """The :class:`StepInfo` of the step running in this task or thread, or ``None``.

    .. versionadded:: 0.1.0
    """
    return step_info_var.get()
