"""Two processes on one LMDB store: map growth by one is adopted by the other."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import trio

from durable import LMDBStore, StepResult, StepStatus
from durable.stores._lmdb.sharedlock import SharedLock

GROW = textwrap.dedent(
    """
    import sys, trio
    from durable import LMDBStore, StepResult, StepStatus
    async def main():
        s = LMDBStore(sys.argv[1], map_size=1 << 20)
        for i in range(40):
            await s.put_step("other", StepResult(step_name="s", status=StepStatus.COMPLETED,
                                                 key=f"s#{i}", output=b"x" * 200_000))
        print(s.stats()["map_size"])
        s.close()
    trio.run(main)
    """
)


def test_a_map_grown_by_another_process_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "s.lmdb"
    store = LMDBStore(path, map_size=1 << 20)

    async def before() -> None:
        await store.put_step("mine", StepResult(step_name="s", status=StepStatus.COMPLETED, key="s#0", output=1))

    async def after() -> None:
        # Reads and writes both meet the grown map (MapResizedError) and adopt it.
        steps = await store.get_steps("other")
        assert len(steps) == 40 and all(len(s.output) == 200_000 for s in steps.values())
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)  # through the writer thread too
            await store.put_step("mine", StepResult(step_name="s", status=StepStatus.COMPLETED, key="s#1", output=2))
            nursery.cancel_scope.cancel()
        assert sorted(s.output for s in (await store.get_steps("mine")).values()) == [1, 2]

    try:
        trio.run(before)
        out = subprocess.run([sys.executable, "-c", GROW, str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) > 1 << 20
        trio.run(after)
        assert store.stats()["map_size"] >= int(out.stdout)
    finally:
        store.close()


def test_the_shared_lock_excludes_resizes_from_open_transactions() -> None:
    import threading

    lock, order = SharedLock(), []
    with lock.shared(), lock.shared():  # shared holders nest and overlap
        t = threading.Thread(target=lambda: (lock.exclusive().__enter__(), order.append("resize")))
        t.start()
        t.join(0.05)
        assert order == []  # waits for every shared holder
        order.append("txn done")
    t.join(5)
    assert order == ["txn done", "resize"]


def test_the_shared_lock_under_contention_never_overlaps_and_never_hangs() -> None:
    """Readers and resizers in several threads: an exclusive holder is always alone, and no
    waiter is left asleep (a release wakes only when somebody waits: that must not miss one)."""
    import threading

    lock = SharedLock()
    state = {"shared": 0, "exclusive": 0}
    guard = threading.Lock()
    errors: list[str] = []

    def reader() -> None:
        for _ in range(3000):
            with lock.shared():
                with guard:
                    state["shared"] += 1
                    if state["exclusive"]:
                        errors.append("a reader ran during a resize")
                with guard:
                    state["shared"] -= 1

    def resizer() -> None:
        for _ in range(300):
            with lock.exclusive():
                with guard:
                    state["exclusive"] += 1
                    if state["shared"] or state["exclusive"] != 1:
                        errors.append(f"a resize was not alone: {state}")
                with guard:
                    state["exclusive"] -= 1

    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=resizer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung on the lock"
    assert errors == []


def test_a_read_takes_and_gives_back_the_shared_lock_under_ki_protection(tmp_path: Path) -> None:
    """A Ctrl-C between taking the read's shared lock and its ``try`` would leave the read counted
    forever, and the next map resize waiting forever: both ends of a read are KI-protected."""
    seen: list[bool] = []

    async def main() -> None:
        store = LMDBStore(str(tmp_path / "s"))
        try:
            lmdb_env = store._env  # type: ignore[attr-defined]  # the store's LMDBEnv
            real_begin = lmdb_env.env.begin

            class Env:
                def __getattr__(self, name: str) -> object:
                    return getattr(real_env, name)

                def begin(self, **kw: object) -> object:
                    seen.append(trio.lowlevel.currently_ki_protected())
                    return real_begin(**kw)

            real_env = lmdb_env.env
            lmdb_env.env = Env()
            assert await store.get_instance("nope") is None
            lmdb_env.env = real_env
            assert lmdb_env.lock._shared == 0
        finally:
            store.close()

    trio.run(main)
    assert seen == [True]
