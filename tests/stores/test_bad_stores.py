"""Bad stores and bad input: read-only paths, a full disk, corrupt bytes, fuzzed records.

Each case must end in a :class:`StoreError` naming the store's path and the
problem, never a crash, a silent reset or another exception type, and what was
already checkpointed must still be readable once the cause is fixed.

(Truncated data files, directories that are not stores, newer format versions
and hand-picked corrupt records are covered in ``test_lmdb_store.py``.)

Permission tests need a user that permissions apply to: run as root, they
drop to ``nobody`` in a child process (and skip if that is impossible). The
full-disk tests run in a child process limited by ``RLIMIT_FSIZE``, so a
write past the limit fails as it would on a full disk.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from durable import (
    InstanceStatus,
    LMDBStore,
    StepResult,
    StepStatus,
    StoreError,
    WorkflowInstance,
)
from durable._model.serde import _seal, decode_instance, decode_step, encode_instance, encode_step
from durable.errors import StepFailed
from durable.stores._lmdb.store import FORMAT_VERSION

from support import T0, check_populated, make_instance, make_step, populate, raw_delete, raw_get, raw_put

NOBODY = 65534


async def check_writable(path: Path) -> None:
    """The store at ``path`` takes a new write and reads it back, also after reopening."""
    st_ = LMDBStore(path)
    try:
        await st_.put_step("a", make_step("after-fix", output=b"f" * 100_000))
    finally:
        st_.close()
    st_ = LMDBStore(path)
    try:
        assert (await st_.get_steps("a"))["after-fix"].output == b"f" * 100_000
    finally:
        st_.close()


def run_child(code: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """Run ``code`` in a child Python (a crash there must not take pytest down); its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"child died with {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"child printed nothing:\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def assert_store_error(err: dict[str, Any] | None, path: Path, *problem: str) -> None:
    """``err`` (a child's report of an exception) is a StoreError naming ``path`` and one of ``problem``."""
    assert err is not None, "expected a StoreError, the call succeeded"
    assert err["type"] == "StoreError", err
    assert err["path"] == str(path), err
    assert str(path) in err["message"], err
    if problem:
        assert re.search("|".join(problem), err["message"], re.IGNORECASE), err


_CHILD_PRELUDE = r"""
import json, os, sys
import trio
from durable import InstanceStatus, LMDBStore, StepResult, StepStatus, StoreError, WorkflowInstance


def err(exc):
    return {"type": type(exc).__name__, "path": getattr(exc, "path", None), "message": str(exc)}
"""


# -- read-only paths -----------------------------------------------------------

