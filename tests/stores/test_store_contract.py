"""The Store contract: every protocol operation, on every backend.

Each contract test runs against the memory store, the LMDB store writing
inline (no writer thread) and the LMDB store with its group-commit writer
thread running (``await store.run()`` in a nursery). The last section holds
writer-thread specifics: group commit, non-durable writes riding along with
durable ones, flushing on stop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from durable import (
    InstanceStatus,
    LMDBStore,
    MemoryStore,
    SerializationError,
    StepFailed,
    StepResult,
    StepStatus,
    Store,
    StoreError,
    WorkflowInstance,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ts(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_instance(
    iid: str,
    workflow: str = "wf",
    status: InstanceStatus | str = InstanceStatus.PENDING,
    created: float | None = 0,
    **fields: Any,
) -> WorkflowInstance:
    return WorkflowInstance(
        id=iid,
        workflow_name=workflow,
        status=InstanceStatus(status),
        created_at=None if created is None else ts(created),
        **fields,
    )


def make_step(
    name: str,
    key: str | None = None,
    status: StepStatus = StepStatus.COMPLETED,
    started: float | None = 0,
    **fields: Any,
) -> StepResult:
    return StepResult(
        step_name=name,
        status=status,
        key=name if key is None else key,
        started_at=None if started is None else ts(started),
        **fields,
    )


def ids(instances: list[WorkflowInstance]) -> list[str]:
    return [i.id for i in instances]


# -- user payload types (module level, so they pickle by reference) ----------


@attrs.frozen
class Point:
    x: int
    y: int

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


class Bag:
    """A plain class with mutable state and its own equality."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bag) and other.items == self.items

    __hash__ = None  # type: ignore[assignment]


class HoldsLock(Exception):
    """An exception that cannot be pickled: it carries a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class NeedsTwoArgs(Exception):
    """Pickles fine but cannot be unpickled: ``args`` does not match ``__init__``."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a} and {b}")


# -- fixtures ----------------------------------------------------------------


@pytest.fixture
def lmdb_store(tmp_path: Path) -> Iterator[LMDBStore]:
    st = LMDBStore(tmp_path / "writer.lmdb", lazy_delay=0.05)
    yield st
    st.close()


# -- create / get ------------------------------------------------------------


async def test_create_returns_created_then_existing_without_overwriting(s: Store) -> None:
    first = make_instance("a", input={"n": 1}, status="pending")
    stored, created = await s.create_instance(first)
    assert created is True
    assert stored == first

    second = make_instance("a", workflow="other", status="running", input={"n": 2}, created=99)
    existing, created = await s.create_instance(second)
    assert created is False
    assert existing == first
    assert existing.input == {"n": 1}
    assert existing.status is InstanceStatus.PENDING

    got = await s.get_instance("a")
    assert got == first
    # the losing create did not touch the index either
    assert ids(await s.get_instances_by_workflow("wf")) == ["a"]
    assert await s.get_instances_by_workflow("other") == []


async def test_create_existing_returns_the_instance_with_its_steps(s: Store) -> None:
    await s.create_instance(make_instance("a"))
    await s.put_step("a", make_step("s1", output=1))
    existing, created = await s.create_instance(make_instance("a"))
    assert created is False
    assert set(existing.step_results) == {"s1"}
    assert existing.step_results["s1"].output == 1


async def test_get_unknown_instance_is_none(s: Store) -> None:
    assert await s.get_instance("nope") is None
    assert await s.get_steps("nope") == {}
    await s.create_instance(make_instance("nope-not"))
    assert await s.get_instance("nope") is None


async def test_every_instance_field_round_trips(s: Store) -> None:
    inst = WorkflowInstance(
        id="full",
        workflow_name="wf",
        status=InstanceStatus.FAILED,
        input={"a": [1, 2, {"b": None}]},
        current_step="s3",
        output=("out", 1.5),
        error="it broke",
        created_at=ts(1),
        started_at=ts(2),
        completed_at=ts(3),
        deadline=ts(100),
        args=(1, "two", Point(3, 4)),
        kwargs={"k": Bag([1, 2])},
        error_type="ValueError",
    )
    await s.create_instance(inst)
    got = await s.get_instance("full")
    assert got == inst
    assert got is not None
    assert got.status is InstanceStatus.FAILED
    assert got.step_results == {}
    assert got.args == (1, "two", Point(3, 4))
    assert got.kwargs == {"k": Bag([1, 2])}


async def test_status_given_as_str_is_stored_as_enum(s: Store) -> None:
    inst = WorkflowInstance(id="a", workflow_name="wf", status="running")  # type: ignore[arg-type]
    await s.create_instance(inst)
    got = await s.get_instance("a")
    assert got is not None and got.status is InstanceStatus.RUNNING
    assert ids(await s.get_running_instances()) == ["a"]
    await s.put_step("a", StepResult(step_name="x", status="failed", key="x"))  # type: ignore[arg-type]
    steps = await s.get_steps("a")
    assert steps["x"].status is StepStatus.FAILED


