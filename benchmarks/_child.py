"""Child-process entry point: run one measurement and print its result as JSON.

    python benchmarks/_child.py MODULE FUNCTION 'JSON KWARGS'

Runs ``MODULE.FUNCTION(**kwargs)`` (a module of this directory) and prints
``@@RESULT@@ {json}`` on stdout. A hang past ``$BENCH_CHILD_TIMEOUT`` seconds
dumps every thread's stack to stderr and exits, so the parent can report where
it stuck. With ``$BENCH_GC_FREEZE`` set (``run.py --gc-freeze``) it calls
``gc.freeze()`` once the measurement's module is imported.
"""

from __future__ import annotations

import faulthandler
import gc
import importlib
import json
import os
import sys

from _common import MARKER


def main(argv: list[str]) -> None:
    """Run the measurement named by ``argv`` and print its result."""
    module_name, function_name, raw = argv[1], argv[2], argv[3]
    timeout = float(os.environ.get("BENCH_CHILD_TIMEOUT", "0"))
    if timeout > 0:
        faulthandler.dump_traceback_later(timeout, exit=True)
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
