"""Background group heartbeats, as Kafka's heartbeat thread (SPEC §5).

A group member heartbeats from its own calls (GroupMember.tick, in every
poll's housekeeping). Between two calls, while the application handles
what the last one returned, one thread per Log (``pylog-heartbeat``)
renews the heartbeats of its consumers' members that are due
(GroupMember.beat_many): the heartbeat only, handing nothing over, so a
batch handled for longer than ``session_timeout_ms`` keeps its partitions
and no other member gets its records meanwhile. A hand-off waits for the
member's next call, as in Kafka. The beats stop once the application has
not polled for ``max_poll_interval_ms`` (PollInterval): the member then
expires a session timeout later and its partitions go to the others.

The thread beats a member a little after its own heartbeat was due
(LATE_FRACTION of the session timeout), so a member that polls renews it
itself and the thread writes nothing. It sleeps until the earliest such
time among its members, but not less than that fraction of the shortest
session (capped at MAX_GAP_S) nor more than MAX_SLEEP_S, and as long
after each round, so that the members coming due during a round share
the next one; it ends when the Log closes or no member is left. Members
are held weakly: a consumer dropped without close() stops being renewed
once the garbage collector frees it (a Consumer sits in reference
cycles: at the next full collection); a pylog.aio consumer's member
once the event loop it was made on is closed (PollInterval.ended). A
fork child starts with no thread and no member: its consumers register
anew. A round beats the due
members of a group together, in one metadata transaction that rewrites
the group's document once: a round costs in proportion to the group's
size, where a transaction per member cost in proportion to its square.

What it costs (bench/RESULTS.rst), measured by::

    .venv/bin/python bench/heartbeats.py --members 10 100 300 1000 --seconds 20

1,000 members of one group between polls in one process cost 7.5% of a
CPU and all stay renewed (with a transaction per member: 76%, and half
of them expired); 300 members 0.7%. Members in separate processes each
have their own thread.

Thread safety: thread-safe (a lock guards the registry;
GroupMember.beat_many never overlaps a tick or leave of a member).
Durability: a round's beats of a group are one group metadata
transaction, durable as the log's sync mode makes them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:
    from typing_extensions import Self


class GroupMember(Protocol):
    """What this module uses of a pylog.group.GroupMember."""
    group_id: str
    session_timeout_ms: int

    def heartbeat_due(self) -> float: ...

    @classmethod
    def beat_many(cls, members: Sequence[Self]) -> list[bool]: ...


class PollInterval(Protocol):
    """What this module uses of a pylog.rebalance.PollInterval."""
    polling: bool

    def exceeded(self) -> bool: ...

_logger = logging.getLogger("pylog")

#: beat a member this fraction of its session timeout after its own
#: heartbeat was due (a third of the session after the last one): before
#: its lease ends (half the session), after a polling member's own tick
LATE_FRACTION = 1.0 / 12.0
MIN_SLEEP_S = 0.01
MAX_SLEEP_S = 1.0
MAX_GAP_S = 0.25

_lock = threading.Lock()
_by_log: weakref.WeakKeyDictionary[Any, _Heartbeats] = weakref.WeakKeyDictionary()


def _forked() -> None:
    """In a fork child: no heartbeat thread runs here, and the lock may
    have been held by one at the fork; the child's consumers register
    anew (a Log reopens after a fork)."""
    global _lock, _by_log
    _lock = threading.Lock()
    _by_log = weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_forked)


def register(log: Any, member: GroupMember, interval: PollInterval) -> None:
    """Renew ``member``'s heartbeat in the background while ``interval``
    says its application polls often enough (until :func:`unregister`)."""
    with _lock:
        hb = _by_log.get(log)
        if hb is None:
            hb = _by_log[log] = _Heartbeats(log)
        hb.add(member, interval)


def stop(log: Any) -> None:
    """The Log is closing: end its heartbeat thread, waiting for a beat in
    flight (a metadata transaction), before the Log closes its metadata."""
    with _lock:
        hb = _by_log.pop(log, None)
        if hb is None:
            return
        hb.closing = True
        thread = hb.thread
    hb.wake.set()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=5)


def unregister(log: Any, member: GroupMember) -> None:
    """Stop renewing ``member`` (its consumer closed)."""
    with _lock:
        hb = _by_log.get(log)
        if hb is not None:
            hb.members.pop(member, None)


class _Entry:
    """A member's registration: its consumer's poll interval, and a time
    before which the thread leaves it alone (after a round that skipped
    it: it was polling, or could not be renewed)."""
    __slots__ = ("interval", "not_before")

    def __init__(self, interval: PollInterval) -> None:
        self.interval = interval
        self.not_before = 0.0


class _Heartbeats:
    """The heartbeat thread of one Log and its members (module docstring);
    the registry is guarded by the module's lock."""

    def __init__(self, log: Any) -> None:
        self.log = weakref.ref(log)
        self.members: weakref.WeakKeyDictionary[GroupMember, _Entry] = \
            weakref.WeakKeyDictionary()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.closing = False

    def add(self, member: GroupMember, interval: PollInterval) -> None:
        self.members[member] = _Entry(interval)
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="pylog-heartbeat",
                                           daemon=True)
            self.thread.start()
        self.wake.set()         # (a new member may be due before the thread's sleep ends)

    def _due(self) -> tuple[list[tuple[GroupMember, _Entry]], float]:
        """The members to beat now, and how long to sleep after their round
        (or without one); a sleep of -1.0 ends the thread: the Log closed
        or no member is left."""
        with _lock:
            log = self.log()
            if self.closing or log is None or log._closed or not self.members:
                self.thread = None
                return [], -1.0
            now = time.monotonic()
            due: list[tuple[GroupMember, _Entry]] = []
            sleep = gap = MAX_SLEEP_S
            for member, entry in list(self.members.items()):
                late = member.session_timeout_ms * LATE_FRACTION / 1000.0
                gap = min(gap, late)
                at = max(entry.not_before, member.heartbeat_due() + late)
                if at <= now:
                    due.append((member, entry))
                else:
                    sleep = min(sleep, at - now)
            # not sooner than the smallest lateness allowed, after a round
            # too: with many members, whose heartbeats are due one after
            # the other, a round for each would scan them all hundreds of
            # times a second, and rewrite their group's document as often
            # (a round right after one finds the few that came due during
            # it); a member waits at most that much past its time either way
            least = max(MIN_SLEEP_S, min(gap, MAX_GAP_S))
            return due, (least if due else max(sleep, least))

    def _run(self) -> None:
        while True:
            due, sleep = self._due()
            if sleep < 0:
                return
            if due:
                self._round(due)
            del due     # (no reference left while it sleeps: members stay collectable)
            self.wake.wait(sleep)
            self.wake.clear()

    def _round(self, due: list[tuple[GroupMember, _Entry]]) -> None:
        """Beat the members ``_due`` found due: those of one group in one
        metadata transaction (GroupMember.beat_many), as each rewrites the
        whole group document."""
        groups: dict[str, list[tuple[GroupMember, _Entry]]] = {}
        for member, entry in due:
            interval = entry.interval
            late = member.session_timeout_ms * LATE_FRACTION / 1000.0
            now = time.monotonic()
            if now < member.heartbeat_due() + late:
                continue            # (its own poll renewed it meanwhile)
            # a polling member renews its heartbeat itself; one that
            # stopped polling for max_poll_interval_ms is left to expire
            if interval.polling:
                entry.not_before = now + late
            elif interval.exceeded():
                entry.not_before = now + member.session_timeout_ms / 3000.0
            else:
                groups.setdefault(member.group_id, []).append((member, entry))
        for batch in groups.values():
            if self.closing:
                break
            members = [member for member, _ in batch]
            now = time.monotonic()
            try:
                renewed = type(members[0]).beat_many(members)
            except Exception as exc:    # (the consumers' next calls raise it)
                _logger.debug("background heartbeat of group %r: %r",
                              members[0].group_id, exc)
                renewed = [False] * len(members)
            for (member, entry), ok in zip(batch, renewed):
                if not ok:
                    # not in the group (expired, left, not joined yet), a
                    # tick of it ran, or the beat failed: its next poll
                    # acts; look again a heartbeat interval later
                    entry.not_before = now + member.session_timeout_ms / 3000.0
