"""Consumer-group membership, assignment and ownership (SPEC §5, FORMAT.rst M-7):
the I/O shell around :mod:`pylog.groupstate`.

Every change to a group is one LMDB write transaction on the group's
document (``Metadata.change_group``): read the state, apply a pure
transition of pylog.groupstate (which states the hand-off rules), write
the new state back, committing offsets in the same transaction where the
transition says so. This module supplies what the transitions take as
arguments: the wall clock, the monotonic clock and the liveness probe
(:func:`process_alive`: the member's pid and process start time on this
host, its answers cached: pylog.liveness.ProbeCache), each injectable.

What a look costs (issue 15: nothing grows with the square of the
members). A look that reads the group document decodes it and probes every
member: O(members). Such a full look is taken by the group's *leader* (the
member with the smallest id: it is the one that notices dead members) at
every look, and by every other member only when something it must act on
may have changed: a write that moves members, assignment or owners rings
the group's doorbell slot (L-3), its heartbeat is due, its subscription or
its topics' partition counts changed, or the leader looks dead. Otherwise
a look is O(1): a doorbell load and one cached probe of the leader.
Heartbeats rewrite the document without ringing, so they cost other
members nothing. A ring lost (the writer died between its commit and its
ring) delays a hand-off by at most a heartbeat interval, when the member
looks anyway. A move also rings the slots the members' polls wait on, so
a member with nothing to do lets its poll block for up to QUIET_WAIT_S
between looks (:meth:`GroupMember.wait_s`) instead of waking ten times a
second.

Thread safety: a GroupMember belongs to one Consumer (not thread-safe);
different members may live in any threads and processes. Durability: a
group change is an LMDB write transaction, durable as the log's sync mode
makes the metadata (FORMAT.rst M-8); a crash mid-change stores nothing.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Sequence

from . import _native
from . import groupstate as gs
from .assignors import STRATEGIES
from .errors import (
    GroupNotEmpty,
    InvalidArgument,
    OffsetOutOfRange,
    PartitionNotFound,
    TopicNotFound,
)
from .groupstate import Member
from .liveness import HOST as _HOST
from .liveness import cached_alive, process_alive, process_start_time
from .records import TopicPartition
from .store import DOORBELL_SLOTS, topic_slot

GROUP_CHECK_INTERVAL_S = 0.1     # how often a polling member looks at the group
QUIET_WAIT_S = 1.0               # ... at most, while it has nothing to do (wait_s)
BEAT_WAIT_S = 0.0005             # a tick's poll for a background beat in flight to end


def group_slot(group: str) -> int:
    """The doorbell slot rung when ``group``'s members, assignment or
    owners change (FORMAT.rst L-3)."""
    return 1 + _native.crc32c(b"\0" + group.encode()) % (DOORBELL_SLOTS - 1)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _LeftMeanwhile(Exception):
    """Aborts a look at the group during which this member left it (a
    close() from a revoke listener or another thread): joining again would
    leave a closed consumer owning partitions until its session timeout."""


class _Unannounced(Exception):
    """Aborts a group transaction that would release partitions whose
    revocation the consumer has not announced yet."""

    def __init__(self, partitions: set[TopicPartition]) -> None:
        super().__init__(sorted(partitions))
        self.partitions = partitions


class GroupMember:
    """This consumer's membership in a group; see the module docstring.

    ``wall_ms`` (ms since the epoch, shared by every process through the
    heartbeats), ``monotonic`` (seconds, this process's rate limits and
    lease) and ``is_alive`` (the liveness probe) default to the real ones."""

    def __init__(self, log, group_id: str, *, strategy: str,
                 session_timeout_ms: int, client_id: str | None,
                 auto_offset_reset: str | None = None, wall_ms=_now_ms,
                 monotonic=time.monotonic, is_alive=cached_alive):
        if strategy not in STRATEGIES:
            raise InvalidArgument(
                f"partition_assignment_strategy={strategy!r}; expected one of "
                f"{STRATEGIES}")
        self.log = log
        self.group_id = group_id
        self.strategy = strategy
        self.session_timeout_ms = session_timeout_ms
        self.member_id = (f"{client_id or 'consumer'}-{_HOST}-{os.getpid()}-"
                          f"{os.urandom(4).hex()}")
        self.generation = -1
        self.owned: set[TopicPartition] = set()
        self.joined = False
        # a join's transaction ran, whether or not this member saw it end
        # (a Ctrl-C after its commit): leave() must write to be sure
        self._maybe_joined = False
        self.next_check = 0.0
        # monotonic time until which no other member can take this one's
        # partitions: others expire it session_timeout_ms after its last
        # heartbeat; half of that leaves room for clock steps (G3)
        self.lease_until = 0.0
        self.rejoined = False       # the last tick found it removed from the group
        self._leaves = 0            # leave() calls: a tick they overlap stops
        self._gone = False          # left for good (close): never joins again
        self._next_heartbeat = 0.0
        # a beat (another thread's) never overlaps a tick or leave: those
        # wait for a beat in flight, a beat is skipped while they run. No
        # lock: a Ctrl-C in the polling thread could leave one held (with
        # the GIL, each side sets its flag and then reads the other's, so
        # at least one of them sees the other)
        self._acting: list[int] = []    # a thread id per tick or leave running
        self._beating = False           # (set by the heartbeat thread only)
        self._wall_ms = wall_ms
        self._monotonic = monotonic
        self._is_alive = is_alive
        self._slot = group_slot(group_id)
        # what the last full look saw: the state, the topics it was taken
        # for, the group's doorbell seq before it, the leader (see _quiet)
        self._seen: gs.GroupState | None = None
        self._seen_topics: set[str] = set()
        self._seen_seq: int | None = None
        self._leader = ""
        self._was_quiet = False         # the last look skipped the document
        self._me = Member(pid=os.getpid(), start=process_start_time(os.getpid()),
                          host=_HOST, client_id=client_id or "",
                          session_timeout_ms=session_timeout_ms,
                          auto_offset_reset=auto_offset_reset)

    def _counts(self, topics) -> dict:
        """Partitions of each of ``topics`` now; 0 for one that is gone."""
        counts = {}
        for t in sorted(topics):
            try:
                counts[t] = self.log.partitions_for(t, max_age_s=0)
            except TopicNotFound:
                counts[t] = 0
        return counts

    def _sync(self, state, topics, counts, now_ms, beat):
        return gs.sync(state, self.member_id, self._me, topics, counts, now_ms,
                       self._is_alive, self.strategy, beat=beat)

    def _act(self) -> bool:
        """A tick or leave begins: wait for a beat in flight to end (one
        metadata transaction); none starts until :meth:`_done`. A Ctrl-C
        right after the append leaves an entry behind, which stops this
        member's background heartbeats (never a call) until its thread's
        next poll drops it (:meth:`idle`)."""
        me = threading.get_ident()
        self._acting.append(me)
        try:
            while self._beating:
                time.sleep(BEAT_WAIT_S)
        except BaseException:   # (Ctrl-C in the wait: no tick runs)
            self._acting.remove(me)
            raise
        return True

    def _done(self) -> None:
        self._acting.remove(threading.get_ident())

    def idle(self) -> None:
        """The calling thread runs no tick or leave of this member (a poll
        begins): drop the entries a Ctrl-C left behind for it."""
        if self._acting:
            me = threading.get_ident()
            while me in self._acting:
                self._acting.remove(me)

    def tick(self, topics: set[str],
             positions_to_commit: Callable[[set[TopicPartition]], dict[TopicPartition, int]],
             force: bool = False,
             on_revoke: Callable[[set[TopicPartition]], None] | None = None,
             ) -> tuple[set[TopicPartition], set[TopicPartition]]:
        """See :meth:`_tick`."""
        acting = False
        try:
            acting = self._act()
            return self._tick(topics, positions_to_commit, force, on_revoke)
        finally:
            if acting:
                self._done()

    def _tick(self, topics: set[str],
              positions_to_commit: Callable[[set[TopicPartition]], dict[TopicPartition, int]],
              force: bool = False,
              on_revoke: Callable[[set[TopicPartition]], None] | None = None,
              ) -> tuple[set[TopicPartition], set[TopicPartition]]:
        """Look at the group (rate-limited) and act: join, expire dead
        members, rebalance, release what is no longer ours (committing
        ``positions_to_commit()`` for it) and claim what is.

        ``on_revoke(partitions)``, when given, is called (outside any
        transaction) with the partitions about to be released, before the
        transaction that releases them: while it runs they are still owned,
        so a commit of them succeeds. ``rejoined`` tells afterwards whether
        the member had been removed from the group (what it lost was lost,
        not revoked).

        Returns (gained, lost): sets of TopicPartition."""
        self.rejoined = False
        leaves = self._leaves
        if self._gone:
            return set(), set()
        now = self._monotonic()
        if not force and now < self.next_check:
            return set(), set()
        self.next_check = now + GROUP_CHECK_INTERVAL_S
        now_ms = self._wall_ms()
        bell = self.log.doorbell_pointer()
        # loaded before the document is read: a ring for a change this look
        # does not see makes the next look a full one
        seq = _native.doorbell_load_at(bell, self._slot) if bell is not None else None
        self._was_quiet = not force and self._quiet(topics, now, now_ms, seq)
        if self._was_quiet:
            return set(), set()
        # a read-only look first: write only when the group needs this
        # member to act or its heartbeat is due
        state = self.log.meta.group_state(self.group_id)
        self._saw(state, topics, seq)
        counts = self._counts(set(topics).union(
            *(m.topics for m in state.members.values())))
        probe = self._sync(state, topics, counts, now_ms, beat=False)
        if now < self._next_heartbeat and probe.state == state:
            return set(), set()
        announced: set = set()
        if on_revoke is not None and probe.released and not probe.rejoined:
            announced = set(probe.released)
            on_revoke(set(announced))
            if self._leaves != leaves or self._gone:
                return set(), set()
        self._next_heartbeat = now + self.session_timeout_ms / 3000.0
        lease_until = now + self.session_timeout_ms / 2000.0
        before = set(self.owned)

        def update(state, commit):
            if self._leaves != leaves or self._gone:
                raise _LeftMeanwhile()
            # owned when this member last looked, not released by it, and
            # not its own now: dropped with a deleted topic (drop_topic);
            # its position is of the old topic even if it claims the
            # partition again below (then it is gained anew)
            lapsed[0] = before - state.owned_by(self.member_id) \
                if self.member_id in state.members else set()
            done = self._sync(state, topics, counts, now_ms, beat=True)
            extra = set(done.released) - announced
            if extra and on_revoke is not None and not done.rejoined and tries[0] < 3:
                raise _Unannounced(extra)      # abort; announce, then retry
            if done.released:
                commit(positions_to_commit(set(done.released)))
            moved[0] = gs.moved(state, done.state)
            return done.state, done

        moved = [False]
        lapsed: list[set] = [set()]
        tries = [0]
        self._maybe_joined = True
        while True:
            try:
                done = self.log.meta.change_group(self.group_id, update)
                break
            except _LeftMeanwhile:
                return set(), set()
            except _Unannounced as exc:
                # the group moved between the look and the write: more
                # partitions go than were announced
                tries[0] += 1
                announced |= exc.partitions
                assert on_revoke is not None    # only raised when there is one
                on_revoke(set(exc.partitions))
                if self._leaves != leaves or self._gone:
                    return set(), set()
        if moved[0]:
            self._ring(done.state)
        self._saw(done.state, topics, seq)
        self.generation = done.state.generation
        self.joined = True
        owned = set(done.state.owned_by(self.member_id))
        self.owned = owned
        self.lease_until = lease_until
        if done.rejoined:
            # removed from the group meanwhile (it looked dead): what it
            # owns now is owned anew, and others may have read on from
            # where it was: every position is stale
            self.rejoined = bool(before)
            return set(owned), before
        return (owned - before) | (owned & lapsed[0]), (before - owned) | lapsed[0]

    def forget(self, tp: TopicPartition) -> None:
        """``tp`` is not this member's any more (its topic was deleted, which
        took it from the group): fetch none of it, and look at the group
        in full at the next housekeeping."""
        self.owned = self.owned - {tp}      # (a new set: consumers cache by identity)
        self.next_check = 0.0
        self._seen = None

    def _saw(self, state: gs.GroupState, topics: set[str], seq: int | None) -> None:
        self._seen, self._seen_topics, self._seen_seq = state, topics, seq
        self._leader = min(state.members, default="")

    def _quiet(self, topics: set[str], now: float, now_ms: int,
               seq: int | None) -> bool:
        """Whether this look may skip the group document: nothing this
        member must act on can have changed since the last full look (see
        the module docstring). O(own topics), whatever the group's size."""
        seen = self._seen
        if seen is None or seq is None or seq != self._seen_seq or \
                now >= self._next_heartbeat or self.member_id not in seen.members:
            return False
        if self._leader == self.member_id:
            return False                # the leader looks for the dead
        leader = seen.members[self._leader]
        if leader.expired(now_ms) or not self._is_alive(leader):
            return False
        if topics is not self._seen_topics and set(topics) != set(self._seen_topics):
            return False
        stored = seen.partition_counts
        if stored is None:
            return False
        for t in topics:
            try:
                n = self.log.partitions_for(t)      # (cached by the Log for 1 s)
            except TopicNotFound:
                n = 0
            if n != stored.get(t, 0):
                return False
        return True

    def _ring(self, state: gs.GroupState) -> None:
        """Tell the other members that the group moved (L-3): its own slot,
        then the slots their polls wait on (their topics', and slot 0 of
        those with several)."""
        bell = self.log.doorbell()
        if bell is None:
            return
        _native.doorbell_ring(bell, self._slot)
        for slot in {0, *(topic_slot(t) for m in state.members.values() for t in m.topics)}:
            _native.doorbell_ring(bell, slot)

    def wait_s(self) -> float:
        """How long a poll may block before this member looks at the group
        again: GROUP_CHECK_INTERVAL_S, or after a look that skipped the
        document up to QUIET_WAIT_S, never past its heartbeat (a move of
        the group rings the slot the poll waits on)."""
        bell = self.log.doorbell_pointer()
        if not self._was_quiet or bell is None or \
                _native.doorbell_load_at(bell, self._slot) != self._seen_seq:
            return GROUP_CHECK_INTERVAL_S       # (rang since: look soon)
        left = min(QUIET_WAIT_S, self._next_heartbeat - self._monotonic())
        return max(GROUP_CHECK_INTERVAL_S, left)

    def count_retention_reset(self, tp: TopicPartition, skipped: int) -> None:
        """Record in the group that retention overtook it on ``tp``
        (describe_group's ``retention_resets``)."""
        self.log.meta.change_group(self.group_id, lambda state, commit: (
            gs.count_retention_reset(state, tp, skipped), None))

    def commit(self, offsets: dict, sync_records: Callable[[], None] | None = None) -> None:
        """Commit ``offsets``, fenced (gs.fence): CommitFailedError unless
        this member is in the group and owns every partition named. A
        partition's commit table slot carries its owner (C-4), so a commit
        of owned partitions takes no metadata transaction; the others go
        through one, after ``sync_records()`` (M-10), where gs.fence decides."""
        self.log.meta.commit(
            self.group_id, offsets, fence=self.member_id, sync_records=sync_records,
            fence_check=lambda state: gs.fence(state, self.group_id, self.member_id,
                                               offsets))

    def beat(self) -> bool:
        """Renew this member's heartbeat, and so its lease, and nothing
        else: no expiry, rebalance, release or claim (those wait for the
        next :meth:`tick`, in the consumer's own call, so a partition is
        never released while the application handles its records). What a
        background heartbeat does between two polls, as Kafka's heartbeat
        thread: the group waits for this member's next poll to hand its
        partitions over. False (nothing written) when the member is not in
        the group: it was expired, or it left; the next tick rejoins.
        Thread-safe: skipped (False) while a tick or leave of this member
        runs, which wait for a beat in flight. :meth:`beat_many` with this
        member alone."""
        return type(self).beat_many([self])[0]

    @classmethod
    def beat_many(cls, members: Sequence[GroupMember]) -> list[bool]:
        """:meth:`beat` each of ``members`` (of one group, on one Log) in
        one metadata transaction, which decodes and rewrites the group's
        document once, not once per member (pylog.heartbeat calls it from
        its thread with the members due). Returns, per member, whether it
        was renewed; its lease and next heartbeat move only then.

        Each member keeps :meth:`beat`'s guarantees: skipped while a tick
        or leave of it runs (the tick or leave waits for the transaction
        instead, if it begins after the member was taken); not renewed if
        it left meanwhile (close, or a leave waiting for the transaction:
        renewing it would write a heartbeat for a member on its way out)
        or is not in the group's document. Thread-safe as :meth:`beat`.
        Durability: one group metadata transaction, durable as the log's
        sync mode makes them."""
        if not members:
            return []
        first = members[0]
        if any(m.log is not first.log or m.group_id != first.group_id
               for m in members):
            raise InvalidArgument("beat_many: every member must be of one group "
                                  "on one Log")
        taken: list[GroupMember] = []
        try:
            # the gate of each member as in _act, the other way round: set
            # this side's flag, then read the tick's (no lock: see __init__)
            for m in members:
                if m._acting or m._beating:
                    continue
                taken.append(m)
                m._beating = True
                if m._acting:       # (a tick began meanwhile: it waits for this)
                    taken.pop()
                    m._beating = False
            renewed = cls._beat_taken(first, taken)
        finally:
            for m in taken:
                m._beating = False
        return [m in renewed for m in members]

    @staticmethod
    def _beat_taken(first: GroupMember, taken: list[GroupMember]) -> set[GroupMember]:
        """beat_many's transaction for the members whose gate it holds."""
        ready = [m for m in taken if not m._gone and m.joined]
        if not ready:
            return set()
        leaves = {m: m._leaves for m in ready}
        now = {m: m._monotonic() for m in ready}
        now_ms = {m: m._wall_ms() for m in ready}

        def update(state, commit):
            renew = {m.member_id: now_ms[m] for m in ready
                     if m._leaves == leaves[m] and not m._gone
                     and m.member_id in state.members}
            return gs.heartbeats(state, renew), set(renew)

        ids = first.log.meta.change_group(first.group_id, update, "heartbeat")
        renewed = {m for m in ready if m.member_id in ids}
        for m in renewed:
            if m._leaves == leaves[m]:
                m._next_heartbeat = now[m] + m.session_timeout_ms / 3000.0
                m.lease_until = now[m] + m.session_timeout_ms / 2000.0
        return renewed

    def heartbeat_due(self) -> float:
        """Monotonic time at which this member's next heartbeat is due."""
        return self._next_heartbeat

    def leave(self, final_offsets: dict | None, for_good: bool = False) -> None:
        """Leave the group, releasing partitions (and committing
        ``final_offsets`` for owned ones in the same transaction); with
        ``for_good`` (a close) no later look of this member joins again,
        even one another thread is running."""
        self._leaves += 1
        if for_good:
            self._gone = True
        if not self.joined and not self._maybe_joined:
            return
        acting = False
        try:
            acting = self._act()
            self._leave(final_offsets)
        finally:
            if acting:
                self._done()

    def _leave(self, final_offsets: dict | None) -> None:
        me = self.member_id
        topics = set()
        for info in self.log.meta.group_state(self.group_id).members.values():
            topics.update(info.topics)
        counts = self._counts(topics)
        now_ms = self._wall_ms()

        def update(state, commit):
            if final_offsets:
                mine = state.owned_by(me)
                commit({tp: o for tp, o in final_offsets.items()
                        if TopicPartition(*tp) in mine})
            new = gs.leave(state, me, counts, now_ms, self._is_alive)
            return new, new

        self._ring(self.log.meta.change_group(self.group_id, update))
        self._seen = None
        self._was_quiet = False
        self.joined = self._maybe_joined = False
        self.owned = set()
        self.lease_until = 0.0