_READ_ONLY_CHILD = _CHILD_PRELUDE + r"""
path = sys.argv[1]
if os.geteuid() == 0:  # permissions do not apply to root: become nobody (the test chowned the files)
    trio.run(trio.sleep, 0)  # import what trio imports lazily while we still can
    try:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    except OSError as exc:
        print(json.dumps({"skip": f"running as root and cannot drop to uid 65534: {exc}"}))
        sys.exit(0)
    if not os.access(sys.argv[2], os.R_OK | os.X_OK):
        print(json.dumps({"skip": "running as root and uid 65534 cannot reach the test directory"}))
        sys.exit(0)


async def main():
    out = {"open": None}
    try:
        st = LMDBStore(path)
    except StoreError as exc:  # anything else propagates: a traceback and rc 1
        out["open"] = err(exc)
        return out
    try:
        a = await st.get_instance("a")
        out["read"] = [a.input, a.step_results["s1"].output]
        writes = {}
        calls = {
            "create_instance": lambda: st.create_instance(
                WorkflowInstance(id="new", workflow_name="wf", status=InstanceStatus.PENDING)),
            "put_step": lambda: st.put_step("a", StepResult(step_name="s2", status=StepStatus.COMPLETED, key="s2")),
        }
        for name, call in calls.items():
            try:
                await call()
                writes[name] = None
            except Exception as exc:
                writes[name] = err(exc)
        async with trio.open_nursery() as nursery:  # through the writer thread, as an engine writes
            await nursery.start(st.run)
            try:
                await st.put_step("a", StepResult(step_name="s3", status=StepStatus.COMPLETED, key="s3"))
                writes["put_step (writer thread)"] = None
            except Exception as exc:
                writes["put_step (writer thread)"] = err(exc)
            nursery.cancel_scope.cancel()
        out["writes"] = writes
    finally:
        st.close()
    return out


print(json.dumps(trio.run(main)))
"""


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for permission tests: ``tmp_path``, or (as root) one that ``nobody`` owns and can reach."""
    if os.geteuid() != 0:
        yield tmp_path
        for root, dirs, _ in os.walk(tmp_path):  # let pytest clean up whatever a test left read-only
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o700)
        return
    base = tempfile.mkdtemp(prefix="durable-bad-stores-")
    try:
        os.chown(base, NOBODY, NOBODY)
    except OSError as exc:  # a user namespace without uid 65534, say
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"running as root and cannot hand a directory to uid {NOBODY}: {exc}")
    try:
        yield Path(base) / "t"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _give_to_test_user(path: Path) -> None:
    """As root, hand ``path`` (recursively) to the user the child runs as."""
    if os.geteuid() != 0:
        return
    os.chown(path, NOBODY, NOBODY)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), NOBODY, NOBODY)


def _skip_if_asked(result: dict[str, Any]) -> None:
    if "skip" in result:
        pytest.skip(result["skip"])


@pytest.mark.parametrize("what", ["directory-and-files", "data-file"])
async def test_read_only_store_is_a_store_error_and_survives(shared_dir: Path, what: str) -> None:
    shared_dir.mkdir(exist_ok=True)
    path = shared_dir / "store.lmdb"
    await populate(path)
    _give_to_test_user(shared_dir)
    files = [path / "data.mdb", path / "lock.mdb"] if what == "directory-and-files" else [path / "data.mdb"]
    try:
        for f in files:
            os.chmod(f, 0o400)
        if what == "directory-and-files":
            os.chmod(path, 0o500)
        result = run_child(_READ_ONLY_CHILD, str(path), str(shared_dir))
    finally:
        os.chmod(path, 0o700)
        for f in files:
            os.chmod(f, 0o600)
    _skip_if_asked(result)

    if result["open"] is not None:
        # Refusing to open is fine, if it says where and why.
        assert_store_error(result["open"], path, "permission denied", "read-only", "readonly")
    else:
        # Opening read-only is fine too: then reads work and every write is a StoreError.
        assert result["read"] == [{"x": 1}, [1, 2]]
        for name, error in result["writes"].items():
            assert error is not None, f"{name} succeeded on a read-only store"
            assert_store_error(error, path)

    # The cause fixed, everything is there and the store takes writes again.
    st_ = LMDBStore(path)
    try:
        await check_populated(st_)
        assert set(await st_.get_steps("a")) == {"s1"}  # no half-written leftovers
    finally:
        st_.close()
    await check_writable(path)


@pytest.mark.parametrize("depth", ["store.lmdb", "deeper/store.lmdb"])
async def test_store_under_a_read_only_directory_is_a_store_error(shared_dir: Path, depth: str) -> None:
    parent = shared_dir / "read-only"
    parent.mkdir(parents=True)
    _give_to_test_user(shared_dir)
    path = parent / depth
    os.chmod(parent, 0o500)
    try:
        result = run_child(_READ_ONLY_CHILD, str(path), str(shared_dir))
    finally:
        os.chmod(parent, 0o700)
    _skip_if_asked(result)
    assert_store_error(result["open"], path, "permission denied", "read-only", "readonly")
    assert os.listdir(parent) == []  # nothing half-created

    st_ = LMDBStore(path)  # the cause fixed, the same path makes a store
    try:
        await st_.create_instance(make_instance("a"))
        assert (await st_.get_instance("a")) is not None
    finally:
        st_.close()


# -- a full disk ---------------------------------------------------------------
# RLIMIT_FSIZE with SIGXFSZ ignored makes every write past the limit fail
# (EFBIG, or a short write that LMDB reports as EIO), like a disk that is full.

_LIMIT_PRELUDE = _CHILD_PRELUDE + r"""
import resource, signal


def limit_file_size(store, headroom):
    limit = os.path.getsize(os.path.join(store, "data.mdb")) + headroom
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit
"""

_FULL_DISK_STORE_CHILD = _LIMIT_PRELUDE + r"""
path = sys.argv[1]
BLOB = 40_000


def blob(i):
    return bytes([i % 251]) * BLOB


