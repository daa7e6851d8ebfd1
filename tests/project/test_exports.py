"""The public API: what `durable` exports is frozen here, so changes to it are deliberate."""

from __future__ import annotations

import inspect

import durable
import durable.errors
import durable.stores
import durable.testing

EXPECTED = {
    "Catch", "CaughtError", "ChildState", "ChildWorkflowFailed", "ChoiceState", "Context", "DurableError", "Engine", "Event", "EventBus", "EventFeed", "Graph", "GraphError",
    "IdConflict", "InstanceNotFound", "InstanceStatus", "JobNotFound", "LMDBStore", "MapFailed", "MapState", "MemoryStore", "NoChoiceMatched",
    "NonDeterminismError", "ParallelFailed", "ParallelState", "PassState", "Retry", "SerializationError", "SignalState", "SignalTimeout", "WaitState",
    "StepFailed", "StepFunction", "StepInfo", "StepResult", "StepStatus", "StepTimeout", "Store", "StoreError",
    "Subscription", "TaskState", "When", "WorkflowCancelled", "WorkflowFunction", "WorkflowInstance",
    "WorkflowNotFound", "WorkflowTimeout", "__version__", "current_step", "map_", "parallel", "sleep", "sleep_until", "step", "wait_for_signal", "workflow",
    "deprecate_patch", "patched",  # 0.2.0; now(), random() and uuid4() are attributes only (see __init__)
    "Queue", "QueueNotFound", "Deduplicated", "Client", "AsyncClient", "EventsDropped",  # 0.2.0: clients and queues
    "PostgresStore",  # 0.3.0: imported on first use (the postgres extra)
}


def test_public_names_are_frozen() -> None:
    """durable.__all__ is exactly the expected set, sorted, and every name imports."""
    assert set(durable.__all__) == EXPECTED
    assert durable.__all__ == sorted(durable.__all__)
    for name in durable.__all__:
        assert hasattr(durable, name), name


def test_issue_names_are_importable() -> None:
    """The names the core issue promises are importable from durable."""
    from durable import (  # noqa: F401
        DurableError, Engine, GraphError, JobNotFound, LMDBStore, MemoryStore, Retry, SerializationError,
        StepFailed, StepResult, StepTimeout, StoreError, When, WorkflowCancelled, WorkflowInstance,
        WorkflowNotFound, WorkflowTimeout, workflow,
    )


def test_every_public_name_has_a_docstring() -> None:
    """Every public class and function, in every public namespace, has a docstring."""
    for module in (durable, durable.errors, durable.stores, durable.testing):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj) or callable(obj):
                assert (obj.__doc__ or "").strip(), f"{module.__name__}.{name} has no docstring"


def test_statuses_compare_as_strings() -> None:
    """Statuses are str enums, so instance.status == "completed" holds."""
    assert durable.InstanceStatus.COMPLETED == "completed"
    assert durable.StepStatus.SKIPPED == "skipped"
