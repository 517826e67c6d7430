"""Python face of the native core (csrc/, declared in csrc/pylog_native.h):
the codec (CRC32C, murmur2, batch encode and decode, fetch, scan, index
search) and the one-call append.

The modules that touch the cffi ``ffi``/``lib`` objects are this one and
the ones it is split into, named for what they own: :mod:`pylog.status`
(native status codes to exceptions), :mod:`pylog._buffers` (cdata views),
:mod:`pylog._scratch` (per-thread scratch memory), :mod:`pylog._rows` (rows
out of decoded records), :mod:`pylog._handoff` (the GIL hand-off policy)
and :mod:`pylog._crossproc` (state seqlock, doorbells, locks, group
commit). Their public names are re-exported here, so the layers above
import this module only.

At import the byte layout of :mod:`pylog._format` is compared with the C
header's; a difference raises ImportError.

Record tuples are ``(timestamp_ms, key, value, headers)`` with ``key``/``value``
bytes-like or None and ``headers`` a sequence of ``(str, bytes | None)`` (or
None / empty).  Batches are Kafka RecordBatch v2 (magic 2), see FORMAT.rst.

Thread safety: every function is safe from any thread; an appender is used
by one thread at a time (its writer's lock).
"""

from __future__ import annotations

from array import array as _array
from typing import NamedTuple, Optional

from . import _format
from . import _scratch as _scr
from . import status as _status
from ._buffers import pointer, release
from ._buffers import rbuf as _rbuf
from ._buffers import wbuf as _wbuf
from ._columns import Columns, append_columns, columns, partitions_for_keys  # noqa: F401 (re-exported)
from ._crossproc import (  # noqa: F401 (re-exported)
    DOORBELL_SLOT_SIZE,
    LIVENESS_BASE,
    STATE_INDEX_POSITION,
    STATE_MAGIC,
    STATE_SIZE,
    Watch,
    count_append,
    count_fetch,
    count_fsync,
    counters_read,
    doorbell_load,
    doorbell_load_at,
    doorbell_ring,
    doorbell_ring_ptr,
    doorbell_wait,
    doorbell_wait_at,
    doorbell_watch_at,
    liveness_lock,
    lock,
    new_lock_token,
    plock_acquire,
    plock_release,
    set_state_index_position,
    state_index_position,
    state_publish,
    state_read,
    state_read_ptr,
    state_repair,
    sync_through,
    syncer,
    syncer_set_fd,
)
from ._crossproc import waited as _waited
from ._format import (  # noqa: F401 (re-exported)
    ATTRIBUTES_OFFSET,
    BASE_OFFSET_OFFSET,
    BASE_SEQUENCE_OFFSET,
    BASE_TIMESTAMP_OFFSET,
    BATCH_HEADER_SIZE,
    BATCH_LENGTH_OFFSET,
    BATCH_OVERHEAD,
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_MASK,
    CODEC_NONE,
    CODEC_SNAPPY,
    CODEC_ZSTD,
    CONTROL_MASK,
    CRC_OFFSET,
    DELETE_HORIZON_MASK,
    HEADER_STRUCT,
    LAST_OFFSET_DELTA_OFFSET,
    LENGTH_FIELD_END,
    MAGIC_OFFSET,
    MAGIC_V2,
    MAX_TIMESTAMP_OFFSET,
    PARTITION_LEADER_EPOCH_OFFSET,
    PRODUCER_EPOCH_OFFSET,
    PRODUCER_ID_OFFSET,
    RECORDS_COUNT_OFFSET,
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    TIMESTAMP_TYPE_MASK,
    TRANSACTIONAL_MASK,
)
from ._handoff import HOLD_GAP_NS, HOLD_MAX_NS, WAIT_PAUSE_RECORDS, Handoff  # noqa: F401 (re-exported)
from ._handoff import reader_took_gil as _reader_took_gil
from ._pylog_native import ffi, lib
from ._rows import rows as _rows
from ._scan import (  # noqa: F401 (re-exported)
    ScanResult,
    index_lookup,
    index_validate,
    scan_segment,
    timeindex_lookup,
    timeindex_validate,
)
from ._scratch import (  # noqa: F401 (re-exported)
    APPEND_SCRATCH_BYTES,
    APPEND_WRITE_BYTES_MIN,
    FETCH_RECORDS_MAX,
    FETCH_RECORDS_STEP,
)
from .errors import CorruptLogError, InvalidArgument
from .gcpause import paused as _gc_paused
from .status import check as _check
from .status import check_corrupt as _check_corrupt
from .status import reason as _reason

