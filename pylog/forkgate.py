"""os.fork() waits for this process's LMDB calls in flight (G6).

py-lmdb refuses a second Environment of one database in a process, so a
fork child that opens the log (anew, or a Log of the parent reopening
itself) first closes the Environment it inherited. py-lmdb's close waits
until no LMDB operation of the Environment is in flight and no write
transaction is open in another thread — in the child, operations and
transactions of the parent's other threads, which do not exist there: the
child would wait for good.

So every LMDB transaction (from its begin to its commit or abort) and every
other LMDB call of pylog counts itself in :data:`GATE`, and a fork waits
first until none of another thread is in flight (new ones wait for the
fork), at most :data:`FORK_WAIT_S`: a count left by an interrupted call
delays a fork, never wedges it. The forking thread's own transactions do
not count (it cannot wait for itself), and a thread with a call in flight
starts a nested one (a read inside its write transaction) without waiting
for the fork: the fork waits for that thread, which would otherwise wait
for the fork (the fork then came after its full wait, with the
transaction open). Forks of two threads at once: the gate stays shut
until the last returns.

Thread safety: thread-safe; fork-safe by construction (the child starts
with the gate open and only its own thread's counts). Durability: none.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from .inflight import InFlight

#: the longest a fork waits for other threads' LMDB calls to end
FORK_WAIT_S = 10.0


class Gate:
    """See the module docstring; the counting is :class:`InFlight`'s, the
    policy (new calls wait while a fork runs) this class's."""

    def __init__(self) -> None:
        self._flight = InFlight()
        self._forking = 0           # forks in progress (threads in os.fork)

    def enter(self) -> None:
        """An LMDB call or transaction begins (waits while a fork runs)."""
        self._flight.enter(self._admit)

    def _admit(self, own: int) -> None:
        if not own:                 # (nested: the fork waits for this thread)
            while self._forking:
                self._flight.wait()

    def leave(self) -> None:
        """It ended (committed, aborted, returned or raised)."""
        self._flight.leave()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def _before_fork(self) -> None:
        # Holds the gate's lock through the fork: no thread is in enter()
        # or leave() at the fork (the child's copy of the lock is free)
        self._flight.lock.acquire()
        self._forking += 1
        self._flight.drain(FORK_WAIT_S)

    def _after_fork_in_parent(self) -> None:
        self._forking -= 1
        self._flight.notify_all()
        self._flight.lock.release()

    def _after_fork_in_child(self) -> None:
        self._flight = self._flight.in_child()
        self._forking = 0


GATE = Gate()
os.register_at_fork(before=GATE._before_fork,
                    after_in_parent=GATE._after_fork_in_parent,
                    after_in_child=GATE._after_fork_in_child)