def live_members(log, group: str, now_ms: int | None = None,
                 is_alive=process_alive) -> dict:
    """The members of ``group`` that are alive: member_id -> Member."""
    return gs.live(log.meta.group_state(group),
                   _now_ms() if now_ms is None else now_ms, is_alive)


def describe_group(log: Any, group: str) -> dict[str, Any]:
    """Members, assignment, committed offsets and lag of ``group``. Reads
    only (one read transaction per part, never the writer lock).

    ``partitions`` lists every partition of the topics the group subscribes
    to (its members' topics, or those of its last rebalance once they left:
    M-7 ``partition_counts``) and every partition it committed. A partition
    never committed has ``committed`` None and counts from where the group
    would start it (:func:`lag_from`): ``lag_from`` says which —
    ``"committed"``, ``"earliest"`` (every retained record waits),
    ``"latest"`` (nothing waits) or ``"none"`` (the consumer would raise;
    every retained record waits). A committed offset below the log start
    counts from the log start (the records below are gone). ``state`` is
    ``"Stable"`` while a member is alive, else ``"Empty"``; ``members``
    lists the dead too (``alive`` False) until a live member removes them."""
    state = log.meta.group_state(group)
    now_ms = _now_ms()
    offsets = log.meta.group_offsets(group)
    members = []
    for m, info in sorted(state.members.items()):
        members.append({
            "member_id": m, "client_id": info.client_id,
            "host": info.host, "pid": info.pid, "topics": list(info.topics),
            "alive": gs.alive(info, now_ms, process_alive),
            "assignment": list((state.assignment or {}).get(m, ())),
            "owned": sorted(state.owned_by(m)),
            "auto_offset_reset": info.auto_offset_reset})
    partitions = []
    resets = state.retention_resets
    for (topic, p) in sorted(set(offsets) | subscribed_partitions(log, state)):
        try:
            st = log.partition(topic, p).state()
        except (TopicNotFound, PartitionNotFound):
            continue
        tp = TopicPartition(topic, p)
        committed = offsets.get(tp)
        policy = reset_policy(state, tp)
        source, lag = lag_from(committed, policy, st.log_start_offset, st.next_offset)
        count, skipped = resets.get(tp, (0, 0))
        partitions.append({"topic": topic, "partition": p,
                           "committed": committed, "end_offset": st.next_offset,
                           "start_offset": st.log_start_offset,
                           "lag": lag, "lag_from": source,
                           "owner": state.owners.get(tp),
                           "retention_resets": count,
                           "records_skipped_by_retention": skipped})
    return {"group": group, "generation": state.generation,
            "strategy": state.strategy,
            # a group whose members all died (SIGKILL, a missed session)
            # is Empty, as Kafka's: its documents stay until a member
            # joins, but nobody reads
            "state": "Stable" if any(m["alive"] for m in members) else "Empty",
            "auto_offset_reset": state.auto_offset_reset,
            "members": members, "partitions": partitions,
            "lag": sum(p["lag"] for p in partitions),
            "uncommitted_partitions": sum(1 for p in partitions if p["committed"] is None),
            # times retention deleted records before this group read them
            # (the consumer then resumed at the log start), all partitions
            "retention_resets": sum(c for c, _ in resets.values()),
            "records_skipped_by_retention": sum(n for _, n in resets.values())}


