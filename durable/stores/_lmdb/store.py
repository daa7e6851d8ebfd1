"""The LMDB store: the default, durable, multi-process-safe checkpoint store.

Layout (named databases in one LMDB environment, a directory):

``meta``       ``format`` -> the store's format version (refuses newer ones)
``instances``  instance id -> encoded :class:`WorkflowInstance` (no step results)
``steps``      ``id NUL step key`` -> encoded :class:`StepResult`
``status``     instance id -> ``status NUL workflow`` (what the index holds now)
``index``      ``status NUL workflow NUL id`` -> empty: finds running instances
               without reading finished ones
``leases``     instance id -> id of the owner running it (unfinished instances)
``owners``     owner id -> JSON :class:`Owner` record (host, pid, heartbeat)
``signals``    ``id NUL name NUL seq`` -> a queued signal's payload (``_lmdb_signals``)

Step checkpoint writes, signals and leases are in mixins of their own modules
(``_lmdb_steps``, ``_lmdb_signals``, ``_lmdb_leases``); this module opens the
store, reads, and group-commits writes.

Reads run in short read transactions on the trio loop (they cost about a
microsecond); writes go through the group-commit :class:`Writer` thread. The
map doubles when full. The directory is created owner-only: records are
cloudpickles, and loading a pickle runs code, so the store is exactly as
trusted as the code that reads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar, final

import lmdb
import trio

from ..._model.clock import pause_autojump, resume_autojump
from ..._model.records import InstanceStatus, StepResult, WorkflowInstance
from ..._model.serde import decode_instance, decode_step, encode_instance
from ...errors import StoreError
from .._base import step_key_bytes
from ..._model.ids import check_instance_id, check_workflow_name, is_valid_id
from .._join import join_steps
from .sharedlock import SharedLock
from .._lease import LeaseLost, Owner
from .leases import LMDBLeases
from .parts import finished
from .reads import LMDBReads
from .signals import LMDBSignals
from .steps import LMDBSteps
from .._writer import WriteRequest, Writer, superseded

__all__ = ["FORMAT_VERSION", "LMDBStore"]

# 1: records behind a one-byte envelope; 2: records carry a CRC-32; 3: UTC times as integer
# microseconds; 4: records are tuples (tag, fields in a fixed order) instead of dicts. Earlier
# formats are still read, and the marker is upgraded on open. Format-4 readers ignore fields
# appended at the end of a record, as they ignored unknown keys of a dict (see _serde).
FORMAT_VERSION = 4
_DBS = (b"meta", b"instances", b"steps", b"status", b"index", b"leases", b"owners", b"signals")
_T = TypeVar("_T")


def _refuse_abort(raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


@final
class LMDBStore(LMDBReads, LMDBSteps, LMDBSignals, LMDBLeases):
    """A :class:`~durable.stores.Store` in an LMDB environment at ``path`` (a directory).

    Args:
        path: the store's directory; created (owner-only) if missing.
        map_size: initial map size in bytes; the map doubles when full.
        lazy_delay: longest time a non-durable write waits for a commit (seconds, > 0).

    Raises:
        StoreError: the path is a file, a directory that is not a store, a
            store of a newer format, unreadable, or corrupt.

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str], *, map_size: int = 64 << 20, lazy_delay: float = 0.1) -> None:
        if not isinstance(lazy_delay, (int, float)) or not 0 < lazy_delay < float("inf"):
            raise ValueError(f"lazy_delay must be a number of seconds > 0, got {lazy_delay!r}")
        self._path = os.fspath(path)
        self._lazy_delay = float(lazy_delay)
        self._lock = SharedLock()  # transactions (shared) vs. map resizes (exclusive) in this process
        self._writer: Writer | None = None
        self._owner_cache: tuple[Owner, bytes, bytes] | None = None  # see _owner_record
        self._closed = False
        self._env = self._open(map_size)

    # -- opening ---------------------------------------------------------

    def _fail(self, problem: str) -> StoreError:
        return StoreError(f"{self._path}: {problem}", path=self._path)

    def _open(self, map_size: int) -> lmdb.Environment:
        path = self._path
        if os.path.exists(path) and not os.path.isdir(path):
            raise self._fail("is a file, not a durable store directory")
        fresh = not os.path.exists(os.path.join(path, "data.mdb"))
        if fresh and os.path.isdir(path) and os.listdir(path):
            raise self._fail("is a non-empty directory that is not a durable store (no data.mdb)")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            env = lmdb.open(
                path, map_size=map_size, max_dbs=len(_DBS) + 2, mode=0o600,
                subdir=True, sync=True, metasync=True, lock=True, readahead=False,
            )
        except lmdb.Error as exc:
            raise self._fail(f"cannot open as an LMDB store: {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise self._fail(f"cannot create or open: {exc.strerror or exc}") from exc
        try:
            if not fresh:
                # A data file shorter than its last used page means truncation (a
                # partial copy, a full disk): reading those pages would SIGBUS.
                info, psize = env.info(), env.stat()["psize"]
                needed = (info["last_pgno"] + 1) * psize
                size = os.path.getsize(os.path.join(path, "data.mdb"))
                if size < needed:
                    raise self._fail(f"data.mdb is truncated: {size} bytes, but its pages need {needed}")
            self._dbs = {name.decode(): env.open_db(name) for name in _DBS}
            meta = self._dbs["meta"]
            with env.begin(write=False) as txn:
                version = txn.get(b"format", db=meta)
            if version is None:
                with env.begin(write=True) as txn:
                    if not fresh and txn.stat(self._dbs["instances"])["entries"]:
                        raise self._fail("has records but no format marker: not a durable store")
                    txn.put(b"format", str(FORMAT_VERSION).encode(), db=meta)
            else:
                if not version.isdigit() or version.startswith(b"0"):
                    raise self._fail(f"has an unreadable format marker {version!r}")
                found = int(version)
                if found > FORMAT_VERSION:
                    raise self._fail(
                        f"was written by a newer durable (store format {found}, this version reads up to {FORMAT_VERSION})"
                    )
                if found < FORMAT_VERSION:
                    # Older records stay readable; new ones are of this format, so an
                    # older durable must refuse the store as a whole, not record by record.
                    with env.begin(write=True) as txn:
                        txn.put(b"format", str(FORMAT_VERSION).encode(), db=meta)
        except StoreError:
            env.close()
            raise
        except lmdb.Error as exc:
            env.close()
            raise self._fail(f"is not a usable durable store: {type(exc).__name__}: {exc}") from exc
        return env

    @property
    def path(self) -> str:
        """The store's directory."""
        return self._path

    # -- reading ---------------------------------------------------------

    def _load_steps(self, txn: lmdb.Transaction, instance_id: str) -> dict[str, StepResult]:
        prefix = instance_id.encode() + b"\0"
        out: dict[str, StepResult] = {}
        cursor = txn.cursor(db=self._dbs["steps"])
        if cursor.set_range(prefix):
            for k, v in cursor:
                k, v = bytes(k), bytes(v)
                if not k.startswith(prefix):
                    break
                where = f"{self._path}:steps/{k!r}"
                step = decode_step(v, where, self._path)
                try:
                    stored_as: bytes | None = step_key_bytes(instance_id, step.key)
                except UnicodeEncodeError:  # a key no write could have stored (a lone surrogate)
                    stored_as = None
                if stored_as != k:
                    raise StoreError(f"corrupt record at {where}: it holds step {step.key!r}", path=self._path)
                out[step.key] = step
        return out

    def _load(self, txn: lmdb.Transaction, instance_id: str, with_steps: bool = True) -> WorkflowInstance | None:
        if not is_valid_id(instance_id):
            return None
        data = txn.get(instance_id.encode(), db=self._dbs["instances"])
        if data is None:
            return None
        where = f"{self._path}:instances/{instance_id}"
        inst = decode_instance(bytes(data), where, self._path)
        if inst.id != instance_id:
            raise StoreError(f"corrupt record at {where}: it holds instance {inst.id!r}", path=self._path)
        if with_steps:
            inst = join_steps(inst, self._load_steps(txn, instance_id).values())
        return inst

    async def get_instance(self, instance_id: str, *, steps: bool = True) -> WorkflowInstance | None:
        """The instance with its step results (unless ``steps=False``), or ``None``."""
        with self._read() as txn:
            return self._load(txn, instance_id, steps)

    async def get_steps(self, instance_id: str) -> dict[str, StepResult]:
        """Every checkpoint of an instance, keyed by checkpoint key."""
        if not is_valid_id(instance_id):
            return {}
        with self._read() as txn:
            return self._load_steps(txn, instance_id)

    def _scan_index(self, prefixes: list[bytes], steps: bool) -> list[WorkflowInstance]:
        out: list[WorkflowInstance] = []
        with self._read() as txn:
            cursor = txn.cursor(db=self._dbs["index"])
            for prefix in prefixes:
                if not cursor.set_range(prefix):
                    continue
                for raw in cursor.iternext(keys=True, values=False):
                    k = bytes(raw)
                    if not k.startswith(prefix):
                        break
                    inst = self._load(txn, k.rsplit(b"\0", 1)[1].decode(), steps)
                    if inst is not None:
                        out.append(inst)
        out.sort(key=lambda i: (i.created_at is None, i.created_at or 0, i.id))
        return out

    async def get_instances_by_workflow(
        self, workflow_name: str, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of one workflow, optionally of one status, oldest first."""
        statuses = list(InstanceStatus) if status is None else [InstanceStatus(status)]
        return self._scan_index([f"{s.value}\0{workflow_name}\0".encode() for s in statuses], steps)

    async def get_all_instances(
        self, status: InstanceStatus | str | None = None, *, steps: bool = True
    ) -> list[WorkflowInstance]:
        """Instances of every workflow, optionally of one status, oldest first."""
        statuses = list(InstanceStatus) if status is None else [InstanceStatus(status)]
        return self._scan_index([f"{s.value}\0".encode() for s in statuses], steps)

    async def get_running_instances(self, *, steps: bool = True) -> list[WorkflowInstance]:
        """Instances that are pending or running, oldest first."""
        return self._scan_index(
            [f"{s.value}\0".encode() for s in (InstanceStatus.PENDING, InstanceStatus.RUNNING)], steps)

    # -- writing ---------------------------------------------------------

    def _run_batch(self, batch: list[WriteRequest]) -> None:
        """Run every write of ``batch`` in one transaction and commit it (writer thread)."""
        while True:
            resize: int | None = None
            split = False
            with self._lock.shared():
                try:
                    txn = self._env.begin(write=True)
                except lmdb.MapResizedError:
                    resize = 0  # another process grew the map
                else:
                    try:
                        skip = superseded(batch)
                        for i, r in enumerate(batch):
                            if i not in skip:
                                r.result = r.fn(txn, *r.args)
                        txn.commit()
                        return
                    except lmdb.MapFullError:
                        txn.abort()
                        resize = self._env.info()["map_size"] * 2
                    except BaseException as exc:
                        txn.abort()
                        if len(batch) > 1:
                            split = True  # below, outside the lock
                        else:
                            err = self._fail(
                                f"write failed, nothing of this batch was stored: {type(exc).__name__}: {exc}"
                                f"{self._space_hint(exc)}"
                            )
                            for r in batch:
                                r.error = err
                            return
            if split:
                # One failing write (a big checkpoint on a nearly full disk) must not
                # fail the others that happened to share its transaction: retry each alone.
                for r in batch:
                    r.result = None
                    self._run_batch([r])
                return
            assert resize is not None  # every other way out of the block returned
            self._resize(resize)

    def _space_hint(self, exc: BaseException) -> str:
        """A hint after a failed write that looks like a full disk (LMDB reports a short write as EIO)."""
        text = str(exc)
        if "Input/output error" not in text and "No space" not in text and "too large" not in text:
            return ""
        try:
            st = os.statvfs(self._path)
            free = f"{st.f_bavail * st.f_frsize:,} bytes free"
        except OSError:
            free = "free space unknown"
        return f" (is the disk full, or a file size limit reached? {free})"

    async def _write(
        self, fn: Callable[..., _T], durable: bool = True, key: bytes | None = None, args: tuple[Any, ...] = ()
    ) -> _T:
        """Run ``fn(txn, *args)`` in the writer's next transaction; returns (or raises) what it did."""
        if self._closed:
            raise self._fail("the store is closed")
        writer = self._writer
        if writer is None:
            # No writer thread (the store is used outside an engine): write inline.
            request = WriteRequest(fn, durable, None, key, args)
            self._run_batch([request])
        elif not durable:
            self._write_later(fn, key, args)
            return None  # type: ignore[return-value]
        else:
            request = WriteRequest(fn, True, trio.lowlevel.current_task(), key, args)
            writer.submit(request)
            # Uncancellable, like a shielded wait but cheaper (no cancel scope
            # per checkpoint): once queued the write will land, and the caller
            # must not move on (or be told it failed) before knowing that it has.
            paused = pause_autojump()  # a mock clock must not leap ahead during the fsync
            try:
                await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
            finally:
                resume_autojump(paused)
        if request.error is not None:
            raise request.error
        if isinstance(request.result, LeaseLost):
            raise request.result  # a fenced write refused (returned, so the batch still commits)
        return request.result  # type: ignore[no-any-return]

    def _write_later(self, fn: Callable[..., Any], key: bytes | None = None, args: tuple[Any, ...] = ()) -> None:
        """Queue ``fn(txn, *args)`` as a non-durable write, without waiting (inline if there is no writer thread)."""
        if self._closed:
            raise self._fail("the store is closed")
        request = WriteRequest(fn, False, None, key, args)
        writer = self._writer
        if writer is not None:
            writer.submit(request)
            return
        self._run_batch([request])
        if request.error is not None:
            raise request.error
        if isinstance(request.result, LeaseLost):
            raise request.result  # written inline: the caller can be told, as _write tells it

    def _fence(self, txn: lmdb.Transaction, key: bytes, owner: str | None) -> LeaseLost | None:
        """Why a write fenced by ``owner`` must not land, or ``None`` (writer thread)."""
        if owner is None:
            return None
        holder = txn.get(key, db=self._dbs["leases"])
        if holder is None or bytes(holder) != owner.encode():
            return LeaseLost(f"instance {key.decode()!r} is no longer held by this engine")
        status = txn.get(key, db=self._dbs["status"])
        if status is not None and finished(bytes(status)):
            return LeaseLost(f"instance {key.decode()!r} finished meanwhile")
        return None

    def _put_instance(
        self, txn: lmdb.Transaction, inst: WorkflowInstance, data: bytes, owner: str | None = None
    ) -> LeaseLost | None:
        key = inst.id.encode()
        status_db, index_db = self._dbs["status"], self._dbs["index"]
        found = txn.get(key, db=status_db)
        old = bytes(found) if found is not None else None
        new = f"{InstanceStatus(inst.status).value}\0{inst.workflow_name}".encode()
        if old is not None and old != new and finished(old):
            # A finished status is final: a late write (another process, a race) never reopens it.
            return LeaseLost(f"instance {inst.id!r} finished meanwhile") if owner is not None else None
        lost = self._fence(txn, key, owner)
        if lost is not None:
            return lost
        if finished(new):
            txn.delete(key, db=self._dbs["leases"])
        if old != new:
            if old is not None:
                txn.delete(old + b"\0" + key, db=index_db)
            txn.put(key, new, db=status_db)
            txn.put(new + b"\0" + key, b"", db=index_db)
        txn.put(key, data, db=self._dbs["instances"])
        return None

    async def create_instance(
        self, instance: WorkflowInstance, *, owner: Owner | None = None
    ) -> tuple[WorkflowInstance, bool]:
        """Durably store ``instance`` unless its id exists (leased to ``owner``); returns (stored, created)."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        data = encode_instance(instance)
        owner_record = self._owner_record(owner) if owner is not None and not instance.finished else None

        def create(txn: lmdb.Transaction) -> bool:
            key = instance.id.encode()
            if txn.get(key, db=self._dbs["instances"]) is not None:
                return False
            self._put_instance(txn, instance, data)
            if owner_record is not None:
                owner_id, encoded = owner_record
                txn.put(owner_id, encoded, db=self._dbs["owners"])
                txn.put(key, owner_id, db=self._dbs["leases"])
            return True

        if await self._write(create):
            return instance, True
        existing = await self.get_instance(instance.id)
        assert existing is not None
        return existing, False

    def _owner_record(self, owner: Owner) -> tuple[bytes, bytes]:
        """``owner``'s id and record, encoded once per owner record (a JSON dump costs more than the write)."""
        cached = self._owner_cache
        if cached is None or cached[0] is not owner:
            cached = self._owner_cache = (owner, owner.id.encode(), owner.encode())
        return cached[1], cached[2]

    async def update_instance(
        self, instance: WorkflowInstance, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Replace the instance record (fenced by ``owner``)."""
        check_instance_id(instance.id)
        check_workflow_name(instance.workflow_name)
        data = encode_instance(instance)
        await self._write(lambda txn: self._put_instance(txn, instance, data, owner), durable)

    async def delete_instance(self, instance_id: str) -> bool:
        """Remove an instance and its checkpoints."""
        if not is_valid_id(instance_id):
            return False
        key = instance_id.encode()

        def delete(txn: lmdb.Transaction) -> bool:
            old = txn.get(key, db=self._dbs["status"])
            if old is not None:
                txn.delete(bytes(old) + b"\0" + key, db=self._dbs["index"])
                txn.delete(key, db=self._dbs["status"])
            cursor = txn.cursor(db=self._dbs["steps"])
            prefix = key + b"\0"
            if cursor.set_range(prefix):
                while bytes(cursor.key()).startswith(prefix):
                    if not cursor.delete():
                        break
            cursor = txn.cursor(db=self._dbs["signals"])
            if cursor.set_range(prefix):
                while bytes(cursor.key()).startswith(prefix):
                    if not cursor.delete():
                        break
            txn.delete(key, db=self._dbs["leases"])
            return bool(txn.delete(key, db=self._dbs["instances"]))

        return await self._write(delete)

    # -- lifecycle -------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the group-commit writer thread until cancelled, then flush and stop it."""
        writer = Writer(self._run_batch, trio.lowlevel.current_trio_token(), self._lazy_delay)
        writer.start()
        self._writer = writer
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._writer = None
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(writer.stop)

    def stats(self) -> dict[str, Any]:
        """Map size, entries and the writer's batch counts (for benchmarks and the CLI)."""
        if self._closed:
            raise self._fail("the store is closed")
        info = self._env.info()
        with self._read() as txn:
            entries = {name: txn.stat(db)["entries"] for name, db in self._dbs.items()}
        w = self._writer
        return {"map_size": info["map_size"], "entries": entries,
                "batches": w.batches if w else 0, "writes": w.writes if w else 0}

    def close(self) -> None:
        """Close the environment."""
        if not self._closed:
            self._closed = True
            self._env.close()
