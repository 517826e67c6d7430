"""Every byte-layout constant of pylog's files, each beside the FORMAT.rst
rule that defines it.

Pure data: no I/O, no native code, importable from any layer. The C core
declares the same values (the enums of csrc/pylog_native.h);
:mod:`pylog._native` compares the two at import and refuses to load
(ImportError) when they differ, so a layout change made on one side only
cannot write files the other side misreads. ``NATIVE_NAMES`` lists the
pairs it compares.

Offsets of the batch header are computed from one ``struct.Struct`` whose
fields are listed one per line, never typed by hand.

Thread safety: constants only.
"""

from __future__ import annotations

import struct

# ---------------------------------------------------------------------------
# Record batch (FORMAT.rst "Record batch (B)" table; big-endian, Kafka v2)
# ---------------------------------------------------------------------------

HEADER_FIELDS = (
    # (name, struct code)                      FORMAT.rst
    ("BASE_OFFSET", "q"),                      # offset of the first record
    ("BATCH_LENGTH", "i"),                     # B-2: bytes after this field
    ("PARTITION_LEADER_EPOCH", "i"),           # B-1: 0
    ("MAGIC", "b"),                            # B-3: 2
    ("CRC", "I"),                              # B-4: CRC32C of bytes 21..end
    ("ATTRIBUTES", "h"),                       # codec, timestamp type, ...
    ("LAST_OFFSET_DELTA", "i"),                # last offset - baseOffset
    ("BASE_TIMESTAMP", "q"),                   # B-1: first record's timestamp
    ("MAX_TIMESTAMP", "q"),
    ("PRODUCER_ID", "q"),                      # B-1: -1
    ("PRODUCER_EPOCH", "h"),                   # B-1: -1
    ("BASE_SEQUENCE", "i"),                    # B-1: -1
    ("RECORDS_COUNT", "i"),                    # B-5: at least 1
)
HEADER_STRUCT = struct.Struct(">" + "".join(code for _, code in HEADER_FIELDS))


def _offset(name: str) -> int:
    codes = ""
    for field, code in HEADER_FIELDS:
        if field == name:
            return struct.calcsize(">" + codes)
        codes += code
    raise KeyError(name)


BASE_OFFSET_OFFSET = _offset("BASE_OFFSET")                        # 0
BATCH_LENGTH_OFFSET = _offset("BATCH_LENGTH")                      # 8, B-2
PARTITION_LEADER_EPOCH_OFFSET = _offset("PARTITION_LEADER_EPOCH")  # 12, B-1
MAGIC_OFFSET = _offset("MAGIC")                                    # 16, B-3
CRC_OFFSET = _offset("CRC")                                        # 17, B-4
ATTRIBUTES_OFFSET = _offset("ATTRIBUTES")                          # 21, B-4: CRC from here
LAST_OFFSET_DELTA_OFFSET = _offset("LAST_OFFSET_DELTA")            # 23
BASE_TIMESTAMP_OFFSET = _offset("BASE_TIMESTAMP")                  # 27
MAX_TIMESTAMP_OFFSET = _offset("MAX_TIMESTAMP")                    # 35
PRODUCER_ID_OFFSET = _offset("PRODUCER_ID")                        # 43
PRODUCER_EPOCH_OFFSET = _offset("PRODUCER_EPOCH")                  # 51
BASE_SEQUENCE_OFFSET = _offset("BASE_SEQUENCE")                    # 53
RECORDS_COUNT_OFFSET = _offset("RECORDS_COUNT")                    # 57
BATCH_HEADER_SIZE = HEADER_STRUCT.size                             # 61: records start
LENGTH_FIELD_END = BATCH_LENGTH_OFFSET + 4       # B-2: batch size = batchLength + this
BATCH_OVERHEAD = LENGTH_FIELD_END                # bytes a batch has outside batchLength
BATCH_LENGTH_MIN = BATCH_HEADER_SIZE - BATCH_OVERHEAD              # B-2: 49

MAGIC_V2 = 2                                     # B-3

