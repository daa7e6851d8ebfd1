"""Cross-process wake-ups (durable.stores._wake): listeners on AF_UNIX datagram sockets, wakers that find them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from durable.stores import _wake
from durable.stores._wake import Listener, Waker, notify_once, split_wakeup, wake_dir

pytestmark = pytest.mark.skipif(not _wake.SUPPORTED, reason="no AF_UNIX datagram sockets here")

#: Generous: only a hang fails; nothing here asserts timings.
PATIENCE = 30


@pytest.fixture(autouse=True)
def short_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private, short temp directory for wake dirs (pytest's tmp_path is too long for AF_UNIX paths).

    Children see it too, through TMPDIR. It asks for tmp_path first, so that pytest
    places its own temporary directories before the temp dir is redirected.
    """
    base = tempfile.mkdtemp(prefix="dw-")
    monkeypatch.setattr(tempfile, "tempdir", base)
    monkeypatch.setenv("TMPDIR", base)
    yield Path(base)
    with _wake._wakers_lock:
        for waker in _wake._wakers.values():
            waker.close()
        _wake._wakers.clear()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store path (the store itself need not exist)."""
    return str(tmp_path / "store.lmdb")


@pytest.fixture
def waker(store: str) -> Iterator[Waker]:
    """A waker for ``store``."""
    w = Waker(store)
    yield w
    w.close()


def _socket_files(store: str) -> list[str]:
    return sorted(os.listdir(wake_dir(store)))


# -- the directory -----------------------------------------------------------


def test_wake_dir_is_short_per_user_per_store_and_private(store: str, short_tempdir: Path, tmp_path: Path) -> None:
    path = wake_dir(store)
    assert os.path.dirname(path) == str(short_tempdir / f"durable-wake-{os.getuid()}")
    assert len(os.path.basename(path)) == 16
    for level in (path, os.path.dirname(path)):
        st = os.lstat(level)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    # The same store by another spelling shares it; another store does not.
    (tmp_path / "sub").mkdir()
    assert wake_dir(str(tmp_path / "sub" / ".." / "store.lmdb")) == path
    assert wake_dir(str(tmp_path / "other.lmdb")) != path


async def test_an_unsafe_directory_turns_wakeups_into_polling(store: str, short_tempdir: Path) -> None:
    parent = short_tempdir / f"durable-wake-{os.getuid()}"
    parent.mkdir(mode=0o700)
    parent.chmod(0o777)  # others could plant sockets here
    with pytest.raises(_wake.WakeUnavailable, match="writable by others"):
        wake_dir(store)
    async with Listener(store, ["work"]) as listener:
        assert not listener.available and listener.path is None
        assert await listener.wait(timeout=0) == []
    with Waker(store) as waker:
        assert waker.notify("work") == 0
    assert sorted(os.listdir(parent)) == []


# -- listening and notifying -------------------------------------------------


async def test_a_listener_gets_its_kinds_and_no_others(store: str, waker: Waker) -> None:
    async with Listener(store, ["work", "end"]) as listener:
        assert listener.available
        assert waker.notify("signal", b"i1") == 0
        assert await listener.wait(timeout=0) == []
        assert waker.notify("work", b"i1") == 1
        with trio.fail_after(PATIENCE):
            assert await listener.wait() == [b"work i1"]
        assert waker.notify("end") == 1
        with trio.fail_after(PATIENCE):
            (got,) = await listener.wait()
        assert split_wakeup(got) == ("end", b"")


async def test_several_listeners_each_get_one(store: str, waker: Waker) -> None:
    async with Listener(store, ["work"]) as a, Listener(store, ["work"]) as b, Listener(store, ["signal", "work"]) as c:
        other = Listener(store, ["events"])
        async with other:
            assert waker.notify("work", b"x") == 3
            for listener in (a, b, c):
                with trio.fail_after(PATIENCE):
                    assert await listener.wait() == [b"work x"]
            assert await other.wait(timeout=0) == []


async def test_wait_drains_every_queued_wakeup(store: str, waker: Waker) -> None:
    async with Listener(store, ["work"]) as listener:
        for i in range(5):
            assert waker.notify("work", str(i).encode()) == 1
        with trio.fail_after(PATIENCE):
            assert await listener.wait() == [f"work {i}".encode() for i in range(5)]
        assert await listener.wait(timeout=0) == []
        assert waker.notify("work", b"queued") == 1
        assert await listener.wait(timeout=0) == [b"work queued"]  # a poll still sees what is queued


async def test_a_full_listener_counts_as_reached_and_notify_does_not_block(store: str, waker: Waker) -> None:
    async with Listener(store, ["work"]) as listener:
        for _ in range(500):  # far beyond the default queue of a datagram socket
            assert waker.notify("work") == 1
        with trio.fail_after(PATIENCE):
            assert 1 <= len(await listener.wait()) < 500


async def test_a_flooded_listener_still_wakes_every_targeted_instance_without_a_poll(store: str,
                                                                                     waker: Waker) -> None:
    """Wake-ups naming instances, far past the socket's queue while nobody reads: those dropped are owed a bare
    wake-up (empty detail: look at every instance), delivered once the socket takes datagrams again."""
    targets = [f"instance-{i}" for i in range(300)]
    async with Listener(store, ["signal"]) as listener:
        for target in targets:
            assert waker.notify("signal", target.encode()) == 1  # most find the socket full
        woken: set[str] = set()
        everything = False
        with trio.fail_after(PATIENCE):  # no poll: only wake-ups, each wait blocking until one comes
            while not everything and woken != set(targets):
                for datagram in await listener.wait():
                    kind, detail = split_wakeup(datagram)
                    assert kind == "signal"
                    if detail:
                        woken.add(detail.decode())
                    else:
                        everything = True  # a receiver looks at every instance
        assert everything or woken == set(targets)
        assert len(woken) < len(targets)  # (the flood did overflow the socket)
        # Nothing more is owed once paid; later wake-ups go through as before.
        with trio.fail_after(PATIENCE):
            while waker._owed:
                await trio.sleep(0.01)
        assert waker.notify("signal", b"after") == 1
        with trio.fail_after(PATIENCE):
            got = await listener.wait()
        assert b"signal after" in got


async def test_an_owed_wakeup_to_a_listener_gone_is_dropped(store: str, waker: Waker) -> None:
    async with Listener(store, ["work"]) as listener:
        for i in range(100):
            waker.notify("work", str(i).encode())
        assert waker._owed
    with trio.fail_after(PATIENCE):
        while waker._owed:
            await trio.sleep(0.01)


async def test_a_listener_bound_in_the_same_timestamp_tick_is_found(
    store: str, waker: Waker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Directory timestamps can be coarse: a bind right after a listing may leave
    # st_mtime_ns unchanged. Simulated by winding the timestamp back by hand.
    monkeypatch.setattr(_wake, "_SETTLE_NS", 10**12)  # every change is recent
    directory = wake_dir(store)
    async with Listener(store, ["work"]) as first:
        tick = os.lstat(directory).st_mtime_ns
        assert waker.notify("work") == 1
        async with Listener(store, ["work"]) as second:
            os.utime(directory, ns=(tick, tick))
            assert waker.notify("work") == 2
            with trio.fail_after(PATIENCE):
                assert await second.wait() == [b"work "]
        with trio.fail_after(PATIENCE):
            assert await first.wait() == [b"work ", b"work "]


async def test_an_unchanged_settled_directory_is_listed_once(
    store: str, waker: Waker, monkeypatch: pytest.MonkeyPatch
) -> None:
    listings = 0
    scandir = os.scandir

    def counting_scandir(path: str) -> Any:
        nonlocal listings
        listings += 1
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counting_scandir)
    directory = wake_dir(store)
    async with Listener(store, ["work"]) as listener:
        old = os.lstat(directory).st_mtime_ns - 10**10
        os.utime(directory, ns=(old, old))  # settled long ago
        for _ in range(3):
            assert waker.notify("work") == 1
        assert listings == 1
        async with Listener(store, ["work"]):
            assert waker.notify("work") == 2  # a new listener changes the directory
        assert listings == 2
        with trio.fail_after(PATIENCE):
            assert len(await listener.wait()) == 4


async def test_close_unlinks_and_wakes_a_blocked_waiter(store: str, waker: Waker) -> None:
    listener = Listener(store, ["work"])
    with pytest.raises(RuntimeError, match="open"):
        await listener.wait()
    await listener.open()
    await listener.open()  # idempotent
    path = listener.path
    assert path is not None and os.path.basename(path).startswith(f"work.{os.getpid()}.")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)

    async def close_soon() -> None:
        await trio.sleep(0.01)
        listener.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_soon)
        with trio.fail_after(PATIENCE), pytest.raises(trio.ClosedResourceError):
            await listener.wait()
    assert not os.path.exists(path)
    listener.close()  # idempotent
    assert waker.notify("work") == 0
    with pytest.raises(trio.ClosedResourceError):
        await listener.open()


async def test_a_name_left_by_a_dead_process_with_our_pid_is_reused(store: str, waker: Waker) -> None:
    listener = Listener(store, ["work"])
    name = f"work.{os.getpid()}.{listener._counter}"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(os.path.join(wake_dir(store), name))
    stale.close()
    async with listener:
        assert os.path.basename(str(listener.path)) == name
        assert waker.notify("work") == 1


async def test_a_live_socket_with_our_name_is_left_alone(store: str, waker: Waker) -> None:
    # Another pid namespace (a container) sharing /tmp can have our pid.
    listener = Listener(store, ["work"])
    name = f"work.{os.getpid()}.{listener._counter}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(os.path.join(wake_dir(store), name))
        async with listener:
            assert listener.available and os.path.basename(str(listener.path)) != name
            assert waker.notify("work") == 2
            assert other.recv(100) == b"work "
            with trio.fail_after(PATIENCE):
                assert await listener.wait() == [b"work "]


def test_close_outside_trio_unlinks(store: str) -> None:
    listener = Listener(store, ["work"])
    trio.run(listener.open)
    path = listener.path
    assert path is not None and os.path.exists(path)
    listener.close()
    assert not os.path.exists(path)


def test_notify_with_no_listeners_reaches_nobody(store: str, waker: Waker) -> None:
    assert waker.notify("work") == 0  # the directory does not even exist
    wake_dir(store)
    assert waker.notify("work") == 0
    assert notify_once(store, "work", b"d") == 0
    cached = _wake._wakers[store]
    assert notify_once(store, "end") == 0
    assert _wake._wakers[store] is cached


def test_bad_kinds_and_details_are_refused(store: str, waker: Waker) -> None:
    for kind in ("", "a.b", "a+b", "a/b", "é", "x" * 33):
        with pytest.raises(ValueError):
            waker.notify(kind)
        with pytest.raises(ValueError):
            Listener(store, [kind])
    with pytest.raises(ValueError):
        Listener(store, [])
    with pytest.raises(TypeError):
        Listener(store, "work")
    with pytest.raises(ValueError):
        waker.notify("work", b"x" * (_wake.MAX_DETAIL + 1))
    assert waker.notify("work", b"x" * _wake.MAX_DETAIL) == 0


async def test_a_very_long_store_path_works(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["d" * 100] * 6)
    deep.mkdir(parents=True)
    store = str(deep / ("s" * 200 + ".lmdb"))
    assert len(store) > 800
    async with Listener(store, ["work", "signal", "end", "events"]) as listener:
        assert listener.available
        with Waker(store) as waker:
            assert waker.notify("events", b"e" * _wake.MAX_DETAIL) == 1
        with trio.fail_after(PATIENCE):
            assert await listener.wait() == [b"events " + b"e" * _wake.MAX_DETAIL]


# -- dead listeners ----------------------------------------------------------


def test_dead_listeners_are_removed_by_the_next_notify(store: str, waker: Waker) -> None:
    directory = wake_dir(store)
    # A socket closed without unlinking its file.
    closed = os.path.join(directory, "work+end.99999999.1")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(closed)
    sock.close()
    # A process killed while bound.
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            "s.bind(os.path.join(sys.argv[1], f'signal+work.{os.getpid()}.1'))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            directory,
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    killed = f"signal+work.{child.pid}.1"
    assert _socket_files(store) == sorted([os.path.basename(closed), killed])

    assert waker.notify("events") == 0  # not their kind: left alone
    assert len(_socket_files(store)) == 2
    assert waker.notify("work") == 0
    assert _socket_files(store) == []
    assert waker.notify("work") == 0


async def test_a_dead_listener_does_not_hide_live_ones(store: str, waker: Waker) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(wake_dir(store), "work.99999999.1"))
    sock.close()
    async with Listener(store, ["work"]) as listener:
        assert waker.notify("work") == 1
        assert _socket_files(store) == [os.path.basename(str(listener.path))]
        with trio.fail_after(PATIENCE):
            assert await listener.wait() == [b"work "]


# -- across processes --------------------------------------------------------


async def test_a_notify_from_another_process_wakes_the_listener(store: str) -> None:
    code = (
        "import sys\n"
        "from durable.stores._wake import notify_once\n"
        "print(notify_once(sys.argv[1], 'work', b'from-child'))\n"
    )
    async with Listener(store, ["work"]) as listener:
        async with trio.open_nursery() as nursery:
            async def run_child() -> None:
                result = await trio.run_process([sys.executable, "-c", code, store], capture_stdout=True)
                assert result.stdout.decode().strip() == "1"

            nursery.start_soon(run_child)
            with trio.fail_after(PATIENCE):
                assert await listener.wait() == [b"work from-child"]


async def test_a_waker_that_skips_its_own_process_reaches_only_others(store: str) -> None:
    """What a store uses: its commits wake other processes' listeners, never this process's own."""
    async with Listener(store, ["work"]) as mine:
        with Waker(store, skip_own=True) as waker:
            assert not waker.listens("work") and waker.notify("work") == 0
            assert await mine.wait(timeout=0) == []
        with Waker(store) as waker:
            assert waker.listens("work") and waker.notify("work") == 1
            assert await mine.wait(timeout=5) == [b"work "]
