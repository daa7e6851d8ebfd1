"""Opening an existing store for the commands that read or act on one (never creating it).

``--store`` is an LMDB store's directory or a PostgreSQL URL (``postgresql://`` or ``postgres://``; its
``?schema=`` names the store's schema, default ``durable``). A URL is only ever shown through :func:`shown`
(its password replaced by ``***``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._model.records import InstanceStatus, WorkflowInstance
from ..stores import LMDBStore, Store
from ._errors import CliError

if TYPE_CHECKING:
    from ..stores import PostgresStore

__all__ = ["DEFAULT_STORE", "all_instances", "check_store", "is_url", "make_store", "name_of_store", "open_store",
           "postgres_store", "shown"]

DEFAULT_STORE = "durable.lmdb"


def is_url(spec: str) -> bool:
    """Whether ``--store`` names a PostgreSQL store (a ``postgresql://`` or ``postgres://`` URL)."""
    return spec.lower().startswith(("postgresql://", "postgres://"))


def shown(spec: str) -> str:
    """``--store`` as messages show it: a URL without its password."""
    if is_url(spec):
        from ..stores._postgres.url import redact

        return redact(spec)
    return spec


def make_store(spec: str, *, create: bool = False) -> Store:
    """A store object for ``--store`` (an LMDB directory, or a PostgreSQL URL: its schema is created only
    with ``create``); check it exists first with :func:`check_store`."""
    if is_url(spec):
        return postgres_store(spec, create=create)
    return LMDBStore(spec)


def postgres_store(url: str, *, create: bool = False) -> PostgresStore:
    """The :class:`~durable.PostgresStore` of a URL (nothing connects yet)."""
    from ..stores import PostgresStore

    try:
        return PostgresStore(url, create=create)
    except ValueError as exc:
        raise CliError(f"{shown(url)}: {exc}", exit_code=2) from None


def check_store(path: str) -> None:
    """:class:`CliError` unless ``path`` holds a durable store (so reading it creates nothing)."""
    if is_url(path):
        pg = postgres_store(path)
        try:
            version = pg.version()
        finally:
            pg.close()
        if version is None:
            raise CliError(f"no durable store at {shown(path)} (schema {pg.schema!r} missing: "
                           "a worker, `durable run` or `durable migrate` creates it)")
        return
    if not os.path.exists(path):
        raise CliError(f"no durable store at {path} (pass --store PATH or set DURABLE_STORE)")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "data.mdb")):
        raise CliError(f"{path} is not a durable store (no data.mdb in it)")
    # A file, or a directory with a data.mdb: LMDBStore tells what is wrong, if anything.


@contextmanager
def open_store(path: str) -> Iterator[Store]:
    """The existing store at ``path`` (or URL), closed on exit.

    Several processes may open one store: this works while a worker or a
    ``durable run`` has it open, and sees their commits as they land.
    """
    check_store(path)
    store = make_store(path)
    try:
        yield store
    finally:
        store.close()


def name_of_store(store: Store) -> str:
    """How messages name an open store: its directory, or its URL without password."""
    return store.path if store.path is not None else str(getattr(store, "url", store))


async def all_instances(
    store: Store, workflow: str | None = None, status: InstanceStatus | None = None
) -> list[WorkflowInstance]:
    """Instances of ``workflow`` (or of every workflow) with ``status`` (or any), oldest first.

    Step checkpoints are read only for unfinished instances (to tell their
    current step), so listing is quick and a finished instance's step values
    are never unpickled.
    """
    if workflow is not None:
        found = await store.get_instances_by_workflow(workflow, status, steps=False)
    else:
        found = await store.get_all_instances(status, steps=False)
    out: list[WorkflowInstance] = []
    for inst in found:
        if not inst.finished:
            inst = await store.get_instance(inst.id) or inst
        out.append(inst)
    return out
