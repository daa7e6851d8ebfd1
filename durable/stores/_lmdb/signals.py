"""The LMDB store's signal queue (``signals`` database, and a clock in ``meta``).

``id NUL name NUL seq`` (seq: 8 bytes, big-endian) -> the encoded payload.
One clock for every queue, bumped by each send, gives the sequence numbers
(so signals of one name are FIFO) and lets other processes notice a send.
"""

from __future__ import annotations

from typing import Any

import lmdb

from ..._model.records import StepResult
from ..._model.serde import decode_value, encode_step, encode_value
from .._base import signal_key_prefix, step_key_bytes
from ..._model.ids import check_instance_id, check_signal_name, is_valid_id
from .._lease import LeaseLost
from .parts import LMDBParts

__all__ = ["LMDBSignals"]

_SIGNAL_CLOCK = b"signal-clock"  # in meta: bumped by every send_signal


class LMDBSignals(LMDBParts):
    """Signal operations of :class:`~durable.stores._lmdb.LMDBStore`."""

    async def send_signal(self, instance_id: str, name: str, payload: Any) -> int:
        """Queue signal ``name`` for an instance, durably; returns its sequence number."""
        check_instance_id(instance_id)
        check_signal_name(name)
        data = encode_value(payload, f"the payload of signal {name!r}", instance_id=instance_id)
        prefix = signal_key_prefix(instance_id, name)

        def send(txn: lmdb.Transaction) -> int:
            meta = self._dbs["meta"]
            raw = txn.get(_SIGNAL_CLOCK, db=meta)
            seq = (int(bytes(raw)) if raw is not None else 0) + 1  # one clock for every queue: FIFO per queue
            txn.put(_SIGNAL_CLOCK, str(seq).encode(), db=meta)
            txn.put(prefix + seq.to_bytes(8, "big"), data, db=self._dbs["signals"])
            return seq

        return await self._write(send)

    async def peek_signal(self, instance_id: str, name: str) -> tuple[int, Any] | None:
        """The oldest queued signal ``name`` of an instance, or ``None``."""
        if not is_valid_id(instance_id):
            return None
        prefix = signal_key_prefix(instance_id, name)
        with self._read() as txn:
            cursor = txn.cursor(db=self._dbs["signals"])
            if not cursor.set_range(prefix):
                return None
            key = bytes(cursor.key())
            if not key.startswith(prefix) or len(key) != len(prefix) + 8:
                return None
            seq = int.from_bytes(key[len(prefix):], "big")
            return seq, decode_value(bytes(cursor.value()), f"{self._path}:signals/{key!r}", self._path)

    async def take_signal(
        self, instance_id: str, name: str, seq: int, step: StepResult, *, owner: str | None = None
    ) -> bool:
        """Remove queued signal ``seq`` and store ``step``, in one durable write; ``False`` if it is not queued."""
        check_instance_id(instance_id)
        data = encode_step(step, instance_id=instance_id)
        signal_key = signal_key_prefix(instance_id, name) + seq.to_bytes(8, "big")
        step_key = step_key_bytes(instance_id, step.key)
        instance_key = instance_id.encode()

        def take(txn: lmdb.Transaction) -> bool | LeaseLost:
            lost = self._fence(txn, instance_key, owner)
            if lost is not None:
                return lost
            if not txn.delete(signal_key, db=self._dbs["signals"]):
                return False
            txn.put(step_key, data, db=self._dbs["steps"])
            return True

        taken = await self._write(take)  # a LeaseLost result is raised by _write
        return taken is True

    async def signal_clock(self) -> int:
        """Changes whenever a signal is sent, by any process."""
        with self._read() as txn:
            raw = txn.get(_SIGNAL_CLOCK, db=self._dbs["meta"])
        return int(bytes(raw)) if raw is not None else 0
