"""The ``durable`` pytest plugin, registered through the ``pytest11`` entry point.

Installing ``durable`` is enough: pytest loads this module in every run and
these fixtures are available to every test, with no ``conftest.py``:

- ``durable_engine``: a running :class:`~durable.Engine` over a
  :class:`~durable.MemoryStore`, under an autojumping ``MockClock`` (retries,
  backoff and timeouts take no real time);
- ``durable_lmdb_engine``: a running engine over an :class:`~durable.LMDBStore`
  in the test's ``tmp_path`` (``durable_lmdb_engine.store.path``), under the
  same clock with a 0.05 s autojump threshold (a zero threshold would jump
  virtual time while the writer thread is on disk);
- ``durable_events``: the list of every event the engines above emit during
  the test, in order;
- ``durable_clock``: the ``trio.testing.MockClock`` those tests run under
  (pytest-trio's ``autojump_clock`` or ``mock_clock`` if the test asks for
  one of them, else a new ``MockClock(autojump_threshold=0)``).

The engine fixtures are trio fixtures: they need **pytest-trio**, and a test
run by it (``trio_mode = true`` in the pytest configuration, or
``@pytest.mark.trio`` on the test); without them the fixture fails with a
message saying so. ``durable_events`` and ``durable_clock`` are plain
fixtures, and :func:`durable.testing.run` needs no plugin at all.

pytest-trio runs a test under a clock only when the test function itself
asks for one; so that a test asking only for ``durable_engine`` runs under
``durable_clock``, this plugin gives such tests a ``trio.run`` that uses it
(a test that asks for a clock fixture of its own runs under that one, and
tests with a runner other than ``trio.run``, such as qtrio's, are left alone).

Loading the plugin imports the ``durable`` package (its parent), about 0.1 s,
most of it trio, which pytest-trio imports anyway; the module itself imports
nothing else at import time: the fixtures import the engine and the stores
when a test uses them, and the hooks do nothing for tests that do not.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from trio.testing import MockClock

    from .._engine.engine import Engine
    from .._engine.events import Event

__all__ = [
    "LMDB_AUTOJUMP_THRESHOLD",
    "durable_clock",
    "durable_engine",
    "durable_events",
    "durable_lmdb_engine",
]

LMDB_AUTOJUMP_THRESHOLD = 0.05
"""Real seconds the loop must be idle before ``durable_lmdb_engine``'s clock jumps."""

_ENGINE_FIXTURES = frozenset({"durable_engine", "durable_lmdb_engine"})
_PYTEST_TRIO_CLOCKS = ("autojump_clock", "mock_clock")

F = TypeVar("F", bound=Callable[..., Any])


def _trio_fixture(fn: F) -> F:
    # pytest-trio's marker for "a trio fixture even outside trio_mode": a sync
    # test using it then gets pytest-trio's clear error, not a bare coroutine.
    setattr(fn, "_force_trio_fixture", True)
    return fn


@pytest.fixture
def durable_clock(request: pytest.FixtureRequest) -> MockClock:
    """The ``MockClock`` the test's trio run uses when it uses a ``durable_*`` engine fixture.

    pytest-trio's ``autojump_clock`` or ``mock_clock`` when the test asks for
    one (so there is only one clock), otherwise a new
    ``MockClock(autojump_threshold=0)``: virtual time jumps ahead whenever
    every task is waiting, so retry backoff, step timeouts and workflow
    timeouts take no real time.
    """
    for name in _PYTEST_TRIO_CLOCKS:
        if name in request.fixturenames:
            clock: MockClock = request.getfixturevalue(name)
            return clock
    from trio.testing import MockClock

    return MockClock(autojump_threshold=0)


@pytest.fixture
def durable_events() -> list[Event]:
    """Every event emitted by the engines of ``durable_engine`` / ``durable_lmdb_engine`` in this test, in order."""
    return []


