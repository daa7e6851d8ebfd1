"""``durable signal ID NAME [--data JSON]``: send a signal to an instance."""

from __future__ import annotations

import json
from typing import Any

import click
import trio

from .._engine.engine import Engine
from ._errors import CliError
from ._logs import engine_logs
from ._options import modules_option, store_option
from ._read import resolve_id
from ._store import check_store, make_store

__all__ = ["signal_cmd"]


async def _signal(path: str, text: str, name: str, payload: Any) -> str:
    store = make_store(path)
    try:
        async with Engine(store) as engine:
            inst = await resolve_id(store, text)
            if inst.finished:
                raise CliError(f"instance {inst.id} has already finished ({inst.status})")
            seq = await engine.workflows.signal(inst.id, name, payload)
            return f"sent {name} to {inst.id} (signal {seq}); it is queued until the instance waits for it"
    finally:
        store.close()


@click.command("signal")
@click.argument("instance_id", metavar="ID")
@click.argument("name")
@click.option("--data", "data", default=None, metavar="JSON", help="The payload, as JSON (default: null).")
@store_option
@modules_option
def signal_cmd(instance_id: str, name: str, data: str | None, store: str, modules: tuple[str, ...]) -> None:
    """Send signal NAME to an unfinished instance (ID may be a unique prefix).

    The signal is on disk when this returns; the instance takes it with
    `durable.wait_for_signal(NAME)`, now or later, in the order signals of
    that name were sent, each exactly once. A worker or `durable run` process
    running the instance notices it within a fraction of a second.
    """
    from ._load import load_module

    check_store(store)
    try:
        payload = json.loads(data) if data is not None else None
    except ValueError as exc:
        raise CliError(f"--data is not valid JSON: {exc} (a string needs quotes: --data '\"text\"')",
                       exit_code=2) from None
    for m in modules:
        load_module(m)
    with engine_logs():
        message = trio.run(_signal, store, instance_id, name, payload)
    click.echo(message)
