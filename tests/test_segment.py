"""Segment files as pylog writes them (FORMAT.rst S-*, I-*, T-*): Kafka
RecordBatch v2 readable by kafka-python, 20-digit names, rolling at
segment_bytes, sparse indexes every ~4096 bytes, rebuilt when damaged."""

import os
import random
import struct

import pytest
from kafka.record.memory_records import MemoryRecords

import pylog
from pylog import _native
from pylog.partition import Cursor
from pylog.segment import INDEX_INTERVAL_BYTES, parse_segment_name

SEGMENT_BYTES = 65536
TOPIC_CONFIG = dict(segment_bytes=SEGMENT_BYTES, max_message_bytes=60000,
                    retention_ms=-1)


def segment_files(part):
    """[(base, path, valid_bytes)] of a partition, oldest first."""
    st = part.state()
    out = []
    for name in sorted(os.listdir(part.dir)):
        base = parse_segment_name(name)
        if base is None:
            continue
        path = os.path.join(part.dir, name)
        with open(path, "rb") as f:
            data = f.read()
        if base == st.active_base:
            data = data[:st.active_position]
        out.append((base, path, data))
    return out


def kafka_read(part):
    """Every record of the partition as kafka-python parses the segments."""
    recs = []
    for base, path, data in segment_files(part):
        mr = MemoryRecords(data)
        assert mr.valid_bytes() == len(data), path
        while True:
            b = mr.next_batch()
            if b is None:
                break
            assert b.magic == 2
            assert b.validate_crc(), (path, b.base_offset)
            for r in b:
                recs.append((r.offset, r.timestamp, r.key, r.value,
                             tuple(r.headers)))
    return recs


def rand_items(rng, n):
    items = []
    for _ in range(n):
        key = None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 24))
        value = None if rng.random() < 0.1 else rng.randbytes(rng.randint(0, 400))
        headers = [(f"h{j}", None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 10)))
                   for j in range(rng.choice([0, 0, 1, 3]))]
        items.append((key, value, headers))
    return items


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_segments_parse_with_kafka_python(logdir, compression):
    rng = random.Random(1)
    expected = []
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", compression=compression, **TOPIC_CONFIG)
        prod = log.producer()
        ts = 1_700_000_000_000
        for i in range(60):
            items = rand_items(rng, rng.randint(1, 40))
            mds = prod.send_batch("t", items, partition=0, timestamp_ms=ts + i)
            for md, (k, v, h) in zip(mds, items):
                expected.append((md.offset, ts + i, k, v, tuple(h)))
        for i in range(50):   # single sends, including null key and value
            k, v, h = rand_items(rng, 1)[0]
            md = prod.send("t", v, key=k, headers=h, partition=0, timestamp_ms=ts + 100 + i)
            expected.append((md.offset, ts + 100 + i, k, v, tuple(h)))
        part = log.partition("t", 0)
        assert [r[0] for r in expected] == list(range(len(expected)))
        got = kafka_read(part)
        assert got == expected
        assert len(segment_files(part)) > 1       # it rolled
        mine = part.fetch(Cursor(0), 100000)
        assert [(o, t, k, v, tuple(h)) for o, t, k, v, h in mine] == expected
    if compression:
        with open(segment_files_closed(logdir)[0], "rb") as f:
            hdr = _native.read_batch_header(f.read())
        assert hdr.codec == _native.CODEC_ZSTD


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_transactional_segments_parse_with_kafka_python(logdir, compression):
    """X-1, X-2 across rolls: kafka-python parses every segment holding
    transactional, idempotent and control batches; its records are the
    ones sent plus one control record per transaction end, which pylog's
    own reads pass over."""
    rng = random.Random(2)
    expected = []
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", compression=compression, **TOPIC_CONFIG)
        tx = log.producer(transactional_id="seg")
        idem = log.producer(idempotent=True)
        ts = 1_700_000_000_000
        markers = 0
        for i in range(40):
            items = rand_items(rng, rng.randint(1, 30))
            tx.begin_transaction()
            mds = tx.send_batch("t", items, partition=0, timestamp_ms=ts + i)
            tx.send("t", b"single", partition=0, timestamp_ms=ts + i)
            (tx.commit_transaction if i % 3 else tx.abort_transaction)()
            markers += 1
            expected += [(md.offset, ts + i, k, v, tuple(h))
                         for md, (k, v, h) in zip(mds, items)]
            expected.append((mds[-1].offset + 1, ts + i, None, b"single", ()))
            md = idem.send("t", b"idem", partition=0, timestamp_ms=ts + i)
            expected.append((md.offset, ts + i, None, b"idem", ()))
        part = log.partition("t", 0)
        got = kafka_read(part)
        assert len(segment_files(part)) > 1       # it rolled
        data = [r for r in got if r[0] in {e[0] for e in expected}]
        assert data == expected
        controls = [r for r in got if r[0] not in {e[0] for e in expected}]
        assert len(controls) == markers
        assert {r[2] for r in controls} == {b"\x00\x00\x00\x00", b"\x00\x00\x00\x01"}
        mine = part.fetch(Cursor(0), 100000)      # read_uncommitted: no markers
        assert [(o, t, k, v, tuple(h)) for o, t, k, v, h in mine] == expected


