"""``engine.queues``: the queues an engine knows, recorded in the store when it runs."""

from __future__ import annotations

from typing import final

from .._model.queues import DEFAULT_QUEUE, Queue

__all__ = ["QueueRegistry"]


@final
class QueueRegistry:
    """The queues declared to one engine (``engine.queues.register(Queue(...))``).

    Registered queues are written to the store when the engine starts (or at
    once, if it runs), so every worker on the store enforces the same limits.
    The queue ``"default"`` always exists, without limits unless registered.

    .. versionadded:: 0.2.0
    """

    def __init__(self) -> None:
        self._queues: dict[str, Queue] = {}
        self._pending: list[Queue] = []  # registered, not yet written to the store

    def register(self, queue: Queue) -> Queue:
        """Declare ``queue`` (a :class:`~durable.Queue`); the same name again replaces its limits."""
        if not isinstance(queue, Queue):
            raise TypeError(f"engine.queues.register() takes a durable.Queue, got {queue!r}")
        self._queues[queue.name] = queue
        self._pending.append(queue)
        return queue

    def get(self, name: str) -> Queue | None:
        """The queue ``name`` as declared here, or ``None``."""
        return self._queues.get(name)

    def names(self) -> list[str]:
        """The declared queues' names, ``"default"`` included, sorted."""
        return sorted({DEFAULT_QUEUE, *self._queues})

    def take_pending(self) -> list[Queue]:
        """The queues declared since the last call (to write to the store)."""
        pending, self._pending = self._pending, []
        return pending

    def put_back(self, unwritten: list[Queue]) -> None:
        """Queues taken by :meth:`take_pending` whose write failed: written at the next flush (unless declared
        again meanwhile: the newer declaration is the one to write)."""
        self._pending[:0] = [q for q in unwritten if self._queues.get(q.name) is q and q not in self._pending]

    def __contains__(self, name: object) -> bool:
        return name == DEFAULT_QUEUE or name in self._queues
