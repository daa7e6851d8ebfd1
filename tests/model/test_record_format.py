"""Store format 4: records as tuples (a tag, then the fields in a fixed order).

Every field type round-trips; records of format 3 (a dict of fields, as the
previous durable wrote them) still read, in a store whose marker is upgraded
in place; a newer format is refused; tuples of the wrong length, tag or field
types are refused as corrupt, naming where they were read.
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable import InstanceStatus, LMDBStore, StepResult, StepStatus, StoreError, WorkflowInstance
from durable._model.records import replace_instance
from durable._model.serde import (
    _INSTANCE_LAYOUT,
    _STEP_LAYOUT,
    UnpicklableError,
    _seal,
    decode_instance,
    decode_step,
    encode_instance,
    encode_step,
)
from durable.errors import StepFailed
from durable.stores._lmdb.store import FORMAT_VERSION

from support import raw_get, raw_put

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 5, 1, 12, 0, 0, 250_001, tzinfo=UTC)
CET = timezone(timedelta(hours=1), "CET")
TIMES = [
    None,
    T0,
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # just before the epoch
    datetime.min.replace(tzinfo=UTC),  # year 1
    datetime.max.replace(tzinfo=UTC),  # year 9999
    datetime(2026, 6, 1, 12, 0, tzinfo=CET),  # another zone: stored as the datetime itself
    datetime(2026, 6, 1, 12, 0),  # naive: kept naive
]


def stored(data: bytes) -> Any:
    """What a checksummed record holds: the unpickled payload."""
    assert data[:1] == b"\x02"
    return pickle.loads(data[5:])


def format3(record: StepResult | WorkflowInstance) -> bytes:
    """``record`` as durable encoded it in store format 3: a dict of its fields, UTC times as microseconds."""
    fields = {a.name: getattr(record, a.name) for a in attrs.fields(type(record))}
    for name, value in fields.items():
        if isinstance(value, datetime) and value.tzinfo is UTC:
            fields[name] = (value - EPOCH) // timedelta(microseconds=1)
    if isinstance(record, WorkflowInstance):
        del fields["step_results"]
        fields["kwargs"] = dict(record.kwargs)
        fields["status"] = InstanceStatus(record.status).value
        for name in ("queue", "priority", "dedup_id", "not_before", "parent_id"):  # added after format 3
            del fields[name]
    else:
        fields["status"] = StepStatus(record.status).value
        del fields["seq"]  # added after format 3
    return _seal(pickle.dumps(fields, protocol=pickle.HIGHEST_PROTOCOL))


def assert_same_time(got: datetime | None, want: datetime | None) -> None:
    assert got == want
    if want is not None:
        assert got is not None and got.tzinfo == want.tzinfo and got.utcoffset() == want.utcoffset()


# -- the layout ------------------------------------------------------------------


def test_layouts_are_the_attrs_field_orders() -> None:
    """Records are built positionally: each layout must be its class's attrs fields, in order."""
    assert _STEP_LAYOUT == tuple(a.name for a in attrs.fields(StepResult))
    assert _INSTANCE_LAYOUT == tuple(a.name for a in attrs.fields(WorkflowInstance) if a.name != "step_results")


def test_replace_instance_is_attrs_evolve() -> None:
    """The engine's fast ``replace_instance`` changes exactly the fields given, as ``attrs.evolve`` does."""
    when = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    inst = WorkflowInstance(
        id="i", workflow_name="w", status=InstanceStatus.RUNNING, input={"x": 1}, current_step="a", output=2,
        error="e", step_results={"a": StepResult("a", StepStatus.COMPLETED)}, created_at=when, started_at=when,
        completed_at=when, deadline=when, args=(1,), kwargs={"k": 2}, error_type="E", queue="q", priority=3,
        dedup_id="d", not_before=when, parent_id="p",
    )
    changes: dict[str, Any] = {
        "id": "j", "workflow_name": "v", "status": InstanceStatus.FAILED, "input": 3, "current_step": None,
        "output": None, "error": None, "step_results": {}, "created_at": None, "started_at": None,
        "completed_at": None, "deadline": None, "args": (), "kwargs": {}, "error_type": None, "queue": None,
        "priority": 0, "dedup_id": None, "not_before": None, "parent_id": None,
    }
    assert set(changes) == {a.name for a in attrs.fields(WorkflowInstance)}  # every field, once
    assert replace_instance(inst) == attrs.evolve(inst) == inst
    for name, value in changes.items():
        replaced = replace_instance(inst, **{name: value})
        assert attrs.asdict(replaced, recurse=False) == attrs.asdict(attrs.evolve(inst, **{name: value}), recurse=False)
    assert attrs.asdict(replace_instance(inst, **changes), recurse=False) == changes
    with pytest.raises(KeyError):
        replace_instance(inst, no_such_field=1)


