"""Child workflows: awaiting a ``@workflow`` inside a workflow runs it as an instance of its own.

The call is a step of type ``workflow`` (key ``workflow:NAME#n``). The child's
id is derived from the parent's id and that key, so a replay (after a crash,
or a wake-up) finds the same child instead of starting another: ``start()``
with an existing id returns it, and continues it if the engine that ran it is
gone. The child has its own checkpoints and events; the parent's checkpoint
holds the child's output (or its failure, as :class:`ChildWorkflowFailed`).
The child's deadline is bounded by the parent's; cancelling the parent
cancels its unfinished children (``WorkflowService.cancel``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from .._model.records import InstanceStatus, StepResult, StepStatus
from . import lifecycle
from .lifecycle import error_text
from .run import Definition, Run, Scope
from ..errors import ChildWorkflowFailed
from .._model.ids import MAX_ID_LENGTH

__all__ = ["CHILD_STEP_TYPE", "child_instance_id", "child_step", "running_children"]

CHILD_STEP_TYPE = "workflow"


def child_instance_id(parent_id: str, key: str) -> str:
    """The id of the child started at checkpoint ``key`` of instance ``parent_id``."""
    child = f"{parent_id}/{key}"
    if len(child.encode()) <= MAX_ID_LENGTH:
        return child
    digest = hashlib.sha256(child.encode()).hexdigest()[:32]
    return f"{parent_id.encode()[:100].decode(errors='ignore')}/{digest}"


def running_children(checkpoints: Mapping[str, StepResult]) -> list[str]:
    """Ids of the child workflows whose call is still running in these checkpoints."""
    return [
        rec.input["child"] for rec in checkpoints.values()
        if rec.step_type == CHILD_STEP_TYPE and rec.status == StepStatus.RUNNING
        and isinstance(rec.input, dict) and isinstance(rec.input.get("child"), str)
    ]


async def child_step(run: Run, scope: Scope, definition: Definition, args: tuple[Any, ...],
                     kwargs: dict[str, Any], *, step_name: str | None = None) -> Any:
    """Replay or run one child workflow call; returns the child's output.

    The step is named ``step_name`` (a builder's child state passes its own
    name), by default ``workflow:NAME``; the child's id is ``{parent id}/{key}``.
    """
    step_name = step_name if step_name is not None else f"{CHILD_STEP_TYPE}:{definition.name}"
    key, seq, rec = run.next_checkpoint(scope, step_name, ChildWorkflowFailed)
    if rec is not None and rec.status == StepStatus.COMPLETED:
        return rec.output
    child_id = child_instance_id(run.id, key)
    started_at = rec.started_at if rec is not None and rec.started_at else run.now()
    if rec is None:
        await lifecycle.begin(run, StepResult(
            step_name=step_name, status=StepStatus.RUNNING, input={"child": child_id}, key=key,
            step_type=CHILD_STEP_TYPE, function=definition.name, started_at=started_at, attempts=1, seq=seq),
            durable=True)
    run.current_step = step_name
    await run.host.start_child(definition, args, kwargs, child_id, run.instance.deadline, run.id)
    child = await run.host.wait(child_id)

    def record(status: StepStatus, **fields: Any) -> StepResult:
        return StepResult(step_name=step_name, status=status, input={"child": child_id}, key=key,
                          step_type=CHILD_STEP_TYPE, function=definition.name, started_at=started_at,
                          completed_at=run.now(), attempts=1, seq=seq, **fields)

    if child.status == InstanceStatus.COMPLETED:
        await lifecycle.complete(run, record(StepStatus.COMPLETED, output=child.output), durable=True)
        return child.output
    err = run.fail(
        ChildWorkflowFailed, f"child workflow {definition.name!r} ({child_id}) ended {child.status}: {child.error}",
        step=key, child_id=child_id, child_status=str(child.status), child_error_type=child.error_type,
    )
    await lifecycle.fail(run, record(StepStatus.FAILED, error=error_text(err), exception=err))
    raise err