@pytest.fixture
def _durable_trio_test(request: pytest.FixtureRequest) -> None:
    """Fail clearly when an engine fixture is used where pytest-trio cannot run it."""
    if not request.config.pluginmanager.hasplugin("trio"):
        pytest.fail(
            "durable_engine and durable_lmdb_engine are trio fixtures: they need pytest-trio "
            "(pip install pytest-trio) and async tests run by it (trio_mode = true in your pytest "
            "configuration, or @pytest.mark.trio). durable.testing.run() needs neither.",
            pytrace=False,
        )
    if request.node.get_closest_marker("trio") is None:
        pytest.fail(
            f"{request.node.name}: durable_engine and durable_lmdb_engine are trio fixtures: use them from an "
            "'async def' test run by pytest-trio (trio_mode = true in your pytest configuration, "
            "or @pytest.mark.trio on the test)",
            pytrace=False,
        )


@pytest.fixture
@_trio_fixture
async def durable_engine(
    _durable_trio_test: None, durable_clock: MockClock, durable_events: list[Event]
) -> AsyncIterator[Engine]:
    """A running engine over a fresh ``MemoryStore``, under ``durable_clock`` (autojump).

    Its events are collected in ``durable_events``. It stops when the test
    ends (instances still running stay ``running`` in its store).
    """
    from .._engine.engine import Engine
    from ..stores import MemoryStore

    async with Engine(store=MemoryStore()) as engine:
        engine.events.on("*", durable_events.append)
        yield engine


@pytest.fixture
@_trio_fixture
async def durable_lmdb_engine(
    _durable_trio_test: None, durable_clock: MockClock, durable_events: list[Event], tmp_path: Path
) -> AsyncIterator[Engine]:
    """A running engine over a new ``LMDBStore`` at ``tmp_path / "durable.lmdb"``, closed when the test ends.

    Runs under ``durable_clock`` with its autojump threshold raised from 0 to
    ``LMDB_AUTOJUMP_THRESHOLD`` (0.05 s): with a zero threshold virtual time
    would jump while the writer thread waits on the disk, and deadlines would
    fire during an fsync. Its events are collected in ``durable_events``.
    """
    from .._engine.engine import Engine

    if durable_clock.autojump_threshold == 0:
        durable_clock.autojump_threshold = LMDB_AUTOJUMP_THRESHOLD
    async with Engine.open(tmp_path / "durable.lmdb") as engine:
        engine.events.on("*", durable_events.append)
        yield engine


def _clocked_run(item: pytest.Item) -> Callable[..., Any]:
    """A ``trio.run`` for ``item`` that defaults its clock to the test's ``durable_clock``."""

    def run(fn: Callable[..., Any], *args: Any, clock: Any = None, **kwargs: Any) -> Any:
        import trio

        if clock is None:
            clock = getattr(item, "funcargs", {}).get("durable_clock")
        return trio.run(fn, *args, clock=clock, **kwargs)

    return run


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run trio tests that use a ``durable_*`` engine fixture under ``durable_clock``.

    pytest-trio hands ``trio.run`` only a clock the test function asks for
    itself; these tests get a runner that falls back to ``durable_clock``
    (trylast: after pytest-trio has marked the async tests of ``trio_mode``).
    """
    if not config.pluginmanager.hasplugin("trio"):
        return
    trio_run: Any = None
    for item in items:
        names = getattr(item, "fixturenames", ())
        if _ENGINE_FIXTURES.isdisjoint(names) or item.get_closest_marker("trio") is None:
            continue
        if trio_run is None:
            import trio

            trio_run = trio.run
        # pytest-trio uses the first trio marker that names a runner, or trio.run.
        chosen = next((m.kwargs["run"] for m in item.iter_markers("trio") if "run" in m.kwargs), trio_run)
        if chosen is trio_run:
            item.add_marker(pytest.mark.trio(run=_clocked_run(item)), append=False)