# -- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("when", TIMES, ids=lambda t: "none" if t is None else t.isoformat())
def test_a_step_round_trips_every_field(when: datetime | None) -> None:
    exc = StepFailed("boom", workflow="wf", instance_id="a", step="pay/charge#0", attempts=3)
    for status in StepStatus:
        rec = StepResult(
            step_name="charge", status=status, input=((7, "x"), {"retry": True}), output={"o": [1.5, None, b"b"]},
            error="boom", started_at=when, completed_at=when, attempts=7, key="pay/charge#0", step_type="parallel",
            function="shop.charge", exception=exc, next_attempt_at=when,
        )
        data = encode_step(rec)
        record = stored(data)
        assert type(record) is tuple and len(record) == 1 + len(_STEP_LAYOUT) and record[0] == "step"
        assert type(record[2]) is str and record[2] == status.value  # the status as its plain value
        utc = when is not None and when.tzinfo is UTC
        assert all(type(record[1 + _STEP_LAYOUT.index(n)]) is (int if utc else type(when))
                   for n in ("started_at", "completed_at", "next_attempt_at"))
        back = decode_step(data, "here", "/p")
        assert back == rec and type(back.status) is StepStatus and back.status is status
        for name in ("started_at", "completed_at", "next_attempt_at"):
            assert_same_time(getattr(back, name), when)
        assert type(back.exception) is StepFailed and str(back.exception) == str(exc)
        assert back.exception.attempts == 3 and back.exception.step == "pay/charge#0"


def test_a_step_of_defaults_and_plain_values_round_trips() -> None:
    bare = StepResult(step_name="s", status=StepStatus.PENDING)
    assert decode_step(encode_step(bare)) == bare
    assert stored(encode_step(bare)) == ("step", "s", "pending", None, None, None, None, None, 0, "", "task", None,
                                         None, None, None)
    # a status given as its plain string, an int too large for 64 bits, a builtin exception
    plain: Any = "completed"
    rec = StepResult(step_name="s", status=plain, attempts=2**70, exception=KeyError("k"))
    back = decode_step(encode_step(rec))
    assert back.status is StepStatus.COMPLETED and back.attempts == 2**70
    assert type(back.exception) is KeyError and back.exception.args == ("k",)


def test_an_exception_that_cannot_load_back_is_stored_as_a_portable_one() -> None:
    class Local(Exception):
        def __init__(self, a: int, b: int) -> None:  # pickles, but cannot be rebuilt from its args
            super().__init__(a + b)

    back = decode_step(encode_step(StepResult(step_name="s", status=StepStatus.FAILED, exception=Local(1, 2))))
    assert type(back.exception) is UnpicklableError
    assert back.exception.type_name.endswith("Local") and back.exception.message == "3"


