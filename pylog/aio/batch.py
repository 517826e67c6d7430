"""aiokafka's batch API for pylog.aio: ``producer.create_batch()`` makes a
:class:`BatchBuilder`, the application appends records to it until
``append`` returns None (full), and ``await producer.send_batch(batch,
topic, partition=p)`` appends them to the partition as one batch.

A builder holds its records in memory, checked and serialized (by the
producer's serializers, in ``append``, on the loop) as a send would check
them, each with its timestamp (``timestamp`` None: the time of the
append, as aiokafka's). It is full once its records would encode to more
than BATCH_MAX_BYTES (aiokafka's default ``max_batch_size``, 16 KiB),
counted as the batch encodes them (61 bytes of batch header, each record's
varint framing); a first record larger than that is taken alone (as
aiokafka's), and the topic's ``max_message_bytes`` is what the send
checks. Sent, a builder is closed (``append`` returns None); a send that
raised wrote nothing and may be retried, one cancelled while it ran in
the executor may still append (as a send).

Thread safety: a builder belongs to the tasks of one event loop.
Durability: a builder writes nothing; ``send_batch`` returns once the
batch is stored, as the log's sync mode says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, overload

from ..errors import InvalidArgument
from ..producer import Headers, RawRecord, raw_record, refuse_mapping
from ..records import RecordMetadata

#: the most bytes a builder's records encode to (aiokafka's default
#: ``max_batch_size``), a first record alone excepted
BATCH_MAX_BYTES = 16384
_BATCH_HEADER = 61      # (B-1: a v2 batch header)


class BatchRecordMetadata(NamedTuple):
    """What :meth:`BatchBuilder.append` returns, as aiokafka's: ``offset``
    within the batch (the record's offset is the batch's base offset,
    which send_batch gives, plus this), ``crc`` (None: a v2 batch has one
    CRC, for the batch), the record's ``size`` in the batch, and its
    ``timestamp`` in milliseconds."""
    offset: int
    crc: int | None
    size: int
    timestamp: int


def _varint(n: int) -> int:
    """Bytes of ``n`` as a zigzag varint (Kafka's record framing)."""
    z = (n << 1) ^ (n >> 63)
    size = 1
    while z >= 0x80:
        z >>= 7
        size += 1
    return size


def _field(b: bytes | None) -> int:
    """Bytes of a length-prefixed key, value or header value."""
    return 1 if b is None else _varint(len(b)) + len(b)


class BatchBuilder:
    """Records for one ``send_batch`` (see the module docstring); made by
    ``AIOProducer.create_batch()``."""

    def __init__(self, key_serializer: Callable[[Any], Any] | None,
                 value_serializer: Callable[[Any], Any] | None,
                 max_bytes: int = BATCH_MAX_BYTES) -> None:
        self._kser = key_serializer
        self._vser = value_serializer
        self._max = max_bytes
        self._records: list[RawRecord] = []
        self._size = _BATCH_HEADER
        self._given: tuple[int, int] | None = None  # (lowest, highest) set by the caller
        self._closed = False
        self._sent = False
        self._payload = 0       # keys, values and headers: as AIOProducer counts them

    def append(self, *, key: Any, value: Any, timestamp: int | None,
               headers: Headers = None) -> BatchRecordMetadata | None:
        """Add a record; its metadata, or None when the builder is full
        (nothing added) or closed. ``timestamp``: epoch milliseconds
        (aiokafka's builder takes milliseconds too, whatever its
        docstring says), None for now. Raises InvalidArgument for what a
        send refuses (a key or value not bytes after the serializers, bad
        headers, a timestamp out of range), adding nothing."""
        if self._closed:
            return None
        if self._kser is not None and key is not None:
            key = self._kser(key)
        if self._vser is not None and value is not None:
            value = self._vser(value)
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
            given = False
        else:
            given = True
        rec = raw_record(value, key, headers, timestamp)
        ts, k, v, h = rec
        n = len(self._records)
        first_ts = self._records[0][0] if n else ts
        body = 1 + _varint(ts - first_ts) + _varint(n) + _field(k) + _field(v) + \
            _varint(len(h)) + sum(_field(hk.encode()) + _field(hv) for hk, hv in h)
        size = _varint(body) + body
        if n and self._size + size > self._max:
            return None
        self._records.append(rec)
        self._size += size
        self._payload += (len(k) if k else 0) + (len(v) if v else 0) + \
            sum(len(hk) + (len(hv) if hv else 0) for hk, hv in h)
        if given:
            lo, hi = self._given or (ts, ts)
            self._given = (min(lo, ts), max(hi, ts))
        return BatchRecordMetadata(n, None, size, ts)

    def close(self) -> None:
        """Take no more records (``append`` returns None from now on)."""
        self._closed = True

    def record_count(self) -> int:
        """How many records the builder holds."""
        return len(self._records)

    def size(self) -> int:
        """Bytes its records encode to as one batch (uncompressed)."""
        return self._size

    @property
    def payload(self) -> int:
        """Bytes of its keys, values and headers (as AIOProducer counts a
        send's, to decide inline or executor)."""
        return self._payload


Send = Callable[[list[RawRecord], "tuple[int, int] | None"], Awaitable[list[RecordMetadata]]]


async def send_builder(batch: BatchBuilder, send: Send) -> asyncio.Future[RecordMetadata | None]:
    """``send(records, given)`` (Producer._send_built, wherever it runs)
    the records of ``batch``, once; aiokafka's future of the batch's
    RecordMetadata, resolved. Sent, the builder is closed and refuses a
    second send (InvalidArgument); a send that raised wrote nothing (G5)
    and leaves the builder as it was (open unless the application closed
    it), to be changed and retried; one cancelled may have appended and
    may not."""
    if batch._sent:
        raise InvalidArgument("send_batch: this batch was sent already; "
                              "make a new one with create_batch()")
    closed = batch._closed
    batch._sent = batch._closed = True
    try:
        mds = await send(batch._records, batch._given)
    except asyncio.CancelledError:
        raise       # (in an executor it may append still)
    except BaseException:
        # nothing written: the builder is as before the send (open unless
        # the application closed it), to be changed and sent again
        batch._sent, batch._closed = False, closed
        raise
    fut: asyncio.Future[RecordMetadata | None] = asyncio.get_running_loop().create_future()
    fut.set_result(mds[0] if mds else None)
    return fut


class BatchSending:
    """``create_batch`` and the two forms of ``send_batch``, of AIOProducer
    and AIOTransactionalProducer: each provides ``_send_items`` and
    ``_send_builder`` (where and how it appends), and its serializers."""

    _kser: Callable[[Any], Any] | None
    _vser: Callable[[Any], Any] | None

    if TYPE_CHECKING:
        async def _send_items(self, topic: str, items: Iterable[Any], *,
                              partition: int | None = None,
                              timestamp_ms: int | None = None) -> list[RecordMetadata]: ...

        async def _send_builder(self, batch: BatchBuilder, topic: str, *,
                                partition: int | None = None
                                ) -> asyncio.Future[RecordMetadata | None]: ...

    def create_batch(self) -> BatchBuilder:
        """An empty :class:`BatchBuilder` (aiokafka's) for
        ``send_batch(batch, topic, partition=p)``; its ``append`` runs this
        producer's serializers."""
        return BatchBuilder(self._kser, self._vser)

    @overload
    async def send_batch(self, topic: str, items: Iterable[Any], *,
                         partition: int | None = None,
                         timestamp_ms: int | None = None) -> list[RecordMetadata]: ...

    @overload
    async def send_batch(self, batch: BatchBuilder, topic: str, *,
                         partition: int | None = None,
                         ) -> asyncio.Future[RecordMetadata | None]: ...

    async def send_batch(self, *args: Any, **kwargs: Any) -> Any:
        """``send_batch(topic, items, *, partition=None, timestamp_ms=None)``:
        append many records as one batch per partition (see
        Producer.send_batch); returns their RecordMetadata.

        ``send_batch(batch, topic, *, partition)`` (aiokafka's): append the
        records of a :meth:`create_batch` builder to ``partition``
        (None: the next one round-robin) as one batch, each with its own
        timestamp; returns, as aiokafka's, a future of the batch's
        RecordMetadata (its first record's; None for an empty batch) —
        already resolved here: the batch is stored, as durable as the
        sync mode says, when the call returns. Sent, the builder is
        closed; one whose send raised may be sent again.

        A transactional producer's batch is part of its open transaction,
        if one is. AIOProducer appends on the loop itself only a batch of
        at most INLINE_BATCH_MAX records and INLINE_BYTES bytes, since
        encoding a larger one takes longer than the loop may wait."""
        first = args[0] if args else kwargs.get("batch")
        if isinstance(first, BatchBuilder):
            return await self._send_builder(*args, **kwargs)
        refuse_mapping(args[1] if len(args) > 1 else kwargs.get("items"))
        return await self._send_items(*args, **kwargs)
