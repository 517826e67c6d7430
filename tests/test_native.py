"""Tests of the native core (pylog._native) against independent oracles:
the ``crc32c`` package and kafka-python's record batch code."""

import mmap
import os
import random
import struct

import crc32c as crc_oracle
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_murmur2
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from nativebatches import HSET, build_log, decode_batch, kafka_build, norm, rand_records

from pylog import _native as n
from pylog.errors import CorruptLogError, InvalidArgument

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(n.__file__)))


# ---------------------------------------------------------------------------
# constants
# ---------------------------------------------------------------------------

def test_header_constants():
    assert n.BATCH_HEADER_SIZE == 61
    assert (n.BASE_OFFSET_OFFSET, n.BATCH_LENGTH_OFFSET, n.PARTITION_LEADER_EPOCH_OFFSET,
            n.MAGIC_OFFSET, n.CRC_OFFSET, n.ATTRIBUTES_OFFSET, n.LAST_OFFSET_DELTA_OFFSET,
            n.BASE_TIMESTAMP_OFFSET, n.MAX_TIMESTAMP_OFFSET, n.PRODUCER_ID_OFFSET,
            n.PRODUCER_EPOCH_OFFSET, n.BASE_SEQUENCE_OFFSET,
            n.RECORDS_COUNT_OFFSET) == (0, 8, 12, 16, 17, 21, 23, 27, 35, 43, 51, 53, 57)
    codecs = (n.CODEC_NONE, n.CODEC_GZIP, n.CODEC_SNAPPY, n.CODEC_LZ4, n.CODEC_ZSTD)
    assert codecs == (0, 1, 2, 3, 4)


# ---------------------------------------------------------------------------
# CRC32C
# ---------------------------------------------------------------------------

CRC_FUNCS = [n.crc32c, n.crc32c_portable,
             pytest.param(n.crc32c_hw, marks=pytest.mark.skipif(
                 not n.HAS_HW_CRC32C, reason="no hardware CRC32C"))]


@pytest.mark.parametrize("fn", CRC_FUNCS)
def test_crc32c_matches_oracle(fn):
    rng = random.Random(1)
    big = rng.randbytes(10_100)
    sizes = list(range(0, 70)) + [rng.randint(0, 10_000) for _ in range(300)] + [10_000]
    for size in sizes:
        off = rng.randint(0, 15)  # random alignment
        mv = memoryview(big)[off:off + size]
        data = bytes(mv)
        assert fn(data) == crc_oracle.crc32c(data)
        assert fn(mv) == crc_oracle.crc32c(data)
        seed = rng.getrandbits(32)
        assert fn(data, seed) == crc_oracle.crc32c(data, seed)
        cut = rng.randint(0, size)
        assert fn(data[cut:], fn(data[:cut])) == crc_oracle.crc32c(data)


@pytest.mark.parametrize("fn", CRC_FUNCS)
def test_crc32c_buffer_types(fn):
    data = os.urandom(5000)
    want = crc_oracle.crc32c(data)
    m = mmap.mmap(-1, len(data))
    m[:] = data
    assert fn(bytearray(data)) == want
    assert fn(m) == want
    m.close()  # the buffer export was released
    assert fn(b"123456789") == 0xE3069283  # the CRC-32C check value


@HSET
@given(st.binary(max_size=3000), st.integers(0, 2**32 - 1), st.integers(0, 3000))
def test_crc32c_hypothesis(data, seed, cut):
    want = crc_oracle.crc32c(data, seed)
    assert n.crc32c(data, seed) == want
    assert n.crc32c_portable(data, seed) == want
    if n.HAS_HW_CRC32C:
        assert n.crc32c_hw(data, seed) == want
    cut = min(cut, len(data))
    assert n.crc32c(data[cut:], n.crc32c_portable(data[:cut], seed)) == want


def test_crc32c_hw_unavailable_raises(monkeypatch):
    monkeypatch.setattr(n, "HAS_HW_CRC32C", False)
    with pytest.raises(RuntimeError):
        n.crc32c_hw(b"x")


