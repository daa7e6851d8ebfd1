"""Runs a crash child script on a PostgreSQL schema of the test's own.

    python tests/crash/pg_wrap.py SCHEMA [--host NAME] SCRIPT ARGS...

The children of tests/crash (crash_child.py, worker_child.py, ...) open their
store as ``Engine.open(STORE)`` / ``Client(STORE)``: given a ``postgresql://``
URL as STORE, they get a ``PostgresStore`` on its default schema. This wrapper
makes SCHEMA that default (``PostgresStore``'s keyword default, in this
process only), then runs SCRIPT as ``__main__`` with ARGS, so the children run
on PostgreSQL unchanged.

``--host NAME``: this process calls itself NAME (``socket.gethostname``), so
that every other process judges its engine as one on another host: by the age
of its heartbeat on the database's clock against its ``lease_ttl``, not by its
pid (see ``durable/stores/_postgres/owners.py``). The fencing test uses it to
pause an engine "on another host".
"""

from __future__ import annotations

import runpy
import socket
import sys


def main() -> None:
    args = sys.argv[1:]
    schema = args.pop(0)
    if args and args[0] == "--host":
        name = args[1]
        del args[:2]
        socket.gethostname = lambda: name  # type: ignore[assignment]
    from durable.stores._postgres.store import PostgresStore

    defaults = PostgresStore.__init__.__kwdefaults__
    assert defaults is not None and "schema" in defaults
    defaults["schema"] = schema
    script = args[0]
    sys.argv = args
    sys.path.insert(0, str(__import__("pathlib").Path(script).resolve().parent))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
