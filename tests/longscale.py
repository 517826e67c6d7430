"""How much of its full count a long test runs: ``PYLOG_LONG_SCALE``
(default 1: the counts the issues set, e.g. 100 SIGKILLs per sync mode).
``.ci/run`` runs the long suites at a fraction of that to keep the whole
run short; run them at 1 before a release or after changing what they
guard.

Thread safety: pure. Durability: none.
"""

from __future__ import annotations

import os


def scaled(n: int, least: int = 1) -> int:
    """``n`` times PYLOG_LONG_SCALE, at least ``least``."""
    return max(least, round(n * float(os.environ.get("PYLOG_LONG_SCALE", "1"))))
