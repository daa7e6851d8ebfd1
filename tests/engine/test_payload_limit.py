"""max_payload_bytes: an input, output, step result or signal payload over the limit is a SerializationError
naming the step (workflow, instance), its size and the limit, raised before anything of it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import durable
from durable import Engine, LMDBStore, MemoryStore, SerializationError, StepStatus, Store, step, workflow
from durable.stores._base import DEFAULT_MAX_PAYLOAD_BYTES

LIMIT = 10_000
BIG = b"x" * 20_000


def all_bytes(store: Store) -> list[bytes]:
    """Every value the store holds, raw."""
    if isinstance(store, MemoryStore):
        out = list(store._instances.values())
        out += [data for steps in store._steps.values() for data in steps.values()]
        out += [data for queue in store._signals.values() for data in queue.values()]
        return out
    assert isinstance(store, LMDBStore)
    env, tables = store._env.env, store._env.tables
    found = []
    with env.begin() as txn:
        for db in (tables.instances, tables.steps, tables.signals):
            for _, value in txn.cursor(db=db):
                found.append(bytes(value))
    return found


def nothing_large_in(store: Store) -> bool:
    return all(len(data) < LIMIT for data in all_bytes(store))


@step
async def make(n: int) -> bytes:
    return b"x" * n


@step
async def measure(data: bytes) -> int:
    return len(data)


@workflow
async def big_result(n: int) -> int:
    return len(await make(n))


@workflow
async def big_output(n: int) -> bytes:
    return b"x" * n


@workflow
async def big_step_input(n: int) -> int:
    return await measure(b"x" * n)


@workflow
async def takes(data: Any) -> int:
    return len(data)


@workflow
async def waits() -> Any:
    return await durable.wait_for_signal("go")


async def test_a_step_result_over_the_limit_fails_the_instance_naming_the_step(store: Store) -> None:
    async with Engine(store=store, max_payload_bytes=LIMIT) as engine:
        small = await engine.workflows.wait(await engine.workflows.start(big_result, 100))
        assert small.status == "completed" and small.output == 100
        inst = await engine.workflows.wait(await engine.workflows.start(big_result, 20_000, id="big-1"))
    assert inst.status == "failed" and inst.error_type == "SerializationError"
    error = inst.error or ""
    assert "step 'make#0'" in error and "workflow 'big_result'" in error and "instance 'big-1'" in error
    assert "20,0" in error and "bytes encoded" in error and f"limit of {LIMIT:,} bytes" in error
    steps = await store.get_steps("big-1")
    assert steps["make#0"].status != StepStatus.COMPLETED and steps["make#0"].output is None
    assert nothing_large_in(store)


async def test_a_step_input_over_the_limit_fails_before_the_step_runs(store: Store) -> None:
    async with Engine(store=store, max_payload_bytes=LIMIT) as engine:
        inst = await engine.workflows.wait(await engine.workflows.start(big_step_input, 20_000, id="in-1"))
    assert inst.status == "failed" and inst.error_type == "SerializationError"
    assert "step 'measure#0'" in (inst.error or "") and "its input is" in (inst.error or "")
    assert nothing_large_in(store)


async def test_an_input_over_the_limit_is_refused_by_start(store: Store) -> None:
    async with Engine(store=store, max_payload_bytes=LIMIT) as engine:
        with pytest.raises(SerializationError) as caught:
            await engine.workflows.start(takes, BIG, id="start-1")
        assert await store.get_instance("start-1") is None
    err = caught.value
    assert err.workflow == "takes" and err.instance_id == "start-1"
    assert "input is 20,0" in str(err) and f"limit of {LIMIT:,} bytes" in str(err)
    assert nothing_large_in(store)


async def test_an_output_over_the_limit_fails_the_instance(store: Store) -> None:
    async with Engine(store=store, max_payload_bytes=LIMIT) as engine:
        inst = await engine.workflows.wait(await engine.workflows.start(big_output, 20_000, id="out-1"))
    assert inst.status == "failed" and inst.error_type == "SerializationError" and inst.output is None
    assert "workflow's output" in (inst.error or "") and "output is 20,0" in (inst.error or "")
    assert nothing_large_in(store)


async def test_a_signal_payload_over_the_limit_is_refused(store: Store) -> None:
    async with Engine(store=store, max_payload_bytes=LIMIT) as engine:
        iid = await engine.workflows.start(waits, id="sig-1")
        with pytest.raises(SerializationError) as caught:
            await engine.workflows.signal(iid, "go", BIG)
        assert await store.peek_signal(iid, "go") is None
        assert "payload of signal 'go'" in str(caught.value) and caught.value.instance_id == "sig-1"
        assert caught.value.workflow == "waits" and f"limit of {LIMIT:,}" in str(caught.value)
        await engine.workflows.signal(iid, "go", b"small")
        assert (await engine.workflows.wait(iid)).output == b"small"
    assert nothing_large_in(store)


async def test_the_default_limit_is_16_mib() -> None:
    assert DEFAULT_MAX_PAYLOAD_BYTES == 16 * 1024 * 1024
    store = MemoryStore()
    assert store.max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES
    async with Engine(store=store) as engine:
        assert store.max_payload_bytes == DEFAULT_MAX_PAYLOAD_BYTES  # Engine() keeps the store's limit
        with pytest.raises(SerializationError, match="over the limit of 16,777,216 bytes"):
            await engine.workflows.start(takes, b"x" * (17 << 20))
        iid = await engine.workflows.start(takes, b"x" * (15 << 20))
        assert (await engine.workflows.wait(iid)).output == 15 << 20


async def test_the_limit_is_set_per_store_and_per_engine(tmp_path: Path) -> None:
    store = MemoryStore(max_payload_bytes=LIMIT)
    async with Engine(store=store) as engine:
        with pytest.raises(SerializationError):
            await engine.workflows.start(takes, BIG)
    async with Engine(store=store, max_payload_bytes=100_000) as engine:
        assert store.max_payload_bytes == 100_000
        await engine.workflows.wait(await engine.workflows.start(takes, BIG))
    unlimited = MemoryStore(max_payload_bytes=None)
    async with Engine(store=unlimited) as engine:
        await engine.workflows.wait(await engine.workflows.start(takes, b"x" * (17 << 20)))
    lmdb_store = LMDBStore(tmp_path / "a.lmdb", max_payload_bytes=LIMIT)
    try:
        assert lmdb_store.max_payload_bytes == LIMIT
    finally:
        lmdb_store.close()
    async with Engine.open(tmp_path / "b.lmdb", max_payload_bytes=LIMIT) as engine:
        assert engine.store.max_payload_bytes == LIMIT  # type: ignore[attr-defined]
        with pytest.raises(SerializationError):
            await engine.workflows.start(takes, BIG)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True])
def test_a_bad_limit_is_a_value_error(bad: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_payload_bytes must be a number of bytes > 0"):
        MemoryStore(max_payload_bytes=bad)
    with pytest.raises(ValueError, match="max_payload_bytes"):
        Engine(max_payload_bytes=bad)
    with pytest.raises(ValueError, match="max_payload_bytes"):
        Engine.open(tmp_path / "s.lmdb", max_payload_bytes=bad)
    assert not (tmp_path / "s.lmdb").exists()
    with pytest.raises(ValueError, match="max_payload_bytes"):
        LMDBStore(tmp_path / "t.lmdb", max_payload_bytes=bad)


def test_an_engine_limit_needs_a_store_that_has_one() -> None:
    class Wrapper:
        def __init__(self, inner: Store) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            if name == "max_payload_bytes":
                raise AttributeError(name)
            return getattr(self._inner, name)

    with pytest.raises(TypeError, match="has no payload limit"):
        Engine(store=Wrapper(MemoryStore()), max_payload_bytes=LIMIT)  # type: ignore[arg-type]
    Engine(store=Wrapper(MemoryStore()))  # type: ignore[arg-type]  # no limit asked for: fine


async def test_a_record_over_the_limit_by_its_bookkeeping_alone_is_stored(store: Store) -> None:
    """The limit is on each payload: an input just under it still lets the instance record its end."""
    store_limit = LIMIT
    async with Engine(store=store, max_payload_bytes=store_limit) as engine:
        payload = b"x" * (store_limit - 60)  # pickles to just under the limit; the record is over it
        inst = await engine.workflows.wait(await engine.workflows.start(takes, payload))
    assert inst.status == "completed" and inst.output == store_limit - 60


async def test_a_refused_start_leaves_no_record(store: Store) -> None:
    """The check is in the encoding, before the write is queued."""
    async with Engine(store=store, max_payload_bytes=LIMIT) as engine:
        for _ in range(3):
            with pytest.raises(SerializationError):
                await engine.workflows.start(takes, BIG)
        assert await store.get_all_instances() == []