# -- steps -------------------------------------------------------------------


async def test_put_step_and_get_steps_keyed_by_checkpoint_key(s: Store) -> None:
    await s.create_instance(make_instance("a"))
    s1 = make_step("fetch", key="root/fetch#0", output=[1])
    s2 = make_step("fetch", key="root/fetch#1", output=[2], started=5)
    s3 = make_step("save", key="root/save#0", output=None, status=StepStatus.RUNNING, started=6)
    for st in (s1, s2, s3):
        await s.put_step("a", st)
    steps = await s.get_steps("a")
    assert steps == {"root/fetch#0": s1, "root/fetch#1": s2, "root/save#0": s3}
    assert steps["root/save#0"].status is StepStatus.RUNNING


async def test_put_step_replaces_on_same_key(s: Store) -> None:
    await s.create_instance(make_instance("a"))
    await s.put_step("a", make_step("t", key="k", status=StepStatus.RUNNING, attempts=1))
    done = make_step("t", key="k", status=StepStatus.COMPLETED, attempts=2, output="ok", completed_at=ts(9))
    await s.put_step("a", done)
    steps = await s.get_steps("a")
    assert list(steps) == ["k"]
    assert steps["k"] == done
    inst = await s.get_instance("a")
    assert inst is not None and inst.step_results == {"t": done}


async def test_step_results_are_joined_by_step_name_latest_execution_wins(s: Store) -> None:
    await s.create_instance(make_instance("a"))
    # Key order is the opposite of execution order: "z" ran first, "a" later.
    early = make_step("loop", key="z-first", started=1, output="early")
    late = make_step("loop", key="a-second", started=2, output="late")
    other = make_step("other", key="m", started=0, output="o")
    await s.put_step("a", late)
    await s.put_step("a", early)
    await s.put_step("a", other)

    inst = await s.get_instance("a")
    assert inst is not None
    assert set(inst.step_results) == {"loop", "other"}
    assert inst.step_results["loop"].output == "late"
    assert inst.step_results["loop"].key == "a-second"
    assert inst.step_results["other"] == other
    # get_steps still has both executions
    assert set(await s.get_steps("a")) == {"z-first", "a-second", "m"}

    # a third, later execution takes over
    latest = make_step("loop", key="b-third", started=3, output="latest")
    await s.put_step("a", latest)
    inst = await s.get_instance("a")
    assert inst is not None and inst.step_results["loop"].output == "latest"


async def test_steps_do_not_leak_between_instances_sharing_a_prefix(s: Store) -> None:
    for iid in ("a", "ab", "a b", "a/"):
        await s.create_instance(make_instance(iid))
        await s.put_step(iid, make_step("s", key="k", output=iid))
    for iid in ("a", "ab", "a b", "a/"):
        steps = await s.get_steps(iid)
        assert list(steps) == ["k"]
        assert steps["k"].output == iid


async def test_long_step_keys_work(s: Store) -> None:
    """Keys past LMDB's 511-byte key limit are hashed; two such keys sharing a long prefix stay apart."""
    await s.create_instance(make_instance("a" * 200))
    iid = "a" * 200
    prefix = "scope/" + "x" * 600
    k1, k2 = prefix + "/one#0", prefix + "/two#0"
    assert len(k1.encode()) > 500
    await s.put_step(iid, make_step("one", key=k1, output=1))
    await s.put_step(iid, make_step("two", key=k2, output=2))
    await s.put_step(iid, make_step("one", key=k1, output=11))  # replace via the hashed key
    steps = await s.get_steps(iid)
    assert set(steps) == {k1, k2}
    assert steps[k1].output == 11
    assert steps[k2].output == 2
    unicode_key = "ключ/" * 200
    await s.put_step(iid, make_step("u", key=unicode_key, output="u"))
    assert (await s.get_steps(iid))[unicode_key].output == "u"
    assert await s.delete_instance(iid) is True
    assert await s.get_steps(iid) == {}


async def test_steps_without_an_instance_are_kept(s: Store) -> None:
    """put_step does not require the instance record; get_instance stays None until it exists."""
    await s.put_step("orphan", make_step("s", output=1))
    assert set(await s.get_steps("orphan")) == {"s"}
    assert await s.get_instance("orphan") is None


# -- update ------------------------------------------------------------------


async def test_update_instance_replaces(s: Store) -> None:
    await s.create_instance(make_instance("a", input=1, current_step="s1"))
    await s.put_step("a", make_step("s1", output="kept"))
    new = make_instance(
        "a", status="completed", input=1, current_step="s2", output={"result": 2}, completed_at=ts(5)
    )
    await s.update_instance(new)
    got = await s.get_instance("a")
    assert got == new
    assert got is not None
    assert got.status is InstanceStatus.COMPLETED
    # step results live apart and survive the update
    assert got.step_results["s1"].output == "kept"


