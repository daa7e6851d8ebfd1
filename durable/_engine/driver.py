"""The run driver: starts, drives, finishes, suspends, continues and stops the runs of one engine.

It owns what is live in this process: the registered definitions, the runs
in flight (:class:`~durable._engine.run.Run`), the suspended instances
(:class:`~durable._engine.sleepers.Sleepers`), and the runs a failing store
stopped. It is the :class:`~durable._engine.run.RunHost` every run holds:
the store and lease owner a run writes under, its events, clock and jobs,
and the child start, wait and signal notice its steps use. The public
operations on top of it (``engine.workflows``) are the
:class:`~durable._engine.service.WorkflowService`.

Taking over an unfinished instance (``resume()``, ``start(id=...)`` of a
left-over instance, a suspended instance waking up) goes through
:meth:`RunDriver.take_over` and :meth:`RunDriver.continue_instance`: only
through the store's lease claim, so any number of engines may do it at once
and each instance runs in exactly one of them; its checkpoints replay,
nothing re-runs.

(Over 400 lines, on purpose: it is the one owner of the live runs' state,
and every method here reads or changes that state; spreading them over
modules would need each to reach into another's. What needs no state is
elsewhere: the id and name policies in ``identity.py``, the step records and
events in ``lifecycle.py``.)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, final

import attrs
import trio

from .children import running_children
from .ended import Ended
from .events import Event, EventBus
from .jobs import JobRegistry
from .run import Definition, PutStepLater, Run, StopReason
from .sleepers import Sleepers
from .enqueue import Queued
from .identity import IfExists, check_existing, name_taken
from .lifecycle import error_text
from .._model.ids import check_instance_id, new_instance_id
from .._model.records import InstanceStatus, StepResult, WorkflowInstance, replace_instance
from ..errors import (
    DurableError,
    InstanceNotFound,
    SerializationError,
    StoreError,
    WorkflowCancelled,
    WorkflowNotFound,
    WorkflowTimeout,
)
from ..stores import Owner, Store
from ..stores._lease import LeaseLost

__all__ = ["RunDriver"]

log = logging.getLogger("durable.engine")

Outcome = tuple[InstanceStatus, Any, BaseException | None]
_NOT_RUNNING = ""  # owner_id outside 'async with': no lease is held by it, so every fenced write is refused


def _error_text(exc: BaseException) -> str:
    # Our own errors already name the workflow, instance and step.
    return str(exc) if isinstance(exc, DurableError) else error_text(exc)


@final
class RunDriver:
    """The runs of one engine, and the :class:`~durable._engine.run.RunHost` they hold.

    Args:
        store: the engine's store.
        events: the engine's event bus.
        jobs: the engine's job registry.
        suspend_after: see :class:`~durable.Engine`.
        now: the engine's clock.
        put_step_later: the store's synchronous marker write, if it has one.
    """

    def __init__(self, store: Store, events: EventBus, jobs: JobRegistry, *, suspend_after: float,
                 now: Callable[[], datetime], put_step_later: PutStepLater | None) -> None:
        # What a run reads on every step: plain attributes (RunHost), not properties.
        self.store = store
        self.events = events
        self.jobs = jobs
        self.suspend_after = suspend_after
        self.now = now
        self.put_step_later = put_step_later
        self.owner_id = _NOT_RUNNING  # this engine's lease owner id while it runs; fails every fence otherwise
        self._nursery: trio.Nursery | None = None
        self._owner: Owner | None = None
        self.definitions: dict[str, Definition] = {}
        self.runs: dict[str, Run] = {}  # in flight here, by instance id
        self.ended = Ended()  # the final records of the last instances started and ended here, for wait()
        self._keep: set[str] = set()  # running here, started by start(): their end is kept in ``ended``
        self.store_failed: dict[str, StoreError] = {}  # runs stopped by a failed write, for wait()
        self.sleepers = Sleepers(store, now, lambda: self.nursery, self.continue_instance)
        self.stopping = False
        self.on_run_end: Callable[[], None] | None = None  # a worker's: a run ended, a slot may be free

    # -- the engine's session --------------------------------------------------

    def open(self, nursery: trio.Nursery, owner: Owner) -> None:
        """The engine started (``async with``): runs go into ``nursery``, leased to ``owner``.

        Instances suspended in an earlier session of this engine are for ``resume()`` now.
        """
        self._nursery, self._owner, self.owner_id = nursery, owner, owner.id
        self.sleepers.open()

    def beat(self, owner: Owner) -> None:
        """The engine refreshed its owner record."""
        self._owner = owner

    def stop_waking(self) -> None:
        """The engine is exiting: no suspended instance wakes up any more."""
        self.sleepers.closed = True

    def close(self) -> None:
        """The engine has exited."""
        self._nursery = self._owner = None
        self.ended.clear()
        self.owner_id = _NOT_RUNNING

    @property
    def nursery(self) -> trio.Nursery:
        """Where runs go; only while the engine runs."""
        if self._nursery is None:
            raise RuntimeError("the engine is not running: use it inside 'async with Engine(...) as engine:'")
        return self._nursery

    @property
    def owner(self) -> Owner:
        """This engine's lease owner record; only while the engine runs."""
        if self._owner is None:
            raise RuntimeError("the engine is not running: use it inside 'async with Engine(...) as engine:'")
        return self._owner

    # -- RunHost (besides the attributes set in __init__) ----------------------------

    def define(self, definition: Definition) -> Definition:
        """Register ``definition`` under its name; the one registered already if it is the same workflow.

        Raises:
            DurableError: another workflow (another function, or another graph)
                has that name: one name never runs two workflows' code.
        """
        name = definition.name
        found = self.definitions.get(name)
        if found is None:
            self.definitions[name] = definition
            return definition
        if found == definition:
            return found
        raise name_taken(found, definition)

    def definition(self, name: str) -> Definition:
        found = self.definitions.get(name)
        if found is None:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise WorkflowNotFound(f"no workflow {name!r} is registered (registered: {known})", workflow=name)
        return found

    async def start_child(self, definition: Definition, args: tuple[Any, ...], kwargs: dict[str, Any],
                          instance_id: str, deadline_cap: datetime | None, parent_id: str | None = None) -> str:
        return await self.start(definition, args, kwargs, instance_id, deadline_cap, parent_id=parent_id)

    async def signal_sent(self, instance_id: str, name: str) -> None:
        await self.sleepers.signal_sent(instance_id, name)

    # -- starting ------------------------------------------------------------------

    async def start(self, definition: Definition, args: tuple[Any, ...], kwargs: dict[str, Any],
                    id: str | None, deadline_cap: datetime | None, *, if_exists: IfExists = "replay",
                    queued: Queued | None = None, parent_id: str | None = None) -> str:
        """Create an instance (one durable write, leased here) and run it; ``deadline_cap`` bounds its deadline.

        With an ``id`` that exists, ``if_exists`` decides (see ``WorkflowService.start``):
        ``"return"`` returns it if it has the same workflow and input, ``"error"``
        never does; the default, ``"replay"``, returns it if it has the same
        workflow, whatever its input: a child's start (:meth:`start_child`) is
        called again on every replay of the parent's call, and must find the
        child it started. Otherwise :class:`IdConflict`.

        With ``queued``, the instance is created ``pending`` on that queue,
        leased to nobody, for a worker to claim; it does not run here.
        """
        if self.stopping:
            raise RuntimeError("the engine is stopping: no new instances can start")
        self.owner  # fail early, with a clear message, outside 'async with'
        definition = self.define(definition)  # a child's: resume() and wake-ups need it
        now = self.now()
        instance_id = check_instance_id(id) if id is not None else new_instance_id(now)
        value, call_args, call_kwargs = definition.make_call(args, kwargs)
        if id is not None:
            # A caller's id (a child's, on every replay of its call) often exists
            # already: a read finds it without a durable write (an fsync) for nothing.
            found = await self.store.get_instance(instance_id, steps=False)
            if found is not None:
                return await self._existing(definition, found, value, if_exists)
            now = self.now()  # after the read
        required = getattr(definition, "required_jobs", None)  # a builder graph's named jobs
        if required:
            self.jobs.check(required, workflow=definition.name)  # a new instance: before anything is written
        deadline = now + timedelta(seconds=definition.timeout) if definition.timeout else None
        if deadline_cap is not None:
            deadline = min(deadline, deadline_cap) if deadline is not None else deadline_cap
        if queued is not None:
            # (its deadline is set when a worker first starts it: the time limit counts from then)
            record = queued.instance(instance_id, definition.name, value, call_args, call_kwargs, now, None)
            try:
                stored, created = await self.store.create_instance(record)
            except SerializationError as exc:
                raise SerializationError(exc.message, workflow=definition.name, instance_id=instance_id) from exc
            if not created:
                existing: str = queued.existing(record, stored, value, if_exists)
                return existing
            return instance_id
        # Created "running": it starts at once, in this engine (one write, not two).
        record = WorkflowInstance(
            id=instance_id, workflow_name=definition.name, status=InstanceStatus.RUNNING, input=value,
            created_at=now, started_at=now, deadline=deadline, args=call_args, kwargs=call_kwargs,
            parent_id=parent_id,
        )
        try:
            stored, created = await self.store.create_instance(record, owner=self.owner)
        except SerializationError as exc:
            raise SerializationError(exc.message, workflow=definition.name, instance_id=instance_id) from exc
        if not created:
            return await self._existing(definition, stored, value, if_exists)
        self._launch(definition, stored, {}, first=True)
        self._keep.add(instance_id)  # its caller may wait() for it: its end is kept
        return instance_id

    async def _existing(self, definition: Definition, stored: WorkflowInstance, value: Any,
                        if_exists: IfExists) -> str:
        """``start()`` with the id of an existing instance: the same id, continued here if it was left unfinished.

        :class:`IdConflict` if ``if_exists`` does not allow returning it (see :meth:`start`).
        """
        instance_id = stored.id
        check_existing(definition.name, stored, value, if_exists)
        if not stored.finished and instance_id not in self.runs:
            # Left unfinished by an engine that is gone (a crash, a stop), or
            # waiting in a queue: continue it here, as resume() would; a live owner keeps it.
            await self.take_over([instance_id], None, take_queued=True)
        return instance_id

    def _launch(self, definition: Definition, instance: WorkflowInstance, checkpoints: dict[str, StepResult],
                *, first: bool) -> Run:
        run = Run(self, definition, instance, checkpoints, definition.total_steps)
        self.runs[instance.id] = run
        self.store_failed.pop(instance.id, None)
        self.nursery.start_soon(self._drive, run, first)
        return run

    # -- taking over ------------------------------------------------------------------

    async def take_over(self, candidates: list[str], limit: int | None, *, take_queued: bool = False) -> list[str]:
        """Claim those of ``candidates`` whose owner is gone and continue them here; their ids.

        Never one this engine holds: running here, or suspended here until its
        sleep ends or its signal comes (its lease is this engine's, so the
        store would let it be claimed again, and it would run twice).
        """
        resumed: list[str] = []
        candidates = [c for c in candidates if c not in self.runs and not self.sleepers.holds(c)]
        if not candidates:
            return resumed
        # Only instances whose owner is gone; the claim is one durable write.
        claimed = await (self.store.claim(candidates, self.owner, limit=limit, take_queued=True) if take_queued
                         else self.store.claim(candidates, self.owner, limit=limit))
        read, failed = await self.read_for_continue(claimed)  # read at once; continued in the order claimed
        for instance_id in claimed:
            if instance_id in read and await self.continue_instance(instance_id, read[instance_id]):
                resumed.append(instance_id)
        if failed:
            raise failed[0]  # those left are leased here: a later look (resume(), a worker's) continues them
        return resumed

    async def read_for_continue(self, instance_ids: list[str]) -> tuple[
            dict[str, tuple[WorkflowInstance | None, dict[str, StepResult]]], list[StoreError]]:
        """Read what :meth:`continue_instance` needs of each of ``instance_ids`` (leased to this engine), the
        reads made at once (a worker that claimed a batch): what was read, by id, and the ``StoreError`` of
        each read that failed."""
        out: dict[str, tuple[WorkflowInstance | None, dict[str, StepResult]]] = {}
        errors: list[StoreError] = []

        async def read(instance_id: str) -> None:
            try:
                out[instance_id] = await self._read_for_continue(instance_id)
            except StoreError as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            for instance_id in instance_ids:
                nursery.start_soon(read, instance_id)
        return out, errors

    async def _read_for_continue(self, instance_id: str) -> tuple[WorkflowInstance | None, dict[str, StepResult]]:
        both = getattr(self.store, "get_instance_and_steps", None)  # one read where a store has it (PostgreSQL)
        if both is not None:
            found: tuple[WorkflowInstance | None, dict[str, StepResult]] = await both(instance_id)
            return found
        bare = await self.store.get_instance(instance_id, steps=False)
        if bare is None or bare.finished or bare.workflow_name not in self.definitions:
            return bare, {}
        return bare, await self.store.get_steps(instance_id)

    async def continue_instance(
        self, instance_id: str, read: tuple[WorkflowInstance | None, dict[str, StepResult]] | None = None
    ) -> bool:
        """Continue an unfinished instance this engine holds the lease of, replaying its checkpoints.

        ``False`` if there is nothing to run: it finished meanwhile (a cancel),
        runs here already, its workflow is not registered, or its deadline had
        passed (it is then recorded ``timed_out``). ``read``: what
        :meth:`read_for_continue` read of it, if it did.
        """
        # This engine holds the lease, so no other engine writes the checkpoints read next.
        bare, checkpoints = read if read is not None else await self._read_for_continue(instance_id)
        if bare is None or bare.finished or instance_id in self.runs:
            return False
        definition = self.definitions.get(bare.workflow_name)
        if definition is None:
            return False  # not registered here (start() checked the name; a store edited meanwhile)
        if bare.status == InstanceStatus.PENDING and bare.queue is not None and bare.started_at is None:
            # Queued, never started (perhaps by name, by a client without the workflow's code): its
            # arguments are bound to the workflow here, and its time limit runs from now.
            builder = getattr(definition, "required_jobs", None) is not None  # its input is the one value stored
            try:
                _, args, kwargs = (bare.input, (), {}) if builder and len(bare.args) <= 1 and not bare.kwargs \
                    else definition.make_call(tuple(bare.args), dict(bare.kwargs))
            except (TypeError, ValueError) as exc:
                run = Run(self, definition, bare, checkpoints, definition.total_steps)
                await self._finish(run, InstanceStatus.FAILED, None, run.fail(
                    DurableError, f"its arguments do not fit the workflow, so it never ran: {exc}"))
                return False
            # (its stored input stays as it was started: a second start with the same id compares with it)
            bare = replace_instance(bare, args=args, kwargs=kwargs)
            if bare.deadline is None and definition.timeout:
                bare = replace_instance(bare, deadline=self.now() + timedelta(seconds=definition.timeout))
        if bare.deadline is not None and bare.deadline <= self.now():
            run = Run(self, definition, bare, checkpoints, definition.total_steps)
            await self._finish(run, InstanceStatus.TIMED_OUT, None, run.fail(
                WorkflowTimeout, "passed its deadline while it was not running (a stop, a crash or a long sleep)"))
            return False
        if instance_id in self.runs:
            return False  # continued by another caller while this one read the store
        # A queued (or detached) instance that never ran starts here: its run begins with workflow.started.
        self._launch(definition, bare, checkpoints, first=bare.started_at is None and not checkpoints)
        return True

    # -- driving ------------------------------------------------------------------

    async def _drive(self, run: Run, first: bool) -> None:
        try:
            if run.stop_reason is not None:
                return  # cancelled (or stopped) before it ever started
            outcome = await self._execute(run, first)
            if run.stop_reason is not None:
                return  # cancelled (already recorded) or the engine is stopping
            if isinstance(run.fatal, StoreError):
                self._left_unfinished(run, run.fatal)
                return
            if run.fatal is not None:
                # A failed checkpoint or a diverged replay fails the instance
                # even if the workflow's code caught the error.
                outcome = (InstanceStatus.FAILED, None, run.fatal)
            elif outcome is None or (outcome[0] == InstanceStatus.FAILED and run.cancel_scope.cancel_called):
                # Only the deadline cancels the run's scope without a stop
                # reason or a fatal error; an error raised while it cancelled
                # the running step does not hide the time-out.
                timeout = run.definition.timeout
                outcome = (InstanceStatus.TIMED_OUT, None, run.fail(
                    WorkflowTimeout, f"timed out after {timeout:g} s" if timeout else "passed its deadline",
                    step=run.current_step,
                ))
            with trio.CancelScope(shield=True):
                await self._finish(run, *outcome)
            if run.instance.finished and running_children(run.checkpoints):
                # A child still running when its parent ended (a fail-fast
                # parallel cancelled the branch awaiting it): cancel it.
                self.nursery.start_soon(self.cancel_children, run.id, dict(run.checkpoints))
        finally:
            self.runs.pop(run.id, None)
            self._keep.discard(run.id)
            if run.stop_reason == StopReason.SUSPEND:
                self.sleepers.suspend(run)
            run.done.set()
            if self.on_run_end is not None:
                self.on_run_end()

    async def _execute(self, run: Run, first: bool) -> Outcome | None:
        """Run the workflow's body under the run's cancel scope and deadline; ``None`` if it was cut off."""
        try:
            with run.cancel_scope:
                if run.instance.deadline is not None:
                    remaining = (run.instance.deadline - self.now()).total_seconds()
                    run.cancel_scope.deadline = trio.current_time() + remaining
                if run.instance.status != InstanceStatus.RUNNING:
                    run.instance = attrs.evolve(
                        run.instance, status=InstanceStatus.RUNNING,
                        started_at=run.instance.started_at or self.now(),
                    )
                    await self.store.update_instance(run.instance, durable=False, owner=self.owner_id)
                if first:
                    run.emit("workflow.started", input=run.instance.input)
                output = await run.definition.execute(run)
                return (InstanceStatus.COMPLETED, output, None)
        except LeaseLost:
            run.lose()
        except Exception as exc:
            # Includes an ExceptionGroup left over when a cancellation met
            # errors raised during clean-up: it must never reach the engine.
            return (InstanceStatus.FAILED, None, exc)
        return None

    async def _finish(self, run: Run, status: InstanceStatus, output: Any, error: BaseException | None) -> None:
        run.finishing = True
        final = replace_instance(
            run.instance, status=status, output=output, completed_at=self.now(), current_step=run.current_step,
            error=_error_text(error) if error is not None else None,
            error_type=type(error).__name__ if error is not None else None,
        )
        owner = self.owner_id
        try:
            try:
                await self.store.update_instance(final, durable=True, owner=owner)
            except SerializationError as exc:
                err = run.fail(SerializationError, f"cannot checkpoint the workflow's output: {exc.message}")
                final = attrs.evolve(final, status=InstanceStatus.FAILED, output=None, error=str(err),
                                     error_type=type(err).__name__)
                await self.store.update_instance(final, durable=True, owner=owner)
        except LeaseLost:
            log.warning("instance %s: not recording its end (%s): another engine holds it, or it was "
                        "cancelled elsewhere", run.id, status.value)
            return
        except StoreError as exc:
            self._left_unfinished(run, exc)
            return
        run.instance = final
        if run.id in self._keep:
            self.ended.keep(final, run.checkpoints)
        if final.status == InstanceStatus.COMPLETED:
            run.progress = 100
            run.emit("workflow.progress", progress=100, current_step=run.current_step,
                     completed_steps=run.completed_steps, total_steps=run.total_steps or None)
            run.emit("workflow.completed", output=final.output)
        else:
            run.emit("workflow.failed", error=final.error)

    def _left_unfinished(self, run: Run, error: StoreError) -> None:
        """The store failed a write of ``run`` (disk full, I/O error, read-only): stop it, writing nothing more.

        A failing store is not the workflow's failure, and recording one would
        need the store that just failed: the instance stays as its last durable
        write left it (pending or running), for ``resume()`` once the cause is
        fixed. ``wait()`` on it in this engine raises ``error`` meanwhile.
        """
        log.error("instance %s: stopped, left unfinished for resume(): %s", run.id, error)
        self.store_failed[run.id] = error

    # -- waiting ------------------------------------------------------------------

    async def wait(self, instance_id: str) -> WorkflowInstance:
        """Return the instance once it has finished (see ``WorkflowService.wait``)."""
        delay = 0.01
        while True:
            run = self.runs.get(instance_id)
            if run is not None:
                await run.done.wait()
                if run.instance.finished:
                    # Its final record is durable, and every write of the
                    # run before it: what the store would give back.
                    return run.snapshot()
            ended = self.ended.get(instance_id)
            if ended is not None:  # started and ended here lately: its final record, as a read would give it
                return ended
            woken = self.sleepers.event(instance_id)
            if woken is not None:
                await woken.wait()  # until it is continued (or cancelled)
                continue
            inst = await self.store.get_instance(instance_id)
            if inst is None:
                raise InstanceNotFound("no such instance", instance_id=instance_id)
            if inst.finished:
                return inst
            failed = self.store_failed.get(instance_id)
            if failed is not None and instance_id not in self.runs:
                raise failed  # stopped here by a failing store: it will not finish by waiting
            if instance_id not in self.runs:
                # Running elsewhere, or not resumed yet: poll the store.
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- stopping runs ------------------------------------------------------------------

    async def cancel(self, instance_id: str) -> bool:
        """Cancel an unfinished instance (see ``WorkflowService.cancel``)."""
        run = self.runs.get(instance_id)
        if run is not None:
            if run.finishing:
                await run.done.wait()
                return False
            if run.stop_reason == StopReason.CANCEL:
                await run.done.wait()
                return True
            run.stop_reason = StopReason.CANCEL  # also overrides a stop in progress
            inst = run.instance
        else:
            found = await self.store.get_instance(instance_id, steps=False)
            if found is None or found.finished:
                return False
            inst = found
        err = WorkflowCancelled("cancelled", workflow=inst.workflow_name, instance_id=inst.id)
        if run is None:
            # Not running here: its engine (elsewhere) may end it meanwhile; read and write in one transaction.
            written = await self.store.cancel_instance(inst.id, error=str(err), error_type=type(err).__name__,
                                                       when=self.now())
            if written is None:
                return False
            final = written
        else:
            final = attrs.evolve(inst, status=InstanceStatus.CANCELLED, completed_at=self.now(),
                                 error=str(err), error_type=type(err).__name__, current_step=run.current_step)
            await self.store.update_instance(final, durable=True)
        self.sleepers.drop(instance_id)
        if self.events.active:
            self.events.emit(Event(name="workflow.cancelled", instance_id=inst.id, workflow_name=inst.workflow_name))
        if run is None:
            # Not running here when the cancel began; a suspended instance may
            # have woken up while the cancel was written: stop that run too.
            run = self.runs.get(instance_id)
            if run is not None:
                run.stop_reason = StopReason.CANCEL
        if run is not None:
            run.instance = final
            run.cancel_scope.cancel()
            await run.done.wait()
        await self.cancel_children(instance_id, run.checkpoints if run is not None else None)
        return True

    async def cancel_children(self, instance_id: str, checkpoints: dict[str, StepResult] | None) -> None:
        """Cancel the unfinished child workflows an instance started."""
        if checkpoints is None:
            checkpoints = await self.store.get_steps(instance_id)
        for child_id in running_children(checkpoints):
            try:
                await self.cancel(child_id)
            except DurableError:
                log.exception("instance %s: could not cancel its child %s", instance_id, child_id)

    def lost(self, instance_id: str) -> None:
        """Stop running an instance whose lease this engine lost (heartbeat)."""
        run = self.runs.get(instance_id)
        if run is not None and not run.finishing:
            log.warning("instance %s: stopping here: cancelled or taken over by another process", instance_id)
            run.lose()

    def crash(self, instance_id: str) -> bool:
        """Stop a run at once, writing nothing more, as a killed process would (``durable.testing``)."""
        run = self.runs.get(instance_id)
        if run is None:
            return False
        run.stop_reason = StopReason.CRASH
        run.cancel_scope.cancel()
        return True

    async def stop(self) -> None:
        """Stop every run here; their instances stay unfinished in the store, for ``resume()``."""
        self.stopping = True
        runs = list(self.runs.values())
        for run in runs:
            if run.stop_reason is None and not run.finishing:
                run.stop_reason = StopReason.STOP
                run.cancel_scope.cancel()
        for run in runs:
            await run.done.wait()
        self.stopping = False