def subscribed_partitions(log: Any, state: gs.GroupState) -> set[TopicPartition]:
    """Every partition, as the log has them now, of the topics ``state``'s
    members subscribe to, or that its last rebalance covered (M-7
    ``partition_counts``, kept once the members left). Topics since deleted
    are left out."""
    topics = set(state.partition_counts or ())
    for info in state.members.values():
        topics.update(info.topics)
    out: set[TopicPartition] = set()
    for t in topics:
        try:
            n = log.partitions_for(t, max_age_s=0)
        except TopicNotFound:
            continue
        out.update(TopicPartition(t, p) for p in range(n))
    return out


# The policy assumed for a group whose document does not record one (its
# members joined before pylog recorded it): the Consumer's default.
DEFAULT_OFFSET_RESET = "latest"


def reset_policy(state: gs.GroupState, tp: TopicPartition) -> str:
    """Where ``state``'s group starts ``tp`` without a committed offset:
    its owner's ``auto_offset_reset``, else the group's (M-7: the last
    member to join), else DEFAULT_OFFSET_RESET."""
    owner = state.members.get(state.owners.get(tp, ""))
    if owner is not None and owner.auto_offset_reset is not None:
        return owner.auto_offset_reset
    return state.auto_offset_reset or DEFAULT_OFFSET_RESET


