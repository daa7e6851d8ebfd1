"""Queues: a named line of work with limits every worker on a store enforces.

A :class:`Queue` is declared in code (``serial = durable.Queue("serial",
concurrency=1)``) and recorded in the store when an engine registers it, so
every worker reads the same limits from the store at each claim, whichever
code it runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import attrs

from .ids import check_workflow_name

__all__ = ["DEFAULT_QUEUE", "MAX_PRIORITY", "Admission", "Queue", "admit", "check_priority", "record_starts"]

DEFAULT_QUEUE = "default"
"""The queue of a workflow that names none, started through a client or with ``queue=``."""

MAX_PRIORITY = 1_000_000
"""Priorities are integers in ``[-MAX_PRIORITY, MAX_PRIORITY]``; higher runs first."""


def check_priority(priority: object) -> int:
    """``priority`` if it is an int within ``±MAX_PRIORITY``; ``ValueError`` or ``TypeError`` otherwise."""
    if type(priority) is not int:
        raise TypeError(f"priority must be an int, got {priority!r}")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be between {-MAX_PRIORITY} and {MAX_PRIORITY}, got {priority}")
    return priority


def _check_count(value: object, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ValueError(f"{what} must be a positive int or None, got {value!r}")
    return value


def _check_rate(value: object) -> tuple[int, float] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"rate_limit must be a pair (n, seconds), got {value!r}")
    n, seconds = value
    if type(n) is not int or n < 1:
        raise ValueError(f"rate_limit: n must be a positive int, got {n!r}")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds < math.inf:
        raise ValueError(f"rate_limit: seconds must be a positive number, got {seconds!r}")
    return (n, float(seconds))


def _check_concurrency(value: object) -> int | None:
    return _check_count(value, "concurrency")


def _check_worker_concurrency(value: object) -> int | None:
    return _check_count(value, "worker_concurrency")


def _check_name(_instance: object, _attribute: object, value: str) -> None:
    check_workflow_name(value)


@attrs.frozen
class Queue:
    """A queue of workflow instances (and external jobs) with limits that hold across every worker.

    Args:
        name: the queue's name (what ``start(..., queue=)``, ``@workflow(queue=)``
            and ``durable worker --queue`` use).
        concurrency: at most this many of its instances in flight at once,
            counted across every worker on the store (an instance is in flight
            from the moment a worker takes it until it finishes, sleeping and
            waiting included). ``None``: no bound.
        worker_concurrency: at most this many of its instances running in any
            one worker at once. ``None``: no bound.
        rate_limit: ``(n, seconds)``: at most ``n`` of its instances started
            in any window of ``seconds``, across every worker. ``None``: no bound.
        priority: whether ``start(..., priority=)`` orders the queue (higher
            first, first in first out within a priority). Without it every
            instance is taken in the order it was started, and a non-zero
            priority is refused.

    .. versionadded:: 0.2.0
    """

    name: str = attrs.field(validator=_check_name)
    concurrency: int | None = attrs.field(default=None, converter=_check_concurrency)
    worker_concurrency: int | None = attrs.field(default=None, converter=_check_worker_concurrency)
    rate_limit: tuple[int, float] | None = attrs.field(default=None, converter=_check_rate)
    priority: bool = attrs.field(default=False, converter=bool)

    def encode(self) -> bytes:
        """The queue as stored (JSON: a store never unpickles a queue)."""
        return json.dumps({"name": self.name, "concurrency": self.concurrency,
                           "worker_concurrency": self.worker_concurrency,
                           "rate_limit": list(self.rate_limit) if self.rate_limit else None,
                           "priority": self.priority}, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> Queue:
        """A queue from :meth:`encode`'s bytes (``ValueError`` if they are not one)."""
        fields: dict[str, Any] = json.loads(data)
        rate = fields.get("rate_limit")
        return cls(str(fields["name"]), fields.get("concurrency"), fields.get("worker_concurrency"),
                   tuple(rate) if rate else None, bool(fields.get("priority")))


@attrs.define
class Admission:
    """How many more of one queue a claim may start now under its limits, and what it read to decide."""

    queue: Queue | None
    allowed: int
    starts: list[int]  #: start times (µs) within the rate window, oldest first
    due: int | None  #: when the rate limit lets one more start (µs), if it holds now


def admit(queue: Queue | None, *, in_flight: Callable[[], int], starts: list[int], now_us: int,
          free: int | None, remaining: int | None) -> Admission:
    """How many of ``queue`` a claim may start at ``now_us``: at most ``free`` (this worker's slots) and
    ``remaining`` (the claim's limit), its ``concurrency`` minus ``in_flight()`` (counted only if bounded), and
    what its ``rate_limit`` leaves of the window given the recorded ``starts``. Shared by both stores' claims of
    instances and of external jobs, so that one rule holds everywhere."""
    allowed = free if free is not None else 1 << 62
    if remaining is not None:
        allowed = min(allowed, remaining)
    recent: list[int] = []
    due: int | None = None
    if queue is not None and allowed > 0 and queue.concurrency is not None:
        allowed = min(allowed, queue.concurrency - in_flight())
    if queue is not None and queue.rate_limit is not None:
        n, seconds = queue.rate_limit
        window = int(seconds * 1_000_000)
        recent = [s for s in starts if s > now_us - window]
        if len(recent) >= n:
            due = min(recent) + window
        allowed = min(allowed, n - len(recent))
    return Admission(queue, max(0, allowed), recent, due)


def record_starts(admission: Admission, count: int, now_us: int) -> tuple[list[int] | None, int | None]:
    """After ``count`` more started at ``now_us``: the start times to store (``None``: nothing to store, no rate
    limit) and when one more may start (µs; ``None``: now)."""
    queue = admission.queue
    if queue is None or queue.rate_limit is None or not count:
        return None, None
    n, seconds = queue.rate_limit
    starts = (admission.starts + [now_us] * count)[-n:]
    return starts, (min(starts) + int(seconds * 1_000_000) if len(starts) >= n else None)
