"""Child process for tests/stores/test_leases.py: several processes on one LMDB store.

argv: MODE STORE LOG [N]

- ``seed N``: start N instances ``i-000``...; step ``a`` blocks forever (the
  parent SIGKILLs this process once every ``a`` has started).
- ``resume``: call ``resume(limit=10)`` until it takes nothing, print ``resumed K``.
- ``start N``: start N instances (ids ``w-000``...), whose step ``b`` sleeps
  ``B_DELAY`` seconds; print ``ready`` once every ``a`` ran; wait for them all.
- ``worker N``: call ``resume()`` every 50 ms, printing ``tick K`` (K: how many it
  took), until the N ``w-`` instances are finished; print ``done``.
- ``run ID``: start instance ID (``c`` runs after a 1 s ``b``), wait, print its status.

Every step execution appends ``PID STEP INSTANCE`` to LOG.
"""

from __future__ import annotations

import os
import sys

import trio

from durable import Engine, current_step, step, workflow

MODE, STORE, LOG = sys.argv[1:4]
N = int(sys.argv[4]) if len(sys.argv) > 4 and MODE != "run" else 0
B_DELAY = float(os.environ.get("B_DELAY", "0"))


def log(name: str) -> None:
    instance = current_step().idempotency_key.split("/")[0]
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {name} {instance}\n".encode())
    finally:
        os.close(fd)


@step
async def a(i: int) -> int:
    log("a")
    if MODE == "seed":
        await trio.sleep_forever()
    return i


@step
async def b(i: int) -> int:
    log("b")
    await trio.sleep(B_DELAY)
    return i * 2


@step
async def c(i: int) -> int:
    log("c")
    return i + 1


@workflow(name="leased")
async def leased(i: int) -> int:
    return await b(await a(i))


@workflow(name="three")
async def three(i: int) -> int:
    return await c(await b(await a(i)))


def say(line: str) -> None:
    print(line, flush=True)


async def main() -> None:
    async with Engine.open(STORE, lease_ttl=float(os.environ.get("LEASE_TTL", "30"))) as engine:
        engine.workflows.register(leased)
        engine.workflows.register(three)
        wf = engine.workflows
        if MODE == "seed":
            for i in range(N):
                await wf.start(leased, i, id=f"i-{i:03d}")
            say("started")
            await trio.sleep_forever()
        elif MODE == "resume":
            total = 0
            while taken := await wf.resume(limit=10):  # in turns, as workers sharing a store do
                total += len(taken)
                for instance_id in taken:
                    await wf.wait(instance_id)
            say(f"resumed {total}")
        elif MODE == "start":
            ids = [await wf.start(leased, i, id=f"w-{i:03d}") for i in range(N)]
            say("ready")
            for instance_id in ids:
                await wf.wait(instance_id)
        elif MODE == "worker":
            while True:
                taken = await wf.resume()
                say(f"tick {len(taken)}")
                pending = [await wf.get_instance(f"w-{i:03d}") for i in range(N)]
                if all(p is not None and p.finished for p in pending):
                    break
                await trio.sleep(0.05)
            say("done")
        elif MODE == "run":
            instance_id = await wf.start(three, 1, id=sys.argv[4])
            say("started")
            say((await wf.wait(instance_id)).status.value)


if __name__ == "__main__":
    trio.run(main)