@pytest.mark.parametrize("when", TIMES, ids=lambda t: "none" if t is None else t.isoformat())
def test_an_instance_round_trips_every_field(when: datetime | None) -> None:
    for status in InstanceStatus:
        inst = WorkflowInstance(
            id="order-1", workflow_name="orders", status=status, input={"n": [1, 2.5]}, current_step="pay#0",
            output=("done", 3), error="e", created_at=when, started_at=when, completed_at=when, deadline=when,
            args=(1, "two", None), kwargs=MappingProxyType({"k": b"v", "when": T0}), error_type="ValueError",
            queue="emails", priority=-2, dedup_id="d-1", not_before=when, parent_id="p-1",
            step_results={"s": StepResult(step_name="s", status=StepStatus.COMPLETED)},  # never stored
        )
        data = encode_instance(inst)
        record = stored(data)
        assert type(record) is tuple and len(record) == 1 + len(_INSTANCE_LAYOUT) and record[0] == "instance"
        assert type(record[3]) is str and record[3] == status.value
        assert type(record[13]) is dict  # kwargs of any mapping type are stored as a dict
        back = decode_instance(data, "here", "/p")
        assert back == attrs.evolve(inst, step_results={}, kwargs={"k": b"v", "when": T0})
        assert back.status is status and dict(back.step_results) == {}
        for name in ("created_at", "started_at", "completed_at", "deadline", "not_before"):
            assert_same_time(getattr(back, name), when)


def test_an_instance_of_defaults_round_trips() -> None:
    bare = WorkflowInstance(id="i", workflow_name="w", status=InstanceStatus.PENDING)
    assert decode_instance(encode_instance(bare)) == bare
    assert stored(encode_instance(bare)) == ("instance", "i", "w", "pending", None, None, None, None, None, None,
                                             None, None, (), {}, None, None, 0, None, None, None)


def test_an_instance_record_from_before_queues_reads_with_their_defaults() -> None:
    """0.1.0 wrote 15-item instance records: the queue fields read back as their defaults."""
    from durable._model.serde import _pickle, _seal

    old = ("instance", "i", "w", "running", None, None, None, None, None, None, None, None, (), {}, None)
    back = decode_instance(_seal(_pickle(old)))
    assert back == WorkflowInstance(id="i", workflow_name="w", status=InstanceStatus.RUNNING)
    assert back.queue is None and back.priority == 0 and back.parent_id is None


@settings(max_examples=300, deadline=None, database=None)
@given(st.datetimes(timezones=st.just(UTC)) | st.datetimes(timezones=st.timezones()) | st.datetimes())
def test_record_times_are_exact_over_the_whole_range(when: datetime) -> None:
    rec = StepResult(step_name="s", status=StepStatus.COMPLETED, started_at=when, next_attempt_at=when)
    back = decode_step(encode_step(rec))
    assert_same_time(back.started_at, when)
    assert_same_time(back.next_attempt_at, when)


def test_microseconds_out_of_the_datetime_range_are_corrupt() -> None:
    lowest = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    highest = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    for value, ok in ((lowest, True), (highest, True), (lowest - 1, False), (highest + 1, False), (10**30, False)):
        record = ("step", "s", "completed", None, None, None, value, None, 1, "s#0", "task", None, None, None)
        data = _seal(pickle.dumps(record))
        if ok:
            assert decode_step(data).started_at == EPOCH + timedelta(microseconds=value)
        else:
            with pytest.raises(StoreError, match=r"corrupt record at here: OverflowError"):
                decode_step(data, "here", "/p")


# -- records of format 3 (dicts) ---------------------------------------------------
# Written by durable's encoder of store format 3 (before this change), byte for byte.

