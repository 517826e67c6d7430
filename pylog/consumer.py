"""Consumer: subscribe or assign, poll, commit, seek, replay (SPEC §4, §5).

Delivery (G3): records of each owned partition come in offset order; the
position advances past what ``poll`` returned; committed offsets are the
next offset to read. What auto-commit, ``close()`` and ``run()`` commit is
only what the application finished (pylog.delivery states the rules), so a
crash, Ctrl-C or an exception redelivers the unfinished records: at least
once. A record a deserializer refuses stops its partition there
(DeserializationError, or the dead-letter topic). A group member returns
records only while its heartbeat lease holds (GroupMember.lease_until), so
a member stopped past its session timeout never returns records of a
partition another member has taken over.

Waiting: ``poll`` blocks on the log's doorbell (a futex in a shared file
mapping, rung by every append in any process), so an idle consumer uses no
CPU and wakes as soon as a record arrives. Reading one positioned partition,
it waits in Partition.wait_fetch, which decodes the new records in the same
native call, and an append of this process that wakes it hands it the GIL
(_native.Handoff).

Thread safety: a Consumer is used by one thread at a time (as Kafka's);
``close()`` and ``wakeup()`` may be called from any thread.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping

from . import _native
from .config import validate_group_id
from .deadletter import DeadLetters
from .delivery import Delivery
from .deserialize import RecordMaker
from .errors import (
    CommitFailedError,
    ForkedLogError,
    InvalidArgument,
    LogClosed,
    OffsetOutOfRange,
    ReadOnlyLog,
    TopicNotFound,
)
from .gcpause import paused as _gc_paused
from .group import GROUP_CHECK_INTERVAL_S, GroupMember
from .offsetreset import OFFSET_RESETS, OffsetReset
from .partition import Cursor
from .records import TopicPartition
from .store import FORKS, topic_slot

MAX_POLL_RECORDS_MAX = 1_000_000
_TOPIC_REFRESH_S = 1.0


def _tp(obj) -> TopicPartition:
    if isinstance(obj, TopicPartition):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) \
            and isinstance(obj[1], int) and not isinstance(obj[1], bool):
        return TopicPartition(*obj)
    raise InvalidArgument(f"expected TopicPartition(topic, partition), got {obj!r}")


def _check_options(log, group_id, auto_offset_reset, enable_auto_commit,
                   auto_commit_interval_ms, session_timeout_ms, max_poll_records,
                   key_deserializer, value_deserializer) -> None:
    """Consumer's arguments, checked before anything is created (G5)."""
    if auto_offset_reset not in OFFSET_RESETS:
        raise InvalidArgument(
            f"auto_offset_reset={auto_offset_reset!r}; expected one of {OFFSET_RESETS}")
    if group_id is not None:
        validate_group_id(group_id, "group_id")
    for name, v, lo, hi in (("auto_commit_interval_ms", auto_commit_interval_ms, 1, 86_400_000),
                            ("session_timeout_ms", session_timeout_ms, 100, 86_400_000),
                            ("max_poll_records", max_poll_records, 1, MAX_POLL_RECORDS_MAX)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise InvalidArgument(f"{name}={v!r}; expected int in [{lo}, {hi}]")
    if not isinstance(enable_auto_commit, bool):
        raise InvalidArgument(f"enable_auto_commit={enable_auto_commit!r}; "
                              "expected True or False")
    for name, fn in (("key_deserializer", key_deserializer),
                     ("value_deserializer", value_deserializer)):
        if fn is not None and not callable(fn):
            raise InvalidArgument(f"{name} must be callable")
    if group_id is not None and log.readonly:
        raise ReadOnlyLog(
            f"consumer group {group_id!r} on {log.path}: the log is open "
            "read-only, and a group member writes its membership and its "
            "commits; open the log writable, or read without a group "
            "(log.consumer(enable_auto_commit=False) and assign())")


class Consumer:
    """Create with :meth:`Log.consumer`; see the module docstring."""

    def __init__(self, log, *topics, group_id: str | None = None,
                 pattern: str | None = None, auto_offset_reset: str = "latest",
                 enable_auto_commit: bool = True, auto_commit_interval_ms: int = 5000,
                 session_timeout_ms: int = 10000, max_poll_records: int = 500,
                 partition_assignment_strategy: str = "sticky",
                 key_deserializer=None, value_deserializer=None,
                 client_id: str | None = None, dead_letter_topic: str | None = None):
        _check_options(log, group_id, auto_offset_reset, enable_auto_commit,
                       auto_commit_interval_ms, session_timeout_ms, max_poll_records,
                       key_deserializer, value_deserializer)
        self._dlq = None
        if dead_letter_topic is not None:
            if log.readonly:
                raise ReadOnlyLog(f"dead_letter_topic={dead_letter_topic!r} on "
                                  f"{log.path}: the log is open read-only")
            self._dlq = DeadLetters(log, dead_letter_topic)
        self._log = log
        self._forks = FORKS[0]
        self.group_id = group_id
        self._auto_commit = enable_auto_commit and group_id is not None
        self._auto_commit_s = auto_commit_interval_ms / 1000.0
        self._next_auto_commit = time.monotonic() + self._auto_commit_s
        self._max_poll = max_poll_records
        self._closed = False
        self._woken = False          # wakeup() since the current poll began
        self._subscription: set[str] = set()
        self._pattern: re.Pattern | None = None
        self._topics_resolved: set[str] = set()
        self._next_topic_refresh = 0.0
        self._manual: list[TopicPartition] | None = None
        self._cursors: dict[TopicPartition, Cursor] = {}
        self._committed_pos: dict[TopicPartition, int] = {}
        self._delivery = Delivery(self._cursors, Cursor)
        self._records = RecordMaker(key_deserializer, value_deserializer, self._dlq,
                                    group_id, self._cursors)
        self._paused: set[TopicPartition] = set()
        # a group member's _owned() and _slots() are cached on the identity
        # of what they are computed from (GroupMember.owned is replaced,
        # never mutated, when it changes)
        self._owned_src = None
        self._owned_list: list = []
        self._slot_src = None
        self._slot = 0
        self._rr = 0
        self._member = None
        if group_id is not None:
            self._member = GroupMember(log, group_id,
                                       strategy=partition_assignment_strategy,
                                       session_timeout_ms=session_timeout_ms,
                                       client_id=client_id)
        self._resets = OffsetReset(auto_offset_reset, group_id, self._member)
        if topics or pattern:
            self.subscribe(list(topics), pattern=pattern)

    # -- state ----------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise LogClosed("consumer is closed")
        if FORKS[0] != self._forks:
            raise ForkedLogError(
                "this consumer was created before os.fork() and belongs to the "
                "parent process; open the log and create consumers after forking")
        self._log._check()

    # -- subscription ------------------------------------------------------------
    def subscribe(self, topics=(), *, pattern: str | None = None) -> None:
        """Subscribe to topics (a group shares their partitions) and/or a
        regex ``pattern`` matched against every topic name, including topics
        created later."""
        self._check()
        if isinstance(topics, str):
            topics = [topics]
        topics = list(topics)
        from .config import validate_topic_name
        for t in topics:
            validate_topic_name(t)
        if pattern is not None:
            try:
                self._pattern = re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise InvalidArgument(f"pattern {pattern!r} is not a regex: {exc}") from None
        else:
            self._pattern = None
        if not topics and pattern is None:
            raise InvalidArgument("subscribe needs topics or a pattern")
        if self._manual is not None:
            raise InvalidArgument("subscribe after assign(); call unsubscribe() first")
        self._subscription = set(topics)
        self._next_topic_refresh = 0.0
        self._refresh_topics(force=True)

    def unsubscribe(self) -> None:
        self._check()
        self._commit_quietly()
        if self._member is not None:
            self._member.leave(None)
        self._subscription = set()
        self._pattern = None
        self._topics_resolved = set()
        self._manual = None
        self._cursors.clear()

    def subscription(self) -> set:
        return set(self._subscription)

    def assign(self, partitions) -> None:
        """Consume exactly these partitions, without group membership."""
        self._check()
        tps = [_tp(tp) for tp in partitions]
        for tp in tps:
            self._log.partition(tp.topic, tp.partition)   # validates
        if self._subscription or self._pattern:
            raise InvalidArgument("assign after subscribe(); call unsubscribe() first")
        self._manual = tps
        for tp in [tp for tp in self._cursors if tp not in tps]:
            del self._cursors[tp]       # (in place: Delivery and RecordMaker share it)

    def assignment(self) -> set:
        """The partitions this consumer currently owns / was assigned."""
        self._check()
        if self._manual is not None:
            return set(self._manual)
        self._sync_group(force=True)
        return set(self._owned())

    def _owned(self):
        if self._manual is not None:
            return self._manual
        if self._member is not None:
            owned = self._member.owned
            if owned is not self._owned_src:
                self._owned_list = sorted(owned)
                self._owned_src = owned
            return self._owned_list
        # no group: every partition of the subscribed topics, counted now
        # (partitions added by this Log are seen at once; the Log caches the
        # counts for a second)
        out = []
        for t in sorted(self._topics_resolved):
            try:
                n = self._log.partitions_for(t)
            except TopicNotFound:
                continue
            out.extend(TopicPartition(t, p) for p in range(n))
        return out

    def _refresh_topics(self, force=False) -> None:
        now = time.monotonic()
        if not force and now < self._next_topic_refresh:
            return
        self._next_topic_refresh = now + _TOPIC_REFRESH_S
        existing = set(self._log.topics())
        topics = {t for t in self._subscription if t in existing}
        if self._pattern is not None:
            topics |= {t for t in existing if self._pattern.fullmatch(t)}
        self._topics_resolved = topics    # a new set: _owned() recomputes

    def _sync_group(self, force=False) -> None:
        if self._manual is not None:
            return
        self._refresh_topics(force)
        if self._member is None:
            return
        gained, lost = self._member.tick(self._topics_resolved,
                                         self._positions_for, force=force)
        for tp in lost:
            self._cursors.pop(tp, None)
            self._committed_pos.pop(tp, None)
            self._delivery.forget(tp)
        for tp in gained:
            self._cursors.pop(tp, None)   # re-read the committed offset
            self._delivery.forget(tp)

    def _positions_for(self, tps) -> dict:
        """Offsets to commit when releasing ``tps`` in a rebalance."""
        if not self._auto_commit:
            return {}
        finished = self._delivery.finished()
        out = {tp: finished[tp] for tp in tps
               if tp in finished and self._committed_pos.get(tp) != finished[tp]}
        self._sync_for_commit(out)
        return out

    def _sync_for_commit(self, offsets) -> None:
        """Offsets must not outlive the records they point past (power loss),
        nor the dead-letter copies of records they skip."""
        if self._dlq is not None:
            self._dlq.flush()
        for tp in offsets:
            self._log.partition(tp.topic, tp.partition).sync_for_commit()

    # -- positions ---------------------------------------------------------------
    def _cursor(self, tp: TopicPartition) -> Cursor:
        c = self._cursors.get(tp)
        if c is not None:
            return c
        part = self._log.partition(tp.topic, tp.partition)
        committed = None
        if self.group_id is not None:
            committed = self._log.meta.committed(self.group_id, tp.topic, tp.partition)
        st = part.state()
        if committed is None:
            off = self._resets.no_commit(tp, part)
        elif not st.log_start_offset <= committed <= st.next_offset:
            off = self._resets.out_of_range(tp, part, committed)
        else:
            off = committed
            self._committed_pos[tp] = committed
        c = self._cursors[tp] = Cursor(off)
        return c

    def position(self, tp) -> int:
        """The offset of the next record poll() will return for ``tp``."""
        self._check()
        return self._cursor(_tp(tp)).offset

    def committed(self, tp) -> int | None:
        self._check()
        tp = _tp(tp)
        if self.group_id is None:
            return None
        return self._log.meta.committed(self.group_id, tp.topic, tp.partition)

    def _owned_or_raise(self, tp) -> TopicPartition:
        tp = _tp(tp)
        grouped = self._member is not None and self._manual is None
        if grouped and tp not in set(self._owned()):
            self._sync_group(force=True)      # a new member joins here
        if tp not in set(self._owned()):
            raise InvalidArgument(
                f"{tp} is not assigned to this consumer" + (grouped and (
                    f" (group {self.group_id!r} gave it {sorted(self._owned())}); "
                    "another member owns it, or the topic is not subscribed") or ""))
        return tp

    def _set_position(self, tp, offset: int) -> None:
        self._cursors[tp] = Cursor(offset)
        self._delivery.forget(tp)

    def seek(self, tp, offset: int) -> None:
        """Make the next poll() of ``tp`` start at ``offset``; a new group
        member joins its group first (seek right after log.consumer())."""
        self._check()
        tp = self._owned_or_raise(tp)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidArgument(f"offset={offset!r}; expected a non-negative int")
        st = self._log.partition(tp.topic, tp.partition).state()
        if not st.log_start_offset <= offset <= st.next_offset:
            raise OffsetOutOfRange(
                f"seek {tp.topic}-{tp.partition} to {offset}: valid offsets are "
                f"[{st.log_start_offset}, {st.next_offset}]")
        self._set_position(tp, offset)

    def seek_to_beginning(self, *tps) -> None:
        self._check()
        self._sync_group(force=True)
        for tp in (tps or self._owned()):
            tp = self._owned_or_raise(tp)
            self._set_position(
                tp, self._log.partition(tp.topic, tp.partition).state().log_start_offset)

    def seek_to_end(self, *tps) -> None:
        self._check()
        self._sync_group(force=True)
        for tp in (tps or self._owned()):
            tp = self._owned_or_raise(tp)
            self._set_position(
                tp, self._log.partition(tp.topic, tp.partition).state().next_offset)

    def offsets_for_times(self, timestamps: dict) -> dict:
        """{tp: ts_ms} -> {tp: first offset with timestamp >= ts_ms, or None}."""
        self._check()
        out = {}
        for tp, ts in timestamps.items():
            tp = _tp(tp)
            if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
                raise InvalidArgument(f"timestamp for {tp} must be a non-negative int ms")
            out[tp] = self._log.partition(tp.topic, tp.partition).offset_for_time(ts)
        return out

    def beginning_offsets(self, tps) -> dict:
        self._check()
        return {tp: self._log.partition(tp.topic, tp.partition).state().log_start_offset
                for tp in map(_tp, tps)}

    def end_offsets(self, tps) -> dict:
        self._check()
        return {tp: self._log.partition(tp.topic, tp.partition).state().next_offset
                for tp in map(_tp, tps)}

    def pause(self, *tps) -> None:
        self._check()
        self._paused.update(_tp(tp) for tp in tps)

    def resume(self, *tps) -> None:
        self._check()
        self._paused.difference_update(_tp(tp) for tp in tps)

    def paused(self) -> set:
        return set(self._paused)

    def lag(self) -> dict:
        """{tp: records between the position and the end} for owned partitions."""
        self._check()
        self._sync_group()
        out = {}
        for tp in self._owned():
            end = self._log.partition(tp.topic, tp.partition).state().next_offset
            out[tp] = max(0, end - self._cursor(tp).offset)
        return out

    # -- polling --------------------------------------------------------------------
    def _fetch(self, max_records: int, values_only: bool, slices: list) -> list:
        """Fetch from the owned partitions in turn; ``slices`` gets one
        (tp, first index, end index) per partition that gave records."""
        out: list = []
        owned = self._owned()
        if self._paused:
            owned = [tp for tp in owned if tp not in self._paused]
        if not owned:
            return out
        n = len(owned)
        partitions = self._log.open_partitions()
        start = self._rr % n
        self._rr += 1
        for i in range(n):
            if len(out) >= max_records:
                break
            tp = owned[(start + i) % n]
            try:
                # (TopicPartition hashes as the (topic, partition) key)
                part = partitions.get(tp) or self._log.partition(tp.topic, tp.partition)
            except TopicNotFound:
                self._cursors.pop(tp, None)
                continue
            cur = self._cursor(tp)
            first = cur.offset
            try:
                recs = part.fetch(cur, max_records - len(out), values_only=values_only,
                                  with_topic=True, row_type=self._records.row_type)
            except OffsetOutOfRange:
                self._set_position(tp, self._resets.out_of_range(tp, part, cur.offset))
                continue
            if recs:
                self._delivery.handed(tp, first)
                i0 = len(out)
                out.extend(self._records.finish(recs, values_only, tp, part, first,
                                                bool(out)))
                slices.append((tp, i0, len(out)))
        return out

    def _wait_target(self):
        """(tp, partition, cursor) when this poll reads exactly one partition
        whose cursor is positioned (the blocked poll then waits and decodes
        in one native call, Partition.wait_fetch), else None."""
        owned = self._owned()
        if len(owned) != 1 or self._paused and owned[0] in self._paused:
            return None
        tp = owned[0]
        cur = self._cursors.get(tp)
        part = self._log.open_partitions().get(tp)
        if cur is None or part is None or cur.position < 0:
            return None
        return tp, part, cur

    def _slots(self):
        """The doorbell slot to wait on (L-3): the topic's own when all owned
        partitions share one, else slot 0; cached per owned list."""
        owned = self._owned()
        src = owned if owned and self._member is not None else None
        if src is None or src is not self._slot_src:
            slots = {topic_slot(t) for t in
                     ({tp.topic for tp in owned} or self._topics_resolved)}
            self._slot = slots.pop() if len(slots) == 1 else 0
            self._slot_src = src
        return self._slot

    def _poll(self, timeout: float, max_records, values_only: bool) -> list:
        self._check()
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise InvalidArgument(f"timeout={timeout!r}; expected seconds >= 0")
        if max_records is None:
            max_records = self._max_poll
        elif isinstance(max_records, bool) or not isinstance(max_records, int) \
                or not 1 <= max_records <= MAX_POLL_RECORDS_MAX:
            raise InvalidArgument(f"max_records={max_records!r}; expected an int in "
                                  f"[1, {MAX_POLL_RECORDS_MAX}]")
        if not self._subscription and self._pattern is None and self._manual is None:
            raise InvalidArgument("poll before subscribe() or assign()")
        delivery = self._delivery
        delivery.next_poll()        # what the last poll handed is finished
        slices: list = []
        try:
            recs = self._poll_loop(timeout, max_records, values_only, slices)
            if recs and self._manual is None and self._member is not None \
                    and time.monotonic() > self._member.lease_until:
                recs = self._still_owned(recs, slices)
            return recs
        except BaseException:
            delivery.give_back()
            raise

    def _still_owned(self, recs: list, slices: list) -> list:
        """The lease ran out during this poll (stopped or starved: another
        member may have taken partitions over): re-check the group, which
        renews the lease or drops the records of partitions now lost."""
        self._sync_group(force=True)
        owned = set(self._owned())
        if all(tp in owned for tp, _, _ in slices):
            return recs
        return [x for tp, i0, i1 in slices if tp in owned for x in recs[i0:i1]]

    def _poll_loop(self, timeout: float, max_records: int, values_only: bool,
                   slices: list) -> list:
        now = time.monotonic()
        deadline = now + timeout
        bell = self._log.doorbell_pointer()    # (ours keeps the map alive)
        self._woken = False
        member = self._member
        while True:
            # group, topic and auto-commit housekeeping when one is due
            if now >= self._next_topic_refresh or \
                    (member is not None and now >= member.next_check) or \
                    (self._auto_commit and now >= self._next_auto_commit):
                self._sync_group()
                self._maybe_auto_commit()
            slot = self._slots()
            seen = _native.doorbell_load_at(bell, slot) if bell is not None else 0
            # Paused collector (see pylog.gcpause): poll builds up to
            # max_records Records, typically while the caller still holds the
            # previous poll's; paused to the end of poll, the next collection
            # comes after the caller has dropped those.
            with _gc_paused():
                recs = self._fetch(max_records, values_only, slices)
            if recs or self._closed:
                return recs
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0 or self._woken:
                return recs
            wait = min(remaining, GROUP_CHECK_INTERVAL_S if self._member else _TOPIC_REFRESH_S)
            target = self._wait_target() if bell is not None else None
            if target is not None:
                tp, part, cur = target
                first = cur.offset
                recs = part.wait_fetch(cur, bell + slot * _native.DOORBELL_SLOT_SIZE, seen,
                                       wait, max_records, values_only=values_only,
                                       with_topic=True, row_type=self._records.row_type)
                if recs:
                    self._delivery.handed(tp, first)
                    recs = self._records.finish(recs, values_only, tp, part, first,
                                                False)
                    if recs:         # (empty when all went to the dead letters)
                        slices.append((tp, 0, len(recs)))
                        return recs
            elif bell is not None:
                _native.doorbell_wait_at(bell + slot * _native.DOORBELL_SLOT_SIZE, seen, wait)
            else:   # no writable doorbell (read-only files): short sleeps
                time.sleep(min(wait, 0.005))
            now = time.monotonic()

    def poll(self, timeout: float = 0.0, max_records: int | None = None) -> list:
        """Return up to ``max_records`` records (list of Record), waiting up to
        ``timeout`` seconds for the first one."""
        return self._poll(timeout, max_records, False)

    def poll_values(self, timeout: float = 0.0, max_records: int | None = None) -> list:
        """Like poll() but returns only values (no Record objects): the fast
        path for consumers that need nothing else."""
        return self._poll(timeout, max_records, True)

    def wakeup(self) -> None:
        """Make a blocked poll() return early (from any thread)."""
        self._woken = True
        bell = self._log.doorbell()
        if bell is not None:
            # the slot a poll waits on: its topics' own, or slot 0 (L-3)
            _native.doorbell_ring(bell, self._slot)
            if self._slot:
                _native.doorbell_ring(bell, 0)

    def __iter__(self):
        """Records one at a time until close(); see pylog.delivery."""
        return self._delivery.iterate(self.poll, lambda: self._closed)

    def run(self, handler, *, poll_timeout: float = 0.5, stop: threading.Event | None = None,
            commit_every: str = "batch") -> None:
        """Call ``handler(record)`` for every record until ``stop`` is set or
        the consumer is closed, committing (with a group) the records whose
        handler returned: ``commit_every="record"`` after each one,
        ``"batch"`` after each poll's worth.

        A handler that raises (KeyboardInterrupt included) ends run with that
        exception: the records before it are committed, its record and the
        rest of the batch are not, and the position goes back to it, so it
        is delivered again (by this consumer's next poll, or after a
        restart): at least once.
        """
        commit = self.commit if self.group_id is not None else None
        self._delivery.run(lambda: self.poll(timeout=poll_timeout), handler, commit,
                           commit_every, running=lambda: not self._closed and
                           not (stop is not None and stop.is_set()))

    # -- commits ----------------------------------------------------------------------
    def commit(self, offsets: Mapping | None = None) -> None:
        """Commit ``offsets`` {TopicPartition: next offset to read}, or
        without ``offsets`` the position after every record poll() returned
        (the iterator: up to the record it is on) of the owned partitions.

        Durability: the offsets are stored in one LMDB transaction, after
        the records they point past are durable (M-10). Raises
        CommitFailedError when a rebalance moved a partition away (SPEC §5).
        """
        self._check()
        if self.group_id is None:
            raise InvalidArgument("commit needs a group_id")
        if offsets is None:
            owned = set(self._owned())
            offsets = {tp: o for tp, o in
                       self._delivery.handed_positions().items()
                       if tp in owned}
        else:
            if not isinstance(offsets, Mapping):
                raise InvalidArgument(
                    f"commit(offsets={type(offsets).__name__}): expected a dict "
                    "{TopicPartition: next offset to read}")
            clean = {}
            for tp, off in offsets.items():
                if isinstance(off, bool) or not isinstance(off, int) or off < 0:
                    raise InvalidArgument(f"offset for {tp} must be an int >= 0")
                clean[_tp(tp)] = off
            offsets = clean
        if not offsets:
            return
        raw = {(tp.topic, tp.partition): o for tp, o in offsets.items()}
        self._sync_for_commit(offsets)
        if self._member is not None and self._manual is None:
            if not self._member.joined:
                self._sync_group(force=True)   # before its first poll: join
            self._member.commit(raw)
        else:
            self._log.meta.commit(self.group_id, raw)
        self._committed_pos.update(offsets)
        for tp, off in offsets.items():     # the application finished these
            self._delivery.committed(tp, off)

    def _maybe_auto_commit(self) -> None:
        if not self._auto_commit:
            return
        now = time.monotonic()
        if now < self._next_auto_commit:
            return
        self._next_auto_commit = now + self._auto_commit_s
        self._commit_quietly()

    def _commit_quietly(self) -> None:
        """Auto-commit: the finished records' positions (pylog.delivery)."""
        if not self._auto_commit:
            return
        pending = {tp: o for tp, o in self._delivery.finished().items()
                   if self._committed_pos.get(tp) != o}
        if not pending:
            return
        try:
            self.commit(pending)
        except CommitFailedError:
            pass    # the partition moved; its new owner resumes from the last commit

    def close(self, autocommit: bool = True) -> None:
        """Leave the group and release; with auto-commit (and ``autocommit``)
        first commit what the application finished, never what it was only
        handed (pylog.delivery): a ``with`` block left by an exception or
        Ctrl-C loses nothing. Idempotent; callable from any thread."""
        if self._closed:
            return
        self._woken = True
        try:
            if FORKS[0] == self._forks and not self._log._closed:
                final = None
                if autocommit and self._auto_commit:
                    finished = self._delivery.finished()
                    final = {(tp.topic, tp.partition): o for tp, o in finished.items()}
                    self._sync_for_commit(finished)
                if self._member is not None:
                    self._member.leave(final)
                elif final:
                    self._log.meta.commit(self.group_id, final)
                if self._dlq is not None:
                    self._dlq.close()
        finally:
            self._closed = True
            self.wakeup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
