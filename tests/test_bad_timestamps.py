"""Producer-supplied timestamps outside the topic's window are refused
(issue 13: one far-future timestamp stopped time retention for good).

Kafka's message.timestamp.after.max.ms (default one hour since 3.6) and
message.timestamp.before.max.ms (default unbounded) become the topic
settings message_timestamp_after_max_ms / message_timestamp_before_max_ms.
"""

import json
import os
import subprocess
import sys
import time

import pytest

import pylog
from pylog.partition import Cursor

HOUR = 3_600_000
DAY = 86_400_000
FAR_FUTURE = 2**62 - 1


def now_ms():
    return time.time_ns() // 1_000_000


def end_offsets(log, topic):
    return [p.end_offset for p in log.describe_topic(topic).partition_info]


def old_then_fresh_segment(logdir, retention_ms):
    """Topic ``t`` (one partition) whose first segment is sealed with 380
    records ten days old, then fresh ones up to its last time index entry:
    the final entry alone holds a fresh timestamp. Returns the partition's
    directory and the fresh records' timestamp."""
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=1, segment_bytes=65536, retention_ms=retention_ms)
        prod = log.producer()
        now = now_ms()
        for i in range(580):
            prod.send("t", b"x" * 100, partition=0,
                      timestamp_ms=now - 10 * DAY if i < 380 else now)
            prod.flush()
        part = log.partition("t", 0)
        assert part.state().active_base > 384
        return part.dir, now


