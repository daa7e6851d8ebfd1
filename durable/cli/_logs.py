"""The engine's log messages on stderr, while a command runs workflows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import click

__all__ = ["engine_logs"]


class _EchoHandler(logging.Handler):
    """Writes ``durable: LEVEL: message`` (no traceback) to whatever stderr is when the record is emitted."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if message.startswith("not resuming instance"):
                # resume() says so on every call: a worker polling it would repeat it every second.
                if message in self._seen:
                    return
                self._seen.add(message)
            click.echo(f"durable: {record.levelname.lower()}: {message}", err=True)
        except Exception:
            self.handleError(record)


@contextmanager
def engine_logs() -> Iterator[None]:
    """Show the ``durable`` loggers' warnings and errors on stderr inside the block."""
    logger = logging.getLogger("durable")
    handler = _EchoHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