async def test_update_ignores_step_results_of_the_record(s: Store) -> None:
    """step_results are stored apart: an update carrying some does not store them."""
    await s.create_instance(make_instance("a"))
    await s.update_instance(attrs.evolve(make_instance("a"), step_results={"ghost": make_step("ghost")}))
    got = await s.get_instance("a")
    assert got is not None and got.step_results == {}


async def test_steps_false_skips_the_step_results(s: Store) -> None:
    """Every read that joins step results leaves them out with steps=False."""
    await s.create_instance(make_instance("a", status="running"))
    await s.put_step("a", make_step("one"))
    full = await s.get_instance("a")
    assert full is not None and set(full.step_results) == {"one"}
    bare = await s.get_instance("a", steps=False)
    assert bare is not None and bare.step_results == {} and bare.id == "a"
    for found in (await s.get_running_instances(steps=False), await s.get_all_instances(steps=False),
                  await s.get_instances_by_workflow("wf", steps=False)):
        assert ids(found) == ["a"] and found[0].step_results == {}
    assert set((await s.get_all_instances())[0].step_results) == {"one"}


# -- status index ------------------------------------------------------------


async def test_status_index_across_changes_and_workflows(s: Store) -> None:
    # names that are prefixes of one another, to catch sloppy prefix scans
    await s.create_instance(make_instance("wf-1", workflow="wf", created=1))
    await s.create_instance(make_instance("wf-2", workflow="wf", status="running", created=2))
    await s.create_instance(make_instance("wf-3", workflow="wf", status="completed", created=3))
    await s.create_instance(make_instance("wf2-1", workflow="wf2", status="running", created=4))
    await s.create_instance(make_instance("w-1", workflow="w", created=5))

    assert ids(await s.get_instances_by_workflow("wf")) == ["wf-1", "wf-2", "wf-3"]
    assert ids(await s.get_instances_by_workflow("w")) == ["w-1"]
    assert ids(await s.get_instances_by_workflow("wf2")) == ["wf2-1"]
    assert await s.get_instances_by_workflow("nope") == []
    assert ids(await s.get_instances_by_workflow("wf", InstanceStatus.RUNNING)) == ["wf-2"]
    assert ids(await s.get_instances_by_workflow("wf", "pending")) == ["wf-1"]
    assert ids(await s.get_instances_by_workflow("wf", "completed")) == ["wf-3"]
    assert await s.get_instances_by_workflow("wf", "failed") == []
    assert ids(await s.get_running_instances()) == ["wf-1", "wf-2", "wf2-1", "w-1"]
    assert ids(await s.get_all_instances()) == ["wf-1", "wf-2", "wf-3", "wf2-1", "w-1"]
    assert ids(await s.get_all_instances("running")) == ["wf-2", "wf2-1"]
    assert ids(await s.get_all_instances(InstanceStatus.FAILED)) == []

    # pending -> running -> completed
    await s.update_instance(make_instance("wf-1", workflow="wf", status="running", created=1))
    assert ids(await s.get_instances_by_workflow("wf", "pending")) == []
    assert ids(await s.get_instances_by_workflow("wf", "running")) == ["wf-1", "wf-2"]
    await s.update_instance(make_instance("wf-1", workflow="wf", status="completed", created=1))
    assert ids(await s.get_instances_by_workflow("wf", "running")) == ["wf-2"]
    assert ids(await s.get_instances_by_workflow("wf", "completed")) == ["wf-1", "wf-3"]
    assert ids(await s.get_running_instances()) == ["wf-2", "wf2-1", "w-1"]

    # every finished status leaves the running set
    await s.update_instance(make_instance("wf2-1", workflow="wf2", status="failed", created=4))
    assert ids(await s.get_running_instances()) == ["wf-2", "w-1"]
    for n, status in enumerate(("failed", "cancelled", "timed_out")):
        iid = f"wf3-{status}"
        await s.create_instance(make_instance(iid, workflow="wf3", status="running", created=10 + n))
        await s.update_instance(make_instance(iid, workflow="wf3", status=status, created=10 + n))
        assert ids(await s.get_instances_by_workflow("wf3", status)) == [iid]
        assert ids(await s.get_running_instances()) == ["wf-2", "w-1"]

    # same status again (a plain update) keeps the index as it is
    await s.update_instance(make_instance("wf-2", workflow="wf", status="running", created=2, output="x"))
    assert ids(await s.get_instances_by_workflow("wf", "running")) == ["wf-2"]
    running = await s.get_running_instances()
    assert ids(running) == ["wf-2", "w-1"]
    assert running[0].output == "x"

    # the index returns full records, steps joined
    await s.put_step("wf-2", make_step("s", output=7))
    (wf2,) = await s.get_instances_by_workflow("wf", "running")
    assert wf2.step_results["s"].output == 7


