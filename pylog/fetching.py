"""How a Consumer's ``poll`` fetches and waits (a mixin of
:class:`pylog.consumer.Consumer`).

Waiting: ``poll`` blocks on the log's doorbell (a futex in a shared file
mapping, rung by every append in any process), so an idle consumer uses no
CPU and wakes as soon as a record arrives. Reading one positioned partition,
it waits in Partition.wait_fetch, which decodes the new records in the same
native call, and an append of this process that wakes it hands it the GIL
(_native.Handoff).

Fetching goes round the owned, unpaused partitions in turn (a different
first partition each poll), so one busy partition does not starve the
others. A group member returns records only while its heartbeat lease
holds (GroupMember.lease_until).

Thread safety: as the Consumer (one thread at a time; ``wakeup()`` from
any). Durability: nothing here writes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from . import _native
from .deserialize import RecordMaker
from .errors import (
    LogClosed,
    OffsetOutOfRange,
    PartitionNotFound,
    PylogError,
    TopicNotFound,
)
from .gcpause import paused as _gc_paused
from .group import GroupMember
from .offsetreset import OffsetReset
from .partition import Cursor, Partition
from .records import TopicPartition
from .store import topic_slot
from .transactions import abort_stale
from .txnview import ReadMemory, TxnView

_logger = logging.getLogger("pylog")

if TYPE_CHECKING:
    from .delivery import Delivery
    from .rebalance import PollInterval
    from .store import LogStore

TOPIC_REFRESH_S = 1.0
# (partition, index of its first record in a poll's result, index past its last)
Slice = tuple[TopicPartition, int, int]
_T = TypeVar("_T")


#: the most bytes a fetch of records each larger than an inline fetch's
#: budget decodes in another thread (PollDriver.prefetch; one record at least)
PREFETCH_MAX_BYTES = 16 << 20
#: ... in steps of about this many bytes (one record at least): building a
#: step's records holds the GIL (about 0.5 ms a MiB: an event loop of the
#: process waits that long at most), each step's native fetch lets it go;
#: and a step re-checks the CRC of the batch it starts in (B-4), so steps
#: of one record each would check a 16 MiB batch 64 times (t9: 150-190 ms
#: for 64 x 256 KiB against 25-90 ms with 2-16 MiB steps)
PREFETCH_STEP_BYTES = 2 << 20
#: how many batches an inline fetch's read_committed walks may pass (about
#: 3 µs each; TxnView's ``walk_budget``): a walk past an open transaction
#: (the whole tail, at a consumer's first fetch after it) goes on at the
#: next fetch, so that an event loop is never held for long
INLINE_WALK_BATCHES = 256


def room(part: Partition, cur: Cursor, max_records: int, max_bytes: int) -> int:
    """How many of ``part``'s records from ``cur`` fit in ``max_bytes``
    (at most ``max_records``; 0: the next one alone is estimated larger),
    estimated from the partition state without reading a batch: the mean
    size (batch framing included) of the records from the cursor to the
    committed end when the cursor is in the active segment, else of the
    active segment's records. Records of similar sizes (the usual topic)
    make it close; a partition mixing small and much larger records may
    overrun ``max_bytes`` by the larger ones. Never raises for a state it
    cannot read: ``max_records`` (the fetch that follows raises)."""
    return records_that_fit(records_ahead(part, cur), max_records, max_bytes)


def records_ahead(part: Partition, cur: Cursor) -> tuple[int, int, bool] | None:
    """(bytes, records, exact) that :func:`room` goes by: exact when they
    are those from ``cur`` to the committed end (one state read)."""
    try:
        st = part.state()
    except PylogError:
        return None
    if cur.position >= 0 and cur.segment_base == st.active_base:
        return st.active_position - cur.position, st.next_offset - cur.offset, True
    return st.active_position, st.next_offset - st.active_base, False


def records_that_fit(ahead: tuple[int, int, bool] | None, max_records: int, max_bytes: int) -> int:
    if ahead is None:
        return max_records
    nbytes, recs, exact = ahead
    if exact and nbytes <= max_bytes or recs <= 0 or nbytes <= 0:
        return max_records          # (all of it fits, or nothing to go by)
    return min(max_records, int(max_bytes * recs // nbytes))


def dropped_under(log: LogStore, part: Partition) -> bool:
    """Was ``part`` closed under a fetch of it by another thread dropping a
    deleted incarnation's partitions (LogStore.forget_topic, L-4) while
    ``log`` stays open? The fetch then gives nothing; the next one reads
    the partition the Log has open now."""
    return part.closed and not log._closed


def housekeeping_due(c: Fetching, now: float) -> bool:
    """Is group, topic or auto-commit housekeeping due at ``now`` (monotonic)?"""
    member = c._member
    return now >= c._next_topic_refresh or \
        (member is not None and now >= member.next_check) or \
        (c._auto_commit and now >= c._next_auto_commit)


class Fetching:
    """The fetch-and-wait loop of a Consumer (see the module docstring)."""

    _log: LogStore
    _cursors: dict[TopicPartition, Cursor]
    _delivery: Delivery
    _records: RecordMaker
    _resets: OffsetReset
    _member: GroupMember | None
    _paused: set[TopicPartition]
    _topics_resolved: set[str]
    _manual: list[TopicPartition] | None
    _next_topic_refresh: float
    _auto_commit: bool
    _next_auto_commit: float
    _closed: bool
    _read_committed: bool
    _txn_memory: ReadMemory
    _woken: bool
    _rr: int
    _slot: int
    _slot_src: object
    _committed_pos: dict[TopicPartition, int]
    _interval: PollInterval
    group_id: str | None

    if TYPE_CHECKING:
        def _owned(self) -> list[TopicPartition]: ...
        def _cursor(self, tp: TopicPartition) -> Cursor: ...
        def _set_position(self, tp: TopicPartition, offset: int,
                          topic_id: str | None = None) -> None: ...
        def _sync_group(self, force: bool = False) -> None: ...
        def _maybe_auto_commit(self) -> None: ...

    def _fetch(self, max_records: int, values_only: bool, slices: list[Slice],
               owned: list[TopicPartition] | None = None,
               max_bytes: int | None = None, big: list[Prefetch] | None = None,
               view: TxnView | None = None) -> list[Any]:
        """Fetch from the owned partitions (``owned``: as computed by the
        caller) in turn; ``slices`` gets one (tp, first index, end index)
        per partition that gave records. ``max_bytes`` (pylog.aio's inline
        fetch): stop once about that many bytes of batches are decoded,
        as :func:`room` estimates them before each partition's fetch and
        the cursor's move measures them after; at least one record. With
        ``big`` (a list), a first partition whose records are each larger
        than ``max_bytes`` is not fetched: its :class:`Prefetch` is put
        in ``big`` instead, and [] returned. A read_committed consumer's
        fetch decides transactions through ``view`` (X-4; default: a
        view of its own without a walk budget), whose ``unfinished`` the
        caller may read after."""
        out: list[Any] = []
        if owned is None:
            owned = self._owned()
        if self._paused:
            owned = [tp for tp in owned if tp not in self._paused]
        if not owned:
            return out
        n = len(owned)
        partitions = self._log.open_partitions()
        if view is None and self._read_committed:
            view = self._txn_view()
        start = self._rr % n
        self._rr += 1
        budget = max_bytes
        for i in range(n):
            if len(out) >= max_records or budget is not None and budget <= 0:
                break
            tp = owned[(start + i) % n]
            try:
                # (TopicPartition hashes as the (topic, partition) key)
                part = partitions.get(tp) or self._log.partition(tp.topic, tp.partition)
            except TopicNotFound:
                self._cursors.pop(tp, None)
                continue
            except PartitionNotFound:
                if self._manual is not None:
                    raise           # assign()ed: the caller named it
                # a subscription's (or a group's) count, cached before the
                # topic was deleted and made again with fewer partitions
                # (never taken away otherwise): tp was the deleted one's
                self._topic_deleted(tp)
                continue
            try:
                cur = self._cursor(tp)
            except TopicNotFound:
                self._topic_deleted(tp)
                continue
            if cur.topic_id != part.topic_id:
                if cur.topic_id is not None:
                    # taken in a deleted incarnation (L-4): another reader
                    # of this Log met the delete first and the Log opened
                    # the topic made again under the name
                    self._topic_deleted(tp)
                    continue
                cur.topic_id = part.topic_id    # (a seek's: bound at its first fetch)
            first = cur.offset
            want = max_records - len(out)
            if budget is not None:
                ahead = records_ahead(part, cur)
                fit = records_that_fit(ahead, want, budget)
                if fit <= 0:
                    if out:
                        break       # the budget is spent: the next fetch goes on
                    if big is not None and view is None:
                        big.append(prefetch_job(tp, part, cur, ahead, want,
                                             self._records.row_type))
                        break
                    fit = 1         # (a record larger than the budget: alone)
                want = fit
                seg0, pos0 = cur.segment_base, cur.position
            # marked before the fetch moves the cursor: a Ctrl-C between the
            # move and the mark would lose the records (give_back misses them)
            marked = self._delivery.handing(tp, first)
            try:
                recs = part.fetch(cur, want, values_only=values_only,
                                  with_topic=True, row_type=self._records.row_type,
                                  txn=view)
            except OffsetOutOfRange:
                self._delivery.not_handed(tp, marked)
                self._set_position(tp, self._resets.out_of_range(tp, part, cur.offset),
                                   part.topic_id)
                continue
            except TopicNotFound:
                self._delivery.not_handed(tp, marked)
                self._topic_deleted(tp)
                continue
            except LogClosed:
                self._delivery.not_handed(tp, marked)
                if not dropped_under(self._log, part):
                    raise
                continue
            if not recs:
                self._delivery.not_handed(tp, marked)
            if recs and budget is not None:
                # the batch bytes the cursor moved over; across a segment
                # (rare) the estimate it was given
                budget -= cur.position - pos0 if cur.segment_base == seg0 and pos0 >= 0 \
                    else budget * len(recs) // want
            if recs:
                i0 = len(out)
                out.extend(self._records.finish(recs, values_only, tp, part, first,
                                                bool(out)))
                slices.append((tp, i0, len(out)))
                # P-10, once the records are in `out`: counting never raises
                part.shared.count_fetch(len(recs))
        if view is not None and view.stale and not self._log.readonly:
            # a gone owner's or timed-out transaction held this poll
            # back; the next one reads past it
            abort_stale(self._log, view.stale)
        return out

    def _topic_deleted(self, tp: TopicPartition) -> None:
        """The partition ``tp`` was read from belongs to a deleted topic
        (another process deleted it, and may have made a new topic of the
        name): its position and handed records are of the old topic, so
        they are forgotten, never committed; the Log drops its open
        partitions of the topic, and a next fetch of a topic of that name
        starts from the group's committed offset or auto_offset_reset."""
        if self._cursors.pop(tp, None) is not None:
            _logger.warning(
                "consumer%s: topic %r was deleted while it read %s; its position "
                "there is dropped (a topic made again under the name is read "
                "from its committed offset or auto_offset_reset)",
                f" group {self.group_id!r}" if self.group_id else "", tp.topic, tp)
        self._committed_pos.pop(tp, None)
        self._delivery.forget(tp)
        self._log.forget_topic(tp.topic)
        member = self._member
        if member is not None and tp in member.owned:
            # the delete took it from the group (groupstate.drop_topic):
            # not fetched again before the group gives it anew
            member.forget(tp)

    def _txn_view(self, walk_budget: int | None = None) -> TxnView:
        """X-4: this fetch's view of the transactions."""
        return TxnView(self._log, self._txn_memory, walk_budget)

    def _wait_target(self) -> tuple[TopicPartition, Partition, Cursor] | None:
        """(tp, partition, cursor) when this poll reads exactly one partition
        whose cursor is positioned (the blocked poll then waits and decodes
        in one native call, Partition.wait_fetch), else None."""
        owned = self._owned()
        if len(owned) != 1 or self._paused and owned[0] in self._paused or \
                self._read_committed:
            return None      # (read_committed: the LSO is read at every fetch)
        tp = owned[0]
        cur = self._cursors.get(tp)
        part = self._log.open_partitions().get(tp)
        if cur is None or part is None or cur.position < 0 or cur.topic_id != part.topic_id:
            return None
        return tp, part, cur

    def _slots(self) -> int:
        """The doorbell slot to wait on (L-3): the topic's own when all owned
        partitions share one, else slot 0; cached on the identity of what
        it is computed from (an assignment, a member's owned list, the
        resolved subscription: each replaced, never changed in place)."""
        manual = self._manual
        src: object
        if manual is not None:
            src = manual
        elif self._member is not None:
            owned = self._owned()
            src = owned if owned else None      # (none yet: the subscription's)
        else:
            src = self._topics_resolved
        if src is None or src is not self._slot_src:
            if src is self._topics_resolved:
                topics = self._topics_resolved
            else:
                topics = {tp.topic for tp in self._owned()} or self._topics_resolved
            slots = {topic_slot(t) for t in topics}
            self._slot = slots.pop() if len(slots) == 1 else 0
            self._slot_src = src
        return self._slot

    def _in_poll(self, body: Callable[..., _T], *args: Any) -> _T:
        """Run ``body(*args)``, the fetch of one poll (or PollDriver
        fetch): the poll interval stops while it runs, and what it handed
        is given back when it raises, Ctrl-C included, also one that lands
        in the interval's end as it returns (it would replace the return:
        the caller never sees those records). The try blocks are in this
        frame on purpose: a signal raised at the entry of a helper called
        from here is caught; one raised at the entry of a context
        manager's ``__exit__`` would not be."""
        self._resets.first_poll(self._log)
        self._interval.begin()
        try:
            return body(*args)
        except BaseException:
            self._delivery.give_back()
            raise
        finally:
            try:
                self._interval.end()
            except BaseException:
                self._delivery.give_back()
                raise

    def _still_owned(self, recs: list[Any], slices: list[Slice]) -> list[Any]:
        """The lease ran out during this poll (stopped or starved: another
        member may have taken partitions over): re-check the group, which
        renews the lease or drops the records of partitions now lost."""
        cursors = self._cursors
        before = {tp: cursors.get(tp) for tp, _, _ in slices}
        self._sync_group(force=True)
        owned = set(self._owned())
        # a partition lost and gained again in that look (this member was
        # expired meanwhile: another may have read on and committed past
        # these records) has a new cursor, from the committed offset
        kept = [tp in owned and cursors.get(tp) is before[tp] for tp, _, _ in slices]
        if all(kept):
            return recs
        return [x for (tp, i0, i1), keep in zip(slices, kept) if keep
                for x in recs[i0:i1]]

    def _poll_loop(self, timeout: float, max_records: int, values_only: bool,
                   slices: list[Slice]) -> list[Any]:
        now = time.monotonic()
        deadline = now + timeout
        bell = self._log.doorbell_pointer()  # (keeps the map)
        self._woken = False
        member = self._member
        while True:
            if housekeeping_due(self, now):
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
            wait = min(remaining, member.wait_s() if member else TOPIC_REFRESH_S)
            target = self._wait_target() if bell is not None else None
            if target is not None:
                tp, part, cur = target
                first = cur.offset
                marked = self._delivery.handing(tp, first)    # (as in _fetch)
                try:
                    got = part.wait_fetch(cur, bell + slot * _native.DOORBELL_SLOT_SIZE,
                                          seen, wait, max_records, values_only=values_only,
                                          with_topic=True, row_type=self._records.row_type)
                except TopicNotFound:
                    self._delivery.not_handed(tp, marked)
                    self._topic_deleted(tp)
                    got = None
                except LogClosed:
                    self._delivery.not_handed(tp, marked)
                    if not dropped_under(self._log, part):
                        raise
                    got = None
                if not got:
                    self._delivery.not_handed(tp, marked)
                else:
                    recs = self._records.finish(got, values_only, tp, part, first,
                                                False)
                    part.shared.count_fetch(len(got))   # P-10 (never raises)
                    if recs:         # (empty when all went to the dead letters)
                        slices.append((tp, 0, len(recs)))
                        return recs
            elif bell is not None:
                _native.doorbell_wait_at(bell + slot * _native.DOORBELL_SLOT_SIZE, seen, wait)
            else:   # no writable doorbell (read-only files): short sleeps
                time.sleep(min(wait, 0.005))
            now = time.monotonic()



