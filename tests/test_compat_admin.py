"""kafka-python's KafkaAdminClient and ConsumerRecord names tried against
pylog (each works, or raises the documented error), and the behaviour of
the admin calls: delete_records (FORMAT.rst P-6) across processes,
delete_group, reset_group by shift and out-of-range resets refused."""

import os
import subprocess
import textwrap

import childproc
import pytest

import pylog
from pylog import TopicPartition as TP
from pylog.admin import KAFKA_ADMIN_INSTEAD
from pylog.errors import (
    GroupNotEmpty,
    GroupNotFound,
    InvalidArgument,
    OffsetOutOfRange,
    TopicNotFound,
)
from pylog.segment import list_segment_bases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEGMENT_BYTES = 65536


def child_env():
    return dict(os.environ, PYTHONPATH=ROOT)


def filled(path, n=3000, partitions=1):
    """A log with topic "t" of ``n`` 100-byte records per partition over
    several small segments."""
    log = pylog.open(path, sync="never")
    log.create_topic("t", partitions, segment_bytes=SEGMENT_BYTES)
    p = log.producer()
    for part in range(partitions):
        for first in range(0, n, 100):      # batches well below a segment
            p.send_batch("t", [b"%05d" % i + b"x" * 95
                               for i in range(first, min(n, first + 100))],
                         partition=part)
    p.flush()
    return log


def committed(log, group):
    return log.meta.group_offsets(group)


# -- the name tables ----------------------------------------------------------------

# KafkaAdminClient names pylog's Log answers: name -> how to call it on a
# log holding topic "t" and group "g" (committed offsets, no live member).
ADMIN_WORKS = {
    "list_topics": lambda log: log.list_topics() == ["t"],
    "list_consumer_groups": lambda log: log.list_consumer_groups() == [("g", "consumer")],
    "delete_records": lambda log: log.delete_records({TP("t", 0): 5})[TP("t", 0)]
    ["low_watermark"] == 5,
    "delete_consumer_groups": lambda log: log.delete_consumer_groups(["g", "nope"])[0]
    == ("g", None),
    "close": lambda log: log.close() is None,
}


@pytest.mark.parametrize("name", sorted(ADMIN_WORKS))
def test_kafka_admin_names_that_work(tmp_path, name):
    log = filled(tmp_path, n=10)
    try:
        log.meta.commit("g", {("t", 0): 3})
        assert ADMIN_WORKS[name](log)
    finally:
        log.close()


@pytest.mark.parametrize("name", sorted(KAFKA_ADMIN_INSTEAD))
def test_kafka_admin_names_pylog_lacks_say_what_to_use(tmp_path, name):
    with pylog.open(tmp_path) as log:
        with pytest.raises(AttributeError, match=f"KafkaAdminClient.{name}.*; use "):
            getattr(log, name)
        assert not hasattr(log, name)
        # other misses stay plain AttributeErrors
        with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
            log.no_such_thing


def test_consumer_record_names(tmp_path):
    """kafka-python's ConsumerRecord names on a polled Record."""
    with pylog.open(tmp_path) as log:
        log.create_topic("t")
        p = log.producer()
        p.send("t", b"value", key=b"key", timestamp_ms=1234)
        p.send("t", None, timestamp_ms=1235)
        c = log.consumer("t", auto_offset_reset="earliest")
        a, b = c.poll(timeout=5)
        assert (a.topic, a.partition, a.offset) == ("t", 0, 0)
        assert a.timestamp == a.timestamp_ms == 1234
        assert a.timestamp_type == b.timestamp_type == 0        # B-1 create time
        assert (a.key, a.value, a.headers) == (b"key", b"value", ())
        assert (a.serialized_key_size, a.serialized_value_size) == (3, 5)
        assert (b.serialized_key_size, b.serialized_value_size) == (-1, -1)
        # still a 7-tuple: unpacking and _fields are unchanged
        t, p_, o, ts, k, v, h = a
        assert len(a._fields) == 7
        c.close()
        # a deserialized field's stored size is not kept: -1 unless bytes
        d = log.consumer("t", auto_offset_reset="earliest",
                         value_deserializer=bytes.decode, key_deserializer=bytes)
        r = d.poll(timeout=5)[0]
        assert r.value == "value" and r.serialized_value_size == -1
        assert r.serialized_key_size == 3
        d.close()