async def test_running_instances_oldest_first_by_created_at(s: Store) -> None:
    """Order is by created_at, not by when the record was written."""
    await s.create_instance(make_instance("late", status="running", created=30))
    await s.create_instance(make_instance("early", status="pending", created=10))
    await s.create_instance(make_instance("done", status="completed", created=0))
    await s.create_instance(make_instance("middle", status="running", created=20))
    assert ids(await s.get_running_instances()) == ["early", "middle", "late"]
    assert ids(await s.get_instances_by_workflow("wf")) == ["done", "early", "middle", "late"]
    assert ids(await s.get_instances_by_workflow("wf", "running")) == ["middle", "late"]


async def test_update_of_unknown_instance_indexes_it(s: Store) -> None:
    await s.update_instance(make_instance("u", status="running"))
    assert ids(await s.get_running_instances()) == ["u"]
    assert ids(await s.get_instances_by_workflow("wf", "running")) == ["u"]


async def test_unknown_status_filter_is_a_value_error(s: Store) -> None:
    with pytest.raises(ValueError):
        await s.get_instances_by_workflow("wf", "bogus")


async def test_workflow_names_are_matched_exactly(s: Store) -> None:
    """A workflow name containing NUL must not show up under the name before the NUL."""
    await s.create_instance(make_instance("i1", workflow="wf", status="running"))
    try:
        await s.create_instance(make_instance("i2", workflow="wf\0evil", status="running"))
    except ValueError:
        pass  # rejecting such a name is fine too
    assert ids(await s.get_instances_by_workflow("wf")) == ["i1"]
    assert ids(await s.get_instances_by_workflow("wf", "running")) == ["i1"]


async def test_long_workflow_name(s: Store) -> None:
    """Names up to 200 bytes work with the longest ids; longer ones are refused with ValueError."""
    name = "workflow-" + "n" * 191
    iid = "i" * 200
    await s.create_instance(make_instance(iid, workflow=name, status="running"))
    assert ids(await s.get_instances_by_workflow(name, "running")) == [iid]
    assert ids(await s.get_running_instances()) == [iid]
    with pytest.raises(ValueError, match="at most 200 bytes"):
        await s.create_instance(make_instance("j", workflow=name + "nn", status="running"))


# -- delete ------------------------------------------------------------------


async def test_delete_instance_removes_instance_steps_and_index(s: Store) -> None:
    await s.create_instance(make_instance("a", status="running", created=1))
    await s.create_instance(make_instance("ab", status="running", created=2))
    for key in ("k1", "k2", "x" * 700):
        await s.put_step("a", make_step(key[:5], key=key))
    await s.put_step("ab", make_step("s", key="k1", output="ab's"))

    assert await s.delete_instance("a") is True
    assert await s.get_instance("a") is None
    assert await s.get_steps("a") == {}
    assert ids(await s.get_running_instances()) == ["ab"]
    assert ids(await s.get_instances_by_workflow("wf")) == ["ab"]
    assert ids(await s.get_instances_by_workflow("wf", "running")) == ["ab"]
    # the neighbour is untouched
    assert (await s.get_steps("ab"))["k1"].output == "ab's"

    assert await s.delete_instance("a") is False
    assert await s.delete_instance("never") is False

    # the id can be used again, starting clean
    _, created = await s.create_instance(make_instance("a", status="pending", created=3))
    assert created is True
    got = await s.get_instance("a")
    assert got is not None and got.step_results == {}
    assert ids(await s.get_instances_by_workflow("wf", "pending")) == ["a"]


# -- ids ---------------------------------------------------------------------


