"""The Retry policy value object and its backoff schedule (durable/_model/retry.py)."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable import Retry

FIELDS = ("max_attempts", "interval", "backoff_rate", "max_interval", "retry_on", "jitter")

# -- defaults and merging ----------------------------------------------------------


def test_all_fields_unset_by_default() -> None:
    """A bare Retry() leaves every field None so it can be merged."""
    r = Retry()
    assert all(getattr(r, f) is None for f in FIELDS)


def test_resolved_defaults() -> None:
    """resolved() fills the defaults: 1 attempt, interval 1.0, rate 2.0, cap 30.0, no jitter, retry all."""
    r = Retry().resolved()
    assert r.max_attempts == 1
    assert r.interval == 1.0
    assert r.backoff_rate == 2.0
    assert r.max_interval == 30.0
    assert r.jitter == "none"
    assert r.retry_on is None


def test_resolved_keeps_set_fields() -> None:
    """resolved() does not overwrite fields that are set."""
    r = Retry(max_attempts=4, interval=0.5, backoff_rate=3, max_interval=9, retry_on=[KeyError], jitter="full")
    assert r.resolved() == r


def test_resolved_is_idempotent() -> None:
    """Resolving twice is the same as resolving once."""
    r = Retry(interval=2).resolved()
    assert r.resolved() == r


def test_attempts_property() -> None:
    """attempts is max_attempts, or 1 when unset."""
    assert Retry().attempts == 1
    assert Retry(max_attempts=7).attempts == 7


def test_merged_over_none_returns_self() -> None:
    """merged_over(None) returns the policy itself."""
    r = Retry(max_attempts=3)
    assert r.merged_over(None) is r


def test_merged_over_field_by_field() -> None:
    """The step's set fields win; its unset fields are taken from the base."""
    base = Retry(max_attempts=2, interval=3.0, backoff_rate=1.5, retry_on=[KeyError], jitter="full")
    step = Retry(max_attempts=5, max_interval=7.0, retry_on="boom")
    m = step.merged_over(base)
    assert m.max_attempts == 5
    assert m.interval == 3.0
    assert m.backoff_rate == 1.5
    assert m.max_interval == 7.0
    assert m.retry_on == ("boom",)
    assert m.jitter == "full"
    # the inputs are unchanged (frozen values)
    assert step.interval is None and base.max_interval is None


def test_merged_over_leaves_fields_unset_in_both() -> None:
    """A field unset in both step and base stays unset until resolved()."""
    m = Retry(max_attempts=2).merged_over(Retry(interval=4))
    assert m.backoff_rate is None and m.max_interval is None and m.jitter is None and m.retry_on is None
    assert m.resolved().backoff_rate == 2.0


def test_merged_over_empty_step_takes_base() -> None:
    """An empty step policy merged over a base equals the base."""
    base = Retry(max_attempts=3, interval=0.25, jitter="none")
    assert Retry().merged_over(base) == base


def test_retry_is_frozen() -> None:
    """Retry is immutable."""
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Retry().max_attempts = 3  # type: ignore[misc]


# -- validation -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", 2.0])
def test_max_attempts_must_be_int_at_least_one(bad: Any) -> None:
    """max_attempts below 1 or not an int is a ValueError."""
    with pytest.raises(ValueError, match="max_attempts"):
        Retry(max_attempts=bad)


@pytest.mark.parametrize("field_name", ["interval", "backoff_rate", "max_interval"])
def test_negative_durations_rejected(field_name: str) -> None:
    """A negative interval, backoff_rate or max_interval is a ValueError naming the field."""
    with pytest.raises(ValueError, match=field_name):
        Retry(**{field_name: -0.001})


@pytest.mark.parametrize("field_name", ["interval", "max_interval"])
def test_zero_durations_allowed(field_name: str) -> None:
    """Zero is accepted for interval and max_interval."""
    assert getattr(Retry(**{field_name: 0}), field_name) == 0


@pytest.mark.parametrize("rate", [0, 0.5, 0.999])
def test_backoff_rate_below_one_rejected(rate: float) -> None:
    """A backoff_rate below 1 (shrinking delays) is a ValueError, as in Step Functions."""
    with pytest.raises(ValueError, match="backoff_rate"):
        Retry(backoff_rate=rate)


def test_bool_is_not_a_number_of_attempts_or_seconds() -> None:
    """True is not accepted as max_attempts or as a duration."""
    with pytest.raises(ValueError):
        Retry(max_attempts=True)
    with pytest.raises(TypeError):
        Retry(interval=True)


@pytest.mark.parametrize("field_name", ["interval", "backoff_rate", "max_interval"])
def test_nan_durations_rejected(field_name: str) -> None:
    """NaN is not a valid interval, backoff_rate or max_interval (it slips past a `< 0` check)."""
    with pytest.raises(ValueError, match=field_name):
        Retry(**{field_name: math.nan})


@pytest.mark.parametrize("bad", ["FULL", "random", "", 1])
def test_bad_jitter_rejected(bad: Any) -> None:
    """A jitter other than 'full', 'none' or None is a ValueError."""
    with pytest.raises(ValueError, match="jitter"):
        Retry(jitter=bad)


