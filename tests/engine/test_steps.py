"""The checkpointed step call: retries with backoff, per-attempt timeouts, idempotency keys."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from durable import Engine, InstanceStatus, Retry, StepStatus, current_step, workflow

from support import run_registered


def _flaky(times: list[float], fail: int, exc: type[Exception] = ValueError, message: str = "flaky") -> Any:
    async def job(x: Any) -> str:
        times.append(trio.current_time())
        if len(times) <= fail:
            raise exc(message)
        return "ok"

    return job


async def test_retry_waits_the_backoff_schedule(engine: Engine, autojump_clock: Any) -> None:
    """Attempts are spaced interval * backoff_rate**n, capped at max_interval."""
    times: list[float] = []
    engine.jobs.register("j", _flaky(times, fail=4))
    g = workflow("r").task("t", job="j", retry=Retry(max_attempts=5, interval=1, backoff_rate=3, max_interval=5)).build()
    inst = await run_registered(engine, g)
    assert inst.status == "completed"
    assert inst.step_results["t"].attempts == 5
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    assert gaps == [1.0, 3.0, 5.0, 5.0]


async def test_retry_exhausted_fails_with_step_failed(engine: Engine, autojump_clock: Any) -> None:
    """After max_attempts the step is failed (checkpointed) and the instance fails naming the step."""
    times: list[float] = []
    engine.jobs.register("j", _flaky(times, fail=10))
    g = workflow("r").task("t", job="j", retry=Retry(max_attempts=3)).build()
    inst = await run_registered(engine, g)
    assert len(times) == 3
    assert inst.status == "failed"
    assert inst.error_type == "StepFailed"
    assert "after 3 attempt(s)" in (inst.error or "") and "ValueError: flaky" in (inst.error or "")
    step = inst.step_results["t"]
    assert step.status == StepStatus.FAILED and step.attempts == 3 and step.error == "ValueError: flaky"


async def test_retry_on_types_and_message_substrings(engine: Engine, autojump_clock: Any) -> None:
    """retry_on retries only matching exception types or messages containing a listed substring."""
    a: list[float] = []
    b: list[float] = []
    c: list[float] = []
    engine.jobs.register("a", _flaky(a, fail=1, exc=KeyError))
    engine.jobs.register("b", _flaky(b, fail=1, exc=RuntimeError, message="temporarily unavailable"))
    engine.jobs.register("c", _flaky(c, fail=1, exc=RuntimeError, message="permanent"))
    policy = Retry(max_attempts=3, retry_on=[LookupError, "temporarily"])
    for job, log in (("a", a), ("b", b), ("c", c)):
        inst = await run_registered(engine, workflow(f"w{job}").task("t", job=job, retry=policy).build())
        assert inst.status == ("failed" if job == "c" else "completed")
        assert len(log) == (1 if job == "c" else 2)


async def test_default_retry_merges_field_by_field(engine: Engine, autojump_clock: Any) -> None:
    """A task's retry overrides default_retry only in the fields it sets."""
    times: list[float] = []
    engine.jobs.register("j", _flaky(times, fail=3))
    g = (
        workflow("m")
        .default_retry(Retry(max_attempts=2, interval=10, backoff_rate=1))
        .task("t", job="j", retry=Retry(max_attempts=4))
        .build()
    )
    inst = await run_registered(engine, g)
    assert inst.status == "completed"
    assert [round(b - a) for a, b in zip(times, times[1:])] == [10, 10, 10]


async def test_full_jitter_stays_within_the_delay(engine: Engine, autojump_clock: Any) -> None:
    """jitter='full' waits a random time no longer than the un-jittered delay."""
    times: list[float] = []
    engine.jobs.register("j", _flaky(times, fail=3))
    g = workflow("jit").task("t", job="j", retry=Retry(max_attempts=4, interval=8, jitter="full")).build()
    inst = await run_registered(engine, g)
    assert inst.status == "completed"
    for gap, cap in zip([b - a for a, b in zip(times, times[1:])], [8, 16, 30]):
        assert 0 <= gap <= cap + 1e-6


