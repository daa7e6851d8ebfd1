"""The ``durable`` click group: its commands, and errors turned into one line."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from .._version import __version__
from ._errors import CliError, describe, unwrap
from ._migrate import migrate_cmd
from ._read import events_cmd, graph_cmd, list_cmd, show_cmd
from ._run import cancel_cmd, resume_cmd, run_cmd
from ._send import signal_cmd
from ._serve import serve_cmd
from ._worker import worker_cmd

__all__ = ["cli"]


class _Group(click.Group):
    """A group that reports any error of its commands as ``durable: <message>`` (``--debug``: a traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except (Exception, BaseExceptionGroup) as exc:
            inner = unwrap(exc)
            if isinstance(inner, click.ClickException | click.exceptions.Exit | SystemExit):
                raise inner from None
            if isinstance(inner, KeyboardInterrupt):
                raise click.Abort() from None
            if isinstance(inner, BrokenPipeError):
                _quiet_stdout()  # the reader went away (`durable list | head`): not an error to report
                raise SystemExit(1) from None
            if ctx.params.get("debug"):
                raise
            raise CliError(describe(inner)) from None


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show a traceback when a command fails.")
@click.version_option(__version__, prog_name="durable")
def cli(debug: bool) -> None:
    """Run and inspect durable workflows kept in an LMDB store or a PostgreSQL database.

    Commands that use a store take --store PATH (default ./durable.lmdb,
    or $DURABLE_STORE): an LMDB store's directory, or a postgresql:// URL
    (its ?schema= names the store's schema, default durable). Workflows are named FILE_OR_MODULE[:WORKFLOW], as in
    shop.py:checkout or mypkg.flows:checkout.
    """
    # As `python -m durable` does: modules of the current directory import,
    # both workflow modules and those that stored values refer to.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


for _command in (run_cmd, worker_cmd, list_cmd, show_cmd, events_cmd, cancel_cmd, signal_cmd, resume_cmd,
                 graph_cmd, serve_cmd, migrate_cmd):
    cli.add_command(_command)
