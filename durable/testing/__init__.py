"""Helpers that make the common workflow tests one-liners.

- :func:`run` runs a workflow to completion on an in-memory engine under an
  autojumping ``MockClock`` (retries and timeouts take no real time), from a
  plain sync test;
- :func:`run_on_engine` does the same inside a trio test;
- :func:`replace_step` swaps a step's function for a fake, for one test;
- :func:`capture_events` records an engine's events;
- :func:`crash_and_resume` stops an instance right after a named step was
  checkpointed, as a crash would, then resumes it in a new engine on the same store;
- :func:`assert_replays` checks that a finished instance replays from its
  checkpoints alone: no step runs again, nothing diverges.

Installing ``durable`` also installs a pytest plugin
(:mod:`durable.testing.plugin`) with the fixtures ``durable_engine``,
``durable_lmdb_engine``, ``durable_events`` and ``durable_clock``.

.. versionadded:: 0.1.0
"""

from ._helpers import capture_events as capture_events
from ._helpers import crash_and_resume as crash_and_resume
from ._helpers import replace_step as replace_step
from ._helpers import run as run
from ._helpers import run_on_engine as run_on_engine
from ._replay import assert_replays as assert_replays

__all__ = ["assert_replays", "capture_events", "crash_and_resume", "replace_step", "run", "run_on_engine"]
