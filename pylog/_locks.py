"""A non-blocking acquire that a KeyboardInterrupt cannot leave half done,
and locks that a fork child finds free.

CPython handles a pending signal (Ctrl-C's KeyboardInterrupt) at the return
of any call made from Python, so in ``if lock.acquire(False): try: ...``
the interrupt can land after the lock was taken and before the ``try``,
and nothing gives it back. :func:`try_acquire` takes an ``RLock`` (whose
C acquire records the owning thread in the same call) and, when
interrupted, asks that record whether to give it back. It returns to its
caller with no point in between where an interrupt is handled (a Python
function's return has none), so ``if not try_acquire(lock): return`` then
``try: ... finally: lock.release()`` holds the lock only inside the try.

A lock another thread held at ``os.fork()`` stays held for good in the
child (that thread does not exist there): :func:`free_in_child` names the
locks that guard what the child makes anew before using (a Log reopens
itself there, under its lock), which the child then finds free.

A descriptor carrying a kernel lock that must die with its process (a
Log's liveness lock, P-3; the metadata writer lock, L-7) is shared with
every fork child, which keeps the lock alive for as long as it lives: a
child that outlives its parent (a pre-fork worker, a pool process) would
keep a dead parent's append lock or writer lock held.
:func:`close_in_child` names such descriptors; the child closes its copy
at the fork (the parent's lock stays the parent's) and finds -1 there.

Thread safety: thread-safe. Durability: none (in-memory locks only).
"""

from __future__ import annotations

import os
import weakref
from typing import Any

_FREE_IN_CHILD: weakref.WeakSet[Any] = weakref.WeakSet()
_CLOSE_IN_CHILD: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def try_acquire(lock: Any) -> bool:
    """Take ``lock`` (a ``threading.RLock`` used as a plain lock, never
    re-entered) without waiting. False when any thread holds it, this one
    included (as a plain Lock would say)."""
    if lock._is_owned():
        return False
    try:
        got: bool = lock.acquire(blocking=False)
    except BaseException:
        if lock._is_owned():        # taken before the interrupt was handled
            lock.release()
        raise
    return got


def free_in_child(lock: Any) -> Any:
    """``lock`` (a threading Lock or RLock), made free in every fork child
    (see the module docstring); returns it."""
    _FREE_IN_CHILD.add(lock)
    return lock


def close_in_child(owner: Any, attr: str) -> None:
    """The descriptor ``owner.<attr>`` (-1: none) is closed in every fork
    child, which finds -1 there (see the module docstring). The owner sets
    -1 there before it closes the descriptor itself: a fork in between
    would close in the child a file that reused the number."""
    _CLOSE_IN_CHILD[owner] = attr


def _after_fork_in_child() -> None:
    # (the child runs one thread now: nothing else touches these)
    for lock in list(_FREE_IN_CHILD):
        lock._at_fork_reinit()
    for owner, attr in list(_CLOSE_IN_CHILD.items()):
        fd = getattr(owner, attr, -1)
        if fd >= 0:
            setattr(owner, attr, -1)
            try:
                os.close(fd)
            except OSError:
                pass


os.register_at_fork(after_in_child=_after_fork_in_child)
