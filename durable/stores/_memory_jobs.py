"""The memory store's external jobs: queued, held and finished, as the LMDB store's ``jobs.py`` keeps them.

:class:`JobTables` holds the three tables (jobs by key, waiting jobs by
queue and sequence, held jobs by key) and the claim logic; the store gives it
what it does not own: whether an owner is alive, and each queue's admission
(:func:`durable._model.queues.admit`) and start records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from .._model.queues import Admission

__all__ = ["JobTables"]

Admit = Callable[[str, int, "int | None", int], Admission]
"""``admit(queue, held, free, remaining)``: how many more jobs of ``queue`` may start now."""


@attrs.define
class JobTables:
    """Jobs by key (``instance id NUL step key``), waiting ones by queue and sequence, held ones by key."""

    jobs: dict[bytes, bytes] = attrs.Factory(dict)
    waiting: dict[str, dict[int, bytes]] = attrs.Factory(dict)
    held: dict[bytes, tuple[str, str]] = attrs.Factory(dict)  # key -> (owner id, queue)

    def enqueue(self, key: bytes, queue: str, data: bytes, seq: int) -> bool:
        """Queue a job unless one is queued or held under ``key``; whether it was new."""
        if key in self.jobs:
            return False
        self.jobs[key] = data
        self.waiting.setdefault(queue, {})[seq] = key
        return True

    def claim(self, me: str, queue_names: list[str], limit: int, free: Mapping[str, int] | None,
              alive: Callable[[str], bool], admit: Admit,
              started: Callable[[str, Admission, int], None]) -> list[tuple[bytes, bytes]]:
        """Take up to ``limit`` jobs for owner ``me``: those of gone owners first (they are in flight
        already), then waiting ones, as ``admit`` allows; ``(key, data)`` each."""
        out: list[tuple[bytes, bytes]] = []
        wanted = set(queue_names)
        counts: dict[str, int] = {}
        known: dict[str, bool] = {}
        stale: list[tuple[bytes, str]] = []
        for key in sorted(self.held):
            holder, queue = self.held[key]
            counts[queue] = counts.get(queue, 0) + 1
            if queue not in wanted or holder == me:
                continue
            if holder not in known:
                known[holder] = alive(holder)
            if not known[holder]:
                stale.append((key, queue))
        slots = dict(free or {})
        reclaimed: dict[str, int] = {}
        for key, queue in stale:
            room = slots.get(queue)
            if len(out) >= limit or (room is not None and reclaimed.get(queue, 0) >= room):
                continue  # this worker has no slot for it: another worker (or a later look) takes it
            data = self.jobs.get(key)
            if data is None:
                self.held.pop(key, None)
                continue
            self.held[key] = (me, queue)
            out.append((key, data))
            reclaimed[queue] = reclaimed.get(queue, 0) + 1
        for q in queue_names:
            room = slots.get(q)
            adm = admit(q, counts.get(q, 0), room - reclaimed.get(q, 0) if room is not None else None,
                        limit - len(out))
            waiting = self.waiting.get(q, {})
            count = 0
            for seq in sorted(waiting)[:adm.allowed]:
                key = waiting.pop(seq)
                data = self.jobs.get(key)
                if data is None:
                    continue
                self.held[key] = (me, q)
                out.append((key, data))
                count += 1
            started(q, adm, count)
        return out

    def holds(self, key: bytes, owner_id: str) -> bool:
        """Whether ``owner_id`` holds the job ``key``."""
        held = self.held.get(key)
        return held is not None and held[0] == owner_id and key in self.jobs

    def remove(self, key: bytes) -> None:
        """Forget a finished job."""
        self.held.pop(key, None)
        self.jobs.pop(key, None)

    def listing(self, prefix: bytes) -> list[tuple[bytes, bytes, str | None]]:
        """Jobs whose key starts with ``prefix``: ``(key, data, holder or None)`` each, by key."""
        return [(key, self.jobs[key], held[0] if (held := self.held.get(key)) else None)
                for key in sorted(self.jobs) if key.startswith(prefix)]

    def drop(self, prefix: bytes) -> None:
        """Remove the jobs whose key starts with ``prefix`` (an instance finished or was deleted)."""
        doomed = {key for key in self.jobs if key.startswith(prefix)}
        if not doomed:
            return
        for waiting in self.waiting.values():
            for seq in [seq for seq, key in waiting.items() if key in doomed]:
                del waiting[seq]
        for key in doomed:
            self.remove(key)
