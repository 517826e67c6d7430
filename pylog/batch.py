"""Records <-> RecordBatch bytes, including compression (FORMAT.rst B-*, R-*).

The native layer encodes and decodes uncompressed batches; this module adds
the zstd codec (B-6) and the limits that protect against hostile input
(a decompression bomb is refused, not expanded).

Thread safety: the functions are thread-safe (zstd contexts are per thread).
"""

from __future__ import annotations

import struct
import threading
from typing import NamedTuple

import zstandard

from . import _native
from ._native import (
    BATCH_HEADER_SIZE,
    CODEC_NONE,
    CODEC_ZSTD,
    CONTROL_MASK,
    TRANSACTIONAL_MASK,
    BatchHeader,
    NoSpace,
)
from .errors import CorruptLogError

# B-6: a compressed records section may expand to at most this many bytes.
DECOMPRESSED_BYTES_MAX = 256 * 1024 * 1024

_CODECS = {None: CODEC_NONE, "zstd": CODEC_ZSTD}
_tls = threading.local()

__all__ = ["BATCH_HEADER_SIZE", "BatchHeader", "NoSpace", "encode_into",
           "encode", "read_header", "read_framing", "records_section", "decode",
           "decode_values", "ProducerFields", "NO_PRODUCER", "control_record",
           "parse_control_record", "TRANSACTIONAL_MASK", "CONTROL_MASK",
           "ABORT", "COMMIT", "control_type", "TXN_COMMITTED", "TXN_ABORTED",
           "TXN_OPEN", "txn_decision"]

# the control record types (Kafka's ControlRecordType: 0 ABORT,
# 1 COMMIT) and their key and value layouts (version 0 of both)
ABORT, COMMIT = 0, 1
_CONTROL_KEY = struct.Struct(">hh")        # version, type
_CONTROL_VALUE = struct.Struct(">hi")      # version, coordinator epoch


class ProducerFields(NamedTuple):
    """The producer fields of a batch header (B-1, X-1): id, epoch, base
    sequence, and the attribute bits added to the codec (transactional,
    control)."""
    producer_id: int
    producer_epoch: int
    base_sequence: int
    attributes: int


NO_PRODUCER = ProducerFields(-1, -1, -1, 0)


def control_record(kind: int, coordinator_epoch: int = 0) -> tuple[bytes, bytes]:
    """(key, value) of a COMMIT or ABORT control record (X-2), byte for
    byte as Kafka's EndTransactionMarker writes them."""
    if kind not in (ABORT, COMMIT):
        raise ValueError(f"control record type {kind!r}: expected ABORT (0) or COMMIT (1)")
    return _CONTROL_KEY.pack(0, kind), _CONTROL_VALUE.pack(0, coordinator_epoch)


def parse_control_record(key: bytes | None) -> int | None:
    """The type (ABORT or COMMIT) of a control record's key, None when it is
    not a version-0 end-transaction key."""
    if key is None or len(key) < _CONTROL_KEY.size:
        return None
    version, kind = _CONTROL_KEY.unpack_from(key)
    return kind if version == 0 and kind in (ABORT, COMMIT) else None


def _varint(b: bytes, i: int) -> tuple[int, int]:
    """The zigzag varint at ``b[i:]`` (R-1) and the index after it."""
    shift = value = 0
    while True:
        if i >= len(b) or shift > 28:
            raise IndexError
        c = b[i]
        i += 1
        value |= (c & 0x7F) << shift
        if not c & 0x80:
            return (value >> 1) ^ -(value & 1), i
        shift += 7


def control_type(buf, header: BatchHeader) -> int | None:
    """The type (ABORT or COMMIT) of the checked control batch ``header``
    in ``buf``, None when its first record is not an end-transaction one
    (X-2). Reads the first record's key in place (R-1: length, attributes,
    timestamp delta, offset delta, key length, key), without decoding the
    batch."""
    start = header.position + BATCH_HEADER_SIZE
    if header.attributes & 0x07 or not header.records_count:
        return None                     # a control batch is uncompressed)
    b = bytes(buf[start:min(start + 48, header.position + header.size)])
    try:
        i = _varint(b, 0)[1] + 1                      # length, attributes
        i = _varint(b, _varint(b, i)[1])[1]           # timestamp, offset deltas
        klen, i = _varint(b, i)
    except IndexError:
        return None
    return parse_control_record(b[i:i + klen]) if klen >= 4 else None


# what a read_committed reader does with a transactional batch
TXN_COMMITTED, TXN_ABORTED, TXN_OPEN = 0, 1, 2


