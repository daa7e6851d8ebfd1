"""Run the benchmark suite: each workload on durable and, if installed, on DBOS; print a table.

    python benchmarks/run.py [--only W1,W3] [--repeat N] [--quick] [--json PATH] [--no-peer]

Every measurement runs in a fresh child process on a fresh store in a
temporary directory (``--dir`` picks where: put it on the disk you care
about; a tmpfs makes fsync free). See benchmarks/README.md.
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
from _proc import ChildFailed, make_spawn
from _report import RATIO_NOTE, Result, cpu_probe, load_average, machine_info, table

MODULES = ["w1_sequential", "w2_concurrent", "w3_parallel", "w4_resume", "w5_memory", "u_plain", "p1_sleep", "p2_map"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3 (default: all: W1-W5, U, P1, P2)")
    p.add_argument("--repeat", type=int, default=None,
                   help="repeats per workload, median reported (default: 3, W5 1; --quick: 1)")
    p.add_argument("--quick", action="store_true", help="scaled-down sizes, for a smoke run")
    p.add_argument("--json", metavar="PATH", help="also write every sample and median to PATH")
    p.add_argument("--no-peer", action="store_true", help="skip DBOS even if it is installed")
    p.add_argument("--dir", default=None, help="where to put the temporary stores (default: the system temp dir)")
    p.add_argument("--timeout", type=float, default=1200, help="seconds one child process may run")
    p.add_argument("--gc-freeze", action="store_true",
                   help="each child process (both sides) calls gc.freeze() after its imports: an application's "
                        "tuning, measured apart (the default run is without)")
    p.add_argument("-v", "--verbose", action="store_true", help="print every child process started")
    return p.parse_args(argv)


def run_side(module: ModuleType, side: str, sizes: Sizes, args: argparse.Namespace, root: str) -> Outcome:
    """Measure one workload on one side, in a directory of its own that is removed afterwards."""
    workdir = tempfile.mkdtemp(prefix=f"{module.KEY}-{side}-", dir=root)
    spawn = make_spawn(workdir, args.timeout, sys.stderr if args.verbose else None)
    cfg = Config(sizes=sizes, repeat=args.repeat, workdir=workdir, quick=args.quick)
    try:
        return Outcome(samples=module.measure(side, cfg, spawn))
    except ChildFailed as exc:
        return Outcome(error=str(exc))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def summary(result: Result, side: str, outcome: Outcome) -> str:
    """A progress line for one side of a workload."""
    if outcome.error is not None:
        return f"{result.key} {side}: ERROR ({outcome.error.splitlines()[0]})"
    row = next((r for r in result.rows if r.limit is not None), result.rows[0])
    value = outcome.median(row.key)
    shown = "—" if value is None else row.fmt.format(value)
    return (f"{result.key} {side}: {shown} {row.label} (median of {len(outcome.samples)}, "
            f"{result.seconds[side]:.1f} s, load before {result.load[side]:.2f})")


def main(argv: list[str] | None = None) -> int:
    """Run the selected workloads; print machine info and the table; 1 if a measurement failed."""
    args = parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    modules = [importlib.import_module(m) for m in MODULES]
    wanted = {w.strip().upper() for w in args.only.split(",") if w.strip()}
    unknown = wanted - {m.KEY for m in modules}
    if unknown:
        print(f"unknown workload(s): {', '.join(sorted(unknown))}", file=sys.stderr)
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
        for module in selected:
            res = Result(module.KEY, module.TITLE.format(**asdict(sizes)), module.ROWS, Outcome())
            for side in ("durable", "dbos") if peer else ("durable",):
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
            results.append(res)
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
    failed = [(res.key, side, o.error) for res in results for side, o in (("durable", res.durable), ("dbos", res.dbos))
              if o is not None and o.error is not None]
    for key, side, error in failed:
        print(f"\n--- {key} on {side} failed ---\n{error}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "sizes": asdict(sizes), "quick": args.quick, "seconds": elapsed,
                       "workloads": [{"key": r.key, "title": r.title, "seconds": r.seconds, "load_before": r.load,
                                      "rows": [asdict(row) for row in r.rows],
                                      **{side: None if o is None else {
                                          "samples": o.samples, "error": o.error, "note": o.note,
                                          "medians": {row.key: o.median(row.key) for row in r.rows}}
                                         for side, o in (("durable", r.durable), ("dbos", r.dbos))}}
                                     for r in results]}, f, indent=2)
        print(f"results written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