class Prefetch(NamedTuple):
    """A fetch of records too large to decode on an event loop
    (PollDriver.fetch with ``offload``): partition, the consumer's cursor,
    how many."""
    tp: TopicPartition
    part: Partition
    cursor: Cursor
    max_records: int
    step: int           # records a fetch decodes at a time
    row_type: Any
    offset: int         # the cursor's offset and position when made (on the
    position: int       # loop, between fetches): where the decoding starts
    base: int
    segment_base: int
    kept: tuple[Any, ...] | None  # the cursor's rows of a batch read in parts (shared, not changed)


def prefetch_job(tp: TopicPartition, part: Partition, cur: Cursor,
              ahead: tuple[int, int, bool] | None, want: int, row_type: Any) -> Prefetch:
    """The Prefetch of up to ``want`` records of ``tp`` (``ahead``: as
    :func:`room` saw them), PREFETCH_MAX_BYTES at most."""
    return Prefetch(tp, part, cur, max(1, records_that_fit(ahead, want, PREFETCH_MAX_BYTES)),
                    max(1, records_that_fit(ahead, want, PREFETCH_STEP_BYTES)), row_type,
                    cur.offset, cur.position, cur.base, cur.segment_base, cur.kept)


class Prefetched(NamedTuple):
    """What PollDriver.prefetch decoded: the cursor's offset and position
    it read from, the copy of the cursor past the rows, the rows."""
    job: Prefetch
    offset: int
    position: int
    cursor: Cursor
    rows: list[Any]
