"""How the command line reports a failure: one line on stderr, ``durable: <message>``, never a traceback."""

from __future__ import annotations

import json
from typing import IO, Any

import click

from ..errors import DurableError, StoreError

__all__ = ["CliError", "describe", "unwrap"]


class CliError(click.ClickException):
    """A failure shown as one line, ``durable: <message>``, with exit code ``exit_code`` (default 1)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the message holds
        setattr(self, "exit_code", exit_code)  # a class variable in click; per instance here

    def show(self, file: IO[Any] | None = None) -> None:
        """Print ``durable: <message>`` on stderr."""
        click.echo(f"durable: {self.format_message()}", err=True, file=file)


def unwrap(exc: BaseException) -> BaseException:
    """The single error inside (nested) exception groups of one leaf, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


_IMPORT_HINT = (
    " (a stored value refers to a module this process cannot import: run the command from the "
    "directory of your workflows, or name their module with --module)"
)


def describe(exc: BaseException) -> str:
    """One line for an error that reached the top of a command."""
    if isinstance(exc, StoreError):
        text = str(exc)
        if "ModuleNotFoundError" in text or "AttributeError: Can't get attribute" in text:
            text += _IMPORT_HINT
        return text
    if isinstance(exc, DurableError):
        return str(exc)
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc}"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
