"""The metadata writer lock: every LMDB write transaction of every process
is taken behind it (FORMAT.rst L-7).

Why not LMDB's own writer mutex alone: a process stopped (SIGSTOP, a
debugger, a frozen VM) inside a write transaction holds that mutex until it
is continued or dies, and a waiter blocks in ``pthread_mutex_lock`` without
a timeout — holding the GIL, so every thread of the waiting process stops
too. With this lock in front, LMDB's mutex is only ever contended by the
holder of this lock, and waiting here is a poll that releases the GIL and
gives up after a bounded time with :class:`MetadataBusyError` naming the
holder's pid.

The lock is an OFD write lock on byte 0 of ``meta.lock`` in the log
directory (the kernel drops it when the holder dies, so a crashed holder
never wedges anyone). The holder writes its pid at bytes 8..15 of the file
(``<q``, little endian) for waiters' messages — only when another pid is
there, so the file does not change while one process keeps using the log.
Threads of one process queue on a ``threading.Lock`` first: OFD locks
belong to the open file description, which the threads share.

Thread safety: thread-safe. Durability: none needed (nothing in the file
outlives the holder's interest in it). Not fork-safe: the Log reopens its
metadata, and with it this lock, in a child.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time

from . import _native
from .errors import MetadataBusyError

LOCK_FILE = "meta.lock"
_HOLDER = struct.Struct("<q")       # pid of the holder (or last holder)
_HOLDER_AT = 8
_POLL_MIN_S = 0.0005                # first re-try; doubles up to _POLL_MAX_S
_POLL_MAX_S = 0.02


class MetaLock:
    """See the module docstring. ``timeout_s`` bounds every wait."""

    def __init__(self, root: str, timeout_s: float):
        self.path = os.path.join(root, LOCK_FILE)
        self.timeout_s = timeout_s
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._threads = threading.Lock()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)     # drops the OFD lock if we still held it
            self._fd = -1

    @contextlib.contextmanager
    def held(self, what: str, timeout_s: float | None = None):
        """Hold the lock for the block; wait at most ``timeout_s`` (default:
        the configured one; 0: a single try) and raise MetadataBusyError
        naming the holder when it stays busy."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        got = self._threads.acquire(timeout=timeout) if timeout > 0 else \
            self._threads.acquire(blocking=False)
        if not got:
            raise self._busy(what, timeout, os.getpid(), threads=True)
        try:
            pause = _POLL_MIN_S
            while not _native.lock(self._fd, 0, 1, "w", False):
                now = time.monotonic()
                if now >= deadline:
                    raise self._busy(what, timeout, self._holder())
                time.sleep(min(pause, deadline - now))
                pause = min(pause * 2, _POLL_MAX_S)
            mine = _HOLDER.pack(os.getpid())
            try:
                if os.pread(self._fd, _HOLDER.size, _HOLDER_AT) != mine:
                    os.pwrite(self._fd, mine, _HOLDER_AT)
            except OSError:
                pass            # only the waiters' message would suffer
            try:
                yield
            finally:
                _native.lock(self._fd, 0, 1, "u", False)
        finally:
            self._threads.release()

    def _holder(self) -> int | None:
        try:
            raw = os.pread(self._fd, _HOLDER.size, _HOLDER_AT)
        except OSError:
            return None
        return (_HOLDER.unpack(raw)[0] or None) if len(raw) == _HOLDER.size else None

    def _busy(self, what: str, timeout: float, pid, threads=False) -> MetadataBusyError:
        if threads:
            who = "another thread of this process"
        elif pid is None:
            who = "another process"
        else:
            who = f"process {pid}{_process_state(pid)}"
        return MetadataBusyError(
            f"{what}: the metadata writer lock {self.path} is held by {who}; "
            f"gave up after {timeout:g} s. A process stopped (SIGSTOP, a "
            "debugger) inside a metadata transaction blocks every commit and "
            "group change until it is continued (kill -CONT) or ends; appends "
            "and fetches go on", holder_pid=pid)


def _process_state(pid: int) -> str:
    """", which is stopped" when /proc says so (Linux), else ""."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ""
    state = stat[stat.rfind(b")") + 2:][:1]
    return ", which is stopped" if state in (b"T", b"t") else ""
