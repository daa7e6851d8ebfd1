"""The LMDB store's leases: which engine runs which instance (``leases`` and ``owners`` databases)."""

from __future__ import annotations

import lmdb

from ..._model.ids import is_valid_id
from .._lease import Owner, may_claim, record_alive
from .parts import LMDBParts, finished

__all__ = ["LMDBLeases"]


class LMDBLeases(LMDBParts):
    """Lease operations of :class:`~durable.stores._lmdb.LMDBStore`."""

    def _owner_in(self, txn: lmdb.Transaction, owner_id: str) -> Owner | None:
        data = txn.get(owner_id.encode(), db=self._dbs["owners"])
        return Owner.decode(bytes(data)) if data is not None else None

    async def claim(self, instance_ids: list[str], owner: Owner, *, limit: int | None = None) -> list[str]:
        """Durably take the leases of those unfinished instances whose holder is gone."""
        ids = [i for i in instance_ids if is_valid_id(i)]

        def take(txn: lmdb.Transaction) -> list[str]:
            leases = self._dbs["leases"]
            txn.put(owner.id.encode(), owner.encode(), db=self._dbs["owners"])
            alive: dict[str, bool] = {}

            def is_alive(holder: str) -> bool:
                if holder not in alive:
                    alive[holder] = record_alive(self._owner_in(txn, holder))
                return alive[holder]

            taken: list[str] = []
            for iid in ids:
                if limit is not None and len(taken) >= limit:
                    break
                key = iid.encode()
                status = txn.get(key, db=self._dbs["status"])
                if status is None or finished(bytes(status)):
                    continue
                holder = txn.get(key, db=leases)
                if may_claim(bytes(holder).decode() if holder is not None else None, owner.id, is_alive):
                    txn.put(key, owner.id.encode(), db=leases)
                    taken.append(iid)
            return taken

        return await self._write(take)

    async def heartbeat(self, owner: Owner) -> None:
        """Record ``owner`` as alive (non-durable)."""
        data = owner.encode()
        await self._write(lambda txn: txn.put(owner.id.encode(), data, db=self._dbs["owners"]), False)

    async def release(self, owner_id: str) -> None:
        """Durably remove an owner record: its instances may be taken over at once."""
        await self._write(lambda txn: txn.delete(owner_id.encode(), db=self._dbs["owners"]))

    async def lost_leases(self, owner_id: str, instance_ids: list[str]) -> list[str]:
        """Those of ``instance_ids`` that ``owner_id`` no longer holds, or that finished."""
        me = owner_id.encode()
        lost = []
        with self._read() as txn:
            for iid in instance_ids:
                key = iid.encode()
                status = txn.get(key, db=self._dbs["status"])
                if txn.get(key, db=self._dbs["leases"]) != me or status is None or finished(bytes(status)):
                    lost.append(iid)
        return lost

    async def get_lease(self, instance_id: str) -> Owner | None:
        """The owner record of whoever holds the instance's lease, if any."""
        if not is_valid_id(instance_id):
            return None
        with self._read() as txn:
            holder = txn.get(instance_id.encode(), db=self._dbs["leases"])
            return self._owner_in(txn, bytes(holder).decode()) if holder is not None else None
