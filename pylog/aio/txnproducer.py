"""AIOTransactionalProducer: transactions and the idempotent producer on an
event loop, with aiokafka's names (``begin_transaction``,
``commit_transaction``, ``abort_transaction``, ``transaction()``,
``send_offsets_to_transaction``).

It drives a :class:`pylog.txnproducer.IdempotentProducer`. Every call runs
in the Log's executor, never on the loop: a transaction's first send to a
partition registers it in LMDB (X-6) and its commit point fsyncs (X-6,
M-8), and an idempotent send checks the partition's producer state (X-3),
so any of them may take longer than the loop may wait.

``async with producer.transaction():`` commits when the block ends and
aborts when it raises, a cancellation included (the abort is awaited
before the error goes on). A commit cancelled while it runs in the
executor still decides the transaction: cancelling abandons the wait, as
a Kafka client's cancelled commit leaves the outcome to the coordinator;
the next ``begin_transaction`` follows it.

``send_offsets_to_transaction(consumer)`` with an :class:`AIOConsumer`
takes the positions that consumer hands out next (its records fetched but
not yet received are not counted as processed) and its group membership,
which the commit point checks (CommitFailedError if the group moved its
partitions meanwhile).

Thread safety: use it from the tasks of one event loop (the producer
under it is thread-safe). Durability: as the transactional producer's
(the commit point is durable per the Log's sync mode).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from ..records import TopicPartition
from .consumer import AIOConsumer
from .producer import AIOProducer

if TYPE_CHECKING:
    from ..txnproducer import IdempotentProducer
    from . import AIOLog

__all__ = ["AIOTransactionalProducer"]


class AIOTransactionalProducer(AIOProducer):
    """See the module docstring. Create with :meth:`AIOLog.producer` and
    ``transactional_id=`` (or ``idempotent=True``)."""

    _p: IdempotentProducer

    def __init__(self, alog: AIOLog, producer: IdempotentProducer) -> None:
        super().__init__(alog, producer)
        self._inline = False        # (see the module docstring)

    @property
    def transactional_id(self) -> str | None:
        """The ``transactional_id`` (None for an idempotent producer)."""
        return self._p.transactional_id

    async def begin_transaction(self) -> None:
        """Open a transaction (TransactionError if one is open)."""
        await self._alog._submit(self._p.begin_transaction)

    async def commit_transaction(self) -> None:
        """Make the transaction's records and offsets visible together (the
        commit point, durable per the sync mode). ProducerFencedError
        when a newer producer of the id fenced this one."""
        await self._alog._submit(self._p.commit_transaction)

    async def abort_transaction(self) -> None:
        """Abort the open transaction: its records are never shown to
        read_committed consumers and its offsets are not stored."""
        await self._alog._submit(self._p.abort_transaction)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AIOTransactionalProducer]:
        """``async with producer.transaction(): ...``: begin, then commit
        when the block ends, or abort when it raises (cancellation
        included)."""
        await self.begin_transaction()
        try:
            yield self
        except BaseException:
            await self.abort_transaction()
            raise
        await self.commit_transaction()

    async def send_offsets_to_transaction(self, offsets: Any,
                                          group_id: str | None = None) -> None:
        """Commit consumer offsets with the transaction: ``offsets`` is
        {TopicPartition: next offset to read} with ``group_id``, or an
        :class:`AIOConsumer` (or a Consumer), whose group and the positions
        of its assigned partitions are taken (see the module docstring)."""
        if isinstance(offsets, AIOConsumer):
            offsets = _Positions(offsets, {
                tp: await offsets.position(tp) for tp in offsets.assignment()})
        await self._alog._submit(functools.partial(
            self._p.send_offsets_to_transaction, offsets, group_id))


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