@pytest.mark.parametrize("jitter", ["full", "none", None])
def test_good_jitter_accepted(jitter: Any) -> None:
    """'full', 'none' and None are accepted jitter values."""
    assert Retry(jitter=jitter).jitter == jitter


@pytest.mark.parametrize("bad", [[42], [int], [ValueError, 3.0], [None], [b"bytes"], int, [[ValueError]]])
def test_retry_on_rejects_non_exception_items(bad: Any) -> None:
    """retry_on items that are neither exception types nor strings are a TypeError."""
    with pytest.raises(TypeError, match="retry_on"):
        Retry(retry_on=bad)


def test_retry_on_single_type_or_string() -> None:
    """retry_on accepts a single exception type or a single string and stores a tuple."""
    assert Retry(retry_on=KeyError).retry_on == (KeyError,)
    assert Retry(retry_on="timeout").retry_on == ("timeout",)


def test_retry_on_sequence_is_stored_as_tuple() -> None:
    """retry_on given as a list or generator is stored as a tuple, in order."""
    assert Retry(retry_on=[KeyError, "x", OSError]).retry_on == (KeyError, "x", OSError)
    assert Retry(retry_on=(t for t in [ValueError])).retry_on == (ValueError,)
    assert Retry(retry_on=[BaseException]).retry_on == (BaseException,)


# -- should_retry ------------------------------------------------------------------------


def test_should_retry_none_means_everything() -> None:
    """With retry_on unset, every error is retried."""
    r = Retry()
    assert r.should_retry(ValueError("x"))
    assert r.should_retry(KeyError("y"))
    assert r.should_retry(Exception())


def test_should_retry_types_match_subclasses() -> None:
    """An exception type matches instances of it and of its subclasses only."""
    r = Retry(retry_on=[OSError])
    assert r.should_retry(OSError("x"))
    assert r.should_retry(ConnectionResetError("reset"))  # subclass of OSError
    assert r.should_retry(FileNotFoundError())
    assert not r.should_retry(ValueError("x"))
    assert not Retry(retry_on=ConnectionResetError).should_retry(OSError("base is not a subclass"))


def test_should_retry_message_substrings() -> None:
    """A string matches errors whose message contains it (case-sensitively)."""
    r = Retry(retry_on="temporarily unavailable")
    assert r.should_retry(RuntimeError("service temporarily unavailable, try later"))
    assert not r.should_retry(RuntimeError("permanent failure"))
    assert not r.should_retry(RuntimeError("Temporarily Unavailable"))


def test_should_retry_mixed_types_and_strings() -> None:
    """Types and strings combine: an error matching either is retried."""
    r = Retry(retry_on=[KeyError, "timeout"])
    assert r.should_retry(KeyError("k"))
    assert r.should_retry(RuntimeError("read timeout"))
    assert not r.should_retry(RuntimeError("bad input"))
    assert not r.should_retry(ValueError("nope"))


# -- delay: exact schedule ---------------------------------------------------------------


def test_delay_default_schedule() -> None:
    """Default delays are 1, 2, 4, 8, 16, then capped at 30."""
    r = Retry()
    assert [r.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_delay_respects_max_interval() -> None:
    """max_interval caps every delay."""
    r = Retry(interval=1, backoff_rate=2, max_interval=5)
    assert [r.delay(n) for n in range(1, 7)] == [1, 2, 4, 5, 5, 5]


def test_delay_backoff_rate_one_is_constant() -> None:
    """backoff_rate 1 gives a constant delay equal to interval."""
    r = Retry(interval=3, backoff_rate=1)
    assert {r.delay(n) for n in range(1, 50)} == {3}


def test_delay_custom_interval_and_rate() -> None:
    """interval * backoff_rate**(attempt-1), with the rate applied from the second retry on."""
    r = Retry(interval=0.5, backoff_rate=3, max_interval=100)
    assert [r.delay(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 13.5, 40.5]


def test_delay_interval_above_cap() -> None:
    """An interval larger than max_interval is capped from the first attempt."""
    assert Retry(interval=50, max_interval=10).delay(1) == 10


def test_delay_attempt_below_one_uses_interval() -> None:
    """Attempt numbers below 1 are treated as the first attempt."""
    assert Retry(interval=2).delay(0) == 2
    assert Retry(interval=2).delay(-5) == 2


@pytest.mark.parametrize("attempt", [1100, 10**4, 10**9, 10**18, sys.maxsize, 10**100])
def test_delay_huge_attempt_returns_max_interval(attempt: int) -> None:
    """Huge attempt numbers do not overflow: the delay is max_interval."""
    assert Retry().delay(attempt) == 30.0
    assert Retry(max_interval=7.5).delay(attempt) == 7.5
    assert Retry(interval=1.0, backoff_rate=2.0, max_interval=7.5).delay(attempt) == 7.5


def test_delay_huge_attempt_with_integer_fields_is_fast() -> None:
    """Integer interval/backoff_rate (as users write them) don't make a huge attempt compute a huge int.

    ``Retry(backoff_rate=3)`` keeps an int, so ``backoff_rate ** exponent`` is
    exact big-integer arithmetic: minutes of CPU for attempt 10**9. Run in a
    subprocess so a hang is bounded and reported, not inherited by the suite.
    """
    code = "from durable._model.retry import Retry; print(Retry(interval=1, backoff_rate=3).delay(10**9))"
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3)
    except subprocess.TimeoutExpired:
        pytest.fail("Retry(interval=1, backoff_rate=3).delay(10**9) did not finish within 3 s")
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) == 30.0