BAD_IDS = [
    pytest.param("a\0b", id="nul"),
    pytest.param("x" * 201, id="201-bytes"),
    pytest.param("é" * 101, id="202-utf8-bytes"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_create_rejects_bad_instance_ids(s: Store, bad: str) -> None:
    with pytest.raises(ValueError):
        await s.create_instance(make_instance(bad, status="running"))
    assert await s.get_running_instances() == []
    assert await s.get_instances_by_workflow("wf") == []


async def test_id_of_exactly_200_bytes_is_accepted(s: Store) -> None:
    iid = "é" * 100  # 200 bytes in UTF-8
    _, created = await s.create_instance(make_instance(iid, status="running"))
    assert created
    await s.put_step(iid, make_step("s"))
    got = await s.get_instance(iid)
    assert got is not None and set(got.step_results) == {"s"}
    assert ids(await s.get_running_instances()) == [iid]


async def test_other_writes_reject_bad_instance_ids(s: Store) -> None:
    """update_instance and put_step validate the id like create_instance does."""
    accepted = []
    for bad in ("a\0b", "x" * 201, "é" * 101, ""):
        for op in ("update_instance", "put_step"):
            try:
                if op == "update_instance":
                    await s.update_instance(make_instance(bad, status="running"))
                else:
                    await s.put_step(bad, make_step("s"))
            except ValueError:
                continue
            except StoreError as exc:
                accepted.append(f"{op}({bad[:8]!r}...) -> StoreError instead of ValueError: {exc.message[:60]}")
            else:
                accepted.append(f"{op}({bad[:8]!r}...) accepted")
    assert not accepted, "\n".join(accepted)
    assert await s.get_running_instances() == []


async def test_nul_in_step_instance_id_never_leaks_into_another_instance(s: Store) -> None:
    await s.create_instance(make_instance("a"))
    try:
        await s.put_step("a\0b", make_step("intruder", key="k"))
    except ValueError:
        pass
    assert await s.get_steps("a") == {}
    inst = await s.get_instance("a")
    assert inst is not None and inst.step_results == {}


@pytest.mark.parametrize("bad", ["", "x" * 600])
async def test_reads_of_impossible_ids_find_nothing(s: Store, bad: str) -> None:
    """An id no instance can have is simply unknown (or a ValueError) - never a backend error."""
    for op, nothing in (
        (s.get_instance, None),
        (s.get_steps, {}),
        (s.delete_instance, False),
    ):
        try:
            result = await op(bad)  # type: ignore[operator]
        except ValueError:
            continue
        assert result == nothing


# -- payloads ----------------------------------------------------------------


async def test_user_payloads_round_trip(s: Store) -> None:
    offset = 10
    payload = {
        "nested": {"list": [1, 2.5, None, True], "tuple": (1, (2, 3)), "set": {1, 2}, "bytes": b"\x00\xff"},
        "point": Point(1, -2),
        "bag": Bag([Point(0, 0), "s"]),
        "when": ts(7),
        "lambda": lambda v: v + offset,  # a closure: only cloudpickle can do this
        "big": 10**40,
    }
    await s.create_instance(make_instance("a", input=payload, args=(lambda: "arg",), kwargs={"f": Point.norm1}))
    got = await s.get_instance("a")
    assert got is not None
    out = got.input
    assert out["nested"] == payload["nested"]
    assert out["point"] == Point(1, -2)
    assert out["point"].norm1() == 3
    assert out["bag"] == Bag([Point(0, 0), "s"])
    assert out["when"] == ts(7)
    assert out["lambda"](1) == 11
    assert out["big"] == 10**40
    assert got.args[0]() == "arg"
    assert got.kwargs["f"](Point(2, 3)) == 5

    await s.put_step("a", make_step("s", input=Point(5, 5), output={"fn": lambda: offset * 2, "p": [Point(1, 1)]}))
    step = (await s.get_steps("a"))["s"]
    assert step.input == Point(5, 5)
    assert step.output["fn"]() == 20
    assert step.output["p"] == [Point(1, 1)]


async def test_step_exceptions_round_trip(s: Store) -> None:
    await s.create_instance(make_instance("a"))
    plain = ValueError("bad value", 42)
    durable_err = StepFailed("step s failed", workflow="wf", instance_id="a", step="s", attempts=3)
    await s.put_step("a", make_step("p", status=StepStatus.FAILED, error="bad value", exception=plain))
    await s.put_step("a", make_step("d", status=StepStatus.FAILED, error="failed", exception=durable_err))
    steps = await s.get_steps("a")

    got_plain = steps["p"].exception
    assert type(got_plain) is ValueError
    assert got_plain.args == ("bad value", 42)
    assert steps["p"].error == "bad value"

    got_durable = steps["d"].exception
    assert type(got_durable) is StepFailed
    assert str(got_durable) == str(durable_err)
    assert got_durable.instance_id == "a"
    assert got_durable.step == "s"
    assert got_durable.attempts == 3


async def test_unpicklable_exception_is_stored_as_a_stand_in(s: Store) -> None:
    await s.create_instance(make_instance("a"))
    exc = HoldsLock("lock held")
    failed = make_step("s", status=StepStatus.FAILED, error="lock held", attempts=2, exception=exc)
    await s.put_step("a", failed)

    step = (await s.get_steps("a"))["s"]
    assert step.status is StepStatus.FAILED
    assert step.error == "lock held"
    assert step.attempts == 2
    stand_in = step.exception
    assert stand_in is not None
    assert not isinstance(stand_in, HoldsLock)
    assert type(stand_in).__name__ == "UnpicklableError"
    assert stand_in.type_name.endswith(".HoldsLock")  # type: ignore[attr-defined]
    assert stand_in.type_name == f"{HoldsLock.__module__}.HoldsLock"  # type: ignore[attr-defined]
    assert "lock held" in str(stand_in)
    assert "HoldsLock" in str(stand_in)
    inst = await s.get_instance("a")
    assert inst is not None and type(inst.step_results["s"].exception).__name__ == "UnpicklableError"


async def test_exception_that_cannot_be_unpickled_keeps_the_instance_readable(s: Store) -> None:
    """An exception whose args don't match its __init__ pickles but fails to unpickle.

    Storing it verbatim would make the step - and the whole instance - unreadable
    forever; it must be stored as the same stand-in as an unpicklable one.
    """
    await s.create_instance(make_instance("a", status="running"))
    exc = NeedsTwoArgs("left", "right")
    await s.put_step("a", make_step("s", status=StepStatus.FAILED, error=str(exc), exception=exc))

    inst = await s.get_instance("a")  # must not raise
    assert inst is not None
    got = inst.step_results["s"].exception
    assert got is not None
    assert "left and right" in str(got)
    assert "NeedsTwoArgs" in type(got).__name__ or "NeedsTwoArgs" in getattr(got, "type_name", "")
    assert ids(await s.get_running_instances()) == ["a"]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: threading.Lock(), id="lock"),
        pytest.param(lambda: (i for i in range(3)), id="generator"),
    ],
)
async def test_unpicklable_input_raises_serialization_error_and_changes_nothing(s: Store, bad: Any) -> None:
    # create: nothing stored
    with pytest.raises(SerializationError) as info:
        await s.create_instance(make_instance("victim", status="running", input={"x": bad()}))
    assert info.value.instance_id == "victim"
    assert "victim" in str(info.value)
    assert isinstance(info.value, TypeError)
    assert await s.get_instance("victim") is None
    assert await s.get_running_instances() == []
    assert await s.get_instances_by_workflow("wf") == []

    # update: the previous record stays
    good = make_instance("victim", status="running", input="good")
    await s.create_instance(good)
    with pytest.raises(SerializationError) as info:
        await s.update_instance(make_instance("victim", status="completed", output=bad()))
    assert info.value.instance_id == "victim"
    assert await s.get_instance("victim") == good
    assert ids(await s.get_instances_by_workflow("wf", "running")) == ["victim"]
    assert await s.get_instances_by_workflow("wf", "completed") == []

    # put_step: the previous checkpoint at that key stays, no new key appears
    first = make_step("s", output="first")
    await s.put_step("victim", first)
    with pytest.raises(SerializationError) as info:
        await s.put_step("victim", make_step("s", output=bad()))
    assert info.value.instance_id == "victim"
    assert "victim" in str(info.value)
    with pytest.raises(SerializationError):
        await s.put_step("victim", make_step("t", input=[bad()]))
    assert await s.get_steps("victim") == {"s": first}

    # the store still works afterwards
    await s.put_step("victim", make_step("t", output="fine"))
    assert set(await s.get_steps("victim")) == {"s", "t"}


