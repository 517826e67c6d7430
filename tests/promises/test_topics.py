"""README "Topics": the admin calls as printed, retention's rules and when
retention runs."""

import os
import time

import pytest
from promisekit import Child, read_all, run_child, segments, wait_until

import pylog
from pylog import TopicPartition as TP


def test_topic_admin_calls_as_printed(log, tmp_path, child_env):
    """log.create_topic("clicks", partitions=8,
                     retention_ms=7 * 86_400_000,    # -1 keeps everything
                     retention_bytes=-1,             # per partition
                     segment_bytes=128 * 2**20,
                     max_message_bytes=1 * 2**20 + 12,
                     compression=None)               # or "zstd"
    log.topics()                                     # ['clicks', ...]
    info = log.describe_topic("clicks")              # config, per-partition
    info.partition_info[0].end_offset                # start/end offsets, bytes

    The calls as printed, checked against what they say; another process
    sees the topic at once."""
    info = log.create_topic("clicks", partitions=8, retention_ms=7 * 86_400_000,
                            retention_bytes=-1, segment_bytes=128 * 2**20,
                            max_message_bytes=1 * 2**20 + 12, compression=None)
    assert info.partitions == 8
    log.create_topic("other")
    assert log.topics() == ["clicks", "other"]
    p = log.producer()
    for i in range(5):
        p.send("clicks", b"x" * 100, partition=0)
    info = log.describe_topic("clicks")
    given = dict(retention_ms=7 * 86_400_000, retention_bytes=-1,
                 segment_bytes=128 * 2**20, max_message_bytes=1 * 2**20 + 12,
                 compression=None)
    assert {k: info.config[k] for k in given} == given
    pi = info.partition_info[0]
    assert (pi.start_offset, pi.end_offset) == (0, 5) and pi.bytes > 500
    assert [x.end_offset for x in info.partition_info[1:]] == [0] * 7
    out = run_child("""
        import sys, pylog
        with pylog.open(sys.argv[1]) as log:
            i = log.describe_topic("clicks")
            print(log.topics(), i.partitions, i.partition_info[0].end_offset)
    """, tmp_path / "log", env=child_env)
    assert out == ["['clicks', 'other'] 8 5"]


def test_zstd_topic_round_trips(log):
    """compression=None)               # or "zstd"

    Records of a zstd topic come back as sent, and take less room."""
    log.create_topic("z", compression="zstd")
    log.create_topic("plain")
    p = log.producer()
    vals = [b'{"page": "/products/%d", "user": "user-%d"}' % (i, i % 10) for i in range(500)]
    p.send_batch("z", vals)
    p.send_batch("plain", vals)
    assert [r.value for r in read_all(log, "z")] == vals
    assert log.describe_topic("z").partition_info[0].bytes < \
        log.describe_topic("plain").partition_info[0].bytes / 3


def test_create_partitions_grows_never_shrinks(log):
    """log.create_partitions("clicks", 12)              # grow (never shrink)

    Growing keeps every record where it was and adds empty partitions;
    asking for fewer (or as many) is refused and changes nothing."""
    log.create_topic("clicks", partitions=8)
    p = log.producer()
    before = {k: p.send("clicks", b"v", key=k).partition for k in (b"a", b"b", b"c")}
    info = log.create_partitions("clicks", 12)
    assert info.partitions == 12
    assert [x.end_offset for x in info.partition_info[8:]] == [0] * 4
    assert sum(x.end_offset for x in info.partition_info) == 3
    for n in (4, 12):
        with pytest.raises(pylog.InvalidArgument):
            log.create_partitions("clicks", n)
    assert log.describe_topic("clicks").partitions == 12
    recs = read_all(log, "clicks")
    assert {r.partition for r in recs} == set(before.values())


def test_alter_topic_changes_config_for_every_process(log, tmp_path, child_env):
    """log.alter_topic("clicks", retention_ms=86_400_000)

    The change is stored (a new process sees it) and applies: records too
    old for the new retention go at the next retention pass."""
    log.create_topic("clicks", segment_bytes=65536, retention_ms=-1)
    p = log.producer()
    old = int(time.time() * 1000) - 3 * 86_400_000
    for i in range(1000):
        p.send("clicks", b"x" * 200, timestamp_ms=old)
    assert log.enforce_retention() == 0
    log.alter_topic("clicks", retention_ms=86_400_000)
    out = run_child("""
        import sys, pylog
        with pylog.open(sys.argv[1]) as log:
            print(log.describe_topic("clicks").config["retention_ms"])
    """, tmp_path / "log", env=child_env)
    assert out == ["86400000"]
    assert log.enforce_retention() > 0
    assert log.describe_topic("clicks").partition_info[0].start_offset > 0


def test_delete_topic_removes_it_everywhere(log, tmp_path, child_env):
    """log.delete_topic("clicks")

    Its records and directories go, another process that had it open can no
    longer send to it, and a topic of the same name starts again at 0."""
    log.create_topic("clicks", partitions=2)
    log.producer().send_batch("clicks", [b"v"] * 10)
    code = r"""
        import sys, pylog
        log = pylog.open(sys.argv[1])
        p = log.producer()
        p.send("clicks", b"before")
        print("ready", flush=True)
        import time
        while not __import__("os").path.exists(sys.argv[2]):
            time.sleep(0.01)
        try:
            p.send("clicks", b"after-delete")
            print("sent")
        except pylog.PylogError as exc:
            print("refused", type(exc).__name__)
    """
    flag = tmp_path / "deleted"
    with Child(code, tmp_path / "log", flag, env=child_env) as c:
        c.expect("ready")
        log.delete_topic("clicks")
        flag.touch()
        out = c.ok()
        assert len(out) == 2 and out[1].startswith("refused"), out
    assert "clicks" not in log.topics()
    assert not [n for n in os.listdir(tmp_path / "log") if n.startswith("clicks")]
    with pytest.raises(pylog.TopicNotFound):
        log.describe_topic("clicks")
    log.create_topic("clicks")
    assert log.producer().send("clicks", b"new").offset == 0
    assert [r.value for r in read_all(log, "clicks")] == [b"new"]


