"""``engine.workflows``: register, start, inspect, wait for, cancel and resume instances.

Durability points (what is on disk when each call returns):

- ``start()``: the instance record (status ``running``: it starts at once);
- each step: its checkpoint, before the workflow moves past it;
- completion, failure, time-out: the final record, before ``wait()`` returns it;
- ``cancel()``: status ``cancelled``, before the call returns.

An instance written ``pending`` (by another tool, through the store) is marked
``running`` when it starts, as bookkeeping that rides along with the next
durable write. ``resume()`` treats ``pending`` and ``running`` alike.

Leases: ``start()`` leases the new instance to this engine in the same write
that creates it; ``resume()`` takes over only instances whose owner is gone
(:meth:`Store.claim`). Every write of a run is fenced by the lease, so an
engine that lost an instance can never write over its new owner's progress.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, final

import attrs
import trio

from .interpreter import GraphDefinition
from .._graph.states import Graph
from .events import Event
from .children import running_children
from .._model.records import InstanceStatus, StepResult, WorkflowInstance, replace_instance
from .run import Definition, Run
from .steps import error_text
from .recovery import Resuming
from .sleepers import Sleepers
from ..errors import (
    DurableError,
    InstanceNotFound,
    SerializationError,
    StoreError,
    WorkflowCancelled,
    WorkflowNotFound,
    WorkflowTimeout,
)
from ..stores._base import check_instance_id, new_instance_id
from ..stores._lease import LeaseLost

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["WorkflowService"]

log = logging.getLogger("durable.engine")


def _as_definition(workflow: Any) -> Definition | None:
    if isinstance(workflow, Graph):
        return GraphDefinition(workflow)
    definition = getattr(workflow, "__durable_definition__", None)
    return definition


def _error_text(exc: BaseException) -> str:
    # Our own errors already name the workflow, instance and step.
    return str(exc) if isinstance(exc, DurableError) else error_text(exc)


@final
class WorkflowService(Resuming):
    """The workflow operations of an :class:`~durable.Engine` (``engine.workflows``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._defs: dict[str, Definition] = {}
        self._runs: dict[str, Run] = {}
        self._store_failed: dict[str, StoreError] = {}  # runs stopped by a failed write, for wait()
        self._unregistered: set[str] = set()  # instances resume() skipped and logged
        self._sleepers = Sleepers(engine, self._continue)  # instances unloaded by a long sleep or signal wait
        self._stopping = False

    # -- registry ----------------------------------------------------------

    def register(self, workflow: Any) -> None:
        """Register a built :class:`~durable.Graph` (or a ``@workflow`` function) under its name."""
        definition = _as_definition(workflow)
        if definition is None:
            raise TypeError(f"register() takes a built workflow graph or a @workflow function, got {workflow!r}")
        self._defs[definition.name] = definition

    def names(self) -> list[str]:
        """The registered workflow names, sorted."""
        return sorted(self._defs)

    def _definition(self, workflow: Any) -> Definition:
        if isinstance(workflow, str):
            found = self._defs.get(workflow)
            if found is None:
                known = ", ".join(self.names()) or "none"
                raise WorkflowNotFound(f"no workflow {workflow!r} is registered (registered: {known})",
                                       workflow=workflow)
            return found
        definition = _as_definition(workflow)
        if definition is None:
            raise TypeError(f"expected a workflow name, graph or @workflow function, got {workflow!r}")
        self._defs.setdefault(definition.name, definition)
        return self._defs[definition.name]

    # -- starting and running ----------------------------------------------

    async def start(self, workflow: Any, /, *args: Any, id: str | None = None, **kwargs: Any) -> str:
        """Start an instance; returns its id once its creation is durable.

        Args:
            workflow: a registered name, a built graph or a ``@workflow`` function.
            *args: the input (one value for a builder workflow; the call's
                arguments for a decorator workflow).
            id: a caller-chosen id: starting twice with one id creates and runs
                one instance, and returns the same id. Without one, the
                instance gets a new version-7 UUID (32 hex digits) whose
                first 12 digits are its ``created_at`` in milliseconds, so
                ids sort by creation time, to the millisecond. If that instance is
                unfinished and the engine that ran it is gone (a crash, a
                stop), this engine continues it, as ``resume()`` would.
            **kwargs: keyword arguments of a decorator workflow's call.
        """
        return await self._start(self._definition(workflow), args, kwargs, id, None)

    async def _start(self, definition: Definition, args: tuple[Any, ...], kwargs: dict[str, Any],
                     id: str | None, deadline_cap: datetime | None) -> str:
        """``start()``; ``deadline_cap`` bounds the instance's deadline (a child's, by its parent's)."""
        if self._stopping:
            raise RuntimeError("the engine is stopping: no new instances can start")
        engine = self._engine
        engine.nursery  # fail early, with a clear message, outside 'async with'
        self._defs.setdefault(definition.name, definition)  # a child's: resume() and wake-ups need it
        now = engine.now()
        instance_id = check_instance_id(id) if id is not None else new_instance_id(now)
        value, call_args, call_kwargs = definition.make_call(args, kwargs)
        if id is not None:
            # A caller's id (a child's, on every replay of its call) often exists
            # already: a read finds it without a durable write (an fsync) for nothing.
            found = await engine.store.get_instance(instance_id, steps=False)
            if found is not None:
                return await self._existing(definition, found)
            now = engine.now()  # after the read
        deadline = now + timedelta(seconds=definition.timeout) if definition.timeout else None
        if deadline_cap is not None:
            deadline = min(deadline, deadline_cap) if deadline is not None else deadline_cap
        # Created "running": it starts at once, in this engine (one write, not two).
        record = WorkflowInstance(
            id=instance_id, workflow_name=definition.name, status=InstanceStatus.RUNNING, input=value,
            created_at=now, started_at=now, deadline=deadline, args=call_args, kwargs=call_kwargs,
        )
        try:
            stored, created = await engine.store.create_instance(record, owner=engine.owner)
        except SerializationError as exc:
            raise SerializationError(exc.message, workflow=definition.name, instance_id=instance_id) from exc
        if not created:
            return await self._existing(definition, stored)
        self._launch(definition, stored, {}, first=True)
        return instance_id

    async def _existing(self, definition: Definition, stored: WorkflowInstance) -> str:
        """``start()`` with the id of an existing instance: the same id, continued here if it was left unfinished."""
        instance_id = stored.id
        if stored.workflow_name != definition.name:
            raise DurableError(
                f"id {instance_id!r} already belongs to an instance of workflow {stored.workflow_name!r}",
                workflow=definition.name, instance_id=instance_id,
            )
        if not stored.finished and instance_id not in self._runs:
            # Left unfinished by an engine that is gone (a crash, a stop):
            # continue it here, as resume() would; a live owner keeps it.
            await self._take_over([instance_id], None)
        return instance_id

    def _launch(self, definition: Definition, instance: WorkflowInstance, checkpoints: dict[str, Any],
                *, first: bool) -> Run:
        run = Run(self._engine, definition, instance, checkpoints, definition.total_steps)
        self._runs[instance.id] = run
        self._store_failed.pop(instance.id, None)
        self._engine.nursery.start_soon(self._drive, run, first)
        return run

    async def _drive(self, run: Run, first: bool) -> None:
        engine = self._engine
        outcome: tuple[InstanceStatus, Any, BaseException | None] | None = None
        try:
            if run.stop_reason is not None:
                return  # cancelled (or stopped) before it ever started
            try:
                with run.cancel_scope:
                    if run.instance.deadline is not None:
                        remaining = (run.instance.deadline - engine.now()).total_seconds()
                        run.cancel_scope.deadline = trio.current_time() + remaining
                    if run.instance.status != InstanceStatus.RUNNING:
                        run.instance = attrs.evolve(
                            run.instance, status=InstanceStatus.RUNNING,
                            started_at=run.instance.started_at or engine.now(),
                        )
                        await engine.store.update_instance(run.instance, durable=False, owner=engine.owner.id)
                    if first:
                        run.emit("workflow.started", input=run.instance.input)
                    output = await run.definition.execute(run)
                    outcome = (InstanceStatus.COMPLETED, output, None)
            except LeaseLost:
                run.lose()
            except Exception as exc:
                # Includes an ExceptionGroup left over when a cancellation met
                # errors raised during clean-up: it must never reach the engine.
                outcome = (InstanceStatus.FAILED, None, exc)
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
                engine.nursery.start_soon(self._cancel_children, run.id, dict(run.checkpoints))
        finally:
            self._runs.pop(run.id, None)
            if run.stop_reason == "suspend":
                self._sleepers.suspend(run)
            run.done.set()

    # -- suspended instances (long sleeps, signal waits) -----------------------

    def _open(self) -> None:
        """The engine (re)starts: suspended instances of an earlier session are for resume() now."""
        self._sleepers.open()

    def suspended_ids(self) -> list[str]:
        """Ids of the instances this engine has unloaded until their durable sleep ends or their signal comes."""
        return self._sleepers.ids()

    async def _signal_sent(self, instance_id: str, name: str) -> None:
        """For a run waiting in memory: return once signal ``name`` may have been queued."""
        await self._sleepers.signal_sent(instance_id, name)

    async def signal(self, instance_id: str, name: str, payload: Any = None) -> int:
        """Send signal ``name`` with ``payload`` to an instance; returns once it is queued durably.

        The signal is kept until the instance takes it with
        :func:`durable.wait_for_signal`, in the order signals of that name were
        sent, each exactly once, across restarts. The instance may run in
        this engine or in another process. Returns the signal's sequence number.

        Raises:
            InstanceNotFound: there is no such instance.
            DurableError: the instance has already finished.
            SerializationError: the payload cannot be stored.
        """
        engine = self._engine
        inst = await engine.store.get_instance(instance_id, steps=False)
        if inst is None:
            raise InstanceNotFound("no such instance", instance_id=instance_id)
        if inst.finished:
            raise DurableError(f"cannot signal {name!r}: the instance has already finished ({inst.status})",
                               workflow=inst.workflow_name, instance_id=instance_id)
        try:
            seq = await engine.store.send_signal(instance_id, name, payload)
        except SerializationError as exc:
            raise SerializationError(exc.message, workflow=inst.workflow_name, instance_id=instance_id) from exc
        self._sleepers.signals.notify(instance_id, name)
        self._sleepers.wake_for(instance_id, name)
        return seq

    async def _finish(self, run: Run, status: InstanceStatus, output: Any, error: BaseException | None) -> None:
        run.finishing = True
        engine = self._engine
        final = replace_instance(
            run.instance, status=status, output=output, completed_at=engine.now(), current_step=run.current_step,
            error=_error_text(error) if error is not None else None,
            error_type=type(error).__name__ if error is not None else None,
        )
        owner = engine.owner.id
        try:
            try:
                await engine.store.update_instance(final, durable=True, owner=owner)
            except SerializationError as exc:
                err = run.fail(SerializationError, f"cannot checkpoint the workflow's output: {exc.message}")
                final = attrs.evolve(final, status=InstanceStatus.FAILED, output=None, error=str(err),
                                     error_type=type(err).__name__)
                await engine.store.update_instance(final, durable=True, owner=owner)
        except LeaseLost:
            log.warning("instance %s: not recording its end (%s): another engine holds it, or it was "
                        "cancelled elsewhere", run.id, status.value)
            return
        except StoreError as exc:
            self._left_unfinished(run, exc)
            return
        run.instance = final
        if final.status == InstanceStatus.COMPLETED:
            run.progress = 100
            run.emit("workflow.progress", progress=100, current_step=run.current_step,
                     completed_steps=run.completed_steps, total_steps=run.total_steps)
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
        self._store_failed[run.id] = error

    def running_ids(self) -> list[str]:
        """Ids of the instances running in this engine now."""
        return list(self._runs)

    def _lost(self, instance_id: str) -> None:
        """Stop running an instance whose lease this engine lost (heartbeat)."""
        run = self._runs.get(instance_id)
        if run is not None and not run.finishing:
            log.warning("instance %s: stopping here: cancelled or taken over by another process", instance_id)
            run.lose()

    # -- reading -----------------------------------------------------------

    async def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        """The instance with its step results (live if it runs here), or ``None``."""
        run = self._runs.get(instance_id)
        if run is not None:
            return run.snapshot()
        return await self._engine.store.get_instance(instance_id)

    async def get_instances(
        self, workflow_name: str, status: InstanceStatus | str | None = None
    ) -> list[WorkflowInstance]:
        """Instances of ``workflow_name``, optionally only those with ``status``, oldest first."""
        wanted = InstanceStatus(status) if status is not None else None
        out: list[WorkflowInstance] = []
        seen: set[str] = set()
        for inst in await self._engine.store.get_instances_by_workflow(workflow_name, wanted):
            seen.add(inst.id)
            run = self._runs.get(inst.id)
            live = run.snapshot() if run is not None else inst
            if wanted is None or live.status == wanted:
                out.append(live)
        for run in self._runs.values():
            live = run.snapshot()
            if live.id not in seen and live.workflow_name == workflow_name and (wanted is None or live.status == wanted):
                out.append(live)
        return out

    async def wait(self, instance_id: str, timeout: float | None = None) -> WorkflowInstance:
        """Wait until the instance finishes; returns it.

        Raises:
            InstanceNotFound: there is no such instance.
            StoreError: the store failed a write of the instance's run in this
                engine (disk full...): the run stopped, the instance is left
                unfinished for ``resume()``.
            TimeoutError: it did not finish within ``timeout`` seconds.
        """
        if timeout is None:
            return await self._wait(instance_id)  # no cancel scope: wait() is on every client's path
        with trio.move_on_after(timeout):
            return await self._wait(instance_id)
        raise TimeoutError(f"instance {instance_id!r} did not finish within {timeout:g} s")

    async def _wait(self, instance_id: str) -> WorkflowInstance:
        delay = 0.01
        while True:
            run = self._runs.get(instance_id)
            if run is not None:
                await run.done.wait()
                if run.instance.finished:
                    # Its final record is durable, and every write of the
                    # run before it: what the store would give back.
                    return run.snapshot()
            woken = self._sleepers.event(instance_id)
            if woken is not None:
                await woken.wait()  # until it is continued (or cancelled)
                continue
            inst = await self._engine.store.get_instance(instance_id)
            if inst is None:
                raise InstanceNotFound("no such instance", instance_id=instance_id)
            if inst.finished:
                return inst
            failed = self._store_failed.get(instance_id)
            if failed is not None and instance_id not in self._runs:
                raise failed  # stopped here by a failing store: it will not finish by waiting
            if instance_id not in self._runs:
                # Running elsewhere, or not resumed yet: poll the store.
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- control -----------------------------------------------------------

    async def cancel(self, instance_id: str) -> bool:
        """Cancel an unfinished instance: its running steps are cancelled through trio.

        Returns ``True`` once status ``cancelled`` is durable (also when it was
        already being cancelled); ``False`` if the instance does not exist or
        has already finished.
        """
        engine = self._engine
        run = self._runs.get(instance_id)
        if run is not None:
            if run.finishing:
                await run.done.wait()
                return False
            if run.stop_reason == "cancel":
                await run.done.wait()
                return True
            run.stop_reason = "cancel"  # also overrides a stop in progress
            inst = run.instance
        else:
            found = await engine.store.get_instance(instance_id, steps=False)
            if found is None or found.finished:
                return False
            inst = found
        err = WorkflowCancelled("cancelled", workflow=inst.workflow_name, instance_id=inst.id)
        final = attrs.evolve(inst, status=InstanceStatus.CANCELLED, completed_at=engine.now(),
                             error=str(err), error_type=type(err).__name__,
                             current_step=run.current_step if run else inst.current_step)
        await engine.store.update_instance(final, durable=True)
        self._sleepers.drop(instance_id)
        if engine.events.active:
            engine.events.emit(Event(name="workflow.cancelled", instance_id=inst.id, workflow_name=inst.workflow_name))
        if run is None:
            # Not running here when the cancel began; a suspended instance may
            # have woken up while the cancel was written: stop that run too.
            run = self._runs.get(instance_id)
            if run is not None:
                run.stop_reason = "cancel"
        if run is not None:
            run.instance = final
            run.cancel_scope.cancel()
            await run.done.wait()
        await self._cancel_children(instance_id, run.checkpoints if run is not None else None)
        return True

    async def _cancel_children(self, instance_id: str, checkpoints: dict[str, StepResult] | None) -> None:
        """Cancel the unfinished child workflows an instance started."""
        if checkpoints is None:
            checkpoints = await self._engine.store.get_steps(instance_id)
        for child_id in running_children(checkpoints):
            try:
                await self.cancel(child_id)
            except DurableError:
                log.exception("instance %s: could not cancel its child %s", instance_id, child_id)

    async def stop(self) -> None:
        """Stop every instance running here; they stay unfinished in the store, for ``resume()``."""
        self._stopping = True
        runs = list(self._runs.values())
        for run in runs:
            if run.stop_reason is None and not run.finishing:
                run.stop_reason = "stop"
                run.cancel_scope.cancel()
        for run in runs:
            await run.done.wait()
        self._stopping = False
