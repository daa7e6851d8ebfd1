"""Retry policy: a frozen value object and its pure backoff schedule.

Every field may be left unset (``None``) so a step's policy can be merged
field by field over a workflow's ``default_retry``; :meth:`Retry.resolved`
fills what is still unset with the defaults of the TypeScript original.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import attrs

__all__ = ["Retry"]

_DEFAULTS = {
    "max_attempts": 1,
    "interval": 1.0,
    "backoff_rate": 2.0,
    "max_interval": 30.0,
    "retry_on": None,
    "jitter": "none",
}

RetryOn = Sequence[type[BaseException] | str]


def _check_positive(instance: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and not value >= 0:  # also refuses NaN
        raise ValueError(f"Retry.{attribute.name} must be a number >= 0, got {value!r}")


def _check_rate(instance: object, attribute: attrs.Attribute[float | None], value: float | None) -> None:
    if value is not None and not value >= 1:  # as Step Functions: delays never shrink
        raise ValueError(f"Retry.backoff_rate must be a number >= 1, got {value!r}")


def _to_float(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number of seconds, got {value!r}")
    return float(value)


def _to_tuple(
    value: RetryOn | type[BaseException] | str | Iterable[type[BaseException] | str] | None,
) -> tuple[type[BaseException] | str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, type)):
        value = [value]
    items = tuple(value)
    for item in items:
        if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, BaseException))):
            raise TypeError(f"Retry.retry_on takes exception types or message substrings, got {item!r}")
    return items


@attrs.frozen(kw_only=True)
class Retry:
    """How a failing step is retried.

    Args:
        max_attempts: attempts in all, including the first (default 1: no retry).
        interval: seconds before the first retry (default 1).
        backoff_rate: each further delay is multiplied by this (default 2, at least 1).
        max_interval: cap on any one delay, in seconds (default 30).
        retry_on: retry only errors that are instances of these exception
            types, or whose message contains one of these strings (default:
            every error).
        jitter: ``"full"`` draws each delay uniformly from ``[0, delay]`` (as
            AWS Step Functions' ``JitterStrategy: FULL``); ``"none"`` (default)
            waits the exact delay.

    .. versionadded:: 0.1.0
    """

    max_attempts: int | None = attrs.field(default=None)
    interval: float | None = attrs.field(default=None, converter=_to_float, validator=_check_positive)
    backoff_rate: float | None = attrs.field(default=None, converter=_to_float, validator=_check_rate)
    max_interval: float | None = attrs.field(default=None, converter=_to_float, validator=_check_positive)
    retry_on: tuple[type[BaseException] | str, ...] | None = attrs.field(default=None, converter=_to_tuple)
    jitter: Literal["full", "none"] | None = attrs.field(default=None)

    @max_attempts.validator
    def _check_attempts(self, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"Retry.max_attempts must be an int >= 1, got {value!r}")

    @jitter.validator
    def _check_jitter(self, attribute: attrs.Attribute[str | None], value: str | None) -> None:
        if value not in (None, "full", "none"):
            raise ValueError(f"Retry.jitter must be 'full' or 'none', got {value!r}")

    def merged_over(self, base: Retry | None) -> Retry:
        """This policy with every unset field taken from ``base``."""
        if base is None:
            return self
        changes = {
            f.name: getattr(base, f.name)
            for f in attrs.fields(Retry)
            if getattr(self, f.name) is None
        }
        return attrs.evolve(self, **changes)

    def resolved(self) -> Retry:
        """This policy with every unset field set to its default."""
        changes: dict[str, Any] = {
            name: value for name, value in _DEFAULTS.items() if getattr(self, name) is None and value is not None
        }
        return attrs.evolve(self, **changes)

    @property
    def attempts(self) -> int:
        """The resolved ``max_attempts``."""
        return self.max_attempts if self.max_attempts is not None else 1

    def should_retry(self, error: BaseException) -> bool:
        """Whether ``error`` is one this policy retries (ignoring the attempt count)."""
        if not self.retry_on:
            return True
        message = str(error)
        for item in self.retry_on:
            if isinstance(item, str):
                if item in message:
                    return True
            elif isinstance(error, item):
                return True
        return False

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        r = self.resolved()
        assert r.interval is not None and r.backoff_rate is not None and r.max_interval is not None
        exponent = max(0, attempt - 1)
        try:
            base = r.interval * (r.backoff_rate**exponent)
        except OverflowError:
            base = r.max_interval if r.interval > 0 else 0.0
        base = min(base, r.max_interval)
        if r.jitter == "full":
            return (rng or random).uniform(0.0, base)
        return base


@functools.lru_cache(maxsize=4096)
def effective_retry(retry: Retry | None, default: Retry | None) -> Retry:
    """``retry`` merged field by field over ``default``, with the rest at their defaults (cached)."""
    return (retry or Retry()).merged_over(default).resolved()
