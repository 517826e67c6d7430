"""Shared fixtures of the storage-engine tests: the ``long`` marker and a
fresh log directory. Long tests run with ``--run-long`` or ``PYLOG_LONG=1``."""

import os
import shutil
import subprocess

import pytest
from tmpfsmount import mounted_tmpfs

import pylog

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_addoption(parser):
    parser.addoption("--run-long", action="store_true", default=False,
                     help="also run tests marked long (or set PYLOG_LONG=1)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "long: slow soak test; skipped unless --run-long or PYLOG_LONG=1")


LONG_TIMEOUT_S = 1800      # per long test; the default (pyproject.toml) is 300


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "long" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_S))
    if config.getoption("--run-long") or os.environ.get("PYLOG_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="long test: use --run-long or PYLOG_LONG=1")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With PYLOG_REQUIRE_SERVICES=1 (.ci/run), a skip for a missing service
    (tests/services.py) is a failure: CI must test against the real ones."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("PYLOG_REQUIRE_SERVICES") != "1" or not report.skipped:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if "needs service:" in reason:
        report.outcome = "failed"
        report.longrepr = f"PYLOG_REQUIRE_SERVICES=1 but the test skipped: {reason}"


@pytest.fixture(scope="session")
def shim(tmp_path_factory):
    """tests/shim/pylogshim.c built as an LD_PRELOAD library (fault injection
    and power-loss images, see its header); skips without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler for the LD_PRELOAD shim")
    so = str(tmp_path_factory.mktemp("shim") / "pylogshim.so")
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", so,
                    os.path.join(REPO_ROOT, "tests", "shim", "pylogshim.c"),
                    "-ldl", "-lpthread"], check=True)
    return so


@pytest.fixture
def logdir(tmp_path):
    """Path of a log directory that does not exist yet."""
    return str(tmp_path / "log")


@pytest.fixture
def log(tmp_path):
    """An open Log (``sync="never"``) in a fresh directory, closed after
    the test; a module may define its own ``log`` in its place."""
    lg = pylog.open(tmp_path / "log", sync="never")
    yield lg
    lg.close()


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs mounted for the test (unmounted after it), to fill
    up; skips without the right to mount one."""
    with mounted_tmpfs(tmp_path, "4m") as mnt:
        yield mnt


@pytest.fixture
def child_env():
    """Environment for child processes that import pylog from this tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _children(pid):
    """Live child processes of ``pid`` (Linux /proc), except helper daemons."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != b"Z" and b"resource_tracker" not in cmd:
            out.append(int(name))
    return out


@pytest.fixture(autouse=True)
def _no_orphan_processes():
    """A test that fails (or times out) while children run must not leave
    them behind to load the machine for the rest of the suite."""
    yield
    if not os.path.isdir("/proc"):
        return
    import signal
    for pid in _children(os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