# attributes (B table, bits 0-6)
CODEC_NONE, CODEC_GZIP, CODEC_SNAPPY, CODEC_LZ4, CODEC_ZSTD = 0, 1, 2, 3, 4  # B-6
CODEC_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20
DELETE_HORIZON_MASK = 0x40
TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME = 0, 1           # B-1: pylog writes 0

# ---------------------------------------------------------------------------
# Decoded records (the native decoder's output, not a file format)
# ---------------------------------------------------------------------------

RECORD_FIELDS = 8        # int64 per decoded record (pl_records_decode, pl_fetch)
HEADER_FIELDS_PER_HEADER = 4   # int64 per decoded record header

# ---------------------------------------------------------------------------
# Indexes (FORMAT.rst I-1, T-1)
# ---------------------------------------------------------------------------

INDEX_ENTRY_STRUCT = struct.Struct(">ii")        # I-1: relative_offset, position
INDEX_ENTRY_SIZE = INDEX_ENTRY_STRUCT.size       # I-1: 8
TIMEINDEX_ENTRY_STRUCT = struct.Struct(">qi")    # T-1: timestamp, relative_offset
TIMEINDEX_ENTRY_SIZE = TIMEINDEX_ENTRY_STRUCT.size   # T-1: 12
INDEX_INTERVAL_BYTES = 4096                      # I-2: bytes between entries

# ---------------------------------------------------------------------------
# partition.state (FORMAT.rst P-2, P-3; host byte order)
# ---------------------------------------------------------------------------

STATE_FILE_SIZE = 4096                           # P-2
STATE_MAGIC_BYTES = b"PLST"                      # P-2: offset 0
STATE_MAGIC = int.from_bytes(STATE_MAGIC_BYTES, "little")   # as the C uint32 reads it
STATE_VERSION = 1                                # P-2: offset 4
STATE_SEQ_OFFSET = 8                             # P-2: seqlock, odd while publishing
STATE_VALS_OFFSET = 16                           # P-2: the six int64 fields below
STATE_VALS = ("next_offset", "active_base_offset", "active_position",
              "active_max_timestamp", "layout_generation", "log_start_offset")
STATE_SIZE = STATE_VALS_OFFSET + 8 * len(STATE_VALS)        # P-2: 64
STATE_INDEX_POSITION = 64                        # P-3 / I-2: int64, lock holders only
STATE_TAKEOVER = 72                              # P-3: uint32, 1 until a taker cleaned up
STATE_DURABLE = 80                               # P-7: int64 base, position, next, check
STATE_CLEAN = 112                                # P-9: uint64 nonce, uint64 check (no C name:
                                                 # only pylog.cleanshutdown uses it)
STATE_LOCK_WORD = 128                            # P-3: uint32 token, uint32 waiters
LIVENESS_BASE = 2 ** 32                          # P-3: liveness byte = this + token
# P-10, P-11: uint64 counters, each group on a cache line of its own
STATE_COUNT_APPEND = 144                         # P-10: batches, records, bytes appended
STATE_COUNT_FETCH = 192                          # P-10: fetches, records fetched
STATE_COUNT_FSYNC = 256                          # P-11: fsyncs, their total ns,
STATE_FSYNC_BUCKETS = 272                        # P-11: then the latency histogram
FSYNC_BUCKETS = 16                               # P-11: buckets of the histogram
FSYNC_BUCKET0_LOG2 = 16                          # P-11: bucket 0 is under 2**16 ns
COUNTER_WORDS = 7 + FSYNC_BUCKETS                # what pl_counters_read copies

# ---------------------------------------------------------------------------
# doorbell (FORMAT.rst L-3): per topic slot, uint32 seq then uint32 waiters
# ---------------------------------------------------------------------------

DOORBELL_SLOT_SIZE = 8                           # L-3

# ---------------------------------------------------------------------------
# The C names of the values above (csrc/pylog_native.h), compared at import
# by pylog._native. LIVENESS_BASE is compared through its log2.
# ---------------------------------------------------------------------------

