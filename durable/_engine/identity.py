"""Which workflow a name means, and what ``start(id=...)`` of an existing instance does.

One name never runs two workflows' code (:func:`name_taken`), and an id
started again returns its instance only when that is what the caller asked
for (:func:`check_existing`, the ``if_exists`` policy). Pure functions of
definitions and records: the run driver applies them.
"""

from __future__ import annotations

from typing import Any, Literal

from .run import Definition
from .._model.records import WorkflowInstance
from .._model.serde import same_value
from ..errors import DurableError, IdConflict

__all__ = ["IfExists", "check_existing", "describe", "name_taken"]


def describe(definition: Definition) -> str:
    """How an error names a workflow's code: ``@workflow orders.process`` or ``the builder graph 'x'``."""
    fn = getattr(definition, "__wrapped__", None)
    if fn is not None:
        return f"@workflow {getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', definition.name)}"
    return f"the builder graph {definition.name!r}"

#: What ``start(id=...)`` does with an existing instance: return it if it has
#: the same workflow and input (``"return"``), never (``"error"``), or if it has
#: the same workflow (``"replay"``: a child's call, replayed).
IfExists = Literal["return", "error", "replay"]


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def name_taken(found: Definition, new: Definition) -> DurableError:
    """The error for ``new`` under the name ``found`` holds (another workflow's code)."""
    return DurableError(
        f"the workflow name {found.name!r} is taken by {describe(found)}, so {describe(new)} cannot use it: "
        "give one of them another name (@workflow(name=...), or workflow('...') for a builder)",
        workflow=found.name,
    )


def check_existing(workflow: str, stored: WorkflowInstance, value: Any, if_exists: IfExists) -> None:
    """Raise :class:`IdConflict` unless starting ``workflow`` with input ``value`` may return ``stored``."""
    instance_id = stored.id
    if stored.workflow_name != workflow:
        raise IdConflict(
            f"id {instance_id!r} already belongs to an instance of workflow {stored.workflow_name!r}",
            workflow=workflow, instance_id=instance_id, existing_workflow=stored.workflow_name,
        )
    if if_exists == "error":
        raise IdConflict(
            f"id {instance_id!r} already exists ({stored.status}), and if_exists='error' was given",
            workflow=workflow, instance_id=instance_id, existing_workflow=stored.workflow_name,
        )
    if if_exists == "return" and not same_value(stored.input, value):
        raise IdConflict(
            f"id {instance_id!r} already exists ({stored.status}) with a different input: "
            f"stored {_short_repr(stored.input)}, given {_short_repr(value)}; use another id to run it "
            "with this input",
            workflow=workflow, instance_id=instance_id, existing_workflow=stored.workflow_name,
        )
