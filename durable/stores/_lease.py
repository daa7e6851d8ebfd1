"""Leases: which process runs an instance, and whether that process is gone.

Every engine is an :class:`Owner` (an id, its host and pid, a heartbeat). The
store keeps one owner record per live engine and, per unfinished instance, the
id of the owner that runs it (its *lease*). An instance may be taken over by
another engine only when its owner is gone:

- its owner record is missing (the engine exited cleanly and released it);
- it ran on this host and its process is dead, a zombie, or its pid now
  belongs to a process that started later (a reused pid);
- it ran on another host and its heartbeat is older than its ``ttl``.

On one host the pid check is exact, so a live but slow process never loses
its instances. Heartbeats are wall-clock (``time.time()``), not the engine's
clock: they compare times across processes.

Owner records are JSON, not pickles: one process reads another's record to
decide liveness, and that must never run code.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable

import attrs

__all__ = ["LeaseLost", "Owner", "may_claim", "record_alive"]


class LeaseLost(Exception):
    """A write for an instance this engine no longer owns (taken over, or finished elsewhere)."""


def _start_ticks(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of ``pid`` from ``/proc``; ``None`` if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _pid_alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    info = _start_ticks(pid)
    if info is None:
        return True  # no /proc: trust kill(0)
    state, ticks = info
    if state in ("Z", "X"):
        return False  # killed, not reaped yet
    return started is None or ticks == started


@attrs.frozen
class Owner:
    """An engine that runs instances, as recorded in the store.

    Attributes:
        id: unique per engine run.
        host: ``socket.gethostname()`` of its process.
        pid: its process id.
        pid_started: the process's start time (``/proc``), to detect a reused pid.
        heartbeat: ``time.time()`` of its latest heartbeat.
        ttl: seconds after its heartbeat when an owner on another host counts as gone.
    """

    id: str
    host: str
    pid: int
    pid_started: int | None
    heartbeat: float
    ttl: float

    @classmethod
    def this_process(cls, ttl: float = 30.0) -> Owner:
        """A new owner for an engine starting in this process."""
        pid = os.getpid()
        info = _start_ticks(pid)
        return cls(id=uuid.uuid4().hex, host=socket.gethostname(), pid=pid,
                   pid_started=info[1] if info else None, heartbeat=time.time(), ttl=float(ttl))

    def beat(self) -> Owner:
        """This owner with a fresh heartbeat."""
        return attrs.evolve(self, heartbeat=time.time())

    def is_alive(self, now: float | None = None) -> bool:
        """Whether the process this record names may still be running its instances."""
        if self.host == socket.gethostname():
            if self.pid == os.getpid():
                # Another engine of this very process, or an earlier process that had our pid.
                info = _start_ticks(self.pid)
                return info is None or self.pid_started is None or info[1] == self.pid_started
            return _pid_alive(self.pid, self.pid_started)
        return (time.time() if now is None else now) < self.heartbeat + self.ttl

    def encode(self) -> bytes:
        """The record as stored (JSON)."""
        return json.dumps(attrs.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> Owner | None:
        """The record in ``data``; ``None`` if it is not a readable owner record (counts as gone)."""
        try:
            fields = json.loads(data)
            return cls(id=str(fields["id"]), host=str(fields["host"]), pid=int(fields["pid"]),
                       pid_started=None if fields["pid_started"] is None else int(fields["pid_started"]),
                       heartbeat=float(fields["heartbeat"]), ttl=float(fields["ttl"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def may_claim(holder: str | None, owner_id: str, alive: Callable[[str], bool]) -> bool:
    """Whether ``owner_id`` may take an instance whose lease ``holder`` holds (``alive`` checks a holder)."""
    return holder is None or holder == owner_id or not alive(holder)


def record_alive(record: Owner | None) -> bool:
    """Whether an owner record (``None``: missing) names a live owner."""
    return record is not None and record.is_alive()
