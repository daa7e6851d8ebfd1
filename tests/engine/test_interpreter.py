"""The builder interpreter: tasks, pass, choice, loops and parallel states on a running engine."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

from durable import Engine, InstanceStatus, StepStatus, When, workflow

from support import run_registered


def _jobs(engine: Engine, **fns: Any) -> None:
    for name, fn in fns.items():
        engine.jobs.register(name, fn)


async def test_task_input_output_and_context(engine: Engine) -> None:
    """input(ctx) feeds the job, output(result, ctx) shapes the step output, ctx sees earlier steps."""
    seen: dict[str, Any] = {}

    async def double(x: int) -> int:
        return x * 2

    def check(ctx: Any) -> int:
        seen["input"] = ctx.input
        seen["get"] = ctx.get_step_result("a")
        seen["missing"] = ctx.get_step_result("nope", "dflt")
        seen["instance"] = ctx.instance.id
        return ctx.steps["a"]["v"]

    _jobs(engine, double=double)
    g = (
        workflow("ctx")
        .task("a", job="double", input=lambda ctx: ctx.input["n"], output=lambda r, ctx: {"v": r})
        .task("b", job="double", input=check)
        .build()
    )
    inst = await run_registered(engine, g, {"n": 5})
    assert inst.status == "completed"
    assert inst.output == 20
    assert inst.step_results["a"].output == {"v": 10}
    assert inst.step_results["a"].input == 5
    assert seen == {"input": {"n": 5}, "get": {"v": 10}, "missing": "dflt", "instance": inst.id}


async def test_sync_job_runs_in_a_worker_thread(engine: Engine) -> None:
    """A sync job never runs on the trio thread."""
    main = threading.current_thread()
    threads: list[threading.Thread] = []

    def job(x: Any) -> str:
        threads.append(threading.current_thread())
        return "ok"

    _jobs(engine, job=job)
    inst = await run_registered(engine, workflow("sync").task("t", job="job").build())
    assert inst.output == "ok"
    assert threads and threads[0] is not main


async def test_callable_job_without_registration(engine: Engine) -> None:
    """A task may name a callable directly instead of a registered job name."""

    async def hello(x: str) -> str:
        return f"hello {x}"

    inst = await run_registered(engine, workflow("direct").task("t", job=hello).build(), "bob")
    assert inst.output == "hello bob"


async def test_a_missing_job_is_found_at_start_naming_it(engine: Engine) -> None:
    """A task whose job is not registered: start() raises JobNotFound naming the job, the known jobs and
    how to register one, before anything is written (it is not found halfway through a run)."""
    import pytest

    from durable import JobNotFound

    _jobs(engine, other=lambda x: x)
    graph = workflow("nojob").task("t", job="other").task("u", job="ghost").build()
    with pytest.raises(JobNotFound, match=r"'ghost' \(registered: other\).*jobs=") as info:
        await engine.workflows.start(graph, 1, id="nojob-1")
    assert info.value.workflow == "nojob"
    assert await engine.store.get_instance("nojob-1") is None
    engine.jobs.register("ghost", lambda x: x + 1)
    inst = await engine.workflows.wait(await engine.workflows.start(graph, 1, id="nojob-1"))
    assert inst.status == "completed" and inst.output == 2


async def test_pass_transform_result_and_end(engine: Engine) -> None:
    """Pass states produce transform(ctx) or a static result; end() finishes the workflow."""
    g = (
        workflow("passes")
        .pass_("init", result={"status": "initialized"})
        .pass_("summary", transform=lambda ctx: {"in": ctx.input, "init": ctx.steps["init"]})
        .end("done")
        .build()
    )
    inst = await run_registered(engine, g, 7)
    assert inst.status == "completed"
    assert inst.step_results["summary"].output == {"in": 7, "init": {"status": "initialized"}}
    assert inst.output is None
    assert inst.step_results["init"].step_type == "pass"


@pytest.mark.parametrize(("amount", "expected"), [(5000, "large"), (50, "priority"), (1, "standard")])
async def test_choice_first_match_wins_then_default(engine: Engine, amount: int, expected: str) -> None:
    """Choice rules are tried in order; the first true one wins; otherwise the default."""
    g = (
        workflow("route")
        .choice("decide", choices=[
            When(lambda ctx: ctx.input["amount"] > 1000, "large"),
            When(lambda ctx: ctx.input["amount"] > 10, "priority"),
            When(lambda ctx: True, "priority"),
        ][: 2 if expected != "priority" or amount > 10 else 3], default="standard")
        .pass_("large", result="large", end=True)
        .pass_("priority", result="priority", end=True)
        .pass_("standard", result="standard", end=True)
        .build()
    )
    inst = await run_registered(engine, g, {"amount": amount})
    assert inst.output == expected
    assert inst.step_results["decide"].output == expected


async def test_choice_without_match_or_default_fails_clearly(engine: Engine) -> None:
    """No matching rule and no default fails the instance with NoChoiceMatched naming the state."""
    g = (
        workflow("stuck")
        .choice("decide", choices=[When(lambda ctx: False, "x")])
        .pass_("x", end=True)
        .build()
    )
    inst = await run_registered(engine, g)
    assert inst.status == "failed"
    assert inst.error_type == "NoChoiceMatched"
    assert "'decide'" in (inst.error or "") and "'stuck'" in (inst.error or "")


async def test_loop_through_choice_runs_a_state_several_times(engine: Engine) -> None:
    """A loop through a choice runs its task once per pass, each with its own checkpoint."""
    calls: list[int] = []

    async def inc(x: int) -> int:
        calls.append(x)
        return x + 1

    _jobs(engine, inc=inc)
    g = (
        workflow("loop")
        .pass_("start", result=0)
        .task("inc", job="inc", input=lambda ctx: ctx.steps.get("inc", 0))
        .choice("again", choices=[When(lambda ctx: ctx.steps["inc"] < 3, "inc")], default="done")
        .end("done")
        .build()
    )
    inst = await run_registered(engine, g)
    assert inst.status == "completed"
    assert calls == [0, 1, 2]
    steps = await engine.store.get_steps(inst.id)
    assert {"inc#0", "inc#1", "inc#2"} <= set(steps)
    assert inst.step_results["inc"].output == 3


async def test_parallel_output_keyed_by_branch(engine: Engine) -> None:
    """A parallel state's output is a dict keyed by branch name, branches running at once."""
    started: list[str] = []
    both = trio.Event()

    async def job(name: str) -> str:
        started.append(name)
        if len(started) == 2:
            both.set()
        await both.wait()  # would deadlock if branches ran one after the other
        return name.upper()

    _jobs(engine, job=job)
    g = (
        workflow("par")
        .parallel("fan", branches=[
            workflow.branch("a").task("ta", job="job", input=lambda ctx: "a").build(),
            workflow.branch("b").task("tb1", job="job", input=lambda ctx: "b")
            .pass_("tb2", transform=lambda ctx: ctx.steps["tb1"] + "!").build(),
        ])
        .pass_("after", transform=lambda ctx: ctx.steps["fan"])
        .build()
    )
    inst = await run_registered(engine, g)
    assert inst.status == "completed", inst.error
    assert inst.output == {"a": "A", "b": "B!"}
    steps = await engine.store.get_steps(inst.id)
    assert "fan#0/a/ta#0" in steps and "fan#0/b/tb2#0" in steps


