"""Calls in flight: how many of all threads and of each thread, and a wait
for the other threads' ones to end (G4, G6).

:class:`InFlight` is the mechanism both :class:`pylog.forkgate.Gate` (a
fork holds new calls back, then lets them go) and
:class:`pylog.metacalls.Calls` (a close refuses new calls for good) stand
on; each owns its policy — which new calls may start — and checks it under
:attr:`InFlight.lock` before :meth:`InFlight.count_in`.

A thread that waits for the others (:meth:`InFlight.drain`) does not wait
for its own calls (it cannot), and waits at most the time it is given: a
count an interrupted call left behind delays it, never wedges it.
:meth:`InFlight.enter` and :meth:`InFlight.leave` leave no such count when
an exception (a signal handler's ``KeyboardInterrupt``) arrives inside them.

Thread safety: thread-safe; :meth:`count_in`, :meth:`count_out`,
:meth:`wait`, :meth:`notify_all` and :meth:`drain` are called with
:attr:`lock` held. Fork: the child takes :meth:`in_child` in place of the
parent's (only the forking thread runs there). Durability: none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class InFlight:
    """See the module docstring."""

    def __init__(self, own: int = 0) -> None:
        self.lock = threading.Lock()
        self._cv = threading.Condition(self.lock)
        self._active = own          # calls in flight, all threads
        self._draining = 0          # threads in drain()
        self._mine = threading.local()
        self._mine.n = own

    def own(self) -> int:
        """The calling thread's calls in flight."""
        n: int = getattr(self._mine, "n", 0)
        return n

    def count_in(self) -> None:
        """A call of this thread begins."""
        # the two counts change with no call between them: a signal
        # handler runs (and raises) only at a call, never between the two
        n = getattr(self._mine, "n", 0) + 1
        self._active += 1
        self._mine.n = n

    def count_out(self) -> None:
        """It ended (committed, aborted, returned or raised)."""
        n = getattr(self._mine, "n", 0) - 1
        self._active -= 1
        self._mine.n = n
        if self._draining:
            self._cv.notify_all()

    def enter(self, admit: Callable[[int], None]) -> None:
        """Count a call of this thread in, under :attr:`lock`, once
        ``admit(own)`` (this thread's calls in flight) returned: the owner's
        policy, which waits or raises. An exception that arrives after the
        count (a signal handler's ``KeyboardInterrupt`` as the lock is
        released) takes it out again: the call does not run."""
        own = None
        try:
            own = getattr(self._mine, "n", 0)
            with self.lock:
                admit(own)
                self.count_in()
        except BaseException:
            if own is not None and getattr(self._mine, "n", 0) > own:
                with self.lock:
                    self.count_out()
            raise

    def leave(self) -> None:
        """Count a call of this thread out, under :attr:`lock`; also when an
        exception (a signal handler's) arrives inside before the count
        changed."""
        own = None
        try:
            own = getattr(self._mine, "n", 0)
            with self.lock:
                self.count_out()
        except BaseException:
            if own is None or getattr(self._mine, "n", 0) == own:
                with self.lock:
                    self.count_out()
            raise

    def wait(self) -> None:
        """Until :meth:`notify_all` (or a call ends while a thread drains)."""
        self._cv.wait()

    def notify_all(self) -> None:
        self._cv.notify_all()

    def drain(self, wait_s: float) -> None:
        """Wait until no call of another thread is in flight, at most
        ``wait_s``."""
        self._draining += 1
        try:
            deadline = time.monotonic() + wait_s
            while self._active > self.own():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
        finally:
            self._draining -= 1

    def in_child(self) -> InFlight:
        """This one as a fork child has it: a free lock, and only the
        forking thread's calls in flight."""
        return InFlight(self.own())