__all__ = [
    # the codec (this module)
    "HAS_HW_CRC32C", "NoSpace", "BatchHeader", "ScanResult", "FetchResult", "wait_request",
    "crc32c", "crc32c_portable", "crc32c_hw", "murmur2", "murmur2_bytes",
    "partition_for_key", "partitions_for_keys", "encoded_size", "encode_batch_into",
    "encode_batch", "encode_records", "wrap_records", "read_batch_header",
    "decode_records", "decode_values", "fetch", "wait_fetch", "scan_segment",
    "index_lookup", "index_validate", "timeindex_lookup", "timeindex_validate",
    "FETCH_END", "FETCH_FULL", "FETCH_COMPRESSED", "FETCH_CORRUPT", "FETCH_TXN",
    "FETCH_LIMIT", "fetch_txn", "PLAIN_ROWS",
    "VALUES_ONLY", "WAIT_WOKEN", "WAIT_TIMEOUT",
    # the one-call append (this module)
    "appender", "appender_setup", "append_record", "append_record_h1",
    "append_records", "append_columns",
    "Columns", "columns", "APPEND_INDEX_FAILED", "E_STALE", "E_INVAL", "E_DELETED",
    "E_VANISHED", "E_NOFD", "E_NOSPACE", "E_APPENDED_NO_INDEX",
    # byte layout (pylog._format)
    "BATCH_HEADER_SIZE", "BATCH_OVERHEAD", "LENGTH_FIELD_END", "HEADER_STRUCT",
    "BASE_OFFSET_OFFSET", "BATCH_LENGTH_OFFSET", "PARTITION_LEADER_EPOCH_OFFSET",
    "MAGIC_OFFSET", "CRC_OFFSET", "ATTRIBUTES_OFFSET", "LAST_OFFSET_DELTA_OFFSET",
    "BASE_TIMESTAMP_OFFSET", "MAX_TIMESTAMP_OFFSET", "PRODUCER_ID_OFFSET",
    "PRODUCER_EPOCH_OFFSET", "BASE_SEQUENCE_OFFSET", "RECORDS_COUNT_OFFSET", "MAGIC_V2",
    "CODEC_NONE", "CODEC_GZIP", "CODEC_SNAPPY", "CODEC_LZ4", "CODEC_ZSTD", "CODEC_MASK",
    "TIMESTAMP_TYPE_MASK", "TRANSACTIONAL_MASK", "CONTROL_MASK", "DELETE_HORIZON_MASK",
    "TIMESTAMP_CREATE_TIME", "TIMESTAMP_LOG_APPEND_TIME",
    # buffers, scratch, hand-off (pylog._buffers, _scratch, _handoff)
    "pointer", "release", "APPEND_SCRATCH_BYTES", "APPEND_WRITE_BYTES_MIN",
    "FETCH_RECORDS_MAX", "FETCH_RECORDS_STEP", "Handoff", "HOLD_MAX_NS", "HOLD_GAP_NS",
    "WAIT_PAUSE_RECORDS",
    # cross-process primitives (pylog._crossproc)
    "STATE_SIZE", "STATE_MAGIC", "STATE_INDEX_POSITION", "DOORBELL_SLOT_SIZE",
    "LIVENESS_BASE", "state_publish", "state_read", "state_read_ptr", "state_repair",
    "state_index_position", "set_state_index_position", "doorbell_ring", "doorbell_load",
    "doorbell_wait", "doorbell_load_at", "doorbell_wait_at", "doorbell_watch_at", "Watch",
    "doorbell_ring_ptr", "lock",
    "new_lock_token", "liveness_lock", "plock_acquire", "plock_release", "syncer",
    "syncer_set_fd", "sync_through", "count_append", "count_fetch", "count_fsync",
    "counters_read",
]


