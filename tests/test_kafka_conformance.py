"""One API suite, two backends: every test here runs on a local log
(``pylog.open(path)``) and on a Kafka cluster (``pylog.open("kafka://...")``,
the broker of tests/kafkabroker.py). What cannot map raises
NotSupportedOnKafka (the last tests)."""

import time

import pytest
from backends import open_backend
from kafkabroker import broker_or_skip

import pylog
from pylog import TopicPartition
from pylog._native import partition_for_key
from pylog.kafka import KafkaLog


@pytest.fixture(params=["local", "kafka"])
def log(request, tmp_path):
    with open_backend(request.param, tmp_path) as lg:
        yield lg


def drain(consumer, n, timeout=30.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        assert time.monotonic() < deadline, f"{len(out)} of {n} records"
        out += consumer.poll(timeout=0.5)
    return out


def test_topics_create_list_describe(log):
    info = log.create_topic("orders", partitions=3)
    assert info.partitions == 3
    assert "orders" in log.topics()
    assert log.describe_topic("orders").partitions == 3
    assert log.create_topic("orders", partitions=3, exist_ok=True).partitions == 3
    with pytest.raises(pylog.TopicExists):
        log.create_topic("orders", partitions=3)
    with pytest.raises(pylog.TopicNotFound):
        log.describe_topic("nope")
    with pytest.raises(pylog.InvalidTopicName):
        log.create_topic("../x")


def test_send_and_read_back_keys_headers_timestamps(log):
    log.create_topic("t", partitions=2)
    p = log.producer()
    ts = int(time.time() * 1000) - 5000
    mds = [p.send("t", b"v%d" % i, key=b"k%d" % i, headers=[("h", b"%d" % i)],
                  timestamp_ms=ts + i) for i in range(20)]
    for i, md in enumerate(mds):
        assert md.partition == partition_for_key(b"k%d" % i, 2)   # Kafka's partitioner
        assert md.timestamp_ms == ts + i
    c = log.consumer(enable_auto_commit=False)
    c.assign([TopicPartition("t", 0), TopicPartition("t", 1)])
    c.seek_to_beginning()
    got = {(r.partition, r.offset): r for r in drain(c, 20)}
    for i, md in enumerate(mds):
        r = got[(md.partition, md.offset)]
        assert (r.key, r.value, r.timestamp_ms, r.headers) == \
            (b"k%d" % i, b"v%d" % i, ts + i, (("h", b"%d" % i),))
    c.close()


def test_group_commits_and_resumes(log):
    log.create_topic("g", partitions=1)
    p = log.producer()
    p.send_batch("g", [b"a%d" % i for i in range(10)])
    c = log.consumer("g", group_id="billing", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    assert [r.value for r in drain(c, 10)] == [b"a%d" % i for i in range(10)]
    c.commit()
    assert c.committed(TopicPartition("g", 0)) == 10
    c.close()
    p.send_batch("g", [b"b%d" % i for i in range(5)])
    c = log.consumer("g", group_id="billing", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    assert [r.value for r in drain(c, 5)] == [b"b%d" % i for i in range(5)]
    c.commit()
    c.close()
    desc = log.describe_group("billing")
    assert desc["lag"] == 0
    assert [(p["topic"], p["partition"], p["committed"]) for p in desc["partitions"]] == \
        [("g", 0, 15)]


def test_auto_commit_commits_finished_records_only(log):
    log.create_topic("a", partitions=1)
    log.producer().send_batch("a", [b"%d" % i for i in range(10)])
    tp = TopicPartition("a", 0)
    c = log.consumer("a", group_id="g1", auto_offset_reset="earliest")
    drain(c, 10)
    c.close()                       # the last poll's records are not finished
    c = log.consumer("a", group_id="g1", auto_offset_reset="earliest")
    first = c.committed(tp)
    assert first is None or first < 10
    drain(c, 10 - (first or 0))
    assert c.poll(timeout=0.5) == []   # finishes what the previous poll returned
    c.close()
    c = log.consumer("a", group_id="g1", auto_offset_reset="earliest")
    assert c.committed(tp) == 10
    c.close()


def test_seek_position_and_lag(log):
    log.create_topic("s", partitions=1)
    log.producer().send_batch("s", [b"%d" % i for i in range(30)])
    tp = TopicPartition("s", 0)
    c = log.consumer(enable_auto_commit=False)
    c.assign([tp])
    c.seek(tp, 25)
    assert [r.offset for r in drain(c, 5)] == [25, 26, 27, 28, 29]
    assert c.position(tp) == 30
    assert c.lag() == {tp: 0}
    c.close()


def test_send_to_a_missing_topic_raises(log):
    with pytest.raises(pylog.TopicNotFound):
        log.producer().send("missing", b"x")


def test_a_consumer_without_group_reads_every_partition(log):
    log.create_topic("n", partitions=3)
    log.producer().send_batch("n", [(b"k%d" % i, b"%d" % i) for i in range(30)])
    c = log.consumer("n", auto_offset_reset="earliest", enable_auto_commit=False)
    assert sorted(r.value for r in drain(c, 30)) == sorted(b"%d" % i for i in range(30))
    with pytest.raises(pylog.InvalidArgument, match="group_id"):
        c.commit()
    c.close()


def test_readonly_refuses_writes(log, tmp_path):
    log.create_topic("r", partitions=1)
    if isinstance(log, KafkaLog):
        path = f"kafka://{log.bootstrap_servers}"
    else:
        path = log.path
        log.close()             # the local log: one writer handle less
    with pylog.open(path, readonly=True) as ro:
        assert "r" in ro.topics()
        with pytest.raises(pylog.ReadOnlyLog):
            ro.producer().send("r", b"x")
        with pytest.raises(pylog.ReadOnlyLog):
            ro.create_topic("r2")


def test_what_kafka_cannot_do_raises_clearly(tmp_path):
    from pylog.kafka import NotSupportedOnKafka
    broker = broker_or_skip(tmp_path)
    url = f"kafka://{broker.bootstrap}"
    try:
        with pytest.raises(NotSupportedOnKafka, match="max_open_files"):
            pylog.open(url, max_open_files=100)
        with pytest.raises(NotSupportedOnKafka, match="max_open_maps"):
            pylog.open(url, max_open_maps=100)
        with pylog.open(url) as log:
            with pytest.raises(NotSupportedOnKafka, match="KIP-932"):
                log.share_consumer("t", group_id="q")
            with pytest.raises(NotSupportedOnKafka, match="compression"):
                log.create_topic("c", compression="zstd")
            with pytest.raises(NotSupportedOnKafka, match="dead_letter_topic"):
                log.consumer("t", dead_letter_topic="dlq")
        with pytest.raises(pylog.InvalidArgument):
            pylog.open("kafka://nohost")
    finally:
        broker.kill()


@pytest.mark.long
def test_the_order_service_example_runs_unchanged_on_kafka(tmp_path):
    """examples/order_service.py (which .ci/run runs on a local log) with a
    kafka:// URL: every group sees every order."""
    import os
    import subprocess
    import sys
    broker = broker_or_skip(tmp_path)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        r = subprocess.run([sys.executable, os.path.join(root, "examples", "order_service.py"),
                            f"kafka://{broker.bootstrap}"], capture_output=True, text=True,
                           timeout=300, env=dict(os.environ, PYTHONPATH=root))
    finally:
        broker.kill()
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "every group saw every order" in r.stdout
