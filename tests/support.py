"""Helpers shared by test files in more than one place: ``from support import ...``.

Importable from every test folder: ``tests/`` is on ``sys.path`` because the
rootdir ``conftest.py`` lives there (pytest's default "prepend" import mode
puts the directory of a conftest.py or test file that is not in a package on
``sys.path``). Fixtures are in ``conftest.py``; this module only holds plain
functions and constants.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lmdb
import trio

from durable import Engine, InstanceStatus, LMDBStore, StepResult, StepStatus, WorkflowInstance

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


# -- records -----------------------------------------------------------------------


def make_instance(iid: str, status: str = "running", created: float = 0, **fields: Any) -> WorkflowInstance:
    """An instance of workflow ``wf`` (or ``workflow=``), created ``created`` seconds after :data:`T0`."""
    return WorkflowInstance(
        id=iid, workflow_name=fields.pop("workflow", "wf"), status=InstanceStatus(status),
        created_at=T0 + timedelta(seconds=created), **fields,
    )


def make_step(key: str, name: str | None = None, **fields: Any) -> StepResult:
    """A completed step result under ``key``, named ``name`` (by default the key)."""
    return StepResult(step_name=name or key, status=StepStatus.COMPLETED, key=key, **fields)


# -- a small LMDB store: two instances and a step ------------------------------------


async def populate(path: Path, **kw: Any) -> None:
    """Write instance ``a`` (running, with step ``s1``) and ``b`` (completed) to an LMDB store at ``path``."""
    st = LMDBStore(path, **kw)
    try:
        await st.create_instance(make_instance("a", input={"x": 1}, created=1))
        await st.create_instance(make_instance("b", status="completed", created=2, output="done"))
        await st.put_step("a", make_step("s1", output=[1, 2]))
    finally:
        st.close()


async def check_populated(st: LMDBStore) -> None:
    """``st`` holds what :func:`populate` wrote, readable through every query."""
    a = await st.get_instance("a")
    assert a is not None and a.input == {"x": 1}
    assert a.step_results["s1"].output == [1, 2]
    b = await st.get_instance("b")
    assert b is not None and b.output == "done" and b.status is InstanceStatus.COMPLETED
    assert [i.id for i in await st.get_running_instances()] == ["a"]
    assert [i.id for i in await st.get_instances_by_workflow("wf", "completed")] == ["b"]


# -- raw LMDB access, bypassing LMDBStore (to read or plant bytes) --------------------
#
# Each call opens the environment, does one transaction and closes it again, so
# no handle is left open when the test opens an LMDBStore on the same path. No
# fsync (sync=False): the bytes only have to reach the next open on this machine.


def raw_env(path: Path) -> lmdb.Environment:
    """The store's LMDB environment, opened directly; close it when done."""
    return lmdb.open(str(path), max_dbs=10, sync=False)


def raw_get(path: Path, db: bytes, key: bytes) -> bytes | None:
    """The bytes stored under ``key`` in the named database ``db``, or None."""
    env = raw_env(path)
    try:
        with env.begin() as txn:
            value = txn.get(key, db=env.open_db(db, txn=txn))
            return None if value is None else bytes(value)
    finally:
        env.close()


def raw_put(path: Path, items: list[tuple[bytes, bytes, bytes]]) -> None:
    """Write each ``(db, key, value)`` of ``items``, in one transaction."""
    env = raw_env(path)
    try:
        with env.begin(write=True) as txn:
            for db, key, value in items:
                txn.put(key, value, db=env.open_db(db, txn=txn))
    finally:
        env.close()


def raw_delete(path: Path, db: bytes, key: bytes) -> None:
    """Delete ``key`` from the named database ``db``."""
    env = raw_env(path)
    try:
        with env.begin(write=True) as txn:
            txn.delete(key, db=env.open_db(db, txn=txn))
    finally:
        env.close()


# -- running workflows on an engine -------------------------------------------------


async def run_registered(engine: Engine, graph: Any, value: Any = None) -> Any:
    """Register a builder ``graph``, start it by name with ``value`` and wait for the instance to end."""
    engine.workflows.register(graph)
    return await engine.workflows.wait(await engine.workflows.start(graph.name, value))


async def wait_until_suspended(engine: Engine, iid: str) -> None:
    """Poll until instance ``iid`` is unloaded (waiting on a timer or a signal, with no task)."""
    while iid not in engine.workflows.suspended_ids():
        await trio.sleep(0.001)