async def main():
    out = {"durable": [], "failed": None}
    st = LMDBStore(path, map_size=128 * 1024)  # the map grows too while the disk fills
    try:
        await st.create_instance(WorkflowInstance(id="a", workflow_name="wf", status=InstanceStatus.RUNNING))
        out["limit"] = limit_file_size(path, 512 * 1024)
        async with trio.open_nursery() as nursery:
            await nursery.start(st.run)
            for i in range(200):
                key = f"s{i}"
                try:
                    await st.put_step("a", StepResult(step_name=key, status=StepStatus.COMPLETED, key=key,
                                                      output=blob(i)))
                except Exception as exc:
                    out["failed"] = {"key": key, **err(exc)}
                    break
                out["durable"].append(key)
            # still usable in this process: everything written reads back
            steps = await st.get_steps("a")
            out["read_back"] = [k for k in out["durable"] if k in steps and steps[k].output == blob(int(k[1:]))]
            out["failed_key_stored"] = out["failed"] is not None and out["failed"]["key"] in steps
            try:  # an instance update fails cleanly too (or fits)
                await st.update_instance(WorkflowInstance(id="a", workflow_name="wf", status=InstanceStatus.RUNNING,
                                                          input=b"i" * 600_000))
                out["update"] = None
            except Exception as exc:
                out["update"] = err(exc)
            nursery.cancel_scope.cancel()
        try:  # and inline, without the writer thread
            await st.put_step("a", StepResult(step_name="inline", status=StepStatus.COMPLETED, key="inline",
                                              output=b"x" * 1_000_000))
            out["inline"] = None
        except Exception as exc:
            out["inline"] = err(exc)
        out["readable_after"] = len(await st.get_steps("a"))
    finally:
        st.close()
    return out


print(json.dumps(trio.run(main)))
"""


async def test_full_disk_during_writes_is_a_store_error_and_loses_nothing(store_path: Path) -> None:
    result = run_child(_FULL_DISK_STORE_CHILD, str(store_path))
    failed = result["failed"]
    assert failed is not None, f"no write failed under a {result['limit']} byte file size limit"
    assert_store_error(failed, store_path, "write failed")
    assert result["durable"], "the limit left no room for a single checkpoint"
    assert result["read_back"] == result["durable"]  # the same process still reads them
    assert not result["failed_key_stored"]
    assert_store_error(result["inline"], store_path, "write failed")
    if result["update"] is not None:
        assert_store_error(result["update"], store_path, "write failed")
    assert result["readable_after"] == len(result["durable"])

    # The limit lifted (a new process): every checkpoint reported durable is intact.
    st_ = LMDBStore(store_path)
    try:
        steps = await st_.get_steps("a")
        assert set(steps) == set(result["durable"])
        for key in result["durable"]:
            assert steps[key].output == bytes([int(key[1:]) % 251]) * 40_000
        a = await st_.get_instance("a")
        assert a is not None and a.status is InstanceStatus.RUNNING
    finally:
        st_.close()
    await check_writable(store_path)


_FULL_DISK_ENGINE_CHILD = _LIMIT_PRELUDE + r"""
from durable import Engine, step, workflow

path, mode, headroom = sys.argv[1], sys.argv[2], int(sys.argv[3])
STEPS, BLOB = 12, 40_000
ran = []


@step
async def chunk(i: int) -> bytes:
    ran.append(i)
    return bytes([i]) * BLOB


@workflow(name="fill")
async def fill(n: int) -> int:
    total = 0
    for i in range(n):
        total += len(await chunk(i))
    return total


@step
async def tiny() -> int:
    ran.append(-1)
    return 1


@workflow(name="big-output")
async def big_output(n: int) -> bytes:
    await tiny()
    return b"o" * n


async def main():
    out = {"checkpointed": [], "wait": None, "engine_error": None}
    try:
        async with Engine.open(path, map_size=128 * 1024) as engine:
            engine.workflows.register(fill)
            engine.workflows.register(big_output)
            engine.events.on("workflow.step.completed",
                             lambda e: out["checkpointed"].append(e.output[0] if e.step_name == "chunk" else -1))
            if mode == "resume":
                out["resumed"] = await engine.workflows.resume()
            else:
                if headroom:
                    out["limit"] = limit_file_size(path, headroom)
                if mode == "fill":
                    await engine.workflows.start(fill, STEPS, id="w1")
                else:
                    await engine.workflows.start(big_output, 2_000_000, id="w1")
            try:
                with trio.fail_after(30):
                    inst = await engine.workflows.wait("w1")
                out["wait"] = {"status": str(inst.status), "error": inst.error,
                               "output": inst.output if isinstance(inst.output, int) else len(inst.output or b"")}
            except StoreError as exc:
                out["wait"] = err(exc)
            except trio.TooSlowError:
                out["wait"] = "timeout"
    except BaseException as exc:  # the engine itself went down
        out["engine_error"] = repr(exc)
    out["ran"] = ran
    return out