def test_retention_minus_one_keeps_everything(fastlog):
    """retention_ms=7 * 86_400_000,    # -1 keeps everything

    Records stamped in 1970 in many sealed segments: nothing is deleted
    with -1 (and everything sealed is with a week, as the control)."""
    for name, ms in (("keep", -1), ("week", 7 * 86_400_000)):
        fastlog.create_topic(name, segment_bytes=65536, retention_ms=ms)
        p = fastlog.producer()
        for i in range(1000):
            p.send(name, b"x" * 200, timestamp_ms=1000 + i)
    fastlog.enforce_retention()
    assert fastlog.describe_topic("keep").partition_info[0].start_offset == 0
    assert len(read_all(fastlog, "keep")) == 1000
    assert fastlog.describe_topic("week").partition_info[0].start_offset > 0


def test_retention_bytes_is_per_partition(fastlog):
    """retention_bytes=-1,             # per partition

    A two-partition topic with retention_bytes of 200 KB: the partition
    that holds 1 MB is cut back to about 200 KB, the one that holds 100 KB
    keeps everything."""
    fastlog.create_topic("t", partitions=2, segment_bytes=65536,
                         retention_bytes=200_000, retention_ms=-1)
    p = fastlog.producer()
    for i in range(4000):
        p.send("t", b"x" * 250, partition=0)
    for i in range(400):
        p.send("t", b"x" * 250, partition=1)
    fastlog.enforce_retention()
    p0, p1 = fastlog.describe_topic("t").partition_info
    assert p1.start_offset == 0 and p1.end_offset == 400
    assert p0.start_offset > 0 and 200_000 <= p0.bytes < 200_000 + 65536


def test_retention_deletes_whole_sealed_segments_only(fastlog, tmp_path):
    """Retention deletes whole sealed segments once they are older than
    ``retention_ms`` or the partition is larger than ``retention_bytes``

    After a retention pass the log starts exactly at a remaining segment's
    first offset, with every record from there on; the active segment is
    never deleted, however old its records."""
    fastlog.create_topic("t", segment_bytes=65536, retention_ms=86_400_000)
    p = fastlog.producer()
    for i in range(3000):
        p.send("t", b"%d:" % i + b"x" * 200, timestamp_ms=1000 + i)   # all expired
    fastlog.enforce_retention()           # (the rolls already deleted most)
    info = fastlog.describe_topic("t").partition_info[0]
    segs = segments(tmp_path / "log")
    assert len(segs) == 1 and info.segments == 1          # only the active one left
    base = int(os.path.basename(segs[0])[:-4])
    assert info.start_offset == base
    recs = read_all(fastlog, "t")
    assert [r.offset for r in recs] == list(range(base, 3000))
    assert recs[0].value.startswith(b"%d:" % base)
    assert fastlog.enforce_retention() == 0               # the active segment stays


def test_retention_runs_when_a_segment_rolls(fastlog):
    """it runs
    when a segment rolls

    A producer that just keeps sending to a topic with retention_bytes
    never calls enforce_retention: the partition stays bounded."""
    fastlog.create_topic("t", segment_bytes=65536, retention_bytes=150_000,
                         retention_ms=-1)
    p = fastlog.producer()
    for i in range(5000):
        p.send("t", b"x" * 250)
    info = fastlog.describe_topic("t").partition_info[0]
    assert info.start_offset > 0
    assert info.bytes < 150_000 + 2 * 65536


@pytest.mark.long
def test_retention_runs_every_minute_in_a_writing_process(tmp_path, child_env):
    """every minute in a writing process

    A process that has the log open for writing but appends nothing: the
    expired segments are deleted within about a minute anyway."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", segment_bytes=65536, retention_ms=-1)
        p = log.producer()
        for i in range(2000):
            p.send("t", b"x" * 200, timestamp_ms=1000 + i)
    code = r"""
        import sys, time, pylog
        log = pylog.open(sys.argv[1])
        log.alter_topic("t", retention_ms=86_400_000)
        log.producer().send("t", b"one append, no roll")
        print("ready", flush=True)
        time.sleep(120)
    """
    with Child(code, path, env=child_env) as c:
        c.expect("ready")
        with pylog.open(path, readonly=True) as ro:
            assert ro.describe_topic("t").partition_info[0].start_offset == 0
            wait_until(lambda: ro.describe_topic("t").partition_info[0].start_offset > 0,
                       timeout=75, step=1.0, what="retention in the writing process")


def test_enforce_retention_runs_it_now(fastlog):
    """and on
    ``log.enforce_retention()``.

    It returns how many segments it deleted, and consumers see the new start."""
    fastlog.create_topic("t", segment_bytes=65536, retention_ms=-1)
    p = fastlog.producer()
    for i in range(3000):
        p.send("t", b"x" * 200, timestamp_ms=1000 + i)
    nseg = fastlog.describe_topic("t").partition_info[0].segments
    fastlog.alter_topic("t", retention_ms=86_400_000)
    assert fastlog.enforce_retention() == nseg - 1
    c = fastlog.consumer(enable_auto_commit=False)
    c.assign([TP("t", 0)])
    c.seek_to_beginning()
    assert c.position(TP("t", 0)) == fastlog.describe_topic("t").partition_info[0].start_offset > 0
