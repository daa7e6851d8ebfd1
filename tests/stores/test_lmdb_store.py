"""LMDBStore specifics: persistence, permissions, refusing foreign/corrupt/newer stores, map growth."""

from __future__ import annotations

import os
import pickle
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from durable import InstanceStatus, LMDBStore, StoreError
from durable.errors import DurableError
from durable.stores._lmdb.store import FORMAT_VERSION

from support import check_populated, make_instance, make_step, populate, raw_delete, raw_get, raw_put


# -- persistence -------------------------------------------------------------


async def test_reopening_sees_everything_written(store_path: Path) -> None:
    long_key = "scope/" + "k" * 700
    st = LMDBStore(store_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        await st.create_instance(make_instance("a", input={"x": 1}, created=1))
        await st.create_instance(make_instance("b", status="completed", created=2, output="done"))
        await st.put_step("a", make_step("s1", output=[1, 2]))
        await st.put_step("a", make_step(long_key, name="long", output="L"))
        await st.create_instance(make_instance("c", status="pending", created=3))
        await st.update_instance(make_instance("c", status="failed", created=3, error="boom"), durable=False)
        nursery.cancel_scope.cancel()
    await st.create_instance(make_instance("d", status="pending", created=4))  # inline
    await st.put_step("d", make_step("x"), durable=False)  # inline, non-durable
    await st.delete_instance("b")
    st.close()

    again = LMDBStore(store_path)
    try:
        a = await again.get_instance("a")
        assert a is not None and a.input == {"x": 1}
        assert a.step_results["s1"].output == [1, 2]
        assert (await again.get_steps("a"))[long_key].output == "L"
        assert await again.get_instance("b") is None
        c = await again.get_instance("c")
        assert c is not None and c.status is InstanceStatus.FAILED and c.error == "boom"
        assert [i.id for i in await again.get_running_instances()] == ["a", "d"]
        assert [i.id for i in await again.get_instances_by_workflow("wf")] == ["a", "c", "d"]
        assert [i.id for i in await again.get_instances_by_workflow("wf", "failed")] == ["c"]
        assert set(await again.get_steps("d")) == {"x"}
        assert again.stats()["entries"]["instances"] == 3
    finally:
        again.close()


async def test_fresh_store_writes_the_format_marker(store_path: Path) -> None:
    LMDBStore(store_path).close()
    assert raw_get(store_path, b"meta", b"format") == str(FORMAT_VERSION).encode()


async def test_opening_an_empty_existing_directory_creates_a_store(tmp_path: Path) -> None:
    d = tmp_path / "empty"
    d.mkdir()
    st = LMDBStore(d)
    try:
        await st.create_instance(make_instance("a"))
        assert (d / "data.mdb").exists()
    finally:
        st.close()


# -- permissions -------------------------------------------------------------


def test_directory_and_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "store.lmdb"
    st = LMDBStore(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
        assert os.stat(path).st_mode & 0o777 == 0o700
        assert os.stat(path / "data.mdb").st_mode & 0o777 == 0o600
        assert os.stat(path / "lock.mdb").st_mode & 0o777 == 0o600
    finally:
        st.close()


# -- refusing what is not a store -------------------------------------------


def test_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_bytes(b"hello")
    with pytest.raises(StoreError) as info:
        LMDBStore(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert "file" in str(info.value)
    assert path.read_bytes() == b"hello"


def test_non_empty_directory_without_data_mdb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "somebody-elses"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError) as info:
        LMDBStore(path)
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert sorted(os.listdir(path)) == ["notes.txt"]  # nothing was created there


@pytest.mark.parametrize("size", [1, 100, 4096, 8192, 64 * 1024])
def test_garbage_data_mdb_is_a_store_error(store_path: Path, size: int) -> None:
    store_path.mkdir()
    (store_path / "data.mdb").write_bytes(random.Random(size).randbytes(size))
    with pytest.raises(StoreError) as info:
        LMDBStore(store_path)
    assert info.value.path == str(store_path)
    assert str(store_path) in str(info.value)


def test_zeroed_data_mdb_is_a_store_error(store_path: Path) -> None:
    store_path.mkdir()
    (store_path / "data.mdb").write_bytes(bytes(16384))
    with pytest.raises(StoreError):
        LMDBStore(store_path)


_CHILD = """
import sys, trio
from durable import LMDBStore, StoreError

async def main():
    try:
        st = LMDBStore(sys.argv[1])
        try:
            await st.get_running_instances()
            await st.get_instance("a")
            await st.get_steps("a")
        finally:
            st.close()
    except StoreError as exc:
        print("StoreError", exc.path == sys.argv[1])
        return
    print("opened")

trio.run(main)
"""


def _open_in_child(path: Path) -> subprocess.CompletedProcess[str]:
    """Open and read ``path`` in a child process: a crash there must not take pytest down."""
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=60,
    )


async def test_real_store_with_garbage_pages_is_a_store_error_not_a_crash(store_path: Path) -> None:
    await populate(store_path)
    data = bytearray((store_path / "data.mdb").read_bytes())
    page = 4096
    data[2 * page:] = random.Random(7).randbytes(len(data) - 2 * page)  # keep both meta pages
    (store_path / "data.mdb").write_bytes(bytes(data))
    proc = _open_in_child(store_path)
    assert proc.returncode == 0, f"child crashed with {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "StoreError True", proc.stdout + proc.stderr


async def test_truncated_data_mdb_is_a_store_error_not_a_crash(store_path: Path) -> None:
    """A data.mdb cut short (disk full, partial copy) keeps valid meta pages pointing past its end.

    LMDB then touches unmapped pages and the process dies of SIGBUS; the store
    must notice the file is shorter than its meta says and raise StoreError.
    """
    await populate(store_path)
    data = (store_path / "data.mdb").read_bytes()
    (store_path / "data.mdb").write_bytes(data[: 2 * 4096])  # the meta pages only
    proc = _open_in_child(store_path)
    assert proc.returncode == 0, f"child crashed with signal/rc {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "StoreError True", proc.stdout + proc.stderr


# -- the format marker -------------------------------------------------------


async def test_newer_format_is_refused_and_older_data_survives(store_path: Path) -> None:
    await populate(store_path)
    raw_put(store_path, [(b"meta", b"format", b"999")])
    with pytest.raises(StoreError) as info:
        LMDBStore(store_path)
    assert info.value.path == str(store_path)
    assert "newer" in str(info.value)
    assert "999" in str(info.value)
    # refusing did not rewrite the marker
    assert raw_get(store_path, b"meta", b"format") == b"999"

    raw_put(store_path, [(b"meta", b"format", b"1")])
    st = LMDBStore(store_path)
    try:
        await check_populated(st)
    finally:
        st.close()
    assert raw_get(store_path, b"meta", b"format") == str(FORMAT_VERSION).encode()  # an older store is upgraded in place


@pytest.mark.parametrize("marker", [b"one", b"", b"\xff\xfe", b"1.5", b"0", b"-3", b" 1"])
async def test_unreadable_format_marker_is_refused(store_path: Path, marker: bytes) -> None:
    await populate(store_path)
    raw_put(store_path, [(b"meta", b"format", marker)])
    with pytest.raises(StoreError) as info:
        LMDBStore(store_path)
    assert info.value.path == str(store_path)
    assert "format" in str(info.value)


async def test_records_without_a_format_marker_are_refused(store_path: Path) -> None:
    await populate(store_path)
    raw_delete(store_path, b"meta", b"format")
    with pytest.raises(StoreError) as info:
        LMDBStore(store_path)
    assert info.value.path == str(store_path)
    assert raw_get(store_path, b"meta", b"format") is None  # not papered over


# -- map growth --------------------------------------------------------------


async def test_the_map_grows_by_itself(store_path: Path) -> None:
    tiny = 64 * 1024
    st = LMDBStore(store_path, map_size=tiny)
    blob = 100 * 1024
    try:
        assert st.stats()["map_size"] == tiny
        await st.create_instance(make_instance("a"))

        # through the writer thread, from several tasks, with reads going on
        async with trio.open_nursery() as nursery:
            await nursery.start(st.run)
            done = trio.Event()

            async def reader() -> None:
                while not done.is_set():
                    await st.get_steps("a")
                    await st.get_running_instances()
                    await trio.sleep(0)

            async def writer(t: int) -> None:
                for i in range(5):
                    await st.put_step("a", make_step(f"w{t}-{i}", output=bytes([t, i]) * (blob // 2)))

            nursery.start_soon(reader)
            async with trio.open_nursery() as writers:
                for t in range(4):
                    writers.start_soon(writer, t)
            done.set()
            grown = st.stats()["map_size"]
            nursery.cancel_scope.cancel()
        assert grown > tiny

        # inline, including one value bigger than the whole initial map
        for i in range(15):
            await st.put_step("a", make_step(f"inline-{i}", output=bytes([i]) * blob))
        await st.put_step("a", make_step("huge", output=b"h" * (1 << 20)))
        await st.update_instance(make_instance("a", input=b"i" * (512 * 1024)))

        final = st.stats()["map_size"]
        assert final >= grown
        assert final >= 3 * (1 << 20)

        steps = await st.get_steps("a")
        assert len(steps) == 4 * 5 + 15 + 1
        for t in range(4):
            for i in range(5):
                assert steps[f"w{t}-{i}"].output == bytes([t, i]) * (blob // 2)
        for i in range(15):
            assert steps[f"inline-{i}"].output == bytes([i]) * blob
        assert steps["huge"].output == b"h" * (1 << 20)
        inst = await st.get_instance("a")
        assert inst is not None and inst.input == b"i" * (512 * 1024)
    finally:
        st.close()

    # reopening with the tiny size still sees (and can extend) everything
    again = LMDBStore(store_path, map_size=tiny)
    try:
        assert len(await again.get_steps("a")) == 36
        await again.put_step("a", make_step("after", output=b"a" * blob))
        assert (await again.get_steps("a"))["after"].output == b"a" * blob
    finally:
        again.close()


# -- corrupt records ---------------------------------------------------------


_CORRUPT = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00garbage", id="bad-envelope"),
    pytest.param(bytes(range(256)) * 3, id="binary"),
    pytest.param(b"\x01this is not a pickle", id="bad-pickle"),
    pytest.param(b"\x01" + pickle.dumps([1, 2, 3]), id="not-a-dict"),
    pytest.param(b"\x01" + pickle.dumps({"id": "a"}), id="missing-fields"),
    pytest.param(b"\x01" + pickle.dumps({"id": "a", "workflow_name": "wf", "status": "weird"}), id="bad-status"),
]


@pytest.mark.parametrize("garbage", _CORRUPT)
async def test_corrupt_instance_record_is_a_store_error(store_path: Path, garbage: bytes) -> None:
    await populate(store_path)
    raw_put(store_path, [(b"instances", b"a", garbage)])
    st = LMDBStore(store_path)
    try:
        with pytest.raises(StoreError) as info:
            await st.get_instance("a")
        assert "corrupt" in str(info.value)
        assert "a" in str(info.value)
        assert not isinstance(info.value.__cause__, StoreError)
        with pytest.raises(StoreError):
            await st.get_running_instances()
        with pytest.raises(StoreError):
            await st.get_instances_by_workflow("wf")
        # the rest of the store is still readable
        b = await st.get_instance("b")
        assert b is not None and b.output == "done"
        assert [i.id for i in await st.get_instances_by_workflow("wf", "completed")] == ["b"]
        # and the bad record can be replaced
        await st.update_instance(make_instance("a", created=1))
        assert [i.id for i in await st.get_running_instances()] == ["a"]
    finally:
        st.close()


@pytest.mark.parametrize("garbage", _CORRUPT[:5])
async def test_corrupt_step_record_is_a_store_error(store_path: Path, garbage: bytes) -> None:
    await populate(store_path)
    raw_put(store_path, [(b"steps", b"a\0s1", garbage)])
    st = LMDBStore(store_path)
    try:
        with pytest.raises(StoreError) as info:
            await st.get_steps("a")
        assert "corrupt" in str(info.value)
        with pytest.raises(StoreError):
            await st.get_instance("a")
        assert await st.get_instance("b") is not None
    finally:
        st.close()


async def test_corrupt_record_errors_carry_the_store_path(store_path: Path) -> None:
    """Every StoreError of an LMDB store names its path in ``.path`` - also "corrupt record" ones."""
    await populate(store_path)
    raw_put(store_path, [(b"instances", b"a", b"\x01not a pickle")])
    raw_put(store_path, [(b"steps", b"b\0s", b"\x01not a pickle")])
    st = LMDBStore(store_path)
    try:
        for call in (lambda: st.get_instance("a"), lambda: st.get_steps("b")):
            with pytest.raises(StoreError) as info:
                await call()
            assert str(store_path) in str(info.value)
            assert getattr(info.value, "path", None) == str(store_path)
    finally:
        st.close()


async def test_running_instances_never_read_finished_records(store_path: Path) -> None:
    """The status index finds running instances without loading finished ones."""
    await populate(store_path)
    raw_put(store_path, [(b"instances", b"b", b"\x01corrupt, but finished")])
    st = LMDBStore(store_path)
    try:
        assert [i.id for i in await st.get_running_instances()] == ["a"]
        assert [i.id for i in await st.get_instances_by_workflow("wf", "running")] == ["a"]
    finally:
        st.close()


# -- closed stores and errors ------------------------------------------------


async def test_closed_store_raises_store_error(store_path: Path) -> None:
    st = LMDBStore(store_path)
    await st.create_instance(make_instance("a"))
    st.close()
    st.close()  # idempotent
    calls = {
        "get_instance": lambda: st.get_instance("a"),
        "get_steps": lambda: st.get_steps("a"),
        "get_running_instances": st.get_running_instances,
        "get_instances_by_workflow": lambda: st.get_instances_by_workflow("wf"),
        "create_instance": lambda: st.create_instance(make_instance("new")),
        "update_instance": lambda: st.update_instance(make_instance("a")),
        "update_instance(durable=False)": lambda: st.update_instance(make_instance("a"), durable=False),
        "delete_instance": lambda: st.delete_instance("a"),
        "put_step": lambda: st.put_step("a", make_step("s")),
    }
    for name, call in calls.items():
        with pytest.raises(StoreError) as info:
            await call()
        assert info.value.path == str(store_path), name
        assert "closed" in str(info.value), name


def test_stats_of_closed_store_raises_store_error(store_path: Path) -> None:
    st = LMDBStore(store_path)
    st.close()
    with pytest.raises(StoreError) as info:
        st.stats()
    assert info.value.path == str(store_path)


async def test_closed_store_with_writer_running_raises_store_error(store_path: Path) -> None:
    st = LMDBStore(store_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(st.run)
        await st.create_instance(make_instance("a"))
        st.close()
        with pytest.raises(StoreError):
            await st.put_step("a", make_step("s"))
        with pytest.raises(StoreError):
            await st.get_instance("a")
        nursery.cancel_scope.cancel()


def test_store_error_is_a_durable_error_with_path_and_pickles(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StoreError) as info:
        LMDBStore(path)
    err = info.value
    assert isinstance(err, DurableError)
    assert err.path == str(path)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is StoreError
    assert back.path == str(path)
    assert str(back) == str(err)


def test_path_property_and_pathlike(store_path: Path) -> None:
    st = LMDBStore(store_path)
    try:
        assert st.path == str(store_path)
        assert isinstance(st.path, str)
    finally:
        st.close()


def test_stats_shape(store_path: Path) -> None:
    st = LMDBStore(store_path)
    try:
        stats = st.stats()
        assert set(stats) >= {"map_size", "entries", "batches", "writes"}
        assert stats["entries"]["meta"] == 1
        assert stats["entries"]["instances"] == 0
        assert stats["batches"] == stats["writes"] == 0
    finally:
        st.close()
