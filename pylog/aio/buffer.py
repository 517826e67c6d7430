"""The records an AIOConsumer fetched but did not hand out yet, and those
its ``async for`` loops are on: a mixin of
:class:`pylog.aio.consumer.AIOConsumer`, and :class:`_Iteration`.

``getone`` (and ``async for``) fetch a poll's worth and hand them out one
at a time; the rest stay in the consumer's buffer (a deque, only ever
filtered in place, never replaced: a running ``async for`` holds it) for
the next getone/getmany/``async for``, and ``position``, ``commit()``,
``seek`` and ``pause`` count them as not received. A getmany of some
partitions takes theirs and leaves the others' in their order.

Thread safety: as the AIOConsumer (the tasks of one event loop; an
iteration's ``__del__`` only appends to a list, see _Iteration).
Durability: nothing here writes.
"""

from __future__ import annotations

import functools
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import LogClosed
from ..records import Record, TopicPartition

if TYPE_CHECKING:
    from ..polldriver import PollDriver
    from .consumer import AIOConsumer
    from .joblock import JobLock

#: a wait without a deadline (getone, ``async for``) still wakes this often
#: at most, to re-check the deadline arithmetic; housekeeping bounds it lower
FOREVER_S = 3600.0


class RecordBuffer:
    """The buffer and the records ``async for`` loops are on (see the
    module docstring)."""

    # AIOConsumer's own (set by its __init__)
    _d: PollDriver
    _lock: JobLock
    _buffer: deque[Record]      # fetched by getone, not yet received
    # the running ``async for`` loops, and the records that loops left
    # gave back (appended by _Iteration.__del__: put back by _take_back)
    _iterations: weakref.WeakSet[_Iteration]
    _returned: list[Record]
    # the last record per partition an ``async for`` moved past since the
    # latest fetch (see _settle)
    _done: dict[tuple[str, int], Record]

    def _buffered(self, max_records: int | None,
                  only: frozenset[TopicPartition] | None = None) -> list[Record]:
        """Up to ``max_records`` records from the buffer (none when empty),
        the records given back by ``async for`` loops first; ``only``: of
        those partitions alone, the others' staying in the buffer in their
        order (in place: a running ``async for`` holds the deque)."""
        if self._returned:
            self._take_back()
        buf = self._buffer
        if not buf:
            return []
        n = len(buf) if max_records is None else min(max_records, len(buf))
        if only is None:
            return [buf.popleft() for _ in range(n)]
        got: list[Record] = []
        rest: list[Record] = []
        for r in buf:
            if len(got) < n and (r.topic, r.partition) in only:
                got.append(r)
            else:
                rest.append(r)
        if got:
            buf.clear()
            buf.extend(rest)
        return got

    def _settle(self) -> None:
        """Before a job that commits what is finished (auto-commit, a
        rebalance's release, close, unsubscribe's leave): the records
        ``async for`` loops moved past (``_done``, the last per partition
        since the latest fetch) are finished, as a threaded for loop's
        once it asks for the next, and so are those of their partition
        handed before them; not past a record a loop is still on, or one
        a loop left gave back. In the lock's queue (JobLock.then): a job
        that runs reads what is finished."""
        if not self._done:
            return
        done = list(self._done.values())
        self._done.clear()
        held = [it.in_hand for it in self._iterations] + self._returned
        for r in done:
            upto = r.offset + 1
            for h in held:
                if h is not None and h.offset < upto and h.partition == r.partition \
                        and h.topic == r.topic:
                    upto = h.offset
            self._lock.then(functools.partial(
                self._d.finished_upto, TopicPartition(r.topic, r.partition), upto))

    def _hold(self) -> None:
        """A fetch finished every record handed before it (pylog.delivery):
        keep the ones ``async for`` loops are on, and any still buffered
        (another task's getone), unfinished for auto-commit and close."""
        held = [it.in_hand for it in self._iterations if it.in_hand is not None]
        held += self._buffer
        held += self._returned
        if held:
            held.sort(key=lambda r: r.offset)
            self._d.hold(held)

    def _take_back(self) -> None:
        """Put the records that ``async for`` loops left on back at the
        front of the buffer (unless their partition is no longer this
        consumer's); see :class:`_Iteration`."""
        back, self._returned = self._returned, []
        if self._d.closed:
            return
        owned = self._d.owned()
        back = [r for r in back if TopicPartition(r.topic, r.partition) in owned]
        if not back:
            return
        # The buffer stays grouped by partition, as a fetch fills it (getmany
        # files a slice whose first and last records share a partition under
        # that one partition): each partition's records in offset order,
        # the partitions in the order of their first record, the lowest
        # record given back first.
        back.sort(key=lambda r: r.offset)
        merged = back + list(self._buffer)
        first: dict[tuple[str, int], int] = {}
        for r in merged:
            first.setdefault((r.topic, r.partition), len(first))
        merged.sort(key=lambda r: first[(r.topic, r.partition)])    # (stable)
        self._buffer.clear()        # (in place: a running ``async for`` holds it)
        self._buffer.extend(merged)

    # -- positions ----------------------------------------------------------------------
    def _buffered_first(self) -> dict[TopicPartition, int]:
        """{tp: offset of its first record fetched but not received}."""
        if self._returned:
            self._take_back()
        out: dict[TopicPartition, int] = {}
        for r in self._buffer:
            out.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        return out

    def _unbuffer(self, tps: set[TopicPartition] | None) -> None:
        """Give the records fetched but not received of ``tps`` (None: all)
        back to the consumer (its position goes back on them), and the
        records ``async for`` loops are on with them: a pause or a seek
        finishes nothing, so the one being handled comes again. (The loops
        first, then the records given back: a loop the garbage collector
        frees meanwhile is seen in one or the other.)"""
        def of(r: Record) -> bool:
            return tps is None or TopicPartition(r.topic, r.partition) in tps
        back = [it.in_hand for it in self._iterations
                if it.in_hand is not None and of(it.in_hand)]
        if self._returned:
            self._take_back()
        back += [r for r in self._buffer if of(r)]
        if not back:
            return
        back.sort(key=lambda r: r.offset)       # (each partition's lowest first)
        self._d.unreceived(back)
        self._keep(lambda r: tps is not None and
                   TopicPartition(r.topic, r.partition) not in tps)

    def _keep(self, keep: Callable[[Record], bool]) -> None:
        """Drop the buffered records ``keep`` rejects, in place (a running
        ``async for`` holds the deque), and forget them as the records
        ``async for`` loops are on (a loop left later does not put them
        back: their partition was sought, paused or revoked). The loops
        first, as _unbuffer."""
        for it in self._iterations:
            if it.in_hand is not None and not keep(it.in_hand):
                it.in_hand = None
        if self._returned:
            self._take_back()
        kept = [r for r in self._buffer if keep(r)]
        self._buffer.clear()
        self._buffer.extend(kept)