# -- delete_records (P-6) -----------------------------------------------------------

def test_delete_records_moves_the_start_into_a_segment_durably(tmp_path):
    log = filled(tmp_path)
    before = list_segment_bases(os.path.join(str(tmp_path), "t-0"))
    assert len(before) > 3
    cut = before[2] + 7           # inside the third segment
    out = log.delete_records({TP("t", 0): cut})
    assert out == {TP("t", 0): {"partition_index": 0, "low_watermark": cut,
                                "error_code": 0}}
    after = list_segment_bases(os.path.join(str(tmp_path), "t-0"))
    assert after == before[2:]      # wholly-below segments deleted (P-5)
    assert log.describe_topic("t").partition_info[0].start_offset == cut
    c = log.consumer(auto_offset_reset="earliest")
    c.assign([TP("t", 0)])
    assert [r.offset for r in c.poll(timeout=5, max_records=2)] == [cut, cut + 1]
    c.seek(TP("t", 0), cut - 1)     # below the start: the reset policy applies
    assert [r.offset for r in c.poll(timeout=5, max_records=1)] == [cut]
    c.close()
    # a lower offset never moves the start down; retention keeps it too
    assert log.delete_records({TP("t", 0): 3})[TP("t", 0)]["low_watermark"] == cut
    log.enforce_retention()
    log.alter_topic("t", retention_bytes=1)
    log.enforce_retention()
    assert log.describe_topic("t").partition_info[0].start_offset >= cut
    start = log.describe_topic("t").partition_info[0].start_offset
    log.close()
    # P-6: durable in the metadata (M-5) and kept by recovery
    with pylog.open(tmp_path) as again:
        assert again.describe_topic("t").partition_info[0].start_offset == start
        assert again.meta.partition_meta("t", 0).log_start_offset == start


def test_delete_records_to_the_end_with_minus_one(tmp_path):
    log = filled(tmp_path, n=100)
    try:
        assert log.delete_records({TP("t", 0): -1})[TP("t", 0)]["low_watermark"] == 100
        log.producer().send("t", b"after", partition=0)
        c = log.consumer("t", auto_offset_reset="earliest")
        assert [r.value for r in c.poll(timeout=5)] == [b"after"]
        c.close()
    finally:
        log.close()


@pytest.mark.parametrize("bad, error", [
    ({TP("t", 0): 101}, OffsetOutOfRange),          # past the end offset
    ({TP("t", 0): -2}, OffsetOutOfRange),
    ({TP("t", 0): "5"}, InvalidArgument),
    ({TP("t", 0): True}, InvalidArgument),
    ({"t": 5}, InvalidArgument),
    ({TP("nope", 0): 5}, TopicNotFound),
    ([(TP("t", 0), 5)], InvalidArgument),
])
def test_delete_records_checks_everything_before_changing_anything(tmp_path, bad, error):
    log = filled(tmp_path, n=100, partitions=2)
    try:
        request = dict(bad) if isinstance(bad, dict) else bad
        if isinstance(request, dict):
            request = {TP("t", 1): 50, **request}     # a good one first
        with pytest.raises(error):
            log.delete_records(request)
        assert [p.start_offset for p in log.describe_topic("t").partition_info] == [0, 0]
    finally:
        log.close()


CONSUMER_BELOW = textwrap.dedent("""
    import sys, pylog
    from pylog import TopicPartition as TP
    path, policy = sys.argv[1], sys.argv[2]
    with pylog.open(path, sync="never") as log:
        c = log.consumer(auto_offset_reset=policy)
        c.assign([TP("t", 0)])
        c.seek(TP("t", 0), 0)
        got = c.poll(timeout=5, max_records=3)
        print("ready", [r.offset for r in got][-1], flush=True)
        sys.stdin.readline()
        try:
            got = c.poll(timeout=5, max_records=1)
            print("next", got[0].offset, flush=True)
        except pylog.OffsetOutOfRange as exc:
            print("OffsetOutOfRange", flush=True)
        c.close()
""")


