"""Record batches for the native core's tests: random records, batches
built by kafka-python (the oracle), a segment's worth of batches."""

import zstandard
from hypothesis import HealthCheck, settings
from kafka.record.default_records import DefaultRecordBatchBuilder

from pylog import _native as n

HSET = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def rand_records(rng, count, *, base_ts=1_700_000_000_000, with_headers=True):
    recs = []
    for i in range(count):
        key = None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 20))
        value = None if rng.random() < 0.1 else rng.randbytes(rng.randint(0, 300))
        headers = []
        if with_headers and rng.random() < 0.5:
            for _ in range(rng.randint(1, 3)):
                hv = None if rng.random() < 0.3 else rng.randbytes(rng.randint(0, 10))
                headers.append((f"h{rng.randint(0, 99)}-é", hv))
        recs.append((base_ts + rng.randint(-1000, 100_000), key, value, headers))
    return recs


def kafka_build(records, compression_type=0):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=compression_type,
                                  is_transactional=False, producer_id=-1, producer_epoch=-1,
                                  base_sequence=-1, batch_size=1 << 30)
    for i, (ts, k, v, h) in enumerate(records):
        assert b.append(i, timestamp=ts, key=k, value=v, headers=list(h or [])) is not None
    return bytes(b.build())


def norm(records, base_offset=0):
    return [(base_offset + i, ts, k, v, tuple(h or ()))
            for i, (ts, k, v, h) in enumerate(records)]


def decode_batch(buf, pos=0):
    h = n.read_batch_header(buf, pos)
    assert h.crc_valid
    section = bytes(buf[pos + n.BATCH_HEADER_SIZE: pos + h.size])
    if h.codec == n.CODEC_ZSTD:
        section = zstandard.ZstdDecompressor().decompressobj().decompress(section)
    return h, n.decode_records(section, h)


def build_log(rng, nbatches, base_offset=0, max_records=20):
    """Concatenated batches; returns (bytes, [(pos, base_offset, last_offset, max_ts)])."""
    parts, meta, pos, off = [], [], 0, base_offset
    for _ in range(nbatches):
        recs = rand_records(rng, rng.randint(1, max_records), with_headers=False)
        b = n.encode_batch(recs, base_offset=off)
        meta.append((pos, off, off + len(recs) - 1, max(r[0] for r in recs)))
        parts.append(b)
        pos += len(b)
        off += len(recs)
    return b"".join(parts), meta
