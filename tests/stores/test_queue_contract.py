"""The Store contract of 0.2.0: queues, the event log, external jobs and the worker registry.

Like ``test_store_contract.py``, every test runs against the memory store,
the LMDB store writing inline and the LMDB store with its group-commit
writer thread running. Times given to ``claim_queued`` are explicit, so
nothing waits on a clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
import trio

from pathlib import Path

from durable import InstanceStatus, LMDBStore, StepResult, StepStatus, Store, WorkflowInstance
from durable._model.eventlog import decode_event, encode_event
from durable._model.jobs import JobRecord, job_signal
from durable._model.queues import Queue
from durable.stores import Owner

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def ts(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_instance(iid: str, queue: str | None = "q", workflow: str = "wf",
                  status: InstanceStatus = InstanceStatus.PENDING, **fields: Any) -> WorkflowInstance:
    return WorkflowInstance(id=iid, workflow_name=workflow, status=status, created_at=T0, queue=queue, **fields)


def make_job(iid: str, step_key: str, queue: str = "gpu") -> JobRecord:
    return JobRecord(instance_id=iid, step_key=step_key, workflow_name="wf", step_name=step_key.split("#")[0],
                     queue=queue, target="do_it", args=(1, "two"), kwargs={"k": [3]})


async def finish(s: Store, iid: str, status: InstanceStatus = InstanceStatus.COMPLETED, **fields: Any) -> None:
    inst = await s.get_instance(iid, steps=False)
    assert inst is not None
    await s.update_instance(attrs.evolve(inst, status=status, **fields))


async def flush(s: Store) -> None:
    """A durable write: non-durable ones queued before it (events) are committed with it."""
    await s.release("nobody")


async def take(s: Store, owner: Owner, queue: str = "q", free: int | None = None, *, at: float = 0,
               limit: int | None = None, workflows: frozenset[str] | None = None) -> tuple[list[str], datetime | None]:
    return await s.claim_queued(owner, [(queue, free)], workflows, limit, ts(at))


@pytest.fixture
def a() -> Owner:
    return Owner.this_process()


@pytest.fixture
def b(a: Owner) -> Owner:
    return attrs.evolve(a, id="other-" + a.id)


# -- queued instances --------------------------------------------------------


async def test_a_queued_instance_is_claimed_by_a_worker_not_taken_over(s: Store, a: Owner, b: Owner) -> None:
    assert await s.create_instance(make_instance("i1")) == (make_instance("i1"), True)
    assert await s.queue_depths("q") == (1, 0)
    assert await s.claim(["i1"], a) == []
    assert await s.get_lease("i1") is None
    assert await take(s, a) == (["i1"], None)
    assert await s.queue_depths("q") == (0, 1)
    lease = await s.get_lease("i1")
    assert lease is not None and lease.id == a.id
    assert await take(s, b) == ([], None)
    assert await s.claim(["i1"], b) == []  # held by a live worker
    await s.release(a.id)  # a stops before it started i1: i1 goes back to its queue
    assert await s.claim(["i1"], b) == [] and await s.queue_depths("q") == (1, 0)
    assert await take(s, b) == (["i1"], None)
    assert await s.queue_depths("q") == (0, 1)  # in flight (until it finishes)
    await finish(s, "i1")
    assert await s.queue_depths("q") == (0, 0)


async def test_only_a_pending_instance_without_owner_is_queued(s: Store, a: Owner) -> None:
    await s.create_instance(make_instance("owned"), owner=a)
    await s.create_instance(make_instance("running", status=InstanceStatus.RUNNING))
    await s.create_instance(make_instance("unqueued", queue=None))
    assert await s.queue_depths("q") == (0, 0)
    assert await take(s, a) == ([], None)
    assert sorted(await s.claim(["owned", "running", "unqueued"], a)) == ["owned", "running", "unqueued"]


async def test_concurrency_holds_across_workers(s: Store, a: Owner, b: Owner) -> None:
    await s.register_queue(Queue("q", concurrency=2))
    for i in range(5):
        await s.create_instance(make_instance(f"i{i}"))
    assert await take(s, a) == (["i0", "i1"], None)
    assert await take(s, b) == ([], None)
    assert await take(s, a) == ([], None)
    assert await s.queue_depths("q") == (3, 2)
    await s.update_instance(make_instance("i0", status=InstanceStatus.COMPLETED), owner=a.id)
    assert await s.queue_depths("q") == (3, 1)
    assert await take(s, b) == (["i2"], None)
    assert await take(s, a) == ([], None)
    assert await s.queue_depths("q") == (2, 2)
    await finish(s, "i1", InstanceStatus.FAILED)
    await finish(s, "i2", InstanceStatus.CANCELLED)
    assert await take(s, a, limit=5) == (["i3", "i4"], None)


async def test_worker_slots_and_limit(s: Store, a: Owner) -> None:
    for i in range(4):
        await s.create_instance(make_instance(f"q{i}"))
        await s.create_instance(make_instance(f"r{i}", queue="r"))
    assert await take(s, a, free=0) == ([], None)
    assert await take(s, a, free=1) == (["q0"], None)
    assert await take(s, a, limit=2) == (["q1", "q2"], None)
    assert await take(s, a, limit=0) == ([], None)
    # the limit spans the served queues; each queue's free slots apply to it alone
    taken, due = await s.claim_queued(a, [("q", None), ("r", 2)], None, 4, ts(0))
    assert (taken, due) == (["q3", "r0", "r1"], None)
    assert await s.queue_depths("q") == (0, 4)
    assert await s.queue_depths("r") == (2, 2)


async def test_priority_orders_only_a_queue_registered_with_priority(s: Store, a: Owner) -> None:
    await s.register_queue(Queue("p", priority=True))
    await s.register_queue(Queue("f"))
    for name, prio in [("a", 0), ("b", 5), ("c", 5), ("d", -1), ("e", 10), ("f", 0)]:
        for queue in ("p", "f", "unregistered"):
            await s.create_instance(make_instance(f"{queue}-{name}", queue=queue, priority=prio))
    taken, _ = await take(s, a, "p")
    assert taken == ["p-e", "p-b", "p-c", "p-a", "p-f", "p-d"]
    for queue in ("f", "unregistered"):
        taken, _ = await take(s, a, queue)
        assert taken == [f"{queue}-{n}" for n in "abcdef"]


async def test_not_before_in_the_future_is_skipped_and_its_time_returned(s: Store, a: Owner) -> None:
    await s.create_instance(make_instance("late", not_before=ts(60)))
    await s.create_instance(make_instance("later", not_before=ts(90)))
    await s.create_instance(make_instance("now"))
    assert await take(s, a, at=0) == (["now"], ts(60))
    assert await take(s, a, at=59) == ([], ts(60))
    assert await take(s, a, at=60) == (["late"], ts(90))
    assert await take(s, a, at=100) == (["later"], None)


async def test_rate_limit_counts_starts_in_the_window(s: Store, a: Owner, b: Owner) -> None:
    await s.register_queue(Queue("q", rate_limit=(2, 10)))
    for i in range(5):
        await s.create_instance(make_instance(f"i{i}"))
    assert await take(s, a, at=0) == (["i0", "i1"], ts(10))
    assert await take(s, b, at=5) == ([], ts(10))
    assert await take(s, a, at=9.999) == ([], ts(10))
    assert await take(s, b, at=10, free=1) == (["i2"], None)  # one start in the window: a slot is left
    assert await take(s, a, at=12) == (["i3"], ts(20))
    assert await take(s, a, at=19) == ([], ts(20))
    assert await take(s, a, at=30) == (["i4"], None)
    assert await s.queue_depths("q") == (0, 5)  # finishing is not what the rate limit counts


async def test_only_instances_of_the_served_workflows_are_taken(s: Store, a: Owner) -> None:
    for i in range(3):
        await s.create_instance(make_instance(f"x{i}", workflow="x"))
        await s.create_instance(make_instance(f"y{i}", workflow="y"))
    assert await take(s, a, workflows=frozenset({"y"})) == (["y0", "y1", "y2"], None)
    assert await take(s, a, workflows=frozenset()) == ([], None)
    assert await s.queue_depths("q") == (3, 3)
    assert await take(s, a, workflows=frozenset({"x", "z"}), limit=2) == (["x0", "x1"], None)


async def test_dedup_id_holds_until_the_instance_finishes(s: Store, a: Owner) -> None:
    first = make_instance("d1", dedup_id="order-7", input=1)
    assert await s.create_instance(first) == (first, True)
    found, created = await s.create_instance(make_instance("d2", dedup_id="order-7", input=2))
    assert (found.id, found.input, created) == ("d1", 1, False)
    assert await s.get_instance("d2") is None
    assert await s.queue_depths("q") == (1, 0)
    # another queue, or no dedup id: not a duplicate
    assert (await s.create_instance(make_instance("d3", queue="r", dedup_id="order-7")))[1]
    assert (await s.create_instance(make_instance("d4")))[1]
    assert await take(s, a, limit=1) == (["d1"], None)
    found, created = await s.create_instance(make_instance("d5", dedup_id="order-7"))
    assert (found.id, created) == ("d1", False)  # in flight still holds it
    await finish(s, "d1")
    second = make_instance("d6", dedup_id="order-7")
    assert await s.create_instance(second) == (second, True)
    found, created = await s.create_instance(make_instance("d7", dedup_id="order-7"))
    assert (found.id, created) == ("d6", False)


async def test_cancelling_a_waiting_instance_removes_it_from_its_queue(s: Store, a: Owner) -> None:
    await s.create_instance(make_instance("c1", dedup_id="k"))
    await s.create_instance(make_instance("c2"))
    await finish(s, "c1", InstanceStatus.CANCELLED)
    assert await s.queue_depths("q") == (1, 0)
    assert await take(s, a) == (["c2"], None)
    assert (await s.create_instance(make_instance("c3", dedup_id="k")))[1]
    inst = await s.get_instance("c1")
    assert inst is not None and inst.status is InstanceStatus.CANCELLED


async def test_delete_removes_queue_entries_events_and_jobs(s: Store, a: Owner) -> None:
    await s.create_instance(make_instance("w", dedup_id="k"))
    await s.create_instance(make_instance("f"))
    assert await take(s, a, "q", limit=1) == (["w"], None)  # in flight
    await s.create_instance(make_instance("v"))  # waiting
    for iid in ("w", "v"):
        s.append_event(iid, encode_event("workflow.started", iid, "wf", {}))
        assert await s.enqueue_job(make_job(iid, "s#1"))
    await flush(s)
    assert await s.queue_depths("q") == (2, 1)
    assert await s.delete_instance("w")
    assert await s.delete_instance("v")
    assert await s.queue_depths("q") == (1, 0)
    assert await s.read_events("w") == [] and await s.read_events("v") == []
    assert await s.get_jobs() == []
    assert await s.claim_jobs(a, ["gpu"], 10) == []
    assert (await s.create_instance(make_instance("w2", dedup_id="k")))[1]  # its dedup id is free
    assert await take(s, a) == (["f", "w2"], None)


async def test_queues_are_registered_last_wins(s: Store) -> None:
    assert await s.get_queues() == {}
    await s.register_queue(Queue("q", concurrency=3))
    await s.register_queue(Queue("r", rate_limit=(5, 1.5), worker_concurrency=2, priority=True))
    await s.register_queue(Queue("q", concurrency=1))
    assert await s.get_queues() == {
        "q": Queue("q", concurrency=1),
        "r": Queue("r", rate_limit=(5, 1.5), worker_concurrency=2, priority=True),
    }


# -- the event log -------------------------------------------------------------


async def test_events_have_increasing_ids_across_instances(s: Store) -> None:
    for n, iid in enumerate(["e1", "e2", "e1", "e1"]):
        s.append_event(iid, encode_event("step.completed", iid, "wf", {"n": n}))
    await flush(s)
    e1 = await s.read_events("e1")
    e2 = await s.read_events("e2")
    assert [decode_event(d)[3]["n"] for _, d in e1] == [0, 2, 3]
    assert decode_event(e2[0][1]) == ("step.completed", "e2", "wf", {"n": 1})
    assert e1[0][0] < e2[0][0] < e1[1][0] < e1[2][0]
    assert await s.read_events("e1", after=e1[0][0]) == e1[1:]
    assert await s.read_events("e1", after=e1[0][0], limit=1) == e1[1:2]
    assert await s.read_events("e1", limit=0) == []
    assert await s.read_events("e1", after=e1[2][0]) == []
    assert await s.read_events("nobody") == []
    assert await s.read_events("") == []


async def test_finishing_appends_the_terminal_event_once(s: Store) -> None:
    for iid in ("ok", "gone", "bad"):
        await s.create_instance(make_instance(iid, queue=None, status=InstanceStatus.RUNNING))
        s.append_event(iid, encode_event("workflow.started", iid, "wf", {}))
    await finish(s, "ok", output={"answer": 42})
    await finish(s, "gone", InstanceStatus.CANCELLED)
    await finish(s, "bad", InstanceStatus.FAILED, error="boom")
    for iid in ("ok", "gone", "bad"):
        await finish(s, iid, InstanceStatus.COMPLETED if iid == "ok" else InstanceStatus.FAILED)  # a second write
    await flush(s)
    names = {iid: [decode_event(d)[0] for _, d in await s.read_events(iid)] for iid in ("ok", "gone", "bad")}
    assert names == {
        "ok": ["workflow.started", "workflow.completed"],
        "gone": ["workflow.started", "workflow.cancelled"],
        "bad": ["workflow.started", "workflow.failed"],
    }
    (_, data), = (await s.read_events("ok"))[-1:]
    assert decode_event(data) == ("workflow.completed", "ok", "wf", {"output": {"answer": 42}})
    _, _, _, fields = decode_event((await s.read_events("bad"))[-1][1])
    assert fields["error"] == "boom" and fields["status"] == "failed"


async def test_an_instance_created_finished_gets_its_terminal_event(s: Store) -> None:
    await s.create_instance(make_instance("done", status=InstanceStatus.COMPLETED, output=7))
    events = await s.read_events("done")
    assert [decode_event(d) for _, d in events] == [("workflow.completed", "done", "wf", {"output": 7})]


# -- external jobs -----------------------------------------------------------


async def test_a_job_is_queued_once_claimed_taken_over_and_finished(s: Store, a: Owner, b: Owner) -> None:
    await s.create_instance(make_instance("i", queue=None, status=InstanceStatus.RUNNING))
    job = make_job("i", "s#1")
    assert await s.enqueue_job(job)
    assert not await s.enqueue_job(attrs.evolve(job, args=(2,)))
    assert await s.get_jobs() == [(job, None)]
    assert await s.claim_jobs(a, ["gpu"], 10) == [job]
    assert await s.get_jobs("i") == [(job, a.id)]
    assert await s.claim_jobs(b, ["gpu"], 10) == []  # a is alive
    assert not await s.enqueue_job(job)  # held: still not queued again
    await s.release(a.id)
    assert await s.claim_jobs(b, ["gpu"], 10) == [job]
    assert await s.get_jobs("i") == [(job, b.id)]
    clock = await s.signal_clock()
    assert not await s.finish_job(job, a.id, "late")
    assert await s.peek_signal("i", job_signal("s#1")) is None
    assert await s.finish_job(job, b.id, {"ok": 1})
    seq_payload = await s.peek_signal("i", job_signal("s#1"))
    assert seq_payload is not None and seq_payload[1] == {"ok": 1}
    assert await s.signal_clock() != clock
    assert await s.get_jobs() == []
    assert not await s.finish_job(job, b.id, "twice")


async def test_claim_jobs_takes_its_queues_in_order_up_to_the_limit(s: Store, a: Owner) -> None:
    jobs = [make_job("i", f"s#{n}", "cpu" if n % 2 else "gpu") for n in range(5)]
    for job in jobs:
        assert await s.enqueue_job(job)
    assert await s.claim_jobs(a, ["cpu"], 1) == [jobs[1]]
    assert await s.claim_jobs(a, ["cpu", "gpu"], 3) == [jobs[3], jobs[0], jobs[2]]
    assert await s.claim_jobs(a, ["cpu"], 5) == []  # own jobs are not taken again
    assert await s.claim_jobs(a, ["gpu"], 0) == []
    assert [h for _, h in await s.get_jobs()] == [a.id, a.id, a.id, a.id, None]


async def test_jobs_of_an_instance_are_dropped_when_it_finishes(s: Store, a: Owner, b: Owner) -> None:
    for iid in ("i", "j"):
        await s.create_instance(make_instance(iid, queue=None, status=InstanceStatus.RUNNING))
    held, waiting, other = make_job("i", "s#1"), make_job("i", "t#1"), make_job("j", "s#1")
    for job in (held, waiting, other):
        await s.enqueue_job(job)
    assert await s.claim_jobs(a, ["gpu"], 1) == [held]
    await finish(s, "i", InstanceStatus.FAILED, error="boom")
    assert await s.get_jobs() == [(other, None)]
    assert await s.get_jobs("i") == []
    assert not await s.finish_job(held, a.id, "late")
    assert await s.peek_signal("i", job_signal("s#1")) is None
    assert await s.claim_jobs(b, ["gpu"], 10) == [other]


# -- the worker registry -------------------------------------------------------


async def test_workers_register_what_they_serve(s: Store, a: Owner, b: Owner) -> None:
    assert await s.known_workflows() == [] and await s.servers() == {}
    await s.register_worker(a, ["w2", "w1"], ["q"], ["gpu"])
    await s.register_worker(b, ["w3", "w1"], [], [])
    assert await s.known_workflows() == ["w1", "w2", "w3"]
    assert await s.servers() == {
        a.id: {"workflows": ["w1", "w2"], "queues": ["q"], "jobs": ["gpu"]},
        b.id: {"workflows": ["w1", "w3"], "queues": [], "jobs": []},
    }
    lease = await s.get_lease("nothing")
    assert lease is None
    await s.release(a.id)
    assert list(await s.servers()) == [b.id]
    assert await s.known_workflows() == ["w1", "w2", "w3"]  # known for good
    await s.register_worker(b, ["w4"], ["r"], [])  # the last registration wins
    assert await s.servers() == {b.id: {"workflows": ["w4"], "queues": ["r"], "jobs": []}}
    assert await s.known_workflows() == ["w1", "w2", "w3", "w4"]


async def test_events_survive_a_transaction_run_again_as_the_map_grows(tmp_path: Path) -> None:
    """A drain of buffered events in a batch that is run again (the map was full) writes them, once."""
    from durable._model.eventlog import encode_event

    store = LMDBStore(tmp_path / "s", map_size=1 << 20)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await store.create_instance(make_instance("i1"))
            for n in range(60):
                store.append_event("i1", encode_event("workflow.progress", "i1", "wf", {"progress": n}))
                await store.put_step("i1", StepResult(step_name=f"s{n}", status=StepStatus.COMPLETED, key=f"s{n}",
                                                      output=b"x" * 200_000))
            got = await store.read_events("i1", 0, 1000)
            assert [decode_event(d)[3]["progress"] for _, d in got] == list(range(60))
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def test_a_claimed_instance_never_started_goes_back_to_its_queue_when_its_owner_leaves(
        s: Store, a: Owner, b: Owner) -> None:
    """An engine that stops between a claim and the run's start must not strand the instance (nor its slot)."""
    await s.register_queue(Queue("q", concurrency=1))
    await s.create_instance(make_instance("i1"))
    await s.create_instance(make_instance("i2"))
    assert (await take(s, a))[0] == ["i1"]
    await s.release(a.id)  # a clean stop: its owner record goes
    assert await s.queue_depths("q") == (2, 0)  # i1 is waiting again, and its slot is free
    assert await s.get_lease("i1") is None
    assert await s.claim(["i1"], b) == []  # it waits in its queue: a worker's claim takes it, not a take-over
    assert (await take(s, b))[0] == ["i2"]  # queued again, it is behind i2 now