FORMAT3_STEP = bytes.fromhex(
    "02cd94a541800595eb010000000000007d94288c09737465705f6e616d65948c06636861726765948c06737461747573948c0666"
    "61696c6564948c05696e707574944b0785947d948c05726574727994887386948c066f7574707574944e8c056572726f72948c04"
    "626f6f6d948c0a737461727465645f6174948a079100dd396317068c0c636f6d706c657465645f6174948a0751c70a3a6317068c"
    "08617474656d707473944b038c036b6579948c0c7061792f6368617267652330948c09737465705f74797065948c047461736b94"
    "8c0866756e6374696f6e948c0b73686f702e636861726765948c09657863657074696f6e948c0e64757261626c652e6572726f72"
    "73948c085f72656275696c6494939468178c0a537465704661696c6564949394680c7d94288c08776f726b666c6f77948c027766"
    "948c0b696e7374616e63655f6964948c0161948c0473746570946811680f4b0375879452947d94288c076d65737361676594680c"
    "681d681e681f682068216811680f4b038c075f6669656c647394681c75628c0f6e6578745f617474656d70745f6174948c086461"
    "746574696d65948c086461746574696d65949394430a07e805010e00000000009468288c0874696d657a6f6e6594939468288c09"
    "74696d6564656c74619493944b004d100e4b00879452948c03434554948694529486945294752e"
)
FORMAT3_INSTANCE = bytes.fromhex(
    "020e2afda880059512010000000000007d94288c026964948c076f726465722d31948c0d776f726b666c6f775f6e616d65948c06"
    "6f7264657273948c06737461747573948c0772756e6e696e67948c05696e707574947d948c016e945d94284b0147400400000000"
    "000065738c0c63757272656e745f73746570948c0c7061792f6368617267652330948c066f7574707574944e8c056572726f7294"
    "4e8c0a637265617465645f6174948a060541e6c619f38c0a737461727465645f6174948a079100dd396317068c0c636f6d706c65"
    "7465645f6174944e8c08646561646c696e65948a08ff5f73cc0c4484038c0461726773944b018c0374776f9486948c066b776172"
    "6773947d948c016b9443017694738c0a6572726f725f74797065944e752e"
)
# What the two samples hold.
SAMPLE_STEP = StepResult(
    step_name="charge", status=StepStatus.FAILED, input=((7,), {"retry": True}), output=None, error="boom",
    started_at=T0, completed_at=T0 + timedelta(seconds=3), attempts=3, key="pay/charge#0", step_type="task",
    function="shop.charge",
    exception=StepFailed("boom", workflow="wf", instance_id="a", step="pay/charge#0", attempts=3),
    next_attempt_at=datetime(2024, 5, 1, 14, 0, tzinfo=CET),
)
SAMPLE_INSTANCE = WorkflowInstance(
    id="order-1", workflow_name="orders", status=InstanceStatus.RUNNING, input={"n": [1, 2.5]},
    current_step="pay/charge#0", created_at=datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=UTC), started_at=T0,
    deadline=datetime.max.replace(tzinfo=UTC), args=(1, "two"), kwargs={"k": b"v"},
)


def test_format3_records_written_by_the_previous_durable_still_read() -> None:
    assert type(stored(FORMAT3_STEP)) is dict and type(stored(FORMAT3_INSTANCE)) is dict
    step = decode_step(FORMAT3_STEP, "here", "/p")
    assert step == SAMPLE_STEP and step.status is StepStatus.FAILED
    assert_same_time(step.next_attempt_at, SAMPLE_STEP.next_attempt_at)
    assert type(step.exception) is StepFailed and step.exception.attempts == 3
    inst = decode_instance(FORMAT3_INSTANCE, "here", "/p")
    assert inst == SAMPLE_INSTANCE and inst.created_at is not None and inst.created_at.tzinfo is UTC
    # the same records, written now, are tuples that read back the same
    assert decode_step(encode_step(step)) == step and decode_instance(encode_instance(inst)) == inst
    assert len(encode_step(step)) < len(FORMAT3_STEP) and len(encode_instance(inst)) < len(FORMAT3_INSTANCE)


def test_format3_records_of_every_field_type_still_read() -> None:
    for when in TIMES:
        step = attrs.evolve(SAMPLE_STEP, started_at=when, completed_at=when, next_attempt_at=when)
        assert decode_step(format3(step)) == step
        inst = attrs.evolve(SAMPLE_INSTANCE, created_at=when, deadline=when, completed_at=when)
        assert decode_instance(format3(inst)) == inst
    assert format3(SAMPLE_STEP) == FORMAT3_STEP  # the helper is the old encoder
    assert format3(SAMPLE_INSTANCE) == FORMAT3_INSTANCE


# -- refused shapes ------------------------------------------------------------------

GOOD_STEP: tuple[Any, ...] = (
    "step", "s", "completed", None, None, None, 1_714_564_800_000_000, None, 1, "s#0", "task", None, None, None, 0,
)
GOOD_STEP_0_1 = GOOD_STEP[:-1]  # durable 0.1.0 wrote step records without seq
GOOD_INSTANCE: tuple[Any, ...] = (
    "instance", "a", "wf", "running", None, None, None, None, 1_714_564_800_000_000, None, None, None, (), {}, None,
    "q", 0, None, None, None,
)
GOOD_INSTANCE_0_1 = GOOD_INSTANCE[:15]  # durable 0.1.0 wrote instance records without the queue fields


