"""The job registry: names a builder task can run, mapped to functions."""

from __future__ import annotations

import contextvars
import functools
import inspect
import types
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, final

import trio

from .._model.clock import pause_autojump, resume_autojump
from .._model.ids import check_workflow_name
from ..errors import JobNotFound

__all__ = ["JobRegistry", "as_async_call", "inline_call", "is_async_callable"]


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True if calling ``fn`` returns a coroutine (an ``async def``, or an object with one as ``__call__``)."""
    while hasattr(fn, "__wrapped__") and not inspect.iscoroutinefunction(fn):
        fn = fn.__wrapped__
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004
    return call is not None and inspect.iscoroutinefunction(call)


def as_async_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Awaitable[Any]]:
    """A zero-argument async callable running ``fn(*args, **kwargs)``.

    An async ``fn`` is awaited on the trio loop; a sync one runs in a worker
    thread so it never blocks the loop (on cancellation the thread is
    abandoned: it finishes in the background, its result discarded).
    """
    if is_async_callable(fn):
        return lambda: fn(*args, **kwargs)
    call = functools.partial(fn, *args, **kwargs)
    return lambda: _in_thread(call)


async def _in_thread(call: Callable[[], Any]) -> Any:
    # Boxed in a tuple: trio refuses a thread function whose result is a coroutine.
    paused = pause_autojump()  # a mock clock must not leap ahead while the thread works
    try:
        (result,) = await trio.to_thread.run_sync(lambda: (call(),), abandon_on_cancel=True)
    finally:
        resume_autojump(paused)
    if inspect.isawaitable(result):
        # A sync callable that returns an awaitable (say, ``lambda x: job(x)``
        # over an async job): await it here, on the loop.
        result = await result
    return result


async def _value(value: Any) -> Any:
    return value


def inline_call(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """A zero-argument async callable running the quick sync ``fn`` on the loop itself."""
    return lambda: _value(fn())


#: jobs replaced for a test (``durable.testing.replace_step``), by job name: taken before the registry
#: and before a task's own callable. A context variable, so only the code under the ``with`` sees them.
job_overrides: contextvars.ContextVar[Mapping[str, Callable[..., Any]]] = contextvars.ContextVar(
    "durable_job_overrides", default=types.MappingProxyType({}))

_HINT = ("register it with engine.jobs.register(name, fn) before starting the workflow "
         "(durable.testing.run() and crash_and_resume() take jobs={name: fn})")


@final
class JobRegistry:
    """``engine.jobs``: register the functions builder tasks run by name.

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self._jobs: dict[str, Callable[..., Any]] = {}
        self._queues: dict[str, str] = {}

    def register(self, name: str, fn: Callable[..., Any], *, queue: str | None = None) -> None:
        """Register ``fn`` (async, or sync: run in a worker thread) as job ``name``.

        With ``queue``, a task running the job does not run it in the
        workflow's process: it queues it for a worker serving that queue
        (``durable worker --queue NAME``), which runs it with this
        registration, and the workflow unloads until its result is stored.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"a job name must be a non-empty str, got {name!r}")
        if not callable(fn):
            raise TypeError(f"job {name!r} must be callable, got {fn!r}")
        if queue is not None:
            check_workflow_name(queue)
            self._queues[name] = queue
        else:
            self._queues.pop(name, None)
        self._jobs[name] = fn

    def queue_of(self, name: str) -> str | None:
        """The queue job ``name`` runs on (``None``: in the workflow's process)."""
        return self._queues.get(name)

    def queues(self) -> list[str]:
        """The queues registered jobs run on, sorted."""
        return sorted(set(self._queues.values()))

    def get(self, name: str, *, workflow: str | None = None, instance_id: str | None = None,
            step: str | None = None) -> Callable[..., Any]:
        """The job called ``name``; :class:`JobNotFound` listing the registered names otherwise."""
        override = job_overrides.get().get(name)
        if override is not None:
            return override
        try:
            return self._jobs[name]
        except KeyError:
            known = ", ".join(sorted(self._jobs)) or "none"
            raise JobNotFound(f"no job {name!r} is registered (registered: {known}): {_HINT}",
                              workflow=workflow, instance_id=instance_id, step=step) from None

    def check(self, names: Iterable[str], *, workflow: str) -> None:
        """Raise :class:`JobNotFound` naming those of ``names`` that are not registered (nor replaced)."""
        overrides = job_overrides.get()
        missing = sorted(n for n in names if n not in self._jobs and n not in overrides)
        if missing:
            known = ", ".join(sorted(self._jobs)) or "none"
            raise JobNotFound(f"the workflow's tasks run jobs that are not registered: {', '.join(map(repr, missing))} "
                              f"(registered: {known}): {_HINT}", workflow=workflow)

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def names(self) -> list[str]:
        """The registered job names, sorted."""
        return sorted(self._jobs)
