"""Serving queues: claim queued instances and external jobs, under every limit, and run them.

:func:`serve` is ``Engine.serve()``. It records what this engine serves in
the store (so clients know its workflows, and ``durable show`` knows which
queues have a worker), then loops: claim what the limits allow
(``Store.claim_queued``, ``Store.claim_jobs``: one write transaction each),
start it, and sleep until something may have changed. What wakes it: a
wake-up from another process (a client's start, a job queued, on a store
with wake-ups: LMDB on one host), a run of its own ending (a slot freed),
the time a delayed instance or a rate limit comes due, or, failing all of
these, ``poll_interval`` (which also takes over instances whose engine died).
An idle worker does nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any, Protocol

import attrs
import trio

from .._graph.context import StepInfo, step_info_var
from .._model.jobs import JobRecord
from .._model.queues import DEFAULT_QUEUE, Queue
from .._model.records import WorkflowInstance
from .._model.serde import UnpicklableError
from ..errors import SerializationError, StepTimeout, StoreError
from .events import Event
from .external import resolve_target
from .jobs import as_async_call
from .lifecycle import error_text

from .driver import RunDriver
from .events import EventBus
from .jobs import JobRegistry
from .queues import QueueRegistry
from .service import WorkflowService
from ..stores import Owner, Store
from ..stores._base import StoreTooNew

__all__ = ["serve"]

log = logging.getLogger("durable.worker")

CLAIM_BATCH = 32
"""How many queued instances a worker's look claims at first (it looks again at once if it took that many)."""

CLAIM_MOST = 512
"""The most one look claims. Each look that takes all it asked for asks for twice as many next time (32, 64,
..., 512), and one that takes fewer goes back to :data:`CLAIM_BATCH`. A worker facing a backlog so soon holds
enough for each commit to carry hundreds of checkpoints (a worker that claimed 32 at a time waited on a commit
for each claim, so it ran few instances at once, in small commits, and drained a backlog 1.6 times slower);
workers that start together still split a backlog about evenly, their claims growing alike."""


class Engine(Protocol):
    """What serving needs of the engine (``durable._engine.engine.Engine``, which calls :func:`serve`)."""

    store: Store
    queues: QueueRegistry
    jobs: JobRegistry
    events: EventBus
    workflows: WorkflowService
    poll_interval: float
    record_events: bool | None
    _driver: RunDriver
    _work_listeners: list[Callable[[], None]]
    _on_claim: Callable[[str, str], None] | None

    @property
    def owner(self) -> Owner: ...

    def now(self) -> datetime: ...

    async def _flush_queues(self) -> None: ...

    def _recording(self, on: bool) -> None: ...


class _Serving:
    """The state of one ``serve()``: what it serves, its limits, and what wakes it."""

    def __init__(self, engine: Engine, queues: list[str], concurrency: int | None, workflows: bool,
                 jobs: bool, job_concurrency: int) -> None:
        self.engine = engine
        self.queues = queues
        self.concurrency = concurrency
        self.workflows = workflows
        self.jobs = jobs
        self.job_concurrency = job_concurrency
        self.jobs_running = 0
        self.jobs_by_queue: dict[str, int] = {}
        self.limits: dict[str, Queue] = {}  # the queues' limits, as stored when last read
        self.changed = trio.Event()
        self.claim_size = CLAIM_BATCH  # what the next look claims at most (see CLAIM_MOST)
        self.reserved: list[str | None] = []  # slots held by a claim or a take-over in flight (see holding())

    def poke(self) -> None:
        """Something may have changed: look again."""
        self.changed.set()

    def _loaded(self) -> list[str | None]:
        """The queue of each instance running here, or being continued from a suspension."""
        driver = self.engine._driver
        return [r.instance.queue for r in driver.runs.values()] + driver.sleepers.waking_queues() + self.reserved

    def free_slots(self) -> int | None:
        """How many more instances may run here (``serve(concurrency=)``); ``None``: no cap."""
        if self.concurrency is None:
            return None
        return max(0, self.concurrency - len(self._loaded()))

    def queue_slots(self, name: str | None, loaded: list[str | None]) -> int | None:
        """How many more of queue ``name``'s instances may run here (its ``worker_concurrency``, as stored)."""
        queue = self.limits.get(name) if name is not None else None
        if queue is None or queue.worker_concurrency is None:
            return None
        return max(0, queue.worker_concurrency - loaded.count(name))

    def may_start(self, name: str | None, loaded: list[str | None] | None = None) -> bool:
        """Whether one more instance of queue ``name`` may start running here now (the wake-up gate);
        ``loaded``: the queues to count as running instead of :meth:`_loaded` (a batch being picked)."""
        loaded = self._loaded() if loaded is None else loaded
        if self.concurrency is not None and len(loaded) >= self.concurrency:
            return False
        slots = self.queue_slots(name, loaded)
        return slots is None or slots > 0

    @contextlib.contextmanager
    def holding(self, queues: list[str | None]) -> Iterator[None]:
        """Hold slots of ``queues`` (counted as running) while a claim or take-over that may fill them is in
        flight: a wake-up meanwhile waits, and is tried again at the end."""
        self.reserved.extend(queues)
        try:
            yield
        finally:
            self.reserved.clear()
            self.engine._driver.sleepers.retry_deferred()

    def served(self) -> list[tuple[str, int | None]]:
        """Each queue with this worker's free slots for its instances (its ``worker_concurrency``, as stored)."""
        loaded = self._loaded()
        return [(name, self.queue_slots(name, loaded)) for name in self.queues]

    def job_slots(self) -> dict[str, int]:
        """This worker's free slots for the jobs of each queue with a ``worker_concurrency``."""
        return {name: max(0, q.worker_concurrency - self.jobs_by_queue.get(name, 0))
                for name in self.queues if (q := self.limits.get(name)) is not None and q.worker_concurrency is not None}

    def run_ended(self) -> None:
        """A run here ended: suspended instances the caps held back may wake; look for new work."""
        self.engine._driver.sleepers.retry_deferred()
        self.poke()


