"""A non-blocking acquire that a KeyboardInterrupt cannot leave half done.

CPython handles a pending signal (Ctrl-C's KeyboardInterrupt) at the return
of any call made from Python, so in ``if lock.acquire(False): try: ...``
the interrupt can land after the lock was taken and before the ``try``,
and nothing gives it back. :func:`try_acquire` takes an ``RLock`` (whose
C acquire records the owning thread in the same call) and, when
interrupted, asks that record whether to give it back. It returns to its
caller with no point in between where an interrupt is handled (a Python
function's return has none), so ``if not try_acquire(lock): return`` then
``try: ... finally: lock.release()`` holds the lock only inside the try.

Thread safety: thread-safe. Durability: none (in-memory locks only).
"""

from __future__ import annotations

from typing import Any


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