def segment_files_closed(logdir, topic="t", p=0):
    d = os.path.join(logdir, f"{topic}-{p}")
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith(".log")]


def test_names_and_rolling(logdir):
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", **TOPIC_CONFIG)
        prod = log.producer()
        for i in range(40):
            prod.send_batch("t", [os.urandom(200) for _ in range(20)], partition=0)
        part = log.partition("t", 0)
        st = part.state()
        files = segment_files(part)
        names = os.listdir(part.dir)
    assert len(files) >= 3
    next_base = 0
    for base, path, data in files:
        name = os.path.basename(path)
        assert len(name) == 24 and name == f"{base:020d}.log"   # S-1
        assert base == next_base
        for suffix in (".index", ".timeindex"):
            assert f"{base:020d}{suffix}" in names
        assert len(data) <= SEGMENT_BYTES
        batches = MemoryRecords(data)
        last = None
        while (b := batches.next_batch()) is not None:
            last = b
        next_base = last.next_offset
        if base != st.active_base:
            assert os.path.getsize(path) == len(data)           # S-4 sealed = truncated
            # rolled because the next batch did not fit
            assert len(data) + 61 + 20 * 200 > SEGMENT_BYTES
    assert next_base == st.next_offset == 800


def check_indexes(base, data, index, timeindex, sealed):
    """The sparse index is exactly what I-2 / T-2 / T-3 prescribe."""
    batches = []
    mr = MemoryRecords(data)
    pos = 0
    maxts = -1
    while (b := mr.next_batch()) is not None:
        maxts = max(maxts, b.max_timestamp)
        batches.append((pos, b.base_offset, b.last_offset, maxts))
        pos += b.size_in_bytes
    by_pos = {p: (bo, lo, mt) for p, bo, lo, mt in batches}
    want_idx, last_entry = [], 0
    for p, bo, lo, mt in batches:
        if p - last_entry >= INDEX_INTERVAL_BYTES:
            want_idx.append((lo - base, p, mt))
            last_entry = p
    idx = [struct.unpack_from(">ii", index, i) for i in range(0, len(index), 8)]
    assert len(index) % 8 == 0 and len(timeindex) % 12 == 0
    tidx = [struct.unpack_from(">qi", timeindex, i) for i in range(0, len(timeindex), 12)]
    for rel, p in idx:
        assert p in by_pos, "index entry does not start a batch"
        bo, lo, _ = by_pos[p]
        assert bo <= base + rel <= lo
    assert idx == [(r, p) for r, p, _ in want_idx]
    want_t = [(mt, r) for r, _, mt in want_idx]
    if sealed and batches:
        want_t.append((batches[-1][3], batches[-1][2] - base))
    assert tidx == want_t


def test_index_entries(logdir):
    rng = random.Random(2)
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", **TOPIC_CONFIG)
        prod = log.producer()
        for i in range(400):
            prod.send_batch("t", [rng.randbytes(rng.randint(1, 500))
                                  for _ in range(rng.randint(1, 8))],
                            partition=0, timestamp_ms=1000 + rng.randint(0, 10**6))
        part = log.partition("t", 0)
        st = part.state()
        files = segment_files(part)
        assert len(files) >= 3
        for base, path, data in files:
            with open(path[:-4] + ".index", "rb") as f:
                index = f.read()
            with open(path[:-4] + ".timeindex", "rb") as f:
                timeindex = f.read()
            check_indexes(base, data, index, timeindex, base != st.active_base)


@pytest.mark.parametrize("damage", ["delete", "truncate", "garble", "shuffle", "zeros",
                                    "wrong_positions"])