NATIVE_NAMES = {
    "BASE_OFFSET_OFFSET": "PL_OFF_BASE_OFFSET",
    "BATCH_LENGTH_OFFSET": "PL_OFF_BATCH_LENGTH",
    "PARTITION_LEADER_EPOCH_OFFSET": "PL_OFF_PARTITION_LEADER_EPOCH",
    "MAGIC_OFFSET": "PL_OFF_MAGIC",
    "CRC_OFFSET": "PL_OFF_CRC",
    "ATTRIBUTES_OFFSET": "PL_OFF_ATTRIBUTES",
    "LAST_OFFSET_DELTA_OFFSET": "PL_OFF_LAST_OFFSET_DELTA",
    "BASE_TIMESTAMP_OFFSET": "PL_OFF_BASE_TIMESTAMP",
    "MAX_TIMESTAMP_OFFSET": "PL_OFF_MAX_TIMESTAMP",
    "PRODUCER_ID_OFFSET": "PL_OFF_PRODUCER_ID",
    "PRODUCER_EPOCH_OFFSET": "PL_OFF_PRODUCER_EPOCH",
    "BASE_SEQUENCE_OFFSET": "PL_OFF_BASE_SEQUENCE",
    "RECORDS_COUNT_OFFSET": "PL_OFF_RECORDS_COUNT",
    "BATCH_HEADER_SIZE": "PL_BATCH_HEADER_SIZE",
    "BATCH_OVERHEAD": "PL_LOG_OVERHEAD",
    "BATCH_LENGTH_MIN": "PL_BATCH_LENGTH_MIN",
    "MAGIC_V2": "PL_MAGIC_V2",
    "CODEC_MASK": "PL_ATTR_CODEC_MASK",
    "TIMESTAMP_TYPE_MASK": "PL_ATTR_TIMESTAMP_TYPE",
    "INDEX_ENTRY_SIZE": "PL_INDEX_ENTRY_SIZE",
    "TIMEINDEX_ENTRY_SIZE": "PL_TIMEINDEX_ENTRY_SIZE",
    "STATE_SIZE": "PL_STATE_SIZE",
    "STATE_MAGIC": "PL_STATE_MAGIC",
    "STATE_VERSION": "PL_STATE_VERSION",
    "STATE_SEQ_OFFSET": "PL_STATE_OFF_SEQ",
    "STATE_VALS_OFFSET": "PL_STATE_OFF_VALS",
    "STATE_INDEX_POSITION": "PL_STATE_INDEX_POSITION",
    "STATE_LOCK_WORD": "PL_STATE_LOCK_WORD",
    "STATE_TAKEOVER": "PL_STATE_TAKEOVER",
    "STATE_DURABLE": "PL_STATE_DURABLE",
    "DOORBELL_SLOT_SIZE": "PL_DOORBELL_SLOT_SIZE",
    "STATE_COUNT_APPEND": "PL_CTR_APPEND_BATCHES",
    "STATE_COUNT_FETCH": "PL_CTR_FETCHES",
    "STATE_COUNT_FSYNC": "PL_CTR_FSYNCS",
    "STATE_FSYNC_BUCKETS": "PL_CTR_FSYNC_BUCKETS",
    "FSYNC_BUCKETS": "PL_CTR_FSYNC_NBUCKETS",
    "FSYNC_BUCKET0_LOG2": "PL_CTR_FSYNC_BUCKET0_LOG2",
    "COUNTER_WORDS": "PL_CTR_WORDS",
    "RECORD_FIELDS": "PL_RECORD_FIELDS",
    "HEADER_FIELDS_PER_HEADER": "PL_HEADER_FIELDS",
}


def native_mismatches(lib) -> list:
    """``[(python name, python value, C name, C value)]`` for every value
    of ``NATIVE_NAMES`` the native library ``lib`` declares differently
    (a missing C name counts, with C value None)."""
    bad = []
    pairs = list(NATIVE_NAMES.items())
    for name, cname in pairs:
        mine, theirs = globals()[name], getattr(lib, cname, None)
        if mine != theirs:
            bad.append((name, mine, cname, theirs))
    log2 = getattr(lib, "PL_LIVENESS_BASE_LOG2", None)
    if log2 is None or LIVENESS_BASE != 1 << log2:
        bad.append(("LIVENESS_BASE", LIVENESS_BASE, "1 << PL_LIVENESS_BASE_LOG2",
                    None if log2 is None else 1 << log2))
    return bad