def sealed(value: Any) -> bytes:
    return _seal(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def test_the_good_shapes_read() -> None:
    assert decode_step(sealed(GOOD_STEP)).started_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert decode_instance(sealed(GOOD_INSTANCE)).created_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_a_newer_writers_longer_tuples_read_with_the_extra_fields_ignored() -> None:
    assert decode_step(sealed((*GOOD_STEP, "added later", [1]))) == decode_step(sealed(GOOD_STEP))
    assert decode_instance(sealed((*GOOD_INSTANCE, {"x": 1}))) == decode_instance(sealed(GOOD_INSTANCE))


def test_an_instance_record_of_0_1_0_reads_without_queue_fields() -> None:
    inst = decode_instance(sealed(GOOD_INSTANCE_0_1))
    assert inst == attrs.evolve(decode_instance(sealed(GOOD_INSTANCE)), queue=None)


def test_a_step_record_of_0_1_0_reads_without_seq() -> None:
    step = decode_step(sealed(GOOD_STEP_0_1))
    assert step.seq is None and step == attrs.evolve(decode_step(sealed(GOOD_STEP)), seq=None)


def test_shorter_tuples_are_corrupt() -> None:
    for good, decode, cls in ((GOOD_STEP, decode_step, "StepResult"), (GOOD_INSTANCE, decode_instance,
                                                                         "WorkflowInstance")):
        oldest = len(GOOD_STEP_0_1) if good is GOOD_STEP else len(GOOD_INSTANCE_0_1)
        for n in range(oldest):  # (from 0.1.0's length on, a record reads: the missing fields take defaults)
            with pytest.raises(StoreError, match=rf"corrupt record at /store:here: TypeError: not a {cls} record "
                                                 rf"\(a tuple of {n} items, not {len(good)}\)") as info:
                decode(sealed(good[:n]), "/store:here", "/store")
            assert info.value.path == "/store"


def test_a_record_of_the_other_type_or_no_tag_is_corrupt() -> None:
    with pytest.raises(StoreError, match=r"corrupt record at here: .*not a StepResult record \(its tag is 'instance'"):
        decode_step(sealed(GOOD_INSTANCE), "here", "/p")
    # (an instance record is one field longer: it would pass the length check as a step with an extra field)
    with pytest.raises(StoreError, match=r"corrupt record at here: .*not a WorkflowInstance record"):
        decode_instance(sealed((*GOOD_STEP, None)), "here", "/p")
    for tag in (None, 4, b"step", "Step", ("step",)):
        with pytest.raises(StoreError, match=r"corrupt record at here: .*not a StepResult record \(its tag is"):
            decode_step(sealed((tag, *GOOD_STEP[1:])), "here", "/p")
    for other in (list(GOOD_STEP), set(GOOD_STEP[:3]), "step", 5):
        with pytest.raises(StoreError, match=rf"corrupt record at here: .*not a StepResult record \(a "
                                             rf"{type(other).__name__}\)"):
            decode_step(sealed(other), "here", "/p")


BAD_STEP_FIELDS = [
    ("step_name", ["s"]), ("step_name", None), ("error", 5), ("started_at", 0.5), ("started_at", True),
    ("started_at", "2024-05-01"), ("completed_at", b"\x00"), ("attempts", "1"), ("attempts", True),
    ("attempts", 1.0), ("key", None), ("step_type", 1), ("function", b"mod.fn"), ("exception", "boom"),
    ("exception", ValueError), ("next_attempt_at", 1.5),
]
BAD_INSTANCE_FIELDS = [
    ("id", 5), ("id", ""), ("id", "a\0b"), ("id", "x" * 201), ("workflow_name", None), ("current_step", 1),
    ("error", ValueError("x")), ("created_at", "yesterday"), ("started_at", False), ("completed_at", 1.0),
    ("deadline", 12.5), ("args", [1, 2]), ("kwargs", {1: "x"}), ("kwargs", [("a", 1)]), ("error_type", 3),
]


@pytest.mark.parametrize(
    ("cls", "name", "value"),
    [(StepResult, *bad) for bad in BAD_STEP_FIELDS] + [(WorkflowInstance, *bad) for bad in BAD_INSTANCE_FIELDS],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v)[:20],
)
def test_a_field_of_a_wrong_type_is_corrupt_naming_the_field(cls: type, name: str, value: Any) -> None:
    """In a tuple (format 4) and in a dict (formats 1 to 3) alike."""
    decode: Any = decode_step if cls is StepResult else decode_instance
    good, layout = (GOOD_STEP, _STEP_LAYOUT) if cls is StepResult else (GOOD_INSTANCE, _INSTANCE_LAYOUT)
    record = list(good)
    record[1 + layout.index(name)] = value
    for data in (sealed(tuple(record)), sealed({**dict(zip(layout, good[1:])), name: value})):
        with pytest.raises(StoreError, match=rf"corrupt record at /s:here: TypeError: field '{name}' of a "
                                             rf"{cls.__name__} record has a bad value of type {type(value).__name__}"):
            decode(data, "/s:here", "/s")