def check_layout(native) -> None:
    """Raise ImportError when the native library ``native`` declares a byte
    layout other than pylog/_format.py's (a library built from another
    version of csrc/pylog_native.h)."""
    bad = _format.native_mismatches(native)
    if bad:
        raise ImportError(
            "load pylog's native library: its byte layout differs from pylog/_format.py ("
            + "; ".join(f"{name} = {mine!r} but {cname} = {theirs!r}"
                        for name, mine, cname, theirs in bad)
            + "); rebuild the extension (pip install . or python setup.py build_ext "
            "--inplace)")


check_layout(lib)

HAS_HW_CRC32C = bool(lib.pl_crc32c_hw_available())

_E_NOSPACE = _status.E_NOSPACE
_E_INVAL = _status.E_INVAL
_NULL = ffi.NULL


class NoSpace(Exception):
    """The encoded batch does not fit; ``needed`` is the size it requires."""

    def __init__(self, needed: int):
        self.needed = needed
        super().__init__(f"encoded batch needs {needed} bytes")


def _corrupt(code: int, position: Optional[int], detail: str = "") -> CorruptLogError:
    return CorruptLogError(_reason(code) + detail, position=position)


def _check_encode_rc(rc: int, needed: int) -> None:
    if rc == 0:
        return
    if rc == _E_NOSPACE:
        raise NoSpace(needed)
    _check_corrupt(rc, "encode records", hint=(
        "a batch needs a record, int timestamps, timestamp deltas and lengths "
        "in int32/int64 range, and no compression bits in its attributes")
        if rc == _E_INVAL else None)


# ---------------------------------------------------------------------------
# CRC32C / murmur2
# ---------------------------------------------------------------------------

def _crc(fn, data, value):
    if not 0 <= value <= 0xFFFFFFFF:
        raise InvalidArgument("compute a CRC32C: the crc value must be an unsigned 32-bit int")
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
        raise InvalidArgument(f"partition a key: num_partitions must be >= 1, "
                              f"got {num_partitions!r}")
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


def read_batch_header(buf, pos: int = 0, end: Optional[int] = None, *,
                      crc: bool = True) -> BatchHeader:
    """Parse and validate (B-2, B-3) the batch header at ``buf[pos:end]``.

    A CRC mismatch (B-4) does not raise: check ``crc_valid``. ``crc=False``:
    the CRC is not computed (``crc_valid`` is False).
    """
    out = ffi.new("pl_batch_header_out *")
    with _rbuf(buf) as p:
        n = len(p)
        if end is None:
            end = n
        if not (0 <= pos and 0 <= end <= n):
            raise InvalidArgument(f"read a batch header: pos/end {pos}/{end} outside a "
                                  f"{n}-byte buffer")
        rc = (lib.pl_batch_header if crc else lib.pl_batch_framing)(p, end, pos, out)
    _check_corrupt(rc, "read a batch header", position=pos)
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
            "encode records: records must be (timestamp_ms: int, key: bytes|None, "
            f"value: bytes|None, headers: [(str, bytes|None)]|None) tuples: {e}") from e
    if n == 0:
        raise InvalidArgument("encode records: a batch needs at least one record (B-5)")
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
        raise InvalidArgument(f"encode a batch header: a field is out of range: {e}") from e
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
            raise InvalidArgument(f"encode a batch: position {pos} outside a {size}-byte buffer")
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
        raise InvalidArgument(f"encode records: base_timestamp out of range: {e}") from e
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

# B-7: records plus headers a producer puts in one batch. Readers do not
# refuse a batch over it: producers before the rule wrote such batches
# (a send_batch within a large max_message_bytes), and refusing them on
# read would lock their records out; R-5 and B-6 bound what a read builds.
BATCH_ITEMS_MAX = 1 << 22


