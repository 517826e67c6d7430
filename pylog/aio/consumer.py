"""AIOConsumer: an aiokafka-shaped consumer on an event loop.

It drives a :class:`pylog.consumer.Consumer` (same arguments, same delivery
rules) so that no call blocks the loop: a fetch of records already on disk
runs inline (a few microseconds: no lock, no fsync; a consumer of one
partition decodes what a wake brought in one native call, as the blocked
poll does), decoding about INLINE_FETCH_BYTES (128 KiB) at most: a
getmany of larger records returns fewer of them (one at least), as
estimated from each partition's mean record size before the fetch
(pylog.fetching.room: where sizes change, one record too many may be
taken). Records each larger than INLINE_FETCH_BYTES are decoded in the
executor instead (up to OFF_LOOP_FETCH_BYTES, 16 MiB, one record at
least), from a copy of the cursor: the consumer's position moves only
when a later fetch, on the loop, takes them (PollDriver.fetch's ``pre``),
and only if nothing moved it meanwhile (else they are decoded again);
waiting for new ones is a future resolved by the Log's
:class:`~pylog.aio.bridge.DoorbellBridge`; group housekeeping (join,
heartbeat, rebalance, auto-commit; ``start()``'s join), commits,
``seek_to_beginning``/``seek_to_end`` (which may join a group), and
close — metadata transactions that may fsync — run in the Log's executor,
one at a time per consumer, and so does the file work of a
partition's first fetch (PollDriver.prepare: listing, opening and
mapping its segment, reading its index, milliseconds in all; also after
a seek). ``seek`` is a plain call: made while such a job runs or waits,
its position moves in its turn, after the jobs called before it and
before those called after it (pylog.aio.joblock), so that no job
undoes it or reads it early; position() and the next getmany see it at
once.

Nothing is lost to cancellation: records are fetched only at a point from
which the call returns them without awaiting again, so a getone/getmany
cancelled while it waits has fetched nothing (records it had decoded in
the executor are kept for the next call, which takes them, position
unmoved until then). ``getone`` (and ``async
for``) fetch a poll's worth and hand them out one at a time; the rest stay
in the consumer's buffer for the next getone/getmany/``async for``, and
``position``, ``commit()``, ``seek`` and ``pause`` count them as not
received. ``async for`` pops the buffer (which is only ever filtered in
place, never replaced) through an iteration object that knows the record
its loop body is on: a loop left by ``break``, an exception or a
cancellation puts that record back at the front of the buffer, as a
threaded ``for`` loop puts its position back on it.

``getmany(*partitions)``/``getone(*partitions)`` fetch from those
partitions alone (PollDriver.fetch's ``only``) and take theirs from the
buffer, leaving the others' there (pylog.aio.buffer); nothing is paused.
``unsubscribe()`` drops the subscription and the buffer on the loop and
leaves the group in an executor job under the lock, which the calls
after it wait for (see its docstring).

Delivery (pylog.delivery, as ``poll``): the records a getmany returned are
finished when the next getmany/getone that must fetch begins (before its
housekeeping, as poll's); the record an ``async for`` is on, once the
loop asks for the next one;
auto-commit and close commit finished records only; ``commit()`` without
offsets commits every record received.

Thread safety: use an AIOConsumer from the tasks of one event loop.
Durability: as Consumer.commit (``await commit()`` returns once the
offsets are stored as the Log's sync mode says).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..consumer import Consumer
from ..consumerargs import MAX_POLL_RECORDS_MAX, as_tps, poll_timeout
from ..errors import InvalidArgument, LogClosed, PylogError, not_transferable
from ..fetching import PREFETCH_MAX_BYTES, Prefetch, Prefetched
from ..polldriver import READS, WRITES, PollDriver
from ..records import Record, TopicPartition
from .buffer import FOREVER_S, RecordBuffer, _Iteration
from .finish import to_the_end
from .joblock import JobLock
from .listener import IN_LISTENER, Relay
from .offsets import OffsetQueries

if TYPE_CHECKING:
    from . import AIOLog

T = TypeVar("T")
_logger = logging.getLogger("pylog.aio")
#: the most bytes (batches as stored: keys, values, headers and framing) a
#: fetch decodes on the loop, as estimated before it (pylog.fetching.room):
#: decoding and copying them takes about 1 ms a MiB on a slow machine, so
#: 128 KiB keeps a getmany's loop callback well under 1 ms; a getmany of
#: larger records returns fewer records per call (still one at least)
INLINE_FETCH_BYTES = 128 << 10
#: the most bytes a fetch of records each larger than INLINE_FETCH_BYTES
#: decodes in the executor for one getmany (one record at least)
OFF_LOOP_FETCH_BYTES = PREFETCH_MAX_BYTES


class AIOConsumer(RecordBuffer, OffsetQueries):
    """See the module docstring. Create with :meth:`AIOLog.consumer`.
    The buffer of records fetched but not handed out is
    :class:`~pylog.aio.buffer.RecordBuffer`'s, the offset queries are
    :class:`~pylog.aio.offsets.OffsetQueries`'."""

    def __init__(self, alog: AIOLog, consumer: Consumer, relay: Relay) -> None:
        self._alog = alog
        self._c = consumer
        self._d = PollDriver(consumer)
        self._relay = relay
        self._lock = JobLock()      # one executor job, or one fetch, at a time
        # seeks made while jobs ran or waited, each applied in its turn in
        # the lock's queue (JobLock.then; [tp, offset, topic id], in call order)
        self._seeks: list[list[Any]] = []
        self._buffer: deque[Record] = deque()   # fetched by getone, not yet received
        # the running ``async for`` loops, and the records that loops left
        # gave back (appended by _Iteration.__del__: put back by _take_back)
        self._iterations: weakref.WeakSet[_Iteration] = weakref.WeakSet()
        self._returned: list[Record] = []
        self._done: dict[tuple[str, int], Record] = {}     # (RecordBuffer._settle)
        # the first fetches' file work is done off the loop (PollDriver.prepare)
        self._prepared = False
        # records decoded off the loop (too large for it), not yet fetched:
        # the next fetch takes them if the consumer has not moved meanwhile
        self._pre: Prefetched | None = None
        self._pre_failed = False    # the last prefetch raised: fetch inline once
        # unsubscribe(): its leave (a job under the lock, which the next
        # call that needs the lock waits for), and how many there were (a
        # getmany running meanwhile returns what it has: nothing)
        self._leave: asyncio.Task[None] | None = None
        self._unsubs = 0
        self._lso: dict[TopicPartition, int] = {}     # (OffsetQueries')
        self._lso_looks: set[TopicPartition] = set()
        # a consumer left unclosed when its loop ends (a program that
        # crashed and runs again, asyncio.run twice) can never poll again:
        # its member must expire by its session, not be heartbeaten in the
        # background until max_poll_interval_ms while others wait for its
        # partitions (the loop held weakly: the consumer may outlive it)
        loop = weakref.ref(alog._loop or asyncio.get_running_loop())

        def ended() -> bool:
            lp = loop()
            return lp is None or lp.is_closed()
        self._d.polls_end_with(ended)

    # -- off the loop -------------------------------------------------------------------
    async def _locked(self, fn: Callable[..., T], *args: Any, finish: bool = False) -> T:
        """``fn(*args)`` in the executor while no fetch runs (AIOLog.
        _submit_locked: a cancelled caller leaves it running, the consumer
        locked, to its end; with ``finish`` it waits for that end). Called
        from a rebalance listener (which runs while this consumer's
        housekeeping holds the lock), ``fn`` runs in the thread that waits
        for the listener instead."""
        if IN_LISTENER.get() is self:
            job = self._relay.run_in_waiting_thread(fn, *args)
            return await (to_the_end(job) if finish else job)
        await self._left()
        return await self._alog._submit_locked(self._lock, fn, *args, finish=finish)

    async def _left(self) -> None:
        """Wait for the leave of the last unsubscribe() if it still runs:
        every call that needs the consumer's lock or fetches goes after it
        (a group member is in its group until it is done)."""
        leave = self._leave
        if leave is not None and not leave.done():
            await asyncio.shield(leave)

    async def _housekeep(self, kind: int, force: bool = False) -> None:
        d = self._d
        # (in a finally: a rebalance listener's exception comes once the
        # partitions moved, and the buffered records of those taken away
        # must not be handed out after it)
        try:
            if kind == READS:
                d.housekeep()           # a topic refresh: metadata reads only
            else:
                self._settle()
                try:
                    await self._locked(d.housekeep, force)
                finally:
                    self._prepared = False  # (a rebalance may have assigned partitions)
        finally:
            self._drop_unowned()

    def _drop_unowned(self) -> None:
        """After housekeeping (a rebalance may have taken partitions away):
        forget the buffered and in-hand records of partitions not owned."""
        if self._buffer or self._iterations or self._returned:
            owned = self._d.owned()
            self._keep(lambda r: TopicPartition(r.topic, r.partition) in owned)

    # -- fetching ---------------------------------------------------------------------
    async def _get(self, timeout_s: float, max_records: int | None,
                   only: frozenset[TopicPartition] | None = None) -> list[Record]:
        self._alog._check_fork()        # (ForkedLogError: the parent's records)
        got = self._buffered(max_records, only)
        if got:
            return got
        if IN_LISTENER.get() is self:
            raise InvalidArgument("getone/getmany inside a rebalance listener callback; "
                                  "return from it first")
        unsubs = self._unsubs
        await self._left()
        # What was handed before is finished now, as at the start of poll():
        # before the housekeeping below, so that its auto-commit and a
        # rebalance's release commit it (the next owner does not get it
        # again); the records async for loops are on stay unfinished. Not
        # while another task's executor job (housekeeping) runs: it reads
        # the finished records in its thread, between these two steps.
        if self._lock.locked():
            async with self._lock:
                pass
        self._d.finish_handed()
        self._done.clear()      # (finished now, with the rest)
        if self._iterations or self._returned or self._buffer:
            self._hold()
        d = self._d
        alog = self._alog
        bridge = alog._bridge
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        waited = False
        while True:
            # (after a wait the loop has turned: no need to yield to it)
            if not waited and alog._must_yield():
                await asyncio.sleep(0)
            kind = d.housekeeping(time.monotonic())
            if kind:
                try:
                    await self._housekeep(kind)
                except LogClosed:
                    if waited and d.closed:
                        return []   # closed by another task while this one waited
                    raise
            if not self._prepared:
                self._prepared = True
                todo = d.unpositioned()
                # the first fetch's file work (milliseconds) off the loop,
                # and a read_committed consumer's first parse of every
                # transactional id's document (5 ms with 1,000 ids), and a
                # 'latest' consumer's read of every topic's document
                if todo or d.transactions_unread() or d.topics_unread():
                    await self._locked(d.prepare, todo)
            if self._lock.locked():     # an executor job runs: after it
                async with self._lock:
                    pass
                if waited and d.closed:
                    return []
                if self._seeks and self._lock.locked() or not self._prepared:
                    continue    # after the seeks made meanwhile (their file work off the loop)
            # (no await from here to the return: no job starts meanwhile)
            if self._unsubs != unsubs or only is not None and \
                    only.isdisjoint(self.assignment()):
                return []       # unsubscribed, or the partitions asked for taken
            if self._returned or self._buffer:  # (given back while this one awaited)
                got = self._buffered(max_records, only)
                if got:
                    return got
            # the slot's count before the fetch: a ring after it wakes us
            slot = d.slot()
            seen = bridge.seq(slot)
            pre = self._pre
            if pre is not None and (only is None or pre.job.tp in only):
                self._pre = None
            else:
                pre = None      # (another partition's: kept for a later call)
            offload, self._pre_failed = not self._pre_failed, False
            try:
                recs = d.fetch(max_records, INLINE_FETCH_BYTES, pre, offload, only)
            finally:
                if self._iterations or self._buffer or self._returned:
                    self._hold()
            if isinstance(recs, Prefetch):      # too large for the loop
                mine = await self._prefetch(recs)
                if d.closed:
                    return []       # closed by another task meanwhile
                if mine is not None and self._unsubs == unsubs:
                    # this call's own records, for its next fetch: they
                    # replace what a cancelled call's prefetch left (of
                    # another partition, say), or this call would start
                    # its prefetch again and again
                    self._pre = mine
                elif not self._pre_failed and loop.time() >= deadline:
                    return []       # (nothing to take: not again past the deadline)
                continue            # (housekeeping may be due by now)
            if recs is None:        # the group first (lease, poll interval)
                await self._housekeep(WRITES, force=True)
                continue
            if recs:
                return recs
            remaining = deadline - loop.time()
            if remaining <= 0:
                return recs
            if d.walk_unfinished():
                # a read_committed walk past an open transaction goes on
                # at the next fetch, after the loop's other work
                await asyncio.sleep(0)
                continue
            wait, watch = d.wait_s(remaining)
            also = alog._topics_changed() if watch else None
            await bridge.wait(slot, seen, wait, also)
            waited = True
            if d.closed:
                return []       # closed by another task while this one waited
            if also is not None and also.done():
                d.topics_changed()      # metadata reads

    async def _prefetch(self, job: Prefetch) -> Prefetched | None:
        """Decode the records of ``job`` (each larger than an inline fetch
        may decode) in the executor, from a copy of the cursor; return
        them (None if that failed: self._pre_failed) for the caller's
        next fetch, which hands them out if the consumer has not moved
        meanwhile. The consumer's own state is not touched off the loop,
        so a cancelled caller loses nothing: the records are kept for the
        next getone/getmany (self._pre, unless that holds some already;
        or, once dropped, they are fetched again from the unmoved
        cursor)."""
        def done(f: asyncio.Future[Prefetched]) -> None:
            # on the loop, whether or not the caller is still there
            if f.cancelled() or f.exception() is not None:
                self._pre_failed = True     # (the inline fetch raises it)
            elif self._pre is None and not self._d.closed:
                self._pre = f.result()
        try:
            fut = self._alog._submit(PollDriver.prefetch, job)
        except LogClosed:
            self._pre_failed = True
            return None
        fut.add_done_callback(done)
        try:
            return await asyncio.shield(fut)
        except Exception:   # (done() noted it: the inline fetch raises it)
            return None

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        """Up to ``max_records`` (default: ``max_poll_records``) records as
        {TopicPartition: [Record]}, waiting up to ``timeout_ms`` (default 0)
        for the first; {} when none came.

        ``partitions`` (aiokafka's): records of those alone, each of which
        must be assigned (InvalidArgument otherwise, as seek). The others'
        records already fetched stay in the consumer's buffer for later
        calls, in their order, and nothing more of theirs is fetched: the
        fetch itself reads only these partitions (no pause: other tasks'
        calls see nothing change). {} once a rebalance took all of them.

        A getmany running when another task calls unsubscribe() returns {}."""
        only = self._only(partitions, "getmany")
        if max_records is not None and (
                isinstance(max_records, bool) or not isinstance(max_records, int)
                or not 1 <= max_records <= MAX_POLL_RECORDS_MAX):
            raise InvalidArgument(f"max_records={max_records!r}; expected an int in "
                                  f"[1, {MAX_POLL_RECORDS_MAX}]")
        recs = await self._get(poll_timeout(None, timeout_ms), max_records, only)
        if not recs:
            return {}
        first, last = recs[0], recs[-1]
        # a partition's records are one run, so first and last of the same
        # partition means all are: the common case costs no per-record work
        if first.partition == last.partition and first.topic == last.topic:
            return {TopicPartition(first.topic, first.partition): recs}
        out: dict[TopicPartition, list[Record]] = {}
        key: tuple[str, int] | None = None
        bucket: list[Record] = []
        for r in recs:           # records come grouped by partition
            if key is None or r.partition != key[1] or r.topic != key[0]:
                key = (r.topic, r.partition)
                bucket = out.setdefault(TopicPartition(*key), [])
            bucket.append(r)
        return out

    async def getone(self, *partitions: TopicPartition) -> Record:
        """The next record, waiting as long as it takes. Raises LogClosed
        once the consumer is closed (also by another task meanwhile).
        ``partitions`` (aiokafka's): the next record of those, as
        getmany's; InvalidArgument once one is not assigned (also when a
        rebalance takes it while this waits)."""
        while True:
            only = self._only(partitions, "getone")
            got = self._buffered(1, only)
            if got:
                return got[0]
            self._d.check()
            self._buffer.extend(await self._get(FOREVER_S, None, only))

    def _only(self, partitions: tuple[Any, ...], what: str
              ) -> frozenset[TopicPartition] | None:
        """The partitions a getmany/getone is limited to (None: all),
        checked to be assigned."""
        if not partitions:
            return None
        return frozenset(_check_assigned(self, partitions, what, any_consumer=True))

    def __aiter__(self) -> AsyncIterator[Record]:
        """``async for record in consumer``: records one at a time until
        close(), or until none came for ``consumer_timeout_ms`` (default
        None: never). The records stay in the consumer's buffer until
        handed out, and a loop left by ``break``, an exception or a
        cancellation puts the record it was on back in front of them: the
        next ``async for`` (or getone/getmany) starts with it (see
        :class:`_Iteration`)."""
        it = _Iteration(self)
        self._iterations.add(it)
        return it

    async def __anext__(self) -> Record:
        """The next record, as ``async for`` hands them out (for
        ``anext(consumer)``); StopAsyncIteration once closed or idle for
        ``consumer_timeout_ms`` (or once the Log closed, as ``async for``)."""
        if self._d.closed:
            raise StopAsyncIteration
        if self._returned:
            self._take_back()
        if self._buffer:
            return self._buffer.popleft()
        idle = self._d.idle_s
        try:
            recs = await self._get(FOREVER_S if idle is None else idle, None)
        except LogClosed:
            raise StopAsyncIteration from None
        if not recs:
            raise StopAsyncIteration
        self._buffer.extend(recs)
        return self._buffer.popleft()

    async def position(self, tp: TopicPartition) -> int:
        """The offset of the next record getone/getmany returns for ``tp``
        (after the leave of an unsubscribe(), which may commit: a position
        not known yet is read from the committed offset)."""
        if IN_LISTENER.get() is not self:
            await self._left()
        return self._position(tp)

    def _position(self, tp: TopicPartition) -> int:
        """position(), not waiting for an unsubscribe()'s leave."""
        tp = TopicPartition(*tp)
        for seek in reversed(self._seeks):      # (made while a job ran: not applied yet)
            if seek[0] == tp:
                return int(seek[1])
        first = self._buffered_first().get(tp)
        return first if first is not None else self._c.position(tp)

    async def committed(self, tp: TopicPartition) -> int | None:
        """The group's committed offset of ``tp`` (None without one), after
        the leave of an unsubscribe() (which may commit)."""
        if IN_LISTENER.get() is not self:
            await self._left()
        got = self._c.committed(tp)
        return got if got is None or isinstance(got, int) else None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        """Read ``tp`` from ``offset`` next. A group member must own ``tp``
        (after ``await start()`` or its first getone/getmany; as aiokafka,
        InvalidArgument otherwise). The next getone/getmany (one waiting
        now too) and position() see it at once. Made while an executor
        job of this consumer runs or waits, the position moves right
        after the jobs called before it (pylog.aio.joblock): the job
        running does not undo it (a rebalance, a seek to an end), and a
        commit() called before it does not commit it. A partition that a
        rebalance takes meanwhile drops it."""
        _check_assigned(self, (tp,), "seek")
        tp, offset, topic_id = self._d.seek_target(tp, offset)  # (a refused seek drops nothing)
        key = tuple(tp)
        self._keep(lambda r: (r.topic, r.partition) != key)
        if IN_LISTENER.get() is self:   # (its housekeeping waits for the callback)
            self._d.set_position(tp, offset, topic_id)
            self._prepared = False
            return
        seek = [tp, offset, topic_id]
        self._seeks.append(seek)
        self._lock.then(lambda: self._apply_seek(seek))

    def _apply_seek(self, seek: list[Any]) -> None:
        """Move to a seek's offset, on the loop, no job running (JobLock.then)."""
        if not any(s is seek for s in self._seeks):
            return      # (dropped by unsubscribe())
        self._seeks.remove(seek)
        try:
            if seek[0] in self._d.owned():
                self._d.set_position(*seek)
                self._prepared = False      # (its file work: off the loop)
        except PylogError:
            pass        # (closed meanwhile)

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        """Read the partitions (default: all assigned) from their log start."""
        await self._seek_ends(self._c.seek_to_beginning, partitions)

    async def _seek_ends(self, seek: Callable[..., None], partitions: tuple[Any, ...]
                         ) -> None:
        tps = set(as_tps(partitions)) if partitions else None
        self._unbuffer(tps)
        await self._locked(seek, *partitions)
        self._prepared = False      # (their file work: off the loop)
        # what another task fetched from the old positions while this one
        # waited for the lock; and a join or rebalance may have run
        self._keep(lambda r: tps is not None and
                   TopicPartition(r.topic, r.partition) not in tps)
        self._drop_unowned()

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        """Read only records appended from now on (default: all assigned)."""
        await self._seek_ends(self._c.seek_to_end, partitions)

    def pause(self, *partitions: TopicPartition) -> None:
        """Fetch nothing more from ``partitions`` until resume(); their
        records fetched but not received are fetched again after it (a
        pause finishes nothing: auto-commit does not commit the record
        being handled)."""
        _check_assigned(self, partitions, "pause")
        self._unbuffer(set(as_tps(partitions)))
        self._c.pause(*partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        """Fetch ``partitions`` again (each must be owned, as pause)."""
        _check_assigned(self, partitions, "resume")
        self._c.resume(*partitions)

    def paused(self) -> set[TopicPartition]:
        """The partitions paused with pause() (a plain call)."""
        return self._c.paused()

    @property
    def group_id(self) -> str | None:
        """The consumer group (None for a consumer without one)."""
        return self._c.group_id

    async def _handed_out(self) -> dict[TopicPartition, int]:
        """{tp: position} of the assigned partitions as getone/getmany hand
        records out, read under the consumer's lock (no housekeeping job
        moves a cursor meanwhile): pylog.aio.txnproducer's offsets."""
        await self._left()      # (not under the lock: the leave takes it)
        async with self._lock:
            return {tp: self._position(tp) for tp in self.assignment()}

    def _group_member(self) -> Any:
        """The group membership a transaction's offsets are checked against
        (pylog.aio.txnproducer; None without a group), as
        IdempotentProducer.send_offsets_to_transaction reads it of a
        Consumer."""
        return getattr(self._c, "_member", None)

    def assignment(self) -> set[TopicPartition]:
        """The partitions this consumer owns as of its last housekeeping
        (a group's rebalance shows at the next getone/getmany); none while
        a group member leaves after unsubscribe()."""
        if self._c._manual is None and self._group_member() is not None and \
                self._leave is not None and not self._leave.done():
            return set()
        return self._d.owned()

    def subscribe(self, topics: list[str] | tuple[str, ...] = (), pattern: str | None = None,
                  listener: object | None = None) -> None:
        """Subscribe to ``topics`` and/or a regex ``pattern`` (as
        Consumer.subscribe); ``listener`` as :meth:`AIOLog.consumer`'s."""
        self._relay.install(listener)
        self._c.subscribe(topics, pattern, self._relay if listener is not None else None)

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Consume exactly these partitions, without group membership."""
        self._c.assign(partitions)
        self._prepared = False      # (their first fetch's file work: off the loop)

    def subscription(self) -> set[str]:
        """The subscribed topic names (a plain call)."""
        return self._c.subscription()

    def unsubscribe(self) -> None:
        """Drop the subscription or assignment (aiokafka's; a plain method).

        On the loop, at once: ``subscription()`` and ``assignment()`` are
        empty; the records fetched but not received (the buffer, the
        record an ``async for`` loop is on, a prefetch) are dropped, never
        committed: a later subscribe()/assign() fetches them again from
        the committed offset. A getmany or ``async for`` waiting in
        another task returns {} or ends; a fetch that starts before a new
        subscribe()/assign() raises InvalidArgument (a getone too).

        Off the loop, as an executor job under the consumer's lock
        (PollDriver.leave): with auto-commit, the finished records'
        offsets (what close() would commit) are committed and a group
        member leaves its group, in one metadata transaction that may
        fsync; the positions and pauses are forgotten. Every later call
        that fetches, reads a position or a committed offset, or needs the
        lock (getmany, getone, ``async for``, position, committed, commit,
        start, close, the seeks to an end, the offset queries) waits for
        it first, so a subscribe() right after joins again once the old
        membership is gone. The rebalance listener is not called (as
        aiokafka's, which drops it; Consumer.unsubscribe calls its
        revoke). Not inside a listener callback (InvalidArgument)."""
        if IN_LISTENER.get() is self:
            raise InvalidArgument("unsubscribe inside a rebalance listener callback; "
                                  "return from it first")
        self._settle()
        leave = self._d.unsubscribe()       # (raises LogClosed once closed)
        self._unsubs += 1
        self._keep(lambda r: False)
        self._seeks.clear()
        self._pre = None
        self._prepared = False      # (a next assignment's file work: off the loop)
        self._lso.clear()
        self._leave = asyncio.get_running_loop().create_task(self._leave_group(leave))
        self._alog._before_close(self._leave)   # (a Log closed now would refuse it)

    async def _leave_group(self, leave: Callable[[], None]) -> None:
        """unsubscribe()'s job: ``leave`` in the executor under the lock
        (after the jobs queued before it; an unsubscribe() before this one
        queued its own first)."""
        try:
            await self._alog._submit_locked(self._lock, leave)
        except Exception as exc:    # (the Log closed; a failed commit: redelivered)
            _logger.warning("consumer group %r: unsubscribe() did not leave cleanly: "
                            "%r", self.group_id, exc)

    # -- commits and life cycle ---------------------------------------------------------
    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        """Commit ``offsets``, or every record received (see Consumer.commit).
        A commit that is a store into the commit table (PollDriver.
        commit_is_a_store: a partition this consumer committed before, the
        sync mode not "always") runs inline, in microseconds; any other
        (a first commit, a group join, an fsync) runs off the loop.
        Cancelled before its turn (behind this consumer's other jobs), it
        commits nothing; cancelled once it runs off the loop, it runs to
        its end and the CancelledError comes only then, so committed()
        after it is exact (pylog.aio.finish)."""
        if IN_LISTENER.get() is not self:
            await self._left()
        if self._returned:
            self._take_back()
        if offsets is None and self._buffer:
            offsets = self._d.commit_offsets(list(self._buffer))
            owned = self._d.owned()
            offsets.update((tp, off) for tp, off, _ in self._seeks if tp in owned)
        if self._d.commit_is_a_store(offsets) and IN_LISTENER.get() is not self:
            # under the lock: after the jobs and seeks called before, and
            # before a seek made from now on (its turn comes after this)
            async with self._lock:
                if self._d.commit_is_a_store(offsets):
                    self._c.commit(offsets)
                else:   # (a seek or rebalance in the queue before it changed that)
                    await to_the_end(self._alog._submit(self._c.commit, offsets))
            return
        await self._locked(self._c.commit, offsets, finish=True)

    async def start(self) -> None:
        """Join the group now, off the loop (aiokafka's start connects);
        a group member joins at its first getone/getmany otherwise.
        Nothing to do without a group."""
        if self._group_member() is not None and self._c._manual is None:
            await self._housekeep(WRITES, force=True)

    async def close(self) -> None:
        """Commit what was finished (auto-commit: the batches before the
        latest getmany/getone fetch, and the records an ``async for``
        moved past), leave the group, release. Idempotent."""
        if self._d.closed:
            return
        await self._left()      # (its commit and leave first, once)
        if self._d.closed:
            return
        # The records fetched but not received are dropped, not sought back
        # to: seeking would count the batch they came from as finished, and
        # a close on an exception must not commit the record being handled.
        self._settle()
        self._buffer.clear()
        self._pre = None
        await self._alog._close_client(self._d.close, self._lock)

    stop = close        # aiokafka's name

    def __reduce__(self) -> Any:
        raise not_transferable(self)   # (its Log's files belong to this process)

    async def __aenter__(self) -> AIOConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _check_assigned(c: AIOConsumer, partitions: tuple[Any, ...], what: str,
                   any_consumer: bool = False) -> list[TopicPartition]:
    """``partitions`` as TopicPartitions, each owned by ``c``.
    seek/pause/resume run on the loop: a group member not yet given
    one of ``partitions`` would first join or rebalance (a metadata
    transaction that may fsync), which they must not wait for here
    (other consumers: the Consumer checks; ``any_consumer``: here)."""
    tps = as_tps(partitions)
    member = c._group_member() is not None and c._c._manual is None
    if not member and not any_consumer:
        return tps
    owned = c.assignment()
    for tp in tps:
        if tp not in owned:
            raise InvalidArgument(
                f"{what} {tp}: not assigned to this consumer (it owns "
                f"{sorted(owned)}); " + (
                    "a group member joins its group at its first getone/getmany "
                    "or at `await consumer.start()`, and takes a rebalance at "
                    "its next getone/getmany" if member else
                    "assign() it or subscribe() to its topic first"))
    return tps
