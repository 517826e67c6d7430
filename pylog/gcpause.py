"""Pausing the cyclic garbage collector while pylog builds a large list of
small acyclic objects (the Records of a poll, the RecordMetadata of a batch).

Why: Record and RecordMetadata are tuple subclasses, and CPython untracks
only exact tuples, so each one stays in the collector's generations. Built
by the thousand while the previous poll's list is still alive, they trigger
collections that traverse them again and again and free nothing (the
objects cannot form cycles); the collector ends up costing more than
building the objects. Paused, the allocations still count, and the next
collection after the pause runs as usual.

Thread safety: a process-wide nesting count under a lock, so concurrent
pylog calls re-enable the collector only when the last one ends, and only
if it was enabled when the first one began. (A thread outside pylog that
calls gc.disable() during such a pause will find the collector re-enabled
when the pause ends: the pause lasts one batch, a fraction of a millisecond.)
"""

from __future__ import annotations

import gc
import os
import threading

_lock = threading.Lock()
_depth = 0
_was_enabled = False


def _after_fork_in_child() -> None:
    """A fork inside another thread's pause leaves its count behind (and
    maybe the lock held): the child starts over, collector as it was."""
    global _lock, _depth
    _lock = threading.Lock()
    if _depth and _was_enabled:
        gc.enable()
    _depth = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


class paused:
    """Context manager: the collector is off inside (nestable, thread-safe).

    A Ctrl-C landing at the entry of ``__exit__`` (CPython raises a pending
    signal there) skips its body: the pause would last for good, the
    collector off for the rest of the process. Each pause knows whether it
    is still counted (``_on``) and is ended by ``__del__`` too, when the
    interpreter drops it during the unwinding; ``__enter__`` counts the
    pause before it turns the collector off, so an interrupt inside it
    leaves an ``_on`` pause that the same unwinding ends."""

    __slots__ = ("_on",)

    def __init__(self) -> None:
        self._on = False

    def __enter__(self) -> None:
        global _depth, _was_enabled
        with _lock:
            if _depth == 0:
                _was_enabled = gc.isenabled()
            _depth += 1
            self._on = True
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        self._end()

    def _end(self) -> None:
        global _depth
        if not self._on:
            return          # (the usual __del__: ended by __exit__)
        with _lock:
            if not self._on:
                return
            self._on = False
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()

    def __del__(self) -> None:
        # (a Ctrl-C at the entry of __init__ leaves no _on: nothing counted)
        if getattr(self, "_on", False):
            self._end()
