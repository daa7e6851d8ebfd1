"""Child of tests/crash/test_postgres_fencing.py: one engine of the fencing test, on a PostgreSQL schema.

    python tests/crash/pg_fence_child.py URL SCHEMA LOG ROLE(first|second) LEASE_TTL

``first`` calls its host ``paused-host`` (``socket.gethostname``, in this
process only) so that the other engine, on the real host name, judges it as
an engine on another host: by its heartbeat's age on the database's clock
against its ``lease_ttl`` (an engine on the same host is judged by its pid,
and a stopped process is alive). It starts the workflow ``fenced`` (s1, s2,
s3) and holds inside s2 for ``HOLD`` seconds: the test SIGSTOPs it there.

``second`` (the real host) takes the instance over as soon as the store
counts ``first`` gone (``resume()`` until it returns the instance), and runs
it to the end.

Both log, one fsynced line each: ``ready ROLE``, ``run STEP ROLE`` (a step
body began), ``end STEP ROLE``, every fenced write of the store
(``write METHOD DETAIL ok`` or ``refused METHOD DETAIL LeaseLost``; wrapped on
this process's store object), ``finished STATUS OUTPUT`` (``wait()``
returned) and ``exit``. Step results name the role that ran them, so the
stored output tells whose progress it is.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

URL, SCHEMA, LOG, ROLE, TTL = sys.argv[1:6]
if ROLE == "first":
    socket.gethostname = lambda: "paused-host"  # type: ignore[assignment]

import trio  # noqa: E402

from durable import Engine, step, workflow  # noqa: E402
from durable.stores._lease import LeaseLost  # noqa: E402

IID = "fence-1"
HOLD = 1.0  # seconds ``first`` sleeps in s2 (it is stopped there, for longer)


def log(line: str) -> None:
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def body(name: str, value: str) -> str:
    log(f"run {name} {ROLE}")
    if name == "s2" and ROLE == "first":
        # Shielded: once SIGCONT resumes this process, its heartbeat (or the successor's end, notified) may
        # cancel the run before this sleep's end is seen; the body must return all the same, so that its
        # late checkpoint is attempted, and refused. (Uncancellable work that ends late, as a request in
        # flight does.)
        with trio.CancelScope(shield=True):
            await trio.sleep(HOLD)
    log(f"end {name} {ROLE}")
    return f"{value}+{name}:{ROLE}"


@step
async def s1(v: str) -> str:
    return await body("s1", v)


@step
async def s2(v: str) -> str:
    return await body("s2", v)


@step
async def s3(v: str) -> str:
    return await body("s3", v)


@workflow(name="fenced")
async def fenced(v: str) -> str:
    return await s3(await s2(await s1(v)))


def instrument(store: Any) -> None:
    """Log the outcome of every write fenced by this engine's lease."""
    for name in ("put_step", "update_instance", "take_signal"):
        real = getattr(store, name)

        def wrap(real: Any = real, name: str = name) -> Any:
            async def fenced_write(*args: Any, **kwargs: Any) -> Any:
                what = getattr(args[1], "key", None) if name == "put_step" else getattr(args[0], "status", "")
                what = getattr(what, "value", what)
                durable_ = kwargs.get("durable", True)
                try:
                    out = await real(*args, **kwargs)
                except LeaseLost:
                    log(f"refused {name} {what} LeaseLost")
                    raise
                if durable_:
                    log(f"write {name} {what} ok")
                return out

            return fenced_write

        setattr(store, name, wrap())


async def main() -> None:
    async with Engine.open(URL, schema=SCHEMA, lease_ttl=float(TTL), poll_interval=0.1) as engine:
        engine.workflows.register(fenced)
        instrument(engine.store)
        log(f"ready {ROLE}")
        if ROLE == "first":
            await engine.workflows.start(fenced, "x", id=IID)
        else:
            with trio.fail_after(30):
                while IID not in await engine.workflows.resume():
                    await trio.sleep(0.05)
            log("took second")
        inst = await engine.workflows.wait(IID)
        log(f"finished {inst.status.value} {json.dumps(inst.output)}")
    log("exit")


trio.run(main)
