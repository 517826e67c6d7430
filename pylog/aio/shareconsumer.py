"""AIOShareConsumer: a work queue's consumer (share group, KIP-932) on an
event loop.

It drives a :class:`pylog.shareconsumer.ShareConsumer` (same arguments,
same acquisition, acknowledgement and retry rules). Acquiring records and
applying acknowledgements are stores into the share files' shared memory
(a few microseconds), so they run inline — without waiting for a share
file's lock: another process's consumer may hold it across an fdatasync
(copies to its dead-letter topic with ``sync="always"``: 100 ms and more
a batch), so a partition found locked is skipped, the call looks again
after BUSY_RETRY_S (doubling while it stays locked), and its
acknowledgements (and the acquired offsets without a record, such as
transaction markers, found while another held the file) are applied by
a task that waits for the lock off the loop (_apply_later; a commit
waits for them off the loop, and so does the Log's close()); waiting for
records is a future resolved by the Log's
:class:`~pylog.aio.bridge.DoorbellBridge` (appends and releases of any
process ring it; lock expiries and delays ending ring nothing, so a
wait ends by the earliest lock deadline or delay end the share files
name — ShareConsumer.wait_hint() — and looks again every 50 ms only
while another Log holds records: its process dying rings nothing);
opening the share files, checkpoints (``commit()`` with
``sync="always"``) and ``close()`` run in the Log's executor.

One call's inline work is bounded: a getmany acquires and decodes at
most INLINE_RECORDS (50) records and about INLINE_FETCH_BYTES (128 KiB,
as pylog.aio.consumer's; estimated from the mean record size of each
partition's active segment, pylog.fetching.room) on the loop, whatever
its ``max_records``: a call returns fewer records rather than keep the
loop over 1 ms; the next call goes on. At least one record: a record
larger than INLINE_FETCH_BYTES is still acquired and decoded on the loop,
one per call (about 1 ms a MiB: the known limit of this consumer, whose
acquisition must stay where the call returns, see below).

Nothing is lost to cancellation: records are acquired only at a point from
which the call returns them without awaiting again, so a getone/getmany
cancelled while it waits has acquired nothing (no record held, no delivery
counted). ``getone`` and ``async for`` acquire one record per call.

Known limit: with ``sync="always"`` and a ``dead_letter_topic``, the copy
of an Archived record (a reject, or the delivery limit reached) is
appended with its fdatasync on the loop, in the getone/getmany/commit that
applies it.

Thread safety: use an AIOShareConsumer from the tasks of one event loop.
Durability: as ShareConsumer (``await commit()`` returns once the
acknowledgements are stored as the Log's sync mode says).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..consumerargs import poll_timeout
from ..errors import LogClosed, PylogError, not_transferable
from ..fetching import room
from ..reader import Cursor
from ..records import TopicPartition
from ..shareconsumer import ShareConsumer, ShareRecord
from .consumer import INLINE_FETCH_BYTES

if TYPE_CHECKING:
    from . import AIOLog

T = TypeVar("T")
#: the most records one call acquires and decodes on the loop (accepting
#: the last call's, acquiring, reading and filing a record costs 5 to 9 µs
#: of CPU on a slow machine: 50 take 0.3 to 0.9 ms; 500, the default
#: max_records, took 2.3 to 2.9 ms)
INLINE_RECORDS = 50
#: a cursor that is nowhere: pylog.fetching.room then estimates a record's
#: size from the partition's active segment
_NOWHERE = Cursor(0)
#: the longest a getone (or ``async for``) waits in one go; it then looks again
FOREVER_S = 3600.0
#: how soon a call that found a share file locked looks again (its holder
#: rings the doorbell when it applies acknowledgements, not when it is done
#: acquiring or copying dead letters), doubling up to BUSY_RETRY_MAX_S while
#: it stays locked (a holder stopped, SIGSTOP, must not cost a CPU)
BUSY_RETRY_S = 0.002
BUSY_RETRY_MAX_S = 0.064
#: the waits for a free lock of one _apply_later (a bound: the lock may be
#: taken again between a wait and the apply)
APPLY_TRIES_MAX = 100


class AIOShareConsumer:
    """See the module docstring. Create with :meth:`AIOLog.share_consumer`."""

    def __init__(self, alog: AIOLog, consumer: ShareConsumer) -> None:
        self._alog = alog
        self._c = consumer
        consumer.lock_wait = False      # inline calls: see the module docstring
        self._lock = asyncio.Lock()     # one executor job, or one acquisition, at a time
        self._opened = -1               # partitions whose share files are open
        self._busy_s = 0.0              # the current look-again delay (BUSY_RETRY_S)
        self._later: asyncio.Task[None] | None = None     # see _apply_later

    @property
    def group_id(self) -> str:
        """The share group."""
        return self._c.group_id

    async def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the executor while no acquisition runs; a
        cancelled caller leaves it running (and the consumer locked) to
        its end."""
        return await self._alog._submit_locked(self._lock, fn, *args)

    def _waiting(self, fn: Callable[[], None]) -> Callable[[], None]:
        """``fn`` (a commit, a close) waiting for the share files' locks,
        for a run off the loop (no inline call runs meanwhile: the
        consumer's lock is held): a close must apply every acknowledgement
        before it releases what is left, a commit before it returns."""
        c = self._c

        def job() -> None:
            c.lock_wait = True
            try:
                fn()
            finally:
                c.lock_wait = False
        return job

    def _apply_later(self) -> None:
        """Apply the acknowledgements a lock another process holds kept
        back, once it is free: a task waits for those partitions' locks
        off the loop, holding nothing of this consumer (its calls go on
        delivering the other partitions), then applies them inline. The
        Log's close() waits for it: left pending, the acknowledgements
        would go with the Log, and their records be delivered again."""
        if self._later is not None and not self._later.done():
            return
        task = self._later = asyncio.ensure_future(self._apply_when_free())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())    # (retrieved)
        self._alog._before_close(task)

    async def _apply_when_free(self) -> None:
        c = self._c
        for _ in range(APPLY_TRIES_MAX):
            if c.closed:
                return
            files = c.kept_back()
            if not files:
                return
            await self._alog._submit(_wait_free, files)
            async with self._lock:
                if c.closed:
                    return
                c.apply_pending()
                if not c.busy:
                    return

    async def _open_files(self) -> None:
        """Open the share files of partitions not seen yet, off the loop."""
        log = self._alog.log
        n = sum(log.partitions_for(t) for t in self._c.topics)   # (cached reads)
        if n != self._opened:
            def job() -> None:      # (counts even when the caller was cancelled)
                if self._c.closed:      # (closed by another task meanwhile)
                    return
                self._c.open_files()
                self._opened = n
            await self._locked(job)

    async def _get(self, timeout_s: float, max_records: int) -> list[ShareRecord]:
        c = self._c
        alog = self._alog
        bridge = alog._bridge
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        slot = c.slot
        while True:
            if alog._must_yield():
                await asyncio.sleep(0)
            await self._open_files()
            if self._lock.locked():
                # a job runs (an apply that waits for another process's
                # lock, _apply_later): waited for within this call's timeout
                try:
                    await asyncio.wait_for(self._lock.acquire(),
                                           max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    return []
            else:
                await self._lock.acquire()      # (free: taken without a turn)
            try:
                if c.closed:                # (by another task while this one waited)
                    return []
                seen = bridge.seq(slot)
                recs = c.poll(0, self._inline_room(max_records))
                ahead = None if recs else c.wait_hint()[1]
                # acknowledgements a lock another holds kept back
                stuck = c.busy and bool(c.kept_back())
                if c.busy:          # (a lock another holds: look again soon)
                    self._busy_s = min(2 * self._busy_s, BUSY_RETRY_MAX_S) \
                        if self._busy_s else BUSY_RETRY_S
                    ahead = self._busy_s if ahead is None else min(ahead, self._busy_s)
                else:
                    self._busy_s = 0.0
            finally:
                self._lock.release()
            if stuck:
                self._apply_later()
            if recs:
                return recs
            remaining = deadline - loop.time()
            if remaining <= 0:
                return recs
            await bridge.wait(slot, seen, remaining if ahead is None else
                              min(remaining, ahead))
            if c.closed:
                return []

    def _inline_room(self, max_records: int) -> int:
        """How many records one call may acquire on the loop: at most
        INLINE_RECORDS, and as many as fit in INLINE_FETCH_BYTES at the
        mean record size of the busiest partition (one at least)."""
        n = min(max_records, INLINE_RECORDS)
        c = self._c
        log = self._alog.log
        for t in c.topics:
            for p in range(log.partitions_for(t)):      # (cached reads)
                try:
                    part = log.partition(t, p)
                except PylogError:
                    continue        # (the poll raises what it must)
                n = min(n, room(part, _NOWHERE, n, INLINE_FETCH_BYTES))
        return max(1, n)

    async def getmany(self, *, timeout_ms: int = 0, max_records: int = 500,
                      ) -> dict[TopicPartition, list[ShareRecord]]:
        """Up to ``max_records`` acquired records as {TopicPartition:
        [ShareRecord]}, waiting up to ``timeout_ms`` (default 0) for the
        first; {} when none came. At most INLINE_RECORDS and about
        INLINE_FETCH_BYTES a call (see the module docstring). Applies
        the acknowledgements made since the last call first (see
        ShareConsumer.poll: in explicit mode every record of the last
        call must be acknowledged).
        LogClosed once the consumer is closed, as ShareConsumer.poll."""
        if self._c.closed:
            raise LogClosed("the share consumer is closed")
        recs = await self._get(poll_timeout(None, timeout_ms), max_records)
        out: dict[TopicPartition, list[ShareRecord]] = {}
        for r in recs:
            out.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        return out

    async def getone(self) -> ShareRecord:
        """The next acquired record, waiting as long as it takes. Raises
        LogClosed once the consumer is closed (also by another task
        meanwhile)."""
        while True:
            if self._c.closed:
                raise LogClosed("the share consumer is closed")
            recs = await self._get(FOREVER_S, 1)
            if recs:
                return recs[0]

    def __aiter__(self) -> AIOShareConsumer:
        return self

    async def __anext__(self) -> ShareRecord:
        """Records one at a time until close()."""
        while not self._c.closed:
            recs = await self._get(FOREVER_S, 1)
            if recs:
                return recs[0]
        raise StopAsyncIteration

    def acknowledge(self, record: ShareRecord, type: str = "accept",
                    delay_ms: int | None = None) -> None:
        """As ShareConsumer.acknowledge ("accept", "release" with an
        optional ``delay_ms``, "reject", "renew"); applied at the next
        getone/getmany/commit. Never waits."""
        self._c.acknowledge(record, type, delay_ms)

    async def commit(self) -> None:
        """As ShareConsumer.commit: apply the acknowledgements (inline;
        those of a partition whose share file another holds, off the
        loop once it is free), and with ``sync="always"`` store them in
        LMDB (fsync, off the loop). Raises AcknowledgementError as it does
        (acknowledgements still pending then are applied by the next call).
        A caller cancelled while the commit runs off the loop gets its
        CancelledError once the commit has ended (pylog.aio.finish), as
        AIOConsumer.commit's."""
        if self._alog.log.sync == "always":
            await self._alog._submit_locked(self._lock, self._waiting(self._c.commit),
                                            finish=True)
            return
        await self._lock.acquire()      # no executor job runs meanwhile
        try:
            self._c.commit()
            busy = self._c.busy
        finally:
            self._lock.release()
        if busy:        # acknowledgements left pending: applied off the loop
            await self._alog._submit_locked(self._lock, self._waiting(self._c.commit),
                                            finish=True)

    async def close(self) -> None:
        """Apply the acknowledgements, release every record still held
        (Available to the others at once), leave. Idempotent."""
        if self._c.closed:
            return
        await self._alog._close_client(self._waiting(self._c.close), self._lock)

    def __reduce__(self) -> Any:
        raise not_transferable(self)   # (its Log's files belong to this process)

    async def __aenter__(self) -> AIOShareConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _wait_free(files: list[Any]) -> None:
    """Wait (in an executor thread) until none of ``files``' locks is held
    (Q-2): taken and let go at once."""
    for f in files:
        with f.locked():
            pass