def test_a_bad_status_is_corrupt() -> None:
    for status in ("weird", None, ["running"], 1):
        with pytest.raises(StoreError, match=r"corrupt record at here: (ValueError|TypeError)"):
            decode_step(sealed(("step", "s", status, *GOOD_STEP[3:])), "here", "/p")
        with pytest.raises(StoreError, match=r"corrupt record at here: (ValueError|TypeError)"):
            decode_instance(sealed(("instance", "a", "wf", status, *GOOD_INSTANCE[4:])), "here", "/p")
    # a status of the other kind of record is not one of this kind's
    with pytest.raises(StoreError, match="is not a valid StepStatus"):
        decode_step(sealed(("step", "s", "cancelled", *GOOD_STEP[3:])), "here", "/p")


def test_a_format3_dict_missing_a_required_field_is_corrupt() -> None:
    fields = dict(zip(_STEP_LAYOUT, GOOD_STEP[1:]))
    del fields["status"]
    with pytest.raises(StoreError, match=r"corrupt record at here: TypeError: a StepResult record without its "
                                         r"field 'status'"):
        decode_step(sealed(fields), "here", "/p")
    fields = dict(zip(_INSTANCE_LAYOUT, GOOD_INSTANCE[1:]))
    del fields["workflow_name"], fields["kwargs"]  # kwargs has a default (an empty dict); the name has none
    with pytest.raises(StoreError, match=r"a WorkflowInstance record without its field 'workflow_name'"):
        decode_instance(sealed(fields), "here", "/p")
    fields["workflow_name"] = "wf"
    assert decode_instance(sealed(fields)).kwargs == {}


# -- the store's marker ----------------------------------------------------------------