class _Iteration:
    """One ``async for`` over an AIOConsumer. It hands the buffer's records
    out one at a time and keeps the one its loop body is on (``in_hand``):
    handed, and finished once the loop asks for the next one. Until then
    a fetch (another task's getmany) keeps it unfinished for auto-commit
    and close (AIOConsumer._hold). CPython frees an iteration as soon as
    its loop is left by ``break``, an exception or a cancellation (the
    interpreter drops the iterator then); ``__del__`` gives an unfinished
    ``in_hand`` back, and the consumer's next call puts it at the front of
    the buffer (AIOConsumer._take_back): the next ``async for``/getone/
    getmany starts with it and ``position``/``commit()`` count it as not
    received, as a threaded ``for`` loop left the same way puts its
    position back (pylog.delivery). An iteration freed later (kept by an
    async generator wrapping the loop until the event loop closes it, or
    by a saved traceback) gives its record back then: it comes again
    after records fetched meanwhile, never lost.

    ``__del__`` only appends to a list: it may run from the cyclic garbage
    collector, in the middle of another method of the consumer.

    A coroutine ``__anext__`` per record costs a few tens of nanoseconds
    more than an async generator's step, but an async generator is not
    finalized when its loop is left, only later by a task of the event
    loop's, after the next getmany may have run.

    Thread safety: as its AIOConsumer (one event loop)."""

    __slots__ = ("_c", "_buf", "in_hand", "__weakref__")

    def __init__(self, consumer: AIOConsumer) -> None:
        self._c = consumer
        self._buf = consumer._buffer        # (never rebound: filtered in place)
        self.in_hand: Record | None = None

    def __aiter__(self) -> _Iteration:
        return self

    async def __anext__(self) -> Record:
        done, self.in_hand = self.in_hand, None     # the loop asks for more: finished
        c = self._c
        if done is not None:       # (counted at the next job: RecordBuffer._settle)
            c._done[done.topic, done.partition] = done
        if c._returned:
            c._take_back()
        buf = self._buf
        while not buf:
            d = c._d
            if d.closed:        # (close() empties the buffer)
                raise StopAsyncIteration
            idle = d.idle_s
            try:
                recs = await c._get(FOREVER_S if idle is None else idle, None)
            except LogClosed:   # (the Log closed: ends as a threaded for loop)
                raise StopAsyncIteration from None
            if not recs:
                raise StopAsyncIteration
            buf.extend(recs)
        r = self.in_hand = buf.popleft()
        return r

    def __del__(self) -> None:
        if self.in_hand is not None:
            self._c._returned.append(self.in_hand)