def test_index_rebuilt_when_damaged(logdir, damage):
    rng = random.Random(3)
    values = []
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", **TOPIC_CONFIG)
        prod = log.producer()
        for i in range(300):
            batch = [b"%06d" % (len(values) + j) + rng.randbytes(rng.randint(0, 300))
                     for j in range(rng.randint(1, 6))]
            prod.send_batch("t", batch, partition=0, timestamp_ms=1000 + i)
            values += batch
        part = log.partition("t", 0)
        sealed = [p for b, p, _ in segment_files(part) if b != part.state().active_base]
    assert len(sealed) >= 2
    for path in sealed + [segment_files_closed(logdir)[-1]]:
        ip = path[:-4] + ".index"
        tp = path[:-4] + ".timeindex"
        for p in (ip, tp):
            data = open(p, "rb").read()
            if damage == "delete":
                os.unlink(p)
                continue
            if damage == "truncate":
                new = data[:len(data) // 2 + 3]
            elif damage == "garble":
                new = rng.randbytes(len(data))
            elif damage == "zeros":
                new = bytes(len(data) + 40)
            elif damage == "shuffle":
                step = 8 if p == ip else 12
                ents = [data[i:i + step] for i in range(0, len(data), step)]
                ents = ents[1:] + ents[:1]
                new = b"".join(ents)
            else:   # monotonic, plausible, wrong: positions and offsets shifted
                if p == ip:
                    ents = [struct.unpack_from(">ii", data, i) for i in range(0, len(data), 8)]
                    new = b"".join(struct.pack(">ii", r // 3, q + 7) for r, q in ents)
                else:
                    ents = [struct.unpack_from(">qi", data, i) for i in range(0, len(data), 12)]
                    new = b"".join(struct.pack(">qi", t - 500, r // 2) for t, r in ents)
            with open(p, "wb") as f:
                f.write(new)
    # reads through a reopened log are correct from every offset
    with pylog.open(logdir, sync="never") as log:
        part = log.partition("t", 0)
        for off in list(range(0, len(values), 37)) + [len(values) - 1]:
            recs = part.fetch(Cursor(off), 5)
            assert [r[0] for r in recs] == list(range(off, min(off + 5, len(values))))
            assert [r[3] for r in recs] == values[off:off + 5]
        # offset_for_time: batch i has timestamp 1000 + i
        for i in (0, 5, 150, 299):
            o = part.offset_for_time(1000 + i)
            first = part.fetch(Cursor(o), 1)[0]
            assert first[1] == 1000 + i
            if o > 0:
                assert part.fetch(Cursor(o - 1), 1)[0][1] < 1000 + i
        assert part.offset_for_time(10**9) is None
        # appends after the damage still work and the index is sane again
        log.producer().send("t", b"after", partition=0)
        assert part.fetch(Cursor(len(values)), 10)[0][3] == b"after"
    with pylog.open(logdir, sync="never") as log:
        part = log.partition("t", 0)
        for base, path, data in segment_files(part):
            idx = open(path[:-4] + ".index", "rb").read() \
                if os.path.exists(path[:-4] + ".index") else b""
            # whatever is on disk now is either absent or valid (I-3)
            assert _native.index_validate(idx, len(data) + 1) is None
        assert len(part.fetch(Cursor(0), 100000)) == len(values) + 1


def test_locate_and_index_rule_on_one_segment(tmp_path):
    """Segment.locate finds the batch holding an offset with or without the
    sparse index (I-2), ignoring an entry that does not match its batch
    (I-3); Segment.index_due is the I-2 interval rule."""
    from pylog import batch
    from pylog.index import INDEX_ENTRY
    from pylog.segment import Segment, segment_path
    bs = [batch.encode([(1000 + 2 * i + j, None, b"x" * 100, ()) for j in range(2)],
                       base_offset=2 * i) for i in range(5)]
    starts = [sum(len(b) for b in bs[:i]) for i in range(len(bs))]
    end = sum(len(b) for b in bs)
    with open(segment_path(str(tmp_path), 0), "wb") as f:
        f.write(b"".join(bs))
    seg = Segment(str(tmp_path), 0)
    try:
        good = INDEX_ENTRY.pack(5, starts[2])       # batch 2 ends at offset 5
        wrong = INDEX_ENTRY.pack(5, starts[1])      # points at another batch
        for idx in (b"", good, wrong):
            for offset in range(10):
                assert seg.locate(offset, end, idx) == starts[offset // 2]
            assert seg.locate(10, end, idx) == end
    finally:
        seg.close()
    assert not Segment.index_due(INDEX_INTERVAL_BYTES - 1, 0)
    assert Segment.index_due(INDEX_INTERVAL_BYTES, 0)
    assert Segment.index_due(2 * INDEX_INTERVAL_BYTES, INDEX_INTERVAL_BYTES)
