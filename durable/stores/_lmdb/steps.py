"""The LMDB store's step checkpoint writes (``steps`` database: ``id NUL step key`` -> record).

A durable checkpoint waits for its commit; a "running" marker is queued
without an await (:meth:`LMDBSteps.put_step_later`) and encoded by the writer
only if no later checkpoint of its key joins the same commit.
"""

from __future__ import annotations

import lmdb

from ..._model.records import StepResult
from ..._model.serde import check_step_input, encode_step
from ...errors import SerializationError
from .._base import step_key_bytes
from ..._model.ids import check_instance_id
from .._lease import LeaseLost
from .parts import LMDBParts

__all__ = ["LMDBSteps"]


class LMDBSteps(LMDBParts):
    """Step checkpoint writes of :class:`~durable.stores._lmdb.LMDBStore`."""

    async def put_step(
        self, instance_id: str, step: StepResult, *, durable: bool = True, owner: str | None = None
    ) -> None:
        """Store one checkpoint under ``step.key`` (fenced by ``owner``).

        A non-durable checkpoint (a "running" marker) is skipped if a later
        checkpoint of the same key joins its commit.
        """
        if not durable:
            self.put_step_later(instance_id, step, owner=owner)
            return
        check_instance_id(instance_id)
        key = step_key_bytes(instance_id, step.key)
        data = encode_step(step, instance_id=instance_id)  # SerializationError here
        await self._write(self._put_step, True, key, (instance_id, key, step, data, owner))

    def put_step_later(self, instance_id: str, step: StepResult, *, owner: str | None = None) -> None:
        """Queue a non-durable checkpoint (a step's "running" marker) without waiting for it.

        It is committed with the next durable write, or within ``lazy_delay``,
        after every write queued before it and before every write queued
        after it; a later checkpoint of the same key in the same commit
        supersedes it, and then it is never even encoded. Its input is checked
        now (:class:`SerializationError`): a step whose input cannot be stored
        must not run.
        """
        check_instance_id(instance_id)
        # A marker is usually superseded by the step's result in the same
        # commit, so the writer encodes it only if it is written.
        check_step_input(step, instance_id=instance_id)
        key = step_key_bytes(instance_id, step.key)
        self._write_later(self._put_step, key, (instance_id, key, step, None, owner))

    def _put_step(self, txn: lmdb.Transaction, instance_id: str, key: bytes, step: StepResult,
                  data: bytes | None, owner: str | None) -> LeaseLost | None:
        """Store ``step`` (``data``, or encoded now if ``None``: a marker), fenced by ``owner`` (writer thread)."""
        lost = self._fence(txn, instance_id.encode(), owner)
        if lost is None:
            if data is None:
                try:
                    data = encode_step(step, instance_id=instance_id)
                except SerializationError:
                    return None  # the input changed since it was checked: bookkeeping, skipped
            txn.put(key, data, db=self._dbs["steps"])
        return lost