@pytest.mark.parametrize("attempt", [1, 2, 10, 1100, 10**6])
def test_delay_zero_interval_never_waits(attempt: int) -> None:
    """interval 0 means retry at once, at every attempt (even when backoff_rate**n overflows)."""
    assert Retry(interval=0).delay(attempt) == 0
    assert Retry(interval=0.0, backoff_rate=10.0).delay(attempt) == 0


def test_delay_full_jitter_with_seeded_rng_is_reproducible() -> None:
    """With jitter='full', the same seed gives the same delays, within [0, base]."""
    r = Retry(jitter="full")
    a = [r.delay(n, random.Random(7)) for n in range(1, 10)]
    b = [r.delay(n, random.Random(7)) for n in range(1, 10)]
    assert a == b
    base = Retry()
    for n, d in enumerate(a, start=1):
        assert 0 <= d <= base.delay(n)


def test_delay_full_jitter_default_rng_in_range() -> None:
    """With jitter='full' and no rng, delays still fall in [0, base]."""
    r = Retry(jitter="full", interval=2, max_interval=10)
    for n in range(1, 20):
        assert 0 <= r.delay(n) <= Retry(interval=2, max_interval=10).delay(n)


def test_delay_no_jitter_ignores_rng() -> None:
    """Without jitter the rng is not consulted."""
    rng = random.Random(1)
    state = rng.getstate()
    assert Retry(jitter="none").delay(3, rng) == 4.0
    assert rng.getstate() == state


# -- properties ------------------------------------------------------------------------

_durations = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
_rates = st.floats(min_value=1, max_value=1e3, allow_nan=False, allow_infinity=False)
_any_rates = _rates  # backoff_rate < 1 is refused by the validator
_attempts = st.one_of(st.integers(min_value=1, max_value=2000), st.integers(min_value=1, max_value=10**12))


def _policies(rates: st.SearchStrategy[float], jitter: st.SearchStrategy[Any]) -> st.SearchStrategy[Retry]:
    return st.builds(
        Retry,
        max_attempts=st.one_of(st.none(), st.integers(min_value=1, max_value=100)),
        interval=st.one_of(st.none(), _durations),
        backoff_rate=st.one_of(st.none(), rates),
        max_interval=st.one_of(st.none(), _durations),
        jitter=jitter,
    )


_fast = settings(max_examples=150, deadline=None, database=None)


@_fast
@given(policy=_policies(_any_rates, st.sampled_from([None, "none", "full"])), attempt=_attempts, seed=st.integers())
def test_delay_between_zero_and_max_interval(policy: Retry, attempt: int, seed: int) -> None:
    """For any valid policy and attempt >= 1, 0 <= delay <= max_interval."""
    d = policy.delay(attempt, random.Random(seed))
    cap = policy.resolved().max_interval
    assert cap is not None
    assert 0 <= d <= cap


@_fast
@given(policy=_policies(_rates, st.sampled_from([None, "none"])), attempt=_attempts, step=st.integers(1, 1000))
def test_delay_non_decreasing_without_jitter(policy: Retry, attempt: int, step: int) -> None:
    """Without jitter (and backoff_rate >= 1), a later attempt never waits less than an earlier one."""
    assert policy.delay(attempt) <= policy.delay(attempt + 1)
    assert policy.delay(attempt) <= policy.delay(attempt + step)


@_fast
@given(policy=_policies(_any_rates, st.just("full")), attempt=_attempts, seed=st.integers())
def test_full_jitter_within_unjittered_delay(policy: Retry, attempt: int, seed: int) -> None:
    """With jitter='full' and a seeded Random, the delay lies in [0, the un-jittered delay]."""
    plain = attrs.evolve(policy, jitter="none").delay(attempt)
    d = policy.delay(attempt, random.Random(seed))
    assert 0 <= d <= plain


@_fast
@given(
    step=_policies(_any_rates, st.sampled_from([None, "none", "full"])),
    base=st.one_of(st.none(), _policies(_any_rates, st.sampled_from([None, "none", "full"]))),
)
def test_merged_over_property(step: Retry, base: Retry | None) -> None:
    """Every field of step.merged_over(base) is the step's if set, else the base's."""
    m = step.merged_over(base)
    for f in FIELDS:
        mine = getattr(step, f)
        expected = mine if mine is not None or base is None else getattr(base, f)
        assert getattr(m, f) == expected
