"""The run a piece of workflow code belongs to: a contextvar read by ``@step`` and ``parallel()``.

It holds the :class:`~durable._engine.run.Run` and the checkpoint :class:`~durable._engine.run.Scope`
of the current trio task. Each parallel branch's task sets its own scope; code
outside any engine sees ``None`` and runs steps as plain functions.
"""

from __future__ import annotations

import contextvars

import attrs

from .._graph.context import step_info_var
from .._model.retry import Retry
from .._engine.run import Run, Scope

__all__ = ["Active", "active", "in_workflow", "plain_default_retry"]


@attrs.frozen
class Active:
    """The current run and scope of a decorator workflow's code."""

    run: Run
    scope: Scope
    default_retry: Retry | None = None


active: contextvars.ContextVar[Active | None] = contextvars.ContextVar("durable_active", default=None)

# The default_retry of a @workflow awaited as a plain function (no engine), so
# its steps retry as they would on an engine.
plain_default_retry: contextvars.ContextVar[Retry | None] = contextvars.ContextVar(
    "durable_plain_default_retry", default=None
)


def in_workflow() -> Active | None:
    """The run and scope of the workflow code awaiting a primitive now, or ``None`` if it is plain code.

    Plain code: outside any engine (a workflow awaited as a function), or
    inside a running step, whose body is not replayed (so what it awaits
    cannot take places among the workflow's checkpoints: it is part of the
    step). Read when awaited: a ``parallel()`` branch has its own scope.
    """
    current = active.get()
    if current is None or step_info_var.get() is not None:
        return None
    return current
