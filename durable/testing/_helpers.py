"""The implementations behind :mod:`durable.testing`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
import types
from contextlib import contextmanager
from typing import Any, Literal

import trio
import trio.testing

from .._frontends.builder import callable_name
from .._frontends.decorators import StepFunction
from .._engine.jobs import job_overrides
from .._engine.engine import Engine
from .._engine.events import Event, EventName
from .._model.records import WorkflowInstance
from ..stores import MemoryStore, Store

__all__ = ["capture_events", "crash_and_resume", "replace_step", "run", "run_on_engine"]


Jobs = Mapping[str, Callable[..., Any]]


def _setup(engine: Engine, workflow: Any, jobs: Jobs | None) -> None:
    for name, fn in (jobs or {}).items():
        engine.jobs.register(name, fn)
    engine.workflows.register(workflow)


async def run_on_engine(workflow: Any, /, *args: Any, store: Store | None = None, jobs: Jobs | None = None,
                        **kwargs: Any) -> WorkflowInstance:
    """Start ``workflow`` on a new engine (in-memory unless ``store``), wait, return the finished instance.

    ``jobs`` (name -> function) are registered first: what a builder workflow's tasks run.
    """
    async with Engine(store=store or MemoryStore()) as engine:
        _setup(engine, workflow, jobs)
        return await engine.workflows.wait(await engine.workflows.start(workflow, *args, **kwargs))


def run(workflow: Any, /, *args: Any, jobs: Jobs | None = None, **kwargs: Any) -> WorkflowInstance:
    """:func:`run_on_engine` from sync code, under ``MockClock(autojump_threshold=0)``."""
    return trio.run(
        lambda: run_on_engine(workflow, *args, jobs=jobs, **kwargs),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )


@contextmanager
def replace_step(target: StepFunction[Any, Any] | str | Callable[..., Any], fake: Callable[..., Any]) -> Iterator[None]:
    """Run ``fake`` instead of a step inside the ``with`` block.

    ``target`` is a ``@step`` function, or a builder task's job: its name (as
    registered with ``engine.jobs`` or given in ``jobs=``), or the callable a
    task was given as ``job=``. The step keeps its name and identity, so
    checkpoints look as they would with the real function. A replaced job is
    seen by engines and runs started inside the block.
    """
    if isinstance(target, StepFunction):
        real = target.__wrapped__
        target.__wrapped__ = fake
        try:
            yield
        finally:
            target.__wrapped__ = real
        return
    if isinstance(target, str) and target:
        name = target
    elif callable(target):
        name = callable_name(target)  # the job name the builder gives a task's callable
    else:
        raise TypeError(f"replace_step() takes a @step function, a job name or a job function, got {target!r}")
    if not callable(fake):
        raise TypeError(f"replace_step(): the replacement must be callable, got {fake!r}")
    token = job_overrides.set(types.MappingProxyType({**job_overrides.get(), name: fake}))
    try:
        yield
    finally:
        job_overrides.reset(token)


@contextmanager
def capture_events(engine: Engine, name: EventName | Literal["*"] = "*") -> Iterator[list[Event]]:
    """Collect the engine's events (all, or those called ``name``) into a list."""
    events: list[Event] = []
    off = engine.events.on(name, events.append)
    try:
        yield events
    finally:
        off()


async def crash_and_resume(
    workflow: Any, /, *args: Any, after: str, store: Store | None = None, jobs: Jobs | None = None, **kwargs: Any
) -> WorkflowInstance:
    """Run ``workflow`` until step ``after`` is checkpointed, drop it there, resume it in a new engine.

    The first engine stops the instance the moment step ``after`` completes
    (as a crash right after the checkpoint would: nothing after it runs). A
    second engine on the same store resumes it; the finished instance is
    returned. Count your steps' executions to check what ran again. It waits
    as long as the first run takes to reach ``after`` or to end.
    """
    store = store or MemoryStore()
    async with Engine(store=store) as engine:
        _setup(engine, workflow, jobs)
        crashed = trio.Event()
        instance_id = ""

        def on_completed(event: Event) -> None:
            if event.step_name == after and event.instance_id == instance_id and not crashed.is_set():
                engine.workflows.driver.crash(event.instance_id)
                crashed.set()

        engine.events.on("workflow.step.completed", on_completed)
        instance_id = await engine.workflows.start(workflow, *args, **kwargs)
        # No time limit here: under an autojumping MockClock any deadline is
        # where virtual time leaps to whenever the loop waits on a thread (a
        # slow fsync), which would end the wait before the run does.
        run = engine.workflows.driver.runs.get(instance_id)
        if run is not None:
            await run.done.wait()
        if not crashed.is_set():
            raise AssertionError(f"step {after!r} never completed, so no crash was simulated")
    async with Engine(store=store) as engine:
        _setup(engine, workflow, jobs)
        await engine.workflows.resume()
        return await engine.workflows.wait(instance_id)
