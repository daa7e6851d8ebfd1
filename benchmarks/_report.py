"""Machine information and the results table."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import time
from dataclasses import dataclass, field

from _common import Outcome, Row
from _disk import disk_info

RATIO_NOTE = ("ratio: how many times better durable is than DBOS (DBOS/durable for times and memory, "
              "durable/DBOS for rates); > 1 means durable is better.")


@dataclass
class Result:
    """One workload's rows and what each side measured (``dbos`` is None when the peer is off)."""

    key: str
    title: str
    rows: list[Row]
    durable: Outcome
    dbos: Outcome | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per side
    load: dict[str, float] = field(default_factory=dict)  # 1-minute load average before each side


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: str) -> str:
    """The type and device of the mount holding ``path`` (from /proc/mounts)."""
    best = ("", "unknown", "unknown")
    try:
        real = os.path.realpath(path)
        with open("/proc/mounts") as f:
            for line in f:
                dev, mount, fstype = line.split()[:3]
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best[0]):
                    best = (mount, fstype, dev)
    except OSError:
        pass
    return f"{best[1]} on {best[2]}"


def machine_info(workdir: str) -> dict[str, str]:
    """CPU, Python, library versions and the store directory's file system."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpus": f"{os.cpu_count()} ({usable} usable)",
        "cpu model": _cpu_model(),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "os": f"{platform.system()} {platform.release()}",
        "durable": _version("durable"),
        "dbos": _version("dbos"),
        "stores in": f"{workdir} ({_filesystem(workdir)})",
        **disk_info(workdir),
        "cpu probe": cpu_probe(),
        "load avg": load_average(),
    }


def cpu_probe(repeats: int = 5) -> str:
    """Median time of a fixed pure-Python loop (calls, attributes, a dict, small objects), as text.

    The CPU-bound figures (W2, W3, U) move with it: this VM's speed varies
    by tens of per cent from hour to hour, and a probe taken at the start and
    at the end of a run shows whether it did during that run.
    """

    class Item:
        __slots__ = ("key", "value")

        def __init__(self, key: int, value: int) -> None:
            self.key, self.value = key, value

    def work() -> float:
        t0 = time.perf_counter()
        table: dict[int, Item] = {}
        for i in range(100_000):
            item = Item(i, i * 2)
            table[item.key & 1023] = item
        return time.perf_counter() - t0

    return f"{statistics.median(work() for _ in range(repeats)) * 1e3:.1f} ms (a fixed Python loop; lower is faster)"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cell(outcome: Outcome, row: Row) -> tuple[str, float | None]:
    if outcome.timed_out is not None:
        return f"did not finish in {outcome.timed_out:g} s", None
    if outcome.error is not None:
        return "error", None
    value = outcome.median(row.key)
    return ("—", None) if value is None else (row.fmt.format(value), value)


def _ratio(row: Row, durable: float | None, peer: float | None) -> float | None:
    if not row.compare or durable is None or peer is None or durable <= 0 or peer <= 0:
        return None
    return peer / durable if row.better == "lower" else durable / peer


def _target(row: Row) -> str:
    parts = []
    if row.limit is not None:
        parts.append(("≤ " if row.better == "lower" else "≥ ") + f"{row.limit:,g}")
    if row.ratio is not None:
        parts.append(f"≥ {row.ratio:g}x DBOS")
    return ", ".join(parts) or "—"


def _met(row: Row, durable: float | None, ratio: float | None, finished: bool = True) -> str:
    if row.limit is None and row.ratio is None:
        return ""
    if not finished:
        return "NO (did not finish)"
    if durable is None:
        return "?"
    failed, unknown = [], False
    if row.limit is not None:
        ok = durable <= row.limit if row.better == "lower" else durable >= row.limit
        if not ok:
            failed.append("limit")
    if row.ratio is not None:
        if ratio is None:
            unknown = True
        elif ratio < row.ratio:
            failed.append("ratio")
    if failed:
        return "NO (" + ", ".join(failed) + ")"
    return "yes (no ratio)" if unknown else "yes"


def table(results: list[Result]) -> str:
    """The results as an aligned pipe table (valid Markdown)."""
    header = ["workload", "metric", "durable", "DBOS", "ratio", "target", "met?"]
    lines: list[list[str]] = []
    for res in results:
        peer_na = res.dbos.note if res.dbos is not None and res.dbos.note and not res.dbos.samples else None
        for i, row in enumerate(res.rows):
            d_text, d_val = _cell(res.durable, row)
            if res.dbos is None:
                p_text, p_val = "—", None
            elif not row.peer or peer_na is not None:
                p_text, p_val = "n/a", None
            else:
                p_text, p_val = _cell(res.dbos, row)
            ratio = _ratio(row, d_val, p_val)
            lines.append([f"{res.key} {res.title}" if i == 0 else "", row.label, d_text, p_text,
                          "" if ratio is None else f"{ratio:,.1f}x", _target(row),
                          _met(row, d_val, ratio, res.durable.timed_out is None)])
    return pipe_table(header, lines, right={2, 3, 4})


def pipe_table(header: list[str], lines: list[list[str]], right: set[int]) -> str:
    """An aligned pipe table (valid Markdown); the columns in ``right`` are right-aligned."""
    widths = [max(len(r[c]) for r in [header, *lines]) for c in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), sep, *map(fmt, lines)])
