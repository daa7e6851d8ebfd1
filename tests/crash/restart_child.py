"""Workflows and child process for tests/crash/test_restart_time.py: time across a real SIGKILL.

    python tests/crash/restart_child.py STORE LOG SCENARIO

The child runs SCENARIO on an LMDB store at STORE (real clock) until the parent
SIGKILLs it (or it SIGKILLs itself); the parent then resumes the store in a
new engine, in its own process under a ``MockClock``. Both sides import the
workflows from this module under the one name ``restart_child`` (the script
re-imports itself), so the function names checkpoints record match.

Lines appended to LOG (open/append/fsync, so a SIGKILL never loses one):

- ``run INSTANCE STEP ATTEMPT TIME``: a step body started; TIME is
  ``trio.current_time()`` of the process running it;
- ``ready SCENARIO``: the child's engine is open;
- ``cancel INSTANCE RESULT``: ``cancel()`` returned RESULT;
- ``block INSTANCE STEP``: a step is now blocked for good (in the child only).

Scenarios:

- ``deadline``: start ``timed`` (timeout :data:`TIMEOUT`): ``a`` finishes,
  ``b`` blocks; the parent kills the child on ``block d-1 b``.
- ``backoff``: start ``backoff``: ``flaky`` fails its first execution (counted
  in LOG, across processes) and waits out :data:`INTERVAL`; the child SIGKILLs
  itself once it reads that waiting checkpoint back from the store.
- ``cancel-later``: start ``chain`` (id ``c-1``): ``a`` finishes, ``b`` blocks;
  cancel ``c-1``; then start ``sleeper`` (``c-2``), whose step blocks; the
  parent kills the child on ``block c-2 z``.
- ``cancel-kill``: as ``cancel-later``, but the child SIGKILLs itself the
  moment ``cancel()`` returns.
- ``cancel-pending``: start ``chain`` and cancel it before it runs a step; then
  ``sleeper``, killed as in ``cancel-later``.
- ``nap``: start ``napper`` (id ``n-1``): ``a`` finishes, then a durable sleep of
  :data:`NAP` seconds unloads the instance; the child logs ``suspended n-1
  WAKE_AT`` and SIGKILLs itself.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import trio

import durable
from durable import Engine, Retry, current_step, step, workflow

TIMEOUT = 600.0  # seconds allowed for a `timed` instance
INTERVAL = 100.0  # seconds between attempts of `flaky`
NAP = 3600.0  # seconds `napper` sleeps

# Set by configure(): where to log, and whether steps may block (only in the child).
LOG: str = ""
BLOCKING = False
_blocked: dict[str, trio.Event] = {}


def configure(log_path: str | os.PathLike[str], *, blocking: bool) -> None:
    global LOG, BLOCKING
    LOG, BLOCKING = os.fspath(log_path), blocking
    _blocked.clear()


def log(line: str) -> None:
    with open(LOG, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def lines() -> list[str]:
    return Path(LOG).read_text().splitlines() if os.path.exists(LOG) else []


def _ran(name: str) -> None:
    info = current_step()
    assert info is not None
    log(f"run {info.instance_id} {name} {info.attempt} {trio.current_time()!r}")


async def _maybe_block(name: str) -> None:
    info = current_step()
    assert info is not None
    if BLOCKING:
        log(f"block {info.instance_id} {name}")
        _blocked.setdefault(info.instance_id, trio.Event()).set()
        await trio.sleep_forever()


@step
async def a(x: str) -> str:
    _ran("a")
    return x + "a"


@step
async def b(x: str) -> str:
    _ran("b")
    await _maybe_block("b")
    return x + "b"


@step
async def c(x: str) -> str:
    _ran("c")
    return x + "c"


@step
async def z(x: str) -> str:
    _ran("z")
    await _maybe_block("z")
    return x + "z"


@step(retry=Retry(max_attempts=5, interval=INTERVAL, backoff_rate=1, max_interval=INTERVAL, jitter="none"))
async def flaky(x: str) -> str:
    # Fails while fewer than 2 executions were logged before this one, in any
    # process: the failure does not depend on the engine's attempt number.
    info = current_step()
    assert info is not None
    before = sum(1 for line in lines() if line.split()[:3] == ["run", info.instance_id, "flaky"])
    _ran("flaky")
    if before < 2:
        raise ValueError(f"flaky fails execution {before + 1}")
    return x + "f"


@workflow(name="timed", timeout=TIMEOUT)
async def timed(x: str) -> str:
    return await c(await b(await a(x)))


@workflow(name="backoff")
async def backoff(x: str) -> str:
    return await c(await flaky(await a(x)))


@workflow(name="chain")
async def chain(x: str) -> str:
    return await c(await b(await a(x)))


@workflow(name="sleeper")
async def sleeper(x: str) -> str:
    return await z(x)


@workflow(name="napper")
async def napper(x: str) -> str:
    y = await a(x)
    await durable.sleep(NAP)
    return await c(y)


WORKFLOWS = [timed, backoff, chain, sleeper, napper]


def register(engine: Engine) -> None:
    for wf in WORKFLOWS:
        engine.workflows.register(wf)


async def _blocked_in(instance_id: str) -> None:
    await _blocked.setdefault(instance_id, trio.Event()).wait()


async def child(store: str, scenario: str) -> None:
    async with Engine.open(store) as engine:
        register(engine)
        log(f"ready {scenario}")
        if scenario == "deadline":
            await engine.workflows.start(timed, "x", id="d-1")
        elif scenario == "backoff":
            iid = await engine.workflows.start(backoff, "x", id="r-1")
            # Kill only once the waiting checkpoint (attempt 1 failed, next
            # attempt due) is committed: a read transaction sees committed data.
            while True:
                sr = (await engine.store.get_steps(iid)).get("flaky#0")
                if sr is not None and sr.next_attempt_at is not None:
                    log(f"waiting {iid} {sr.attempts} {sr.next_attempt_at.isoformat()}")
                    os.kill(os.getpid(), signal.SIGKILL)
                await trio.sleep(0.005)
        elif scenario in ("cancel-later", "cancel-kill", "cancel-pending"):
            await engine.workflows.start(chain, "x", id="c-1")
            if scenario != "cancel-pending":
                await _blocked_in("c-1")  # step b of c-1 is running
            result = await engine.workflows.cancel("c-1")
            log(f"cancel c-1 {result}")
            if scenario == "cancel-kill":
                os.kill(os.getpid(), signal.SIGKILL)
            await engine.workflows.start(sleeper, "y", id="c-2")
        elif scenario == "nap":
            iid = await engine.workflows.start(napper, "x", id="n-1")
            while iid not in engine.workflows.suspended_ids():
                await trio.sleep(0.005)
            sr = (await engine.store.get_steps(iid))["sleep#0"]
            assert sr.next_attempt_at is not None
            log(f"suspended {iid} {sr.next_attempt_at.isoformat()}")
            os.kill(os.getpid(), signal.SIGKILL)
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
        await trio.sleep_forever()  # until killed


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import restart_child  # the same module the parent imports, so checkpoints name the same functions

    STORE, LOG_PATH, SCENARIO = sys.argv[1:4]
    restart_child.configure(LOG_PATH, blocking=True)
    trio.run(restart_child.child, STORE, SCENARIO)