# -- copies ------------------------------------------------------------------


async def test_records_are_copies(s: Store) -> None:
    data: dict[str, Any] = {"list": [1, 2], "n": 1}
    kwargs: dict[str, Any] = {"k": [1]}
    inst = make_instance("a", input=data, kwargs=kwargs)
    await s.create_instance(inst)
    data["n"] = 999
    data["list"].append(3)
    kwargs["k"].append(2)
    kwargs["new"] = True

    got = await s.get_instance("a")
    assert got is not None
    assert got.input == {"list": [1, 2], "n": 1}
    assert got.kwargs == {"k": [1]}

    # mutating what a read returned does not change the store either
    got.input["n"] = -1
    got.kwargs["k"].append("x")  # type: ignore[attr-defined]
    again = await s.get_instance("a")
    assert again is not None
    assert again.input == {"list": [1, 2], "n": 1}
    assert again.kwargs == {"k": [1]}
    assert again.input is not got.input

    out: dict[str, Any] = {"v": [1]}
    await s.put_step("a", make_step("s", output=out))
    out["v"].append(2)
    step = (await s.get_steps("a"))["s"]
    assert step.output == {"v": [1]}
    step.output["v"].append(3)
    assert (await s.get_steps("a"))["s"].output == {"v": [1]}
    inst_with_step = await s.get_instance("a")
    assert inst_with_step is not None and inst_with_step.step_results["s"].output == {"v": [1]}

    upd: dict[str, Any] = {"u": 1}
    await s.update_instance(make_instance("a", input=upd))
    upd["u"] = 2
    final = await s.get_instance("a")
    assert final is not None and final.input == {"u": 1}


async def test_existing_instance_from_create_is_a_copy(s: Store) -> None:
    await s.create_instance(make_instance("a", input={"n": 1}))
    existing, created = await s.create_instance(make_instance("a"))
    assert not created
    existing.input["n"] = 2
    got = await s.get_instance("a")
    assert got is not None and got.input == {"n": 1}


