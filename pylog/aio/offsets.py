"""AIOConsumer's questions about the log's offsets (aiokafka's calls), a
mixin of :class:`pylog.aio.consumer.AIOConsumer`.

What needs files, a walk of the batches or an unbounded metadata scan
runs off the loop: a partition's first use opens and maps its files,
``offsets_for_times`` reads its time index, and a last stable offset
needs every transactional id's document and, below an open transaction,
the batch headers after the transaction's first (pylog.txnreads). Small
metadata reads (LMDB read transactions, which never wait for writers)
and the partition state (a mapped page) are read on the loop.

Thread safety: as the AIOConsumer (the tasks of one event loop).
Durability: nothing here writes, except ``seek_to_committed``'s seeks
(positions in memory).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from ..consumerargs import as_tp, as_tps
from ..errors import InvalidArgument, LogClosed
from ..records import TopicPartition

if TYPE_CHECKING:
    from ..consumer import Consumer
    from ..polldriver import PollDriver
    from . import AIOLog

T = TypeVar("T")


class OffsetQueries:
    """Offsets of the log and of the group (see the module docstring)."""

    # AIOConsumer's own (set by its __init__)
    _alog: AIOLog
    _c: Consumer
    _d: PollDriver
    # last_stable_offset: {tp: the last stable offset last seen}, and the
    # partitions whose look runs in the executor
    _lso: dict[TopicPartition, int]
    _lso_looks: set[TopicPartition]
    _seeks: list[list[Any]]     # [tp, offset] of seeks waiting for their turn

    if TYPE_CHECKING:
        async def _locked(self, fn: Callable[..., T], *args: Any) -> T: ...
        def assignment(self) -> set[TopicPartition]: ...
        def seek(self, tp: TopicPartition, offset: int) -> None: ...
        async def committed(self, tp: TopicPartition) -> int | None: ...

    def highwater(self, tp: TopicPartition) -> int | None:
        """aiokafka's: the end offset of ``tp`` (the offset the next record
        appended there gets), as the last fetch knew it or newer: read
        from the partition's shared state (a mapped page), never from the
        metadata; None while this consumer has no position there yet
        (before its first fetch, seek or position() of ``tp``: as
        aiokafka's, None until a fetch brought it). ``tp`` must be
        assigned (InvalidArgument otherwise, as seek).

        Under either isolation level it is the end offset (aiokafka's
        high watermark), unlike Consumer.highwater, which gives a
        read_committed consumer its last stable offset: knowing that
        means reading every transactional id's document, not a thing for
        the loop (last_stable_offset(tp) gives it from a look off the
        loop). A read_committed consumer whose position is below its
        highwater may so have nothing to read yet: the records from the
        last stable offset on belong to transactions still open."""
        tp = self._owned_tp(tp, "highwater")
        return self._d.end_offset(tp, any(s[0] == tp for s in self._seeks))

    def _owned_tp(self, tp: TopicPartition, what: str) -> TopicPartition:
        tp = as_tp(tp)
        owned = self.assignment()
        if tp not in owned:
            raise InvalidArgument(f"{what} {tp}: not assigned to this consumer "
                                  f"(it owns {sorted(owned)})")
        return tp

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        """aiokafka's: the last stable offset of ``tp`` (X-4: where the
        first transaction still open there begins, else the end offset),
        up to which a ``read_committed`` consumer reads; None while not
        known. ``tp`` must be assigned (InvalidArgument otherwise, as
        seek).

        Nothing is read on the loop: even with no transaction open,
        knowing so means reading every transactional id's document (and
        below an open transaction, the batches after its first). So this
        call returns what the last look found and starts a new look in
        the executor (one at a time per partition): None before the first
        look is done (as aiokafka's, None until a fetch brought it), then
        a value at most as old as the last look, never above the true one
        (it only grows). Unlike aiokafka's (whose docstring says -1 under
        ``read_uncommitted``), pylog gives it under either isolation
        level."""
        tp = self._owned_tp(tp, "last_stable_offset")
        self._look_lso(tp)
        return self._lso.get(tp)

    def _look_lso(self, tp: TopicPartition) -> None:
        """Find the last stable offset of ``tp`` in the executor, for the
        next last_stable_offset call. Not under the consumer's lock: it
        reads the partition and the metadata only (thread-safe), no state
        of the consumer."""
        if tp in self._lso_looks:
            return
        try:
            fut = self._alog._submit(self._d.last_stable, tp)
        except LogClosed:
            return
        self._lso_looks.add(tp)

        def done(f: asyncio.Future[int]) -> None:
            self._lso_looks.discard(tp)
            if f.cancelled() or f.exception() is not None:
                return      # (retrieved; the next call looks again)
            got = f.result()
            if got >= self._lso.get(tp, -1):
                self._lso[tp] = got
        fut.add_done_callback(done)

    # Off the loop: a partition's first use opens and maps its files, and
    # offsets_for_times reads its time index.
    async def beginning_offsets(self, partitions: Iterable[TopicPartition]
                                ) -> dict[TopicPartition, int]:
        """{tp: log start offset} of ``partitions``."""
        return await self._locked(self._c.beginning_offsets, list(partitions))

    async def end_offsets(self, partitions: Iterable[TopicPartition]
                          ) -> dict[TopicPartition, int]:
        """{tp: end offset} of ``partitions`` (read_committed: the last
        stable offset), as Consumer.end_offsets."""
        return await self._locked(self._c.end_offsets, list(partitions))

    async def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                                ) -> dict[TopicPartition, int | None]:
        """{tp: ts_ms} -> {tp: first offset with a timestamp >= ts_ms, or
        None}, as Consumer.offsets_for_times (an offset, where aiokafka
        gives an OffsetAndTimestamp)."""
        return await self._locked(self._c.offsets_for_times, dict(timestamps))

    async def seek_to_committed(self, *partitions: TopicPartition
                                ) -> dict[TopicPartition, int | None]:
        """Read ``partitions`` (default: all assigned) from the group's
        committed offsets; {tp: committed offset, None for a partition
        never committed}. A group's partition never committed is read
        from where ``auto_offset_reset`` starts ('earliest': its log
        start; 'latest': its end, read_committed its last stable offset,
        as a new member would; 'none' keeps its position), where
        aiokafka's leaves it where it is: an 'earliest' consume-transform-
        produce loop that seeks back after an error then redoes the
        inputs of its aborted first transaction instead of skipping them.
        Without a group_id nothing is committed: positions stay. Each
        must be owned, as seek; one a rebalance takes meanwhile is left
        out."""
        owned = self.assignment()
        tps = as_tps(partitions) if partitions else sorted(owned)
        for tp in tps:
            if tp not in owned:     # (checked before any seek: all or none)
                raise InvalidArgument(f"seek_to_committed {tp}: not assigned to this "
                                      f"consumer (it owns {sorted(owned)})")
        out: dict[TopicPartition, int | None] = {}
        for tp in tps:
            out[tp] = await self.committed(tp)
        for tp, offset in out.items():
            if offset is not None:
                self.seek(tp, offset)
        fresh = [tp for tp, offset in out.items() if offset is None]
        if fresh and self._c.group_id is not None:
            # (off the loop: 'latest' read_committed reads the transactions)
            starts = await self._locked(self._d.reset_offsets, fresh)
            owned = self.assignment()       # (a rebalance may have run meanwhile)
            for tp, offset in starts.items():
                if tp in owned:
                    self.seek(tp, offset)
        return out

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """Partition numbers of ``topic``; None when it does not exist."""
        return self._c.partitions_for_topic(topic)

    async def topics(self) -> set[str]:
        """Names of every topic of the log (a metadata read, inline)."""
        return self._c.topics()