def test_far_future_timestamp_is_refused_and_retention_keeps_working(logdir):
    """The issue's scenario: hour-old records in 8 segments, retention_ms
    60 s, one record stamped 2^62-1. It was accepted and kept every segment;
    now it is refused (nothing written) and retention deletes the old ones."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", segment_bytes=65536, retention_ms=-1)
        prod = log.producer()
        old = now_ms() - HOUR
        for i in range(8 * 30):
            prod.send("t", b"%04d" % i + b"x" * 2000, timestamp_ms=old)
        before = end_offsets(log, "t")
        with pytest.raises(pylog.InvalidTimestamp) as ei:
            prod.send("t", b"future", timestamp_ms=FAR_FUTURE)
        exc = ei.value
        assert isinstance(exc, ValueError) and isinstance(exc, pylog.PylogError)
        assert exc.timestamp == FAR_FUTURE
        assert exc.setting == "message_timestamp_after_max_ms"
        assert abs(exc.bound - (now_ms() + HOUR)) < 60_000
        msg = str(exc)
        assert str(FAR_FUTURE) in msg and "message_timestamp_after_max_ms=3600000" in msg
        assert str(exc.bound) in msg
        with pytest.raises(pylog.InvalidTimestamp):
            prod.send_batch("t", [b"a", b"b"], timestamp_ms=FAR_FUTURE)
        assert end_offsets(log, "t") == before, "a refused record was written"
        prod.send("t", b"now")              # rolls are by size: one more segment
        segs = log.describe_topic("t").partition_info[0].segments
        assert segs >= 8
        log.alter_topic("t", retention_ms=60_000)
        assert log.enforce_retention() > 0
        info = log.describe_topic("t").partition_info[0]
        assert info.segments < segs and info.start_offset > 0


def test_within_the_window_and_unbounded(logdir):
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t")
        prod = log.producer()
        prod.send("t", b"soon", timestamp_ms=now_ms() + HOUR - 60_000)
        prod.send("t", b"ancient", timestamp_ms=0)   # before: unbounded by default
        log.create_topic("free", message_timestamp_after_max_ms=-1)
        md = log.producer().send("free", b"x", timestamp_ms=FAR_FUTURE)
        assert md.timestamp_ms == FAR_FUTURE
        recs = log.partition("t", 0).fetch(Cursor(0), 10)
        assert [r[3] for r in recs] == [b"soon", b"ancient"]


@pytest.mark.parametrize("items", [
    [b"a", b"b"],                                   # column path, one partition
    [(b"k%d" % i, b"v") for i in range(20)],        # keys over all partitions
    [(b"k", b"v", [("h", b"x")])],                  # general path with headers
], ids=["values", "keys-spread", "headers"])
def test_before_bound_refuses_old_timestamps_writing_nothing(logdir, items):
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", partitions=3, message_timestamp_before_max_ms=HOUR)
        prod = log.producer()
        stale = now_ms() - 2 * HOUR
        with pytest.raises(pylog.InvalidTimestamp) as ei:
            prod.send_batch("t", items, timestamp_ms=stale)
        assert ei.value.setting == "message_timestamp_before_max_ms"
        assert "message_timestamp_before_max_ms=3600000" in str(ei.value)
        with pytest.raises(pylog.InvalidTimestamp):
            prod.send("t", b"x", key=b"k", timestamp_ms=stale)
        assert end_offsets(log, "t") == [0, 0, 0]
        prod.send_batch("t", items, timestamp_ms=now_ms() - HOUR // 2)
        assert sum(end_offsets(log, "t")) == len(items)


def test_config_is_validated_altered_and_described(logdir):
    with pylog.open(logdir) as log:
        info = log.create_topic("t")
        assert info.config["message_timestamp_after_max_ms"] == HOUR
        assert info.config["message_timestamp_before_max_ms"] == -1
        for bad in (-2, 2**62 + 1, "1", True, 1.5):
            with pytest.raises(pylog.InvalidConfig):
                log.create_topic("u", message_timestamp_after_max_ms=bad)
            with pytest.raises(pylog.InvalidConfig):
                log.alter_topic("t", message_timestamp_before_max_ms=bad)
        assert "u" not in log.topics()
        info = log.alter_topic("t", message_timestamp_after_max_ms=1000)
        assert info.config["message_timestamp_after_max_ms"] == 1000
        with pytest.raises(pylog.InvalidTimestamp):
            log.producer().send("t", b"x", timestamp_ms=now_ms() + 60_000)


def test_log_without_the_keys_gets_the_defaults(logdir):
    """A topic stored by an older version has no such keys: the defaults
    apply, and describe_topic shows them."""
    with pylog.open(logdir) as log:
        log.create_topic("t")
        doc = log.meta.get_topic("t")
        cfg = {k: v for k, v in doc["config"].items()
               if not k.startswith("message_timestamp")}
        log.meta.update_topic("t", config=cfg)
    with pylog.open(logdir) as log:
        assert "message_timestamp_after_max_ms" not in log.meta.get_topic("t")["config"]
        info = log.describe_topic("t")
        assert info.config["message_timestamp_after_max_ms"] == HOUR
        assert info.config["message_timestamp_before_max_ms"] == -1
        with pytest.raises(pylog.InvalidTimestamp):
            log.producer().send("t", b"x", timestamp_ms=FAR_FUTURE)


def test_cli_creates_and_describes_the_settings(logdir, child_env):
    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "pylog.cli", *args],
                           capture_output=True, env=child_env, timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()
    cli("topics", logdir, "create", "t", "--config",
        "message.timestamp.after.max.ms=5000", "--config",
        "message_timestamp_before_max_ms=86400000")
    out = cli("topics", logdir, "describe", "t")
    assert "message_timestamp_after_max_ms=5000" in out
    assert "message_timestamp_before_max_ms=86400000" in out
    doc = json.loads(cli("topics", logdir, "describe", "t", "--json"))
    assert doc["config"]["message_timestamp_after_max_ms"] == 5000


def test_a_lowered_final_timestamp_neither_passes_verify_nor_deletes_fresh_records(logdir):
    """T-3: the final time index entry of a sealed segment decides its
    retention. Damage that lowers it but keeps the file sorted (a flipped
    bit) must not make retention delete records that are not yet expired,
    and ``pylog verify`` names it."""
    from pylog.index import TIMEINDEX_ENTRY
    from pylog.verify import verify_log

    part_dir, now = old_then_fresh_segment(logdir, retention_ms=7 * DAY)
    path = os.path.join(part_dir, "%020d.timeindex" % 0)
    data = bytearray(open(path, "rb").read())
    n = len(data) // 12
    last_ts, last_rel = TIMEINDEX_ENTRY.unpack_from(data, 12 * (n - 1))
    before_ts = TIMEINDEX_ENTRY.unpack_from(data, 12 * (n - 2))[0]
    assert last_ts == now and before_ts == now - 10 * DAY
    TIMEINDEX_ENTRY.pack_into(data, 12 * (n - 1), before_ts, last_rel)
    with open(path, "wb") as f:
        f.write(data)
    problems = verify_log(logdir)
    assert any("T-3" in p.message for p in problems), problems
    with pylog.open(logdir) as log:
        assert log.enforce_retention() == 0
        assert log.partition("t", 0).state().log_start_offset == 0


def test_a_damaged_batch_after_the_last_index_entry_does_not_expire_fresh_records(logdir):
    """The final timestamp check (T-3) walks the batches after the last
    index entry; one of them damaged makes the rebuilt time index end at
    the damage, with the maximum of the batches before it. Retention must
    not take that for the segment's: the fresh records after the damage
    stay (before: the segment was deleted under a 7-day retention_ms)."""
    from pylog import _native
    from pylog.index import INDEX_ENTRY

    part_dir, _ = old_then_fresh_segment(logdir, retention_ms=-1)
    base = os.path.join(part_dir, "%020d" % 0)
    with open(base + ".index", "rb") as f:
        idx = f.read()
    with open(base + ".log", "rb") as f:
        data = bytearray(f.read())
    pos = INDEX_ENTRY.unpack_from(idx, len(idx) - 8)[1]
    heads = []
    while pos < len(data):
        h = _native.read_batch_header(bytes(data), pos, len(data))
        heads.append((pos, h.base_offset))
        pos = h.end_position
    # the first fresh batch: the scan stops before any fresh record
    bad_pos = dict((o, p) for p, o in heads)[380]
    data[bad_pos + 16] ^= 0xFF               # its magic byte
    with open(base + ".log", "wb") as f:
        f.write(data)
    with pylog.open(logdir) as log:
        log.alter_topic("t", retention_ms=7 * DAY)
        assert log.partition("t", 0).enforce_retention() == 0
        assert log.describe_topic("t").partition_info[0].start_offset == 0