def _announce(engine: Engine, what: str, instance_id: str) -> None:
    hook = engine._on_claim
    if hook is not None:
        hook(what, instance_id)


async def serve(engine: Engine, *, queues: Iterable[str] | None, concurrency: int | None, workflows: bool,
                jobs: bool, job_concurrency: int, task_status: trio.TaskStatus[None],
                orphan_limit: int | None = None) -> None:
    """Serve ``queues`` until cancelled (see ``Engine.serve``)."""
    driver = engine._driver
    names = sorted(set(queues)) if queues is not None else _default_queues(engine)
    state = _Serving(engine, names, concurrency, workflows, jobs, job_concurrency)
    store = engine.store
    own = {n: q for n in engine.workflows.names() if (q := getattr(driver.definitions[n], "queue", None))}
    failures = 0
    while True:
        try:
            await engine._flush_queues()
            await store.register_worker(engine.owner, engine.workflows.names() if workflows else [],
                                        names if workflows else [], names if jobs else [], own)
            break
        except StoreTooNew:
            raise  # no wait makes it readable
        except StoreError as exc:
            # A database that is down when the worker starts: wait for it, as a serving worker does.
            failures += 1
            backoff = min(engine.poll_interval * 2 ** (failures - 1), _MAX_BACKOFF)
            log.warning("worker: cannot register with the store (%s); trying again in %.2g s", exc, backoff)
            await trio.sleep(backoff)
    previous = driver.on_run_end
    driver.on_run_end = state.run_ended
    recording = engine.record_events is None  # the default: a serving engine logs its events for clients
    if recording:
        engine._recording(True)
    driver.sleepers.gate = state.may_start  # a wake-up waits for a free slot (and so does a take-over)
    engine._work_listeners.append(state.poke)
    poll = engine.poll_interval
    last_orphans = -math.inf
    try:
        task_status.started()
        async with trio.open_nursery() as nursery:
            failures = 0
            retry_at = -math.inf
            while True:
                state.changed = trio.Event()
                try:
                    due, looked = await _look(engine, state, names, workflows, jobs, job_concurrency, orphan_limit,
                                              nursery, full=last_orphans == -math.inf,
                                              orphans_due=trio.current_time() - last_orphans >= poll)
                except StoreError as exc:
                    # A store that failed (a database restarting, a full disk): not the end of the worker.
                    # Look again after a backoff; the next look reads every unfinished instance, so an
                    # instance a claim may have leased to this worker (unknown: it may not have committed)
                    # is continued too.
                    failures += 1
                    backoff = min(poll * 2 ** (failures - 1), _MAX_BACKOFF)
                    log.warning("worker: the store failed (%s); looking again in %.2g s", exc, backoff)
                    last_orphans = -math.inf
                    await trio.sleep(backoff)
                    continue
                failures = 0
                if looked:
                    last_orphans = trio.current_time()
                if driver.store_failed and trio.current_time() >= retry_at:
                    # Runs stopped by a failed write stay leased here: continue them once the store answers.
                    retry_at = trio.current_time() + poll
                    for instance_id in list(driver.store_failed):
                        if instance_id in driver.runs:
                            continue
                        del driver.store_failed[instance_id]
                        try:
                            if await driver.continue_instance(instance_id):
                                _announce(engine, "running", instance_id)
                        except StoreError:
                            break  # still failing: at the next retry
                timeout = poll
                if due is not None:
                    timeout = min(timeout, max(0.0, (due - engine.now()).total_seconds()))
                with trio.move_on_after(timeout):
                    await state.changed.wait()
    finally:
        engine._work_listeners.remove(state.poke)
        driver.on_run_end = previous
        driver.sleepers.gate = None
        driver.sleepers.retry_deferred()
        if recording:
            engine._recording(False)


