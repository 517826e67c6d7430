"""PollDriver: a Consumer's ``poll`` in steps, for a caller that waits
and runs housekeeping on its own (pylog.aio drives a Consumer from an
event loop with it). The fetching itself, and the prefetch of records
too large to decode on an event loop, are pylog.fetching's.

Thread safety: see PollDriver. Durability: a driver's housekeeping and
leave write group and commit transactions, durable as the log's sync
mode makes them; nothing else here writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import (
    CommitFailedError,
    InvalidArgument,
    LogClosed,
    PylogError,
    TopicNotFound,
)
from .fetching import (
    INLINE_WALK_BATCHES,
    TOPIC_REFRESH_S,
    Prefetch,
    Prefetched,
    dropped_under,
    housekeeping_due,
    prefetch_job,
    records_ahead,
    records_that_fit,
)
from .gcpause import paused as _gc_paused
from .group import GroupMember
from .partition import Cursor, Partition
from .records import TopicPartition
from .txnview import TxnView

_logger = logging.getLogger("pylog")

if TYPE_CHECKING:
    from .consumer import Consumer


def _floors(records: list[Any]) -> dict[TopicPartition, int]:
    """{tp: offset of its first record among ``records``}."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        out.setdefault(TopicPartition(r.topic, r.partition), r.offset)
    return out


#: :meth:`PollDriver.housekeeping`: nothing due; a topic refresh only
#: (metadata reads, never waits: fine on an event loop); group or
#: auto-commit work (metadata transactions that may fsync, rebalance
#: listener calls: off the loop)
NOTHING, READS, WRITES = 0, 1, 2


