"""README "Limits": each limit probed exactly at and one past its edge, the
way a user reaches it."""

import os
import struct
import time

import pytest
from promisekit import crc32c, parse_batches, read_all, run_child, segments

import pylog
from pylog import TopicPartition as TP

ALLOWED = "abcxyzABCXYZ0189._-"


def test_topic_names(fastlog, tmp_path):
    """topic name                       1-249 of ``[A-Za-z0-9._-]``, not ``.``/``..``"""
    for name in ("a", "x" * 249, ALLOWED, "...", "-.-", "_"):
        fastlog.create_topic(name)
        fastlog.producer().send(name, b"v")
        assert read_all(fastlog, name)[0].value == b"v"
    for bad in ("", "x" * 250, ".", "..", "a/b", "a b", "é", "a\0b", "a:b", "a\\b", "*"):
        with pytest.raises(pylog.InvalidTopicName):
            fastlog.create_topic(bad)
    assert sorted(os.listdir(tmp_path / "log")) == sorted(
        ["doorbell", "meta", "meta.lock", "pylog.lock"] +
        [f"{n}-0" for n in ("a", "x" * 249, ALLOWED, "...", "-.-", "_")])


def test_partitions_per_topic(fastlog):
    """partitions per topic             10,000

    One more is refused by create_topic and by create_partitions (10,000
    itself is the long test below)."""
    with pytest.raises(pylog.InvalidArgument):
        fastlog.create_topic("t", partitions=10_001)
    fastlog.create_topic("t", partitions=2)
    with pytest.raises(pylog.InvalidArgument):
        fastlog.create_partitions("t", 10_001)
    assert fastlog.describe_topic("t").partitions == 2
    assert fastlog.topics() == ["t"]


FD_CHILD = r"""
import os, resource, sys, pylog
resource.setrlimit(resource.RLIMIT_NOFILE,
                   (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
with pylog.open(sys.argv[1], sync="never") as log:
    print("default", log.max_open_files)
    log.create_topic("t", partitions=1000)
    prod = log.producer()
    for p in range(1000):
        prod.send("t", b"v%d" % p, partition=p)
    cons = log.consumer("t", auto_offset_reset="earliest")
    n = 0
    while n < 1000:
        n += len(cons.poll(timeout=1))
    cons.close()
    print("ok", n, len(os.listdir("/proc/self/fd")) <= 200)
with pylog.open(sys.argv[1], sync="never") as log:
    print("reopened", log.describe_topic("t").partitions,
          sum(i.end_offset for i in log.describe_topic("t").partition_info))
"""


def test_open_files_per_partition(tmp_path, child_env):
    """File descriptors are bounded whatever the number of topics, partitions
    and segments (like RocksDB's ``max_open_files``): a partition holds none
    while none of its segments is open (its state file is mapped, and closed
    once mapped), and a Log keeps at most ``max_open_files`` descriptors for
    open segments (``pylog.open(path, max_open_files=...)``), closing the
    least recently used idle one past it and reopening it when it is used
    again. The default is half the process's ``ulimit -n`` less 32, at least
    64 and at most 4,096: 96 at ``ulimit -n 256``, where 10,000 partitions
    across 100 topics can be created, produced to, consumed through a group
    of 4 processes and reopened with at most ~110 descriptors open.

    1,000 partitions under ``ulimit -n 256`` (it refused 1,000 under 1,024
    before): created, written, read and reopened; the 10,000 with a group
    of 4 processes is tests/test_handles.py's long test."""
    out = run_child(FD_CHILD, tmp_path / "a", 256, env=child_env, timeout=300)
    assert out == ["default 96", "ok 1000 True", "reopened 1000 1000"], out


def test_segment_bytes(fastlog, tmp_path):
    """``segment_bytes``                64 KiB .. 2 GiB - 1 (index positions are int32)

    Both ends accepted, one past either refused; at 64 KiB the segments
    really roll at 64 KiB."""
    for bad in (65_535, 2**31):
        with pytest.raises(pylog.InvalidConfig):
            fastlog.create_topic("bad", segment_bytes=bad)
    fastlog.create_topic("big", segment_bytes=2**31 - 1, max_message_bytes=1000)
    fastlog.create_topic("small", segment_bytes=65_536, max_message_bytes=1000)
    p = fastlog.producer()
    for i in range(1000):
        p.send("small", b"x" * 500)
        p.send("big", b"x" * 500)
    small = segments(tmp_path / "log", "small")
    assert len(small) > 5
    assert all(os.path.getsize(s) <= 65_536 for s in small[:-1])
    assert len(segments(tmp_path / "log", "big")) == 1
    assert len(read_all(fastlog, "small")) == 1000


def test_max_message_bytes(fastlog, tmp_path):
    """``max_message_bytes``            64 B .. 256 MiB, at most ``segment_bytes``

    The config's edges, and a record whose batch encodes to exactly the
    limit (measured on disk) accepted while one byte more is refused with
    RecordTooLarge, writing nothing."""
    for bad in (dict(max_message_bytes=63),
                dict(max_message_bytes=256 * 2**20 + 1, segment_bytes=2**31 - 1),
                dict(max_message_bytes=65_537, segment_bytes=65_536)):
        with pytest.raises(pylog.InvalidConfig):
            fastlog.create_topic("bad", **bad)
    fastlog.create_topic("edge-lo", max_message_bytes=64, segment_bytes=65_536)
    fastlog.create_topic("edge-hi", max_message_bytes=256 * 2**20, segment_bytes=2**31 - 1)
    fastlog.create_topic("t", max_message_bytes=1070, segment_bytes=65_536)
    p = fastlog.producer()
    md = p.send("t", b"v" * 1000, partition=0)         # a batch of 61 + 9 + 1000 bytes
    with open(segments(tmp_path / "log")[0], "rb") as f:
        (_, b), = parse_batches(f.read())
    assert b["size"] == 1070 and md.offset == 0
    with pytest.raises(pylog.RecordTooLarge):
        p.send("t", b"v" * 1001, partition=0)
    with pytest.raises(pylog.RecordTooLarge):
        p.send_batch("t", [b"v" * 500, b"v" * 500], partition=0)
    assert fastlog.describe_topic("t").partition_info[0].end_offset == 1


