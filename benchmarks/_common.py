"""Shared pieces of the benchmark suite: sizes, table rows, memory probes, timers.

Imported both by the orchestrating parent (``run.py``) and by the child
processes that run one measurement each (``_child.py``), so it imports
neither ``durable`` nor ``dbos``.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

MARKER = "@@RESULT@@ "
"""Prefix of the line on which a child process prints its result as JSON."""

Sample = dict[str, float]
"""One measurement: metric key -> value, as a child process reports it."""

Spawn = Callable[..., Sample]
"""``spawn(module, function, **kwargs)``: run ``module.function(**kwargs)`` in a fresh process."""


@dataclass(frozen=True)
class Sizes:
    """Workload sizes; :meth:`quick` gives the scaled-down smoke-run sizes."""

    w1_steps: int = 1_000
    w2_workflows: int = 1_000
    w3_branches: int = 1_000
    w4_steps: int = 10_000
    w5_inflight: int = 10_000
    w5_finished: int = 100_000
    u_steps: int = 10
    u_calls: int = 1_000

    @classmethod
    def quick(cls) -> Sizes:
        """Sizes for ``--quick``: 100 instead of 1,000, 1,000 instead of 10,000, 5,000 instead of 100,000."""
        return cls(w1_steps=100, w2_workflows=100, w3_branches=100, w4_steps=1_000,
                   w5_inflight=1_000, w5_finished=5_000, u_calls=200)


@dataclass(frozen=True)
class Config:
    """What one run of the suite was asked to do."""

    sizes: Sizes
    repeat: int | None  # None: each workload's own default
    workdir: str  # a fresh directory for this workload's stores
    quick: bool = False

    def repeats(self, default: int) -> int:
        """The number of repeats: ``--repeat`` if given, else 1 for ``--quick``, else ``default``."""
        if self.repeat is not None:
            return self.repeat
        return 1 if self.quick else default


@dataclass(frozen=True)
class Row:
    """One line of the results table: a metric and its target.

    Attributes:
        key: the metric's key in a :data:`Sample`.
        label: what the metric is, with its unit.
        better: ``"lower"`` for times and memory, ``"higher"`` for rates.
        limit: the target on durable's figure (``<= limit`` if lower is better, ``>= limit`` if higher).
        ratio: the target on how many times better durable is than DBOS (``>= ratio``).
        peer: False when DBOS has no comparable figure (the cell shows ``n/a``).
        compare: False when both figures are shown but a ratio would mislead
            (say, two different ways of filling a store).
    """

    key: str
    label: str
    better: Literal["lower", "higher"] = "lower"
    limit: float | None = None
    ratio: float | None = None
    peer: bool = True
    compare: bool = True
    fmt: str = "{:,.1f}"


@dataclass
class Outcome:
    """Everything measured for one workload on one side (``durable`` or ``dbos``)."""

    samples: list[Sample] = field(default_factory=list)
    error: str | None = None  # a child's traceback, or why the side was skipped
    note: str | None = None
    timed_out: float | None = None  # a child ran past this limit (s) and was killed; ``error`` has its stacks

    def median(self, key: str) -> float | None:
        """The median of ``key`` over the samples that have it."""
        values = [s[key] for s in self.samples if key in s]
        return statistics.median(values) if values else None


# -- memory and disk probes (Linux) ---------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rss_kb() -> int:
    """Current resident set size of this process in KB (``VmRSS`` of /proc/self/status)."""
    return _status_kb("VmRSS")


def peak_rss_kb() -> int:
    """Peak resident set size of this process in KB: ``ru_maxrss`` (KB on Linux).

    The kernel folds the current RSS into ``ru_maxrss`` lazily, so the larger
    of it and ``VmHWM`` (the same high-water mark, read directly) is returned.
    """
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, _status_kb("VmHWM"))


def settled_rss_kb() -> int:
    """Current RSS after a full garbage collection."""
    gc.collect()
    return rss_kb()


def written_bytes() -> int:
    """Bytes this process has caused to be written to storage so far (/proc/self/io).

    ``write_bytes`` counts a page when it is dirtied, so writes not yet flushed
    count too; ``cancelled_write_bytes`` (pages of files truncated or deleted
    before they were written back, such as SQLite's rollback journal) is
    subtracted.
    """
    fields: dict[str, int] = {}
    with open("/proc/self/io") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = int(value)
    return fields["write_bytes"] - fields["cancelled_write_bytes"]


def dir_size_mb(path: str) -> float:
    """Total size of the files under ``path`` in MB."""
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 1e6


def simple_repeats(module: str, function: str, cfg: Config, spawn: Spawn, default: int,
                   **kwargs: Any) -> list[Sample]:
    """Run ``module.function(store=..., **kwargs)`` in a fresh process per repeat, each on a fresh store."""
    samples = []
    for i in range(cfg.repeats(default)):
        store = os.path.join(cfg.workdir, f"{function}-{i}")
        samples.append(spawn(module, function, store=store, **kwargs))
    return samples


def per(value: float, count: int, scale: float = 1e6) -> float:
    """``value / count`` scaled (seconds -> microseconds by default)."""
    return value / count * scale
