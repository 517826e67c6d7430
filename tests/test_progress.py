"""Progress of long commands (``verify``, ``dump``): drawn on stderr when it
is a terminal (a real pseudo-terminal here), with rich and without it;
silent with ``--quiet``, when stderr is no terminal, and for small logs.
"""

import os
import subprocess
import sys

import pytest
from ptyproc import PtyProcess, strip_ansi

import pylog
from pylog.cli.progress import MIN_BYTES


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    """A log of one partition, one segment, a little over MIN_BYTES."""
    path = str(tmp_path_factory.mktemp("progress") / "log")
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=1)
        p = log.producer()
        value = os.urandom(1000)        # incompressible, whatever the codec
        for _ in range(MIN_BYTES // 1000 // 500 + 2):
            p.send_batch("t", [value] * 500)
        p.flush()
    return path


def _segment(path):
    d = os.path.join(path, "t-0")
    (name,) = [f for f in os.listdir(d) if f.endswith(".log")]
    return os.path.join(d, name)


@pytest.fixture(params=["rich", "plain"])
def env(request, tmp_path):
    """The environment of a run with rich importable, or without it."""
    if request.param == "rich":
        pytest.importorskip("rich")
        return {}
    shadow = tmp_path / "shadow" / "rich"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed')\n")
    return {"PYTHONPATH": str(shadow.parent)}


def _run_on_pty(argv, env):
    with PtyProcess(["-m", "pylog.cli", *argv], env=env) as t:
        rc = t.wait(60)
        return rc, t.output


@pytest.mark.parametrize("command,label,done", [
    ("verify", "verifying", "is sound"), ("dump", "reading", "batches:")])
def test_progress_is_drawn_then_erased_on_a_terminal(big_log, env, command, label, done):
    target = big_log if command == "verify" else _segment(big_log)
    rc, out = _run_on_pty([command, target], env)
    assert rc == 0, strip_ansi(out)[-2000:]
    assert os.path.getsize(_segment(big_log)) >= MIN_BYTES
    assert label in out
    # drawn before the result, and erased (the result's line is clean)
    assert out.index(label) < out.index(done)
    result_line = [ln for ln in strip_ansi(out).splitlines() if done in ln][0]
    assert label not in result_line and "%" not in result_line


@pytest.mark.parametrize("command", ["verify", "dump"])
def test_quiet_means_no_progress(big_log, command):
    target = big_log if command == "verify" else _segment(big_log)
    rc, out = _run_on_pty([command, target, "--quiet"], {})
    assert rc == 0
    assert "verifying" not in out and "reading" not in out and "%" not in out


def test_no_progress_when_stderr_is_no_terminal(big_log):
    out = subprocess.run([sys.executable, "-m", "pylog.cli", "verify", big_log],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""


def test_no_progress_for_a_small_log(tmp_path):
    path = str(tmp_path / "log")
    with pylog.open(path, sync="never") as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"x"] * 100)
    rc, out = _run_on_pty(["verify", path], {})
    assert rc == 0 and "verifying" not in out and "is sound" in out