async def test_path(s: Store, tmp_path: Path) -> None:
    if isinstance(s, MemoryStore) or type(s).__name__ == "PostgresStore":
        assert s.path is None  # (PostgreSQL: no directory; its URL, without password, is ``s.url``)
    else:
        assert s.path == str(tmp_path / "store.lmdb")
    assert isinstance(s, Store)


# -- the LMDB writer thread --------------------------------------------------


async def test_concurrent_durable_writes_are_group_committed(lmdb_store: LMDBStore) -> None:
    st = lmdb_store
    tasks, per_task = 8, 25
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        await st.create_instance(make_instance("a", status="running"))
        before = st.stats()

        async def writer(t: int) -> None:
            for i in range(per_task):
                await st.put_step("a", make_step(f"t{t}", key=f"t{t}/s#{i}", started=i, output=(t, i)))
                # each durable write is visible as soon as it returns
                assert f"t{t}/s#{i}" in await st.get_steps("a")

        async with trio.open_nursery() as inner:
            for t in range(tasks):
                inner.start_soon(writer, t)

        after = st.stats()
        nursery.cancel_scope.cancel()

    total = tasks * per_task
    steps = await st.get_steps("a")
    assert len(steps) == total
    for t in range(tasks):
        for i in range(per_task):
            assert steps[f"t{t}/s#{i}"].output == (t, i)
    inst = await st.get_instance("a")
    assert inst is not None
    assert {name: r.output for name, r in inst.step_results.items()} == {
        f"t{t}": (t, per_task - 1) for t in range(tasks)
    }
    writes = after["writes"] - before["writes"]
    batches = after["batches"] - before["batches"]
    assert writes == total
    assert 0 < batches < writes, (batches, writes)


async def test_non_durable_write_rides_along_with_the_next_durable_one(tmp_path: Path) -> None:
    st = LMDBStore(tmp_path / "slow.lmdb", lazy_delay=30)  # the timer never fires
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(st.run)
            await st.create_instance(make_instance("a", status="pending"))

            await st.update_instance(make_instance("a", status="running", current_step="s"), durable=False)
            await st.put_step("a", make_step("s", status=StepStatus.RUNNING), durable=False)
            await st.put_step("a", make_step("t", output="durable"))  # durable: both earlier writes land with it

            got = await st.get_instance("a")
            assert got is not None
            assert got.status is InstanceStatus.RUNNING
            assert got.current_step == "s"
            assert set(got.step_results) == {"s", "t"}
            assert ids(await st.get_running_instances()) == ["a"]
            assert ids(await st.get_instances_by_workflow("wf", "running")) == ["a"]

            # and the other way round: a non-durable step, then a durable update
            await st.put_step("a", make_step("u", output="lazy"), durable=False)
            await st.update_instance(make_instance("a", status="completed"))
            got = await st.get_instance("a")
            assert got is not None and got.status is InstanceStatus.COMPLETED
            assert got.step_results["u"].output == "lazy"
            nursery.cancel_scope.cancel()
    finally:
        st.close()


async def test_lone_non_durable_write_is_committed_within_lazy_delay(lmdb_store: LMDBStore) -> None:
    """lazy_delay is "the longest time a non-durable write waits for a commit"."""
    st = lmdb_store  # lazy_delay=0.05
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        await st.create_instance(make_instance("a", status="pending"))
        await st.update_instance(make_instance("a", status="running"), durable=False)
        with trio.move_on_after(1.0):
            while True:
                got = await st.get_instance("a")
                assert got is not None
                if got.status is InstanceStatus.RUNNING:
                    break
                await trio.sleep(0.01)
        got = await st.get_instance("a")
        nursery.cancel_scope.cancel()
    assert got is not None
    assert got.status is InstanceStatus.RUNNING, "non-durable write not committed 20x lazy_delay later"


async def test_non_durable_writes_are_flushed_when_the_writer_stops(tmp_path: Path) -> None:
    st = LMDBStore(tmp_path / "flush.lmdb", lazy_delay=30)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(st.run)
            await st.create_instance(make_instance("a", status="pending"))
            await st.update_instance(make_instance("a", status="running"), durable=False)
            await st.put_step("a", make_step("s"), durable=False)
            nursery.cancel_scope.cancel()
        got = await st.get_instance("a")
        assert got is not None
        assert got.status is InstanceStatus.RUNNING
        assert set(got.step_results) == {"s"}
        assert st.stats()["batches"] == 0  # no writer any more: stats report none
        # without the writer, writes happen inline again
        await st.put_step("a", make_step("t"), durable=False)
        assert set(await st.get_steps("a")) == {"s", "t"}
    finally:
        st.close()