print(json.dumps(trio.run(main)))
"""


def _engine_child(path: Path, mode: str, headroom: int = 0) -> dict[str, Any]:
    return run_child(_FULL_DISK_ENGINE_CHILD, str(path), mode, str(headroom))


async def _stored(path: Path) -> tuple[WorkflowInstance, dict[str, StepResult]]:
    st_ = LMDBStore(path)
    try:
        inst = await st_.get_instance("w1")
        assert inst is not None
        return inst, await st_.get_steps("w1")
    finally:
        st_.close()


async def test_full_disk_during_a_step_checkpoint_names_the_store_and_keeps_the_checkpoints(
    store_path: Path,
) -> None:
    """The run stops at the failed checkpoint, with a StoreError naming the store; the engine survives."""
    first = _engine_child(store_path, "fill", 256 * 1024)
    assert first["engine_error"] is None, first
    assert 0 < len(first["checkpointed"]) < 12, first  # the limit hit in the middle
    wait = first["wait"]
    if "status" in wait:  # ended: then as failed, saying why
        assert wait["status"] == "failed", wait
        assert str(store_path) in wait["error"] and "write failed" in wait["error"], wait
    else:  # or wait() raised the store's error
        assert_store_error(wait, store_path, "write failed")
    # No step ran past the one whose checkpoint failed.
    assert first["ran"] == list(range(len(first["checkpointed"]) + 1)), first

    inst, steps = await _stored(store_path)
    done = [s for s in steps.values() if s.status is StepStatus.COMPLETED]  # (a "running" one may be there too)
    assert sorted(s.output[0] for s in done) == first["checkpointed"]
    for s in done:
        assert s.output == bytes([s.output[0]]) * 40_000
    assert inst.status in (InstanceStatus.RUNNING, InstanceStatus.FAILED)


async def test_full_disk_during_a_step_leaves_the_instance_resumable(store_path: Path) -> None:
    """A full disk is not the workflow's failure: once there is room, resume() completes the instance."""
    first = _engine_child(store_path, "fill", 256 * 1024)
    assert first["engine_error"] is None, first
    assert_store_error(first["wait"], store_path, "write failed")  # wait() tells why the run stopped
    inst, _ = await _stored(store_path)
    assert inst.status is InstanceStatus.RUNNING

    second = _engine_child(store_path, "resume")
    assert second["engine_error"] is None, second
    assert second["resumed"] == ["w1"]
    assert second["wait"] == {"status": "completed", "error": None, "output": 12 * 40_000}
    # exactly the steps without a checkpoint ran again
    assert second["ran"] == [i for i in range(12) if i not in first["checkpointed"]]


async def test_full_disk_while_recording_the_end_does_not_crash_the_engine(store_path: Path) -> None:
    first = _engine_child(store_path, "big-output", 256 * 1024)
    assert first["engine_error"] is None, first
    assert first["checkpointed"] == [-1]
    assert_store_error(first["wait"], store_path, "write failed")
    inst, steps = await _stored(store_path)
    assert inst.status is InstanceStatus.RUNNING and set(steps) == {"tiny#0"}

    second = _engine_child(store_path, "resume")
    assert second["engine_error"] is None, second
    assert second["resumed"] == ["w1"]
    assert second["wait"] == {"status": "completed", "error": None, "output": 2_000_000}
    assert second["ran"] == []  # tiny was checkpointed: only the body's code ran again


_SHARED_BATCH_CHILD = _LIMIT_PRELUDE + r"""
path = sys.argv[1]


async def main():
    out = {}
    st = LMDBStore(path, lazy_delay=60)  # a non-durable write waits for the next durable one
    try:
        await st.create_instance(WorkflowInstance(id="a", workflow_name="wf", status=InstanceStatus.RUNNING))
        await st.create_instance(WorkflowInstance(id="b", workflow_name="wf", status=InstanceStatus.RUNNING))
        limit_file_size(path, 256 * 1024)
        async with trio.open_nursery() as nursery:
            await nursery.start(st.run)
            # queued, not yet committed: it rides along with the next durable write
            await st.put_step("b", StepResult(step_name="small", status=StepStatus.RUNNING, key="small"), durable=False)
            try:
                await st.put_step("a", StepResult(step_name="huge", status=StepStatus.COMPLETED, key="huge",
                                                  output=b"h" * 2_000_000))
                out["huge"] = None
            except Exception as exc:
                out["huge"] = err(exc)
            out["b"] = sorted(await st.get_steps("b"))
            nursery.cancel_scope.cancel()
    finally:
        st.close()
    return out


print(json.dumps(trio.run(main)))
"""


def test_a_write_that_fills_the_disk_does_not_fail_the_writes_it_shares_a_commit_with(store_path: Path) -> None:
    result = run_child(_SHARED_BATCH_CHILD, str(store_path))
    assert_store_error(result["huge"], store_path, "write failed")
    assert result["b"] == ["small"]  # another instance's write, committed with it, still landed


# -- a corrupted byte ----------------------------------------------------------


