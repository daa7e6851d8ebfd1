"""Child process for the kill-anywhere torture test (tests/crash/torture.py, tests/crash/test_torture.py).

    python tests/crash/torture_child.py STORE LOG MODE [COPIES]

MODE is ``start`` or ``resume``. Both register the same fixed mix of workflows
(decorator and builder front-ends) on an LMDB store at STORE and call
``resume()``; ``start`` then starts the fixed set of instances with fixed ids
(``start`` with an id is idempotent, so a start child killed half-way through
can simply be followed by another one). The child then waits for every
instance to finish and exits 0.

Lines appended to LOG (each written with open/append/flush/fsync):

- ``child PID MODE``: the engine is open and everything is registered.
- ``run INSTANCE KEY ATTEMPT``: a step body executed (written before it returns or raises).
- ``done INSTANCE STEP_NAME KEY``: from the ``workflow.step.completed`` listener,
  i.e. after the step's checkpoint; KEY is the key of the step body that ran in
  this trio task just before (``-`` for pass / choice / parallel steps, which
  have no body of ours).
- ``started``: every instance of the fixed set exists in the store.
- ``finished INSTANCE STATUS``, then ``exit``.

Every engine event is also appended, as one JSON object per line, to the side
log ``LOG.events`` (same open/append/fsync discipline), from a ``"*"``
listener: ``{"ev": NAME, "iid": INSTANCE, ...}`` with the event's step name,
step type, progress, completed_steps, total_steps, attempt(s), max_attempts,
and, for ``workflow.completed``, its output. Events carry no checkpoint key, so
the child adds what it knows: a task's ``step.completed`` line gets the key of
the body that just returned in that trio task (as the ``done`` line), and a
task's ``step.started`` line gets a ``seq`` number that the step body, when it
runs in the same trio task, resolves with a ``{"ev": "key", "seq": N, "key": KEY}``
line. The parent (tests/crash/torture.py) checks the events of each instance's final
run against the store.

Outputs depend only on the instance inputs, never on timing, attempts or
crashes, so the parent compares them with a crash-free reference run.
"""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

import trio

import durable
from durable import Catch, Engine, Retry, StepFunction, TaskState, When, current_step, parallel, step, workflow

# -- logging -----------------------------------------------------------------

LOG_PATH: str = ""
_FDS: dict[str, int] = {}