# ---------------------------------------------------------------------------
# murmur2 / partitioning
# ---------------------------------------------------------------------------

class _FakeCluster:
    def __init__(self, parts):
        self.parts = set(range(parts))

    def topics(self):
        return {"t"}

    def partitions_for_topic(self, topic):
        return self.parts

    def available_partitions_for_topic(self, topic):
        return self.parts


def test_murmur2_matches_kafka():
    rng = random.Random(2)
    part = DefaultPartitioner()
    clusters = {p: _FakeCluster(p) for p in range(1, 101)}
    for i in range(4000):
        key = rng.randbytes(rng.randint(0, 64))
        h = n.murmur2(key)
        assert -2**31 <= h < 2**31
        assert h & 0xFFFFFFFF == kafka_murmur2(key)  # kafka-python returns it unsigned
        p = rng.randint(1, 100)
        assert n.partition_for_key(key, p) == part.partition("t", key, key, None, None,
                                                             clusters[p])
    with pytest.raises(InvalidArgument):
        n.partition_for_key(b"k", 0)


# ---------------------------------------------------------------------------
# encoding / decoding against kafka-python
# ---------------------------------------------------------------------------

GOLDEN_RECORDS = [(1700000000000, b"k", b"v", [("h", b"x")]),
                  (1700000000005, None, b"v2", None)]
GOLDEN_HEX = ("0000000000000000000000470000000002fd17427f0000000000010000018bcfe568000000018b"
              "cfe56805ffffffffffffffffffffffffffff0000000218000000026b0276020268027810000a02"
              "0104763200")


def test_golden_vector():
    b = n.encode_batch(GOLDEN_RECORDS, base_offset=0)
    assert b.hex() == GOLDEN_HEX
    # independently: kafka-python's builder produces the very same bytes
    assert kafka_build(GOLDEN_RECORDS) == b
    assert n.encoded_size(GOLDEN_RECORDS) == len(b) == 83
    h = n.read_batch_header(b)
    assert (h.base_offset, h.batch_length, h.magic, h.crc, h.last_offset_delta,
            h.base_timestamp, h.max_timestamp, h.records_count, h.crc_valid) == (
        0, 71, 2, 0xFD17427F, 1, 1700000000000, 1700000000005, 2, True)
    assert h.size == 83 and h.last_offset == 1
    assert n.decode_records(b[61:], h) == norm(GOLDEN_RECORDS)


def test_encode_parses_with_kafka_python():
    rng = random.Random(3)
    for trial in range(60):
        recs = rand_records(rng, rng.randint(1, 40))
        base = rng.randint(0, 2**40)
        b = n.encode_batch(recs, base_offset=base, partition_leader_epoch=7)
        batch = DefaultRecordBatch(bytearray(b))
        assert batch.validate_crc()
        assert batch.base_offset == base and batch.leader_epoch == 7
        got = [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in batch]
        assert got == norm(recs, base)
        # and byte-identical to kafka-python's builder for base_offset 0
        assert n.encode_batch(recs, base_offset=0) == kafka_build(recs)
        assert n.encoded_size(recs) == len(b)


def test_memory_records_reads_our_log():
    rng = random.Random(4)
    log, meta = build_log(rng, 10)
    mr = MemoryRecords(log)
    offsets = []
    while mr.has_next():
        batch = mr.next_batch()
        assert batch.validate_crc()
        offsets.extend(r.offset for r in batch)
    assert offsets == list(range(meta[-1][2] + 1))


def test_kafka_built_batches_decode():
    rng = random.Random(5)
    for trial in range(40):
        recs = rand_records(rng, rng.randint(1, 40))
        b = kafka_build(recs)
        h, got = decode_batch(b)
        assert got == norm(recs)
        assert n.decode_values(b[61:], h) == [r[2] for r in recs]


