"""The lock of a share-partition state file (pylog.sharestate, FORMAT.rst
Q-2): an OFD write lock on byte 0 of the file (the kernel drops it when its
holder dies), behind a per-process thread lock (OFD locks belong to the
open file description, which the threads of a process share).

A KeyboardInterrupt (Ctrl-C) that a process catches leaves it free, as
pylog.metalock's: CPython handles a pending signal at the return of any
call made from Python and at the entry of a Python function, so
``lock.acquire(); try:`` can lose a lock already taken, and a ``with``
block's ``__exit__`` can be interrupted at its entry, before it gives the
lock back. :class:`Held` takes the lock as the last step of ``__enter__``
(giving it back if interrupted: the thread lock is an ``RLock``, whose C
acquire records the owning thread in the same call) and gives it back as
the first of ``__exit__``. The one point left open (``__exit__``'s entry)
is closed twice over: the holder's finalizer gives the lock
back once the interrupt's traceback lets go of it (the end of the
``except`` block that caught it), and the thread's next use of the lock
gives back a hold it finds its own (no block of this lock nests in
another of the same file, so such a hold is always a left-over). Another
thread waits at most ``timeout_s`` and then raises
:class:`~pylog.errors.MetadataBusyError` naming the lock.

Thread safety: thread-safe. Durability: none (a lock).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from . import _native
from .errors import InvalidArgument, MetadataBusyError, PylogError


class ShareLock:
    """See the module docstring. ``fd()`` gives the file's descriptor (-1
    once closed); ``taken()`` runs once both locks are held (a batch a
    dead holder left in the journal is applied there), under them."""

    def __init__(self, path: str, timeout_s: float, fd: Callable[[], int],
                 taken: Callable[[], None]) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._fd = fd
        self._taken = taken
        # an RLock for its owner record (pylog._locks), never re-entered
        self._threads = threading.RLock()
        # the holder's mark (not the holder: a reference would keep it,
        # and its finalizer, alive while it holds the lock)
        self._owner: object | None = None
        # the thread and the frame of the ``with`` block that took the
        # thread lock: while that frame runs, the hold is in use, not left
        # over (the frame itself, not its id: a new frame of the next call
        # takes the freed one's address)
        self._owner_thread = 0
        self._owner_frame: FrameType | None = None

    def held(self, wait: bool = True, file: bool = True) -> Held:
        """A context manager holding the lock for its block; ``__enter__``
        returns False (holding nothing) only when ``wait`` is false and the
        lock is busy. ``file`` false: the thread lock only (closing the
        file)."""
        return Held(self, wait, file)

    def _acquire(self, holder: Held, wait: bool, file: bool) -> bool:
        threads = self._threads
        me = threading.get_ident()
        if threads._is_owned():    # type: ignore[attr-defined]
            if _running(me, self._owner_frame):
                # a signal handler or a finalizer run inside a call that
                # holds it: taking it would let two changes interleave
                raise InvalidArgument(
                    f"the share-state lock of {self.path} is held by a call of this "
                    "thread still running: a signal handler or a __del__ used a "
                    "share consumer of the same partition inside it; do that after "
                    "the call returns (set a flag in the handler)")
            # a hold left by an interrupt at the entry of Held.__exit__:
            # its block is over
            self._drop_stale()
        try:
            if wait:
                while not threads.acquire(timeout=self.timeout_s):
                    if not _running(self._owner_thread, self._owner_frame):
                        raise self._busy()
                    # (its holder is at work: waiting for another process's
                    # file lock, say; wait on as for that lock itself)
            elif not threads.acquire(blocking=False):
                return False
            self._owner_thread, self._owner_frame = me, sys._getframe(2)
            if file:
                fd = self._fd()
                if fd < 0:
                    raise PylogError(f"share state {self.path} is closed (its Log was "
                                     "closed)")
                if not _native.lock(fd, 0, 1, "w", wait):
                    threads.release()
                    return False
                self._taken()
            holder._mark = self._owner = object()
            holder.__class__ = _Holding     # (its finalizer, only while it holds)
            holder._held = True     # (no interrupt point from here to the return)
        except BaseException:
            if threads._is_owned():    # type: ignore[attr-defined]
                self._owner = None
                self._unlock_all()
            raise
        return True

    def _drop_stale(self) -> None:
        self._owner = None          # (its holder's release is a no-op from now)
        self._unlock_all()


    def _unlock_all(self) -> None:
        """The OFD lock first (another thread of ours may take both the
        moment the thread lock is free: a later unlock would drop its),
        then the thread lock, whatever the unlock does. Unlocking a range
        not held is a no-op, so this is safe after a partial acquire."""
        try:
            fd = self._fd()
            if fd >= 0:
                _native.lock(fd, 0, 1, "u", False)
        finally:
            self._owner_thread, self._owner_frame = 0, None
            while self._threads._is_owned():    # type: ignore[attr-defined]
                self._threads.release()

    def release(self, holder: Held) -> None:
        """Give back ``holder``'s hold, if it still has it and this thread
        holds the lock (a finalizer may run in another thread: the owner's
        next use gives the hold back then)."""
        if holder._held and self._owner is holder._mark and \
                self._threads._is_owned():    # type: ignore[attr-defined]
            self._owner = None
            holder._held = False
            holder.__class__ = Held
            self._unlock_all()

    def _busy(self) -> MetadataBusyError:
        return MetadataBusyError(
            f"the share-state lock of {self.path} is held by another thread of this "
            f"process; gave up after {self.timeout_s:g} s. A KeyboardInterrupt caught "
            "in that thread may leave it held until the thread uses its share consumer "
            "again or lets go of the interrupt's traceback", holder_pid=os.getpid())


def _running(thread: int, frame: FrameType | None) -> bool:
    """Whether ``frame`` is on ``thread``'s stack (still running)."""
    if frame is None:
        return False
    f = sys._getframe(1) if thread == threading.get_ident() else \
        sys._current_frames().get(thread)
    while f is not None:
        if f is frame:
            return True
        f = f.f_back
    return False


class Held:
    """:meth:`ShareLock.held`'s context manager (module docstring).
    Thread safety: one per ``with``; not shared between threads."""

    __slots__ = ("_lock", "_wait", "_file", "_held", "_mark")

    def __init__(self, lock: ShareLock, wait: bool, file: bool) -> None:
        self._lock = lock
        self._wait = wait
        self._file = file
        self._held = False
        self._mark: object | None = None

    def __enter__(self) -> bool:
        return self._lock._acquire(self, self._wait, self._file)

    def __exit__(self, *exc: Any) -> None:
        self._lock.release(self)


class _Holding(Held):
    """A :class:`Held` while it holds the lock: its finalizer gives the
    lock back when an interrupt kept ``__exit__`` from running. Only
    holders have one: a finalizer's entry is a point where an interrupt is
    handled and, raised there, lost ("Exception ignored")."""

    __slots__ = ()

    def __del__(self) -> None:
        if getattr(self, "_held", False):   # (unset: __init__ was interrupted)
            self._lock.release(self)
