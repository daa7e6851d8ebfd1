"""Waiting in a decorator workflow: ``durable.sleep``, ``durable.sleep_until``, ``durable.wait_for_signal``.

Inside a workflow run each is a checkpointed step of its own (the engine's
:func:`~durable._engine.sleep.sleep_step` and
:func:`~durable._engine.signals.signal_step`, which the builder's wait and
signal states use too). Outside an engine the sleeps are plain
``trio.sleep``: under a ``MockClock`` a day-long sleep takes no real time in
a unit test; a signal wait with a ``timeout`` sleeps that long and times out.

Each is marked as a durable primitive (``__durable_primitive__``), which is
how the compiler recognises a call of it in a workflow's source.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import trio

from .active import in_workflow
from .._engine.signals import NO_DEFAULT, signal_step
from .._engine.sleep import sleep_step
from .._model.clock import now as clock_now
from .._model.ids import check_signal_name
from ..errors import DurableError, SignalTimeout

__all__ = ["sleep", "sleep_until", "wait_for_signal"]


async def sleep(seconds: float) -> None:
    """Sleep durably for ``seconds``: the wake-up time survives a restart.

    Inside a workflow run the sleep is a checkpointed step named ``sleep``;
    elsewhere it is ``trio.sleep(seconds)``.

    .. versionadded:: 0.1.0
    """
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds != seconds or seconds < 0:
        raise ValueError(f"durable.sleep() takes a number of seconds >= 0, got {seconds!r}")
    current = in_workflow()
    if current is None:
        await trio.sleep(seconds)
        return
    await sleep_step(current.run, current.scope, "sleep", lambda start: start + timedelta(seconds=seconds))


async def sleep_until(when: datetime) -> None:
    """Sleep durably until ``when`` (an aware ``datetime``); at once if it has passed.

    .. versionadded:: 0.1.0
    """
    if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"durable.sleep_until() takes an aware datetime (with a tzinfo), got {when!r}")
    current = in_workflow()
    if current is None:
        await trio.sleep(max(0.0, (when - clock_now()).total_seconds()))
        return
    await sleep_step(current.run, current.scope, "sleep", lambda start: when)


async def wait_for_signal(name: str, *, timeout: float | None = None, default: Any = NO_DEFAULT) -> Any:
    """Wait for signal ``name`` sent with ``engine.workflows.signal(instance_id, name, payload)``; returns the payload.

    Args:
        name: the signal's name.
        timeout: seconds to wait (counted from the first time this wait
            started, across restarts); ``None`` waits for ever.
        default: returned when the wait times out; without it a time-out
            raises :class:`~durable.errors.SignalTimeout`.

    Outside an engine nobody can send a signal: with a ``timeout`` the wait
    sleeps that long and times out (``default`` or ``SignalTimeout``), so a
    plain unit test covers the time-out path; without one it raises
    :class:`~durable.DurableError`.

    .. versionadded:: 0.1.0
    """
    check_signal_name(name)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or timeout != timeout or timeout < 0):
        raise ValueError(f"wait_for_signal() timeout must be a number of seconds >= 0 or None, got {timeout!r}")
    current = in_workflow()
    if current is None:
        if timeout is None:
            raise DurableError(f"wait_for_signal({name!r}) outside an engine would wait for ever: "
                               "no one can send it a signal; pass timeout= to test the time-out path")
        await trio.sleep(timeout)
        if default is not NO_DEFAULT:
            return default
        raise SignalTimeout(f"no signal {name!r} within {timeout:g} s")
    return await signal_step(current.run, current.scope, name, timeout, default)


sleep.__durable_primitive__ = "sleep"  # type: ignore[attr-defined]
sleep_until.__durable_primitive__ = "sleep_until"  # type: ignore[attr-defined]
wait_for_signal.__durable_primitive__ = "wait_for_signal"  # type: ignore[attr-defined]
