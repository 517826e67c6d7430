"""The examples as a user runs them from a shell (the full runs are in
.ci/run; what is here is quick)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_exactly_once_example_refuses_a_url_and_makes_nothing(tmp_path):
    """The story keeps SQLite files beside a local log: given a kafka://
    URL it says so instead of making a directory named 'kafka:'."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "order_exactly_once.py"),
                        "kafka://127.0.0.1:9092"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 2
    assert "needs a local directory" in r.stderr
    assert "order_service.py" in r.stderr
    assert os.listdir(tmp_path) == []
