"""tests/childproc.py: a child that dies or hangs before its line fails the
test with the child's own traceback, not with an empty readline."""

import childproc
import pytest

CRASH = "import sys; print('partial', end='', flush=True); raise RuntimeError('boom in child')"
HANG = "import time; time.sleep(60)"
CHATTY = ("import sys\n"
          "sys.stderr.write('x' * 200000)\n"      # more than a pipe holds
          "print('ready', flush=True)\n"
          "print('second', flush=True)\n")


def test_eof_raises_with_the_child_traceback():
    proc = childproc.start(CRASH)
    with pytest.raises(childproc.ChildFailed) as ei:
        childproc.expect(proc, b"ready")
    msg = str(ei.value)
    assert "RuntimeError: boom in child" in msg and "b'partial'" in msg
    assert "exit status 1" in msg


def test_timeout_kills_the_child_and_raises():
    proc = childproc.start(HANG)
    with pytest.raises(childproc.ChildFailed, match="no line within 0.3 s"):
        childproc.readline(proc, timeout=0.3)
    assert proc.returncode is not None


def test_lines_and_the_rest_of_stdout():
    proc = childproc.start(CHATTY)
    assert childproc.expect(proc, b"ready") == b"ready\n"
    out, _ = proc.communicate(timeout=30)       # nothing was read ahead
    assert out == b"second\n"
    with pytest.raises(childproc.ChildFailed, match="expected"):
        proc2 = childproc.start(CHATTY)
        childproc.expect(proc2, b"other")