def _decode_raw(data: bytes, header: BatchHeader):
    """Run the native decoder; returns (record fields, header fields, number
    of headers): PL_RECORD_FIELDS int64 per record and PL_HEADER_FIELDS per
    header, as cdata arrays."""
    n = header.records_count
    pos = header.position
    if n < 0 or header.last_offset_delta < 0:
        raise _corrupt(lib.PL_C_LAST_OFFSET_DELTA, pos)
    if n == 0:  # B-5
        raise _corrupt(lib.PL_C_EMPTY_BATCH, pos)
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
    if rc > 0:
        raise _corrupt(rc, pos, f" (records section byte {err[0]})")
    _check(rc, "decode records", hint="a records section and its header's counts")
    return out, hdr, total[0]


def _as_bytes(records_section) -> bytes:
    if type(records_section) is bytes:
        return records_section
    try:
        return bytes(records_section)
    except TypeError as e:
        raise InvalidArgument("decode records: records_section must be a bytes-like object") from e


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
FETCH_TXN = lib.PL_FETCH_TXN
FETCH_LIMIT = lib.PL_FETCH_LIMIT
_HEADERS_PER_RECORD_ROOM = _scr.HEADERS_PER_RECORD_ROOM
_FETCH_OUT = _scr.FETCH_OUT
_fetch_scratch = _scr.fetch
_tuple_new = tuple.__new__

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
    _check_corrupt(rc, "fetch records", hint="the segment pointer, its end and the "
                   "position must describe a mapped segment")
    return _fetched(data, pos, fields, hdrs, out_bytes, build)


def fetch_txn(seg_p, data, end: int, pos: int, expected: int, first_base: int,
              max_records: int, build: tuple, stop_offset: int, stop_txn: bool):
    """:func:`fetch` that stops at the batch starting at or past
    ``stop_offset`` (FETCH_LIMIT) and, with ``stop_txn``, at a transactional
    batch (FETCH_TXN): read_committed (FORMAT.rst X-4). Control batches are
    skipped by both (X-2)."""
    fields, hdrs, out, out_bytes, cap = _fetch_scratch()
    rc = lib.pl_fetch_txn(seg_p, end, pos, expected, first_base, min(max_records, cap),
                          FETCH_RECORDS_STEP, fields, cap, hdrs,
                          _HEADERS_PER_RECORD_ROOM * cap, out, stop_offset,
                          lib.PL_FETCH_STOP_TXN if stop_txn else 0)
    _check_corrupt(rc, "fetch records", hint="the segment pointer, its end and the "
                   "position must describe a mapped segment")
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


def wait_request():
    """This thread's request of :func:`wait_fetch`, a ``pl_wait_fetch_req``
    (pylog_native.h) reused call after call: the caller sets, by name,
    what the poll waits on (``slot``: the doorbell slot, a :func:`pointer`
    into the doorbell map; ``expected``: the slot's seq it saw, as a
    uint32; ``state``: the partition's mapped state) and where the reader
    is (``seg_base``, ``seg_len``: the mapped segment; ``pos``, ``next``,
    ``first_base``: as ``pos``, ``expected`` and ``first_base`` of
    :func:`fetch`; ``max_records``). A struct rather than 14 positional
    arguments: no value can land in another's place. Thread safety: the
    calling thread's own."""
    return _scr.wait_request()


