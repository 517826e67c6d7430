"""The GIL hand-off between an appending thread and the readers it wakes.

A reader blocked in ``pl_wait_fetch`` waits without the GIL. When an append
of the same process rings its doorbell, the appending thread still runs and
takes the GIL back first: the woken reader then waits for it to block and
for a second wake-up, and the hand-off costs twice. So an append that rings
while a reader of its process waits on the partition, HOLD_GAP_NS or more
after its appender's previous append (a sparse stream, where latency is
what counts, not a producer appending back to back), returns only once the
woken reader holds the GIL, or after HOLD_MAX_NS (``hold_for_reader`` in
csrc/append.c). Each appender then spins at most HOLD_MAX_NS per
HOLD_GAP_NS.

The reader side, :func:`reader_took_gil`, is called by the woken reader
once it holds the GIL. Rows are then built with the collector paused
(pylog.gcpause) when there are WAIT_PAUSE_RECORDS or more of them.

Thread safety: a :class:`Handoff` is shared by one partition's appenders
and readers of one process; its counters are native memory updated with
atomics by C and by plain stores under the GIL by Python.
"""

from __future__ import annotations

from ._pylog_native import ffi

# An append that wakes a reader of its own process waits at most this long
# for the reader to take the GIL (a few wake-ups' worth)...
HOLD_MAX_NS = 200_000
# ...and only when the appender's previous append ended this long before.
HOLD_GAP_NS = 500_000
# wait_fetch pauses the collector while it builds this many rows or more;
# the few rows of a wake-up are built without the pause, which would cost
# more than it saves
WAIT_PAUSE_RECORDS = 256


class Handoff:
    """This process's readers of one partition blocked in ``wait_fetch``,
    for that partition's appenders (``pl_appender.handoff``): ``block[1]``
    counts the ones waiting (kept by pl_wait_fetch), ``block[0]`` the
    hand-offs (bumped by :func:`reader_took_gil`). Process memory: a forked
    child's Logs make their own."""

    __slots__ = ("block", "counts")

    def __init__(self):
        self.block = ffi.new("uint32_t[2]")
        self.counts = memoryview(ffi.buffer(self.block)).cast("I")

    @property
    def waiting(self):
        """The pointer pl_wait_fetch counts its waits in."""
        return self.block + 1


def reader_took_gil(handoff: Handoff) -> None:
    """A woken reader holds the GIL: release the appender that rang. (A
    plain store with the GIL held: that appender returns and queues for the
    GIL only now.)"""
    counts = handoff.counts
    counts[0] = (counts[0] + 1) & 0xFFFFFFFF