@HSET
@given(st.data())
def test_column_decode_matches_kafka_reader(data):
    """The one-struct.unpack decode (pl_records_shape) against kafka-python's
    reader, over the shapes that take it (keyless, keyed, dense or gapped
    offsets, one or many timestamps) and those that must fall back (mixed
    null keys, null values, headers)."""
    from pylog.records import Record
    count = data.draw(st.integers(1, 30))
    keys = data.draw(st.sampled_from(["all", "none", "mixed"]))
    null_values = data.draw(st.booleans())
    same_ts = data.draw(st.booleans())
    headers = data.draw(st.booleans())
    gaps = data.draw(st.lists(st.integers(1, 3), min_size=count, max_size=count))
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 30)
    off = 0
    for i in range(count):
        k = {"all": b"k%d" % i, "none": None,
             "mixed": None if data.draw(st.booleans()) else b"k"}[keys]
        v = None if null_values and data.draw(st.booleans()) else \
            data.draw(st.binary(max_size=40))
        ts = 1_700_000_000_000 + (0 if same_ts else data.draw(st.integers(-5, 5)))
        h = [("h", b"x")] if headers and data.draw(st.booleans()) else []
        assert b.append(off, timestamp=ts, key=k, value=v, headers=h) is not None
        off += gaps[i]
    raw = bytes(b.build())
    want = [(r.offset + 100, r.timestamp, r.key, r.value, tuple(r.headers))
            for r in DefaultRecordBatch(raw)]
    h = n.read_batch_header(raw)
    h = h._replace(base_offset=100)
    section = raw[61:]
    assert n.decode_records(section, h) == want
    got = n.decode_records(section, h, "t", 3, Record)
    assert got == [("t", 3) + w for w in want]
    assert all(type(r) is Record for r in got)
    assert n.decode_values(section, h) == [w[3] for w in want]


def test_kafka_zstd_batches_decode():
    rng = random.Random(6)
    for trial in range(10):
        recs = [(1_700_000_000_000 + i, b"key-%d" % i, b"value " * rng.randint(5, 50),
                 [("hdr", b"x" * 10)]) for i in range(rng.randint(5, 50))]
        b = kafka_build(recs, compression_type=4)
        h = n.read_batch_header(b)
        assert h.codec == n.CODEC_ZSTD  # the builder compressed it
        _, got = decode_batch(b)
        assert got == norm(recs)


def test_wrap_compressed_parses_with_kafka_python():
    rng = random.Random(7)
    recs = [(1_700_000_000_000 + i * 3, b"k%d" % i, b"payload " * 30, [("a", None)])
            for i in range(30)]
    section = n.encode_records(recs, recs[0][0])
    comp = zstandard.ZstdCompressor().compress(section)
    b = n.wrap_records(comp, base_offset=100, records_count=len(recs),
                       last_offset_delta=len(recs) - 1, base_timestamp=recs[0][0],
                       max_timestamp=max(r[0] for r in recs), attributes=n.CODEC_ZSTD)
    batch = DefaultRecordBatch(bytearray(b))
    assert batch.validate_crc() and batch.compression_type == 4
    got = [(r.offset, r.timestamp, r.key, r.value, tuple(r.headers)) for r in batch]
    assert got == norm(recs, 100)
    _, ours = decode_batch(b)
    assert ours == norm(recs, 100)
    # uncompressed wrap == encode_batch
    assert n.wrap_records(section, base_offset=100, records_count=len(recs),
                          last_offset_delta=len(recs) - 1, base_timestamp=recs[0][0],
                          max_timestamp=max(r[0] for r in recs), attributes=0) == \
        n.encode_batch(recs, base_offset=100)
    del rng


def test_encode_into_mmap_and_nospace():
    recs = rand_records(random.Random(8), 10)
    want = n.encode_batch(recs, base_offset=42)
    m = mmap.mmap(-1, 4096)
    assert n.encode_batch_into(m, 100, recs, base_offset=42) == len(want)
    assert m[100:100 + len(want)] == want
    m2 = mmap.mmap(-1, len(want) + 10)
    with pytest.raises(n.NoSpace) as ei:
        n.encode_batch_into(m2, 11, recs, base_offset=42)
    assert ei.value.needed == len(want)
    assert m2[:] == bytes(len(m2))  # nothing written
    m.resize(8192)  # no buffer export is left behind
    m.close()
    m2.close()


