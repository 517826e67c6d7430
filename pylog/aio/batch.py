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
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ..errors import InvalidArgument
from ..producer import Headers, RawRecord, raw_record
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
