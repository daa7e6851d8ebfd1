"""The final records of the last instances started and ended in this engine, for ``wait()``.

Starting many instances, then waiting for each, would read every one back
from the store (on PostgreSQL, a round trip each). An instance started by
this engine's ``start()`` whose run ended here with its own final write is
kept instead: its final record and checkpoints, encoded with the store's own
encoders (what the store holds, unpicklable exceptions replaced as stored),
decoded afresh for each ``wait()``, so callers never share objects. Bounded
by count and by bytes, the oldest dropped first; one record over a
sixteenth of the bytes is not kept. Workers keep nothing: their instances
come from claims, not ``start()``.
"""

from __future__ import annotations

from collections import OrderedDict

from .._model.records import StepResult, WorkflowInstance
from .._model.serde import decode_instance, decode_step, encode_instance, encode_step
from ..errors import SerializationError
from ..stores._join import join_steps

__all__ = ["ENDED_BYTES", "ENDED_KEPT", "Ended"]

#: How many final records are kept at most, and how many bytes of them.
ENDED_KEPT = 4096
ENDED_BYTES = 16 * 2**20


class Ended:
    """The kept final records, by instance id (see the module's docstring)."""

    def __init__(self) -> None:
        self._records: OrderedDict[str, tuple[bytes, tuple[bytes, ...]]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    def keep(self, final: WorkflowInstance, checkpoints: dict[str, StepResult]) -> None:
        """Keep ``final`` (written: what the store holds now) with its checkpoints, unless they do not encode
        or are too large (``wait()`` then reads the store)."""
        try:
            record = (encode_instance(final), tuple(encode_step(s, instance_id=final.id) for s in checkpoints.values()))
        except SerializationError:
            return
        size = len(record[0]) + sum(map(len, record[1]))
        if size > ENDED_BYTES // 16:
            return
        self.drop(final.id)
        self._records[final.id] = record
        self._bytes += size
        while len(self._records) > ENDED_KEPT or self._bytes > ENDED_BYTES:
            self.drop(next(iter(self._records)))

    def get(self, instance_id: str) -> WorkflowInstance | None:
        """The kept final record of ``instance_id``, with its step results, as new objects; ``None`` if none."""
        record = self._records.get(instance_id)
        if record is None:
            return None
        where = f"instance {instance_id} kept in memory"
        return join_steps(decode_instance(record[0], where), [decode_step(b, where) for b in record[1]])

    def drop(self, instance_id: str) -> None:
        record = self._records.pop(instance_id, None)
        if record is not None:
            self._bytes -= len(record[0]) + sum(map(len, record[1]))

    def clear(self) -> None:
        self._records.clear()
        self._bytes = 0
