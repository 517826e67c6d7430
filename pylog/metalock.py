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

A KeyboardInterrupt (Ctrl-C) landing while the lock is taken or given
back leaves it free, but for the narrow window :class:`_Held` names.

Thread safety: thread-safe. Durability: none needed (nothing in the file
outlives the holder's interest in it). Not fork-safe: the Log reopens its
metadata, and with it this lock, in a child; the thread lock is free there
(another thread may have held it, or waited for the file lock holding it,
at the fork), so the child's close of the inherited one does not wait, and
the child closes its copy of the descriptor at the fork (pylog._locks).
"""

from __future__ import annotations

import os
import struct
import threading
import time
from typing import Any

from . import _native
from ._locks import close_in_child, free_in_child
from .errors import LogClosed, MetadataBusyError

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
        close_in_child(self, "_fd")     # (a dead holder's lock must not live on)
        # an RLock for its owner record (see _acquire), never re-entered
        self._threads = threading.RLock()
        free_in_child(self._threads)
        self._owner: Any = None        # what holds it (see _acquire)

    def close(self) -> None:
        """Close the lock file, once a write of another thread (a Log
        closed under it) has let go of the lock — at most ``timeout_s``:
        its descriptor closed under it would drop the OFD lock mid-commit
        and its release would unlock -1 (EBADF), or a file that reused
        the number. Later writes raise LogClosed."""
        got = self._threads.acquire(timeout=self.timeout_s)
        try:
            # -1 before the close: a fork child closes what it finds here
            # (pylog._locks), and the number may be reused once closed
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)     # drops the OFD lock if we still held it
        finally:
            if got:
                self._threads.release()

    def held(self, what: str, timeout_s: float | None = None) -> _Held:
        """A context manager holding the lock for its block; it waits at
        most ``timeout_s`` (default: the configured one; 0: a single try)
        and raises MetadataBusyError naming the holder when it stays busy.
        Not reentrant: a thread that holds it gets MetadataBusyError."""
        return _Held(self, what, self.timeout_s if timeout_s is None else timeout_s)

    def _acquire(self, what: str, timeout: float, holder: Any) -> None:
        """Take the thread lock, then the OFD lock. Either is given back if
        anything (a KeyboardInterrupt too) interrupts this before it
        returns: Ctrl-C is handled at the return of any call made from
        Python, so ``got = acquire()`` can lose a lock already taken; the
        RLock's owner record (written by the same C call that takes it)
        says whether this thread has it.

        ``holder`` (a :class:`_Held` or the like) is remembered until the
        release. Found holding the lock on entry, this thread either nests
        (a bug: MetadataBusyError, as the wait for itself would end) or
        left a holder whose ``__exit__`` an interrupt kept from running
        (the one point Python leaves open: a function's entry); its
        ``abandoned()`` tells which, and ``abandon()`` releases it. Held
        with no holder named, it is stale too."""
        threads = self._threads
        if threads._is_owned():    # type: ignore[attr-defined]
            old = self._owner
            if old is not None and not old.abandoned():
                raise self._busy(what, timeout, os.getpid(), threads=True)
            if old is not None:
                old.abandon()      # (aborts what it began, releases)
            # whatever of it is still held (an interrupt in the middle of
            # a release leaves no owner named): this thread's, and stale
            self._owner = None
            if self._fd >= 0:
                _native.lock(self._fd, 0, 1, "u", False)
            while threads._is_owned():    # type: ignore[attr-defined]
                threads.release()
        deadline = time.monotonic() + timeout
        try:
            got = threads.acquire(timeout=timeout) if timeout > 0 else \
                threads.acquire(blocking=False)
            if not got:
                raise self._busy(what, timeout, os.getpid(), threads=True)
            if self._fd < 0:
                raise LogClosed(f"{what}: the log was closed")
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
            self._owner = holder
        except BaseException:
            if threads._is_owned():    # type: ignore[attr-defined]
                self._release()
            raise

    def mine(self) -> bool:
        """Does this thread hold the lock?"""
        return bool(self._threads._is_owned())    # type: ignore[attr-defined]

    def _release_if_mine(self) -> None:
        if self._threads._is_owned():    # type: ignore[attr-defined]
            self._release()

    def _release(self) -> None:
        """OFD lock first (another thread of ours may take both the moment
        the thread lock is free: a later unlock would drop its lock), then
        the thread lock, even when the unlock fails. Unlocking a range not
        held is a no-op, so this is safe after a partial acquire."""
        self._owner = None
        try:
            if self._fd >= 0:          # (closed: nothing is locked)
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


class _Held:
    """:meth:`MetaLock.held`'s context manager. ``__enter__`` takes the
    lock as its last step (giving it back if interrupted) and ``__exit__``
    gives it back as its first, so a KeyboardInterrupt landing between
    them is inside the ``with`` block and reaches ``__exit__``. The point
    Python leaves open is ``__exit__``'s entry (an interrupt handled there
    never runs it): the next :meth:`MetaLock._acquire` of the thread then
    releases it (:meth:`abandon`), as :meth:`__del__` does once the
    interrupt's traceback lets go of this object. Thread safety: one per
    ``with``; not shared between threads."""

    __slots__ = ("_lock", "_what", "_timeout", "_held")

    def __init__(self, lock: MetaLock, what: str, timeout: float):
        self._lock = lock
        self._what = what
        self._timeout = timeout
        self._held = False

    def __enter__(self) -> None:
        self._lock._acquire(self._what, self._timeout, self)
        self._held = True       # (no interrupt point after a Python return)

    def __exit__(self, *exc: object) -> None:
        self.abandon()

    def abandoned(self) -> bool:
        """Held by this thread but no longer in its block (MetaLock._acquire
        asks only then): nothing nests inside this lock's blocks."""
        return True

    def abandon(self) -> None:
        if self._held:
            self._lock._release_if_mine()
            self._held = False

    def __del__(self) -> None:
        if getattr(self, "_held", False):   # (unset: __init__ was interrupted)
            self.abandon()