DECOMPRESS = r"""
import sys, pylog
log = pylog.open(sys.argv[1])
c = log.consumer(enable_auto_commit=False)
c.assign([pylog.TopicPartition("z", 0)])
c.seek_to_beginning()
try:
    recs = c.poll(timeout=1)
    print("returned", len(recs))
except pylog.CorruptLogError as exc:
    print("CorruptLogError", exc.position, exc)
except pylog.PylogError as exc:
    print("PylogError", type(exc).__name__, exc)
"""


@pytest.mark.parametrize("mib", [255, 257])
def test_decompressed_batch(tmp_path, child_env, mib):
    """decompressed batch               256 MiB

    A zstd batch planted in a segment (CRC valid) whose records section
    expands to 257 MiB of zeros: reading it raises CorruptLogError naming
    its position, in a process that does not fall over. 255 MiB, under the
    limit, is decompressed (and then found not to hold the record it says)."""
    zstandard = pytest.importorskip("zstandard")
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("z", compression="zstd", segment_bytes=1 << 20)
        log.producer().send("z", os.urandom(300_000), partition=0)   # incompressible
    seg = segments(path, "z")[0]
    with open(seg, "rb") as f:
        data = f.read()
    (pos, b), = parse_batches(data)
    cobj = zstandard.ZstdCompressor(level=1).compressobj()
    zero = bytes(1 << 20)
    frame = b"".join(cobj.compress(zero) for _ in range(mib)) + cobj.flush()
    # the planted batch keeps the size of the one it replaces: the zero
    # frame, then a zstd skippable frame as padding
    pad = b["size"] - 61 - len(frame) - 8
    assert pad >= 0
    frame += struct.pack("<II", 0x184D2A50, pad) + bytes(pad)
    head = bytearray(data[pos:pos + 61])
    body = bytes(head[21:61]) + frame
    assert 61 + len(frame) == b["size"]
    struct.pack_into(">I", head, 17, crc32c(body))
    with open(seg, "r+b") as f:
        f.seek(pos)
        f.write(bytes(head[:21]) + body)
    out = run_child(DECOMPRESS, path, env=child_env, timeout=120)
    assert len(out) == 1
    if mib > 256:
        assert out[0].startswith(f"CorruptLogError {pos} "), out
        assert "256" in out[0] or "268435456" in out[0] or "expands" in out[0]
    else:
        assert out[0].startswith(("CorruptLogError", "PylogError")), out
        assert "expands past" not in out[0]


def test_max_records_per_poll(fastlog):
    """``max_records`` per poll         1,000,000

    1,000,000 records come back from one poll; a million and one is refused,
    in poll and as the consumer's max_poll_records."""
    fastlog.create_topic("t")
    p = fastlog.producer()
    for _ in range(10):
        p.send_batch("t", [b"v"] * 100_000, partition=0)
    p.send("t", b"one more", partition=0)
    c = fastlog.consumer(enable_auto_commit=False)
    c.assign([TP("t", 0)])
    c.seek_to_beginning()
    with pytest.raises(pylog.InvalidArgument):
        c.poll(timeout=1, max_records=1_000_001)
    assert c.position(TP("t", 0)) == 0
    values = []
    while len(values) < 1_000_000:
        batch = c.poll_values(timeout=1, max_records=1_000_000)
        assert batch
        values.extend(batch)
    assert len(values) == 1_000_000
    assert c.poll_values(timeout=1, max_records=1_000_000) == [b"one more"]
    c.close()
    with pytest.raises(pylog.InvalidArgument):
        fastlog.consumer("t", max_poll_records=1_000_001)


def test_records_stamped_while_the_clock_was_behind(fastlog):
    """records stamped while the clock was behind (a device booting in 1970)
    are expired once it is put right, and deleted when retention reaches
    their segments (those written before them first)

    Records of an hour ago, then ones stamped in 1970 (sealed segments of
    their own), then current ones: a 7-day retention pass keeps them all
    (the older segments come first and are not expired); once those are
    gone (delete_records), the next pass deletes the 1970 ones."""
    fastlog.create_topic("t", segment_bytes=65536, retention_ms=-1)
    p = fastlog.producer()
    now = int(time.time() * 1000)
    stamps = [now - 3_600_000] * 300 + [86_400_000] * 600 + [now] * 300
    for ts in stamps:
        p.send("t", b"x" * 400, partition=0, timestamp_ms=ts)
    p.flush()
    fastlog.alter_topic("t", retention_ms=7 * 86_400_000)
    assert fastlog.enforce_retention() == 0
    part = fastlog.partition("t", 0)
    bases = part.segments.bases(part.state())
    # drop the segments holding the hour-old records (the first of the
    # 1970 ones may share a segment with them: start past that one)
    first_1970 = next(b for b in bases if b > 300)
    fastlog.delete_records({TP("t", 0): first_1970})
    assert fastlog.enforce_retention() > 0
    start = fastlog.describe_topic("t").partition_info[0].start_offset
    assert first_1970 < start <= 900           # no current record goes
