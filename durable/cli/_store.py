"""Opening an existing store for the commands that read or act on one (never creating it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from .._model.records import InstanceStatus, WorkflowInstance
from ..stores import LMDBStore
from ._errors import CliError

__all__ = ["DEFAULT_STORE", "all_instances", "check_store", "open_store"]

DEFAULT_STORE = "durable.lmdb"


def check_store(path: str) -> None:
    """:class:`CliError` unless ``path`` holds a durable store (so reading it creates nothing)."""
    if not os.path.exists(path):
        raise CliError(f"no durable store at {path} (pass --store PATH or set DURABLE_STORE)")
    if os.path.isdir(path) and not os.path.exists(os.path.join(path, "data.mdb")):
        raise CliError(f"{path} is not a durable store (no data.mdb in it)")
    # A file, or a directory with a data.mdb: LMDBStore tells what is wrong, if anything.


@contextmanager
def open_store(path: str) -> Iterator[LMDBStore]:
    """The existing store at ``path``, closed on exit.

    Several processes may open one store: this works while a worker or a
    ``durable run`` has it open, and sees their commits as they land.
    """
    check_store(path)
    store = LMDBStore(path)
    try:
        yield store
    finally:
        store.close()


async def all_instances(
    store: LMDBStore, workflow: str | None = None, status: InstanceStatus | None = None
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