async def test_an_entry_of_a_finished_instance_never_holds_a_slot(s: Store, a: Owner) -> None:
    await s.create_instance(make_instance("i1"))
    inst = await s.get_instance("i1", steps=False)
    assert inst is not None
    await s.update_instance(attrs.evolve(inst, status=InstanceStatus.COMPLETED))  # leaves the queue
    assert await s.queue_depths("q") == (0, 0)
    assert (await take(s, a))[0] == []


async def test_a_delayed_instance_waits_apart_until_due_and_leaves_when_cancelled(s: Store, a: Owner) -> None:
    await s.create_instance(make_instance("late", not_before=ts(100)))
    await s.create_instance(make_instance("later", not_before=ts(200)))
    assert await s.queue_depths("q") == (2, 0)
    assert await take(s, a, at=50) == ([], ts(100))  # nothing due: the earliest time it may take one
    assert await take(s, a, at=150) == (["late"], ts(200))
    inst = await s.get_instance("later", steps=False)
    assert inst is not None
    await s.update_instance(attrs.evolve(inst, status=InstanceStatus.CANCELLED))
    assert await s.queue_depths("q") == (0, 1)
    assert await take(s, a, at=300) == ([], None)


async def test_the_earliest_due_time_is_over_every_queue_served(s: Store, a: Owner) -> None:
    await s.create_instance(make_instance("q-late", not_before=ts(300)))
    await s.create_instance(make_instance("r-late", queue="r", not_before=ts(200)))
    await s.create_instance(make_instance("r-now", queue="r"))
    assert await s.claim_queued(a, [("q", None), ("r", None)], None, None, ts(100)) == (["r-now"], ts(200))
    assert await s.claim_queued(a, [("q", None), ("r", None)], None, None, ts(250)) == (["r-late"], ts(300))


