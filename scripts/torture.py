"""The long kill-anywhere torture run: ``python scripts/torture.py --kills 1000 --seed 7``.

The harness itself lives in ``tests/crash/torture.py`` (CI runs it with 30 kills,
``tests/crash/test_torture.py``); this is its command-line entry for long runs. It
SIGKILLs a child running a mix of workflows at random moments, resumes on the
same LMDB store, and checks every invariant; it prints the figures (kills,
workflows, steps, re-executions, violations) and exits non-zero on any violation.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "crash"))

import torture  # noqa: E402

if __name__ == "__main__":
    sys.exit(torture.main())
