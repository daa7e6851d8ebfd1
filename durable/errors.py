"""The public exception hierarchy of ``durable``.

Every error derives from :class:`DurableError`. Each carries the names of the
workflow, instance and step involved (where known) as attributes and in its
message, and each survives a pickle round trip: failed steps are checkpointed
together with their exception, so exceptions must be storable.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ChildWorkflowFailed",
    "Deduplicated",
    "DurableError",
    "EventsDropped",
    "GraphError",
    "IdConflict",
    "InstanceNotFound",
    "JobNotFound",
    "MapFailed",
    "NoChoiceMatched",
    "NonDeterminismError",
    "ParallelFailed",
    "QueueNotFound",
    "SerializationError",
    "SignalTimeout",
    "StepFailed",
    "StepTimeout",
    "StoreError",
    "WorkflowCancelled",
    "WorkflowNotFound",
    "WorkflowTimeout",
]


def _rebuild(cls: type[DurableError], message: str, fields: dict[str, Any]) -> DurableError:
    err = cls.__new__(cls)
    DurableError.__init__(err, message, **fields)
    return err


class DurableError(Exception):
    """Root of every error raised by ``durable``.

    Args:
        message: the human-readable message.
        workflow: name of the workflow involved, if any.
        instance_id: id of the instance involved, if any.
        step: name or checkpoint key of the step involved, if any.
        **extra: further keyword arguments become attributes (a subclass
            declares the ones durable sets, such as ``StepFailed.attempts``).

    Attributes:
        message: the message as given, without the workflow/instance/step suffix of ``str(error)``.
        workflow: as given, or ``None``.
        instance_id: as given, or ``None``.
        step: as given, or ``None``.

    .. versionadded:: 0.1.0
    """

    message: str
    workflow: str | None
    instance_id: str | None
    step: str | None
    _fields: dict[str, Any]  # what a pickle rebuilds the error from: the keyword arguments given

    def __init__(
        self,
        message: str,
        *,
        workflow: str | None = None,
        instance_id: str | None = None,
        step: str | None = None,
        **extra: Any,
    ) -> None:
        where = []
        if workflow is not None:
            where.append(f"workflow {workflow!r}")
        if instance_id is not None:
            where.append(f"instance {instance_id!r}")
        if step is not None:
            where.append(f"step {step!r}")
        full = f"{message} ({', '.join(where)})" if where else message
        super().__init__(full)
        self.message = message
        self.workflow = workflow
        self.instance_id = instance_id
        self.step = step
        for key, value in extra.items():
            setattr(self, key, value)
        self._fields = {"workflow": workflow, "instance_id": instance_id, "step": step, **extra}

    def __reduce__(self) -> tuple[Any, ...]:
        state = self.__dict__
        if self.__cause__ is not None:
            # Kept across a checkpoint: a builder task's StepFailed carries the
            # job's own error as its cause, and a Catch matches on it, on replay too.
            state = {**state, "__cause__": self.__cause__}
        return (_rebuild, (type(self), self.message, self._fields), state)


class GraphError(DurableError, ValueError):
    """A workflow graph is malformed: raised by ``build()`` naming the state.

    .. versionadded:: 0.1.0
    """


class WorkflowNotFound(DurableError, LookupError):
    """No workflow of that name is registered; the message lists the registered names.

    .. versionadded:: 0.1.0
    """


class JobNotFound(DurableError, LookupError):
    """A task names a job that is not registered with ``engine.jobs``.

    .. versionadded:: 0.1.0
    """


class StepFailed(DurableError):
    """A builder task failed after all its attempts; ``__cause__`` is the last error.

    Attributes:
        attempts: how many attempts were made; ``None`` when not known (a
            ``ParallelFailed`` or ``MapFailed``, or a failure replayed from a
            checkpoint that kept only the error's text).

    .. versionadded:: 0.1.0
    """

    attempts: int | None = None  # (a class default: instances carry it only when it was given)


class ParallelFailed(StepFailed):
    """A ``wait-all`` parallel state had failing branches.

    Attributes:
        errors: the error of each failed branch, keyed by branch name (builder)
            or position as a str, ``"0"``, ``"1"``... (decorator ``parallel()``).
            The subclass :class:`MapFailed` keys them by item index (an int),
            hence the union.

    .. versionadded:: 0.1.0
    """

    errors: dict[str, BaseException] | dict[int, BaseException]


class MapFailed(ParallelFailed):
    """A ``wait-all`` map (``durable.map`` or a builder map state) had failing items.

    Attributes:
        errors: the error of each failed item, keyed by the item's index in the list.

    .. versionadded:: 0.1.0
    """

    errors: dict[int, BaseException]


class StepTimeout(DurableError, TimeoutError):
    """One attempt of a step ran longer than its ``timeout``; counts as a failed attempt.

    .. versionadded:: 0.1.0
    """


class ChildWorkflowFailed(DurableError):
    """A child workflow (a ``@workflow`` awaited inside a workflow) did not complete.

    Attributes:
        child_id: the child instance's id.
        child_status: ``failed``, ``timed_out`` or ``cancelled``.
        child_error_type: the class name of the child's error (``ValueError``...).

    Each is ``None`` when not known: the child's error had no type recorded,
    or the failure was replayed from a checkpoint that kept only its text.

    .. versionadded:: 0.1.0
    """

    # Class defaults: instances carry them only when they were given.
    child_id: str | None = None
    child_status: str | None = None
    child_error_type: str | None = None


class SignalTimeout(DurableError, TimeoutError):
    """``wait_for_signal(name, timeout=...)`` timed out and no ``default`` was given.

    .. versionadded:: 0.1.0
    """


class WorkflowTimeout(DurableError, TimeoutError):
    """A workflow instance passed its deadline and ended ``timed_out``.

    .. versionadded:: 0.1.0
    """


class WorkflowCancelled(DurableError):
    """A workflow instance was cancelled.

    .. versionadded:: 0.1.0
    """


class NoChoiceMatched(DurableError):
    """A choice state had no matching condition and no default.

    .. versionadded:: 0.1.0
    """


class NonDeterminismError(DurableError):
    """Replay diverged from what was checkpointed; the message says expected vs found.

    .. versionadded:: 0.1.0
    """


class SerializationError(DurableError, TypeError):
    """A value could not be checkpointed (it does not pickle); the instance is left intact.

    .. versionadded:: 0.1.0
    """


class StoreError(DurableError):
    """The store is missing, foreign, corrupt, of a newer format, or failed to write.

    Attributes:
        path: the store's path, when it has one (``None`` otherwise).

    .. versionadded:: 0.1.0
    """

    path: str | None = None  # (a class default: instances carry it only when it was given)


class IdConflict(DurableError):
    """``start(..., id=...)`` found an instance under that id that it may not return.

    Raised when the stored instance belongs to another workflow, or was
    started with another input (``if_exists="return"``, the default), or
    whenever the id exists (``if_exists="error"``). The message names the id
    and the workflow, and says which of these it is. ``instance_id`` is the
    id; ``existing_workflow`` the stored instance's workflow.

    .. versionadded:: 0.1.0
    """

    existing_workflow: str | None = None  # (a class default: instances carry it only when it was given)


class Deduplicated(IdConflict):
    """``start(..., dedup_id=...)``: an unfinished instance of that queue already holds the dedup id.

    Nothing was written. ``existing_id`` is the id of the instance holding it.

    .. versionadded:: 0.2.0
    """

    existing_id: str | None = None  # (a class default: instances carry it only when it was given)


class EventsDropped(DurableError):
    """An event subscription fell further behind than its buffer and was dropped.

    Read on from the store's event log, which keeps every event:
    ``Client.events(instance_id, after=the last event's id)``.

    .. versionadded:: 0.2.0
    """


class QueueNotFound(DurableError, LookupError):
    """A queue name that no engine or client declared on this store.

    .. versionadded:: 0.2.0
    """


class InstanceNotFound(DurableError, LookupError):
    """No instance has that id in the store.

    .. versionadded:: 0.1.0
    """