async def test_a_cancelled_durable_write_still_lands(lmdb_store: LMDBStore) -> None:
    st = lmdb_store
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        await st.create_instance(make_instance("a"))
        with trio.CancelScope() as scope:
            scope.cancel()
            await st.put_step("a", make_step("s", output="landed"))
        # the write is shielded: the caller only moves on once it is committed
        assert (await st.get_steps("a"))["s"].output == "landed"
        nursery.cancel_scope.cancel()


async def test_writer_can_be_restarted(lmdb_store: LMDBStore) -> None:
    st = lmdb_store
    for round_ in range(2):
        async with trio.open_nursery() as nursery:
            await nursery.start(st.run)
            await st.put_step("a", make_step(f"s{round_}"))
            assert st.stats()["batches"] >= 1
            nursery.cancel_scope.cancel()
    assert set(await st.get_steps("a")) == {"s0", "s1"}


async def test_store_error_from_a_failed_write_names_the_path(lmdb_store: LMDBStore) -> None:
    """A write that fails inside LMDB comes back as StoreError with .path, in both modes."""
    st = lmdb_store
    too_long = "k" * 600  # > LMDB's 511-byte key limit, bypassing the id check of create

    async def fail_once() -> None:
        with pytest.raises((StoreError, ValueError)) as info:
            await st.update_instance(make_instance(too_long))
        if isinstance(info.value, StoreError):
            assert info.value.path == st.path
            assert st.path in str(info.value)

    await fail_once()
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        await fail_once()
        # the failed batch did not poison the writer
        await st.put_step("a", make_step("ok"))
        nursery.cancel_scope.cancel()
    assert set(await st.get_steps("a")) == {"ok"}


async def test_a_finished_status_is_final(s: Store) -> None:
    """Once finished, an instance's status never changes: a late 'running' or another end is ignored."""
    await s.create_instance(make_instance("f", status="running", created=1))
    await s.update_instance(make_instance("f", status="cancelled", created=1))
    for status in ("running", "completed", "timed_out", "pending"):
        await s.update_instance(make_instance("f", status=status, created=1))
        got = await s.get_instance("f")
        assert got is not None and got.status == "cancelled"
    assert await s.get_running_instances() == []
    assert ids(await s.get_instances_by_workflow("wf", "cancelled")) == ["f"]


# -- signals -------------------------------------------------------------------


async def test_signals_queue_in_order_per_name_and_are_taken_once(s: Store) -> None:
    await s.create_instance(make_instance("a", status="running"))
    clock0 = await s.signal_clock()
    assert await s.peek_signal("a", "go") is None
    first = await s.send_signal("a", "go", {"n": 1})
    second = await s.send_signal("a", "go", {"n": 2})
    await s.send_signal("a", "other", "x")
    assert first < second and await s.signal_clock() != clock0
    peeked = await s.peek_signal("a", "go")
    assert peeked == (first, {"n": 1})
    done = make_step("wait")
    assert await s.take_signal("a", "go", first, done) is True
    assert await s.take_signal("a", "go", first, done) is False  # already taken: nothing written twice
    assert (await s.get_steps("a"))[done.key].step_name == "wait"
    assert await s.peek_signal("a", "go") == (second, {"n": 2})
    assert await s.peek_signal("a", "other") is not None
    assert await s.peek_signal("b", "go") is None
    await s.delete_instance("a")
    assert await s.peek_signal("a", "go") is None


async def test_bad_signals_are_refused(s: Store) -> None:
    import threading

    with pytest.raises(ValueError, match="signal name"):
        await s.send_signal("a", "", 1)
    with pytest.raises(SerializationError, match="signal 'go'"):
        await s.send_signal("a", "go", threading.Lock())
    assert await s.peek_signal("a", "go") is None


@pytest.mark.parametrize("delay", [0, -0.1, float("inf"), float("nan"), "0.1"])
def test_lazy_delay_must_be_a_positive_number(tmp_path: Path, delay: Any) -> None:
    """A lazy_delay the writer thread could not wait with is refused when the store is made."""
    with pytest.raises(ValueError, match="lazy_delay must be a number of seconds > 0"):
        LMDBStore(tmp_path / "bad.lmdb", lazy_delay=delay)


async def test_fenced_marker_written_inline_raises_lease_lost(tmp_path: Path) -> None:
    """Without a writer thread a non-durable write is written at once, and a fence refusing it says so."""
    from durable.stores._lease import LeaseLost

    st = LMDBStore(tmp_path / "inline.lmdb")
    try:
        await st.create_instance(make_instance("a", status="running"))
        marker = StepResult(step_name="s", status=StepStatus.RUNNING, key="s#0", attempts=1)
        with pytest.raises(LeaseLost):
            await st.put_step("a", marker, durable=False, owner="someone-else")
        assert await st.get_steps("a") == {}
    finally:
        st.close()
