"""A command run on a real pseudo-terminal, for tests of terminal programs.

The child gets the pty's slave as stdin, stdout, stderr and controlling
terminal (so a ``\\x03`` written to the master is a SIGINT from the line
discipline, as Ctrl-C is); a thread drains the master so the child never
blocks on a full pty. The test keeps the slave open to read its termios
settings before and after the child ran.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-Za-z]|[=>78])")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


# The child, a session leader (start_new_session), makes its stdin its
# controlling terminal and execs the command in its place: no Python code
# runs between fork and exec in the (threaded) test process.
_TAKE_TTY = ("import fcntl, os, sys, termios\n"
             "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
             "os.execv(sys.executable, [sys.executable] + sys.argv[1:])\n")

# With job control, the session leader acts as a shell: the command runs in
# a process group of its own, in the foreground of the terminal, so its
# group is not orphaned and Ctrl-Z stops it (the kernel discards a stop
# signal sent to an orphaned group). The "shell" exits as the command did.
_SHELL = ("import fcntl, os, signal, sys, termios\n"
          "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
          "signal.signal(signal.SIGTTOU, signal.SIG_IGN)\n"
          "pid = os.fork()\n"
          "if pid == 0:\n"
          "    os.setpgid(0, 0)\n"
          "    signal.signal(signal.SIGTTOU, signal.SIG_DFL)\n"
          "    os.execv(sys.executable, [sys.executable] + sys.argv[1:])\n"
          "os.setpgid(pid, pid)\n"
          "os.tcsetpgrp(0, pid)\n"
          "while True:\n"
          "    _, status = os.waitpid(pid, os.WUNTRACED | os.WCONTINUED)\n"
          "    if os.WIFEXITED(status):\n"
          "        sys.exit(os.WEXITSTATUS(status))\n"
          "    if os.WIFSIGNALED(status):\n"
          "        sys.exit(128 + os.WTERMSIG(status))\n")


class PtyProcess:
    def __init__(self, argv, env=None, rows=40, cols=150, job_control=False):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.termios_before = termios.tcgetattr(self.slave)
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
        full_env.update({"TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"})
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SHELL if job_control else _TAKE_TTY, *argv],
            stdin=self.slave,
            stdout=self.slave, stderr=self.slave, env=full_env,
            start_new_session=True, close_fds=True)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._stop = False
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while not self._stop:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    return
                with self._lock:
                    self._buf += data

    @property
    def output(self) -> str:
        with self._lock:
            return self._buf.decode("utf-8", "replace")

    def expect(self, predicate, timeout: float = 20.0) -> str:
        """Wait until ``predicate(output)`` is true; the output then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output
            if predicate(out):
                return out
            if self.proc.poll() is not None:
                time.sleep(0.2)         # what it wrote last
                out = self.output
                if predicate(out):
                    return out
                raise AssertionError(f"exited with {self.proc.returncode}; "
                                     f"output:\n{strip_ansi(out)[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out; output:\n{strip_ansi(self.output)[-3000:]}")

    @property
    def command_pid(self) -> int:
        """The command's pid (with job control, the "shell"'s child)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
            with open(path) as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError("no command process")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 20.0) -> int:
        rc = self.proc.wait(timeout)
        time.sleep(0.1)                 # the drain thread reads the last bytes
        return rc

    def termios_after(self):
        return termios.tcgetattr(self.slave)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._stop = True
        self._reader.join()
        os.close(self.master)
        os.close(self.slave)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