def lag_from(committed: int | None, policy: str, start: int, end: int) -> tuple[str, int]:
    """(where the lag counts from, records waiting) of a partition whose
    records are [``start``, ``end``): from the committed offset (never below
    the log start), or without one from where ``policy`` starts: the log
    start for ``"earliest"`` and ``"none"`` (those records wait, though a
    consumer with ``"none"`` raises instead of reading them), the end for
    ``"latest"``."""
    if committed is not None:
        return "committed", max(0, end - max(committed, start))
    if policy == "latest":
        return "latest", 0
    return ("none" if policy == "none" else "earliest"), max(0, end - start)


def lag_text(source: str) -> str:
    """How a lag counted by :func:`lag_from` is shown: "" for a committed
    partition, else ``"not committed, from earliest"`` and so on."""
    if source == "committed":
        return ""
    if source == "none":
        return "not committed, auto_offset_reset=none"
    return f"not committed, from {source}"


RESET_TARGETS = ("earliest", "latest", "offset", "datetime", "shift")


def _refuse_live(group: str, alive: dict[str, Member]) -> None:
    if alive:
        raise GroupNotEmpty(
            f"reset of group {group!r} refused: it has {len(alive)} live "
            f"member(s) ({', '.join(sorted(alive))}); stop them first")


def reset_group(log: Any, group: str, *, to: str, value: int | None = None,
                topic: str | None = None,
                execute: bool = True) -> dict[TopicPartition, int]:
    """Plan (and with ``execute`` apply) new committed offsets for ``group``;
    ``to`` and ``value`` as :func:`plan_reset` says (``value`` is required,
    an int, for offset, datetime and shift). Returns the plan.

    The plan is made from the partitions' states; applying it checks that
    the group has no live member and commits the plan in one write
    transaction, so a consumer joining meanwhile either is refused the
    reset (GroupNotEmpty) or joins after it and reads the new offsets."""
    if to not in RESET_TARGETS:
        raise InvalidArgument(f"to={to!r}; expected one of {RESET_TARGETS}")
    if to in ("offset", "datetime", "shift") and \
            (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidArgument(f"reset to {to} needs an int value, got {value!r}")
    if to == "datetime" and value is not None and value < 0:
        # (an offset out of range is refused per partition: OffsetOutOfRange)
        raise InvalidArgument(f"reset to datetime needs ms >= 0, got {value!r}")
    if execute:
        _refuse_live(group, live_members(log, group))   # before any planning
    plan = plan_reset(log, group, to=to, value=value, topic=topic)
    if execute and plan:
        apply_reset(log, group, plan)
    return plan


def plan_reset(log: Any, group: str, *, to: str, value: int | None = None,
               topic: str | None = None) -> dict[TopicPartition, int]:
    """The offsets reset_group would commit: {TopicPartition: offset}.

    ``to``: ``"earliest"`` / ``"latest"`` (the log start / end offset),
    ``"offset"`` (``value``, which must lie in [log start, end]: else
    OffsetOutOfRange naming the valid range, never a silent clamp),
    ``"datetime"`` (the first offset at or after ``value`` ms, the end when
    none) or ``"shift"`` (the committed offset plus ``value``, which may be
    negative, kept inside [log start, end] as Kafka's ``--shift-by`` does;
    partitions without a committed offset are left out).

    The partitions: those ``topic`` has, and those of it the group
    committed, when ``topic`` is given; else every partition the group
    committed and every partition of the topics it subscribes to
    (:func:`subscribed_partitions`, as :func:`describe_group` counts the
    lag), committed or not: a group whose members never committed is reset
    too. Empty when the group has neither. Reads only."""
    committed = log.meta.group_offsets(group)
    tps = set(committed)
    if topic is None:
        tps |= subscribed_partitions(log, log.meta.group_state(group))
    else:
        n = log.partitions_for(topic, max_age_s=0)
        tps = {tp for tp in tps if tp[0] == topic} | {(topic, p) for p in range(n)}
    plan = {}
    for t, p in sorted(tps):
        try:
            part = log.partition(t, p)
        except TopicNotFound:
            continue
        st = part.state()
        if to == "earliest":
            new = st.log_start_offset
        elif to == "latest":
            new = st.next_offset
        elif to == "offset":
            assert value is not None
            if not st.log_start_offset <= value <= st.next_offset:
                raise OffsetOutOfRange(
                    f"reset group {group!r} on {t}-{p} to offset {value}: valid "
                    f"offsets are [{st.log_start_offset}, {st.next_offset}]; "
                    "use to='earliest' or to='latest' for the ends; nothing "
                    "was changed")
            new = value
        elif to == "shift":
            assert value is not None
            if (t, p) not in committed:
                continue
            new = min(max(committed[(t, p)] + value, st.log_start_offset),
                      st.next_offset)
        else:
            assert value is not None
            found = part.offset_for_time(value)
            new = st.next_offset if found is None else found
        plan[TopicPartition(t, p)] = new
    return plan


def apply_reset(log: Any, group: str, plan: dict[TopicPartition, int], *,
                wall_ms: Callable[[], int] = _now_ms,
                is_alive: Callable[[Member], bool] = process_alive) -> None:
    """Commit ``plan`` unless ``group`` has a live member (GroupNotEmpty),
    checked in the same write transaction as the commit. Durable as the
    log's sync mode makes metadata commits (FORMAT.rst M-8)."""
    def update(state: gs.GroupState,
               commit: Callable[[dict[tuple[str, int], int]], None]
               ) -> tuple[gs.GroupState, None]:
        _refuse_live(group, gs.live(state, wall_ms(), is_alive))
        commit({(tp.topic, tp.partition): o for tp, o in plan.items()})
        return state, None
    log.meta.change_group(group, update, f"reset group {group!r}")
