"""AIOProducer: an aiokafka-shaped producer on an event loop.

It drives a :class:`pylog.producer.Producer`. With ``sync="never"`` or
``"interval"`` an append is a memory copy into the mapped segment (a few
microseconds), so ``send`` runs it inline and resolves the waiting
consumers of the same loop at once (DoorbellBridge.claim); with
``sync="always"`` each send waits for its fdatasync, so it runs in the
Log's executor, where concurrent sends share fsyncs (group commit).
Sends awaited one by one are appended in their order; concurrent sends of
several tasks are not ordered among themselves (a send may yield to the
loop before its append, and executor threads race to the append).
``flush`` and ``close`` always run in the executor.

Unlike aiokafka's, ``await send(...)`` returns the RecordMetadata itself:
the record is appended (and durable as the sync mode says) when it
returns; ``send_and_wait`` is the same call under aiokafka's other name.
A send cancelled while it runs in the executor still appends (as a Kafka
send cancelled after it left the client): cancelling abandons the wait.

Thread safety: use an AIOProducer from the tasks of one event loop (the
Producer under it is thread-safe). Durability: as Producer.send.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument
from ..producer import Headers, Producer
from ..records import RecordMetadata
from ..store import topic_slot
from .bridge import wake

if TYPE_CHECKING:
    from . import AIOLog

#: the most items send_batch appends on the loop itself (about 100 µs)
INLINE_BATCH_MAX = 64


class AIOProducer:
    """See the module docstring. Create with :meth:`AIOLog.producer`."""

    def __init__(self, alog: AIOLog, producer: Producer) -> None:
        self._alog = alog
        self._p = producer
        self._inline = alog.log.sync != "always"
        self._slots: dict[str, int] = {}    # topic -> its doorbell slot

    async def send(self, topic: str, value: object = None, key: object = None, *,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Headers = None) -> RecordMetadata:
        """Append one record; return where it went (see Producer.send)."""
        if self._inline:
            if self._alog._must_yield():
                await asyncio.sleep(0)
            woken = self._claim(topic)
            try:
                return self._p.send(topic, value, key, headers=headers,
                                    partition=partition, timestamp_ms=timestamp_ms)
            finally:
                wake(woken)     # (after a failed send too: they fetch again)
        return await self._alog._submit(functools.partial(
            self._p.send, topic, value, key, headers=headers, partition=partition,
            timestamp_ms=timestamp_ms))

    def _claim(self, topic: str) -> list[asyncio.Future[None]]:
        """The waiters of this loop that the append to ``topic`` wakes."""
        slot = self._slots.get(topic)
        if slot is None:
            slot = self._slots[topic] = topic_slot(topic)
        return self._alog._bridge.claim(slot)

    send_and_wait = send        # aiokafka's name for awaiting delivery

    async def send_batch(self, topic: str, items: Iterable[Any], *,
                         partition: int | None = None,
                         timestamp_ms: int | None = None) -> list[RecordMetadata]:
        """Append many records as one batch per partition (see
        Producer.send_batch); inline only for small batches, since
        encoding a large one takes longer than the loop may wait."""
        if isinstance(items, (bytes, str)) or not hasattr(items, "__iter__"):
            # (as Producer.send_batch refuses them, before list() would)
            raise InvalidArgument(f"items must be an iterable of records (a list), "
                                  f"got {type(items).__name__}")
        items = list(items)
        call = functools.partial(self._p.send_batch, topic, items, partition=partition,
                                 timestamp_ms=timestamp_ms)
        if self._inline and len(items) <= INLINE_BATCH_MAX:
            if self._alog._must_yield():
                await asyncio.sleep(0)
            woken = self._claim(topic)
            try:
                return call()
            finally:
                wake(woken)
        return await self._alog._submit(call)

    async def flush(self) -> None:
        """Return when every record sent is on disk (fdatasync)."""
        await self._alog._submit(self._p.flush)

    async def start(self) -> None:
        """Nothing to do (aiokafka's start connects): here for moving code."""

    async def close(self) -> None:
        """Flush and close (see Producer.close). Idempotent."""
        await self._alog._close_client(self._p.close)

    stop = close        # aiokafka's name

    async def __aenter__(self) -> AIOProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
