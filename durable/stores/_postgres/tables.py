"""The PostgreSQL store's instance tables, steps, signals and leases, as functions of a cursor.

Writes run on the writer thread in the batch's transaction (``fn(cur, *args)``);
reads on a reader thread in autocommit (one statement: one snapshot). Every
write fenced by an owner locks the instance's lease row (``FOR UPDATE``) and
checks it in the batch's transaction, so a take-over by another engine either
commits before (the write is refused: a ``LeaseLost`` returned, not raised, so
the rest of the batch commits) or waits for this transaction's commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Cursor

from ..._model.eventlog import terminal_event
from ..._model.records import InstanceStatus, StepResult, WorkflowInstance, replace_instance
from ..._model.serde import decode_instance, decode_step, encode_instance, encode_step
from ...errors import SerializationError, StoreError
from .._base import step_key_bytes
from .._join import join_steps
from .._lease import LeaseLost, Owner
from . import eventlog, queues
from .owners import OwnerRow, holders_alive, put_owner

Cur = Cursor[Any]

FINISHED = [s.value for s in InstanceStatus if s.finished]
UNFINISHED = [s.value for s in InstanceStatus if not s.finished]
_FINISHED = frozenset(FINISHED)


def step_column(instance_id: str, key: str) -> bytes:
    """A step's ``key`` column: its checkpoint key as LMDB stores it (long keys hashed), without the id."""
    return step_key_bytes(instance_id, key)[len(instance_id.encode()) + 1:]


# -- reads -----------------------------------------------------------------------------

_WITH_STEPS = "SELECT i.id, i.record, " + queues.STEP_ARRAYS.format(i="i") + " FROM instances i "
_WITHOUT_STEPS = "SELECT i.id, i.record, NULL, NULL FROM instances i "
_ORDER = " ORDER BY i.created_at NULLS LAST, i.id"


def decode_steps(where: str, instance_id: str, keys: Sequence[bytes] | None,
                 records: Sequence[bytes] | None) -> dict[str, StepResult]:
    """Checkpoints as read (their key column and record), keyed by checkpoint key; checked against the key."""
    out: dict[str, StepResult] = {}
    for k, v in zip(keys or (), records or ()):
        at = f"{where}:steps/{instance_id}/{bytes(k)!r}"
        step = decode_step(bytes(v), at)
        try:
            stored_as: bytes | None = step_column(instance_id, step.key)
        except UnicodeEncodeError:
            stored_as = None
        if stored_as != bytes(k):
            raise StoreError(f"corrupt record at {at}: it holds step {step.key!r}")
        out[step.key] = step
    return out


def _instances(where: str, rows: list[tuple[Any, ...]], with_steps: bool) -> list[WorkflowInstance]:
    out = []
    for iid, record, keys, records in rows:
        at = f"{where}:instances/{iid}"
        inst = decode_instance(bytes(record), at)
        if inst.id != iid:
            raise StoreError(f"corrupt record at {at}: it holds instance {inst.id!r}")
        if with_steps:
            inst = join_steps(inst, decode_steps(where, iid, keys, records).values())
        out.append(inst)
    return out


def load(cur: Cur, where: str, instance_id: str, with_steps: bool) -> WorkflowInstance | None:
    """The instance (with its step results unless ``with_steps`` is false), or ``None``."""
    cur.execute((_WITH_STEPS if with_steps else _WITHOUT_STEPS) + "WHERE i.id = %s", (instance_id,))
    found = _instances(where, cur.fetchall(), with_steps)
    return found[0] if found else None


def load_with_checkpoints(cur: Cur, where: str, instance_id: str) -> tuple[WorkflowInstance | None,
                                                                          dict[str, StepResult]]:
    """The instance (without step results) and its checkpoints keyed by checkpoint key, in one statement."""
    cur.execute(_WITH_STEPS + "WHERE i.id = %s", (instance_id,))
    rows = cur.fetchall()
    return with_checkpoints(where, rows[0]) if rows else (None, {})


