"""A store written by durable 0.1.0 (before the layered layout) opens, reads and resumes with today's code.

``tests/data/store-0.1.0`` was written once by ``tests/data/make_store_0_1_0.py``
with the 0.1.0 code; its pickles name ``durable._serde._from_main`` and
``durable._serde.UnpicklableError`` by module path, so those names must stay
importable there.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import durable
from durable import InstanceStatus

DATA = Path(__file__).resolve().parent.parent / "data"  # tests/data
sys.path.insert(0, str(DATA))

import fixture_flows as flows  # noqa: E402


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    shutil.copytree(DATA / "store-0.1.0", path)
    path.chmod(0o700)
    flows.RAN.clear()
    flows.CRASH["armed"] = False
    return path


async def _engine(path: Path) -> durable.Engine:
    engine = durable.Engine.open(str(path))
    for name, fn in flows.JOBS.items():
        engine.jobs.register(name, fn)
    for wf in (flows.completes, flows.fails, flows.fails_unpicklable, flows.interrupted, flows.waits, flows.builder):
        engine.workflows.register(wf)
    return engine


async def test_finished_instances_read_back(old_store: Path) -> None:
    async with await _engine(old_store) as engine:
        done = await engine.workflows.get_instance("done-1")
        assert done is not None and done.status == InstanceStatus.COMPLETED
        assert done.output == {"doubled": 4}
        assert [r.status for r in done.step_results.values()] == [durable.StepStatus.COMPLETED] * 2

        failed = await engine.workflows.get_instance("failed-1")
        assert failed is not None and failed.status == InstanceStatus.FAILED
        assert "bad input 5" in (failed.error or "")
        explode = failed.step_results["explode"]
        assert isinstance(explode.exception, ValueError)

        odd = await engine.workflows.get_instance("unpicklable-1")
        assert odd is not None and odd.status == InstanceStatus.FAILED
        stored = odd.step_results["refuse"].exception
        from durable._serde import UnpicklableError

        assert isinstance(stored, UnpicklableError)
        assert stored.type_name.endswith("Unpicklable") and "cannot store 7" in str(stored)

        main = await engine.workflows.get_instance("main-1")
        assert main is not None and main.status == InstanceStatus.COMPLETED
        assert (main.output.x, main.output.y) == (3, 6)  # a __main__ class, loaded by value

        built = await engine.workflows.get_instance("builder-1")
        assert built is not None and built.status == InstanceStatus.COMPLETED
        assert built.output == "fell back"


def test_opening_it_upgrades_the_format_marker_so_0_1_0_refuses_it_whole(old_store: Path) -> None:
    """0.1.0 wrote format 4; once today's code has opened it, its new pickles may name modules 0.1.0
    cannot import (and queued instances it would take over past their queues' limits), so the marker says 7
    and 0.1.0 refuses the store instead of failing record by record."""
    from durable.stores._lmdb.env import FORMAT_VERSION
    from support import raw_get

    assert raw_get(old_store, b"meta", b"format") == b"4"
    durable.LMDBStore(str(old_store)).close()
    assert FORMAT_VERSION == 7 and raw_get(old_store, b"meta", b"format") == b"7"


async def test_unfinished_instances_resume_without_rerunning(old_store: Path) -> None:
    async with await _engine(old_store) as engine:
        resumed = await engine.workflows.resume()
        assert sorted(resumed) == ["interrupted-1", "waits-1"]
        done = await engine.workflows.wait("interrupted-1", timeout=10)
        assert done.status == InstanceStatus.COMPLETED and done.output == 121
        await engine.workflows.signal("waits-1", "go", {"ok": True})
        waited = await engine.workflows.wait("waits-1", timeout=10)
        assert waited.status == InstanceStatus.COMPLETED
        assert waited.output == {"first": 11, "payload": {"ok": True}}
    assert flows.RAN == ["boom"]  # add was checkpointed by 0.1.0 in both: replayed, not run
