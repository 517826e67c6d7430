"""Reading lines from child processes so that a failing child fails the test
with its own traceback, not with an empty ``readline()`` (b"") or a hang.

``readline(proc)`` reads one line of a ``subprocess.Popen`` started with
``stdout=PIPE``. At end of file or after ``timeout`` seconds it kills the
child and raises ``ChildFailed`` carrying the child's exit status and the
tail of its stderr: a pipe (``stderr=PIPE``), or the file ``start()``
gives a child whose stderr nobody reads while it runs (a pipe nobody reads
stalls a chatty child once full).

It reads the stdout descriptor directly (``os.read``), never through the
buffered ``proc.stdout``, so a test may still ``proc.stdout.read()`` or
``proc.communicate()`` afterwards without losing bytes.

Thread safety: one reader per child at a time.
"""

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

STDERR_TAIL = 4000


class ChildFailed(AssertionError):
    """A child process did not print the expected line."""


def start(script: str, *args, env=None, **kw) -> subprocess.Popen:
    """``python -c script args...`` with ``stdout=PIPE`` and stderr to an
    unnamed temporary file that ``stderr_tail`` reads."""
    err = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                                stdout=subprocess.PIPE, stderr=err, env=env, **kw)
    except BaseException:
        err.close()
        raise
    proc.stderr_file = err
    return proc


def stderr_tail(proc, limit: int = STDERR_TAIL) -> str:
    """The last ``limit`` characters of the child's stderr, read after it
    ended (the caller made sure it did); a note when it was not captured."""
    f = getattr(proc, "stderr_file", None)
    try:
        if f is not None:
            f.seek(0)
            err = f.read()
        elif proc.stderr is not None:
            err = proc.stderr.read()
        else:
            return "(stderr not captured: start the child with childproc.start)"
    except (OSError, ValueError):
        return "(stderr unreadable)"
    if isinstance(err, bytes):
        err = err.decode(errors="replace")
    return err[-limit:] if err else "(stderr empty)"


def fail(proc, why: str, got: bytes = b"") -> None:
    """Kill ``proc`` (if it still runs) and raise ChildFailed with ``why``,
    what was read of the line so far and the child's stderr."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGCONT)     # a stopped child cannot die
        except ProcessLookupError:
            pass
        proc.kill()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    args = proc.args if isinstance(proc.args, str) else " ".join(map(str, proc.args))
    raise ChildFailed(f"child {proc.pid} ({args[:200]}): {why}; read {got!r}; "
                      f"exit status {proc.returncode}\n"
                      f"--- child stderr ---\n{stderr_tail(proc)}")


def readline(proc, timeout: float = 60.0) -> bytes:
    """The next line (with its newline) of ``proc``'s stdout. Raises
    ChildFailed with the child's stderr at end of file or after ``timeout``
    seconds without a whole line."""
    fd = proc.stdout.fileno()
    got = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail(proc, f"no line within {timeout:g} s", bytes(got))
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        b = os.read(fd, 1)       # one byte: never read past the line
        if not b:
            fail(proc, "end of output before a whole line", bytes(got))
        got += b
        if b == b"\n":
            return bytes(got)


def expect(proc, line: bytes, timeout: float = 60.0, *, prefix: bool = False) -> bytes:
    """Read a line and check it is ``line`` (ignoring surrounding
    whitespace) or, with ``prefix``, starts with it; a mismatch raises
    ChildFailed with the child's stderr. Returns the line read."""
    got = readline(proc, timeout)
    s = got.strip()
    ok = s.startswith(line) if prefix else s == line.strip()
    if not ok:
        fail(proc, f"expected {line!r}", got)
    return got


def killed_after_ready(proc, delay_s: float) -> bytes:
    """Wait for the child's "ready" line, let it run ``delay_s`` more and
    SIGKILL it; returns what it printed after "ready" (its last line may
    be cut short). The child is reaped whatever happens."""
    try:
        expect(proc, b"ready")
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        return proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
