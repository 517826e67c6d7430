"""Fixtures of the README promise tests; tests/conftest.py (long marker,
``child_env``, ``logdir``, ``shim``, orphan killing) applies here too."""

import pytest

import pylog


@pytest.fixture
def log(tmp_path):
    """A fresh log in the default sync mode ("always"), closed afterwards."""
    lg = pylog.open(tmp_path / "log")
    yield lg
    lg.close()


@pytest.fixture
def fastlog(tmp_path):
    """A fresh log with sync="never": for promises that are not about
    durability, so that thousands of sends cost no fsyncs."""
    lg = pylog.open(tmp_path / "log", sync="never")
    yield lg
    lg.close()
