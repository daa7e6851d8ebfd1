"""The ``durable`` command (needs the ``cli`` extra: click and rich).

``durable run``, ``worker``, ``list``, ``show``, ``events``, ``cancel``,
``resume`` and ``graph``: see ``docs/cli.md`` or ``durable --help``. Click
and rich are imported only when the command runs, so ``import durable``
never needs them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

MISSING_EXTRA = "durable: the command line needs the 'cli' extra: pip install 'durable[cli]'"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``durable`` command (and of ``python -m durable``)."""
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError:
        print(MISSING_EXTRA, file=sys.stderr)
        raise SystemExit(2) from None
    from ._app import cli

    cli.main(args=list(argv) if argv is not None else None, prog_name="durable")
