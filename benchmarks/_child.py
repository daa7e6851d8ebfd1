"""Child-process entry point: run one measurement and print its result as JSON.

    python benchmarks/_child.py MODULE FUNCTION 'JSON KWARGS'

Runs ``MODULE.FUNCTION(**kwargs)`` (a module of this directory) and prints
``@@RESULT@@ {json}`` on stdout. The parent (``_proc.py``) enforces the time
limit: past it, it sends ``SIGUSR1``, on which this process dumps every
thread's stack to stderr (so the report shows where it stuck), then kills the
child's whole process group. Should the parent itself be gone, the child
exits on its own a minute after ``$BENCH_CHILD_TIMEOUT`` seconds. With
``$BENCH_GC_FREEZE`` set (``run.py --gc-freeze``) it calls ``gc.freeze()``
once the measurement's module is imported.
"""

from __future__ import annotations

import faulthandler
import gc
import importlib
import json
import os
import signal
import sys

from _common import MARKER


def main(argv: list[str]) -> None:
    """Run the measurement named by ``argv`` and print its result."""
    module_name, function_name, raw = argv[1], argv[2], argv[3]
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent's "time is up": dump the stacks
    timeout = float(os.environ.get("BENCH_CHILD_TIMEOUT", "0"))
    if timeout > 0:
        faulthandler.dump_traceback_later(timeout + 60, exit=True)  # only if the parent is gone
    function = getattr(importlib.import_module(module_name), function_name)
    if os.environ.get("BENCH_GC_FREEZE"):
        # --gc-freeze: what an application may do once its imports are done, so
        # the collector never scans them again (the modules' objects live forever anyway).
        gc.freeze()
    result = function(**json.loads(raw))
    faulthandler.cancel_dump_traceback_later()
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv)
