"""The LMDB calls of one :class:`pylog.metadata.Metadata` in flight, so that
its close lets them end before the environment is closed (G4, G6).

py-lmdb's ``Environment.close()`` must not race another thread's calls:
a write transaction begun by another thread while the close is under way
left py-lmdb's record of the open write transaction set with no
transaction behind it, and the close (and so ``Log.close()``) would wait
for it for good (bare py-lmdb writers racing a close can crash). So
every transaction and call of the Metadata counts itself here; once
:meth:`Calls.close` began, new ones raise LogClosed, and the close waits
(at most :data:`CLOSE_WAIT_S`, for a count an interrupt left behind) for
those in flight, the closing thread's own aside. Each call also counts in
:data:`pylog.forkgate.GATE`, first (and leaves it last): a fork then finds
no thread inside a Calls' lock, and a fork child counts only its own
thread's calls (the others' do not run there).

Thread safety: thread-safe. Durability: none.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator

from .errors import LogClosed
from .forkgate import GATE
from .inflight import InFlight

#: the longest a close waits for other threads' calls to end
CLOSE_WAIT_S = 10.0


_ALL: weakref.WeakSet[Calls] = weakref.WeakSet()


class Calls:
    """See the module docstring; the counting is :class:`InFlight`'s, the
    policy (new calls raise once the close began) this class's."""

    def __init__(self) -> None:
        self._flight = InFlight()
        self._closing = False
        _ALL.add(self)

    def enter(self, what: str) -> None:
        """A call begins; LogClosed once the close began."""
        GATE.enter()
        try:
            self._flight.enter(lambda own: self._admit(what))
        except BaseException:
            GATE.leave()
            raise

    def _admit(self, what: str) -> None:
        if self._closing:
            raise LogClosed(f"{what}: the log was closed")

    def leave(self) -> None:
        """It ended (committed, aborted, returned or raised)."""
        try:
            self._flight.leave()
        finally:
            GATE.leave()

    @contextlib.contextmanager
    def held(self, what: str) -> Iterator[None]:
        self.enter(what)
        try:
            yield
        finally:
            self.leave()

    def close(self) -> None:
        """Refuse new calls; wait for those of other threads in flight."""
        flight = self._flight
        with flight.lock:
            self._closing = True
            flight.drain(CLOSE_WAIT_S)

    def _after_fork_in_child(self) -> None:
        self._flight = self._flight.in_child()


def _after_fork_in_child() -> None:
    for calls in list(_ALL):
        calls._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