async def test_step_timeout_counts_as_failed_attempt_and_retries(engine: Engine, autojump_clock: Any) -> None:
    """An attempt longer than timeout is cancelled, raises StepTimeout, and may be retried."""
    attempts: list[int] = []

    async def slow_then_fast(x: Any) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            await trio.sleep(60)
        return "fast"

    engine.jobs.register("j", slow_then_fast)
    g = workflow("to").task("t", job="j", timeout=5, retry=Retry(max_attempts=2, interval=1)).build()
    inst = await run_registered(engine, g)
    assert inst.status == "completed"
    assert inst.step_results["t"].attempts == 2


async def test_step_timeout_without_retry_fails(engine: Engine, autojump_clock: Any) -> None:
    """A lone attempt that times out fails the instance with a StepTimeout message."""

    async def slow(x: Any) -> None:
        await trio.sleep(60)

    engine.jobs.register("j", slow)
    inst = await run_registered(engine, workflow("to2").task("t", job="j", timeout=2).build())
    assert inst.status == "failed"
    assert "StepTimeout" in (inst.error or "") and "timed out after 2 s" in (inst.error or "")


async def test_current_step_gives_a_stable_idempotency_key(engine: Engine, autojump_clock: Any) -> None:
    """current_step() names instance and key; the idempotency key is the same on every attempt."""
    keys: list[Any] = []

    async def job(x: Any) -> None:
        info = current_step()
        keys.append(info)
        if len(keys) < 2:
            raise ValueError("again")

    def sync_job(x: Any) -> str:
        info = current_step()
        assert info is not None
        return info.idempotency_key

    engine.jobs.register("j", job)
    engine.jobs.register("s", sync_job)
    g = workflow("idem").task("t", job="j", retry=Retry(max_attempts=2)).task("u", job="s").build()
    inst = await run_registered(engine, g)
    assert inst.status == "completed"
    assert [k.attempt for k in keys] == [1, 2]
    assert keys[0].idempotency_key == keys[1].idempotency_key == f"{inst.id}/t#0"
    assert inst.output == f"{inst.id}/u#0"
    assert current_step() is None


async def test_a_step_that_swallows_its_timeout_still_times_out(engine: Engine, autojump_clock: Any) -> None:
    """A body that catches trio.Cancelled and returns is a timed-out attempt, not a completed step:
    in the engine and in a plain call."""
    import durable

    @durable.step(timeout=0.2, retry=Retry(max_attempts=1))
    async def stubborn() -> str:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            return "swallowed"
        return "slept"

    @durable.workflow
    async def uses_it() -> str:
        return await stubborn()

    engine.workflows.register(uses_it)
    inst = await engine.workflows.wait(await engine.workflows.start(uses_it))
    assert inst.status == InstanceStatus.FAILED and inst.error_type == "StepTimeout"
    assert inst.step_results["stubborn"].status == StepStatus.FAILED
    with pytest.raises(durable.StepTimeout):
        await uses_it()  # a plain call, outside the engine


async def test_a_step_awaiting_another_step_runs_it_as_part_of_itself(engine: Engine) -> None:
    """Nested, not concurrent: the inner step is a plain call inside the outer one (no checkpoint of its
    own, the outer's idempotency key), and the instance completes."""
    import durable

    keys: list[str | None] = []

    @durable.step
    async def inner(x: int) -> int:
        info = current_step()
        keys.append(info.key if info else None)
        return x * 2

    @durable.step
    async def outer(x: int) -> int:
        return await inner(x) + 1

    @durable.workflow
    async def nests(x: int) -> int:
        return await outer(x) + await outer(x + 1)

    engine.workflows.register(nests)
    inst = await engine.workflows.wait(await engine.workflows.start(nests, 3))
    assert inst.status == InstanceStatus.COMPLETED and inst.output == 7 + 9
    assert sorted(inst.step_results) == ["outer"] and sorted(r.key for r in inst.step_results.values()) == ["outer#1"]
    stored = await engine.store.get_steps(inst.id)
    assert sorted(stored) == ["outer#0", "outer#1"]
    assert keys == ["outer#0", "outer#1"]
