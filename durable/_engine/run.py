"""The live state of one instance running in this process, and what it needs of its engine.

A :class:`Run` holds the instance record, every checkpoint loaded from the
store (so replay never reads the store per step), progress counters and the
cancel scope that cancel, stop and the workflow timeout act on. A
:class:`Scope` hands out checkpoint keys: ``path + name#occurrence``, counted
per scope, so inserting a step never shifts the keys of steps in other scopes
or of other names.

A run reaches its engine only through :class:`RunHost`: the store and the
lease owner it writes under, the event bus, the clock, the jobs, and the
few services a step needs (start and wait for a child, hear of a signal,
look up a workflow by name). The run driver implements it; nothing of the
engine's own is reached from a run.

(A little over 400 lines: the protocols a run is made of, and the checks
every checkpoint passes through (the write, the order check), sit with the
run they guard.)
"""

from __future__ import annotations

from datetime import datetime
from collections.abc import Awaitable
from enum import Enum
from typing import Any, NoReturn, Protocol, TypeVar

import attrs
import trio

from .events import Event, EventBus, EventName
from .jobs import JobRegistry
from .._graph.states import WorkflowSpec
from .._model.records import StepResult, StepStatus, WorkflowInstance, replace_instance
from ..errors import DurableError, NonDeterminismError, SerializationError
from ..stores import Store
from ..stores._join import join_steps
from ..stores._lease import LeaseLost

__all__ = ["Definition", "PutStepLater", "Run", "RunHost", "Scope", "StopReason"]

_T = TypeVar("_T")


class Definition(WorkflowSpec, Protocol):
    """What the engine runs: a workflow spec (either front-end's) that can execute a run."""

    async def execute(self, run: Run) -> Any:
        """Run (or replay) the workflow body; returns its output."""
        ...


class PutStepLater(Protocol):
    """A store's synchronous, non-durable step write (``LMDBStore.put_step_later``)."""

    def __call__(self, store: Any, instance_id: str, step: StepResult, *, owner: str | None = None) -> None: ...


class RunHost(Protocol):
    """What a :class:`Run` (and the steps it runs) may use of the engine that drives it."""

    @property
    def store(self) -> Store:
        """Where checkpoints go."""
        ...

    @property
    def owner_id(self) -> str:
        """The lease owner every write of the run is fenced by."""
        ...

    @property
    def events(self) -> EventBus:
        """Where the run's events go."""
        ...

    @property
    def jobs(self) -> JobRegistry:
        """The jobs builder tasks name."""
        ...

    @property
    def suspend_after(self) -> float:
        """A top-level wait longer than this many seconds unloads the run (:meth:`Run.suspend`)."""
        ...

    @property
    def put_step_later(self) -> PutStepLater | None:
        """The store's synchronous marker write, if it has one (see :meth:`Run.mark_running`)."""
        ...

    def now(self) -> datetime:
        """The engine's wall-clock time (follows trio's clock)."""
        ...

    def definition(self, name: str) -> Definition:
        """The workflow registered as ``name``; ``WorkflowNotFound`` if there is none."""
        ...

    async def start_child(self, definition: Definition, args: tuple[Any, ...], kwargs: dict[str, Any],
                          instance_id: str, deadline_cap: datetime | None, parent_id: str | None = None) -> str:
        """Start (or find, or continue) the child instance ``instance_id``; its deadline at most ``deadline_cap``."""
        ...

    async def wait(self, instance_id: str) -> WorkflowInstance:
        """Return the instance once it has finished."""
        ...

    async def signal_sent(self, instance_id: str, name: str) -> None:
        """Return once signal ``name`` may have been queued for the instance."""
        ...


class StopReason(str, Enum):
    """Why a run was stopped from outside its workflow's code (``Run.stop_reason``)."""

    CANCEL = "cancel"  #: cancelled: its status ``cancelled`` is recorded
    STOP = "stop"  #: the engine is stopping: the instance stays unfinished, for ``resume()``
    LOST = "lost"  #: its lease is another engine's now (or it finished elsewhere): write nothing more
    SUSPEND = "suspend"  #: unloaded by a long sleep or signal wait; continued when it wakes
    CRASH = "crash"  #: a simulated crash (``durable.testing``): stop as a killed process would


