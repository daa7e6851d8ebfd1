"""Run the benchmark suite: each workload on durable and, if installed, on DBOS; print a table.

    python benchmarks/run.py [--only W1,W3] [--repeat N] [--quick] [--json PATH] [--no-peer] [--timeout S|W5=S]

Every measurement runs in a fresh child process on a fresh store in a
temporary directory (``--dir`` picks where: put it on the disk you care
about; a tmpfs makes fsync free). Each child process has a time limit fit to
its workload (``CHILD_LIMITS``); one that runs past it is killed with its
whole process group and its cell reads "did not finish in N s". DBOS's W5
(10,000 threads at once) runs after every other workload, on both sides.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from types import ModuleType

from _common import Config, Outcome, Sizes
from _proc import ChildFailed, ChildTimedOut, make_spawn
from _report import RATIO_NOTE, Result, cpu_probe, load_average, machine_info, table

MODULES = ["w1_sequential", "w2_concurrent", "w3_parallel", "w4_resume", "w5_memory", "u_plain", "p1_sleep", "p2_map",
           "clients"]
SIDES = ("durable", "dbos")

CHILD_LIMITS: dict[str, dict[str, tuple[float, float]]] = {
    # Seconds ONE child process of the workload may run, (--quick, full), per side. Past it the
    # child's whole process group is killed and its cell reads "did not finish in N s"; --timeout
    # overrides (S for all, W5=S, W5:dbos=S). About 10 times the slowest child of the workload on
    # the 2-CPU development VM, and at least 60 s. DBOS's W5 in flight is the long one: 15, 76
    # and 105 s for 1,000, 3,000 and 5,000 workflows (its 20-connection pool already exhausted at
    # 5,000), so some 250 s expected at 10,000: 900 s, where a run once held both CPUs 18 minutes.
    "W1": {"durable": (60, 60), "dbos": (60, 120)},
    "W2": {"durable": (60, 60), "dbos": (60, 180)},
    "W3": {"durable": (60, 60), "dbos": (60, 60)},
    "W4": {"durable": (60, 60), "dbos": (60, 300)},
    "W5": {"durable": (60, 120), "dbos": (120, 900)},
    "U": {"durable": (60, 60)},  # U, P1, P2: not run on DBOS
    "P1": {"durable": (120, 400)},  # its calibrated wake-ups: ~15 s quick, ~35 s full on the VM
    "P2": {"durable": (60, 60)},
    "C": {"durable": (120, 300)},  # one child per part (clients.py), its workers in its process group: ~10-40 s
}


def parse_timeout(text: str | None) -> dict[str, float]:
    """``--timeout``: ``S`` (every child), or ``KEY=S`` / ``KEY:SIDE=S`` items, comma-separated.

    Returns a map from ``""`` (all), ``"W5"`` or ``"W5:dbos"`` to seconds; the most specific wins.
    """
    limits: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.rpartition("=")
        workload, _, side = key.strip().upper().partition(":")
        if side and side.lower() not in SIDES:
            raise argparse.ArgumentTypeError(f"--timeout {item!r}: the side is durable or dbos")
        try:
            seconds = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--timeout {item!r}: not a number of seconds") from None
        if not seconds > 0:
            raise argparse.ArgumentTypeError(f"--timeout {item!r}: must be positive")
        limits[f"{workload}:{side.lower()}" if side else workload] = seconds
    return limits


def child_limit(key: str, side: str, quick: bool, overrides: dict[str, float]) -> float:
    """The time limit of one child process of workload ``key`` on ``side``."""
    for name in (f"{key}:{side}", key, ""):
        if name in overrides:
            return overrides[name]
    return CHILD_LIMITS[key][side][0 if quick else 1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="",
                   help="comma-separated workloads, e.g. W1,W3 (default: all: W1-W5, U, P1, P2, C)")
    p.add_argument("--repeat", type=int, default=None,
                   help="repeats per workload, median reported (default: 3, W5 1; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="scaled-down sizes, for a smoke run")
    p.add_argument("--json", metavar="PATH", help="also write every sample and median to PATH")
    p.add_argument("--no-peer", action="store_true", help="skip DBOS even if it is installed")
    p.add_argument("--dir", default=None, help="where to put the temporary stores (default: the system temp dir)")
    p.add_argument("--timeout", type=parse_timeout, default={}, metavar="S|KEY=S",
                   help="seconds one child process may run: S for all, or per workload (W5=300, W5:dbos=300), "
                        "comma-separated (default: a table per workload and size, CHILD_LIMITS in run.py)")
    p.add_argument("--gc-freeze", action="store_true",
                   help="each child process (both sides) calls gc.freeze() after its imports: an application's "
                        "tuning, measured apart (the default run is without)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every child process started")
    return p.parse_args(argv)


def run_side(module: ModuleType, side: str, sizes: Sizes, args: argparse.Namespace, root: str) -> Outcome:
    """Measure one workload on one side, in a directory of its own that is removed afterwards."""
    workdir = tempfile.mkdtemp(prefix=f"{module.KEY}-{side}-", dir=root)
    limit = child_limit(module.KEY, side, args.quick, args.timeout)
    spawn = make_spawn(workdir, limit, sys.stderr if args.verbose else None)
    cfg = Config(sizes=sizes, repeat=args.repeat, workdir=workdir, quick=args.quick)
    try:
        return Outcome(samples=module.measure(side, cfg, spawn))
    except ChildTimedOut as exc:
        return Outcome(error=str(exc), timed_out=exc.limit)
    except ChildFailed as exc:
        return Outcome(error=str(exc))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summary(result: Result, side: str, outcome: Outcome) -> str:
    """A progress line for one side of a workload."""
    if outcome.timed_out is not None:
        return (f"{result.key} {side}: did not finish in {outcome.timed_out:g} s: a child process ran past its "
                f"limit, its process group was killed ({result.seconds[side]:.1f} s, "
                f"load before {result.load[side]:.2f})")
    if outcome.error is not None:
        return f"{result.key} {side}: ERROR ({outcome.error.splitlines()[0]})"
    row = next((r for r in result.rows if r.limit is not None), result.rows[0])
    value = outcome.median(row.key)
    shown = "—" if value is None else row.fmt.format(value)
    return (f"{result.key} {side}: {shown} {row.label} (median of {len(outcome.samples)}, "
            f"{result.seconds[side]:.1f} s, load before {result.load[side]:.2f})")


def main(argv: list[str] | None = None) -> int:
    """Run the selected workloads; print machine info and the table.

    Returns 1 if a measurement failed or one of durable's did not finish in its time limit (DBOS's not
    finishing is reported in the table, not a failure of the run).
    """
    args = parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    modules = [importlib.import_module(m) for m in MODULES]
    wanted = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    unknown = wanted - {m.KEY for m in modules}
    if unknown:
        print(f"unknown workload(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    unknown = {name.partition(":")[0] for name in args.timeout} - {"", *(m.KEY for m in modules)}
    if unknown:
        print(f"--timeout: unknown workload(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    selected = [m for m in modules if not wanted or m.KEY in wanted]
    peer = not args.no_peer and importlib.util.find_spec("dbos") is not None
    root = tempfile.mkdtemp(prefix="durable-bench-", dir=args.dir)
    started = time.perf_counter()
    try:
        info = machine_info(root)
        info["sizes"] = "quick" if args.quick else "full"
        info["gc"] = "gc.freeze() after imports (--gc-freeze)" if args.gc_freeze else "Python's defaults"
        if args.gc_freeze:
            os.environ["BENCH_GC_FREEZE"] = "1"  # the children inherit it (see _child.py)
        info["peer"] = ("DBOS with SQLite" if peer else
                        "skipped (--no-peer)" if args.no_peer else
                        "skipped: dbos is not installed (pip install 'durable[bench]')")
        for k, v in info.items():
            print(f"{k:>13}: {v}")
        print(flush=True)
        results: list[Result] = []
        jobs: list[tuple[ModuleType, Result, str]] = []
        last: list[tuple[ModuleType, Result, str]] = []  # PEER_LAST: the peer's side after everything else
        for module in selected:
            res = Result(module.KEY, module.TITLE.format(**asdict(sizes)), module.ROWS, Outcome())
            results.append(res)
            for side in SIDES if peer else SIDES[:1]:
                late = side == "dbos" and getattr(module, "PEER_LAST", False)
                (last if late else jobs).append((module, res, side))
        for module, res, side in jobs + last:
            res.load[side] = os.getloadavg()[0]
            t0 = time.perf_counter()
            na = getattr(module, "PEER_NA", None)
            outcome = Outcome(note=na) if side == "dbos" and na else run_side(module, side, sizes, args, root)
            res.seconds[side] = time.perf_counter() - t0
            if side == "durable":
                res.durable = outcome
            else:
                res.dbos = outcome
            if not (side == "dbos" and na):
                print(summary(res, side, outcome), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print()
    print(table(results))
    print()
    print(RATIO_NOTE)
    for res in results:
        if res.dbos is not None and res.dbos.note and not res.dbos.samples:
            print(f"DBOS n/a for {res.key}: {res.dbos.note}")
    info["load avg at end"] = load_average()
    info["cpu probe at end"] = cpu_probe()
    print(f"total time: {elapsed:.0f} s; load average at start {info['load avg']}, at end {info['load avg at end']}")
    print(f"cpu probe at start: {info['cpu probe']}; at end: {info['cpu probe at end']}")
    print(f"({os.cpu_count()} CPUs: a 1-minute load above that before a workload means other work skewed it; "
          "the progress lines show it. The average lags, and DBOS's W5 raises it by itself: its blocked threads count.)")
    failed = []  # a measurement that failed, or durable's that did not finish; the peer's too slow is a result
    for res in results:
        for side, o in (("durable", res.durable), ("dbos", res.dbos)):
            if o is None or o.error is None:
                continue
            what = "did not finish" if o.timed_out is not None else "failed"
            print(f"\n--- {res.key} on {side} {what} ---\n{o.error}", file=sys.stderr)
            if not (side == "dbos" and o.timed_out is not None):
                failed.append((res.key, side))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "sizes": asdict(sizes), "quick": args.quick, "seconds": elapsed,
                       "workloads": [{"key": r.key, "title": r.title, "seconds": r.seconds, "load_before": r.load,
                                      "rows": [asdict(row) for row in r.rows],
                                      **{side: None if o is None else {
                                          "samples": o.samples, "error": o.error, "note": o.note,
                                          "timed_out": o.timed_out,
                                          "medians": {row.key: o.median(row.key) for row in r.rows}}
                                         for side, o in (("durable", r.durable), ("dbos", r.dbos))}}
                                     for r in results]}, f, indent=2)
        print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
