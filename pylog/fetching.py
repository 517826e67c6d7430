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

import time
from typing import TYPE_CHECKING, Any

from . import _native
from .deserialize import RecordMaker
from .errors import OffsetOutOfRange, TopicNotFound
from .gcpause import paused as _gc_paused
from .group import GroupMember
from .offsetreset import OffsetReset
from .partition import Cursor, Partition
from .records import TopicPartition
from .store import topic_slot
from .transactions import TxnView, abort_stale

if TYPE_CHECKING:
    from .delivery import Delivery
    from .store import LogStore

TOPIC_REFRESH_S = 1.0
# (partition, index of its first record in a poll's result, index past its last)
Slice = tuple[TopicPartition, int, int]


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
    _next_topic_refresh: float
    _auto_commit: bool
    _next_auto_commit: float
    _closed: bool
    _read_committed: bool
    _woken: bool
    _rr: int
    _slot: int
    _slot_src: object

    if TYPE_CHECKING:
        def _owned(self) -> list[TopicPartition]: ...
        def _cursor(self, tp: TopicPartition) -> Cursor: ...
        def _set_position(self, tp: TopicPartition, offset: int) -> None: ...
        def _sync_group(self, force: bool = False) -> None: ...
        def _maybe_auto_commit(self) -> None: ...

    def _fetch(self, max_records: int, values_only: bool, slices: list[Slice]) -> list[Any]:
        """Fetch from the owned partitions in turn; ``slices`` gets one
        (tp, first index, end index) per partition that gave records."""
        out: list[Any] = []
        owned = self._owned()
        if self._paused:
            owned = [tp for tp in owned if tp not in self._paused]
        if not owned:
            return out
        n = len(owned)
        partitions = self._log.open_partitions()
        view = self._txn_view() if self._read_committed else None
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
                                  with_topic=True, row_type=self._records.row_type,
                                  txn=view)
            except OffsetOutOfRange:
                self._set_position(tp, self._resets.out_of_range(tp, part, cur.offset))
                continue
            if recs:
                self._delivery.handed(tp, first)
                i0 = len(out)
                out.extend(self._records.finish(recs, values_only, tp, part, first,
                                                bool(out)))
                slices.append((tp, i0, len(out)))
                # P-10, once the records are in `out`: counting never raises
                part.shared.count_fetch(len(recs))
        return out

    def _txn_view(self) -> TxnView:
        """X-4: this fetch's view of the transactions; an open one whose
        process died or whose timeout passed is aborted first (when the
        log is writable), so it never holds this reader back for good."""
        view = TxnView(self._log)
        if view.stale and not self._log.readonly:
            abort_stale(self._log)
            view = TxnView(self._log)
        return view

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
        if cur is None or part is None or cur.position < 0:
            return None
        return tp, part, cur

    def _slots(self) -> int:
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

    def _still_owned(self, recs: list[Any], slices: list[Slice]) -> list[Any]:
        """The lease ran out during this poll (stopped or starved: another
        member may have taken partitions over): re-check the group, which
        renews the lease or drops the records of partitions now lost."""
        self._sync_group(force=True)
        owned = set(self._owned())
        if all(tp in owned for tp, _, _ in slices):
            return recs
        return [x for tp, i0, i1 in slices if tp in owned for x in recs[i0:i1]]

    def _housekeeping_due(self, now: float) -> bool:
        """Is group, topic or auto-commit housekeeping due at ``now``
        (monotonic)? pylog.aio runs it off the event loop when it is."""
        member = self._member
        return now >= self._next_topic_refresh or \
            (member is not None and now >= member.next_check) or \
            (self._auto_commit and now >= self._next_auto_commit)

    def _housekeep(self) -> None:
        """The group heartbeat and rebalance, topic refresh and auto-commit
        (metadata transactions: they may fsync)."""
        self._sync_group()
        self._maybe_auto_commit()

    def _wait_s(self, remaining: float) -> float:
        """How long a poll may wait before housekeeping may be due."""
        member = self._member
        return min(remaining, member.wait_s() if member else TOPIC_REFRESH_S)

    def _poll_loop(self, timeout: float, max_records: int, values_only: bool,
                   slices: list[Slice]) -> list[Any]:
        now = time.monotonic()
        deadline = now + timeout
        bell = self._log.doorbell_pointer()  # (keeps the map)
        self._woken = False
        while True:
            if self._housekeeping_due(now):
                self._housekeep()
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
            wait = self._wait_s(remaining)
            target = self._wait_target() if bell is not None else None
            if target is not None:
                tp, part, cur = target
                first = cur.offset
                got = part.wait_fetch(cur, bell + slot * _native.DOORBELL_SLOT_SIZE, seen,
                                      wait, max_records, values_only=values_only,
                                      with_topic=True, row_type=self._records.row_type)
                if got:
                    self._delivery.handed(tp, first)
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

