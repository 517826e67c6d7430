"""Python face of the native core (csrc/pylog_native.c).

This is the only module that touches the cffi ``ffi``/``lib`` objects.  It maps
native status codes to pylog exceptions:

* corruption (positive reason codes)  -> :class:`CorruptLogError`
* bad arguments                       -> :class:`InvalidArgument`
* output too small                    -> :class:`NoSpace` (``.needed`` bytes)

Record tuples are ``(timestamp_ms, key, value, headers)`` with ``key``/``value``
bytes-like or None and ``headers`` a sequence of ``(str, bytes | None)`` (or
None / empty).  Batches are Kafka RecordBatch v2 (magic 2), see FORMAT.rst.
"""

from __future__ import annotations

from itertools import repeat as _repeat
from operator import add as _add
import errno as _errno
import os as _os
import struct as _struct
import time as _time
from array import array as _array
import threading
from typing import NamedTuple, Optional

from ._pylog_native import ffi, lib
from .errors import CorruptLogError, InvalidArgument
from .gcpause import paused as _gc_paused

__all__ = [
    "BATCH_HEADER_SIZE", "CODEC_NONE", "CODEC_GZIP", "CODEC_SNAPPY", "CODEC_LZ4",
    "CODEC_ZSTD", "HAS_HW_CRC32C", "NoSpace", "BatchHeader", "ScanResult",
    "crc32c", "crc32c_portable", "crc32c_hw", "murmur2", "partition_for_key",
    "encoded_size", "encode_batch_into", "encode_batch", "encode_records",
    "wrap_records", "read_batch_header", "decode_records", "decode_values",
    "scan_segment", "index_lookup", "index_validate", "timeindex_lookup",
    "timeindex_validate", "STATE_SIZE", "state_publish", "state_read",
    "state_repair", "DOORBELL_SLOT_SIZE", "doorbell_ring", "doorbell_load",
    "doorbell_wait", "lock",
]

# ---------------------------------------------------------------------------
# format constants (offsets computed from the header struct)
# ---------------------------------------------------------------------------

HEADER_STRUCT = _struct.Struct(
    ">q"   # baseOffset
    "i"    # batchLength
    "i"    # partitionLeaderEpoch
    "b"    # magic
    "I"    # crc
    "h"    # attributes
    "i"    # lastOffsetDelta
    "q"    # baseTimestamp
    "q"    # maxTimestamp
    "q"    # producerId
    "h"    # producerEpoch
    "i"    # baseSequence
    "i"    # recordsCount
)
_FIELDS = ("BASE_OFFSET", "BATCH_LENGTH", "PARTITION_LEADER_EPOCH", "MAGIC", "CRC",
           "ATTRIBUTES", "LAST_OFFSET_DELTA", "BASE_TIMESTAMP", "MAX_TIMESTAMP",
           "PRODUCER_ID", "PRODUCER_EPOCH", "BASE_SEQUENCE", "RECORDS_COUNT")
_FMT = HEADER_STRUCT.format.lstrip(">")
for _i, _name in enumerate(_FIELDS):
    globals()[_name + "_OFFSET"] = _struct.calcsize(">" + _FMT[:_i])
del _i, _name

BATCH_HEADER_SIZE = HEADER_STRUCT.size
LENGTH_FIELD_END = BATCH_LENGTH_OFFSET + 4          # noqa: F821 (batch size = batchLength + this)
BATCH_OVERHEAD = LENGTH_FIELD_END                    # bytes not counted in batchLength
assert BATCH_HEADER_SIZE == lib.PL_BATCH_HEADER_SIZE == 61
assert CRC_OFFSET == 17 and ATTRIBUTES_OFFSET == 21 and RECORDS_COUNT_OFFSET == 57  # noqa: F821

MAGIC_V2 = 2
CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD = 0, 1, 2, 3, 4
CODEC_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20
DELETE_HORIZON_MASK = 0x40
TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME = 0, 1

HAS_HW_CRC32C = bool(lib.pl_crc32c_hw_available())

STATE_SIZE = lib.PL_STATE_SIZE
STATE_MAGIC = lib.PL_STATE_MAGIC
DOORBELL_SLOT_SIZE = lib.PL_DOORBELL_SLOT_SIZE

_E_NOSPACE = lib.PL_E_NOSPACE
_E_INVAL = lib.PL_E_INVAL
_E_BUSY = lib.PL_E_BUSY
_INT32_MAX = 2**31 - 1


class NoSpace(Exception):
    """The encoded batch does not fit; ``needed`` is the size it requires."""

    def __init__(self, needed: int):
        self.needed = needed
        super().__init__(f"encoded batch needs {needed} bytes")


def _reason(code: int) -> str:
    return ffi.string(lib.pl_reason_str(code)).decode()


def _corrupt(code: int, position: Optional[int], detail: str = "") -> CorruptLogError:
    return CorruptLogError(_reason(code) + detail, position=position)


def _check_encode_rc(rc: int, needed: int) -> None:
    if rc == 0:
        return
    if rc == _E_NOSPACE:
        raise NoSpace(needed)
    if rc == _E_INVAL:
        raise InvalidArgument(
            "cannot encode records: empty batch, non-int timestamp, a timestamp delta "
            "or length out of int32/int64 range, or compression bits in attributes")
    raise InvalidArgument(f"cannot encode records: {_reason(rc)}")


def _rbuf(data):
    """A read-only cdata view of any buffer (bytes, bytearray, memoryview, mmap)."""
    try:
        return ffi.from_buffer("uint8_t[]", data)
    except TypeError as e:
        raise InvalidArgument(f"expected a bytes-like object, got {type(data).__name__}") from e


def _wbuf(data):
    try:
        return ffi.from_buffer("uint8_t[]", data, require_writable=True)
    except TypeError as e:
        raise InvalidArgument(
            f"expected a writable buffer, got {type(data).__name__}") from e


# ---------------------------------------------------------------------------
# CRC32C / murmur2
# ---------------------------------------------------------------------------

def _crc(fn, data, value):
    if not 0 <= value <= 0xFFFFFFFF:
        raise InvalidArgument("crc value must be an unsigned 32-bit int")
    if type(data) is bytes:
        return fn(value, data, len(data))  # cffi passes bytes to uint8_t* directly
    with _rbuf(data) as p:
        return fn(value, p, len(p))


