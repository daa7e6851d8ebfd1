"""Group commit: one writer thread commits every queued write in one LMDB transaction.

Callers on the trio loop queue a *write function* (``fn(txn) -> result``) and,
for a durable write, park their task until it is committed. The writer thread
takes everything queued, runs it in one write transaction, commits it (one
fsync), and then reschedules every waiting task through the trio token. So N concurrent
checkpoints cost one fsync, a lone sequential checkpoint pays exactly one and
waits for no timer, and the trio loop never blocks on the disk.

Non-durable writes do not wake the writer on their own: they ride along with
the next durable commit, or are committed within about ``lazy_delay`` seconds
(the idle thread looks at its queue that often). Queueing takes no lock. A
non-durable write with a ``key`` is skipped when a later write of the same
batch has that key: a step's "running" marker is never even encoded when the
step's result follows it into the same commit, the common case.

Write functions must not raise except on a store failure; values are encoded
before they are queued, so bad user data never reaches this thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from .._model.clock import pause_autojump, resume_autojump
from ._lease import LeaseLost

__all__ = ["WriteRequest", "Writer", "committed", "outcome_of", "run_writer", "superseded"]

WriteFn = Callable[..., Any]  # fn(txn, *args)


@attrs.define(eq=False)
class WriteRequest:
    """One queued write, ``fn(txn, *args)``; ``waiter`` (a parked task) is rescheduled once it is
    committed (or failed). ``args`` spares a closure (and its cells) per write."""

    fn: WriteFn
    durable: bool
    waiter: trio.lowlevel.Task | None
    key: bytes | None = None
    args: tuple[Any, ...] = ()
    result: Any = None
    error: BaseException | None = None
    note: bytes | None = None  # handed to the store's commit hook once committed (a wake-up)


def superseded(batch: list[WriteRequest]) -> set[int]:
    """Indexes of the non-durable writes in ``batch`` that a later write of the same key replaces."""
    last: dict[bytes, int] = {}
    for i, r in enumerate(batch):
        if r.key is not None:
            last[r.key] = i
    return {i for i, r in enumerate(batch) if r.key is not None and not r.durable and last[r.key] != i}


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@attrs.define(eq=False)
class Writer:
    """The writer thread's state; ``run_batch`` does the transaction for one batch.

    The queue is a :class:`collections.deque` (appends and pops are atomic), so
    queueing a write takes no lock. The thread sleeps on ``_wake``, a plain
    lock used as a flag: held while there is nothing to wake it for, released
    by a durable write (or :meth:`stop`). A wake-up that finds the queue
    already taken is harmless: the thread finds nothing and sleeps again.
    """

    run_batch: Callable[[list[WriteRequest]], None]
    token: trio.lowlevel.TrioToken
    lazy_delay: float = 0.1
    name: str = "durable-writer"  # the thread's (what profilers and thread dumps show)
    _queue: deque[WriteRequest] = attrs.field(factory=deque)
    _wake: threading.Lock = attrs.field(factory=_held_lock)
    _busy: threading.Lock = attrs.field(factory=threading.Lock)  # held while a batch is taken and run
    _stopping: bool = False
    _thread: threading.Thread | None = None
    batches: int = 0
    writes: int = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def submit(self, request: WriteRequest) -> None:
        """Queue ``request`` (from the trio thread); a durable one wakes the writer thread.

        A non-durable write does not wake it (a wake-up costs the trio thread
        the GIL, once per step): the thread looks at the queue at least every
        ``lazy_delay`` seconds anyway.
        """
        if self._stopping:
            raise RuntimeError("the store's writer has stopped")
        self._queue.append(request)
        if request.durable:
            self._signal()

    def _signal(self) -> None:
        if self._wake.locked():
            try:
                self._wake.release()
            except RuntimeError:
                pass  # released meanwhile by another thread (stop): woken all the same

    def stop(self) -> None:
        """Commit what is queued, then end the thread (blocking: call from a worker thread).

        Called once nothing submits any more (the store dropped this writer on
        the trio thread first), so every queued write is committed.
        """
        self._stopping = True
        self._signal()
        if self._thread is not None:
            self._thread.join()

    def claim_idle(self) -> list[WriteRequest] | None:
        """(The trio thread) If the writer thread is neither taking nor running a batch, keep it from starting
        one and take what is queued (to write it some other way, in order, before anything queued later);
        ``None`` if it is busy. Every successful call must be followed by :meth:`release_idle`."""
        if not self._busy.acquire(blocking=False):
            return None
        queue = self._queue
        return [queue.popleft() for _ in range(len(queue))]

    def release_idle(self, unwritten: Sequence[WriteRequest] = ()) -> None:
        """End a :meth:`claim_idle`: ``unwritten`` (taken, not written) go back to the front of the queue, in
        order, and the writer thread may run again (woken if a durable write waits)."""
        self._queue.extendleft(reversed(unwritten))
        waiting = any(r.durable for r in self._queue)  # read before the writer thread may take from it
        self._busy.release()
        if waiting:
            self._signal()

    def _take(self) -> list[WriteRequest] | None:
        """The next batch: waits for a durable write, ``lazy_delay``, or a stop; ``None`` to end. Returns
        holding ``_busy`` (unless ``None``)."""
        queue = self._queue
        while True:
            if not self._stopping:
                self._wake.acquire(timeout=self.lazy_delay)
            self._busy.acquire()
            if queue:
                return [queue.popleft() for _ in range(len(queue))]
            self._busy.release()
            if self._stopping:
                return None

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
            finally:
                self._busy.release()
            self.batches += 1
            self.writes += len(batch)
            waiters = [r.waiter for r in batch if r.waiter is not None]
            del batch  # not kept alive (closures, records) while the thread waits for the next one
            if waiters:
                try:
                    self.token.run_sync_soon(_wake_all, waiters)
                except trio.RunFinishedError:
                    return
                del waiters


def _wake_all(tasks: list[trio.lowlevel.Task]) -> None:
    for task in tasks:
        trio.lowlevel.reschedule(task)


def _refuse_abort(raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


async def committed(writer: Writer, request: WriteRequest) -> Any:
    """Queue a durable ``request`` (its ``waiter`` the current task) and park until its batch committed or
    failed; then :func:`outcome_of` it.

    Uncancellable, like a shielded wait but cheaper (no cancel scope per
    checkpoint): once queued the write will land, and the caller must not
    move on (or be told it failed) before knowing that it has. A mock clock
    does not leap ahead meanwhile.
    """
    writer.submit(request)
    paused = pause_autojump()
    try:
        await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
    finally:
        resume_autojump(paused)
    return outcome_of(request)


def outcome_of(request: WriteRequest) -> Any:
    """A done request's result; raises its error, or the ``LeaseLost`` a fenced write returned (returned, so
    that the rest of its batch still commits)."""
    if request.error is not None:
        raise request.error
    if isinstance(request.result, LeaseLost):
        raise request.result
    return request.result


async def run_writer(writer: Writer, attach: Callable[[Writer | None], None],
                     task_status: trio.TaskStatus[None]) -> None:
    """A store's ``run()``: start ``writer``'s thread and ``attach`` it to the store, report started, and run
    until cancelled; then detach it and stop it (it commits what is queued first), shielded."""
    writer.start()
    attach(writer)
    task_status.started()
    try:
        await trio.sleep_forever()
    finally:
        attach(None)
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(writer.stop)