async def test_a_format3_store_is_upgraded_and_its_records_still_read(store_path: Path) -> None:
    assert FORMAT_VERSION == 7
    old_step = attrs.evolve(SAMPLE_STEP, key="plain#0", exception=None, status=StepStatus.COMPLETED)
    st_ = LMDBStore(store_path)  # the indexes as a store of format 3 had them
    try:
        await st_.create_instance(SAMPLE_INSTANCE)
        await st_.put_step("order-1", SAMPLE_STEP)
        await st_.put_step("order-1", old_step)
    finally:
        st_.close()
    assert raw_get(store_path, b"meta", b"format") == b"7"
    assert type(stored(raw_get(store_path, b"steps", b"order-1\0plain#0") or b"")) is tuple
    # ...then its records and marker as the previous durable wrote them
    raw_put(store_path, [
        (b"meta", b"format", b"3"),
        (b"instances", b"order-1", FORMAT3_INSTANCE),
        (b"steps", b"order-1\0pay/charge#0", FORMAT3_STEP),
        (b"steps", b"order-1\0plain#0", format3(old_step)),
    ])
    LMDBStore(store_path).close()
    assert raw_get(store_path, b"meta", b"format") == b"7"  # upgraded in place on open

    st_ = LMDBStore(store_path)
    try:
        steps = await st_.get_steps("order-1")
        assert steps == {"pay/charge#0": SAMPLE_STEP, "plain#0": old_step}
        inst = await st_.get_instance("order-1")
        assert inst is not None and attrs.evolve(inst, step_results={}, current_step=SAMPLE_INSTANCE.current_step) \
            == SAMPLE_INSTANCE
        assert [i.id for i in await st_.get_running_instances()] == ["order-1"]
        # new records are tuples (format 4's layout), next to the old ones
        await st_.put_step("order-1", attrs.evolve(old_step, key="new#0", output=[1]))
        await st_.update_instance(attrs.evolve(SAMPLE_INSTANCE, output="changed"))
    finally:
        st_.close()
    assert type(stored(raw_get(store_path, b"steps", b"order-1\0new#0") or b"")) is tuple
    assert type(stored(raw_get(store_path, b"instances", b"order-1") or b"")) is tuple
    assert raw_get(store_path, b"steps", b"order-1\0pay/charge#0") == FORMAT3_STEP  # untouched

    st_ = LMDBStore(store_path)
    try:
        steps = await st_.get_steps("order-1")
        assert set(steps) == {"pay/charge#0", "plain#0", "new#0"} and steps["new#0"].output == [1]
        assert steps["pay/charge#0"] == SAMPLE_STEP
        inst = await st_.get_instance("order-1")
        assert inst is not None and inst.output == "changed"
    finally:
        st_.close()


async def test_a_store_of_format_8_is_refused(store_path: Path) -> None:
    LMDBStore(store_path).close()
    raw_put(store_path, [(b"meta", b"format", b"8")])
    with pytest.raises(StoreError, match=r"newer durable \(store format 8, this version reads up to 7\)") as info:
        LMDBStore(store_path)
    assert info.value.path == str(store_path)
    assert raw_get(store_path, b"meta", b"format") == b"8"  # refusing did not rewrite the marker


async def test_a_format6_store_gets_its_events_indexed_for_readers_of_all(store_path: Path) -> None:
    """Format 6 kept each instance's events, but no index of them all: opening it builds ``eventorder``."""
    import lmdb

    st_ = LMDBStore(store_path)
    try:
        await st_.create_instance(SAMPLE_INSTANCE)
        for n in range(3):
            st_.append_event("order-1", f"e{n}".encode())
        await st_.put_step("order-1", SAMPLE_STEP)  # (a commit: the events ride it)
    finally:
        st_.close()
    env = lmdb.open(str(store_path), max_dbs=32)
    try:
        with env.begin(write=True) as txn:
            txn.drop(env.open_db(b"eventorder", txn=txn), delete=False)  # as format 6 had it: no index
            txn.put(b"format", b"6", db=env.open_db(b"meta", txn=txn))
    finally:
        env.close()
    st_ = LMDBStore(store_path)
    try:
        found = await st_.read_all_events(0, 10)
        assert [(iid, data) for _, iid, data in found] == [("order-1", b"e0"), ("order-1", b"e1"), ("order-1", b"e2")]
        assert await st_.last_event_id() == found[-1][0]
    finally:
        st_.close()
    assert raw_get(store_path, b"meta", b"format") == b"7"


async def test_a_corrupt_format4_step_in_a_store_names_its_key(store_path: Path) -> None:
    st_ = LMDBStore(store_path)
    try:
        await st_.create_instance(SAMPLE_INSTANCE)
    finally:
        st_.close()
    raw_put(store_path, [(b"steps", b"order-1\0s#0", sealed(GOOD_STEP[:5]))])
    st_ = LMDBStore(store_path)
    try:
        with pytest.raises(StoreError, match=rf"corrupt record at {store_path}:steps/b'order-1\\x00s#0': TypeError: "
                                             r"not a StepResult record \(a tuple of 5 items") as info:
            await st_.get_steps("order-1")
        assert info.value.path == str(store_path)
    finally:
        st_.close()
