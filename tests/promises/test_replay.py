"""README "Replay and seek by time": where a new group consumer starts, seek
before the first poll, the replay calls as printed, and committed offsets
that retention deleted or that point past the end."""

import pytest
from promisekit import run_child

import pylog
from pylog import TopicPartition as TP


def _topic(log, n=50):
    log.create_topic("clicks", exist_ok=True)
    p = log.producer()
    for i in range(n):
        p.send("clicks", b"%d" % i, timestamp_ms=1_700_000_000_000 + 1000 * i)
    return p


def test_new_group_starts_at_commit_or_auto_offset_reset(fastlog, tmp_path, child_env):
    """A new group consumer starts where its group committed, or, without a
    commit, at ``auto_offset_reset``: ``"latest"`` by default (only records
    produced from now on), ``"earliest"`` (everything retained) or ``"none"``
    (raise ``OffsetOutOfRange``).

    The group with a commit is a new consumer in a new process."""
    p = _topic(fastlog)
    latest = fastlog.consumer("clicks", group_id="latest")           # the default
    assert latest.poll(timeout=0.3) == []
    p.send("clicks", b"new")
    assert [r.value for r in latest.poll(timeout=1)] == [b"new"]
    latest.close()
    with fastlog.consumer("clicks", group_id="earliest", auto_offset_reset="earliest") as c:
        assert c.poll(timeout=1, max_records=1000)[0].offset == 0
    with fastlog.consumer("clicks", group_id="none", auto_offset_reset="none") as c:
        with pytest.raises(pylog.OffsetOutOfRange):
            c.poll(timeout=1)
    with fastlog.consumer("clicks", group_id="done", enable_auto_commit=False) as c:
        c.poll(timeout=0)                 # joins (see test_commit_before_the_first_poll)
        c.commit({TP("clicks", 0): 17})
    out = run_child(r"""
import sys, pylog
with pylog.open(sys.argv[1]) as log:
    for reset in ("latest", "earliest", "none"):
        with log.consumer("clicks", group_id="done", auto_offset_reset=reset) as c:
            print(reset, c.poll(timeout=1)[0].offset)
""", tmp_path / "log", env=child_env)
    assert out == ["latest 17", "earliest 17", "none 17"]


def test_seek_works_before_the_first_poll(fastlog):
    """``seek`` works right away; a group member that
    has not polled yet joins its group first:

    A member fresh from log.consumer(...) seeks and polls from there; the
    group shows it as a member owning the partition."""
    _topic(fastlog)
    consumer = fastlog.consumer("clicks", group_id="replay")
    tp = pylog.TopicPartition("clicks", 0)
    consumer.seek(tp, 42)
    d = fastlog.describe_group("replay")
    assert len(d["members"]) == 1 and d["members"][0]["owned"] == [tp]
    assert [r.offset for r in consumer.poll(timeout=1)] == list(range(42, 50))
    consumer.close()


def test_replay_calls_as_printed(fastlog):
    """consumer.seek_to_beginning(); consumer.seek_to_end()
    offsets = consumer.offsets_for_times({tp: 1_700_000_000_000})
    first = offsets[tp]                   # None: no record at or after that time
    if first is not None:
        consumer.seek(tp, first)          # first record at or after that time
    consumer.position(tp); consumer.committed(tp); consumer.lag()
    consumer.pause(tp); consumer.resume(tp)"""
    p = _topic(fastlog)
    consumer = fastlog.consumer("clicks", group_id="replay", enable_auto_commit=False)
    tp = pylog.TopicPartition("clicks", 0)
    consumer.seek_to_beginning()
    assert consumer.position(tp) == 0
    consumer.seek_to_end()
    assert consumer.position(tp) == 50 and consumer.lag() == {tp: 0}
    for ts, want in ((1_700_000_000_000, 0), (1_700_000_010_500, 11),
                     (1_700_000_049_000, 49), (1_700_000_049_001, None)):
        offsets = consumer.offsets_for_times({tp: ts})
        assert offsets[tp] == want, ts
    offsets = consumer.offsets_for_times({tp: 1_700_000_010_500})
    first = offsets[tp]
    assert first is not None
    consumer.seek(tp, first)
    recs = consumer.poll(timeout=1)
    assert recs[0].offset == 11 and recs[0].timestamp_ms >= 1_700_000_010_500
    assert recs[0].timestamp_ms - 1000 < 1_700_000_010_500
    assert consumer.position(tp) == 50 and consumer.committed(tp) is None
    consumer.commit()
    assert consumer.committed(tp) == 50
    consumer.seek(tp, 45)
    assert consumer.lag() == {tp: 5}
    consumer.pause(tp)
    assert consumer.poll(timeout=0.3) == []
    p.send("clicks", b"while paused")
    assert consumer.poll(timeout=0.3) == []
    consumer.resume(tp)
    assert [r.offset for r in consumer.poll(timeout=1)] == [45, 46, 47, 48, 49, 50]
    consumer.close()


def test_committed_offset_deleted_or_past_the_end(fastlog):
    """A committed offset that retention has deleted resumes at the log start and
    is counted (see Commit rules); one past the end follows
    ``auto_offset_reset``."""
    fastlog.create_topic("t", segment_bytes=65536, retention_ms=-1)
    p = fastlog.producer()
    for i in range(2000):
        p.send("t", b"x" * 200)
    with fastlog.consumer("t", group_id="old", enable_auto_commit=False) as c:
        c.poll(timeout=0)
        c.commit({TP("t", 0): 5})
    fastlog.alter_topic("t", retention_bytes=100_000)
    fastlog.enforce_retention()
    start = fastlog.describe_topic("t").partition_info[0].start_offset
    with fastlog.consumer("t", group_id="old") as c:          # default "latest"
        assert c.poll(timeout=1)[0].offset == start
    assert fastlog.describe_group("old")["retention_resets"] == 1
    for reset, want in (("latest", 2000), ("earliest", start)):
        g = "past-" + reset
        with fastlog.consumer("t", group_id=g, enable_auto_commit=False) as c:
            c.poll(timeout=0)
            c.commit({TP("t", 0): 5000})
        with fastlog.consumer("t", group_id=g, auto_offset_reset=reset) as c:
            assert c.position(TP("t", 0)) == want
    with fastlog.consumer("t", group_id="past-none", enable_auto_commit=False) as c:
        c.poll(timeout=0)
        c.commit({TP("t", 0): 5000})
    with fastlog.consumer("t", group_id="past-none", auto_offset_reset="none") as c:
        with pytest.raises(pylog.OffsetOutOfRange):
            c.poll(timeout=1)
