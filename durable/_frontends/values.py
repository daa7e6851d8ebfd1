"""Values and changes for workflow code between steps: ``durable.now()``, ``random()``, ``uuid4()``, ``patched()``.

Code between steps re-runs on every replay, so it must decide the same way
each time. These give it what it may not compute afresh: the time, a random
number, a UUID (each drawn once, checkpointed, and returned as stored on
replay), and whether this run takes the path of an intentional code change
(:func:`patched`). Outside an engine (a unit test awaiting the workflow as a
plain function), and inside a running step, they are plain: the clock, a
fresh random value, ``True``.

Each is marked as a durable primitive (``__durable_primitive__ = "value"``),
so the compiler does not draw it as a step.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from .active import in_workflow
from .._engine.values import patch, record_value
from .._model.clock import now as clock_now

__all__ = ["deprecate_patch", "now", "patched", "random", "uuid4"]

_T = TypeVar("_T")


async def _value(name: str, make: Callable[[], _T], engine_make: Callable[[Any], _T] | None = None) -> _T:
    current = in_workflow()
    if current is None:
        return make()
    run = current.run
    value: _T = await record_value(run, current.scope, name, (lambda: engine_make(run)) if engine_make else make)
    return value


async def now() -> datetime:
    """The current time (aware, UTC), as it was when this point of the workflow first ran.

    On replay the stored time comes back, so code may branch on it. In a run
    it is the engine's clock (trio's, so a ``MockClock`` moves it).

    .. versionadded:: 0.2.0
    """
    return await _value("now", clock_now, lambda run: run.now())


async def random() -> float:
    """A random float in [0, 1), drawn once and returned as stored on every replay.

    .. versionadded:: 0.2.0
    """
    return await _value("random", _random.random)


async def uuid4() -> _uuid.UUID:
    """A random UUID, drawn once and returned as stored on every replay.

    .. versionadded:: 0.2.0
    """
    return await _value("uuid4", _uuid.uuid4)


async def patched(change_id: str) -> bool:
    """Whether this run takes the new path of an intentional change named ``change_id``.

    Write a change to a workflow as ``if await durable.patched("charge-first"):
    <new code> else: <old code>``. Instances started with the new code, or
    reaching this point for the first time, take the new path (``True``, and
    a marker is recorded); instances in flight that already went past this
    point with the old code replay the old one (``False``). Once no instance
    that ran the old code is left, replace the ``if`` by
    ``await durable.deprecate_patch("charge-first")`` and the new code alone.
    Outside an engine, and inside a running step, it is ``True``.

    .. versionadded:: 0.2.0
    """
    if not isinstance(change_id, str) or not change_id:
        raise ValueError(f"patched() takes a change id (a non-empty str), got {change_id!r}")
    current = in_workflow()
    if current is None:
        return True
    return await patch(current.run, current.scope, change_id)


async def deprecate_patch(change_id: str) -> None:
    """Mark where ``if await durable.patched(change_id):`` stood, once the old path is gone from the code.

    Runs that recorded the change's marker replay in step; nothing is written.

    .. versionadded:: 0.2.0
    """
    if not isinstance(change_id, str) or not change_id:
        raise ValueError(f"deprecate_patch() takes a change id (a non-empty str), got {change_id!r}")
    current = in_workflow()
    if current is None:
        return
    await patch(current.run, current.scope, change_id, deprecated=True)


for _fn in (now, random, uuid4, patched, deprecate_patch):
    setattr(_fn, "__durable_primitive__", "value")
