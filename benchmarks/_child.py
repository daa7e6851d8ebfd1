"""Child-process entry point: run one measurement and print its result as JSON.

    python benchmarks/_child.py MODULE FUNCTION 'JSON KWARGS'

Runs ``MODULE.FUNCTION(**kwargs)`` (a module of this directory) and prints
``@@RESULT@@ {json}`` on stdout. A hang past ``$BENCH_CHILD_TIMEOUT`` seconds
dumps every thread's stack to stderr and exits, so the parent can report where
it stuck.
"""

from __future__ import annotations

import faulthandler
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
    result = function(**json.loads(raw))
    faulthandler.cancel_dump_traceback_later()
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv)
