"""tests/services.py: a missing service skips on a user's machine and fails
under PYLOG_REQUIRE_SERVICES=1 (as .ci/run sets)."""

import os
import socket
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = '''
import services
def test_missing():
    services.PORTS["nothing"] = {port}
    services.require("nothing")
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]          # closed again: nothing listens


def _run(tmp_path, require):
    (tmp_path / "test_probe.py").write_text(PROBE.format(port=_free_port()))
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO_ROOT, "tests"),
               PYLOG_REQUIRE_SERVICES=require)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "-p", "conftest",
                           "-c", os.devnull, str(tmp_path / "test_probe.py")],
                          env=env, capture_output=True, text=True, cwd=tmp_path)


def test_missing_service_skips_for_users(tmp_path):
    r = _run(tmp_path, "0")
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout


def test_missing_service_fails_in_ci(tmp_path):
    r = _run(tmp_path, "1")
    assert r.returncode == 1 and "1 failed" in r.stdout, r.stdout
    assert "PYLOG_REQUIRE_SERVICES=1" in r.stdout