def crc32c(data, value: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, chained from ``value`` (like crc32c.crc32c)."""
    return _crc(lib.pl_crc32c, data, value)


def crc32c_portable(data, value: int = 0) -> int:
    return _crc(lib.pl_crc32c_portable, data, value)


def crc32c_hw(data, value: int = 0) -> int:
    if not HAS_HW_CRC32C:
        raise RuntimeError("this CPU has no CRC32C instruction")
    return _crc(lib.pl_crc32c_hw, data, value)


def murmur2(data) -> int:
    """Kafka's ``Utils.murmur2`` (signed int32)."""
    if type(data) is bytes:
        return lib.pl_murmur2(data, len(data))
    with _rbuf(data) as p:
        return lib.pl_murmur2(p, len(p))


#: ``murmur2_bytes(key, len(key))``: murmur2 of a bytes object without the
#: buffer handling of :func:`murmur2` (the producer's per-record path).
murmur2_bytes = lib.pl_murmur2


def partition_for_key(key, num_partitions: int) -> int:
    """Kafka's default partition: ``(murmur2(key) & 0x7fffffff) % num_partitions``."""
    if not isinstance(num_partitions, int) or num_partitions < 1:
        raise InvalidArgument(f"num_partitions must be >= 1, got {num_partitions!r}")
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


# ---------------------------------------------------------------------------
# batch header
# ---------------------------------------------------------------------------

class BatchHeader(NamedTuple):
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int
    crc_valid: bool
    position: int

    @property
    def size(self) -> int:
        return self.batch_length + BATCH_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def codec(self) -> int:
        return self.attributes & CODEC_MASK

    @property
    def timestamp_type(self) -> int:
        return 1 if self.attributes & TIMESTAMP_TYPE_MASK else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def records_position(self) -> int:
        """Buffer position of the records section."""
        return self.position + BATCH_HEADER_SIZE

    @property
    def end_position(self) -> int:
        return self.position + self.batch_length + BATCH_OVERHEAD


def _header_from(h, pos) -> BatchHeader:
    return BatchHeader(h.base_offset, h.batch_length, h.partition_leader_epoch, h.magic,
                       h.crc, h.attributes, h.last_offset_delta, h.base_timestamp,
                       h.max_timestamp, h.producer_id, h.producer_epoch, h.base_sequence,
                       h.records_count, bool(h.crc_valid), pos)


def read_batch_header(buf, pos: int = 0, end: Optional[int] = None) -> BatchHeader:
    """Parse and validate (B-2, B-3) the batch header at ``buf[pos:end]``.

    A CRC mismatch (B-4) does not raise: check ``crc_valid``.
    """
    out = ffi.new("pl_batch_header_out *")
    with _rbuf(buf) as p:
        n = len(p)
        if end is None:
            end = n
        if not (0 <= pos and 0 <= end <= n):
            raise InvalidArgument(f"bad pos/end {pos}/{end} for a buffer of {n} bytes")
        rc = lib.pl_batch_header(p, end, pos, out)
    if rc != 0:
        if rc < 0:
            raise InvalidArgument(_reason(rc))
        raise _corrupt(rc, pos)
    return _header_from(out, pos)


# ---------------------------------------------------------------------------
# encoding
# ---------------------------------------------------------------------------

_BYTES_LIKE = (bytes, bytearray, memoryview)


def _pack(records):
    """Flatten records into (n, int64 stream, blob) for the *_packed encoders."""
    meta = _array("q")
    parts = []
    ma = meta.append
    pa = parts.append
    n = 0
    try:
        for ts, key, value, headers in records:
            n += 1
            ma(ts)
            if key is None:
                ma(-1)
            else:
                ma(len(key))
                pa(key)
            if value is None:
                ma(-1)
            else:
                ma(len(value))
                pa(value)
            if headers:
                ma(len(headers))
                for hk, hv in headers:
                    if type(hk) is str:
                        hk = hk.encode("utf-8")
                    ma(len(hk))
                    pa(hk)
                    if hv is None:
                        ma(-1)
                    else:
                        ma(len(hv))
                        pa(hv)
            else:
                ma(0)
        blob = b"".join(parts)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidArgument(
            "records must be (timestamp_ms: int, key: bytes|None, value: bytes|None, "
            f"headers: [(str, bytes|None)]|None) tuples: {e}") from e
    if n == 0:
        raise InvalidArgument("a batch needs at least one record")
    # (a non-byte memoryview's len() counts items: the native side then finds the
    # blob size disagrees with the lengths and refuses with PL_E_INVAL)
    return n, meta, blob


def _meta(base_offset, partition_leader_epoch, attributes, producer_id, producer_epoch,
          base_sequence, last_offset_delta=0, base_timestamp=0, max_timestamp=0,
          records_count=0):
    m = ffi.new("pl_batch_meta *")
    try:
        m.base_offset = base_offset
        m.partition_leader_epoch = partition_leader_epoch
        m.attributes = attributes
        m.producer_id = producer_id
        m.producer_epoch = producer_epoch
        m.base_sequence = base_sequence
        m.last_offset_delta = last_offset_delta
        m.base_timestamp = base_timestamp
        m.max_timestamp = max_timestamp
        m.records_count = records_count
    except (TypeError, OverflowError) as e:
        raise InvalidArgument(f"batch header field out of range: {e}") from e
    return m


def _packed_call(fn, out, cap, n, meta_arr, blob, *lead):
    written = ffi.new("size_t *")
    rc = fn(out, cap, written, *lead, n, ffi.from_buffer("int64_t[]", meta_arr), len(meta_arr),
            blob, len(blob))
    return rc, written[0]


def encoded_size(records) -> int:
    """Size in bytes of the uncompressed batch ``records`` encode to."""
    n, meta, blob = _pack(records)
    m = _meta(0, 0, 0, -1, -1, -1)
    rc, needed = _packed_call(lib.pl_batch_encode_packed, ffi.NULL, 0, n, meta, blob, m)
    if rc not in (0, _E_NOSPACE):
        _check_encode_rc(rc, needed)
    return needed


def encode_batch_into(buf, pos: int, records, *, base_offset: int, partition_leader_epoch: int = 0,
                      attributes: int = 0, producer_id: int = -1, producer_epoch: int = -1,
                      base_sequence: int = -1) -> int:
    """Encode an uncompressed batch at ``buf[pos:]``; returns the bytes written.

    Raises :class:`NoSpace` (writing nothing) if it does not fit.
    """
    n, meta, blob = _pack(records)
    m = _meta(base_offset, partition_leader_epoch, attributes, producer_id, producer_epoch,
              base_sequence)
    with _wbuf(buf) as p:
        size = len(p)
        if not 0 <= pos <= size:
            raise InvalidArgument(f"position {pos} outside a buffer of {size} bytes")
        rc, written = _packed_call(lib.pl_batch_encode_packed, p + pos, size - pos, n, meta,
                                   blob, m)
    _check_encode_rc(rc, written)
    return written


def encode_batch(records, *, base_offset: int, partition_leader_epoch: int = 0,
                 attributes: int = 0, producer_id: int = -1, producer_epoch: int = -1,
                 base_sequence: int = -1) -> bytes:
    """An uncompressed batch as bytes."""
    n, meta, blob = _pack(records)
    m = _meta(base_offset, partition_leader_epoch, attributes, producer_id, producer_epoch,
              base_sequence)
    rc, needed = _packed_call(lib.pl_batch_encode_packed, ffi.NULL, 0, n, meta, blob, m)
    if rc != _E_NOSPACE:
        _check_encode_rc(rc, needed)
    out = bytearray(needed)
    with ffi.from_buffer("uint8_t[]", out, require_writable=True) as p:
        rc, written = _packed_call(lib.pl_batch_encode_packed, p, needed, n, meta, blob, m)
    _check_encode_rc(rc, written)
    return bytes(out)


def encode_records(records, base_timestamp: int) -> bytes:
    """The records section only (offset deltas 0..n-1), e.g. to compress it."""
    n, meta, blob = _pack(records)
    maxts = ffi.new("int64_t *")
    try:
        rc, needed = _packed_call(lib.pl_records_encode_packed, ffi.NULL, 0, n, meta, blob,
                                  base_timestamp, maxts)
    except OverflowError as e:
        raise InvalidArgument(f"base_timestamp out of range: {e}") from e
    if rc != _E_NOSPACE:
        _check_encode_rc(rc, needed)
    out = bytearray(needed)
    with ffi.from_buffer("uint8_t[]", out, require_writable=True) as p:
        rc, written = _packed_call(lib.pl_records_encode_packed, p, needed, n, meta, blob,
                                   base_timestamp, maxts)
    _check_encode_rc(rc, written)
    return bytes(out)


def wrap_records(records_section, *, base_offset: int, records_count: int,
                 last_offset_delta: int, base_timestamp: int, max_timestamp: int,
                 attributes: int, partition_leader_epoch: int = 0, producer_id: int = -1,
                 producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    """Batch header + an already encoded (e.g. compressed) records section."""
    m = _meta(base_offset, partition_leader_epoch, attributes, producer_id, producer_epoch,
              base_sequence, last_offset_delta, base_timestamp, max_timestamp, records_count)
    written = ffi.new("size_t *")
    with _rbuf(records_section) as src:
        needed = BATCH_HEADER_SIZE + len(src)
        out = bytearray(needed)
        with ffi.from_buffer("uint8_t[]", out, require_writable=True) as p:
            rc = lib.pl_batch_wrap(p, needed, written, m, src, len(src))
    _check_encode_rc(rc, written[0])
    return bytes(out)


# ---------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------

def _decode_raw(data: bytes, header: BatchHeader):
    """Run the native decoder; returns (record fields, header fields, number
    of headers): PL_RECORD_FIELDS int64 per record and PL_HEADER_FIELDS per
    header, as cdata arrays."""
    n = header.records_count
    pos = header.position
    if n < 0 or header.last_offset_delta < 0:
        raise _corrupt(lib.PL_C_LAST_OFFSET_DELTA, pos)
    if n * 7 > len(data):  # R-5 (each record takes at least 7 bytes)
        raise _corrupt(lib.PL_C_COUNT, pos)
    # one allocation: the records' fields, then room for n headers
    out = ffi.new("int64_t[]", 12 * n) if n else ffi.NULL
    hcap = n
    hdr = out + 8 * n if n else ffi.NULL
    sizes = ffi.new("size_t[2]")         # headers in the batch, error offset
    total, err = sizes, sizes + 1
    rc = lib.pl_records_decode(data, len(data), n, header.last_offset_delta, out, hdr, hcap,
                               total, err)
    if rc == _E_NOSPACE:
        hcap = total[0]
        hdr = ffi.new("int64_t[]", 4 * hcap)
        rc = lib.pl_records_decode(data, len(data), n, header.last_offset_delta, out, hdr,
                                   hcap, total, err)
    if rc != 0:
        if rc > 0:
            raise _corrupt(rc, pos, f" (records section byte {err[0]})")
        raise InvalidArgument(_reason(rc))
    return out, hdr, total[0]


def _as_bytes(records_section) -> bytes:
    if type(records_section) is bytes:
        return records_section
    try:
        return bytes(records_section)
    except TypeError as e:
        raise InvalidArgument("records_section must be a bytes-like object") from e


def _ints(cdata, count: int) -> list:
    """The first ``count`` int64 of ``cdata`` as a list (ffi.unpack is the
    quicker for a few, the memoryview for many)."""
    if count <= 64:
        return ffi.unpack(cdata, count) if count else []
    return memoryview(ffi.buffer(cdata, 8 * count)).cast("q").tolist()


# Per-thread scratch memory of the native calls (fetch fields, struct
# formats, append batches, state reads): reused call after call, since what
# is kept is copied out of it. _raw_alloc leaves memory uncleared, so only
# the pages a thread's calls touched are resident.
_scratch = threading.local()
_raw_alloc = ffi.new_allocator(should_clear_after_alloc=False)


# Compiled struct formats that cut keys and values out of a records section
# (pl_records_shape). Batches of same-sized records repeat the same format,
# so a few are kept; the cache is emptied rather than grown past its bound.
_CUTTERS: dict = {}
_CUTTERS_MAX = 16
_SHAPE_CHARS_PER_FIELD = 2 * 10 + 2      # "<gap>x<len>s", each < 2**31
# Below this many records a batch is cheaper to slice field by field.
_CUT_RECORDS_MIN = 8


def _cut(data, fields, n: int, want_keys: bool, origin: int):
    """(tuple of [key, value,] ... bytes, PL_SHAPE_* flags) with one
    struct.unpack over ``data`` from ``origin``, or None when a wanted field
    is null (the caller slices field by field)."""
    cap = n * (2 if want_keys else 1) * _SHAPE_CHARS_PER_FIELD
    scratch = getattr(_scratch, "shape", None)
    if scratch is None or scratch[3] < cap:
        # per thread, grown to the largest range seen, never cleared: the C
        # code writes what is read back (out[0] bytes)
        scratch = _scratch.shape = (_raw_alloc("char[]", cap), ffi.new("size_t *"),
                                    ffi.new("uint32_t *"), cap)
    fmt, out, flags, _ = scratch
    if lib.pl_records_shape(fields, n, want_keys, origin, fmt, cap, out, flags) != 0:
        return None
    key = ffi.buffer(fmt, out[0])[:]
    cutter = _CUTTERS.get(key)
    if cutter is None:
        if len(_CUTTERS) >= _CUTTERS_MAX:
            _CUTTERS.clear()
        cutter = _CUTTERS[key] = _struct.Struct(b"<" + key)
    return cutter.unpack_from(data, origin), flags[0]


_tuple_new = tuple.__new__
SHAPE_DENSE_OFFSETS = lib.PL_SHAPE_DENSE_OFFSETS
SHAPE_SAME_TIMESTAMP = lib.PL_SHAPE_SAME_TIMESTAMP
SHAPE_NULL_KEYS = lib.PL_SHAPE_NULL_KEYS


def _rows(data, fields, n: int, hdr, nh: int, origin: int = 0, offset_base: int = 0,
          ts_base: int = 0, ts_fixed=None, topic=None, partition=None, row_type=None,
          values_only: bool = False) -> list:
    """Records out of decoded ``fields`` (PL_RECORD_FIELDS each, positions in
    ``data``): offset = offset_base + field 0, timestamp = ts_fixed or
    ts_base + field 1. Returns values (``values_only``), or rows
    (offset, ts, key, value, headers), prefixed with topic and partition
    when ``topic`` is given, built as ``row_type`` when given."""
    if not n:
        return []
    cut = _cut(data, fields, n, not values_only, origin) \
        if n >= _CUT_RECORDS_MIN and not nh else None
    if cut is not None:
        # Column-wise, without a Python frame per record: the keys and values
        # come out of one struct.unpack, every other column is a C iterator.
        kv, flags = cut
        if values_only:
            return list(kv)
        if flags & SHAPE_NULL_KEYS:
            keys, values = _repeat(None, n), kv
        else:
            keys, values = kv[0::2], kv[1::2]
        columns = memoryview(ffi.buffer(fields, 64 * n)).cast("q")
        first = offset_base + columns[0]
        offsets = (range(first, first + n) if flags & SHAPE_DENSE_OFFSETS
                   else map(_add, _repeat(offset_base), columns[0::8]))
        if ts_fixed is not None:
            timestamps = _repeat(ts_fixed, n)
        elif flags & SHAPE_SAME_TIMESTAMP:
            timestamps = _repeat(ts_base + columns[1], n)
        else:
            timestamps = map(_add, _repeat(ts_base), columns[1::8])
        if topic is None:
            return list(zip(offsets, timestamps, keys, values, _repeat((), n)))
        rows = zip(_repeat(topic, n), _repeat(partition, n), offsets, timestamps,
                   keys, values, _repeat((), n))
        if row_type is None:
            return list(rows)
        return list(map(_tuple_new, _repeat(row_type, n), rows))
    recs = _ints(fields, 8 * n)
    if values_only:
        return [data[vo:vo + vl] if vl >= 0 else None
                for vo, vl in zip(recs[4::8], recs[5::8])]
    hdrs = _ints(hdr, 4 * nh) if nh else ()
    result = []
    append = result.append
    it = iter(recs)
    try:
        for od, td, ko, kl, vo, vl, hi, hc in zip(it, it, it, it, it, it, it, it):
            if hc:
                hl = []
                for j in range(4 * hi, 4 * (hi + hc), 4):
                    hko, hkl, hvo, hvl = hdrs[j:j + 4]
                    hl.append((data[hko:hko + hkl].decode("utf-8"),
                               data[hvo:hvo + hvl] if hvl >= 0 else None))
                headers = tuple(hl)
            else:
                headers = ()
            if topic is None:
                append((offset_base + od, ts_fixed if ts_fixed is not None else ts_base + td,
                        data[ko:ko + kl] if kl >= 0 else None,
                        data[vo:vo + vl] if vl >= 0 else None, headers))
                continue
            row = (topic, partition, offset_base + od,
                   ts_fixed if ts_fixed is not None else ts_base + td,
                   data[ko:ko + kl] if kl >= 0 else None,
                   data[vo:vo + vl] if vl >= 0 else None, headers)
            append(row if row_type is None else _tuple_new(row_type, row))
    except UnicodeDecodeError as e:
        raise CorruptLogError(f"header key is not valid UTF-8: {e}") from e
    return result


def decode_records(records_section, header: BatchHeader, topic=None, partition=None,
                   row_type=None):
    """Decode the (decompressed) records section of the batch ``header``.

    Returns ``[(offset, timestamp_ms, key, value, headers), ...]`` with
    absolute offsets and timestamps (log-append-time batches report
    maxTimestamp for every record, as Kafka does). With ``topic`` and
    ``partition`` given, each tuple starts with them (the field order of
    ``pylog.Record``), and with ``row_type`` (a tuple subclass of that
    shape, such as ``pylog.Record``) the rows are built as that type, which
    saves the consumer a copy per record.
    """
    data = _as_bytes(records_section)
    fields, hdr, nh = _decode_raw(data, header)
    try:
        return _rows(data, fields, header.records_count, hdr, nh,
                     offset_base=header.base_offset, ts_base=header.base_timestamp,
                     ts_fixed=header.max_timestamp
                     if header.attributes & TIMESTAMP_TYPE_MASK else None,
                     topic=topic, partition=partition, row_type=row_type)
    except CorruptLogError as e:
        raise CorruptLogError(str(e), position=header.position) from None


def decode_values(records_section, header: BatchHeader):
    """Fast path: only the values of the records (None for null values)."""
    data = _as_bytes(records_section)
    fields, hdr, nh = _decode_raw(data, header)
    return _rows(data, fields, header.records_count, hdr, nh, values_only=True)


class FetchResult(NamedTuple):
    """Where a :func:`fetch` stopped (pl_fetch_out)."""
    position: int          # next batch to read
    next_offset: int       # offset the next fetch expects
    stop: int              # FETCH_*
    stop_position: int     # batch it stopped at (ROOM, COMPRESSED, CORRUPT)
    error: Optional[str]   # why the batch at stop_position is corrupt
    position_base: int     # baseOffset of the batch at position (-1: unknown)


FETCH_END = lib.PL_FETCH_END
FETCH_FULL = lib.PL_FETCH_FULL
FETCH_COMPRESSED = lib.PL_FETCH_COMPRESSED
FETCH_CORRUPT = lib.PL_FETCH_CORRUPT
# Records one fetch decodes at most; a batch with more takes the per-batch
# path (PL_FETCH_ROOM, as do PL_FETCH_HEADERS and compressed batches).
# Bounds the scratch memory of a thread (6 MiB).
FETCH_RECORDS_MAX = 65536
# A fetch starts no new batch past this many records: the objects built from
# one fetch then stay in the CPU caches (one step of 10,000 ran ~25% slower).
FETCH_RECORDS_STEP = 2048
_HEADERS_PER_RECORD_ROOM = 2


# pl_fetch_out, field by field (pylog_native.h), read in one call
_FETCH_OUT = _struct.Struct("=5q2i2q")


def _fetch_scratch():
    """Per-thread (fields, headers, out, out's bytes, records) for
    FETCH_RECORDS_MAX records; reused because the rows copy everything they
    keep out of it."""
    s = getattr(_scratch, "fetch", None)
    if s is None:
        out = ffi.new("pl_fetch_out *")
        assert ffi.sizeof(out[0]) == _FETCH_OUT.size
        s = _scratch.fetch = (ffi.new("int64_t[]", 8 * FETCH_RECORDS_MAX),
                              ffi.new("int64_t[]", 4 * _HEADERS_PER_RECORD_ROOM
                                      * FETCH_RECORDS_MAX),
                              out, ffi.buffer(out), FETCH_RECORDS_MAX)
    return s


#: fetch's row options: (topic, partition, row_type, values_only), the
#: last four parameters of _rows, passed on positionally.
PLAIN_ROWS = (None, None, None, False)
VALUES_ONLY = (None, None, None, True)


def fetch(seg_p, data, end: int, pos: int, expected: int, first_base: int,
          max_records: int, build: tuple = PLAIN_ROWS):
    """Decode the batches of a segment from byte ``pos``, where offset
    ``expected`` must be and whose first batch has baseOffset ``first_base``
    (-1: unknown), up to ``end`` and ``max_records`` records, in one native
    call (pl_fetch). ``seg_p``/``data`` are a pointer to and the buffer of
    the segment's map. Returns (rows as :func:`_rows` builds them with the
    row options ``build``, :class:`FetchResult`); raises CorruptLogError
    (position: the first batch of the range) for a header key that is not
    UTF-8."""
    fields, hdrs, out, out_bytes, cap = _fetch_scratch()
    rc = lib.pl_fetch(seg_p, end, pos, expected, first_base, min(max_records, cap),
                      FETCH_RECORDS_STEP, fields, cap, hdrs, _HEADERS_PER_RECORD_ROOM * cap,
                      out)
    if rc != 0:
        raise InvalidArgument(_reason(rc))
    return _fetched(data, pos, fields, hdrs, out_bytes, build)


def _fetched(data, pos: int, fields, hdrs, out_bytes, build: tuple):
    """(rows, :class:`FetchResult`) of a pl_fetch into the thread's scratch
    (:func:`_fetch_scratch`), from byte ``pos`` of ``data``."""
    (position, next_offset, n, nh, stop_position, stop, error, error_offset,
     position_base) = _FETCH_OUT.unpack_from(out_bytes)
    # (tuple.__new__: NamedTuple's own __new__ is a Python function)
    result = _tuple_new(FetchResult, (
        position, next_offset, stop, stop_position,
        None if stop != FETCH_CORRUPT else
        _reason(error) + (f" (records section byte {error_offset})" if error_offset else ""),
        position_base))
    if not n:
        return [], result
    topic, partition, row_type, values_only = build
    if n == 1 and not nh and topic is not None:
        # one record of a wake-up (the latency path): no row loop
        o, t, ko, kl, vo, vl = ffi.unpack(fields, 6)
        row = (topic, partition, o, t, data[ko:ko + kl] if kl >= 0 else None,
               data[vo:vo + vl] if vl >= 0 else None, ())
        return [row if row_type is None else _tuple_new(row_type, row)], result
    try:
        return _rows(data, fields, n, hdrs, nh, pos, 0, 0, None, topic, partition, row_type,
                     values_only), result
    except CorruptLogError as e:
        raise CorruptLogError(str(e), position=pos) from None


WAIT_WOKEN = lib.PL_WAIT_WOKEN
WAIT_TIMEOUT = lib.PL_WAIT_TIMEOUT
# wait_fetch pauses the collector (pylog.gcpause) while it builds this many
# rows or more; the few rows of a wake-up are built without the pause,
# which would cost more than it saves
WAIT_PAUSE_RECORDS = 256


class Handoff:
    """This process's readers of one partition blocked in :func:`wait_fetch`,
    for that partition's appenders (``pl_appender.handoff``): ``block[1]``
    counts the ones waiting (kept by pl_wait_fetch), ``block[0]`` the
    hand-offs (bumped through ``counts`` by a woken reader once it holds the
    GIL). An append that rings while one of them waits, HOLD_GAP_NS or more
    after its appender's previous append, returns only once one of them has
    the GIL, or after HOLD_MAX_NS (see hold_for_reader in pylog_native.c).
    Process memory: a forked child's Logs make their own."""

    __slots__ = ("block", "counts")

    def __init__(self):
        self.block = ffi.new("uint32_t[2]")
        self.counts = memoryview(ffi.buffer(self.block)).cast("I")


# An append that wakes a reader of its own process waits at most this long
# for the reader to take the GIL (a few wake-ups' worth), and only when the
# appender's previous append ended HOLD_GAP_NS or more before: a sparse
# stream, where latency is what counts, not a producer appending back to
# back (pl_appender.hold_*). Each appender then spins at most HOLD_MAX_NS
# per HOLD_GAP_NS.
HOLD_MAX_NS = 200_000
HOLD_GAP_NS = 500_000


def wait_fetch(slot_p, seen: int, timeout_s: float, state_p, seg_base: int, seg_p, seg_len: int,
               data, pos: int, expected: int, first_base: int, max_records: int,
               build: tuple = PLAIN_ROWS, handoff: Optional[Handoff] = None):
    """Wait up to ``timeout_s`` for the doorbell slot at ``slot_p`` to move
    from ``seen``, then, in the same native call (pl_wait_fetch), decode
    what the partition whose state is at ``state_p`` committed from offset
    ``expected`` on in its active segment, when that is ``seg_base``
    (mapped at ``seg_p``/``data``, ``seg_len`` bytes); the other arguments
    as for :func:`fetch`. Returns None on timeout, () when woken with
    nothing decoded (the caller fetches the usual way), else (rows,
    :class:`FetchResult`) as :func:`fetch` returns them. The collector is
    paused (from the wake on, not through the wait) while many rows are
    built. ``seg_p`` (from :func:`pointer`) is released before the rows
    are built; ``data`` keeps the bytes alive. With ``handoff`` (the
    partition's :class:`Handoff`), the wait is counted in it and a wake
    hands off to the appender that rang."""
    fields, hdrs, out, out_bytes, cap = _fetch_scratch()
    waiting = ffi.NULL if handoff is None else handoff.block + 1
    seq, n = seen & 0xFFFFFFFF, min(max_records, cap)
    try:
        rc = _waited(lambda us: lib.pl_wait_fetch(
            slot_p, waiting, seq, us, state_p, seg_base, seg_p, seg_len, pos, expected,
            first_base, n, FETCH_RECORDS_STEP, fields, cap, hdrs,
            _HEADERS_PER_RECORD_ROOM * cap, out),
            timeout_s, "wait_fetch: bad slot, state or segment pointer")
    finally:
        ffi.release(seg_p)
    if rc == WAIT_TIMEOUT:
        return None
    if handoff is not None:
        # (a plain store with the GIL held: the appender that rang returns
        # and queues for the GIL only now)
        counts = handoff.counts
        counts[0] = (counts[0] + 1) & 0xFFFFFFFF
    if rc == WAIT_WOKEN:
        return ()
    if out.records < WAIT_PAUSE_RECORDS:
        return _fetched(data, pos, fields, hdrs, out_bytes, build)
    with _gc_paused():
        return _fetched(data, pos, fields, hdrs, out_bytes, build)


# ---------------------------------------------------------------------------
# segment scan
# ---------------------------------------------------------------------------

class ScanResult(NamedTuple):
    end_position: int
    next_offset: int
    max_timestamp: int
    batch_count: int
    error_position: Optional[int]
    error_reason: Optional[str]
    continues_after_error: bool
    index_entries: list
    timeindex_entries: list
    bytes_since_last_entry: int


_SCAN_CAP = 4096


def scan_segment(buf, start: int = 0, end: Optional[int] = None, *, expected_offset: int = -1,
                 segment_base_offset: int = 0, index_interval_bytes: int = 4096,
                 bytes_since_last_entry: int = 0, max_timestamp: int = -1) -> ScanResult:
    """Walk valid batches of ``buf[start:end]`` (see pl_segment_scan).

    ``expected_offset`` -1 disables the baseOffset continuity check.  A
    zero-filled tail is a clean end.  Index entries use positions in ``buf``.
    """
    idx = ffi.new("int32_t[]", 2 * _SCAN_CAP)
    tidx = ffi.new("int64_t[]", 2 * _SCAN_CAP)
    out = ffi.new("pl_scan_out *")
    index_entries = []
    timeindex_entries = []
    batch_count = 0
    next_offset = expected_offset
    check = expected_offset >= 0
    pos = start
    maxts = max_timestamp
    bsle = bytes_since_last_entry
    with _rbuf(buf) as p:
        n = len(p)
        if end is None:
            end = n
        if not (0 <= start <= end <= n):
            raise InvalidArgument(f"bad start/end {start}/{end} for a buffer of {n} bytes")
        while True:
            cnt = lib.pl_segment_scan(p, end, pos, next_offset if check else -1,
                                      segment_base_offset, index_interval_bytes, bsle, maxts,
                                      idx, tidx, _SCAN_CAP, out)
            if cnt < 0:
                raise InvalidArgument(_reason(cnt))
            if cnt:
                iv = memoryview(ffi.buffer(idx, 8 * cnt)).cast("i").tolist()
                tv = memoryview(ffi.buffer(tidx, 16 * cnt)).cast("q").tolist()
                index_entries.extend(zip(iv[0::2], iv[1::2]))
                timeindex_entries.extend(zip(tv[0::2], tv[1::2]))
            if out.batch_count:
                next_offset = out.next_offset
            batch_count += out.batch_count
            pos = out.end_position
            maxts = out.max_timestamp
            bsle = out.bytes_since_last_entry
            if not out.capacity_stop:
                break
    reason = out.error_reason
    return ScanResult(pos, next_offset, maxts, batch_count,
                      out.error_position if reason else None,
                      _reason(reason) if reason else None,
                      bool(out.continues_after_error) if reason else False,
                      index_entries, timeindex_entries, bsle)


# ---------------------------------------------------------------------------
# indexes
# ---------------------------------------------------------------------------

def index_lookup(index_bytes, target_rel: int):
    """Largest (rel_offset, position) entry with rel_offset <= target, or None."""
    if not -2**31 <= target_rel <= _INT32_MAX:
        target_rel = _INT32_MAX if target_rel > 0 else -2**31
    rel = ffi.new("int32_t *")
    posp = ffi.new("int32_t *")
    with _rbuf(index_bytes) as p:
        rc = lib.pl_index_lookup(p, len(p), target_rel, rel, posp)
    if rc == 0:
        return rel[0], posp[0]
    if rc == 1:
        return None
    raise InvalidArgument(_reason(rc))


def index_validate(index_bytes, segment_size: int):
    """None if the offset index is sane, else the byte position of the first bad entry."""
    with _rbuf(index_bytes) as p:
        r = lib.pl_index_validate(p, len(p), segment_size)
    if r == 0:
        return None
    if r < 0:
        raise InvalidArgument(_reason(r))
    return r - 1


def timeindex_lookup(tindex_bytes, target_ts: int):
    """Largest (timestamp, rel_offset) entry with timestamp < target_ts, or None."""
    if not -2**63 <= target_ts < 2**63:
        target_ts = 2**63 - 1 if target_ts > 0 else -2**63
    ts = ffi.new("int64_t *")
    rel = ffi.new("int32_t *")
    with _rbuf(tindex_bytes) as p:
        rc = lib.pl_timeindex_lookup(p, len(p), target_ts, ts, rel)
    if rc == 0:
        return ts[0], rel[0]
    if rc == 1:
        return None
    raise InvalidArgument(_reason(rc))


def timeindex_validate(tindex_bytes):
    """None if the time index is sane, else the byte position of the first bad entry."""
    with _rbuf(tindex_bytes) as p:
        r = lib.pl_timeindex_validate(p, len(p))
    if r == 0:
        return None
    if r < 0:
        raise InvalidArgument(_reason(r))
    return r - 1


# ---------------------------------------------------------------------------
# partition state seqlock (layout: see pylog_native.h)
# ---------------------------------------------------------------------------

def _state_ptr(p):
    if len(p) < STATE_SIZE:
        raise InvalidArgument(f"state buffer needs {STATE_SIZE} bytes, has {len(p)}")
    return p


def state_publish(state_buf, next_offset, active_base_offset, active_position,
                  active_max_timestamp, layout_generation, log_start_offset) -> None:
    try:
        vals = ffi.new("int64_t[6]", [next_offset, active_base_offset, active_position,
                                      active_max_timestamp, layout_generation,
                                      log_start_offset])
    except (TypeError, OverflowError) as e:
        raise InvalidArgument(f"state fields must be int64: {e}") from e
    with _wbuf(state_buf) as p:
        rc = lib.pl_state_publish(_state_ptr(p), vals)
    if rc:
        raise InvalidArgument("state buffer must be 8-byte aligned")


def state_read(state_buf):
    """The 6 published fields, or None if a writer died mid-publish (BUSY)."""
    with _rbuf(state_buf) as p:
        return state_read_ptr(_state_ptr(p))


def state_read_ptr(state_p):
    """:func:`state_read` through a pointer from :func:`pointer` (read-only
    is fine): the per-poll path, without pinning the buffer on every call."""
    scratch = getattr(_scratch, "state", None)
    if scratch is None:
        scratch = _scratch.state = (ffi.new("int64_t[6]"), ffi.new("uint64_t *"))
    vals, seq = scratch
    rc = lib.pl_state_read(state_p, vals, seq)
    if rc == _E_BUSY:
        return None
    if rc:
        raise InvalidArgument("state buffer must be 8-byte aligned")
    return tuple(vals)


def state_repair(state_buf) -> None:
    with _wbuf(state_buf) as p:
        rc = lib.pl_state_repair(_state_ptr(p))
    if rc:
        raise InvalidArgument("state buffer must be 8-byte aligned")


# ---------------------------------------------------------------------------
# doorbell
# ---------------------------------------------------------------------------

def _slot(p, slot_index):
    off = slot_index * DOORBELL_SLOT_SIZE
    if slot_index < 0 or off + DOORBELL_SLOT_SIZE > len(p):
        raise InvalidArgument(f"doorbell slot {slot_index} outside a {len(p)}-byte buffer")
    return p + off


def doorbell_ring(buf, slot_index: int) -> None:
    with _wbuf(buf) as p:
        rc = lib.pl_doorbell_ring(_slot(p, slot_index))
    if rc:
        raise InvalidArgument("doorbell slot must be 4-byte aligned")


def doorbell_load(buf, slot_index: int) -> int:
    with _rbuf(buf) as p:
        return lib.pl_doorbell_load(_slot(p, slot_index))


def doorbell_wait(buf, slot_index: int, expected: int, timeout_s: Optional[float]) -> bool:
    """Wait until the slot's seq differs from ``expected``; True if it changed.

    ``timeout_s`` None waits forever.  The GIL is released while waiting.
    """
    with _wbuf(buf) as p:
        return doorbell_wait_at(_slot(p, slot_index), expected, timeout_s)


def doorbell_load_at(bell_p, slot_index: int) -> int:
    """:func:`doorbell_load` through a :func:`pointer` to the whole doorbell
    map (the poll path: no buffer pinned per call); ``slot_index`` must be a
    slot of it (pylog.store.topic_slot)."""
    return lib.pl_doorbell_load(bell_p + slot_index * DOORBELL_SLOT_SIZE)


def doorbell_wait_at(slot_p, expected: int, timeout_s: Optional[float]) -> bool:
    """:func:`doorbell_wait` on a slot given as a pointer (from
    :func:`pointer`, plus slot_index * DOORBELL_SLOT_SIZE)."""
    seq = expected & 0xFFFFFFFF
    return _waited(lambda us: lib.pl_doorbell_wait(slot_p, seq, us), timeout_s,
                   "doorbell slot must be 4-byte aligned") == 0


def _waited(wait, timeout_s: Optional[float], invalid: str) -> int:
    """The non-negative result of ``wait(us)``, a native futex wait given
    its timeout in microseconds (-1: none, for ``timeout_s`` None), called
    again with the time left after EINTR (Python's signal handlers run in
    between); raises InvalidArgument(``invalid``) for PL_E_INVAL, else
    OSError."""
    deadline = None if timeout_s is None else _time.monotonic() + max(0.0, timeout_s)
    us = -1 if deadline is None else int(max(0.0, timeout_s) * 1e6)
    while True:
        rc = wait(us)
        if rc >= 0:
            return rc
        if rc == -_errno.EINTR:
            if deadline is not None:
                us = max(0, int((deadline - _time.monotonic()) * 1e6))
            continue
        if rc == _E_INVAL:
            raise InvalidArgument(invalid)
        raise OSError(-rc, _os.strerror(-rc))


# ---------------------------------------------------------------------------
# byte-range locks (OFD locks on Linux)
# ---------------------------------------------------------------------------

_LOCK_MODES = {"u": 0, "r": 1, "w": 2}


def lock(fd: int, start: int, length: int, mode: str, wait: bool) -> bool:
    """Lock (``'r'``/``'w'``) or unlock (``'u'``) ``length`` bytes (0 = to EOF) at ``start``.

    Returns False if the range is busy and ``wait`` is false; raises OSError otherwise.
    """
    try:
        m = _LOCK_MODES[mode]
    except KeyError:
        raise InvalidArgument(f"lock mode must be 'u', 'r' or 'w', got {mode!r}") from None
    if hasattr(fd, "fileno"):
        fd = fd.fileno()
    while True:
        rc = lib.pl_lock(fd, start, length, m, 1 if wait else 0)
        if rc == 0:
            return True
        if rc == -_errno.EINTR:
            continue
        if not wait and rc in (-_errno.EAGAIN, -_errno.EACCES):
            return False
        raise OSError(-rc, _os.strerror(-rc))


# ---------------------------------------------------------------------------
# one-call append (FORMAT.rst P-2, P-3, I-2, L-3)
# ---------------------------------------------------------------------------

E_STALE = lib.PL_E_STALE
E_INVAL = lib.PL_E_INVAL
E_DELETED = lib.PL_E_DELETED
E_VANISHED = lib.PL_E_VANISHED      # the synced file left its path (L-6)
E_NOSPACE = _E_NOSPACE
STATE_INDEX_POSITION = lib.PL_STATE_INDEX_POSITION
_NULL = ffi.NULL


def pointer(buf, writable: bool = True):
    """A pointer into ``buf`` that stays valid (and pins the buffer, e.g. an
    mmap cannot be closed) until :func:`release` is called on it."""
    return ffi.from_buffer("uint8_t[]", buf, require_writable=writable)


def release(p) -> None:
    ffi.release(p)


def partitions_for_keys(keys, num_partitions: int) -> list:
    """Kafka's default partition of each key (bytes, none None), in one call."""
    n = len(keys)
    if not n:
        return []
    lens = _array("q", map(len, keys))
    blob = b"".join(keys)
    out = ffi.new("int32_t[]", n)
    rc = lib.pl_partition_many(blob, len(blob), ffi.from_buffer("int64_t[]", lens), n,
                               num_partitions, out)
    if rc != 0:
        raise InvalidArgument("keys must be bytes and num_partitions >= 1")
    return list(out)


def appender():
    """A ``pl_appender`` (pylog_native.h) with no segment: one per writer of
    a partition, filled by :func:`appender_setup`, used under the writer's
    lock. Results of the last append are in its ``out`` and ``written_*``
    fields."""
    a = ffi.new("pl_appender *")
    a.seg_fd = a.index_fd = a.timeindex_fd = -1
    a.hold_max_ns, a.hold_gap_ns = HOLD_MAX_NS, HOLD_GAP_NS
    return a


def appender_setup(a, *, state_p, lock, seg_p, seg_cap: int, seg_base: int, seg_fd: int,
                   index_fds, index_interval: int, bell_p, slot: int,
                   handoff: Optional[Handoff] = None) -> None:
    """Point the appender ``a`` at a (re)mapped active segment.
    ``state_p``/``seg_p``/``bell_p`` come from :func:`pointer` (``bell_p``
    may be None) and must outlive the appender's use; ``lock`` is (token,
    liveness fd, state fd) of :func:`plock_acquire`; ``seg_fd`` is the
    segment's descriptor, which batches of APPEND_WRITE_BYTES_MIN or more
    are written through (see :func:`append_columns`); ``handoff`` is the
    partition's :class:`Handoff` in this process."""
    a.state = state_p
    a.seg = seg_p
    a.seg_cap = seg_cap
    a.seg_fd = seg_fd
    a.seg_base = seg_base
    a.index_interval = index_interval
    a.bell = bell_p if bell_p is not None else _NULL
    a.slot = slot
    a.handoff = ffi.NULL if handoff is None else handoff.block
    a.lock_token, a.live_fd, a.state_fd = lock
    a.index_fd, a.timeindex_fd = index_fds


# Appends through an appender, each one native call: lock, encode straight
# into the mapped segment, publish, index entry, unlock, doorbell. Return 0,
# APPEND_INDEX_FAILED (appended; out.index_errno says why the sparse index
# entry was not written), E_NOSPACE (out.size is the needed size), E_STALE
# (remap the active segment and retry), E_DELETED, or -errno.
APPEND_INDEX_FAILED = lib.PL_APPEND_INDEX_FAILED

#: ``append_record(a, timestamp, key, key_len, value, value_len)``: one
#: record without headers; key/value are bytes (b"" with length -1 for null).
#: Returns its offset (>= 0), E_APPENDED_NO_INDEX (appended: the offset is
#: in a.out, the index entry is missing) or a negative status as above.
append_record = lib.pl_append_record
E_APPENDED_NO_INDEX = lib.PL_E_APPENDED_NO_INDEX


class Columns(NamedTuple):
    """Records without headers as columns, ready for :func:`append_columns`."""
    count: int
    keys: bytes          # every key, concatenated (b"" when all are null)
    key_lens: list       # per key; None when every key is null
    values: bytes
    value_lens: list

    @property
    def size(self) -> int:
        return len(self.keys) + len(self.values)


def columns(keys, values):
    """:class:`Columns` of a non-empty sequence of values and one of keys
    (or None: all keys null), or None when an element is not a bytes-like
    object of single bytes (the caller then checks item by item)."""
    try:
        vlens = list(map(len, values))
        vblob = b"".join(values)
        if keys is None:
            klens, kblob = None, b""
        else:
            klens = list(map(len, keys))
            kblob = b"".join(keys)
    except TypeError:
        return None
    # len() counts items: a memoryview of wider items would not match
    if len(vblob) != sum(vlens) or (klens is not None and len(kblob) != sum(klens)):
        return None
    return Columns(len(vlens), kblob, klens, vblob, vlens)


def _lengths(lens: list):
    """(int32 array or NULL, the common length or -1) for pl_append_columns:
    a column of equal lengths (the common case) is described by one number."""
    if lens.count(lens[0]) == len(lens):
        return _NULL, lens[0]
    return ffi.from_buffer("int32_t[]", _array("i", lens)), -1


APPEND_WRITE_BYTES_MIN = lib.PL_APPEND_WRITE_BYTES_MIN
# Batches up to this size are encoded in the calling thread's scratch and
# written with one pwrite (pl_appender.scratch); longer ones go through the
# map. Covers the default max_message_bytes (1 MiB); the memory is allocated
# uncleared, so only what a thread's batches touched is resident.
APPEND_SCRATCH_BYTES = 1024 * 1024 + 64 * 1024


def _with_scratch(a):
    """Point ``a`` at the calling thread's append scratch (the append runs
    without the GIL, so two threads appending to two partitions each need
    their own)."""
    scratch = getattr(_scratch, "append", None)
    if scratch is None:
        scratch = _scratch.append = (_raw_alloc("uint8_t[]", APPEND_SCRATCH_BYTES),
                                     APPEND_SCRATCH_BYTES)
    a.scratch, a.scratch_cap = scratch    # (the size it was allocated with)
    return a


def append_columns(a, timestamp: int, cols: Columns) -> int:
    """Append :class:`Columns` sharing ``timestamp`` as one batch."""
    vlens, vlen = _lengths(cols.value_lens)
    klens, klen = (_NULL, -1) if cols.key_lens is None else _lengths(cols.key_lens)
    return lib.pl_append_columns(_with_scratch(a), cols.count, timestamp, klens, klen,
                                 cols.keys, len(cols.keys), vlens, vlen, cols.values,
                                 len(cols.values))


def syncer():
    """A group-commit syncer (``pl_syncer``, pylog_native.h), freed with
    the returned object."""
    s = lib.pl_syncer_new()
    if s == _NULL:
        raise MemoryError("pl_syncer_new")
    return ffi.gc(s, lib.pl_syncer_free)


def syncer_set_fd(s, fd: int, durable_next: int, path: str | None = None) -> None:
    """Sync ``fd`` (the new active segment; -1: none) from now on; offsets
    below ``durable_next`` are durable (sealed segments, S-4). With
    ``path``, every sync also checks that the file is still there (L-6:
    E_VANISHED otherwise)."""
    rc = lib.pl_syncer_set_fd(s, fd, durable_next,
                              _os.fsencode(path) if path is not None else _NULL)
    if rc < 0:
        raise OSError(-rc, _os.strerror(-rc))


#: ``sync_through(syncer, appender, target_next)``: return 0 once the
#: offsets below target_next appended through ``appender`` are durable, or
#: -errno of the (sticky) failed fdatasync; waits without the GIL.
sync_through = lib.pl_sync_through


def append_records(a, records) -> int:
    """Validated ``records`` [(timestamp_ms, key, value, headers)] as one batch."""
    n, meta, blob = _pack(records)
    return lib.pl_append_packed(_with_scratch(a), n, ffi.from_buffer("int64_t[]", meta),
                                len(meta), blob, len(blob))


def state_index_position(state_buf) -> int:
    """Position of the batch of the active segment's last index entry (I-2),
    kept at byte STATE_INDEX_POSITION of partition.state; lock holders only."""
    return _struct.unpack_from("=q", state_buf, STATE_INDEX_POSITION)[0]


def set_state_index_position(state_buf, position: int) -> None:
    _struct.pack_into("=q", state_buf, STATE_INDEX_POSITION, position)


def doorbell_ring_ptr(bell_p, slot: int) -> None:
    """Ring ``slot`` and slot 0 of a doorbell map given as a :func:`pointer` (L-3)."""
    lib.pl_doorbell_ring(bell_p + slot * DOORBELL_SLOT_SIZE)
    if slot:
        lib.pl_doorbell_ring(bell_p)


LIVENESS_BASE = 1 << lib.PL_LIVENESS_BASE_LOG2


def new_lock_token() -> int:
    """A random non-zero 31-bit token naming one open Log as a lock holder."""
    return int.from_bytes(_os.urandom(4), "little") % 0x7FFFFFFF + 1


def liveness_lock(live_fd: int, token: int) -> None:
    """Hold the read lock that tells others the Log with ``token`` is alive."""
    rc = lib.pl_liveness_lock(live_fd, token)
    if rc != 0:
        raise OSError(-rc, "liveness lock: " + _os.strerror(-rc))


def plock_acquire(state_p, token: int, live_fd: int, state_fd: int, wait: bool) -> bool:
    """Take a partition's append lock (P-3). Returns False only when busy and
    not waiting. Taking it over from a dead holder counts as taking it."""
    while True:
        rc = lib.pl_plock_acquire(state_p, token, live_fd, state_fd, 1 if wait else 0)
        if rc in (0, 1):
            return True
        if rc == _E_BUSY:
            return False
        if rc == -_errno.EINTR:
            continue
        if rc == _E_INVAL:
            raise InvalidArgument("append lock: invalid state, token, or already held")
        raise OSError(-rc, "append lock: " + _os.strerror(-rc))


def plock_release(state_p, token: int, state_fd: int) -> None:
    rc = lib.pl_plock_release(state_p, token, state_fd)
    if rc != 0:
        raise InvalidArgument("append lock released by a Log that does not hold it")
