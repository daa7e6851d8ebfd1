"""``assert_replays``: check that a finished instance replays from its checkpoints alone.

A resumed workflow runs again from the top and every step call must find its
checkpoint: that is what makes a crash harmless. This helper replays a
finished instance's workflow, with the code as it is now, against a copy of
its stored checkpoints, on a throw-away in-memory engine, and fails if any
step would run (a step with no checkpoint at its key) or if the replay
diverges (:class:`~durable.NonDeterminismError`) or ends differently from
the recorded run. Nothing is written to the original store, and no step's
code runs: a step that would run is stopped before its first attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs

from .._engine.engine import Engine
from .._engine.interpreter import GraphDefinition
from .._graph.states import Graph
from .._model.records import InstanceStatus, StepResult, WorkflowInstance
from ..stores import MemoryStore, Store

__all__ = ["assert_replays"]


class _WouldRun(Exception):
    """Raised by the replay store when a step is about to run: replay needed more than its checkpoints."""


class _ReplayStore:
    """A :class:`MemoryStore` that refuses step checkpoints, noting which step tried to write one.

    During a replay no step writes a checkpoint: a step found at its key
    returns (or re-raises) its stored result. The engine writes a ``running``
    checkpoint before a step's first attempt, so refusing that write stops the
    step before any of its code runs; the engine then ends the run with the error.
    """

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.would_run: list[StepResult] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_step(
        self, instance_id: str, step: StepResult, *, durable: bool = True, owner: str | None = None
    ) -> None:
        self.would_run.append(step)
        raise _WouldRun(f"step {step.key!r} would run again")

    def put_step_later(self, instance_id: str, step: StepResult, *, owner: str | None = None) -> None:
        self.would_run.append(step)
        raise _WouldRun(f"step {step.key!r} would run again")


def _describe(instance: WorkflowInstance) -> str:
    return f"instance {instance.id!r} of workflow {instance.workflow_name!r}"


def _outcome(instance: WorkflowInstance) -> str:
    if instance.status == InstanceStatus.COMPLETED:
        return f"completed with output {instance.output!r}"
    return f"{instance.status} with {instance.error_type}: {instance.error}"


async def assert_replays(
    source: Engine | Store,
    instance: str | WorkflowInstance,
    /,
    *,
    workflow: Any = None,
    jobs: Mapping[str, Callable[..., Any]] | None = None,
) -> WorkflowInstance:
    """Assert that a finished instance replays from its checkpoints without running a step.

    Replays the instance's workflow (the code as it is now) against a copy of
    its checkpoints on a throw-away in-memory engine, as a resume after a
    crash at its very end would. Use it after a test run, or on instances an
    older version of your code left in a store, to check that your change
    keeps replay deterministic.

    Args:
        source: the engine that ran the instance (its store, registered
            workflows and jobs are used; call this while it is open), or the
            :class:`~durable.stores.Store` holding it.
        instance: the instance or its id; it must be completed or failed.
        workflow: the workflow to replay (a ``@workflow`` function or a built
            graph); by default the one registered under the instance's
            workflow name with ``source``.
        jobs: builder job functions by name, when ``source`` is a store (an
            engine's own jobs are used otherwise).

    Returns:
        The replayed instance (as the throw-away engine recorded it).

    Raises:
        AssertionError: the instance is missing or unfinished; a step had no
            checkpoint at its key and would have run again (it did not);
            the replay raised :class:`~durable.NonDeterminismError`; or the
            replay ended with another status, output or error than the
            recorded run. The message names the workflow, instance and step.

    .. versionadded:: 0.1.0
    """
    store = source.store if isinstance(source, Engine) else source
    instance_id = instance if isinstance(instance, str) else instance.id
    recorded = await store.get_instance(instance_id)
    if recorded is None:
        raise AssertionError(f"assert_replays: there is no instance {instance_id!r} in the store")
    what = _describe(recorded)
    if recorded.status not in (InstanceStatus.COMPLETED, InstanceStatus.FAILED):
        raise AssertionError(
            f"assert_replays: {what} is {recorded.status}; only a completed or failed instance can be replayed"
        )
    definition = _definition(source, recorded, workflow)
    checkpoints = await store.get_steps(instance_id)

    replay_store = _ReplayStore()
    # As a crash right before the end would leave it: running, every checkpoint
    # in place, no deadline (a time-out is not what is being checked).
    unfinished = attrs.evolve(
        recorded, status=InstanceStatus.RUNNING, output=None, error=None, error_type=None,
        completed_at=None, deadline=None, step_results={},
    )
    await replay_store.inner.create_instance(unfinished)
    for checkpoint in checkpoints.values():
        await replay_store.inner.put_step(instance_id, checkpoint)

    async with Engine(store=cast(Store, replay_store)) as engine:
        if isinstance(source, Engine):
            for name in source.jobs.names():
                engine.jobs.register(name, source.jobs.get(name))
        for name, fn in (jobs or {}).items():
            engine.jobs.register(name, fn)
        engine.workflows.driver.definitions[recorded.workflow_name] = definition
        await engine.workflows.resume()
        replayed = await engine.workflows.wait(instance_id)

    if replay_store.would_run:
        step = replay_store.would_run[0]
        known = ", ".join(sorted(checkpoints)) or "none"
        raise AssertionError(
            f"replaying {what} would run step {step.step_name!r} again: there is no finished checkpoint "
            f"at its key {step.key!r} (the recorded run checkpointed: {known}). The code between steps "
            "must be deterministic: given the same step results it must call the same steps, in the same order."
        )
    if replayed.error_type == "NonDeterminismError":
        raise AssertionError(f"replaying {what} diverged from its checkpoints: {replayed.error}")
    if (replayed.status, replayed.error_type, replayed.error) != (recorded.status, recorded.error_type,
                                                                  recorded.error):
        raise AssertionError(
            f"replaying {what} {_outcome(replayed)}, but the recorded run {_outcome(recorded)}"
        )
    if replayed.output != recorded.output:
        raise AssertionError(
            f"replaying {what} returned {replayed.output!r}, but the recorded run returned {recorded.output!r}: "
            "the code between steps must be deterministic"
        )
    return replayed


def _definition(source: Engine | Store, recorded: WorkflowInstance, workflow: Any) -> Any:
    """The definition to replay: ``workflow``, or the one ``source`` registered under the instance's name."""
    if workflow is not None:
        definition = GraphDefinition(workflow) if isinstance(workflow, Graph) else getattr(
            workflow, "__durable_definition__", None)
        if definition is None:
            raise TypeError(f"assert_replays: workflow= takes a @workflow function or a built graph, got {workflow!r}")
        if definition.name != recorded.workflow_name:
            raise AssertionError(
                f"assert_replays: {_describe(recorded)} cannot be replayed with workflow {definition.name!r}"
            )
        return definition
    if isinstance(source, Engine):
        found = source.workflows.driver.definitions.get(recorded.workflow_name)
        if found is not None:
            return found
    raise AssertionError(
        f"assert_replays: workflow {recorded.workflow_name!r} of instance {recorded.id!r} is not registered "
        "with the engine given; pass workflow="
    )
