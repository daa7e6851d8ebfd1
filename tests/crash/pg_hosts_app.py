"""The workflow of tests/crash/test_postgres_two_hosts.py, served by ``durable worker`` on two hosts.

Each step appends ``<time> <host> <pid> start|end <instance> <step>`` to the file named by ``DURABLE_HOSTS_LOG``
(one ``write`` of a line: lines of processes appending at once never mix) and returns the host it ran on.
"""

from __future__ import annotations

import os
import socket
import time

import trio

from durable import current_step, step, workflow


def _log(what: str) -> None:
    info = current_step()
    line = f"{time.time():.6f} {socket.gethostname()} {os.getpid()} {what} {info.instance_id} {info.key}\n"
    fd = os.open(os.environ["DURABLE_HOSTS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def _body() -> str:
    _log("start")
    await trio.sleep(0.05)  # real time: a kill lands between a start and its end
    _log("end")
    return socket.gethostname()


@step
async def h1() -> str:
    return await _body()


@step
async def h2() -> str:
    return await _body()


@step
async def h3() -> str:
    return await _body()


@workflow(name="hosts")
async def hosts(n: int) -> list[str]:
    """Three steps; the host each ran on."""
    return [await h1(), await h2(), await h3()]