def test_encode_invalid_arguments():
    for bad in ([], [(1, "str", b"v", None)], [(1.5, b"k", b"v", None)],
                [(1, b"k", b"v", [(1, b"")])],
                [(2**63, b"k", b"v", None)], [(1, b"k")]):
        with pytest.raises(InvalidArgument):
            n.encode_batch(bad, base_offset=0)
    with pytest.raises(InvalidArgument):  # timestamp delta overflows int64
        n.encode_batch([(2**63 - 1, None, None, None), (-2**63, None, None, None)], base_offset=0)
    with pytest.raises(InvalidArgument):  # compression bits on the uncompressed encoder
        n.encode_batch(GOLDEN_RECORDS, base_offset=0, attributes=4)
    with pytest.raises(InvalidArgument):
        n.encode_batch([(1, memoryview(_array_q()), None, None)], base_offset=0)


def _array_q():
    import array
    return array.array("q", [1, 2, 3])


def test_log_append_time_and_attributes():
    b = bytearray(n.encode_batch(GOLDEN_RECORDS, base_offset=0, attributes=0x18,
                                 producer_id=9, producer_epoch=1, base_sequence=3))
    h = n.read_batch_header(b)
    assert h.timestamp_type == 1 and h.is_transactional and not h.is_control
    assert (h.producer_id, h.producer_epoch, h.base_sequence) == (9, 1, 3)
    assert [r[1] for r in n.decode_records(bytes(b[61:]), h)] == [1700000000005] * 2


# ---------------------------------------------------------------------------
# corruption and hostile input
# ---------------------------------------------------------------------------

def test_header_framing_errors():
    b = bytearray(n.encode_batch(GOLDEN_RECORDS, base_offset=0))
    with pytest.raises(CorruptLogError, match="B-2"):
        n.read_batch_header(b[:-1])
    with pytest.raises(CorruptLogError) as ei:
        n.read_batch_header(b"\0" * 100 + bytes(b[:-1]), 100)
    assert ei.value.position == 100
    bad = bytearray(b)
    struct.pack_into(">i", bad, 8, 48)
    with pytest.raises(CorruptLogError, match="B-2"):
        n.read_batch_header(bad)
    bad = bytearray(b)
    bad[16] = 1
    with pytest.raises(CorruptLogError, match="B-3"):
        n.read_batch_header(bad)
    bad = bytearray(b)
    bad[-1] ^= 1
    assert n.read_batch_header(bad).crc_valid is False  # B-4 reported, not raised


def _recs_section_with(count, body_bytes, last_offset_delta=None):
    h = n.read_batch_header(n.encode_batch(GOLDEN_RECORDS, base_offset=0))
    return h._replace(records_count=count,
                      last_offset_delta=count - 1 if last_offset_delta is None
                      else last_offset_delta)


ONE = b"\x10\x00\x00\x00\x02k\x02v\x00"  # a valid record: length 8, key b"k", value b"v"


@pytest.mark.parametrize("section,count,lod,rule", [
    (ONE, 2, 1, "R-5"),                                           # fewer records than count
    (ONE + ONE, 3, 2, "R-5"),
    (ONE + b"\x00", 1, 0, "R-4"),                                  # trailing byte
    (b"\x12\x00\x00\x00\x02k\x02v\x00\x00", 1, 0, "R-3"),          # length 9 but 8 parsed
    (b"\x12\x00\x00\x00\x02k\x02v\x00", 1, 0, "R-2"),              # length beyond section
    (b"\x10\x00\x00\x00\x02k\x02v\x01", 1, 0, "R-7"),              # headersCount -1
    (b"\x10\x00\x00\x02\x02k\x02v\x00", 1, 0, "R-6"),              # offsetDelta 1 > last 0
    (b"\x10\x00\x00\x00\x04k\x02v\x00", 1, 0, "R-2"),              # key length beyond record
    (b"\x10\x00\x00\x00\x03k\x02v\x00", 1, 0, "R-2"),              # key length -2
    (b"\x1a\x00" + b"\xff" * 11 + b"\x00", 1, 0, "R-1"),           # 11-byte varlong
    (b"\x14\x00\x00\xff\xff\xff\xff\x7f\x00\x00\x00", 1, 0, "R-1"),  # 5-byte varint overflow
    (b"\x10\x00\x00\x00\x02k\x02v\x80", 1, 0, "R-1"),              # varint runs off the record
])
def test_record_rules(section, count, lod, rule):
    h = _recs_section_with(count, section, lod)
    with pytest.raises(CorruptLogError, match=rule) as ei:
        n.decode_records(section, h)
    assert ei.value.position == h.position