def wait_fetch(req, seg_p, data, timeout_s: Optional[float], build: tuple = PLAIN_ROWS,
               handoff: Optional[Handoff] = None):
    """Wait up to ``timeout_s`` for the doorbell slot of ``req`` (from
    :func:`wait_request`) to move from ``req.expected``, then, in the same
    native call (pl_wait_fetch), decode what the partition whose state is
    ``req.state`` committed from offset ``req.next`` on in its active
    segment, when that is ``req.seg_base``, mapped at ``seg_p`` (a
    :func:`pointer`) and ``data``. Returns None on timeout, () when woken
    with nothing decoded (the caller fetches the usual way), else (rows,
    :class:`FetchResult`) as :func:`fetch` returns them. The collector is
    paused (from the wake on, not through the wait) while many rows are
    built (pylog._handoff). ``seg_p`` is released before the rows are
    built; ``data`` keeps the bytes alive. With ``handoff`` (the
    partition's :class:`Handoff`), the wait is counted in it and a wake
    hands off to the appender that rang."""
    fields, hdrs, out, out_bytes, cap = _fetch_scratch()
    if req.max_records > cap:
        req.max_records = cap
    req.seg = seg_p
    req.waiting = _NULL if handoff is None else handoff.waiting

    def wait(us):
        req.timeout_us = us
        return lib.pl_wait_fetch(req, out)
    try:
        rc = _waited(wait, timeout_s, "wait for records",
                     "the slot, state and segment pointers must be mapped and aligned")
    finally:
        req.seg = _NULL
        ffi.release(seg_p)
    if rc == WAIT_TIMEOUT:
        return None
    if handoff is not None:
        _reader_took_gil(handoff)
    if rc == WAIT_WOKEN:
        return ()
    pos = req.pos
    if out.records < WAIT_PAUSE_RECORDS:
        return _fetched(data, pos, fields, hdrs, out_bytes, build)
    with _gc_paused():
        return _fetched(data, pos, fields, hdrs, out_bytes, build)


def fetch_committed(state_p, cursor, seg_len: int, max_records: int, seg_p, data,
                    build: tuple = PLAIN_ROWS):
    """:func:`wait_fetch` without the wait (pl_wait_fetch on a slot that
    reads as rung): decode now what the partition whose state is at
    ``state_p`` committed after ``cursor`` (its ``segment_base``,
    ``position``, ``offset`` and ``base``, as ``req`` of
    :func:`wait_request` names them) in its active segment, when that is
    the cursor's segment, mapped at ``seg_p`` (left to the caller, which
    must keep it mapped through the call), ``seg_len`` bytes, and
    ``data``. Returns () when nothing was decoded that way
    (nothing new, the segment rolled or grew past the map, the state
    busy: the caller fetches the usual way), else (rows,
    :class:`FetchResult`) as :func:`fetch`."""
    req, fields, hdrs, out, out_bytes, cap = _scr.committed_request()
    req.state, req.seg, req.seg_len = state_p, seg_p, seg_len
    req.seg_base, req.pos = cursor.segment_base, cursor.position
    req.next, req.first_base = cursor.offset, cursor.base
    req.max_records = min(max_records, cap)
    rc = lib.pl_wait_fetch(req, out)
    if rc == WAIT_WOKEN:
        return ()
    if rc != lib.PL_WAIT_FETCHED:
        _check_corrupt(rc, "fetch records", hint="the state and segment pointers "
                       "must be mapped")
    if out.records < WAIT_PAUSE_RECORDS:
        return _fetched(data, req.pos, fields, hdrs, out_bytes, build)
    with _gc_paused():
        return _fetched(data, req.pos, fields, hdrs, out_bytes, build)


# ---------------------------------------------------------------------------
# one-call append (FORMAT.rst P-2, P-3, I-2, L-3)
# ---------------------------------------------------------------------------

E_STALE = _status.E_STALE
E_INVAL = _status.E_INVAL
E_DELETED = _status.E_DELETED
E_VANISHED = _status.E_VANISHED      # the synced file left its path (L-6)
E_NOFD = _status.E_NOFD              # no descriptor for a sync (not sticky)
E_NOSPACE = _status.E_NOSPACE
E_APPENDED_NO_INDEX = _status.E_APPENDED_NO_INDEX


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
#: ``append_record_h1(a, timestamp, key, key_len, value, value_len, hkey,
#: hkey_len, hval, hval_len)``: append_record with one header (bytes key;
#: value bytes, b"" with length -1 for null).
append_record_h1 = lib.pl_append_record_h1


_with_scratch = _scr.with_append


def append_records(a, records) -> int:
    """Validated ``records`` [(timestamp_ms, key, value, headers)] as one batch."""
    n, meta, blob = _pack(records)
    return lib.pl_append_packed(_with_scratch(a), n, ffi.from_buffer("int64_t[]", meta),
                                len(meta), blob, len(blob))