@attrs.define(eq=False)
class Scope:
    """Hands out checkpoint keys; each parallel branch gets a scope of its own."""

    path: str = ""
    counts: dict[str, int] = attrs.field(factory=dict)
    busy: str | None = None
    seq: int = 0  # the place the next step takes among this scope's steps

    def next_key(self, name: str) -> tuple[str, int]:
        """The key of the next step named ``name`` (``path + name#occurrence``) and its place in the scope."""
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        seq = self.seq
        self.seq = seq + 1
        return f"{self.path}{name}#{n}", seq

    def peek_key(self, name: str) -> str:
        """The key :meth:`next_key` would give, without taking it."""
        return f"{self.path}{name}#{self.counts.get(name, 0)}"


@attrs.define(eq=False)
class Run:
    """One instance in flight in this engine."""

    host: RunHost
    definition: Definition
    instance: WorkflowInstance
    checkpoints: dict[str, StepResult]
    total_steps: int
    completed_steps: int = 0
    progress: int = 0
    current_step: str | None = None
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)
    stop_reason: StopReason | None = None
    finishing: bool = False
    fatal: BaseException | None = None
    wake_at: datetime | None = None  # when a suspended run is to continue
    wake_signal: str | None = None  # or the signal it waits for
    _completed_under: dict[str, int] | None = attrs.field(default=None, init=False, repr=False)
    _scope_tops: dict[str, int] | None = attrs.field(default=None, init=False, repr=False)  # see check_order

    @property
    def id(self) -> str:
        return self.instance.id

    @property
    def name(self) -> str:
        return self.instance.workflow_name

    def now(self) -> datetime:
        return self.host.now()

    def snapshot(self) -> WorkflowInstance:
        """The instance as it stands, with its step results."""
        inst = join_steps(self.instance, self.checkpoints.values())
        return replace_instance(inst, current_step=self.current_step)

    def emit(self, name: EventName, **fields: Any) -> None:
        bus = self.host.events
        if bus.active:
            recorder = bus._recorder
            if recorder is not None and bus.recording_only:
                recorder(name, self.id, self.name, fields)  # no Event to build: the log encodes the fields
                return
            bus.emit(Event(name=name, instance_id=self.id, workflow_name=self.name, **fields))

    def fail(self, cls: type[DurableError], message: str, *, step: str | None = None, **extra: Any) -> DurableError:
        """An error of ``cls`` naming this run's workflow and instance."""
        return cls(message, workflow=self.name, instance_id=self.id, step=step, **extra)

    def poison(self, error: BaseException) -> BaseException:
        """End this run with ``error``: no further step may run, whatever the workflow's code catches.

        Used when going on could break a promise: a checkpoint that could not
        be written, or a replay that diverged from its checkpoints.
        """
        if self.fatal is None:
            self.fatal = error
            self.cancel_scope.cancel()
        return self.fatal

    def next_checkpoint(self, scope: Scope, step_name: str,
                        failure: type[DurableError]) -> tuple[str, int, StepResult | None]:
        """The next key of ``step_name`` in ``scope``, its place in the scope, and its checkpoint if one was loaded.

        A failed checkpoint re-raises its error (a ``failure`` if it has none);
        a completed one is counted towards progress, and the caller returns
        its output. Used by the primitives that are not plain steps (sleep,
        signal, child workflow).
        """
        key, seq, rec = self.take_key(scope, step_name)
        if rec is not None and rec.status == StepStatus.FAILED:
            raise rec.exception or self.fail(failure, rec.error or "failed", step=key)
        if rec is not None and rec.status == StepStatus.COMPLETED:
            self.step_completed(step_name, executed=False)
        return key, seq, rec

    def take_key(self, scope: Scope, step_name: str) -> tuple[str, int, StepResult | None]:
        """The next key of ``step_name`` in ``scope``, its place, and its checkpoint, its order checked.

        Raises the run's fatal error if it has one (no step may run after it).
        """
        if self.fatal is not None:
            raise self.fatal
        key, seq = scope.next_key(step_name)
        rec = self.checkpoints.get(key)
        self.check_order(scope, key, seq, rec)
        return key, seq, rec

    def check_order(self, scope: Scope, key: str, seq: int, rec: StepResult | None) -> None:
        """Raise :class:`NonDeterminismError` (and end the run) if step ``key`` at place ``seq`` of ``scope``
        is not where the recorded run had it.

        A checkpoint recorded at another place means steps were inserted,
        removed or reordered; a step with no checkpoint while the recorded run
        went on past that place means the code took another way. Records
        without a place (durable 0.1.0's) are not checked.
        """
        if rec is not None:
            if rec.seq is None or rec.seq == seq:
                return
            problem = (f"it was step {rec.seq} of its scope when it ran, but the workflow now reaches it as step "
                       f"{seq}: steps were inserted, removed or reordered")
        else:
            top = self.recorded_top(scope)
            if top is None or seq > top:
                return
            went_on = sorted((r.seq or 0, k) for k, r in self.checkpoints.items()
                             if r.seq is not None and r.seq >= seq and _scope_of(r) == scope.path)
            problem = (f"the workflow now calls it as step {seq} of its scope, where the recorded run went on to "
                       f"{', '.join(repr(k) for _, k in went_on)} instead")
        raise self.poison(self.fail(
            NonDeterminismError,
            f"replay diverged at {key!r}: {problem}; the code between steps must be deterministic "
            "(use durable.now()/random()/uuid4() for values, durable.patched() for an intentional change)",
            step=key,
        ))

    def recorded_top(self, scope: Scope) -> int | None:
        """The last place in ``scope`` that the recorded run (the checkpoints this run was loaded with) reached."""
        tops = self._scope_tops
        if tops is None:
            tops = self._scope_tops = _scope_tops(self.checkpoints)
        return tops.get(scope.path)

    def unsequenced(self, scope: Scope) -> bool:
        """Whether ``scope`` holds checkpoints without a place (written by durable 0.1.0)."""
        self.recorded_top(scope)
        return _UNSEQUENCED + scope.path in (self._scope_tops or {})

    async def suspend(self, wake_at: datetime | None, signal: str | None = None) -> NoReturn:
        """End this run to free its memory; the engine continues it at ``wake_at`` (a durable sleep),
        or when ``signal`` arrives (``wake_at`` then is the wait's time-out, if any).

        Its checkpoints say where it stands (the sleep's wake-up time is
        durable), so nothing more is written: the instance stays running,
        leased to this engine.
        """
        if self.stop_reason is None and not self.finishing:
            self.stop_reason = StopReason.SUSPEND
            self.wake_at = wake_at
            self.wake_signal = signal
        self.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()  # raises Cancelled: the run's scope is cancelled
        raise AssertionError("unreachable: a suspended run is cancelled")  # pragma: no cover

    def lose(self) -> BaseException:
        """Stop this run at once, writing nothing more: its lease is another engine's now
        (or the instance finished elsewhere, a cancel from another process).
        """
        if self.stop_reason is None and not self.finishing:
            self.stop_reason = StopReason.LOST
        self.cancel_scope.cancel()
        return self.fail(DurableError, "this engine no longer holds the instance's lease")

    async def checkpoint(self, step: StepResult, *, durable: bool) -> None:
        """Store ``step``; returns once it is on disk if ``durable``.

        A failed write poisons the run: the workflow must not move past a step
        whose result is not stored.
        """
        if self.stop_reason is StopReason.CRASH:
            # A simulated crash (durable.testing): like a killed process, the run
            # writes nothing more, not even a step that was running in another branch.
            await trio.lowlevel.checkpoint()  # raises Cancelled: the run's scope is cancelled
        try:  # what _guard does, inline: one coroutine fewer per step
            await self.host.store.put_step(self.id, step, durable=durable, owner=self.host.owner_id)
        except Exception as exc:
            raise self._write_failed(exc, step)  # (its cause set there)
        self.checkpoints[step.key] = step

    async def take_signal(self, name: str, seq: int, step: StepResult) -> bool:
        """Consume queued signal ``seq`` and store ``step`` in one durable write; ``False`` if it is gone."""
        taken = await self._guard(
            self.host.store.take_signal(self.id, name, seq, step, owner=self.host.owner_id), step)
        if taken:
            self.checkpoints[step.key] = step
        return taken

    def mark_running(self, step: StepResult) -> bool:
        """Record ``step`` (a "running" marker: bookkeeping, not durable) without waiting, if the store can.

        ``False`` if the store has no ``put_step_later``: then await
        ``checkpoint(step, durable=False)`` instead.
        """
        later = self.host.put_step_later
        if later is None:
            return False
        try:
            later(self.host.store, self.id, step, owner=self.host.owner_id)
        except Exception as exc:
            raise self._write_failed(exc, step)  # (its cause set there)
        self.checkpoints[step.key] = step
        return True

    async def _guard(self, write: Awaitable[_T], step: StepResult) -> _T:
        """Await a store write of ``step``'s; a failure stops the run (see :meth:`checkpoint`)."""
        try:
            return await write
        except Exception as exc:
            raise self._write_failed(exc, step)  # (its cause set there)

    def _write_failed(self, exc: Exception, step: StepResult) -> BaseException:
        """What a failed write of ``step`` raises: it stops the run (lease lost) or poisons it.

        Raised as ``raise ... from`` the serialization's own cause (the value
        that would not pickle), or from nothing.
        """
        if isinstance(exc, LeaseLost):
            error = self.lose()
        elif isinstance(exc, SerializationError):
            error = self.poison(self.fail(SerializationError, exc.message, step=step.key))
        else:
            error = self.poison(exc)
        error.__cause__ = exc.__cause__ if isinstance(exc, SerializationError) else None
        error.__suppress_context__ = True
        return error

    def completed_under(self, prefix: str) -> int:
        """How many loaded checkpoints under scope ``prefix`` (a parallel's ``key/``) are completed.

        A parallel replayed from its own checkpoint never visits its branches;
        progress still counts their steps, as the crash-free run did.
        """
        if self._completed_under is None:
            counts: dict[str, int] = {}
            for key, rec in self.checkpoints.items():
                if rec.status != StepStatus.COMPLETED:
                    continue
                parts = key.split("/")
                # key = "par#0/label/.../name#n": every "par#i/" level above it.
                for depth in range(1, len(parts), 2):
                    outer = "/".join(parts[:depth]) + "/"
                    counts[outer] = counts.get(outer, 0) + 1
            self._completed_under = counts
        return self._completed_under.get(prefix, 0)

    def step_completed(self, name: str, *, executed: bool) -> None:
        """Count a finished step towards progress; emit progress if it ran now.

        With a known total, progress is the share of steps done (at most 99
        until the end). When the total is unknown (the workflow loops, or more
        steps ran than its graph counts), each step moves progress a tenth of
        the way that is left (at least 1, at most to 99), and the event's
        ``total_steps`` is ``None``. Progress never goes back.
        """
        self.completed_steps += 1
        total: int | None = self.total_steps
        if total and self.completed_steps <= total:
            self.progress = max(self.progress, min(99, self.completed_steps * 100 // total))
        else:
            total = None
            self.progress = min(99, self.progress + max(1, (99 - self.progress) // 10))
        if executed:
            self.emit(
                "workflow.progress", progress=self.progress, current_step=name,
                completed_steps=self.completed_steps, total_steps=total,
            )


def _scope_of(rec: StepResult) -> str | None:
    """The scope path of a checkpoint: its key is ``path + step_name#n``."""
    head = rec.key.rpartition("#")[0]
    return head[: len(head) - len(rec.step_name)] if head.endswith(rec.step_name) else None


_UNSEQUENCED = "\0"  # prefix of the entries of _scope_tops that mark scopes holding records without a place


def _scope_tops(checkpoints: dict[str, StepResult]) -> dict[str, int]:
    """The highest recorded place per scope path (and ``NUL + path`` for scopes with unplaced records)."""
    tops: dict[str, int] = {}
    for rec in checkpoints.values():
        path = _scope_of(rec)
        if path is None:
            continue
        if rec.seq is None:
            tops[_UNSEQUENCED + path] = 0
        elif rec.seq > tops.get(path, -1):
            tops[path] = rec.seq
    return tops
