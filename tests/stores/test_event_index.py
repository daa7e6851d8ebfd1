"""The Store contract of the event log read across instances (0.2.0): ``read_all_events``, ``last_event_id``
and ``on_change``.

Every test runs against the memory store, the LMDB store writing inline and
the LMDB store with its group-commit writer thread running (the ``s``
fixture). Events are appended non-durably (``append_event``); a durable write
(``flush``) commits them, and runs the LMDB store's change observers, before
it returns.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from durable import InstanceStatus, LMDBStore, Store, WorkflowInstance
from durable._model.eventlog import MAX_EVENT_ID, decode_event, encode_event

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_instance(iid: str, status: InstanceStatus = InstanceStatus.RUNNING, workflow: str = "wf",
                  **fields: Any) -> WorkflowInstance:
    return WorkflowInstance(id=iid, workflow_name=workflow, status=status, created_at=T0, **fields)


async def flush(s: Store) -> None:
    """A durable write: the events queued before it are committed with it (or before it)."""
    await s.release("nobody")


def append(s: Store, iid: str, n: int, name: str = "workflow.progress") -> None:
    s.append_event(iid, encode_event(name, iid, "wf", {"n": n}))


async def finish(s: Store, iid: str, status: InstanceStatus = InstanceStatus.COMPLETED) -> None:
    inst = await s.get_instance(iid, steps=False)
    assert inst is not None
    await s.update_instance(attrs.evolve(inst, status=status, completed_at=T0))


async def everything(s: Store) -> list[tuple[int, str, bytes]]:
    return await s.read_all_events(0, 1_000_000)


# -- read_all_events -----------------------------------------------------------


async def test_events_of_interleaved_instances_are_read_in_id_order(s: Store) -> None:
    for iid in ("a", "b", "c"):
        await s.create_instance(make_instance(iid))
    order = ["a", "b", "a", "c", "c", "b", "a", "c", "b", "b"]
    for n, iid in enumerate(order):
        append(s, iid, n)
    await finish(s, "b")  # its terminal event comes next, in the same write as its end
    append(s, "a", len(order))
    await flush(s)

    found = await everything(s)
    ids = [n for n, _, _ in found]
    assert ids == sorted(set(ids)) and all(isinstance(n, int) and n > 0 for n in ids)
    assert [iid for _, iid, _ in found] == [*order, "b", "a"]
    for number, iid, data in found:
        assert decode_event(data)[1] == iid
    assert [decode_event(d)[3].get("n") for _, _, d in found] == [*range(len(order)), None, len(order)]
    assert decode_event(found[-2][2])[0] == "workflow.completed"
    for iid in ("a", "b", "c"):  # each instance's log is the all-instances log filtered by instance
        assert await s.read_events(iid, 0, 1000) == [(n, d) for n, i, d in found if i == iid]


async def test_paging_with_after_and_limit_has_no_gaps_nor_repeats(s: Store) -> None:
    for iid in ("p", "q"):
        await s.create_instance(make_instance(iid))
    for n in range(23):
        append(s, "pq"[n % 3 == 0], n)
    await flush(s)
    full = await everything(s)
    assert len(full) == 23
    for limit in (1, 2, 5, 7, 22, 23, 100):
        got: list[tuple[int, str, bytes]] = []
        after = 0
        while page := await s.read_all_events(after, limit):
            assert len(page) <= limit
            got += page
            after = page[-1][0]
        assert got == full, limit
    first, *rest = full
    assert await s.read_all_events(first[0], 3) == rest[:3]
    assert await s.read_all_events(first[0] - 1, 1) == [first]  # after is exclusive
    assert await s.read_all_events() == full[:100]  # defaults: from the first, 100 at most
    assert await s.read_all_events(0, 0) == []
    assert await s.read_all_events(full[-1][0], 10) == []
    assert await s.read_all_events(MAX_EVENT_ID, 10) == []


async def test_the_default_limit_is_one_hundred(s: Store) -> None:
    await s.create_instance(make_instance("many"))
    for n in range(130):
        append(s, "many", n)
    await flush(s)
    page = await s.read_all_events()
    assert len(page) == 100
    assert await s.read_all_events(page[-1][0]) == (await everything(s))[100:]


async def test_an_empty_store_has_no_events(s: Store) -> None:
    assert await s.read_all_events() == []
    assert await s.read_all_events(5, 10) == []
    assert await s.last_event_id() == 0


@pytest.mark.parametrize("after, limit", [
    (-1, 10), (1.0, 10), ("3", 10), (None, 10), (True, 10), (MAX_EVENT_ID + 1, 10),
    (0, -1), (0, 2.0), (0, None), (0, "5"), (0, False),
])
async def test_bad_after_or_limit_is_a_value_error_as_for_read_events(s: Store, after: Any, limit: Any) -> None:
    await s.create_instance(make_instance("i"))
    append(s, "i", 0)
    await flush(s)
    with pytest.raises(ValueError, match="after must be|limit must be") as per_instance:
        await s.read_events("i", after, limit)
    with pytest.raises(ValueError, match="after must be|limit must be") as across:
        await s.read_all_events(after, limit)
    assert str(across.value) == str(per_instance.value)


# -- last_event_id -------------------------------------------------------------


async def test_last_event_id_is_the_newest_stored_event(s: Store) -> None:
    assert await s.last_event_id() == 0
    await s.create_instance(make_instance("x"))
    await s.create_instance(make_instance("y"))
    append(s, "x", 0)
    await flush(s)
    assert await s.last_event_id() == (await everything(s))[-1][0]
    append(s, "y", 1)
    append(s, "x", 2)
    await flush(s)
    found = await everything(s)
    assert await s.last_event_id() == found[-1][0] and found[-1][1] == "x"
    await finish(s, "y", InstanceStatus.FAILED)  # the terminal event is an event too
    assert await s.last_event_id() == (await everything(s))[-1][0] > found[-1][0]
    # reading on from last_event_id finds nothing, then exactly what comes next
    last = await s.last_event_id()
    assert await s.read_all_events(last) == []
    append(s, "x", 3)
    await flush(s)
    (number, iid, _), = await s.read_all_events(last)
    assert number > last and iid == "x" and await s.last_event_id() == number


# -- deleting an instance ------------------------------------------------------


async def test_deleting_an_instance_removes_its_events_from_the_all_instances_log(s: Store) -> None:
    for iid in ("keep", "gone"):
        await s.create_instance(make_instance(iid))
    for n in range(10):
        append(s, ("keep", "gone")[n % 2], n)
    await finish(s, "gone", InstanceStatus.CANCELLED)
    await flush(s)
    before = await everything(s)
    kept = [e for e in before if e[1] == "keep"]
    gone_ids = [n for n, iid, _ in before if iid == "gone"]
    assert len(kept) == 5 and len(gone_ids) == 6

    assert await s.delete_instance("gone")
    assert await everything(s) == kept
    assert await s.read_events("gone") == []
    assert await s.read_events("keep", 0, 100) == [(n, d) for n, _, d in kept]
    for after in gone_ids:  # paging from a deleted event's id goes on with the next one kept
        assert await s.read_all_events(after, 1) == [e for e in kept if e[0] > after][:1]
    # the newest stored event is now the newest kept one; ids are not reused
    assert await s.last_event_id() == kept[-1][0]
    append(s, "keep", 99)
    await flush(s)
    newest = (await everything(s))[-1][0]
    assert newest > max(gone_ids) and await s.last_event_id() == newest
    assert not await s.delete_instance("gone")
    assert await s.delete_instance("keep")
    assert await everything(s) == []


# -- on_change -----------------------------------------------------------------


class Changes:
    """An observer recording ``(kind, instance id)`` and the thread it was called on."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, kind: str, instance_id: str) -> None:
        with self._lock:
            self.seen.append((kind, instance_id))
            self.threads.add(threading.current_thread().name)

    def take(self) -> set[tuple[str, str]]:
        with self._lock:
            out, self.seen = set(self.seen), []
        return out