def _append(path: str, line: str) -> None:
    """Append one line with a single write(2), then fsync."""
    fd = _FDS.get(path)
    if fd is None:
        fd = _FDS[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\n").encode())
    os.fsync(fd)


def log(line: str) -> None:
    _append(LOG_PATH, line)


def events_path(log_path: str) -> str:
    """Where the child appends the engine events (tests/crash/torture.py reads it)."""
    return log_path + ".events"


def log_event(record: dict[str, Any]) -> None:
    _append(events_path(LOG_PATH), json.dumps(record, default=repr, separators=(",", ":")))


# Key of the step body that last returned successfully in each trio task; the
# step.completed listener runs synchronously in the same task right after the
# checkpoint, and pops it.
LAST_KEY: dict[Any, str] = {}
# Sequence number of the task step.started event line not yet resolved to a
# key, per trio task: the step body that runs next in that task resolves it.
PENDING_START: dict[Any, int] = {}
EVENT_SEQ = [0]


async def touch(fail: str | None = None) -> None:
    """The body shared by every step: jitter, log the execution, jitter, maybe fail."""
    await trio.sleep(random.uniform(0, 0.003))
    info = current_step()
    assert info is not None, "touch() called outside a step"
    seq = PENDING_START.pop(trio.lowlevel.current_task(), None)
    if seq is not None:
        log_event({"ev": "key", "seq": seq, "iid": info.instance_id, "key": info.key})
    log(f"run {info.instance_id} {info.key} {info.attempt}")
    await trio.sleep(random.uniform(0, 0.001))  # widen the run-line -> checkpoint window
    if fail is not None:
        raise ValueError(fail)
    LAST_KEY[trio.lowlevel.current_task()] = info.key


# -- decorator steps ---------------------------------------------------------------


@step
async def add(acc: int, i: int) -> int:
    await touch()
    return acc + i


@step
async def mul(x: int, k: int) -> int:
    await touch()
    return x * k


@step
async def label(kind: str, x: int) -> str:
    await touch()
    return f"{kind}:{x}"


@step(retry=Retry(max_attempts=4, interval=0.01))
async def flaky(x: int) -> int:
    info = current_step()
    assert info is not None
    # Fails its first two attempts, whatever happened before (crashes included).
    await touch(fail=f"flaky attempt {info.attempt}" if info.attempt <= 2 else None)
    return x * 10


@step
async def boom(x: int) -> int:
    await touch(fail=f"boom {x}")
    return x  # never reached


@step
async def heads(x: int) -> int:
    await touch()
    return x + 1


@step
async def tails(x: int) -> int:
    await touch()
    return x + 1


# -- decorator workflows -------------------------------------------------------------


@workflow(name="t-seq30")
async def seq30(n: int) -> int:
    acc = n
    for i in range(30):
        acc = await add(acc, i)
    return acc


async def branch_a(x: int) -> int:
    a = await add(x, 1)
    return await mul(a, 2)


async def branch_b(x: int) -> int:
    a = await mul(x, 3)
    b = await add(a, 4)
    return await add(b, 5)


async def branch_c(x: int) -> int:
    a = await add(x, 7)
    b = await add(a, 8)
    return await mul(b, 9)


@workflow(name="t-coin")
async def coin(x: int) -> int:
    """Branches on a checkpointed random value: a replay takes the side the first run took, so one
    side's step ever runs (the parent checks it); the output does not depend on the side."""
    first = await add(x, 1)
    if await durable.random() < 0.5:
        side = await heads(first)
    else:
        side = await tails(first)
    return await add(side, 2)


@workflow(name="t-par3")
async def par3(x: int) -> dict[str, Any]:
    results = await parallel(branch_a(x), branch_b(x), branch_c(x))
    total = await add(results[0] + results[1], results[2])
    return {"branches": results, "total": total}


@workflow(name="t-branchy")
async def branchy(x: int) -> dict[str, Any]:
    first = await add(x, 1)
    if first % 2 == 0:
        tag = await label("even", first)
    else:
        tag = await label("odd", first)
    acc = first
    for i in range(5):
        acc = await mul(acc + i, 2)
    return {"tag": tag, "acc": acc}


@workflow(name="t-retry")
async def retrying(x: int) -> dict[str, Any]:
    a = await add(x, 1)
    b = await flaky(a)
    c = await add(b, 2)
    return {"a": a, "b": b, "c": c}


@workflow(name="t-catch")
async def catching(x: int) -> dict[str, Any]:
    a = await add(x, 1)
    try:
        await boom(a)
        caught = "nothing"
    except ValueError as exc:
        caught = str(exc)
    b = await add(a, 2)
    c = await mul(b, 3)
    return {"caught": caught, "c": c}


@workflow(name="t-nap")
async def napping(x: int) -> dict[str, Any]:
    a = await add(x, 1)
    await durable.sleep(0.3)  # longer than the engine's suspend_after: unloads, then replays
    b = await add(a, 2)
    await durable.sleep(0.02)  # short: waits in memory
    return {"c": await mul(b, 3)}


@workflow(name="t-signal")
async def signalled(x: int) -> dict[str, Any]:
    a = await add(x, 1)
    first = await durable.wait_for_signal("first")  # unloads until it comes
    b = await add(a, first)
    second = await durable.wait_for_signal("second")
    return {"b": b, "c": await mul(b, second)}


@workflow(name="t-map")
async def mapping(x: int) -> dict[str, Any]:
    async def plus(i: int) -> int:  # an item may await several steps: its own checkpoint scope
        return await mul(await add(i, x), 2)

    doubled = await durable.map(plus, list(range(8)), concurrency=3)
    return {"sum": await add(sum(doubled), 0), "items": doubled}


@workflow(name="t-kid")
async def kid(x: int) -> int:
    a = await add(x, 5)
    return await mul(a, 2)


@workflow(name="t-parent")
async def parenting(x: int) -> dict[str, Any]:
    a = await add(x, 1)
    k = await kid(a)  # a child instance of its own, started once across crashes
    return {"k": k, "b": await add(k, 3)}


async def send_signals(engine: Engine, iid: str) -> None:
    """Every child sends the t-signal instances their two signals (payloads fixed, so duplicates are harmless)."""
    for name, payload in (("first", 10), ("second", 3)):
        try:
            await engine.workflows.signal(iid, name, payload)
        except durable.DurableError:
            return  # not created yet (a start child will), or finished


# -- builder workflow ------------------------------------------------------------


async def job_inc(data: dict[str, Any]) -> dict[str, Any]:
    await touch()
    return {"n": data["n"] + 1}


async def job_double(data: dict[str, Any]) -> dict[str, Any]:
    await touch()
    return {"n": data["n"] * 2}


async def job_boom(data: dict[str, Any]) -> dict[str, Any]:
    await touch(fail=f"boom {data['n']}")
    return data  # never reached


builder_wf = (
    workflow("t-builder")
    .task("prep", job="t-inc", input=lambda ctx: {"n": ctx.input["n"]})
    .task("risky", job="t-boom", input=lambda ctx: ctx.steps["prep"], retry=Retry(max_attempts=2, interval=0.01),
          catch=[Catch(["KeyError"], next="finish"), Catch(["ValueError"], next="route")], next="route")
    .choice(
        "route",
        choices=[When(lambda ctx: ctx.steps["prep"]["n"] % 2 == 0, "fan")],
        default="single",
    )
    .parallel(
        "fan",
        branches=[
            workflow.branch("left")
            .task("l1", job="t-inc", input=lambda ctx: {"n": ctx.input["n"]})
            .task("l2", job="t-double", input=lambda ctx: ctx.steps["l1"])
            .build(),
            workflow.branch("right")
            .task("r1", job="t-double", input=lambda ctx: {"n": ctx.input["n"]})
            .task("r2", job="t-inc", input=lambda ctx: ctx.steps["r1"])
            .task("r3", job="t-inc", input=lambda ctx: ctx.steps["r2"])
            .build(),
        ],
        next="finish",
    )
    .task("single", job="t-double", input=lambda ctx: ctx.steps["prep"], next="finish")
    .pass_(
        "finish",
        transform=lambda ctx: {"prep": ctx.steps["prep"], "fan": ctx.steps.get("fan"),
                               "single": ctx.steps.get("single"),
                               "caught": ctx.error.message if ctx.error is not None else None},
        end=True,
    )
    .build()
)


# The builder's waiting states: a durable wait, a signal wait, a child workflow.
waiting_wf = (
    workflow("t-builder-wait")
    .task("start", job="t-inc", input=lambda ctx: {"n": ctx.input["n"]})
    .wait("pause", seconds=0.3)  # longer than suspend_after: unloads, then replays
    .wait_for_signal("go", timeout=3600)
    .task("kid", workflow=kid, input=lambda ctx: ctx.steps["start"]["n"] + ctx.steps["go"])
    .map(
        "each",
        items=lambda ctx: [{"n": ctx.steps["kid"] + i} for i in range(5)],
        iterator=workflow.branch("item")
        .task("i1", job="t-inc", input=lambda ctx: ctx.input)
        .task("i2", job="t-double", input=lambda ctx: ctx.steps["i1"])
        .build(),
        max_concurrency=2,
    )
    .pass_("done", transform=lambda ctx: {"kid": ctx.steps["kid"], "go": ctx.steps["go"], "each": ctx.steps["each"]},
           end=True)
    .build()
)


# -- retry policies, for the parent's attempt checks ---------------------------------

STEP_FUNCTIONS: list[StepFunction[Any, Any]] = [add, mul, label, flaky, boom, heads, tails]


def max_attempts() -> dict[str, int]:
    """Step name -> its resolved max_attempts, for every task step of the mix."""
    out: dict[str, int] = {}
    for sf in STEP_FUNCTIONS:
        out[sf.name] = (sf.retry or Retry()).resolved().attempts
    for graph in (builder_wf, waiting_wf):
        for state in graph.walk():
            if isinstance(state, TaskState):
                out[state.name] = (state.retry or Retry()).merged_over(graph.default_retry).resolved().attempts
    return out


# -- the fixed set of instances ---------------------------------------------------

DECORATOR_WORKFLOWS = [seq30, par3, branchy, retrying, catching, napping, signalled, parenting, mapping, coin]


def instances(copies: int) -> list[tuple[Any, str, Any]]:
    """(workflow, instance id, input) for every instance of the fixed set."""
    out: list[tuple[Any, str, Any]] = []
    for k in range(copies):
        for fn in DECORATOR_WORKFLOWS:
            out.append((fn, f"{fn.name}-{k}", k))
        out.append(("t-builder", f"t-builder-{k}", {"n": k}))
        out.append(("t-builder-wait", f"t-builder-wait-{k}", {"n": k}))
    return out


async def main(store: str, mode: str, copies: int) -> None:
    async with Engine.open(store, suspend_after=0.1) as engine:
        engine.jobs.register("t-inc", job_inc)
        engine.jobs.register("t-double", job_double)
        engine.jobs.register("t-boom", job_boom)
        for fn in DECORATOR_WORKFLOWS:
            engine.workflows.register(fn)
        engine.workflows.register(kid)  # its instances are started by t-parent
        engine.workflows.register(builder_wf)
        engine.workflows.register(waiting_wf)

        def on_event(event: Any) -> None:
            task = trio.lowlevel.current_task()
            record = {k: v for k, v in event.to_dict().items()
                      if k not in ("name", "instance_id", "workflow_name", "input", "output", "error")}
            record = {"ev": event.name, "iid": event.instance_id, **record}
            if event.name == "workflow.completed":
                record["output"] = event.output
            if event.name == "workflow.step.completed":
                key = LAST_KEY.pop(task, "-")
                log(f"done {event.instance_id} {event.step_name} {key}")
                if event.step_type == "task":
                    record["key"] = None if key == "-" else key
            elif event.name == "workflow.step.started" and event.step_type == "task":
                EVENT_SEQ[0] += 1
                record["seq"] = EVENT_SEQ[0]
                PENDING_START[task] = EVENT_SEQ[0]
            log_event(record)

        engine.events.on("*", on_event)
        log(f"child {os.getpid()} {mode}")
        await engine.workflows.resume()
        todo = instances(copies)
        if mode == "start":
            for wf, iid, arg in todo:
                await engine.workflows.start(wf, arg, id=iid)
            log("started")
        for wf, iid, _ in todo:
            if wf is signalled:
                await send_signals(engine, iid)
            elif wf == "t-builder-wait":
                try:
                    await engine.workflows.signal(iid, "go", 7)
                except durable.DurableError:
                    pass  # not created yet (a start child will), or finished
        for _, iid, _ in todo:
            inst = await engine.workflows.wait(iid)
            log(f"finished {iid} {inst.status.value if hasattr(inst.status, 'value') else inst.status}")
    log("exit")


if __name__ == "__main__":
    STORE, LOG_PATH, MODE = sys.argv[1:4]
    COPIES = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    if MODE not in ("start", "resume"):
        sys.exit(f"bad mode {MODE!r}")
    trio.run(main, STORE, MODE, COPIES)