async def _populate_three(path: Path) -> None:
    st_ = LMDBStore(path)
    try:
        await st_.create_instance(make_instance("a", input={"x": 1}, created=1))
        await st_.create_instance(make_instance("b", status="completed", created=2, output="done"))
        await st_.create_instance(make_instance("c", status="pending", created=3, input=["c"] * 50))
        await st_.put_step("a", make_step("s1", output=[1, 2], started_at=T0, completed_at=T0, attempts=1))
        await st_.put_step("a", make_step("s2", output="x" * 300, exception=StepFailed("boom", attempts=2)))
        await st_.put_step("c", make_step("s1", output={"c": 3}))
    finally:
        st_.close()


async def _snapshot(path: Path) -> dict[str, Any]:
    st_ = LMDBStore(path)
    try:
        return {
            "instances": {i: await st_.get_instance(i) for i in "abc"},
            "steps": {i: await st_.get_steps(i) for i in "abc"},
            "running": [i.id for i in await st_.get_running_instances()],
        }
    finally:
        st_.close()


def _positions(length: int) -> list[int]:
    return sorted({0, 1, 2, 4, 5, 6, 7, length // 3, length // 2, length - 2, length - 1})


@pytest.mark.parametrize("target", ["step a/s1", "step a/s2", "instance c", "instance b"])
async def test_a_corrupted_byte_fails_only_its_own_record(store_path: Path, target: str) -> None:
    await _populate_three(store_path)
    before = await _snapshot(store_path)
    kind, name = target.split()
    db, key = (b"steps", name.replace("/", "\0").encode()) if kind == "step" else (b"instances", name.encode())
    good = raw_get(store_path, db, key)
    assert good is not None, (db, key)

    for pos in _positions(len(good)):
        for flip in (0xFF, 0x01):
            bad = bytearray(good)
            bad[pos] ^= flip
            raw_put(store_path, [(db, key, bytes(bad))])
            st_ = LMDBStore(store_path)
            try:
                owner = name.split("/")[0]
                with pytest.raises(StoreError) as info:  # the damaged record says so...
                    await (st_.get_steps(owner) if kind == "step" else st_.get_instance(owner))
                assert info.value.path == str(store_path)
                assert str(store_path) in str(info.value) and "corrupt" in str(info.value), info.value
                # ...and every other record reads as before
                for iid in "abc":
                    if iid != owner:
                        assert await st_.get_instance(iid) == before["instances"][iid], (pos, iid)
                        assert await st_.get_steps(iid) == before["steps"][iid], (pos, iid)
                if kind == "instance":
                    assert await st_.get_steps(owner) == before["steps"][owner]  # its steps too
                if target == "instance b":  # finished: the running ones never read it
                    assert [i.id for i in await st_.get_running_instances()] == before["running"]
                    with pytest.raises(StoreError):
                        await st_.get_instances_by_workflow("wf", "completed")
                else:
                    with pytest.raises(StoreError):
                        await st_.get_running_instances()
                    assert [i.id for i in await st_.get_instances_by_workflow("wf", "completed")] == ["b"]
            finally:
                st_.close()

    raw_put(store_path, [(db, key, good)])  # the cause fixed: everything as it was
    assert await _snapshot(store_path) == before


async def test_a_record_under_another_key_is_a_store_error(store_path: Path) -> None:
    """A record that is valid but not the one its key names (a swapped or misplaced value) is corruption.

    Read as it is, instance ``a`` would come back as ``c``, and the engine
    would resume (and write over) the wrong instance.
    """
    await _populate_three(store_path)
    c_instance, a_s2 = raw_get(store_path, b"instances", b"c"), raw_get(store_path, b"steps", b"a\0s2")
    assert c_instance is not None and a_s2 is not None
    raw_put(store_path, [
        (b"instances", b"a", c_instance),
        (b"steps", b"c\0s1", a_s2),
    ])
    st_ = LMDBStore(store_path)
    try:
        with pytest.raises(StoreError, match="corrupt"):
            await st_.get_instance("a")
        with pytest.raises(StoreError, match="corrupt"):
            await st_.get_steps("c")
        assert (await st_.get_instance("b")) is not None
    finally:
        st_.close()


async def test_a_step_whose_key_cannot_be_encoded_is_a_store_error(store_path: Path) -> None:
    """A checksummed step record holding a key with a lone surrogate (no write can store one) is corrupt."""
    await _populate_three(store_path)
    record = ("step", "s1", "completed", None, None, None, None, None, 1, "s\ud800", "task", None, None, None)
    raw_put(store_path, [(b"steps", b"a\0s1", _seal(pickle.dumps(record)))])
    st_ = LMDBStore(store_path)
    try:
        with pytest.raises(StoreError, match=r"corrupt record at .*steps/b'a\\x00s1': it holds step 's\\ud800'"):
            await st_.get_steps("a")
        assert (await st_.get_steps("c")).keys() == {"s1"}
    finally:
        st_.close()


# -- fuzzing the codec -----------------------------------------------------------

_FIELDS = [
    "id", "workflow_name", "status", "input", "current_step", "output", "error", "step_results", "created_at",
    "started_at", "completed_at", "deadline", "args", "kwargs", "error_type", "step_name", "attempts", "key",
    "step_type", "function", "exception", "next_attempt_at", "unknown", "",
]

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
    st.binary(max_size=20), st.sampled_from([*InstanceStatus, *StepStatus, "running", "completed", "weird"]),
    st.datetimes(timezones=st.just(UTC)), st.just(ValueError("x")), st.just(timezone.utc),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(st.text(max_size=5), inner, max_size=4),
        st.dictionaries(st.integers(), inner, max_size=3), st.frozensets(st.integers(), max_size=3),
    ),
    max_leaves=10,
)
_VALID_INSTANCE = {"id": "a", "workflow_name": "wf", "status": "running", "created_at": T0, "args": (), "kwargs": {}}
_VALID_STEP = {"step_name": "s", "status": "completed", "key": "s#0", "attempts": 1, "started_at": T0}


