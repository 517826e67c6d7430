"""How a share consumer's poll waits (a mixin of pylog.shareconsumer's
ShareConsumer): on its topics' doorbell slot (L-3), which appends and
acknowledgements ring, looking again when a lock or delay of its share
files may end, and ``wakeup()`` from any thread.

Thread safety: ``wakeup()`` may be called from any thread (it sets a flag
and rings the slot the poll waits on); the rest is the consumer's thread's.
"""

from __future__ import annotations

import time
from typing import Any

from . import _native
from . import sharestate as ss
from .records import TopicPartition

# how often a waiting consumer looks for records of a holder that died
RECHECK_S = 0.05


class ShareWaiting:
    """The waiting half of a ShareConsumer's poll."""

    _log: Any
    _slot: int
    _files: dict[TopicPartition, ss.ShareFile]
    _woken: bool = False        # wakeup() since the current poll began

    def wakeup(self) -> None:
        """Make a blocked poll() return early, with no records (from any
        thread), as Consumer.wakeup(): a poll waiting then, or one that
        begins to wait before seeing the wakeup, returns at once; a
        wakeup while no poll runs changes nothing."""
        self._woken = True
        bell = self._log.doorbell()
        if bell is not None:
            _native.doorbell_ring(bell, self._slot)

    @property
    def slot(self) -> int:
        """The doorbell slot whose rings may make records available (L-3):
        wait_hint()'s first item, without its look at the share files
        (a scan of their owners: not for every call of a busy consumer)."""
        return self._slot

    def wait_hint(self) -> tuple[int, float | None]:
        """(the doorbell slot whose rings may make records available (L-3),
        the longest to wait on it before looking again, None for as long
        as it stays silent). Call it after a poll that found nothing."""
        return self._slot, next_look(self._files)

    def _wait(self, bell: Any, seen: int, deadline: float) -> bool:
        """Wait for a ring of the slot after ``seen`` (its count before the
        acquisition that found nothing) until ``deadline`` (monotonic) at
        most; False, without waiting, when the poll is to return: the
        deadline passed, or wakeup() was called."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self._woken:
            return False
        # appends and acknowledgements ring the doorbell (L-3); lock expiries,
        # delays ending and holders dying do not: next_look says when
        ahead = next_look(self._files)
        wait = remaining if ahead is None else min(remaining, ahead)
        if bell is not None:
            _native.doorbell_wait_at(bell + self._slot * _native.DOORBELL_SLOT_SIZE,
                                     seen, wait)
        else:
            time.sleep(min(wait, 0.005))
        return True


def next_look(files: dict[TopicPartition, ss.ShareFile]) -> float | None:
    """Seconds until records may become Available without a ring (None:
    only a ring makes any): the earliest lock deadline or delay end of
    ``files``, a consumer's (header words 12 and 13, a lower bound: a deadline
    passed without expiring anything costs one look, which resets it),
    and at most RECHECK_S while another Log holds records — its
    process dying frees them at once (Q-2) and rings nothing. Reads the
    headers without the files' locks: a change made since is either
    one the consumer's doorbell wait sees rung, or one it already saw."""
    wake, foreign = ss.NEVER, False
    for f in files.values():
        if f.fd < 0:
            continue
        h = f.head
        wake = min(wake, h[ss.MIN_DEADLINE], h[ss.MIN_DELAY])
        foreign = foreign or (h[ss.MIN_DEADLINE] < ss.NEVER and f.foreign_holders())
    if foreign:
        return RECHECK_S if wake >= ss.NEVER else \
            min(RECHECK_S, _until(wake))
    return None if wake >= ss.NEVER else _until(wake)


def _until(deadline_ms: int) -> float:
    """Seconds from now until just past ``deadline_ms`` (ms since the
    epoch): expiry compares whole milliseconds (``deadline <= now``)."""
    return max(0.0, (deadline_ms + 1) / 1000.0 - time.time())