def test_offset_delta_must_increase():
    one = ONE
    h = _recs_section_with(2, None, 5)
    with pytest.raises(CorruptLogError, match="R-6"):
        n.decode_records(one + one, h)
    two = b"\x10\x00\x00\x06\x02k\x02v\x00"
    assert [r[0] for r in n.decode_records(one + two, h)] == [0, 3]


def test_huge_records_count_rejected_cheaply():
    h = _recs_section_with(2**31 - 1, None)
    with pytest.raises(CorruptLogError, match="R-5"):
        n.decode_records(b"\x00" * 100, h)


def _check_hostile(buf):
    """Nothing may crash; failures must be CorruptLogError."""
    try:
        h = n.read_batch_header(buf)
    except CorruptLogError:
        h = None
    if h is not None:
        assert h.size <= len(buf)
        section = bytes(buf[61:h.size])
        for fn in (n.decode_records, n.decode_values):
            try:
                fn(section, h)
            except CorruptLogError:
                pass
    r = n.scan_segment(buf, 0, len(buf), index_interval_bytes=0)
    assert r.end_position <= len(buf)
    for _, pos in r.index_entries:
        assert pos < r.end_position
    if r.batch_count:
        assert n.read_batch_header(buf, 0).crc_valid
    n.index_lookup(buf, 12345)
    n.index_validate(buf, len(buf))
    n.timeindex_lookup(buf, 12345)
    n.timeindex_validate(buf)


@HSET
@given(st.binary(max_size=400))
def test_hostile_random_bytes(data):
    _check_hostile(data)
    _check_hostile(bytes(12) + data)


def _valid_batch(seed):
    rng = random.Random(seed)
    return n.encode_batch(rand_records(rng, rng.randint(1, 5)), base_offset=rng.randint(0, 99))


@HSET
@given(st.integers(0, 50), st.data())
def test_hostile_mutated_batches(seed, data):
    b = bytearray(_valid_batch(seed))
    kind = data.draw(st.sampled_from(["flip", "truncate", "length", "bytes", "records"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        cut = data.draw(st.integers(0, len(b) - 1))
        del b[cut:]
        with pytest.raises(CorruptLogError):
            n.read_batch_header(b)  # a truncated batch is never valid
        r = n.scan_segment(b, 0, len(b))
        assert r.batch_count == 0 and r.end_position == 0
        assert (r.error_reason is not None) == any(b)
    elif kind == "length":
        struct.pack_into(">i", b, 8, data.draw(st.integers(-2**31, 2**31 - 1)))
    elif kind == "bytes":
        i = data.draw(st.integers(0, len(b) - 1))
        b[i:i + 4] = data.draw(st.binary(min_size=1, max_size=4))
    else:
        # corrupt the records section but fix up the CRC so only R-rules catch it
        i = data.draw(st.integers(61, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            del b[data.draw(st.integers(61, len(b))):]
            struct.pack_into(">i", b, 8, len(b) - 12)
        struct.pack_into(">I", b, 17, crc_oracle.crc32c(bytes(b[21:])))
    _check_hostile(bytes(b))


def test_records_section_bitflips_exhaustive():
    """Every single-bit flip in the records of a valid batch, CRC fixed up."""
    b = n.encode_batch(GOLDEN_RECORDS, base_offset=0)
    h = n.read_batch_header(b)
    for i in range(61, len(b)):
        for bit in range(8):
            s = bytearray(b[61:])
            s[i - 61] ^= 1 << bit
            try:
                n.decode_records(bytes(s), h)
            except CorruptLogError:
                pass