def txn_decision(epoch: int, control_epoch: int, control: int | None) -> int | None:
    """X-4: what a control batch of a producer id, of ``control_epoch``
    and type ``control`` (:func:`control_type`), decides for a
    transactional batch of that id and ``epoch`` before it: a COMMIT of
    its epoch commits it (TXN_COMMITTED), any control batch of a later
    epoch ends it aborted (TXN_ABORTED: its COMMIT would have come
    first); None for the markers of earlier epochs (late ones of earlier
    transactions), which decide nothing."""
    if control_epoch > epoch:
        return TXN_ABORTED
    if control == COMMIT and control_epoch == epoch:
        return TXN_COMMITTED
    return None


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_tls, "zc", None)
    if c is None:
        c = _tls.zc = zstandard.ZstdCompressor(level=3)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_tls, "zd", None)
    if d is None:
        d = _tls.zd = zstandard.ZstdDecompressor()
    return d


def encode(records, *, base_offset: int, compression: str | None = None,
           producer: ProducerFields = NO_PRODUCER) -> bytes:
    """One batch of ``records`` [(timestamp_ms, key, value, headers)] as
    bytes, with the producer fields ``producer`` (X-1)."""
    codec = _CODECS[compression]
    if codec == CODEC_NONE:
        return _native.encode_batch(records, base_offset=base_offset,
                                    attributes=producer.attributes,
                                    producer_id=producer.producer_id,
                                    producer_epoch=producer.producer_epoch,
                                    base_sequence=producer.base_sequence)
    base_ts = records[0][0]
    section = _native.encode_records(records, base_ts)
    return _native.wrap_records(
        _compressor().compress(section), base_offset=base_offset,
        records_count=len(records), last_offset_delta=len(records) - 1,
        base_timestamp=base_ts, max_timestamp=max(r[0] for r in records),
        attributes=codec | producer.attributes, producer_id=producer.producer_id,
        producer_epoch=producer.producer_epoch, base_sequence=producer.base_sequence)


def encode_into(buf, pos: int, records, *, base_offset: int,
                compression: str | None = None,
                producer: ProducerFields = NO_PRODUCER) -> int:
    """Write one batch at ``buf[pos:]``; return its size.

    Raises NoSpace (writing nothing) when it does not fit. The uncompressed
    path encodes straight into ``buf`` (the mapped segment) with one native
    call; the compressed path must build the bytes first.
    """
    if compression is None:
        return _native.encode_batch_into(buf, pos, records,
                                         base_offset=base_offset,
                                         attributes=producer.attributes,
                                         producer_id=producer.producer_id,
                                         producer_epoch=producer.producer_epoch,
                                         base_sequence=producer.base_sequence)
    data = encode(records, base_offset=base_offset, compression=compression,
                  producer=producer)
    if pos + len(data) > len(buf):
        raise NoSpace(len(data))
    buf[pos:pos + len(data)] = data
    return len(data)


def read_header(buf, pos: int, end: int) -> BatchHeader:
    """Parse and check the header of the batch at ``pos`` (B-2..B-4).

    Raises CorruptLogError (without a path) if the framing, magic or CRC is bad.
    """
    header = _native.read_batch_header(buf, pos, end)
    if not header.crc_valid:
        raise CorruptLogError(
            f"CRC32C mismatch in batch at offset {header.base_offset} "
            f"(stored {header.crc:#010x})", position=pos)
    return header


def read_framing(buf, pos: int, end: int) -> BatchHeader:
    """The header of the batch at ``pos`` with its framing and magic checked
    (B-2, B-3) but not its CRC: for walks that pass over batches by their
    headers (a batch read for its records is checked whole, B-4). Raises
    CorruptLogError (without a path)."""
    return _native.read_batch_header(buf, pos, end, crc=False)


def records_section(buf, header: BatchHeader) -> bytes:
    """The batch's records section, decompressed when its codec says so (B-6)."""
    start = header.position + BATCH_HEADER_SIZE
    raw = bytes(buf[start:header.position + header.size])
    codec = header.codec
    if codec == CODEC_NONE:
        return raw
    if codec != CODEC_ZSTD:
        raise CorruptLogError(
            f"batch at offset {header.base_offset} uses compression codec "
            f"{codec}, which pylog does not read (only none and zstd)",
            position=header.position)
    try:
        reader = _decompressor().stream_reader(raw)
        out = reader.read(DECOMPRESSED_BYTES_MAX + 1)
    except zstandard.ZstdError as exc:
        raise CorruptLogError(f"zstd decompression failed: {exc}",
                              position=header.position) from None
    if len(out) > DECOMPRESSED_BYTES_MAX:
        raise CorruptLogError(
            f"compressed batch expands past {DECOMPRESSED_BYTES_MAX} bytes",
            position=header.position)
    return out


def decode(buf, header: BatchHeader, topic=None, partition=None, row_type=None) -> list:
    """All records of a checked batch: [(offset, ts, key, value, headers)],
    or with ``topic``/``partition`` given [(topic, partition, offset, ...)]
    (the field order of pylog.Record), built as ``row_type`` when given."""
    return _native.decode_records(records_section(buf, header), header,
                                  topic, partition, row_type)


def decode_values(buf, header: BatchHeader) -> list:
    """Only the values of a checked batch, in offset order."""
    return _native.decode_values(records_section(buf, header), header)
