"""Crash loops (issue 6): see harness.py for what is checked after each
SIGKILL round. The default suite runs ~10 kills; the long one >= 300 kills
across the three sync modes within a time budget. Seeds are printed;
``PYLOG_SEED`` replays one."""

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from longscale import scaled  # noqa: E402


def _seed():
    return int(os.environ.get("PYLOG_SEED", random.randrange(1 << 30)))


def test_crash_loop_quick(tmp_path):
    seed = _seed()
    print(f"seed {seed} (replay with PYLOG_SEED={seed})")
    rounds, st = harness.run(str(tmp_path / "log"), seed, kills=10)
    print(f"crash loop: {rounds} rounds, {st.kills} kills survived, "
          f"{st.records} acked records kept, seed {seed}")
    assert st.kills >= 10 and st.records > 0


@pytest.mark.long
def test_crash_loop_long(tmp_path):
    seed = _seed()
    print(f"seed {seed} (replay with PYLOG_SEED={seed})")
    budget = float(os.environ.get("PYLOG_CRASH_BUDGET_S", "200"))
    # (times PYLOG_LONG_SCALE: tests/longscale.py)
    rounds, st = harness.run(str(tmp_path / "log"), seed, kills=scaled(320),
                             budget_s=budget)
    print(f"crash loop: {rounds} rounds, {st.kills} kills survived, "
          f"{st.records} acked records kept, seed {seed}")
    assert st.kills >= scaled(300), f"only {st.kills} kills within {budget} s"
