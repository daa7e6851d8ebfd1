"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from durable import Store


@pytest.fixture(params=["inline", "writer"])
async def s(request: pytest.FixtureRequest, store: Store) -> AsyncIterator[Store]:
    """The conftest ``store`` (memory / lmdb), with its background work running or not.

    For LMDB, "writer" runs the group-commit writer thread for the whole test;
    for memory, ``run()`` is a no-op that must still start cleanly.
    """
    if request.param == "inline":
        yield store
        return
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        nursery.cancel_scope.cancel()