async def test_on_change_reports_appended_events_and_ends(s: Store) -> None:
    changes = Changes()
    stop = s.on_change(changes)
    for iid in ("e1", "e2", "done", "stopped"):
        await s.create_instance(make_instance(iid))
    assert changes.take() == set()  # creating a running instance is neither an end nor an event

    append(s, "e1", 0)
    append(s, "e2", 1)
    append(s, "e1", 2)
    await flush(s)
    assert changes.take() == {("events", "e1"), ("events", "e2")}

    await finish(s, "done")  # update_instance to a finished status
    got = changes.take()
    assert ("end", "done") in got and {i for _, i in got} == {"done"}
    assert got <= {("end", "done"), ("events", "done")}  # (its terminal event may be reported as events too)

    cancelled = await s.cancel_instance("stopped", error="cancelled", error_type="WorkflowCancelled", when=T0)
    assert cancelled is not None and cancelled.status == InstanceStatus.CANCELLED
    got = changes.take()
    assert ("end", "stopped") in got and {i for _, i in got} == {"stopped"}

    await s.update_instance(make_instance("e2", status=InstanceStatus.RUNNING, output=1))  # not finished
    await s.send_signal("e1", "go", 1)
    assert changes.take() == set()

    stop()
    append(s, "e1", 3)
    await flush(s)
    await finish(s, "e1", InstanceStatus.FAILED)
    await s.cancel_instance("e2", error="cancelled", error_type="WorkflowCancelled", when=T0)
    assert changes.take() == set()
    stop()  # stopping twice is harmless


async def test_an_instance_created_finished_ends_and_logs_its_terminal_event(s: Store) -> None:
    """(What on_change reports for it is not checked: see the report on LMDB's create.)"""
    await s.create_instance(make_instance("born-done", status=InstanceStatus.COMPLETED, output=3))
    (number, iid, data), = await everything(s)
    assert iid == "born-done" and decode_event(data)[0] == "workflow.completed"
    assert await s.last_event_id() == number


async def test_stopping_one_observer_leaves_the_others(s: Store) -> None:
    first, second = Changes(), Changes()
    stop_first = s.on_change(first)
    stop_second = s.on_change(second)
    await s.create_instance(make_instance("i"))
    append(s, "i", 0)
    await flush(s)
    assert first.take() == second.take() == {("events", "i")}
    stop_first()
    append(s, "i", 1)
    await flush(s)
    assert first.take() == set() and second.take() == {("events", "i")}
    stop_second()


async def test_lmdb_calls_observers_on_its_writer_thread(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path / "s.lmdb")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            changes = Changes()
            stop = store.on_change(changes)
            await store.create_instance(make_instance("w"))
            append(store, "w", 0)
            await flush(store)
            await finish(store, "w")
            assert {k for k, _ in changes.take()} == {"events", "end"}
            assert changes.threads == {"durable-lmdb-writer"}
            stop()
            nursery.cancel_scope.cancel()
    finally:
        store.close()
