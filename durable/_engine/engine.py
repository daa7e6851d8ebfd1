"""The engine: owns the store, the registries, the event bus and one nursery.

Everything the engine runs (instances, the store's writer thread, async event
listeners) lives in the nursery it opens on ``async with``; leaving the block
stops every instance (they stay ``running`` in the store, for ``resume()``),
releases the engine's leases and flushes the store.

Each engine is a lease :class:`~durable.stores.Owner`: the instances it starts
or resumes are leased to it, and a heartbeat task refreshes its record every
``lease_ttl / 3`` seconds. The same task notices instances this engine has
lost (cancelled by another process, or taken over after it looked gone) and
stops running them.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from types import TracebackType
from collections.abc import Callable, Iterable
from typing import Any, final

import trio

from .._model import clock as _clock
from .._model.serde import check_limit
from .._model.eventlog import encode_detail
from .driver import RunDriver
from .events import TERMINAL_EVENTS, Event, EventBus
from .jobs import JobRegistry
from .queues import QueueRegistry
from .run import PutStepLater
from .service import WorkflowService
from ..stores import LMDBStore, MemoryStore, Owner, Store
from ..stores._wake import WakeListener, split_wakeup, store_listener

__all__ = ["Engine"]

log = logging.getLogger("durable.engine")


@final
class Engine:
    """Runs workflows; use as ``async with Engine(store=...) as engine:``.

    Args:
        store: where instances and checkpoints are kept (default: a new
            :class:`MemoryStore`).
        lease_ttl: seconds after its last heartbeat when this engine counts as
            gone for engines on *other hosts* (on one host a dead process is
            detected at once, by its pid).
        suspend_after: a workflow whose :func:`durable.sleep` is longer than
            this many seconds is unloaded from memory until it wakes (replayed
            from its checkpoints then); shorter sleeps wait in memory.
        max_payload_bytes: the largest encoded input, output, step result or
            signal payload stored (``None``, the default: the store's own
            limit, 16 MiB unless it was made with another). A larger one is a
            :class:`~durable.SerializationError` naming the step, its size and
            the limit, raised before anything of it is written: ``start()``
            raises it, a step's fails the instance. Sets the store's
            ``max_payload_bytes``: a ``TypeError`` for a store without one.
        poll_interval: seconds between the fallback looks for what no wake-up
            reports: new work for :meth:`serve`, instances whose engine died,
            signals and job results sent by other processes (default: 1 s for
            work, 0.2 s for signals). On one host with an LMDB store, and on
            any host with a PostgreSQL store (``LISTEN``/``NOTIFY``), other
            processes wake this engine at once, so this matters only where
            no wake-up reaches, or one was lost (the original's ``pollInterval``).
        record_events: append every event of the instances this engine runs
            to the store's event log, so other processes can read and stream
            them (``Client.events``). ``None`` (the default): while it serves
            (:meth:`serve`, ``durable worker``), the way work from clients is
            run; ``True``: always; ``False``: never. Each instance's final
            event is in the log in every case. The log costs a sequential step
            13 to 27 % more (65 to 130 µs on the 2-core dev VM).

    Attributes:
        workflows: register, start, wait for, inspect, cancel and resume instances.
        jobs: the jobs builder tasks run by name.
        queues: the queues this engine declares (:class:`~durable.Queue`).
        events: listeners and subscriptions for the workflow events.
        store: the store.

    .. versionadded:: 0.1.0
    """

    def __init__(self, store: Store | None = None, *, lease_ttl: float = 30.0, suspend_after: float = 1.0,
                 max_payload_bytes: int | None = None, poll_interval: float | None = None,
                 record_events: bool | None = None) -> None:
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be a positive number of seconds, got {lease_ttl!r}")
        if not suspend_after >= 0:
            raise ValueError(f"suspend_after must be a number of seconds >= 0, got {suspend_after!r}")
        self.store: Store = store if store is not None else MemoryStore()
        if max_payload_bytes is not None:
            if not hasattr(self.store, "max_payload_bytes"):
                raise TypeError(f"max_payload_bytes: the store {self.store!r} has no payload limit to set "
                                "(a 'max_payload_bytes' attribute)")
            setattr(self.store, "max_payload_bytes", check_limit(max_payload_bytes))
        # The store's optional synchronous marker write, looked up on its class: a
        # wrapper delegating through __getattr__ (and overriding put_step) is not
        # bypassed; an async one is not this method and is not used.
        later = getattr(type(self.store), "put_step_later", None)
        put_step_later: PutStepLater | None = None if later is None or inspect.iscoroutinefunction(later) else later
        if poll_interval is not None and not (isinstance(poll_interval, (int, float)) and 0 < poll_interval < 1e9):
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        self.poll_interval = float(poll_interval) if poll_interval is not None else 1.0
        self.record_events = record_events
        self.queues = QueueRegistry()
        self._work_listeners: list[Callable[[], None]] = []  # serve() loops, poked by wake-ups
        self._on_claim: Callable[[str, str], None] | None = None  # the CLI worker's report of what serve() took
        self.lease_ttl = float(lease_ttl)
        self._owner: Owner | None = None
        self._time_base: tuple[float, trio.abc.Clock] | None = None  # the run's clock, while running
        self.jobs = JobRegistry()
        self.events = EventBus()
        self._driver = RunDriver(self.store, self.events, self.jobs, suspend_after=float(suspend_after),
                                 now=self.now, put_step_later=put_step_later)
        self.workflows = WorkflowService(self._driver)
        self.workflows.flush_queues = self._flush_queues
        self.workflows.declared_queues = lambda: {n: q for n in self.queues.names()
                                                  if (q := self.queues.get(n)) is not None}
        if poll_interval is not None:
            self._driver.sleepers.signals.poll_interval = self.poll_interval
        self._owns_store = False
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] = "durable.lmdb", *, lease_ttl: float = 30.0, suspend_after: float = 1.0,
        max_payload_bytes: int | None = None, poll_interval: float | None = None, record_events: bool | None = None,
        **store_options: object,
    ) -> Engine:
        """An engine over the :class:`LMDBStore` at ``path``, or the :class:`~durable.PostgresStore` a
        ``postgresql://`` URL names; closes the store when it exits.

        Use as ``async with Engine.open("orders.lmdb") as engine:``. ``store_options``
        go to the store's class.
        """
        check_limit(max_payload_bytes)  # before the store is opened
        store: Store
        if isinstance(path, str) and path.lower().startswith(("postgresql://", "postgres://")):
            from ..stores import PostgresStore

            store = PostgresStore(path, **store_options)  # type: ignore[arg-type]
        else:
            store = LMDBStore(path, **store_options)  # type: ignore[arg-type]
        engine = cls(store, lease_ttl=lease_ttl,
                     suspend_after=suspend_after, max_payload_bytes=max_payload_bytes,
                     poll_interval=poll_interval, record_events=record_events)
        engine._owns_store = True
        return engine

    @property
    def suspend_after(self) -> float:
        """Seconds: a workflow's durable sleep (or signal wait) longer than this unloads it from memory."""
        return self._driver.suspend_after

    @suspend_after.setter
    def suspend_after(self, seconds: float) -> None:
        if not seconds >= 0:
            raise ValueError(f"suspend_after must be a number of seconds >= 0, got {seconds!r}")
        self._driver.suspend_after = float(seconds)

    @property
    def owner(self) -> Owner:
        """This engine's lease owner record; only valid inside ``async with``."""
        if self._owner is None:
            raise RuntimeError("the engine is not running: use it inside 'async with Engine(...) as engine:'")
        return self._owner

    def now(self) -> datetime:
        """The engine's wall-clock time, following trio's clock (so ``MockClock`` moves it)."""
        base = self._time_base
        if base is None:
            return _clock.now()
        return datetime.fromtimestamp(base[0] + base[1].current_time(), tz=UTC)

    @property
    def nursery(self) -> trio.Nursery:
        """The engine's nursery; only valid inside ``async with``."""
        if self._nursery is None:
            raise RuntimeError("the engine is not running: use it inside 'async with Engine(...) as engine:'")
        return self._nursery

    async def __aenter__(self) -> Engine:
        if self._nursery is not None:
            raise RuntimeError("this engine is already running")
        self._time_base = _clock.base()
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        try:
            await self._nursery.start(self.store.run)
            self._owner = Owner.this_process(self.lease_ttl)
            self._driver.open(self._nursery, self._owner)
            await self.store.heartbeat(self._owner)
            self._nursery.start_soon(self._heartbeat)
            await self._flush_queues()
            if self.record_events:
                self._recording(True)
            listener = store_listener(self.store, ["work", "signal", "end"])
            if listener is not None:
                await self._nursery.start(self._listen, listener)
        except BaseException as exc:
            await self._exit(type(exc), exc, exc.__traceback__)
            raise
        self.events._nursery = self._nursery
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return await self._exit(exc_type, exc, tb)

    async def _exit(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._nursery is not None and self._nursery_cm is not None
        try:
            with trio.CancelScope(shield=True):
                self._driver.stop_waking()
                await self._driver.stop()
                if self._owner is not None:
                    try:
                        await self.store.release(self._owner.id)
                    except Exception:  # a failing store must not hide the body's error
                        log.exception("could not release the engine's leases")
            self._nursery.cancel_scope.cancel()
            # The body's own exception propagates as it is: handing it to the
            # nursery would wrap it in an ExceptionGroup.
            await self._nursery_cm.__aexit__(None, None, None)
            return None
        finally:
            self.events._close_all()
            self.events._nursery = None
            self.events._recorder = None
            self._driver.close()
            self._nursery = None
            self._owner = None
            self._time_base = None
            if self._owns_store:
                self.store.close()

    # -- queues, workers, wake-ups ------------------------------------------------

    async def serve(self, *, queues: Iterable[str] | None = None, concurrency: int | None = None,
                    workflows: bool = True, jobs: bool = True, job_concurrency: int = 16,
                    take_over_limit: int | None = None,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Work as a worker until cancelled: claim queued instances and external jobs, and run them.

        Args:
            queues: the queues to serve (default: every queue declared here,
                each registered workflow's own, the queues of registered
                jobs, and ``"default"``).
            concurrency: run at most this many instances at once here
                (instances unloaded while they sleep or wait do not count).
            workflows: claim queued instances of the registered workflows.
            jobs: claim external jobs of the served queues.
            job_concurrency: run at most this many external jobs at once here.
            take_over_limit: take over at most this many instances of dead
                engines per look (so that several workers share them).

        Every queue's ``concurrency``, ``worker_concurrency`` and
        ``rate_limit`` (as recorded in the store) hold across all workers;
        higher priority first, first in first out within a priority. New
        work wakes the worker at once where the store can (LMDB on one host,
        PostgreSQL on any);
        otherwise, and for instances whose engine died, it looks every
        ``poll_interval`` seconds. Use ``nursery.start(engine.serve)`` or
        run it as the body of the engine. Several workers (processes) may
        serve one store: none runs an instance another runs.

        .. versionadded:: 0.2.0
        """
        from .worker import serve

        if concurrency is not None and (type(concurrency) is not int or concurrency < 1):
            raise ValueError(f"concurrency must be a positive int or None, got {concurrency!r}")
        if type(job_concurrency) is not int or job_concurrency < 1:
            raise ValueError(f"job_concurrency must be a positive int, got {job_concurrency!r}")
        self.owner  # fail early outside 'async with'
        await serve(self, queues=queues, concurrency=concurrency, workflows=workflows, jobs=jobs,
                    job_concurrency=job_concurrency, task_status=task_status, orphan_limit=take_over_limit)

    async def _flush_queues(self) -> None:
        """Write the queues declared since the last flush to the store."""
        pending = self.queues.take_pending()
        for i, queue in enumerate(pending):
            try:
                await self.store.register_queue(queue)
            except BaseException:
                self.queues.put_back(pending[i:])  # not lost: the next flush (a serving worker's retry) writes them
                raise

    def _recording(self, on: bool) -> None:
        """Start (or stop) appending events to the store's log (a store of before 0.2.0 has none)."""
        if on and callable(getattr(self.store, "append_event", None)):
            self.events._recorder = self._record_event
        elif not on:
            self.events._recorder = None

    def _record_event(self, name: str, instance_id: str, workflow_name: str, fields: dict[str, Any]) -> None:
        """Append an event to the store's log (the store writes each instance's terminal event itself).

        The store's writer thread encodes it (while this thread goes on, or waits on the commit's fsync).
        """
        if name in TERMINAL_EVENTS or (name == "workflow.progress" and fields.get("progress") == 100):
            return
        try:
            self.store.append_event(instance_id, functools.partial(encode_detail, name, instance_id, workflow_name,
                                                                   fields))
        except Exception:
            log.exception("could not record event %s of instance %s", name, instance_id)

    async def _listen(self, listener: WakeListener, *,
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take wake-ups from other processes (the store's listener: a socket for LMDB, ``LISTEN`` for
        PostgreSQL): new work, signals, instances ended (cancelled) elsewhere."""
        try:
            await listener.open()
        except OSError:
            log.warning("no wake-ups for store %r: polling every %g s instead", self.store, self.poll_interval)
            listener.close()
            task_status.started()
            return
        task_status.started()
        try:
            while True:
                for datagram in await listener.wait():
                    kind, detail = split_wakeup(datagram)
                    self.wake(kind, detail.decode(errors="replace"))
        finally:
            listener.close()

    def wake(self, kind: str, instance_id: str = "") -> None:
        """Take notice of a change to the store made elsewhere: ``"work"`` (an instance or job was queued),
        ``"signal"`` (a signal was sent to ``instance_id``) or ``"end"`` (``instance_id`` ended: cancelled);
        an empty ``instance_id`` means any instance (wake-ups were lost: every one concerned looks again).

        Wake-ups from other processes call it; so does a client sharing this
        engine's store in its process (``AsyncClient.sharing(engine)``),
        whose writes no wake-up reports to their own process.

        .. versionadded:: 0.2.0
        """
        if kind == "work":
            for poke in list(self._work_listeners):
                poke()
        elif kind == "signal":
            if instance_id:
                self._driver.sleepers.signalled(instance_id)
            else:
                self._driver.sleepers._signals_changed()  # (what a change of the store's signal clock does)
        elif kind == "end":
            if not instance_id:  # a bare wake-up (one naming its instance was dropped): look at all of them
                held = sorted({*self._driver.runs, *self._driver.sleepers.ids()})
                if held:
                    self._nursery_start(self._check_leases, held)
            elif instance_id in self._driver.runs or self._driver.sleepers.holds(instance_id):
                self._nursery_start(self._check_lease, instance_id)
            for poke in list(self._work_listeners):
                poke()  # an instance ended somewhere: a queue slot may be free

    def _nursery_start(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def _check_lease(self, instance_id: str) -> None:
        """An instance this engine runs, or holds suspended, ended elsewhere (a cancel from another process):
        stop its run, or forget it."""
        await self._check_leases([instance_id])

    async def _check_leases(self, instance_ids: list[str]) -> None:
        """:meth:`_check_lease` for each of ``instance_ids``, in one look."""
        if self._owner is None:
            return
        for instance_id in await self.store.lost_leases(self._owner.id, instance_ids):
            self._driver.lost(instance_id)
            self._driver.sleepers.drop(instance_id)

    async def _heartbeat(self) -> None:
        """Beat every ``lease_ttl / 3`` real seconds until cancelled.

        The timer is a thread's, not trio's: a periodic trio timer would make
        an autojumping ``MockClock`` leap ahead whenever the loop waits on a
        thread (an fsync, a sync step), and heartbeats are about real time.
        """
        interval = self.lease_ttl / 3
        token = trio.lowlevel.current_trio_token()
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    trio.from_thread.run(self._beat, trio_token=token)
                except (trio.RunFinishedError, trio.Cancelled):
                    return
                except Exception:
                    log.exception("heartbeat failed; retrying in %g s", interval)

        threading.Thread(target=loop, name="durable-heartbeat", daemon=True).start()
        try:
            await trio.sleep_forever()
        finally:
            stop.set()

    async def _beat(self) -> None:
        """Refresh this engine's owner record; stop runs whose lease it lost."""
        if self._owner is None:
            return
        self._owner = self._owner.beat()
        self._driver.beat(self._owner)
        await self.store.heartbeat(self._owner)
        runs = list(self._driver.runs)
        if runs:
            for instance_id in await self.store.lost_leases(self._owner.id, runs):
                self._driver.lost(instance_id)