class PollDriver:
    """A Consumer's ``poll`` in steps, for a caller that waits on its own
    and runs housekeeping where it likes (pylog.aio drives a Consumer from
    an event loop with it: waits on a future, housekeeping in an executor).
    The one way such a caller reaches into a Consumer's internals;
    internal to pylog.

    A driver's loop: ``housekeeping()`` and, when due, ``housekeep()``;
    read the doorbell slot ``slot()`` (its count before the fetch);
    ``fetch()`` (None: housekeeping must run first, forced); when nothing
    came, wait for a ring of the slot for at most ``wait_s()``.

    An event loop passes ``max_bytes`` to ``fetch`` (about that many bytes
    decoded at most, estimated by pylog.fetching.room) and ``offload``: records
    each larger than that come back as a :class:`Prefetch`, which
    ``prefetch`` decodes in another thread and a later ``fetch`` takes.

    ``unsubscribe`` drops the subscription at once and hands back the
    half that writes (``leave``), to run like ``housekeep``.

    Thread safety: as the Consumer's: one thread at a time (``housekeep``
    and ``leave`` may run in another thread than ``fetch`` as long as they
    never overlap); ``prefetch`` and ``last_stable`` may run in any thread
    at any time (they read through a copy of the cursor, or the partition
    and the metadata, and touch nothing of the consumer).
    Durability: as the Consumer's calls it makes (``leave`` commits as
    close() does).
    """

    __slots__ = ("_c", "_owned", "_owned_src", "_walk_unfinished")

    def __init__(self, consumer: Consumer) -> None:
        self._c = consumer
        # a consumer without a group or an assignment counts its topics'
        # partitions once per topic refresh here (at most a second old, as
        # the Log's partition counts), not on every fetch
        self._owned: list[TopicPartition] | None = None
        self._owned_src: object = None
        # the last fetch's read_committed walk ran out of its budget
        self._walk_unfinished = False

    @property
    def closed(self) -> bool:
        return self._c._closed

    @property
    def idle_s(self) -> float | None:
        """``consumer_timeout_ms`` in seconds (None: never)."""
        return self._c._idle_s

    def check(self) -> None:
        """Raise LogClosed (or ForkedLogError) as the Consumer's calls do."""
        self._c._check()

    def polls_end_with(self, ended: Callable[[], bool]) -> None:
        """``ended()``: whether this consumer's caller can never poll again
        (its event loop closed); from then on the group member is not
        heartbeaten in the background (rebalance.PollInterval.ended)."""
        self._c._interval.ended = ended

    def housekeeping(self, now: float) -> int:
        """What housekeeping is due at ``now`` (monotonic): NOTHING, READS
        or WRITES."""
        c = self._c
        if not housekeeping_due(c, now):
            return NOTHING
        return READS if c._member is None and not c._auto_commit else WRITES

    def housekeep(self, force: bool = False) -> None:
        """The group heartbeat and rebalance (and its listener calls), the
        topic refresh, auto-commit; ``force``: look at the group now.
        Nothing while nothing is subscribed or assigned (after
        :meth:`unsubscribe`: a member would rebalance its partitions away
        instead of leaving, which :meth:`leave` does)."""
        c = self._c
        c._check()
        if not self.subscribed:
            return
        c._sync_group(force)
        c._maybe_auto_commit()

    @property
    def subscribed(self) -> bool:
        """Whether the consumer has a subscription or an assignment."""
        c = self._c
        return bool(c._subscription) or c._pattern is not None or c._manual is not None

    def unsubscribe(self) -> Callable[[], None]:
        """Consumer.unsubscribe in two halves, for a caller that must not
        wait (an event loop). This one drops the subscription or
        assignment at once, by replacing what a housekeeping job running
        in another thread may be reading (never changing it in place), and
        returns the other, :meth:`leave`, to run where waiting is fine,
        after any housekeeping running now and before any other (a group
        member stays in its group until then)."""
        c = self._c
        c._check()
        member = c._member if c._manual is None else None
        # (a copy in one C call: atomic for the other threads)
        cursors = dict(c._cursors)
        c._subscription = set()
        c._paused = set()   # (now: a pause() after a new assign() stays)
        c._pattern = None
        c._topics_resolved = set()
        c._missing = set()
        c._manual = None
        return lambda: self.leave(cursors, member)

    def leave(self, cursors: dict[TopicPartition, Cursor],
              member: GroupMember | None) -> None:
        """The half of :meth:`unsubscribe` that writes. With auto-commit,
        commit what close() would (the finished records of ``cursors``,
        the positions as the unsubscribe found them: a record fetched but
        not finished is fetched again after a new subscribe() or assign(),
        from the committed offset), with the fsyncs M-10 asks for, and for
        a group ``member`` leave the group in the same metadata
        transaction, as close() does; a partition moved away meanwhile is
        not committed. Then forget those positions (not what a seek after
        the unsubscribe made; the pauses went with :meth:`unsubscribe`,
        so a pause() after it stays). The revoke
        listener is not called: the application unsubscribed. Nothing
        once the consumer is closed (its close() committed and left)."""
        c = self._c
        if c._closed:
            return
        final: dict[TopicPartition, int] = {}
        if c._auto_commit:
            final = {tp: o for tp, o in c._delivery.finished().items()
                     if tp in cursors and c._cursors.get(tp) is cursors[tp]
                     and c._committed_pos.get(tp) != o}
        raw = {(tp.topic, tp.partition): o for tp, o in final.items()}
        if raw:
            c._sync_for_commit(final)
        if member is not None:
            member.leave(raw)
        elif raw and c.group_id is not None:
            try:        # (assign()ed with a group_id: a plain commit)
                c._log.meta.commit(c.group_id, raw)
            except CommitFailedError as exc:
                _logger.warning("consumer group %r: unsubscribe() did not commit: %s",
                                c.group_id, exc)
        for tp, cur in cursors.items():
            if c._cursors.get(tp) is cur:
                del c._cursors[tp]      # (in place: Delivery and RecordMaker share it)
                c._delivery.forget(tp)
            c._committed_pos.pop(tp, None)      # (as a rebalance that takes it)

    def last_stable(self, tp: TopicPartition) -> int:
        """X-4: the last stable offset of ``tp`` now (the offset of the
        first batch of a transaction still open there, else its end
        offset), whatever the consumer's isolation level. Not for an
        event loop: it may open the partition's files, reads every
        transactional id's document (TxnView) and may walk the batches."""
        c = self._c
        c._check()
        part = c._log.open_partitions().get(tp) or c._log.partition(tp.topic, tp.partition)
        end = int(part.state().next_offset)     # (before the transactions are read)
        view = TxnView(c._log)
        if not view.arms(tp.topic, tp.partition):
            return end
        return int(part.reader.last_stable(view, end))

    def end_offset(self, tp: TopicPartition, sought: bool = False) -> int | None:
        """The end offset of ``tp`` (a mapped state read: no metadata, no
        file work) once the consumer has a position there (or ``sought``:
        a seek of it waits for its turn) and the Log has its files open;
        else None."""
        c = self._c
        c._check()
        part = c._log.open_partitions().get(tp)
        if part is None or tp not in c._cursors and not sought:
            return None
        return int(part.state().next_offset)

    def seek_target(self, tp: TopicPartition, offset: int
                    ) -> tuple[TopicPartition, int, str | None]:
        """Consumer.seek's checks (raising as it does), moving nothing:
        (tp, the offset it would move to, the topic's incarnation it is
        an offset of); :meth:`set_position` moves."""
        return self._c._seek_target(tp, offset)

    def set_position(self, tp: TopicPartition, offset: int,
                     topic_id: str | None = None) -> None:
        self._c._set_position(tp, offset, topic_id)

    def unpositioned(self) -> list[tuple[Partition, Cursor]]:
        """(partition, cursor) of the owned, unpaused partitions whose cursor
        is not located yet while records wait at it: the ones whose first
        fetch would list, open and map a segment and read its index
        (milliseconds). Creates missing cursors (metadata reads) here, in
        the thread that fetches, so that a seek meanwhile is never
        overwritten. Never raises for a partition: the fetch that follows
        raises what poll would."""
        c = self._c
        c._check()
        partitions = c._log.open_partitions()
        out: list[tuple[Partition, Cursor]] = []
        for tp in c._owned():
            if c._paused and tp in c._paused:
                continue
            try:
                cur = c._cursor(tp)
                if cur.position >= 0:
                    continue
                part = partitions.get(tp) or c._log.partition(tp.topic, tp.partition)
                st = part.state()
                if st.log_start_offset <= cur.offset < st.next_offset:
                    out.append((part, cur))
            except PylogError:
                continue
        return out

    def prepare(self, todo: list[tuple[Partition, Cursor]]) -> None:
        """The first fetch's file work, for a caller that does it off its
        event loop while no fetch of the consumer runs: locate and map
        the cursors :meth:`unpositioned` returned (Reader.position), read
        the transactions when :meth:`transactions_unread`, and a 'latest'
        consumer's topics of its first poll (pylog.offsetreset). Never
        raises: the fetch that follows raises what poll would."""
        c = self._c
        try:
            c._resets.first_poll(c._log)
        except PylogError:
            pass
        for part, cur in todo:
            try:
                part.reader.position(cur)
            except (PylogError, OSError):
                continue
        if self.transactions_unread():
            try:
                self._c._txn_view().read_documents()
            except PylogError:
                pass

    def reset_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """{tp: where auto_offset_reset starts ``tp``} (a group with no
        committed offset there); a partition gone, or a policy of 'none',
        is left out. Not for an event loop: 'latest' under read_committed
        reads the transactions (OffsetReset.end)."""
        c = self._c
        out = {}
        for tp in tps:
            try:
                out[tp] = c._resets.no_commit(tp, c._log.partition(tp.topic, tp.partition))
            except PylogError:
                continue
        return out

    def walk_unfinished(self) -> bool:
        """Whether the last fetch of this read_committed consumer stopped
        at a batch it had no time to decide (its walk budget, with
        ``max_bytes``): fetch again, after the loop's other work, before
        waiting for new records."""
        return self._walk_unfinished

    def topics_unread(self) -> bool:
        """Whether a 'latest' consumer has yet to note the log's topics of
        its first poll (every topic's document: 50 ms with 5,000 topics)."""
        return self._c._resets.first_poll_due()

    def transactions_unread(self) -> bool:
        """Whether this is a read_committed consumer that has not read the
        transactional ids' documents yet (its first fetch that meets a
        transactional batch would parse them all: pylog.transactions.
        ReadMemory keeps them from then on)."""
        c = self._c
        return c._read_committed and c._txn_memory.owners is None

    def slot(self) -> int:
        """The doorbell slot whose rings may bring records (L-3)."""
        return self._c._slots()

    def fetch(self, max_records: int | None, max_bytes: int | None = None,
              pre: Prefetched | None = None, offload: bool = False,
              only: frozenset[TopicPartition] | None = None,
              ) -> list[Any] | Prefetch | None:
        """``poll(0)`` without its housekeeping: the records ready now, or
        None when a group member must look at its group first (its lease
        ran out, or it stopped polling for max_poll_interval_ms): then call
        ``housekeep(force=True)`` and fetch again. Never waits.
        ``max_bytes``: decode about that many bytes at most (at least one
        record; see Fetching._fetch). ``offload``: when the partition it
        starts with holds records each larger than ``max_bytes``, return
        a :class:`Prefetch` instead (nothing fetched): decode it with
        :meth:`prefetch` (in another thread) and pass that as ``pre`` to
        a later fetch, which hands its records out if the cursor is still
        where they were read from (else drops them: fetched again).
        ``only``: fetch from those of the owned partitions alone (the others
        are not read, so nothing of theirs is fetched and left over)."""
        c = self._c
        c._check()
        if not c._subscription and c._pattern is None and c._manual is None:
            raise InvalidArgument("getmany/getone before subscribe() or assign()")
        grouped = c._member is not None and c._manual is None
        if grouped and c._member is not None and (
                c._member.joined and c._interval.exceeded()
                or time.monotonic() > c._member.lease_until):
            return None
        c._poll_thread = threading.get_ident()
        # what the last fetch handed is finished (a driver that keeps some
        # unfinished holds them again after this call): give_back below must
        # rewind this fetch's records only, never the ones held
        c._delivery.next_poll()
        if c._lost_handed:
            c._lost_handed = set()
        recs = c._in_poll(self._read, max_records, max_bytes, pre, offload, only)
        if isinstance(recs, Prefetch):
            return recs
        if recs and grouped and c._member is not None and \
                time.monotonic() > c._member.lease_until:
            c._delivery.give_back()     # (the lease ran out meanwhile: rare)
            return None
        return recs

    def _read(self, max_records: int | None, max_bytes: int | None,
              pre: Prefetched | None, offload: bool,
              only: frozenset[TopicPartition] | None) -> list[Any] | Prefetch:
        """fetch's reading, inside Fetching._in_poll."""
        c = self._c
        owned = None
        if c._member is None and c._manual is None:
            if self._owned_src is not c._topics_resolved:
                self._owned = c._owned()
                self._owned_src = c._topics_resolved
            owned = self._owned
        if only is not None:
            owned = [tp for tp in (c._owned() if owned is None else owned) if tp in only]
        n = c._max_poll if max_records is None else max_records
        big: list[Prefetch] | None = [] if offload else None
        recs = self._take(pre, n) if pre is not None and \
            (only is None or pre.job.tp in only) else None
        if not recs:
            recs = self._fetch_one(n, owned, max_bytes, big)
        self._walk_unfinished = False
        if not recs and not big:
            # an inline fetch (max_bytes) walks past an open transaction a
            # bounded number of batches at a time
            view = c._txn_view(None if max_bytes is None else INLINE_WALK_BATCHES) \
                if c._read_committed else None
            with _gc_paused():
                recs = c._fetch(n, False, [], owned, max_bytes, big, view)
            self._walk_unfinished = view is not None and view.unfinished
        if big:
            return big[0]
        return recs

    def _fetch_one(self, max_records: int, owned: list[TopicPartition] | None,
                   max_bytes: int | None = None, big: list[Prefetch] | None = None,
                   ) -> list[Any]:
        """A consumer that reads exactly one partition, positioned, not
        paused, read_uncommitted (as the blocked poll's Partition.wait_fetch
        path, Fetching._wait_target): the records it committed after the
        cursor in its active segment, in one native call
        (Partition.fetch_committed), handed, finished and counted as
        Fetching._fetch does. [] when that path does not apply or found
        nothing: the caller runs the general fetch. ``max_bytes`` and
        ``big`` as Fetching._fetch's."""
        c = self._c
        if owned is None:
            owned = c._owned()
        if len(owned) != 1 or c._read_committed:
            return []
        tp = owned[0]
        cur = c._cursors.get(tp)
        if cur is None or cur.position < 0 or c._paused and tp in c._paused:
            return []
        part = c._log.open_partitions().get(tp)
        if part is None or part.topic_id != cur.topic_id:
            return []       # (of another incarnation: the general fetch, L-4)
        first = cur.offset
        if max_bytes is not None:
            ahead = records_ahead(part, cur)
            fit = records_that_fit(ahead, max_records, max_bytes)
            if fit <= 0 and big is not None:
                big.append(prefetch_job(tp, part, cur, ahead, max_records,
                                     c._records.row_type))
                return []
            max_records = max(1, fit)
        marked = c._delivery.handing(tp, first)     # (as in Fetching._fetch)
        try:
            got = part.fetch_committed(cur, max_records, with_topic=True,
                                       row_type=c._records.row_type)
        except TopicNotFound:
            c._delivery.not_handed(tp, marked)
            return []       # (the general fetch finds it deleted too)
        except LogClosed:
            c._delivery.not_handed(tp, marked)
            if not dropped_under(c._log, part):
                raise
            return []
        if not got:
            c._delivery.not_handed(tp, marked)
            return got
        recs = c._records.finish(got, False, tp, part, first, False)
        part.shared.count_fetch(len(got))   # P-10, once delivered (never raises)
        return recs

    # -- records larger than an inline fetch may decode ---------------------------------
    @staticmethod
    def prefetch(job: Prefetch) -> Prefetched:
        """Decode what ``job`` names from a copy of its cursor (the
        consumer's own is not touched: this may run in any thread while
        the consumer's fetches go on in another); give the result to a
        later :meth:`fetch`. Raises as Partition.fetch (that fetch then
        runs as usual, and raises what poll would)."""
        # (the snapshot taken with the job, never the live cursor: the
        # consumer's fetches may move that meanwhile, in another thread)
        copy = Cursor(job.offset)
        copy.segment_base, copy.position, copy.base, copy.kept = \
            job.segment_base, job.position, job.base, job.kept
        offset, position = job.offset, job.position
        rows: list[Any] = []
        # in steps (PREFETCH_STEP_BYTES): an event loop of this process
        # waits for one step's copy at most
        while len(rows) < job.max_records:
            got = job.part.fetch(copy, min(job.step, job.max_records - len(rows)),
                                 with_topic=True, row_type=job.row_type)
            if not got:
                break
            rows += got
        return Prefetched(job, offset, position, copy, rows)

    def _take(self, pre: Prefetched, max_records: int) -> list[Any]:
        """The records of ``pre`` as a fetch hands them ([] when the
        consumer moved meanwhile: a seek, a pause, a rebalance, another
        fetch; or when they are more than this fetch wants)."""
        c = self._c
        job = pre.job
        tp, cur = job.tp, job.cursor
        if not pre.rows or len(pre.rows) > max_records or c._cursors.get(tp) is not cur \
                or cur.offset != pre.offset or cur.position != pre.position \
                or c._paused and tp in c._paused or tp not in self.owned():
            return []
        new = pre.cursor
        c._delivery.handed(tp, pre.offset)      # (before the cursor moves: Fetching._fetch)
        cur.offset, cur.segment_base, cur.position, cur.base, cur.kept = \
            new.offset, new.segment_base, new.position, new.base, new.kept
        recs = c._records.finish(pre.rows, False, tp, job.part, pre.offset, False)
        job.part.shared.count_fetch(len(pre.rows))     # P-10 (never raises)
        c._rr += 1
        return recs

    def wait_s(self, remaining: float) -> tuple[float, bool]:
        """(how long a wait may last before housekeeping may be due,
        whether only a topic refresh bounds it: the caller may instead wait
        for its own watch of the Log's topics and call ``topics_changed``)."""
        c = self._c
        if c._member is None and not c._auto_commit:
            return remaining, c._manual is None
        return min(remaining, c._member.wait_s() if c._member else TOPIC_REFRESH_S), False

    def topics_changed(self) -> None:
        """The Log's topics changed: resolve the subscription again now
        (metadata reads)."""
        self._c._refresh_topics(force=True)

    def owned(self) -> set[TopicPartition]:
        """The partitions owned as of the last housekeeping (no metadata
        read, unlike Consumer.assignment)."""
        c = self._c
        c._check()
        return set(c._manual) if c._manual is not None else set(c._owned())

    def unreceived(self, records: list[Any]) -> None:
        """``records`` were fetched (by the last fetch) but the application
        never received them: the positions go back on them, and the batch
        they came from stays unfinished (auto-commit and close do not
        commit the record being handled)."""
        cursors = self._c._cursors
        for tp, off in _floors(records).items():
            cur = cursors.get(tp)
            if cur is not None and cur.offset > off:
                # (not a seek: that would finish it; the same incarnation)
                cursors[tp] = Cursor(off, cur.topic_id)

    def finish_handed(self) -> None:
        """What the last fetch handed is finished (as poll() begins)."""
        self._c._delivery.next_poll()

    def finished_upto(self, tp: TopicPartition, offset: int) -> None:
        """The records of ``tp`` before ``offset`` are finished (pylog.aio's
        ``async for`` moved past them): auto-commit and close commit them,
        as Delivery.committed counts those before a commit."""
        self._c._delivery.committed(tp, offset)

    def hold(self, records: list[Any]) -> None:
        """``records`` (in offset order) were handed before the fetch that
        just ran, and are not finished: auto-commit and close commit none
        of them (pylog.aio's ``async for``, across another task's fetch)."""
        c = self._c
        for tp, off in _floors(records).items():
            # never below what the application committed itself: auto-commit
            # would move the group's offset back
            done = c._committed_pos.get(tp)
            if done is not None and off < done:
                off = done
            cur = c._cursors.get(tp)
            if cur is None or off < cur.offset:
                c._delivery.hold(tp, off)

    def commit_offsets(self, unreceived: list[Any]) -> dict[TopicPartition, int]:
        """What ``commit()`` without offsets commits when ``unreceived``
        records were fetched but not handed on: every received record of
        the owned partitions."""
        c = self._c
        owned = set(c._owned())
        handed = {tp: o for tp, o in c._delivery.handed_positions().items() if tp in owned}
        handed.update((tp, o) for tp, o in _floors(unreceived).items()
                      if tp in owned)
        return handed

    def commit_is_a_store(self, offsets: object) -> bool:
        """Whether ``Consumer.commit(offsets)`` (``offsets``: None, or
        {TopicPartition: int}) is a store into the commit table only (FORMAT.rst
        C-3: no LMDB transaction, no fsync), so that an event loop may run
        it inline: the Log's sync mode is not "always", the consumer has no
        dead-letter topic, a group member has joined (and polled in time),
        and this consumer committed every partition concerned before (so
        its key has a slot; a rebalance forgets what it moved)."""
        c = self._c
        if c._log.sync == "always" or c._dlq is not None or c.group_id is None:
            return False
        member = c._member
        if member is not None and c._manual is None and \
                (not member.joined or c._interval.exceeded()):
            return False
        if offsets is None:
            owned = set(c._owned())
            tps: Iterable[object] = [tp for tp in c._delivery.handed_positions()
                                     if tp in owned]
        elif isinstance(offsets, dict) and all(
                isinstance(o, int) and not isinstance(o, bool) for o in offsets.values()):
            tps = offsets.keys()
        else:
            return False
        done = c._committed_pos
        return all(isinstance(tp, TopicPartition) and tp in done for tp in tps)

    def close(self) -> None:
        """Consumer.close, with the revoke listener called (a driver's
        housekeeping and close run in threads other than its fetches)."""
        self._c._poll_thread = None
        self._c.close()
