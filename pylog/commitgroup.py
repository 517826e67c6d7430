"""Group commit of ``sync="always"`` commits (FORMAT.rst C-5): concurrent
commits share one checkpoint, and so its LMDB transaction and fsyncs.

A commit stored in the commit table before a checkpoint starts is covered
by it, so a commit waits for the next checkpoint to start (the *open* one)
and finish. The first commit to register for the open checkpoint leads
it; the others wait for it on a lock of their own, without the GIL. The
leader starts only when the previous checkpoint finished (at most one
runs), and then once the committers of the previous round registered
(those the previous checkpoint released and those that waited for this
one), or after at most twice as long as the previous checkpoint took: the
threads it released are typically about to commit again, and one
checkpoint for all of them costs less than two (an fsync costs CPU time,
not just the disk's, and Python threads take turns; a straggler running
Python while a checkpoint runs slows it down). A commit therefore waits at
most about four checkpoints' time: the one running, the gathering, its
own. Alone, a committer never waits: one commit, one checkpoint, as
without a group.

When a checkpoint finished, its leader wakes the first of its waiters and
each woken waiter the next, in the order they came: one thread at a time
wants the GIL, where waking them all at once had them all contend for it
(and for the mutex behind it), which took longer than the checkpoint.

Thread safety: thread-safe (one mutex over the counts; the waits hold no
lock). Durability: none of its own; it tells when a checkpoint, which
commits to LMDB with fsync, has covered a commit.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

__all__ = ["CheckpointGroup"]

# how long a commit waiting for a checkpoint sleeps before it looks again
# without a wake-up (none is missed: this only bounds the cost of a bug)
_RECHECK_S = 1.0
# a leader waits for the committers of the previous round at most this many
# times as long as the previous checkpoint took (its committers return to
# commit one after another, each needing the GIL), and at most _GATHER_MAX_S
_GATHER_FACTOR = 2
_GATHER_MAX_S = 0.005


class _Lead:
    """The leader of one checkpoint and what it waits for: ``turn`` is held
    while the checkpoint before runs; ``full``, while it gathers, until
    enough commits registered (``count``, the leader's own included).
    ``waiters``: the locks of the other commits of the checkpoint, held
    until it finished, in the order they came (the chain of wake-ups)."""

    __slots__ = ("turn", "full", "count", "waiters", "abandoned")

    def __init__(self, behind: bool) -> None:
        self.abandoned = False    # its leader was interrupted before its checkpoint
        self.turn: threading.Lock | None = None
        if behind:
            self.turn = threading.Lock()
            self.turn.acquire()
        self.full: threading.Lock | None = None
        self.count = 1
        self.waiters: list[threading.Lock] = []


class CheckpointGroup:
    """Shares ``checkpoint()`` (which copies every commit stored before it
    started into LMDB durably, or raises) among concurrent committers; see
    the module docstring."""

    def __init__(self, checkpoint: Callable[[], object]) -> None:
        self._checkpoint = checkpoint
        self._mu = threading.Lock()
        self._open = 1            # the number commits register for now
        self._lead: _Lead | None = None    # the open checkpoint's leader
        self._running = False     # checkpoint _open - 1 runs
        self._done = 0            # the last checkpoint finished
        self._failed = 0          # the last checkpoint that raised
        self._target = 1          # commits the last checkpoint covered
        self._took_s = 0.0        # how long it ran

    def wait(self, covered: Callable[[], bool]) -> None:
        """Return once a checkpoint that started after this call covered
        the caller's commits, stored before the call. ``covered()`` tells
        whether they reached LMDB some other way; asked only after a
        checkpoint failed, before waiting for (or leading) another, whose
        error the caller gets if it fails too."""
        while True:
            with self._mu:
                number = self._open
                lead = self._lead
                if lead is None:
                    lead = self._lead = _Lead(self._running)
                    mine = True
                else:
                    mine = False
                    lead.count += 1
                    if lead.full is not None and lead.count >= self._target:
                        lead.full.release()
                        lead.full = None
                    me = threading.Lock()
                    me.acquire()
                    lead.waiters.append(me)
                    pos = len(lead.waiters)
            if mine:
                self._run(number, lead)
                return
            # (released once the checkpoint finished, by the leader or by
            # the waiter before this one; the list is complete by then)
            while not me.acquire(timeout=_RECHECK_S):
                if self._done >= number:
                    break
            if pos < len(lead.waiters):
                lead.waiters[pos].release()        # the next in the chain
            if lead.abandoned:
                continue            # no checkpoint ran for it: register again
            if self._failed < number or covered():
                return

    def _run(self, number: int, lead: _Lead) -> None:
        """Lead checkpoint ``number``: wait for the previous one, gather,
        run it, then hand the turn to the next leader and wake the first of
        its committers; raises what the checkpoint raised."""
        try:
            if lead.turn is not None:
                lead.turn.acquire()
            full = None
            with self._mu:
                if lead.count < self._target:
                    full = lead.full = threading.Lock()
                    full.acquire()
                wait_s = min(_GATHER_FACTOR * self._took_s, _GATHER_MAX_S)
            if full is not None:
                full.acquire(timeout=wait_s)
        except BaseException:
            # interrupted (Ctrl-C, a signal handler raising) before the
            # checkpoint: left open, it would hold every later commit
            self._abandon(lead)
            raise
        with self._mu:
            lead.full = None
            self._open = number + 1
            self._lead = None
            self._running = True
            count = lead.count
        t0 = time.monotonic()
        failed = True
        try:
            self._checkpoint()
            failed = False
        finally:
            with self._mu:
                self._done = number
                if failed:
                    self._failed = number
                self._running = False
                self._took_s = time.monotonic() - t0
                nxt = self._lead
                # the committers of this round: the ones this checkpoint
                # released, and those already waiting for the next
                self._target = count + (nxt.count if nxt is not None else 0)
                if nxt is not None and nxt.turn is not None:
                    nxt.turn.release()
            if lead.waiters:
                lead.waiters[0].release()          # the chain's first

    def _abandon(self, lead: _Lead) -> None:
        """Give up leading ``lead``'s checkpoint before it started: the next
        commit to register leads instead (behind the running checkpoint, if
        one runs, which hands it the turn), and the commits that waited for
        this one wake and register again."""
        with self._mu:
            lead.abandoned = True
            lead.full = None
            if self._lead is lead:
                self._lead = None
        if lead.waiters:        # (complete: nobody joins an abandoned lead)
            lead.waiters[0].release()
