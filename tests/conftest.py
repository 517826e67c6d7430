"""Shared fixtures of the storage-engine tests: the ``long`` marker and a
fresh log directory. Long tests run with ``--run-long`` or ``PYLOG_LONG=1``."""

import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_addoption(parser):
    parser.addoption("--run-long", action="store_true", default=False,
                     help="also run tests marked long (or set PYLOG_LONG=1)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "long: slow soak test; skipped unless --run-long or PYLOG_LONG=1")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-long") or os.environ.get("PYLOG_LONG") == "1":
        return
    skip = pytest.mark.skip(reason="long test: use --run-long or PYLOG_LONG=1")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def logdir(tmp_path):
    """Path of a log directory that does not exist yet."""
    return str(tmp_path / "log")


@pytest.fixture
def child_env():
    """Environment for child processes that import pylog from this tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env
