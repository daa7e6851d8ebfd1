"""``durable migrate``: bring a PostgreSQL store's schema up to this version of durable, by hand."""

from __future__ import annotations

import click

from ._errors import CliError
from ._options import store_option
from ._store import check_store, is_url, postgres_store

__all__ = ["migrate_cmd"]


@click.command("migrate")
@store_option
def migrate_cmd(store: str) -> None:
    """Apply the pending migrations of a PostgreSQL store (--store postgresql://...), creating its schema if
    it is missing, and print its version before and after.

    Stores also migrate when first opened by a worker or an engine; run this
    to do it at a time of your choosing (one migration at a time: others
    opening the store meanwhile wait for it). A store of a newer version than
    this durable is refused. LMDB stores have nothing to migrate (they
    upgrade on open).
    """
    if not is_url(store):
        check_store(store)
        click.echo(f"{store}: an LMDB store has nothing to migrate (LMDB stores upgrade on open)")
        return
    pg = postgres_store(store, create=True)
    try:
        before = pg.version()
        if before is not None and before > 0:
            from ..stores._postgres.schema import SCHEMA_VERSION

            if before == SCHEMA_VERSION:
                click.echo(f"{pg.url} (schema {pg.schema}): schema version {before}, up to date; nothing to migrate")
                return
            if before > SCHEMA_VERSION:
                raise CliError(f"{pg.url} (schema {pg.schema}): schema version {before} is newer than this "
                               f"durable knows ({SCHEMA_VERSION}): upgrade durable")
        _, after = pg.migrate()
    finally:
        pg.close()
    was = "none (created)" if before is None else str(before)
    click.echo(f"{pg.url} (schema {pg.schema}): schema version {was} -> {after}")
