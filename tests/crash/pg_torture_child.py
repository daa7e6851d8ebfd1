"""Workers of the PostgreSQL torture (tests/crash/pg_torture.py), forked from a zygote.

    python tests/crash/pg_torture_child.py URL SCHEMA LOG ERRDIR

The process imports durable, trio and psycopg once, then forks one worker per
line ``spawn`` read on stdin (a fork costs milliseconds; a new interpreter
half a second of CPU, which would cap the kill rate on 2 cores). It answers
``pid PID`` for each fork, and ``exit PID STATUS`` when it reaps one
(``STATUS``: the negative signal number, or the exit code). Each worker is a
process of its own (its own pid, start time and database connections): SIGKILL
ends it as it ends any process.

A worker: ``Engine.open(URL, schema=SCHEMA)`` serving the queue ``tq``,
running ``chain`` instances (steps s0..s5). Lines appended to LOG, one
``write()`` each on an ``O_APPEND`` descriptor, then ``fsync``:

- ``ready PID``: its engine serves;
- ``start PID IID STEP ATTEMPT``: a step body began;
- ``end PID IID STEP``: it is about to return (its checkpoint not written yet);
- ``done PID IID STEP``: ``workflow.step.completed``: its checkpoint is committed.

Its stderr goes to ERRDIR/PID.err.
"""

from __future__ import annotations

import functools
import os
import random
import select
import signal
import sys

import trio

from durable import Engine, Queue, current_step, step, workflow

STEPS = [f"s{k}" for k in range(6)]
QUEUE = Queue("tq")
_fd: int | None = None


def log(*fields: object) -> None:
    assert _fd is not None
    os.write(_fd, (" ".join([fields[0], str(os.getpid()), *map(str, fields[1:])]) + "\n").encode())  # type: ignore[list-item]
    os.fsync(_fd)


async def body(name: str, value: str) -> str:
    info = current_step()
    assert info is not None
    log("start", info.instance_id, name, info.attempt)
    await trio.sleep(random.uniform(0, 0.008))
    log("end", info.instance_id, name)
    return f"{value}+{name}"


@step
async def s0(v: str) -> str:
    return await body("s0", v)


@step
async def s1(v: str) -> str:
    return await body("s1", v)


@step
async def s2(v: str) -> str:
    return await body("s2", v)


@step
async def s3(v: str) -> str:
    return await body("s3", v)


@step
async def s4(v: str) -> str:
    return await body("s4", v)


@step
async def s5(v: str) -> str:
    return await body("s5", v)


@workflow(name="chain")
async def chain(n: int) -> str:
    v = str(n)
    for fn in (s0, s1, s2, s3, s4, s5):
        v = await fn(v)
    return v


def expected(n: int) -> str:
    return "+".join([str(n), *STEPS])


async def worker(url: str, schema: str) -> None:
    async with Engine.open(url, schema=schema, lease_ttl=5.0, poll_interval=0.05, suspend_after=5.0) as engine:
        engine.queues.register(QUEUE)
        engine.workflows.register(chain)
        engine.events.on("workflow.step.completed", lambda e: log("done", e.instance_id, e.step_name))
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(engine.serve, queues=[QUEUE.name]))
            log("ready")


def _child(url: str, schema: str, log_path: str, errdir: str) -> None:
    global _fd
    err = os.open(os.path.join(errdir, f"{os.getpid()}.err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(err, 2)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    random.seed()
    _fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    code = 0
    try:
        trio.run(worker, url, schema)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def zygote(url: str, schema: str, log_path: str, errdir: str) -> None:
    out = sys.stdout
    buf = b""
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            out.write(f"exit {pid} {code}\n")
            out.flush()
        ready, _, _ = select.select([0], [], [], 0.005)
        if not ready:
            continue
        data = os.read(0, 4096)
        if not data:
            return  # the harness is gone
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip() == b"spawn":
                pid = os.fork()
                if pid == 0:
                    _child(url, schema, log_path, errdir)
                out.write(f"pid {pid}\n")
                out.flush()


if __name__ == "__main__":
    zygote(*sys.argv[1:5])
