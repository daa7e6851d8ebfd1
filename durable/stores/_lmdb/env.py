"""The LMDB environment of a store: opening it, read transactions, group-committed writes, map growth.

:class:`LMDBEnv` knows nothing of instances or steps: it opens the directory
(checking it is a durable store of a format this code reads), hands out read
transactions (``with env.read() as txn:``), and runs write functions
``fn(txn, *args)`` in the group-commit writer's transactions
(:meth:`LMDBEnv.write`, :meth:`LMDBEnv.write_later`). The table modules
(``instances``, ``steps``, ``signals``, ``leases``) are those functions;
:class:`~durable.stores._lmdb.store.LMDBStore` puts the two together.

Every read takes the environment's shared lock and a map resize takes it
alone (``sharedlock``); the map doubles when a write finds it full, and a
size another process set is adopted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, final

import lmdb
import trio

from ...errors import StoreError
from .._writer import WriteRequest, Writer, committed, outcome_of, run_writer, superseded
from .sharedlock import SharedLock

__all__ = ["FORMAT_VERSION", "LMDBEnv", "Tables"]

# 1: records behind a one-byte envelope; 2: records carry a CRC-32; 3: UTC times as integer
# microseconds; 4: records are tuples (tag, fields in a fixed order) instead of dicts. Earlier
# formats are still read, and the marker is upgraded on open. Format-4 readers ignore fields
# appended at the end of a record, as they ignored unknown keys of a dict (see _model/serde.py).
# 5: the same records, but their pickles may name modules of the layered layout (durable._model...,
# durable._graph...) that 0.1.0 cannot import: an older durable refuses the store as a whole.
# 6: queues, external jobs and the event log (new tables; pending instances waiting in a queue that an
# older durable would take over as orphans, past the queues' limits): an older durable refuses it.
# 7: ``eventorder`` (every event by id, for readers of all instances' events); built from ``events``
# when a format-6 store is opened.
FORMAT_VERSION = 7
_T = TypeVar("_T")


class Tables(NamedTuple):
    """The named databases of a store (see ``store.py`` for what each holds)."""

    meta: Any
    instances: Any
    steps: Any
    status: Any
    index: Any
    leases: Any
    owners: Any
    signals: Any
    queues: Any
    queued: Any
    qpos: Any
    inflight: Any
    qstate: Any
    dedup: Any
    events: Any
    jobs: Any
    jobq: Any
    jobheld: Any
    registry: Any
    delayed: Any
    eventorder: Any


_SEQ = b"seq"  # in meta: the store-wide sequence (queue order, event ids)


def next_seq(txn: Any, t: Tables) -> int:
    """The next number of the store-wide sequence (in a write transaction)."""
    raw = txn.get(_SEQ, db=t.meta)
    seq = (int(bytes(raw)) if raw is not None else 0) + 1
    txn.put(_SEQ, str(seq).encode(), db=t.meta)
    return seq


def _index_events(txn: Any, t: Tables) -> None:
    """(Upgrading a format-6 store) index every stored event by its id in ``eventorder``."""
    for key, _ in txn.cursor(db=t.events):
        key = bytes(key)
        txn.put(key[-8:], key[:-9], db=t.eventorder)


@final
class LMDBEnv:
    """An opened store directory.

    Raises:
        StoreError: the path is a file, a directory that is not a store, a
            store of a newer format, unreadable, or corrupt.
    """

    def __init__(self, path: str, map_size: int, lazy_delay: float) -> None:
        self.path = path
        self._lazy_delay = lazy_delay
        self.lock = SharedLock()  # transactions (shared) vs. map resizes (exclusive) in this process
        self._writer: Writer | None = None
        self.closed = False
        # Called (on the writer's thread) with the notes of each committed batch: wake-ups for other processes.
        self.on_commit: Callable[[list[bytes]], None] | None = None
        self.env, self.tables = self._open(map_size)

    def fail(self, problem: str) -> StoreError:
        """A :class:`StoreError` naming the store's path."""
        return StoreError(f"{self.path}: {problem}", path=self.path)

    # -- opening -------------------------------------------------------------------

    def _open(self, map_size: int) -> tuple[lmdb.Environment, Tables]:
        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise self.fail("is a file, not a durable store directory")
        fresh = not os.path.exists(os.path.join(path, "data.mdb"))
        if fresh and os.path.isdir(path) and os.listdir(path):
            raise self.fail("is a non-empty directory that is not a durable store (no data.mdb)")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            env = lmdb.open(
                path, map_size=map_size, max_dbs=len(Tables._fields) + 2, mode=0o600,
                subdir=True, sync=True, metasync=True, lock=True, readahead=False,
            )
        except lmdb.Error as exc:
            raise self.fail(f"cannot open as an LMDB store: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise self.fail(f"cannot create or open: {exc.strerror or exc}") from exc
        try:
            if not fresh:
                # A data file shorter than its last used page means truncation (a
                # partial copy, a full disk): reading those pages would SIGBUS.
                info, psize = env.info(), env.stat()["psize"]
                needed = (info["last_pgno"] + 1) * psize
                size = os.path.getsize(os.path.join(path, "data.mdb"))
                if size < needed:
                    raise self.fail(f"data.mdb is truncated: {size} bytes, but its pages need {needed}")
            tables = Tables(*(env.open_db(name.encode()) for name in Tables._fields))
            self._check_format(env, tables, fresh)
        except StoreError:
            env.close()
            raise
        except lmdb.Error as exc:
            env.close()
            raise self.fail(f"is not a usable durable store: {type(exc).__name__}: {exc}") from exc
        return env, tables

    def _check_format(self, env: lmdb.Environment, tables: Tables, fresh: bool) -> None:
        """Write the format marker of a new store; refuse a newer or unreadable one; upgrade an older one."""
        with env.begin(write=False) as txn:
            version = txn.get(b"format", db=tables.meta)
        if version is None:
            with env.begin(write=True) as txn:
                if not fresh and txn.stat(tables.instances)["entries"]:
                    raise self.fail("has records but no format marker: not a durable store")
                txn.put(b"format", str(FORMAT_VERSION).encode(), db=tables.meta)
            return
        if not version.isdigit() or version.startswith(b"0"):
            raise self.fail(f"has an unreadable format marker {version!r}")
        found = int(version)
        if found > FORMAT_VERSION:
            raise self.fail(
                f"was written by a newer durable (store format {found}, this version reads up to {FORMAT_VERSION})"
            )
        if found < FORMAT_VERSION:
            # Older records stay readable; new ones are of this format, so an
            # older durable must refuse the store as a whole, not record by record.
            with env.begin(write=True) as txn:
                if found == 6:
                    _index_events(txn, tables)
                txn.put(b"format", str(FORMAT_VERSION).encode(), db=tables.meta)

    # -- reading -------------------------------------------------------------------

    def read(self) -> _Reading:
        """``with env.read() as txn:`` a read transaction (with the map-resize handling).

        A class-based context manager, not a generator: it is on every read's path.
        """
        return _Reading(self)

    def begin_read(self) -> lmdb.Transaction:
        """A read transaction, with the shared lock held (``_Reading`` gives both back)."""
        if self.closed:
            raise self.fail("the store is closed")
        lock = self.lock
        for _ in range(2):
            lock.acquire_shared()
            try:
                return self.env.begin(write=False, buffers=False)
            except lmdb.MapResizedError:
                lock.release_shared()  # another process grew the map: adopt its size, then retry
            except lmdb.Error as exc:
                lock.release_shared()
                raise self.fail(f"read failed: {exc}") from exc
            except BaseException:
                lock.release_shared()
                raise
            self.resize(0)
        raise self.fail("read failed: the map kept being resized by another process")

    def resize(self, size: int) -> None:
        """Set the map size (0: adopt the size another process set), with no transaction of ours open."""
        with self.lock.exclusive():
            self.env.set_mapsize(size)

    # -- writing -------------------------------------------------------------------

    def run_batch(self, batch: list[WriteRequest]) -> None:
        """Run every write of ``batch`` in one transaction and commit it (writer thread), then hand its notes to
        ``on_commit`` (outside the transaction's error handling: a failing hook never makes a committed batch
        run again)."""
        if self._run_batch(batch):
            hook = self.on_commit
            notes = [r.note for r in batch if r.note is not None and r.error is None]
            if hook is not None and notes:
                try:
                    hook(notes)
                except Exception:  # pragma: no cover - a wake-up is best effort
                    logging.getLogger("durable.store").exception("wake-ups after a commit failed")

    def _run_batch(self, batch: list[WriteRequest]) -> bool:
        """Run and commit ``batch``; whether it committed (a split batch notifies its parts itself)."""
        while True:
            resize: int | None = None
            split = False
            with self.lock.shared():
                try:
                    txn = self.env.begin(write=True)
                except lmdb.MapResizedError:
                    resize = 0  # another process grew the map
                else:
                    try:
                        skip = superseded(batch)
                        for i, r in enumerate(batch):
                            if i not in skip:
                                r.result = r.fn(txn, *r.args)
                        txn.commit()
                    except lmdb.MapFullError:
                        txn.abort()
                        resize = self.env.info()["map_size"] * 2
                    except BaseException as exc:
                        txn.abort()
                        if len(batch) > 1:
                            split = True  # below, outside the lock
                        else:
                            err = self.fail(
                                f"write failed, nothing of this batch was stored: {type(exc).__name__}: {exc}"
                                f"{self._space_hint(exc)}"
                            )
                            for r in batch:
                                r.error = err
                            return False
                    else:
                        return True
            if split:
                # One failing write (a big checkpoint on a nearly full disk) must not
                # fail the others that happened to share its transaction: retry each alone.
                for r in batch:
                    r.result = None
                    self.run_batch([r])
                return False
            assert resize is not None  # every other way out of the block returned
            self.resize(resize)

    def _space_hint(self, exc: BaseException) -> str:
        """A hint after a failed write that looks like a full disk (LMDB reports a short write as EIO)."""
        text = str(exc)
        if "Input/output error" not in text and "No space" not in text and "too large" not in text:
            return ""
        try:
            st = os.statvfs(self.path)
            free = f"{st.f_bavail * st.f_frsize:,} bytes free"
        except OSError:
            free = "free space unknown"
        return f" (is the disk full, or a file size limit reached? {free})"

    async def write(
        self, fn: Callable[..., _T], durable: bool = True, key: bytes | None = None, args: tuple[Any, ...] = (),
        note: bytes | None = None,
    ) -> _T:
        """Run ``fn(txn, *args)`` in the writer's next transaction; returns (or raises) what it did.

        A ``LeaseLost`` that ``fn`` returns (so that the rest of its batch
        still commits) is raised here. A non-durable write returns ``None`` at
        once: it is queued (:meth:`write_later`). ``note`` is handed to
        ``on_commit`` once the write is committed (a wake-up for other processes).
        """
        if self.closed:
            raise self.fail("the store is closed")
        writer = self._writer
        if writer is None:
            # No writer thread (the store is used outside an engine): write inline.
            request = WriteRequest(fn, durable, None, key, args, note=note)
            self.run_batch([request])
            return outcome_of(request)  # type: ignore[no-any-return]
        if not durable:
            self.write_later(fn, key, args, note)
            return None  # type: ignore[return-value]
        request = WriteRequest(fn, True, trio.lowlevel.current_task(), key, args, note=note)
        return await committed(writer, request)  # type: ignore[no-any-return]

    def write_later(self, fn: Callable[..., Any], key: bytes | None = None, args: tuple[Any, ...] = (),
                    note: bytes | None = None) -> None:
        """Queue ``fn(txn, *args)`` as a non-durable write, without waiting (inline if there is no writer thread).

        A later queued write with the same ``key`` in the same commit supersedes it.
        """
        if self.closed:
            raise self.fail("the store is closed")
        request = WriteRequest(fn, False, None, key, args, note=note)
        writer = self._writer
        if writer is not None:
            writer.submit(request)
            return
        self.run_batch([request])
        outcome_of(request)  # written inline: the caller can be told, as write() tells it

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the group-commit writer thread until cancelled, then flush and stop it."""
        writer = Writer(self.run_batch, trio.lowlevel.current_trio_token(), self._lazy_delay, "durable-lmdb-writer")
        await run_writer(writer, self._attach_writer, task_status)

    def _attach_writer(self, writer: Writer | None) -> None:
        self._writer = writer

    def stats(self) -> dict[str, Any]:
        """Map size, entries per database and the writer's batch counts."""
        if self.closed:
            raise self.fail("the store is closed")
        info = self.env.info()
        with self.read() as txn:
            entries = {name: txn.stat(db)["entries"] for name, db in self.tables._asdict().items()}
        w = self._writer
        return {"map_size": info["map_size"], "entries": entries,
                "batches": w.batches if w else 0, "writes": w.writes if w else 0}

    def close(self) -> None:
        """Close the environment."""
        if not self.closed:
            self.closed = True
            self.env.close()


@final
class _Reading:
    """The context manager :meth:`LMDBEnv.read` gives."""

    __slots__ = ("_env", "_txn")

    def __init__(self, env: LMDBEnv) -> None:
        self._env = env

    # KI-protected (no cost per call: trio marks the code objects), so a Ctrl-C
    # cannot land between taking the shared lock and the ``try`` that gives it
    # back: a read counted forever would make the next map resize wait forever.
    @trio.lowlevel.enable_ki_protection
    def __enter__(self) -> lmdb.Transaction:
        self._txn = self._env.begin_read()
        return self._txn

    @trio.lowlevel.enable_ki_protection
    def __exit__(self, *exc: object) -> None:
        try:
            self._txn.abort()
        finally:
            self._env.lock.release_shared()