_VALID_STEP_TUPLE = ("step", "s", "completed", None, None, None, 1_714_564_800_000_000, None, 1, "s#0", "task", None,
                     None, None)
_VALID_INSTANCE_TUPLE = ("instance", "a", "wf", "running", None, None, None, None, 1_714_564_800_000_000, None, None,
                         None, (), {}, None)


@st.composite
def _shaped(draw: st.DrawFn) -> Any:
    """Pickleable things of the wrong (or nearly right) shape: what a foreign or damaged writer stores."""
    kind = draw(st.sampled_from(["value", "dict", "near-instance", "near-step", "near-instance-tuple",
                                 "near-step-tuple"]))
    if kind == "value":
        return draw(_values)
    if kind == "dict":
        return draw(st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=8))
    if kind.endswith("-tuple"):  # a format-4 record: some items replaced, cut or appended
        items = list(_VALID_INSTANCE_TUPLE if kind == "near-instance-tuple" else _VALID_STEP_TUPLE)
        for _ in range(draw(st.integers(0, 2))):
            items[draw(st.integers(0, len(items) - 1))] = draw(_values)
        cut = draw(st.integers(0, len(items) + 2))
        return tuple(items[:cut] + draw(st.lists(_values, max_size=2)) if cut > len(items) else items[:cut])
    base = dict(_VALID_INSTANCE if kind == "near-instance" else _VALID_STEP)
    for name in draw(st.lists(st.sampled_from(list(base)), max_size=2)):
        base.pop(name, None)
    base.update(draw(st.dictionaries(st.sampled_from(_FIELDS), _values, max_size=3)))
    return base


def _sample_records() -> list[bytes]:
    exc = StepFailed("boom", workflow="wf", instance_id="a", step="s#0", attempts=3)
    return [
        encode_instance(make_instance("a", input={"order": [1, 2.5, "x", None]}, args=(1, "two"), kwargs={"k": b"v"},
                                      deadline=T0, error="e", error_type="E", current_step="s")),
        encode_step(make_step("s#0", name="s", input=("i",), output={"o": [T0]}, started_at=T0, attempts=2,
                              function="mod.fn", next_attempt_at=T0)),
        encode_step(StepResult(step_name="f", status=StepStatus.FAILED, key="f#0", error="boom", exception=exc)),
    ]


_RECORDS = _sample_records()


