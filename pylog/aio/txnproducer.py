"""AIOTransactionalProducer: transactions and the idempotent producer on an
event loop, with aiokafka's names (``begin_transaction``,
``commit_transaction``, ``abort_transaction``, ``transaction()``,
``send_offsets_to_transaction``).

It drives a :class:`pylog.txnproducer.IdempotentProducer`, made at
``await producer.start()`` or at the first call (that is when the
producer id is fetched and an older instance of the ``transactional_id``
fenced: an LMDB write). Every call runs in the Log's executor, never on
the loop — a transaction's first send to a partition registers it in
LMDB (X-6), its commit point fsyncs (X-6, M-8), and an idempotent send
checks the partition's producer state (X-3) — one at a time, in the
order the calls were made, so concurrent sends to a partition keep their
order. A call that was cancelled before its turn never runs; one that
started runs to its end. A cancelled ``send`` stops waiting at once; a
cancelled ``begin_transaction``, ``commit_transaction``,
``abort_transaction`` or ``send_offsets_to_transaction`` that started
waits for its end before the CancelledError (a wait_for's TimeoutError)
goes on (pylog.aio.finish): a commit then has been made or refused, and
the consumer's ``committed()`` says which, so that seeking back to the
committed offsets after the error processes no input twice.

``async with producer.transaction():`` commits when the block ends and,
when it raises (a cancellation included) or the commit refuses it,
aborts the open transaction before the error goes on, unless this
producer was fenced; a cancellation that lands before the commit's turn
aborts it too.

``send_offsets_to_transaction(consumer)`` with an :class:`AIOConsumer`
takes, under that consumer's lock, the positions of the records it
handed out (those it fetched ahead are not counted as processed) and its
group membership, which the commit point checks (CommitFailedError if
the group moved its partitions meanwhile).

Thread safety: use it from the tasks of one event loop (the producer
under it is thread-safe). Durability: as the transactional producer's
(the commit point is durable per the Log's sync mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import not_transferable
from ..producer import Headers, RawRecord
from ..records import RecordMetadata, TopicPartition
from .batch import BatchBuilder, BatchSending, send_builder
from .consumer import AIOConsumer
from .finish import to_the_end

if TYPE_CHECKING:
    from ..txnproducer import IdempotentProducer
    from . import AIOLog

__all__ = ["AIOTransactionalProducer"]


class AIOTransactionalProducer(BatchSending):
    """See the module docstring. Create with :meth:`AIOLog.producer` and
    ``transactional_id=`` (or ``idempotent=True``)."""

    def __init__(self, alog: AIOLog, make: Callable[[], IdempotentProducer],
                 transactional_id: str | None, *,
                 key_serializer: Callable[[Any], Any] | None = None,
                 value_serializer: Callable[[Any], Any] | None = None) -> None:
        self._alog = alog
        # (the producer made by ``make`` has them too; these are create_batch's)
        self._kser = key_serializer
        self._vser = value_serializer
        self._make = make
        self._p: IdempotentProducer | None = None
        self._lock = asyncio.Lock()       # one call at a time, in call order
        self._closed = False
        self._serial = 0        # transactions begun (in the executor, under the lock)
        self.transactional_id = transactional_id

    def _producer(self) -> IdempotentProducer:
        """(in the executor, under the lock) the producer, made at first use."""
        if self._p is None:
            self._p = self._make()
        return self._p

    async def _call(self, method: str, *args: Any, finish: bool = False,
                    **kwargs: Any) -> Any:
        """The producer's ``method`` off the loop, under the lock (``finish``:
        a cancelled caller waits for its end, AIOLog._submit_locked)."""
        def run() -> Any:
            return getattr(self._producer(), method)(*args, **kwargs)
        return await self._alog._submit_locked(self._lock, run, finish=finish)

    async def start(self) -> None:
        """Make the producer now (producer id, fencing older instances of
        the ``transactional_id``), off the loop; otherwise the first call
        does."""
        await self._alog._submit_locked(self._lock, self._producer)

    async def send(self, topic: str, value: object = None, key: object = None, *,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Headers = None) -> RecordMetadata:
        """Append one record (in the open transaction, if one is: not
        visible to read_committed consumers before it commits)."""
        md: RecordMetadata = await self._call("send", topic, value, key, headers=headers,
                                              partition=partition,
                                              timestamp_ms=timestamp_ms)
        return md

    send_and_wait = send        # aiokafka's name for awaiting delivery

    async def _send_builder(self, batch: BatchBuilder, topic: str, *,
                            partition: int | None = None
                            ) -> asyncio.Future[RecordMetadata | None]:
        async def send(records: list[RawRecord], given: tuple[int, int] | None
                       ) -> list[RecordMetadata]:
            mds: list[RecordMetadata] = await self._call(
                "_send_built", topic, partition, records, given)
            return mds
        return await send_builder(batch, send)

    async def _send_items(self, topic: str, items: Iterable[Any], *,
                          partition: int | None = None,
                          timestamp_ms: int | None = None) -> list[RecordMetadata]:
        mds: list[RecordMetadata] = await self._call(
            "send_batch", topic, list(items), partition=partition, timestamp_ms=timestamp_ms)
        return mds

    async def flush(self) -> None:
        """Return when every record sent is on disk (fdatasync)."""
        await self._call("flush")

    async def begin_transaction(self) -> None:
        """Open a transaction (TransactionError if one is open). A
        cancelled caller that started it waits for its end (as
        commit_transaction): the transaction is then open."""
        await self._alog._submit_locked(self._lock, self._begin, finish=True)

    def _begin(self) -> int:
        """(Off the loop, under the lock.) Begin; the new transaction's
        serial, for :meth:`_abort_if`."""
        self._producer().begin_transaction()
        self._serial += 1
        return self._serial

    def _abort_if(self, serial: int) -> None:
        """(Off the loop, under the lock.) Abort transaction ``serial`` if
        it is still open; not one another task began after it ended."""
        if self._serial == serial:
            self._producer().abort_if_open()

    async def commit_transaction(self) -> None:
        """Make the transaction's records and offsets visible together (the
        commit point, durable per the sync mode). ProducerFencedError
        when a newer producer of the id fenced this one.

        Cancelled (task.cancel(), a wait_for timeout) while it waits for
        its turn, it never runs: the transaction stays open. Cancelled
        once it runs off the loop, it runs to its end and the
        CancelledError comes only then: the commit was made or refused
        by then, so ``await consumer.committed(tp)`` tells which (the
        offsets sent with it, or the old ones), and the records show to
        read_committed readers exactly when the offsets do."""
        await self._call("commit_transaction", finish=True)

    async def abort_transaction(self) -> None:
        """Abort the open transaction: its records are never shown to
        read_committed consumers and its offsets are not stored. A
        cancelled caller that started it waits for its end (as
        commit_transaction)."""
        await self._call("abort_transaction", finish=True)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AIOTransactionalProducer]:
        """``async with producer.transaction(): ...``: begin, then commit
        when the block ends, or abort when it raises (cancellation
        included; not when this producer was fenced) or when the commit
        raises an error (CommitFailedError, TransactionError, DiskFullError:
        as the threaded ``transaction()``), the error going on.

        Cancelled while the begin, the commit or the abort runs off the
        loop, the block waits for it to end before the CancelledError
        goes on (see commit_transaction); cancelled while the commit
        waits for its turn (another task's call runs), the commit never
        runs and the transaction is aborted. So after the block, a
        cancelled one included, no transaction is open and the consumer's
        ``committed()`` says whether this one committed."""
        opened: list[int] = []

        def begin() -> None:
            opened.append(self._begin())

        def abort() -> Awaitable[None]:
            # this block's transaction only: once its commit ended, another
            # task's begin may have opened the next one
            return to_the_end(self._alog._submit_locked(
                self._lock, functools.partial(self._abort_if, opened[0])))
        try:
            await self._alog._submit_locked(self._lock, begin, finish=True)
        except BaseException:
            # A begin that started has ended (finish): a transaction it
            # opened that nobody aborts would take this producer's later
            # sends, never to be committed. to_the_end: a second
            # cancellation must not skip the abort.
            if opened:
                await abort()
            raise
        try:
            yield self
        except BaseException:
            await abort()
            raise
        try:
            await self.commit_transaction()
        except (Exception, asyncio.CancelledError):
            # Left open (a commit refused or failed before its commit point,
            # e.g. on a full disk, or cancelled before its turn, which never
            # ran), it would refuse every later begin; after a commit that
            # ran to its end this is a no-op, and an abort past the commit
            # point finds the transaction committed.
            await abort()
            raise

    async def send_offsets_to_transaction(self, offsets: Any,
                                          group_id: str | None = None) -> None:
        """Commit consumer offsets with the transaction: ``offsets`` is
        {TopicPartition: next offset to read} with ``group_id``, or an
        :class:`AIOConsumer`, whose group and the positions of the records
        it handed out are taken (see the module docstring). A cancelled
        caller that started it waits for its end (as commit_transaction)."""
        if isinstance(offsets, AIOConsumer):
            offsets = _Positions(offsets, await offsets._handed_out())
        await self._call("send_offsets_to_transaction", offsets, group_id, finish=True)

    async def close(self) -> None:
        """Abort an open transaction and close (see IdempotentProducer.close).
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._p is not None or self._lock.locked():
            await self._alog._close_client(
                lambda: self._p.close() if self._p is not None else None, self._lock)

    stop = close        # aiokafka's name

    def __reduce__(self) -> Any:
        raise not_transferable(self)   # (its Log's files belong to this process)

    async def __aenter__(self) -> AIOTransactionalProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Positions:
    """What send_offsets_to_transaction reads of a consumer (its group,
    assignment, positions and membership), with an AIOConsumer's positions:
    the records it handed out, not the ones it fetched."""

    def __init__(self, consumer: AIOConsumer, positions: Mapping[TopicPartition, int]):
        self.group_id = consumer.group_id
        self._positions = dict(positions)
        self._member = consumer._group_member()     # checked at the commit point)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    def position(self, tp: TopicPartition) -> int:
        return self._positions[tp]