async def test_the_unfinished_instances_but_those_waiting_in_a_queue_are_read_without_them(
        s: Store, a: Owner) -> None:
    """get_running_instances(waiting=False), a worker's first look at orphans: not what waits for a claim."""
    await s.create_instance(make_instance("waits"))
    await s.create_instance(make_instance("delayed", not_before=ts(100)))
    await s.create_instance(make_instance("claimed"))
    await s.create_instance(make_instance("owned"), owner=a)  # pending with an owner: never queued
    await s.create_instance(make_instance("direct", queue=None))
    await s.create_instance(make_instance("running", status=InstanceStatus.RUNNING))
    await s.create_instance(make_instance("done", queue=None, status=InstanceStatus.COMPLETED))
    assert (await s.claim_queued(a, [("q", None)], None, 1, ts(0)))[0] == ["waits"]  # the oldest
    every = ["waits", "delayed", "claimed", "owned", "direct", "running"]
    assert sorted(i.id for i in await s.get_running_instances(steps=False)) == sorted(every)
    # "waits" was claimed (in flight now); "claimed" and "delayed" wait
    assert sorted(i.id for i in await s.get_running_instances(steps=False, waiting=False)) == \
        ["direct", "owned", "running", "waits"]
    await s.release(a.id)  # a leaves before it started "waits" or "owned": both go back in their queue
    assert sorted(i.id for i in await s.get_running_instances(waiting=False)) == ["direct", "running"]