@st.composite
def _mutated_pickle(draw: st.DrawFn) -> bytes:
    """The pickle of a real record with a few bytes changed, cut or inserted."""
    payload = bytearray(draw(st.sampled_from(_RECORDS))[5:])  # strip envelope and checksum
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "flip", "cut", "delete", "insert"]))
        i = draw(st.integers(0, max(len(payload) - 1, 0)))
        if op == "set" and payload:
            payload[i] = draw(st.integers(0, 255))
        elif op == "flip" and payload:
            payload[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del payload[i:]
        elif op == "delete":
            del payload[i:i + draw(st.integers(1, 8))]
        else:
            payload[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(payload)


_garbage = st.one_of(
    st.binary(max_size=300),                                                   # anything at all
    st.binary(max_size=300).map(lambda b: b"\x01" + b),                         # the unchecked envelope
    st.binary(max_size=300).map(lambda b: b"\x02" + b),                         # the checked one, wrong sum
    st.binary(max_size=300).map(_seal),                                         # the right sum over junk
    st.tuples(_shaped(), st.integers(0, 5)).map(lambda t: _seal(pickle.dumps(t[0], protocol=t[1]))),
    st.tuples(_shaped(), st.integers(0, 5)).map(lambda t: b"\x01" + pickle.dumps(t[0], protocol=t[1])),
    _mutated_pickle().map(lambda p: b"\x01" + p),                              # near-valid, unchecked
    st.tuples(st.sampled_from(_RECORDS), st.integers(0, 10_000), st.integers(1, 255)).map(  # one damaged byte
        lambda t: t[0][: t[1] % len(t[0])] + bytes([t[0][t[1] % len(t[0])] ^ t[2]]) + t[0][t[1] % len(t[0]) + 1:]
    ),
)

_FUZZ = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _check_instance(inst: WorkflowInstance, *, from_store: bool = False) -> None:
    """A decoded instance is one the engine can use: right types everywhere."""
    assert isinstance(inst, WorkflowInstance)
    assert isinstance(inst.id, str) and inst.id and isinstance(inst.workflow_name, str) and inst.workflow_name
    assert type(inst.status) is InstanceStatus
    for name in ("current_step", "error", "error_type"):
        assert getattr(inst, name) is None or isinstance(getattr(inst, name), str), name
    for name in ("created_at", "started_at", "completed_at", "deadline"):
        assert getattr(inst, name) is None or isinstance(getattr(inst, name), datetime), name
    assert isinstance(inst.args, tuple)
    assert all(isinstance(k, str) for k in inst.kwargs)
    if from_store:
        for step in inst.step_results.values():
            _check_step(step)
    else:
        assert dict(inst.step_results) == {}  # never taken from the record: steps are stored apart


def _check_step(step: StepResult) -> None:
    assert isinstance(step, StepResult)
    assert isinstance(step.step_name, str) and isinstance(step.key, str) and isinstance(step.step_type, str)
    assert type(step.status) is StepStatus
    assert isinstance(step.attempts, int) and not isinstance(step.attempts, bool)
    for name in ("error", "function"):
        assert getattr(step, name) is None or isinstance(getattr(step, name), str), name
    for name in ("started_at", "completed_at", "next_attempt_at"):
        assert getattr(step, name) is None or isinstance(getattr(step, name), datetime), name
    assert step.exception is None or isinstance(step.exception, BaseException)


@_FUZZ
@given(_garbage)
def test_fuzzed_instance_records_decode_or_raise_store_error(data: bytes) -> None:
    try:
        inst = decode_instance(data, "fuzz:instances/a", "/the/store")
    except StoreError as exc:
        assert exc.path == "/the/store" and "fuzz:instances/a" in str(exc)
        return
    _check_instance(inst)


@_FUZZ
@given(_garbage)
def test_fuzzed_step_records_decode_or_raise_store_error(data: bytes) -> None:
    try:
        step = decode_step(data, "fuzz:steps/a", "/the/store")
    except StoreError as exc:
        assert exc.path == "/the/store" and "fuzz:steps/a" in str(exc)
        return
    _check_step(step)


def test_every_damaged_byte_of_a_record_is_caught() -> None:
    """A checksum catches any one changed byte: no damaged record decodes to different data."""
    for good in _RECORDS:
        decode = decode_instance if good is _RECORDS[0] else decode_step
        for pos in range(len(good)):
            for flip in (0x01, 0x80, 0xFF):
                bad = bytearray(good)
                bad[pos] ^= flip
                with pytest.raises(StoreError):
                    decode(bytes(bad), "rec", "/p")


def test_wrongly_typed_records_are_store_errors() -> None:
    """Right shape, wrong types: the kind of record that would break sorting or resuming later."""
    bad_instances = [
        {**_VALID_INSTANCE, "id": 5},
        {**_VALID_INSTANCE, "id": ""},
        {**_VALID_INSTANCE, "id": "a\0b"},
        {**_VALID_INSTANCE, "workflow_name": None},
        {**_VALID_INSTANCE, "created_at": "yesterday"},
        {**_VALID_INSTANCE, "deadline": 12.5},
        {**_VALID_INSTANCE, "args": [1, 2]},
        {**_VALID_INSTANCE, "kwargs": {1: "x"}},
        {**_VALID_INSTANCE, "kwargs": [("a", 1)]},
        {**_VALID_INSTANCE, "error": ValueError("x")},
        {**_VALID_INSTANCE, "status": ["running"]},
        {**_VALID_INSTANCE, "status": None},
    ]
    for fields in bad_instances:
        with pytest.raises(StoreError, match="corrupt record at here"):
            decode_instance(_seal(pickle.dumps(fields)), "here", "/p")
    bad_steps = [
        {**_VALID_STEP, "step_name": ["s"]},
        {**_VALID_STEP, "key": None},
        {**_VALID_STEP, "attempts": "1"},
        {**_VALID_STEP, "attempts": True},
        {**_VALID_STEP, "started_at": 0.5},
        {**_VALID_STEP, "started_at": True},
        {**_VALID_STEP, "started_at": 10**30},  # microseconds past year 9999
        {**_VALID_STEP, "exception": "boom"},
        {**_VALID_STEP, "status": "weird"},
    ]
    for fields in bad_steps:
        with pytest.raises(StoreError, match="corrupt record at here"):
            decode_step(_seal(pickle.dumps(fields)), "here", "/p")
    # unknown fields (a newer writer's) are ignored, and a stored step_results never overrides the steps
    inst = decode_instance(_seal(pickle.dumps({**_VALID_INSTANCE, "later": 1, "step_results": {"x": 1}})), "h", "/p")
    _check_instance(inst)


def test_a_huge_memo_index_in_an_unchecked_record_is_refused_quickly() -> None:
    """Five bad bytes (LONG_BINPUT 2**30) would make the C unpickler allocate and clear gigabytes."""
    for index in (2**28, 2**30, 2**31 - 1):
        data = b"\x01\x80\x04N" + b"r" + index.to_bytes(4, "little") + b"."
        with pytest.raises(StoreError, match="memo"):
            decode_instance(data, "here", "/p")


def test_legacy_unchecked_records_still_decode() -> None:
    """Records written before the checksum (envelope 1) are read as before."""
    inst = make_instance("a", input={"x": 1})
    legacy = b"\x01" + encode_instance(inst)[5:]
    assert decode_instance(legacy) == inst


# -- fuzzing a real store ------------------------------------------------------


_TARGETS = [
    (b"instances", b"a"), (b"instances", b"b"), (b"instances", b"c"),
    (b"steps", b"a\0s1"), (b"steps", b"a\0s2"), (b"steps", b"c\0s1"), (b"steps", b"a\0fuzz"),
]


def test_fuzzed_records_in_a_store_give_only_store_errors(store_path: Path) -> None:
    trio.run(_populate_three, store_path)
    before = trio.run(_snapshot, store_path)
    originals = {t: raw_get(store_path, *t) for t in _TARGETS}

    async def reads(store: LMDBStore) -> dict[str, Any]:
        """Each read API, called for every instance: its result or the StoreError it raised."""
        calls: dict[str, Any] = {"running": store.get_running_instances, "by-workflow": lambda: store.get_instances_by_workflow("wf"),
                                 "completed": lambda: store.get_instances_by_workflow("wf", "completed")}
        for iid in "abc":
            calls[f"instance {iid}"] = lambda iid=iid: store.get_instance(iid)
            calls[f"steps {iid}"] = lambda iid=iid: store.get_steps(iid)
        out: dict[str, Any] = {}
        for name, call in calls.items():
            try:
                out[name] = await call()
            except StoreError as exc:  # anything else fails the test
                assert exc.path == str(store_path) and str(store_path) in str(exc), exc
                out[name] = exc
        return out

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.sampled_from(_TARGETS), _garbage)
    def check(target: tuple[bytes, bytes], garbage: bytes) -> None:
        raw_put(store_path, [(target[0], target[1], garbage)])
        try:
            store = LMDBStore(store_path)
            try:
                got = trio.run(reads, store)
            finally:
                store.close()
        finally:
            original = originals[target]
            if original is None:
                raw_delete(store_path, target[0], target[1])
            else:
                raw_put(store_path, [(target[0], target[1], bytes(original))])
        for value in got.values():
            for inst in value if isinstance(value, list) else [value]:
                if isinstance(inst, WorkflowInstance):
                    _check_instance(inst, from_store=True)
            if isinstance(value, dict):
                for s in value.values():
                    _check_step(s)
        # what the damaged record does not touch reads as before
        owner = target[1].split(b"\0")[0].decode()
        for iid in "abc":
            if iid != owner:
                assert got[f"instance {iid}"] == before["instances"][iid]
                assert got[f"steps {iid}"] == before["steps"][iid]

    check()
    assert trio.run(_snapshot, store_path) == before


@settings(max_examples=60, deadline=None, database=None)
@given(st.binary(max_size=12))
def test_fuzzed_format_markers_give_only_store_errors(marker: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "store.lmdb"
        LMDBStore(path).close()
        raw_put(path, [(b"meta", b"format", marker)])
        try:
            LMDBStore(path).close()
        except StoreError as exc:
            assert exc.path == str(path) and "format" in str(exc)
        else:
            assert 1 <= int(marker) <= FORMAT_VERSION  # opened: then it must be a version this durable reads
