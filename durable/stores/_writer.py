"""Group commit: one writer thread commits every queued write in one LMDB transaction.

Callers on the trio loop queue a *write function* (``fn(txn) -> result``) and,
for a durable write, park their task until it is committed. The writer thread
takes everything queued, runs it in one write transaction, commits it (one
fsync), and then reschedules every waiting task through the trio token. So N concurrent
checkpoints cost one fsync, a lone sequential checkpoint pays exactly one and
waits for no timer, and the trio loop never blocks on the disk.

Non-durable writes do not wake the writer on their own: they ride along with
the next durable commit, or are committed within about ``lazy_delay`` seconds
(the idle thread looks at its queue that often). A
non-durable write with a ``key`` is skipped when a later write of the same
batch has that key: a step's "running" marker is never even encoded when the
step's result follows it into the same commit, the common case.

Write functions must not raise except on a store failure; values are encoded
before they are queued, so bad user data never reaches this thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import attrs
import lmdb
import trio

__all__ = ["WriteRequest", "Writer", "superseded"]

WriteFn = Callable[[lmdb.Transaction], Any]


@attrs.define(eq=False)
class WriteRequest:
    """One queued write; ``waiter`` (a parked task) is rescheduled once it is committed (or failed)."""

    fn: WriteFn
    durable: bool
    waiter: trio.lowlevel.Task | None
    key: bytes | None = None
    result: Any = None
    error: BaseException | None = None


def superseded(batch: list[WriteRequest]) -> set[int]:
    """Indexes of the non-durable writes in ``batch`` that a later write of the same key replaces."""
    last: dict[bytes, int] = {}
    for i, r in enumerate(batch):
        if r.key is not None:
            last[r.key] = i
    return {i for i, r in enumerate(batch) if r.key is not None and not r.durable and last[r.key] != i}


@attrs.define(eq=False)
class Writer:
    """The writer thread's state; ``run_batch`` does the transaction for one batch."""

    run_batch: Callable[[list[WriteRequest]], None]
    token: trio.lowlevel.TrioToken
    lazy_delay: float = 0.1
    _queue: list[WriteRequest] = attrs.field(factory=list)
    _durable_waiting: int = 0
    _cond: threading.Condition = attrs.field(factory=threading.Condition)
    _stopping: bool = False
    _oldest: float = 0.0  # when the oldest queued write was queued
    _thread: threading.Thread | None = None
    batches: int = 0
    writes: int = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="durable-lmdb-writer", daemon=True)
        self._thread.start()

    def submit(self, request: WriteRequest) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the store's writer has stopped")
            if not self._queue:
                self._oldest = time.monotonic()
            self._queue.append(request)
            if request.durable:
                self._durable_waiting += 1
                self._cond.notify()
            # A non-durable write does not wake the thread (a wake-up costs the
            # trio thread the GIL, once per step): the thread looks at the queue
            # at least every lazy_delay seconds anyway.

    def stop(self) -> None:
        """Commit what is queued, then end the thread (blocking: call from a worker thread)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _take(self) -> list[WriteRequest] | None:
        with self._cond:
            while True:
                if self._durable_waiting or (self._stopping and self._queue):
                    break
                if self._stopping:
                    return None
                if self._queue:
                    remaining = self._oldest + self.lazy_delay - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                else:
                    self._cond.wait(self.lazy_delay)
            batch, self._queue = self._queue, []
            self._durable_waiting = 0
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self.run_batch(batch)
            except BaseException as exc:  # never let the thread die silently
                for r in batch:
                    r.error = exc
            self.batches += 1
            self.writes += len(batch)
            waiters = [r.waiter for r in batch if r.waiter is not None]
            if waiters:
                try:
                    self.token.run_sync_soon(_wake_all, waiters)
                except trio.RunFinishedError:
                    return


def _wake_all(tasks: list[trio.lowlevel.Task]) -> None:
    for task in tasks:
        trio.lowlevel.reschedule(task)