def with_checkpoints(where: str, row: tuple[Any, ...]) -> tuple[WorkflowInstance, dict[str, StepResult]]:
    """An instance row read with its step arrays (``id, record, keys, records``): the instance (without step
    results) and its checkpoints keyed by checkpoint key."""
    iid, record, keys, records = row
    inst = _instances(where, [(iid, record, None, None)], False)[0]
    return inst, decode_steps(where, iid, keys, records)


def load_steps(cur: Cur, where: str, instance_id: str) -> dict[str, StepResult]:
    """Every checkpoint of an instance (whether or not the instance exists), keyed by checkpoint key."""
    cur.execute("SELECT key, record FROM steps WHERE instance_id = %s ORDER BY key", (instance_id,))
    rows = cur.fetchall()
    return decode_steps(where, instance_id, [r[0] for r in rows], [r[1] for r in rows])


def scan(cur: Cur, where: str, statuses: list[str], workflow: str | None, with_steps: bool,
         waiting: bool = True) -> list[WorkflowInstance]:
    """Instances of those statuses (of one workflow, if given), oldest first (``waiting=False``: not those waiting
    in a queue)."""
    query = (_WITH_STEPS if with_steps else _WITHOUT_STEPS) + "WHERE i.status = ANY(%s)"
    if not waiting:
        query += " AND i.queue_state IS DISTINCT FROM 'waiting'"
    params: list[Any] = [statuses]
    if workflow is not None:
        query += " AND i.workflow = %s"
        params.append(workflow)
    cur.execute(query + _ORDER, params)
    return _instances(where, cur.fetchall(), with_steps)


# -- writes ------------------------------------------------------------------------------

COLUMNS = ("id, workflow, status, queue, priority, parent_id, dedup_id, created_at, started_at, completed_at, "
            "deadline, not_before, current_step, record")
_PLACES = ", ".join(["%s"] * 14)
_UPSERT = (f"INSERT INTO instances ({COLUMNS}) VALUES ({_PLACES}) ON CONFLICT (id) DO UPDATE SET "
           + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS.split(", ")[1:]))
_INSERT = f"INSERT INTO instances ({COLUMNS}) VALUES ({_PLACES}) ON CONFLICT (id) DO NOTHING"


def instance_row(inst: WorkflowInstance, data: bytes) -> tuple[Any, ...]:
    return (inst.id, inst.workflow_name, InstanceStatus(inst.status).value, inst.queue, inst.priority,
            inst.parent_id, inst.dedup_id, inst.created_at, inst.started_at, inst.completed_at, inst.deadline,
            inst.not_before, inst.current_step, data)


def fence(cur: Cur, instance_id: str, owner: str | None) -> LeaseLost | None:
    """Why a write fenced by ``owner`` must not land, or ``None`` (the lease row stays locked till commit)."""
    if owner is None:
        return None
    cur.execute("SELECT l.owner_id, i.status FROM leases l LEFT JOIN instances i ON i.id = l.instance_id "
                "WHERE l.instance_id = %s FOR UPDATE OF l", (instance_id,))
    row = cur.fetchone()
    if row is None or row[0] != owner:
        return LeaseLost(f"instance {instance_id!r} is no longer held by this engine")
    if row[1] in _FINISHED:
        return LeaseLost(f"instance {instance_id!r} finished meanwhile")
    return None


def put(cur: Cur, where: str, inst: WorkflowInstance, data: bytes, owner: str | None = None) -> LeaseLost | None:
    """Store the instance record (fenced by ``owner``); a finished status is final."""
    cur.execute("SELECT status FROM instances WHERE id = %s FOR UPDATE", (inst.id,))
    row = cur.fetchone()
    old = row[0] if row is not None else None
    new = InstanceStatus(inst.status).value
    if old is not None and old != new and old in _FINISHED:
        return LeaseLost(f"instance {inst.id!r} finished meanwhile") if owner is not None else None
    lost = fence(cur, inst.id, owner)
    if lost is not None:
        return lost
    cur.execute(_UPSERT, instance_row(inst, data))
    if new in _FINISHED:
        cur.execute("DELETE FROM leases WHERE instance_id = %s", (inst.id,))
        if old is None or old not in _FINISHED:
            ended(cur, where, inst)
    return None


