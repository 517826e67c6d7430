"""AIOProducer: an aiokafka-shaped producer on an event loop.

It drives a :class:`pylog.producer.Producer`. With ``sync="never"`` or
``"interval"`` an append is a memory copy into the mapped segment (a few
microseconds for a small record), so ``send`` runs it inline and resolves
the waiting consumers of the same loop at once (DoorbellBridge.claim) —
as long as the call's keys, values and headers come to at most
INLINE_BYTES (128 KiB) and a ``send_batch`` has at most INLINE_BATCH_MAX
(64) items: copying and checksumming more takes longer than the loop may
wait (about 3 ms a MiB), so a bigger call runs in the Log's executor.
With ``sync="always"`` each send waits for its fdatasync, so it runs in
the executor, where concurrent sends share fsyncs (group commit).
Serializers (``key_serializer``/``value_serializer``) run on the loop, in
``send``/``send_batch`` itself (as aiokafka's), so that the bytes they
make are counted; a send_batch over INLINE_BATCH_MAX items serializes in
the executor.
Sends awaited one by one are appended in their order; concurrent sends of
several tasks are not ordered among themselves (a send may yield to the
loop before its append, and executor threads race to the append).
``flush`` and ``close`` always run in the executor.

Unlike aiokafka's, ``await send(...)`` returns the RecordMetadata itself:
the record is appended (and durable as the sync mode says) when it
returns; ``send_and_wait`` is the same call under aiokafka's other name.
A send cancelled while it runs in the executor still appends (as a Kafka
send cancelled after it left the client): cancelling abandons the wait.
aiokafka's ``create_batch()`` and ``send_batch(batch, topic,
partition=)`` are here too (pylog.aio.batch); that ``send_batch`` returns
aiokafka's future of the batch's metadata, resolved already.

Thread safety: use an AIOProducer from the tasks of one event loop (the
Producer under it is thread-safe). Durability: as Producer.send.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, not_transferable
from ..producer import Headers, Producer, RawRecord
from ..records import RecordMetadata
from ..store import topic_slot
from .batch import BatchBuilder, BatchSending, send_builder
from .bridge import wake

if TYPE_CHECKING:
    from . import AIOLog

#: the most items send_batch appends on the loop itself (about 100 µs)
INLINE_BATCH_MAX = 64
#: the most bytes (keys, values, header keys and values) one send or
#: send_batch appends on the loop itself: an inline append copies them into
#: the segment and checksums them at about 3 ms a MiB on a slow machine
#: (page faults of fresh segment pages included), so 128 KiB stays well
#: under the 1 ms a loop callback may take; bigger calls go to the executor
INLINE_BYTES = 128 << 10


def _size(value: object) -> int:
    """Bytes of a key or value as Producer.send takes it (None: 0; a type
    it refuses counts 0 here: it raises inline, which costs nothing)."""
    if value is None:
        return 0
    if type(value) is bytes or isinstance(value, bytearray):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    return 0


def _headers_size(headers: Headers) -> int:
    """Bytes of ``headers`` (a mapping or pairs of str and bytes); shapes
    Producer.send refuses count 0 (it raises inline)."""
    if not headers:
        return 0
    try:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        return sum(len(k) + _size(v) for k, v in pairs)
    except (TypeError, ValueError):
        return 0


class AIOProducer(BatchSending):
    """See the module docstring. Create with :meth:`AIOLog.producer`."""

    def __init__(self, alog: AIOLog, producer: Producer, *,
                 key_serializer: Callable[[Any], Any] | None = None,
                 value_serializer: Callable[[Any], Any] | None = None) -> None:
        # ``producer`` has no serializers: these run here, on the loop, so
        # that the size of what they make decides inline or executor
        self._alog = alog
        self._p = producer
        self._kser = key_serializer
        self._vser = value_serializer
        self._inline = alog.log.sync != "always"
        self._slots: dict[str, int] = {}    # topic -> its doorbell slot

    async def send(self, topic: str, value: object = None, key: object = None, *,
                   partition: int | None = None, timestamp_ms: int | None = None,
                   headers: Headers = None) -> RecordMetadata:
        """Append one record; return where it went (see Producer.send).
        Inline when its key, value and headers come to at most
        INLINE_BYTES, else in the executor (see the module docstring)."""
        if self._kser is not None and key is not None:
            key = self._kser(key)
        if self._vser is not None and value is not None:
            value = self._vser(value)
        if self._inline:
            if type(value) is bytes and headers is None:    # (the common shape)
                size = len(value) if key is None else len(value) + _size(key)
            else:
                size = _size(value) + _size(key) + _headers_size(headers)
            inline = size <= INLINE_BYTES
        else:
            inline = False
        if inline:
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

    async def _send_builder(self, batch: BatchBuilder, topic: str, *,
                            partition: int | None = None
                            ) -> asyncio.Future[RecordMetadata | None]:
        if partition is not None and (isinstance(partition, bool)
                                      or not isinstance(partition, int)):
            raise InvalidArgument(f"partition must be an int or None, got "
                                  f"{type(partition).__name__}")
        inline = self._inline and batch.record_count() <= INLINE_BATCH_MAX and \
            batch.payload <= INLINE_BYTES
        if inline and self._alog._must_yield():
            await asyncio.sleep(0)      # (before the batch is taken: a cancel loses nothing)

        async def send(records: list[RawRecord], given: tuple[int, int] | None
                       ) -> list[RecordMetadata]:
            call = functools.partial(self._p._send_built, topic, partition, records, given)
            if not inline:
                return await self._alog._submit(call)
            woken = self._claim(topic)     # (no await: nothing cancels it)
            try:
                return call()
            finally:
                wake(woken)
        return await send_builder(batch, send)

    async def _send_items(self, topic: str, items: Iterable[Any], *,
                          partition: int | None = None,
                          timestamp_ms: int | None = None) -> list[RecordMetadata]:
        if isinstance(items, (bytes, str)) or not hasattr(items, "__iter__"):
            # (as Producer.send_batch refuses them, before list() would)
            raise InvalidArgument(f"items must be an iterable of records (a list), "
                                  f"got {type(items).__name__}")
        items = list(items)
        small = len(items) <= INLINE_BATCH_MAX
        serialized: Iterable[Any] = items
        if self._kser is not None or self._vser is not None:
            if small:
                items = serialized = [self._serialize(item) for item in items]
            else:
                serialized = _Serialized(self, items)  # (by send_batch, in the executor)
        call = functools.partial(self._p.send_batch, topic, serialized, partition=partition,
                                 timestamp_ms=timestamp_ms)
        if self._inline and small and _batch_size(items) <= INLINE_BYTES:
            if self._alog._must_yield():
                await asyncio.sleep(0)
            woken = self._claim(topic)
            try:
                return call()
            finally:
                wake(woken)
        return await self._alog._submit(call)

    def _serialize(self, item: Any) -> Any:
        """One send_batch item with its key and value serialized (shapes
        Producer.send_batch refuses pass unchanged: it raises for them)."""
        kser, vser = self._kser, self._vser
        if type(item) is tuple and len(item) in (2, 3):
            k, v = item[0], item[1]
            if kser is not None and k is not None:
                k = kser(k)
            if vser is not None and v is not None:
                v = vser(v)
            return (k, v) + item[2:]
        if type(item) is tuple or vser is None or item is None:
            return item
        return vser(item)

    async def partitions_for(self, topic: str) -> set[int]:
        """Partition numbers of ``topic`` (aiokafka's call; as
        Producer.partitions_for). A metadata read, inline."""
        return self._p.partitions_for(topic)

    async def flush(self) -> None:
        """Return when every record sent is on disk (fdatasync)."""
        await self._alog._submit(self._p.flush)

    async def start(self) -> None:
        """Nothing to do (aiokafka's start connects): here for moving code."""

    async def close(self) -> None:
        """Flush and close (see Producer.close). Idempotent."""
        await self._alog._close_client(self._p.close)

    stop = close        # aiokafka's name

    def __reduce__(self) -> Any:
        raise not_transferable(self)   # (its Log's files belong to this process)

    async def __aenter__(self) -> AIOProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _batch_size(items: list[Any]) -> int:
    """Bytes of send_batch ``items`` (serialized), as send counts them."""
    n = 0
    for item in items:
        if type(item) is bytes:
            n += len(item)
        elif type(item) is tuple:
            n += _size(item[0]) + (_size(item[1]) if len(item) > 1 else 0)
            if len(item) > 2:
                n += _headers_size(item[2])
        else:
            n += _size(item)
    return n


class _Serialized:
    """send_batch items serialized as Producer.send_batch iterates them
    (in the executor: a large batch's serializer calls stay off the loop)."""

    def __init__(self, producer: AIOProducer, items: list[Any]) -> None:
        self._p = producer
        self._items = items

    def __iter__(self) -> Any:
        return map(self._p._serialize, self._items)