@pytest.mark.parametrize("policy, expect", [
    ("earliest", b"next 1500"), ("latest", b"next 1500"),
    ("none", b"OffsetOutOfRange")])
def test_a_consumer_in_another_process_below_the_new_start_gets_the_reset_policy(
        tmp_path, policy, expect):
    """P-6: the new start is published to every process; a consumer
    positioned below it resumes at it (as when retention overtakes it,
    whatever 'earliest'/'latest' says), or raises with 'none'."""
    log = filled(tmp_path)
    try:
        child = childproc.start(CONSUMER_BELOW, tmp_path, policy, env=child_env(),
                                stdin=subprocess.PIPE)
        try:
            childproc.expect(child, b"ready 2")
            log.delete_records({TP("t", 0): 1500})
            child.stdin.write(b"go\n")
            child.stdin.flush()
            childproc.expect(child, expect)
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    finally:
        log.close()


# -- delete_group -------------------------------------------------------------------

def test_delete_group_with_a_live_member_is_refused(tmp_path):
    log = filled(tmp_path, n=10)
    try:
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        assert len(c.poll(timeout=5)) == 10
        c.commit()
        with pytest.raises(GroupNotEmpty, match="live member"):
            log.delete_group("g")
        assert log.delete_consumer_groups(["g"])[0][1].__class__ is GroupNotEmpty
        assert committed(log, "g") == {("t", 0): 10}
        c.close()
        log.delete_group("g")
        assert committed(log, "g") == {}
        assert "g" not in log.groups()
        assert log.meta.group_state("g").members == {}
        with pytest.raises(GroupNotFound):
            log.delete_group("g")
        assert isinstance(log.delete_consumer_groups(["g"])[0][1], GroupNotFound)
        # a consumer joining afterwards starts without committed offsets
        c = log.consumer("t", group_id="g", auto_offset_reset="latest")
        assert c.poll(timeout=0.5) == []
        c.close()
        with pytest.raises(InvalidArgument):
            log.delete_consumer_groups("g")
    finally:
        log.close()


def test_delete_group_removes_only_that_group(tmp_path):
    log = filled(tmp_path, n=10)
    try:
        log.meta.commit("g", {("t", 0): 4})
        log.meta.commit("g2", {("t", 0): 6})
        log.meta.commit("g\x01", {("t", 0): 7})     # a name sorting right after
        log.delete_group("g")
        assert committed(log, "g2") == {("t", 0): 6}
        assert committed(log, "g\x01") == {("t", 0): 7}
        assert [g for g, _ in log.list_consumer_groups()] == ["g\x01", "g2"]
    finally:
        log.close()


# -- reset_group --------------------------------------------------------------------

def test_reset_group_by_shift(tmp_path):
    log = filled(tmp_path, n=100, partitions=2)
    try:
        log.meta.commit("g", {("t", 0): 10, ("t", 1): 95})
        plan = log.reset_group("g", to="shift", value=-3)
        assert plan == {TP("t", 0): 7, TP("t", 1): 92}
        assert log.reset_group("g", to="shift", value=50) == \
            {TP("t", 0): 57, TP("t", 1): 100}           # kept at the end
        log.delete_records({TP("t", 0): 40})
        assert log.reset_group("g", to="shift", value=-1000, execute=False) == \
            {TP("t", 0): 40, TP("t", 1): 0}             # kept at the start
        assert committed(log, "g") == {("t", 0): 57, ("t", 1): 100}
        with pytest.raises(InvalidArgument):
            log.reset_group("g", to="shift", value=None)
    finally:
        log.close()


@pytest.mark.parametrize("value", [-3, 999, 101])
def test_reset_to_an_out_of_range_offset_is_refused_and_changes_nothing(tmp_path, value):
    log = filled(tmp_path, n=100)
    log.meta.commit("g", {("t", 0): 10})
    try:
        with pytest.raises(OffsetOutOfRange, match=r"valid offsets are \[0, 100\]"):
            log.reset_group("g", to="offset", value=value)
        assert committed(log, "g") == {("t", 0): 10}
    finally:
        log.close()
    with pylog.open(tmp_path, readonly=True) as again:
        assert committed(again, "g") == {("t", 0): 10}
