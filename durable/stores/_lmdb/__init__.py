"""The LMDB store (:class:`~durable.stores._lmdb.store.LMDBStore`) and its parts."""