#: the longest wait between looks at a failing store (seconds)
_MAX_BACKOFF = 30.0


async def _look(engine: Engine, state: _Serving, names: list[str], workflows: bool, jobs: bool,
                job_concurrency: int, orphan_limit: int | None, nursery: trio.Nursery, *, full: bool,
                orphans_due: bool) -> tuple[datetime | None, bool]:
    """One look for work: queued instances, orphans (when due), external jobs. Returns when a skipped instance
    or a rate limit lets one more be taken (``None``: nothing waits for a time), and whether it looked at
    orphans."""
    driver = engine._driver
    store = engine.store
    due: datetime | None = None
    looked = False
    state.limits = await store.get_queues()  # every worker reads the limits as stored
    driver.sleepers.retry_deferred()
    if workflows:
        free = state.free_slots()
        if free is None or free > 0:
            wanted = frozenset(engine.workflows.names())
            # A look takes a batch at most, so that other workers get their share of a backlog.
            take = min(free, state.claim_size) if free is not None else state.claim_size
            served = state.served()
            # The slots this claim may fill are held until its instances run: a wake-up meanwhile would
            # otherwise take one of them too.
            held: list[str | None] = [None] * take if free is not None else []
            for name, slots in served:
                held += [name] * (slots or 0)
            with state.holding(held):
                ids, due = await store.claim_queued(engine.owner, served, wanted, take, engine.now())
                read, failed = await driver.read_for_continue(ids)  # read at once; started in the order claimed
                for instance_id in ids:
                    if instance_id in read and await driver.continue_instance(instance_id, read[instance_id]):
                        _announce(engine, "running", instance_id)
            if failed:
                # Those left are leased here: the look after the backoff reads every unfinished instance.
                raise failed[0]
            if len(ids) >= take:
                state.poke()  # there may be more: look again at once, for more
                state.claim_size = min(2 * state.claim_size, CLAIM_MOST)
            else:
                state.claim_size = CLAIM_BATCH
        if orphans_due:
            # The first look reads every unfinished instance (those left with no lease at all, say by
            # durable 0.1.0, or leased to this worker by a claim whose commit was in doubt); the later ones
            # only those leased to engines that are gone.
            await _take_over_orphans(engine, state, orphan_limit, full=full)
            looked = True
    if jobs:
        room = job_concurrency - state.jobs_running
        if room > 0:
            for job in await store.claim_jobs(engine.owner, names, room, free=state.job_slots(), now=engine.now()):
                state.jobs_running += 1
                state.jobs_by_queue[job.queue] = state.jobs_by_queue.get(job.queue, 0) + 1
                _announce(engine, f"job {job.step_name!r} ({job.queue}) of", job.instance_id)
                nursery.start_soon(_run_job, engine, job, state)
    return due, looked


async def _take_over_orphans(engine: Engine, state: _Serving, limit: int | None, full: bool) -> None:
    """Take over the instances of dead engines, as many as this worker's caps allow (at most ``limit`` per
    look), in as few claims as it can. ``full``: look at every unfinished instance (the first look), else at
    those leased to engines that are gone."""
    # A dead worker may have held hundreds: they are claimed in batches (taken one at a time, it took a commit
    # and a read each). Each batch holds its slots until its instances run, so no wake-up takes them meanwhile;
    # one that another worker took first leaves its slot to the next batch.
    orphans = await engine.workflows.orphans(leased_only=not full)
    taken = 0
    while orphans and (limit is None or taken < limit):
        loaded = state._loaded()
        picked: list[WorkflowInstance] = []
        rest: list[WorkflowInstance] = []
        for inst in orphans:
            if (limit is not None and taken + len(picked) >= limit) or not state.may_start(inst.queue, loaded):
                rest.append(inst)
                continue
            picked.append(inst)
            loaded.append(inst.queue)  # counted as it is picked, as if it had started
        if not picked:
            return
        with state.holding([inst.queue for inst in picked]):
            resumed = await engine._driver.take_over([inst.id for inst in picked], None)
        for instance_id in resumed:
            _announce(engine, "running", instance_id)
        taken += len(resumed)  # fewer than picked: another worker took some first; the slots go to the rest
        orphans = rest


def _default_queues(engine: Engine) -> list[str]:
    """What a worker serves when no queue is named: every queue declared, each workflow's own and those of its
    external jobs, the queues of registered jobs, and the default."""
    names = set(engine.queues.names())
    for name in engine.workflows.names():
        definition = engine._driver.definitions[name]
        queue = getattr(definition, "queue", None)
        if queue:
            names.add(queue)
        for state in definition.graph.walk():
            step_queue = getattr(state, "queue", None)  # a task's external job
            if step_queue:
                names.add(step_queue)
    names.update(engine.jobs.queues())
    names.add(DEFAULT_QUEUE)
    return sorted(names)