def ended(cur: Cur, where: str, inst: WorkflowInstance) -> None:
    """An instance reached a finished status: it leaves its queue, its jobs go, its event log ends."""
    queues.unqueue(cur, inst)
    cur.execute("DELETE FROM jobs WHERE instance_id = %s", (inst.id,))
    event = terminal_event(inst)
    if event is not None:
        eventlog.append(cur, inst.id, event)


def create(cur: Cur, where: str, inst: WorkflowInstance, data: bytes,
           owner: OwnerRow | None) -> bool | str:
    """Store a new instance unless its id exists, leased to ``owner`` (id, record, ttl).

    ``False`` if the id exists; the id of the unfinished instance holding its
    dedup id in its queue, if one does (nothing written); else ``True``. A
    pending instance with a queue and no owner is queued for a worker.
    """
    cur.execute("SELECT 1 FROM instances WHERE id = %s", (inst.id,))
    if cur.fetchone() is not None:
        return False
    queued = inst.queue is not None and owner is None and InstanceStatus(inst.status) == InstanceStatus.PENDING
    took_dedup = False
    if inst.dedup_id is not None and inst.queue is not None:
        if queued:
            cur.execute("INSERT INTO dedup VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        (inst.queue, inst.dedup_id, inst.id))
            took_dedup = cur.rowcount > 0
        if not took_dedup:
            cur.execute("SELECT instance_id FROM dedup WHERE queue = %s AND dedup_id = %s",
                        (inst.queue, inst.dedup_id))
            found = cur.fetchone()
            if found is not None and found[0] != inst.id:
                return str(found[0])
    cur.execute(_INSERT, instance_row(inst, data))
    if cur.rowcount == 0:  # created meanwhile by another writer
        if took_dedup:
            cur.execute("DELETE FROM dedup WHERE queue = %s AND dedup_id = %s AND instance_id = %s",
                        (inst.queue, inst.dedup_id, inst.id))
        return False
    if InstanceStatus(inst.status).finished:
        ended(cur, where, inst)
    if queued:
        queues.enqueue(cur, inst)
    if owner is not None and not InstanceStatus(inst.status).finished:  # a lease only of an unfinished one
        owner_id = owner[0]
        put_owner(cur, *owner)
        cur.execute("INSERT INTO leases (instance_id, owner_id) VALUES (%s, %s) ON CONFLICT (instance_id) "
                    "DO UPDATE SET owner_id = EXCLUDED.owner_id, epoch = leases.epoch + 1", (inst.id, owner_id))
    return True


def cancel(cur: Cur, where: str, instance_id: str, fields: dict[str, object]) -> WorkflowInstance | None:
    """Record an unfinished instance ``cancelled``; the record written, or ``None`` if it is missing or
    finished (read with its row locked: no race with its engine)."""
    cur.execute("SELECT status, record FROM instances WHERE id = %s FOR UPDATE", (instance_id,))
    row = cur.fetchone()
    if row is None or row[0] in _FINISHED:
        return None
    inst = replace_instance(decode_instance(bytes(row[1]), f"{where}:instances/{instance_id}"),
                            status=InstanceStatus.CANCELLED, **fields)
    put(cur, where, inst, encode_instance(inst))
    return inst


def delete(cur: Cur, where: str, instance_id: str) -> bool:
    """Remove an instance with its checkpoints, signals, lease, queue entries, jobs and events."""
    cur.execute("SELECT record FROM instances WHERE id = %s FOR UPDATE", (instance_id,))
    row = cur.fetchone()
    if row is not None:
        try:
            queues.unqueue(cur, decode_instance(bytes(row[0])))
        except StoreError:
            pass  # a corrupt record: what it held in queues cannot be known
    for table, column in (("jobs", "instance_id"), ("events", "instance_id"), ("steps", "instance_id"),
                          ("signals", "instance_id"), ("leases", "instance_id")):
        cur.execute(f"DELETE FROM {table} WHERE {column} = %s", (instance_id,))
    cur.execute("DELETE FROM instances WHERE id = %s", (instance_id,))
    return cur.rowcount > 0


# -- steps -------------------------------------------------------------------------------

_PUT_STEP = ("INSERT INTO steps (instance_id, key, record) VALUES (%s, %s, %s) "
             "ON CONFLICT (instance_id, key) DO UPDATE SET record = EXCLUDED.record")


def put_step(cur: Cur, instance_id: str, key: bytes, step: StepResult, data: bytes | None,
             owner: str | None) -> LeaseLost | None:
    """Store ``step`` (``data``, or encoded now if ``None``: a marker), fenced by ``owner``."""
    lost = fence(cur, instance_id, owner)
    if lost is None:
        if data is None:
            try:
                data = encode_step(step, instance_id=instance_id)
            except SerializationError:
                return None  # the input changed since it was checked: bookkeeping, skipped
        cur.execute(_PUT_STEP, (instance_id, key, data))
    return lost


# -- signals -----------------------------------------------------------------------------


def send_signal(cur: Cur, instance_id: str, name: str, data: bytes) -> int:
    """Queue a signal's encoded payload; its sequence number (one clock for every queue: FIFO per name)."""
    cur.execute("UPDATE meta SET value = value + 1 WHERE key = 'signal_clock' RETURNING value")
    row = cur.fetchone()
    assert row is not None
    seq = int(row[0])
    cur.execute("INSERT INTO signals (seq, instance_id, name, payload) VALUES (%s, %s, %s, %s)",
                (seq, instance_id, name, data))
    return seq


def take_signal(cur: Cur, instance_id: str, name: str, seq: int, key: bytes, data: bytes,
                owner: str | None) -> bool | LeaseLost:
    """Remove queued signal ``seq`` and store the wait's checkpoint; ``False`` if it is gone."""
    lost = fence(cur, instance_id, owner)
    if lost is not None:
        return lost
    cur.execute("DELETE FROM signals WHERE seq = %s AND instance_id = %s AND name = %s", (seq, instance_id, name))
    if cur.rowcount == 0:
        return False
    cur.execute(_PUT_STEP, (instance_id, key, data))
    return True


# -- leases --------------------------------------------------------------------------------


def claim(cur: Cur, ids: list[str], owner: OwnerRow, limit: int | None, take_queued: bool,
          ttl: float | None) -> list[str]:
    """Take the leases of those unfinished instances of ``ids`` whose holder is gone (at most ``limit``)."""
    owner_id = owner[0]
    put_owner(cur, *owner)
    if not ids:
        return []
    cur.execute("SELECT i.id, i.status, i.queue_state, l.owner_id FROM instances i "
                "LEFT JOIN leases l ON l.instance_id = i.id WHERE i.id = ANY(%s) ORDER BY i.id FOR UPDATE OF i",
                (sorted(set(ids)),))
    rows = {r[0]: r for r in cur.fetchall()}
    alive_of = holders_alive(cur, [r[3] for r in rows.values() if r[3] is not None and r[3] != owner_id], ttl)
    taken: list[str] = []
    for iid in ids:
        if limit is not None and len(taken) >= limit:
            break
        row = rows.get(iid)
        if row is None or row[1] in _FINISHED or iid in taken:
            continue
        _, _, state, holder = row
        if state == "waiting" and not take_queued:
            continue  # waiting in a queue (for a worker's claim, under the queue's limits)
        if holder is not None and holder != owner_id and alive_of.get(holder, False):
            continue
        if holder != owner_id:
            cur.execute("INSERT INTO leases (instance_id, owner_id) VALUES (%s, %s) ON CONFLICT (instance_id) "
                        "DO UPDATE SET owner_id = EXCLUDED.owner_id, epoch = leases.epoch + 1 "
                        "WHERE leases.owner_id IS NOT DISTINCT FROM %s", (iid, owner_id, holder))
            if cur.rowcount == 0:
                continue  # taken meanwhile by another engine
        if state == "waiting":
            cur.execute("UPDATE instances SET queue_state = 'inflight' WHERE id = %s", (iid,))
        taken.append(iid)
    return taken


def delete_owner(cur: Cur, owner_id: str) -> None:
    """Remove an owner record (and what it served): its instances may be taken over at once.

    The queued instances it claimed but never started (an engine stopped right
    after a claim) go back to their queues: nothing else would run them.
    """
    cur.execute("DELETE FROM owners WHERE id = %s", (owner_id,))
    cur.execute("DELETE FROM servers WHERE owner_id = %s", (owner_id,))
    cur.execute("SELECT i.id FROM leases l JOIN instances i ON i.id = l.instance_id WHERE l.owner_id = %s "
                "AND i.status = 'pending' AND i.queue IS NOT NULL AND i.started_at IS NULL "
                "AND i.queue_state IS DISTINCT FROM 'waiting' ORDER BY i.id FOR UPDATE OF i", (owner_id,))
    back = [r[0] for r in cur.fetchall()]
    if back:
        cur.execute("DELETE FROM leases WHERE instance_id = ANY(%s) AND owner_id = %s", (back, owner_id))
        for iid in back:
            cur.execute("UPDATE instances SET queue_state = 'waiting', queue_seq = nextval('queue_seq'), "
                        "queue_due = not_before WHERE id = %s", (iid,))


def orphaned(cur: Cur, owner_id: str, ttl: float | None) -> list[str]:
    """Unfinished instances leased to an owner that is gone (its record missing, or dead), not ``owner_id``."""
    cur.execute("SELECT l.instance_id, l.owner_id FROM leases l JOIN instances i ON i.id = l.instance_id "
                "WHERE l.owner_id <> %s AND i.status = ANY(%s) ORDER BY l.instance_id", (owner_id, UNFINISHED))
    rows = cur.fetchall()
    alive_of = holders_alive(cur, [r[1] for r in rows], ttl)
    return [iid for iid, holder in rows if not alive_of[holder]]


def lost(cur: Cur, owner_id: str, ids: list[str]) -> list[str]:
    """Those of ``ids`` that ``owner_id`` no longer holds, or that finished."""
    cur.execute("SELECT i.id FROM instances i JOIN leases l ON l.instance_id = i.id WHERE i.id = ANY(%s) "
                "AND l.owner_id = %s AND i.status = ANY(%s)", (list(ids), owner_id, UNFINISHED))
    held = {r[0] for r in cur.fetchall()}
    return [iid for iid in ids if iid not in held]


def holders(cur: Cur, ids: list[str]) -> dict[str, str]:
    """The owner id holding each of ``ids`` that is leased."""
    cur.execute("SELECT instance_id, owner_id FROM leases WHERE instance_id = ANY(%s)", (ids,))
    return {r[0]: r[1] for r in cur.fetchall()}


def get_lease(cur: Cur, instance_id: str) -> Owner | None:
    """The owner record of whoever holds the instance's lease, if any."""
    cur.execute("SELECT o.record FROM leases l JOIN owners o ON o.id = l.owner_id WHERE l.instance_id = %s",
                (instance_id,))
    row = cur.fetchone()
    return Owner.decode(row[0].encode()) if row is not None else None


def requeue(cur: Cur, where: str, instance_id: str, default_queue: str, ttl: float | None) -> bool:
    """Put an unfinished instance whose engine is gone back in its queue (the default one if it has none);
    ``False`` if it finished, waits in a queue already, or a live engine holds it."""
    cur.execute("SELECT i.status, i.record, i.queue_state, l.owner_id FROM instances i LEFT JOIN leases l "
                "ON l.instance_id = i.id WHERE i.id = %s FOR UPDATE OF i", (instance_id,))
    row = cur.fetchone()
    if row is None or row[0] in _FINISHED or row[2] == "waiting":
        return False
    holder = row[3]
    if holder is not None and holders_alive(cur, [holder], ttl)[holder]:
        return False
    inst = decode_instance(bytes(row[1]), f"{where}:instances/{instance_id}")
    cur.execute("DELETE FROM leases WHERE instance_id = %s", (instance_id,))
    if inst.queue is None:
        inst = replace_instance(inst, queue=default_queue)
        cur.execute(_UPSERT, instance_row(inst, encode_instance(inst)))
    queues.enqueue(cur, inst, due=True)
    return True
