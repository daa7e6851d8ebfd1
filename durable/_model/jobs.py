"""External jobs: a step run by a worker of a queue, in whatever process serves it.

A workflow that reaches a step routed to a queue (``@step(queue="gpu")``,
``task(..., queue="gpu")``, ``engine.jobs.register(..., queue="gpu")``)
stores a :class:`JobRecord` and unloads; a worker serving the queue claims it
under its lease, runs it (with the step's retry policy and timeout), and
delivers the outcome to the instance as an internal signal
(:func:`job_signal`) in the same transaction that removes the job. The
workflow takes that signal as the step's checkpoint, once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from .retry import Retry
from ..errors import StoreError
from .serde import decode_value, encode_value

__all__ = ["JobRecord", "decode_job", "encode_job", "job_signal"]


def job_signal(step_key: str) -> str:
    """The internal signal name the outcome of the job at checkpoint ``step_key`` is delivered under."""
    return "job:" + hashlib.sha256(step_key.encode()).hexdigest()[:32]


@attrs.frozen
class JobRecord:
    """One queued external job.

    Attributes:
        instance_id: the instance whose step it is.
        step_key: the step's checkpoint key.
        workflow_name: the instance's workflow.
        step_name: the step's name.
        queue: the queue it waits on.
        target: a job name (resolved in the worker's job registry) or the step's
            function itself (stored by reference: its module must be importable
            in the worker).
        args: positional arguments of the call.
        kwargs: keyword arguments of the call.
        retry: the step's retry policy (the worker retries).
        timeout: seconds allowed per attempt.
        enqueued_at: when the workflow queued it.
        attempts: attempts that failed so far (recorded before each retry, so a
            worker that takes the job over after a crash goes on counting).
        retry_at: when the next attempt is due (a retry waiting out its backoff).
    """

    instance_id: str
    step_key: str
    workflow_name: str
    step_name: str
    queue: str
    target: Any
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    retry: Retry = Retry()
    timeout: float | None = None
    enqueued_at: datetime | None = None
    attempts: int = 0
    retry_at: datetime | None = None

    @property
    def target_name(self) -> str:
        """How messages name what the job runs."""
        if isinstance(self.target, str):
            return self.target
        return f"{getattr(self.target, '__module__', '?')}.{getattr(self.target, '__qualname__', repr(self.target))}"


def encode_job(job: JobRecord, *, limit: int | None = None) -> bytes:
    """The stored bytes of a job (:class:`~durable.SerializationError` if its arguments cannot be stored)."""
    return encode_value(job, f"the arguments of job {job.step_name!r}", limit=limit,
                        workflow=job.workflow_name, instance_id=job.instance_id, step=job.step_key)


def decode_job(data: bytes, where: str = "job", path: str | None = None) -> JobRecord:
    """A job from :func:`encode_job`'s bytes."""
    value = decode_value(data, where, path)
    if not isinstance(value, JobRecord):
        raise StoreError(f"corrupt record at {where}: not a job", path=path)
    return value