async def test_parallel_fail_fast_cancels_siblings(engine: Engine, autojump_clock: Any) -> None:
    """fail-fast: the first failing branch cancels the others and fails the instance."""
    finished: list[str] = []

    async def slow(x: Any) -> None:
        await trio.sleep_forever()  # only a cancellation ends it
        finished.append("slow")

    async def boom(x: Any) -> None:
        raise ValueError("boom")

    _jobs(engine, slow=slow, boom=boom)
    g = (
        workflow("ff")
        .parallel("p", branches=[
            workflow.branch("slow").task("s", job="slow").build(),
            workflow.branch("bad").task("b", job="boom").build(),
        ], on_error="fail-fast")
        .build()
    )
    inst = await run_registered(engine, g)
    assert inst.status == "failed"
    assert "boom" in (inst.error or "")
    assert finished == []
    assert inst.step_results["s"].status == StepStatus.RUNNING  # cancelled mid-attempt, never completed


async def test_parallel_wait_all_collects_every_error(engine: Engine, autojump_clock: Any) -> None:
    """wait-all: every branch finishes; the error carries each failed branch's error."""
    finished: list[str] = []

    async def slow(x: Any) -> str:
        await trio.sleep(5)
        finished.append("slow")
        return "ok"

    async def boom(x: Any) -> None:
        raise ValueError(f"boom {x}")

    _jobs(engine, slow=slow, boom=boom)
    g = (
        workflow("wa")
        .parallel("p", on_error="wait-all", branches=[
            workflow.branch("slow").task("s", job="slow").build(),
            workflow.branch("b1").task("x1", job="boom", input=lambda c: 1).build(),
            workflow.branch("b2").task("x2", job="boom", input=lambda c: 2).build(),
        ])
        .build()
    )
    inst = await run_registered(engine, g)
    assert inst.status == "failed"
    assert inst.error_type == "ParallelFailed"
    assert finished == ["slow"]
    assert "b1" in (inst.error or "") and "b2" in (inst.error or "") and "boom 2" in (inst.error or "")


async def test_get_instances_by_name_and_status(engine: Engine) -> None:
    """get_instances filters by workflow name and status."""
    _jobs(engine, ok=lambda x: x)

    async def bad(x: Any) -> None:
        raise RuntimeError("no")

    _jobs(engine, bad=bad)
    good = workflow("good").task("t", job="ok").build()
    failing = workflow("failing").task("t", job="bad").build()
    for g in (good, failing):
        engine.workflows.register(g)
    ids = [await engine.workflows.start("good", i) for i in range(3)]
    fid = await engine.workflows.start("failing", 0)
    for i in [*ids, fid]:
        await engine.workflows.wait(i)
    assert [i.id for i in await engine.workflows.get_instances("good")] == ids
    assert [i.id for i in await engine.workflows.get_instances("good", "completed")] == ids
    assert await engine.workflows.get_instances("good", InstanceStatus.FAILED) == []
    assert [i.id for i in await engine.workflows.get_instances("failing", "failed")] == [fid]


async def test_parallel_step_result_is_keyed_like_ctx(engine: Engine) -> None:
    """The parallel's stored output and event output are the dict keyed by branch that ctx.steps sees."""
    _jobs(engine, one=lambda x: 1, two=lambda x: 2)
    outputs: list[Any] = []
    engine.events.on("workflow.step.completed", lambda e: outputs.append(e.output) if e.step_name == "p" else None)
    g = (
        workflow("keyed")
        .parallel("p", branches=[workflow.branch("x").task("t1", job="one").build(),
                                 workflow.branch("y").task("t2", job="two").build()])
        .pass_("after", transform=lambda ctx: ctx.steps["p"])
        .build()
    )
    inst = await run_registered(engine, g)
    assert inst.step_results["p"].output == inst.output == outputs[0] == {"x": 1, "y": 2}