async def _run_job(engine: Engine, job: JobRecord, state: _Serving) -> None:
    try:
        try:
            outcome = await _attempts(engine, job)
        except _Lost:
            log.warning("job %s of instance %s: stopped: another worker took it over (this one looked gone), or "
                        "its instance ended", job.step_key, job.instance_id)
            return
        await _deliver(engine, job, outcome)
    finally:
        state.jobs_running -= 1
        state.jobs_by_queue[job.queue] -= 1
        state.poke()


async def _deliver(engine: Engine, job: JobRecord, outcome: tuple[str, Any, str | None, int]) -> None:
    """Record the job's outcome (and wake its workflow); a failing store is retried with backoff while this
    worker runs: the job is held by it, so no other worker would run it meanwhile."""
    delay = 0.05
    while True:
        try:
            try:
                done = await engine.store.finish_job(job, engine.owner.id, outcome)
            except SerializationError as exc:
                err = SerializationError(f"cannot store the result of job {job.step_name!r}: {exc.message}",
                                         workflow=job.workflow_name, instance_id=job.instance_id, step=job.step_key)
                outcome = ("error", err, error_text(err), outcome[3])
                continue
        except Exception:
            log.exception("job %s of instance %s: could not record its outcome; trying again in %g s",
                          job.step_key, job.instance_id, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 30.0)
            continue
        break
    if done:
        engine._driver.sleepers.signalled(job.instance_id)  # its workflow may wait in this very engine
    else:
        log.warning("job %s of instance %s: its result was not recorded: the job was taken over by another "
                    "worker, or its instance ended", job.step_key, job.instance_id)


def _emit(engine: Engine, job: JobRecord, name: Any, **fields: Any) -> None:
    bus = engine.events
    if bus.active:
        bus.emit(Event(name=name, instance_id=job.instance_id, workflow_name=job.workflow_name,
                       step_name=job.step_name, step_type="task", step_key=job.step_key, **fields))


async def _attempts(engine: Engine, job: JobRecord) -> tuple[str, Any, str | None, int]:
    """Run the job with its retry policy and timeout: ``("ok", output, None, attempts)`` or
    ``("error", exception, text, attempts)``."""
    try:
        fn = resolve_target(job.target, engine.jobs)
    except Exception as exc:
        return ("error", _portable(exc), error_text(exc), 0)
    policy = job.retry
    attempt = job.attempts  # those that failed before a crash count (a cut-off one runs again as itself)
    if job.retry_at is not None:
        remaining = (job.retry_at - engine.now()).total_seconds()
        if remaining > 0:
            await trio.sleep(remaining)  # the backoff a crashed worker was waiting out: only what is left
    while True:
        attempt += 1
        _emit(engine, job, "workflow.step.started", current_step=job.step_name, attempt=attempt)
        token = step_info_var.set(StepInfo(job.workflow_name, job.instance_id, job.step_key, attempt))
        try:
            call = as_async_call(fn, *job.args, **dict(job.kwargs))
            if job.timeout is not None:
                with trio.move_on_after(job.timeout) as timer:
                    result = await call()
                if timer.cancel_called:
                    raise StepTimeout(f"attempt {attempt} timed out after {job.timeout:g} s",
                                      workflow=job.workflow_name, instance_id=job.instance_id, step=job.step_key)
            else:
                result = await call()
        except Exception as exc:
            if attempt < policy.attempts and policy.should_retry(exc):
                delay = policy.delay(attempt)
                _emit(engine, job, "workflow.step.retry", attempt=attempt, max_attempts=policy.attempts,
                      delay=delay, error=error_text(exc))
                job = attrs.evolve(job, attempts=attempt, retry_at=engine.now() + timedelta(seconds=delay))
                try:
                    held = await engine.store.note_job_attempts(job, engine.owner.id)
                except Exception:
                    log.exception("job %s of instance %s: could not record its attempts (a crash now would give "
                                  "it them again)", job.step_key, job.instance_id)
                    held = True
                if not held:
                    raise _Lost() from None  # taken over (this worker looked gone) or its instance ended
                await trio.sleep(delay)
                continue
            return ("error", _portable(exc), error_text(exc), attempt)
        finally:
            step_info_var.reset(token)
        return ("ok", result, None, attempt)


class _Lost(Exception):
    """This worker holds the job no more: stop running it, record nothing."""


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles and loads back, else an :class:`UnpicklableError` of the same type name and message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return UnpicklableError(type(exc).__name__, str(exc))

