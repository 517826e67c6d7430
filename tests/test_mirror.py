"""pylog.mirror against a real Kafka-compatible broker (tests/kafkabroker.py):
what goes to Kafka comes back identical (keys, headers, timestamps,
partitions), partition counts that differ use Kafka's partitioner, the
position is a local consumer group, and retention's deletions are reported.
Crashes and outages: tests/test_mirror_outage.py."""

import os
import subprocess
import sys
import time

import pytest
from kafkabroker import broker_or_skip

import pylog
from pylog import TopicPartition
from pylog._native import partition_for_key
from pylog.errors import InvalidArgument

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def broker(tmp_path):
    b = broker_or_skip(tmp_path)
    yield b
    b.kill()


def read_kafka(bootstrap, topic, timeout=20.0):
    """Every record of ``topic`` on the broker: {partition: [message]}."""
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as KTP
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader",
                  "enable.auto.commit": False, "logger": _quiet()})
    try:
        parts = c.list_topics(timeout=10).topics[topic].partitions
        ends = {p: c.get_watermark_offsets(KTP(topic, p), timeout=10)[1] for p in parts}
        c.assign([KTP(topic, p, 0) for p in parts])
        out = {p: [] for p in parts}
        deadline = time.monotonic() + timeout
        while any(len(out[p]) < ends[p] for p in parts):
            assert time.monotonic() < deadline, (ends, {p: len(v) for p, v in out.items()})
            for m in c.consume(1000, timeout=0.5):
                assert m.error() is None, m.error()
                out[m.partition()].append(m)
        return out
    finally:
        c.close()


def _quiet():
    import logging
    return logging.getLogger("test.kafka")


def fill(log, topic, n, partitions=3, t0=None):
    """n records with keys, headers (one a None value) and explicit
    timestamps (recent: the broker applies 7-day time retention)."""
    log.create_topic(topic, partitions=partitions, exist_ok=True)
    p = log.producer()
    t0 = t0 or int(time.time() * 1000) - 60_000
    sent = []
    for i in range(n):
        headers = [("i", b"%d" % i), ("none", None)] if i % 2 else []
        key = None if i % 7 == 0 else b"key-%d" % (i % 50)
        md = p.send(topic, b"value-%d" % i, key=key, headers=headers, timestamp_ms=t0 + i)
        sent.append((md.partition, md.offset, key, b"value-%d" % i, headers, t0 + i))
    return sent


def test_round_trip_keeps_keys_headers_timestamps_and_partitions(tmp_path, broker):
    from pylog.mirror import Mirror
    src, back = str(tmp_path / "src"), str(tmp_path / "back")
    with pylog.open(src) as log:
        sent = fill(log, "orders", 500)
    with Mirror(src, broker.bootstrap, topics="orders") as m:
        stats = m.run(until_caught_up=True, timeout=60)
    assert stats.records == 500 and stats.rewinds == 0

    got = read_kafka(broker.bootstrap, "orders")
    assert sorted(got) == [0, 1, 2]          # created with the local count
    for p, msgs in got.items():
        want = [s for s in sent if s[0] == p]
        assert [m.offset() for m in msgs] == [s[1] for s in want]    # same offsets
        for m, (_, _, key, value, headers, ts) in zip(msgs, want):
            assert (m.key(), m.value(), m.timestamp()[1]) == (key, value, ts)
            assert (m.headers() or []) == headers

    # the position is the local group, committed to the end: no lag
    with pylog.open(src) as log:
        desc = log.describe_group("pylog-mirror")
        assert desc["lag"] == 0
        assert {(p["partition"], p["committed"]) for p in desc["partitions"]} == \
            {(p, sum(1 for s in sent if s[0] == p)) for p in range(3)}

    # and back from Kafka into another log: the same records, same places
    with Mirror(back, broker.bootstrap, topics="orders", direction="from-kafka",
                group_id="edge-1") as m:
        stats = m.run(until_caught_up=True, timeout=60)
    assert stats.records == 500
    with pylog.open(back) as log:
        assert log.describe_topic("orders").partitions == 3
        c = log.consumer(enable_auto_commit=False)
        c.assign([TopicPartition("orders", p) for p in range(3)])
        c.seek_to_beginning()
        records = []
        while len(records) < 500:
            batch = c.poll(timeout=1.0)
            assert batch, len(records)
            records += batch
        by_place = {(r.partition, r.offset): r for r in records}
        for part, off, key, value, headers, ts in sent:
            r = by_place[(part, off)]
            assert (r.key, r.value, r.timestamp_ms) == (key, value, ts)
            assert list(r.headers) == headers
        c.close()


def test_more_local_partitions_than_kafka_use_kafkas_partitioner(tmp_path, broker):
    from confluent_kafka.admin import AdminClient, NewTopic

    from pylog.mirror import Mirror
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "logger": _quiet()})
    admin.create_topics([NewTopic("events", num_partitions=2, replication_factor=1)])[
        "events"].result(10)
    src = str(tmp_path / "src")
    with pylog.open(src) as log:
        sent = fill(log, "events", 300, partitions=5)
    with Mirror(src, broker.bootstrap, topics="ev.*") as m:
        m.run(until_caught_up=True, timeout=60)
    got = read_kafka(broker.bootstrap, "events")
    assert sum(len(v) for v in got.values()) == 300
    for p, msgs in got.items():
        for m in msgs:
            if m.key() is not None:
                assert p == partition_for_key(m.key(), 2)
    # per local partition, the order survives (a key's records, keyless
    # records of one local partition, each in one Kafka partition)
    pos = {s[3]: (s[0], s[1]) for s in sent}
    for msgs in got.values():
        seen = {}
        for m in msgs:
            lp, lo = pos[m.value()]
            assert lo > seen.get((lp, m.key()), -1)
            seen[(lp, m.key())] = lo


def test_retention_deletions_before_sending_are_reported(tmp_path, broker):
    from pylog.mirror import Mirror
    src = str(tmp_path / "src")
    lines = []
    with pylog.open(src) as log:
        fill(log, "t", 10, partitions=1)
        with Mirror(log, broker.bootstrap, topics="t", report=lines.append) as m:
            m.run(until_caught_up=True, timeout=60)
        fill(log, "t", 90, partitions=1)
        log.delete_records({TopicPartition("t", 0): 60})   # what retention does
        with Mirror(log, broker.bootstrap, topics="t", report=lines.append) as m:
            stats = m.run(until_caught_up=True, timeout=60)
    assert stats.skipped_by_retention == 50
    assert stats.records == 40
    assert any("retention deleted 50 records of t-0" in line for line in lines), lines
    got = read_kafka(broker.bootstrap, "t")[0]
    assert [m.value() for m in got] == [b"value-%d" % i for i in range(10)] + \
        [b"value-%d" % i for i in range(50, 90)]


def test_broker_away_at_start_records_wait_then_go(tmp_path, broker):
    from pylog.mirror import Mirror
    src = str(tmp_path / "src")
    broker.stop()
    lines = []
    with pylog.open(src) as log:
        fill(log, "t", 100, partitions=2)
        with Mirror(log, broker.bootstrap, topics="t", report=lines.append) as m:
            stats = m.run(timeout=3)                  # returns though Kafka is away
            assert stats.records == 0
            assert any("metadata of 't'" in line for line in lines), lines
            broker.start()
            stats = m.run(until_caught_up=True, timeout=60)
        assert stats.records == 100
        assert log.describe_group("pylog-mirror")["lag"] == 0
    assert sum(len(v) for v in read_kafka(broker.bootstrap, "t").values()) == 100


def test_max_in_flight_stops_reading_while_kafka_does_not_answer(tmp_path, broker):
    """With the broker frozen (SIGSTOP: connected, never answering), the
    mirror sends max_in_flight records and then reads no more: librdkafka
    holds that many, the rest waits in the log; thawed, all arrive once."""
    import signal

    from pylog.mirror import Mirror
    src = str(tmp_path / "src")
    limit = 300
    with pylog.open(src) as log:
        fill(log, "t", 10, partitions=2)
        with Mirror(log, broker.bootstrap, topics="t", max_in_flight=limit,
                    report=lambda line: None) as m:
            m.run(until_caught_up=True, timeout=60)        # topic made, routes known
            assert m.stats.in_flight == 0
            fill(log, "t", 3000, partitions=2)
            broker.proc.send_signal(signal.SIGSTOP)
            try:
                stats = m.run(timeout=2)
                assert stats.in_flight == limit
                # librdkafka's own count of records not yet delivered (the
                # private producer: the one observer outside the mirror)
                assert len(m._half._producer) == limit
                assert stats.records == 10
            finally:
                broker.proc.send_signal(signal.SIGCONT)
            stats = m.run(until_caught_up=True, timeout=60)
            assert stats.records == 3010 and stats.rewinds == 0
            assert stats.in_flight == 0
        assert log.describe_group("pylog-mirror")["lag"] == 0
    got = read_kafka(broker.bootstrap, "t")
    assert sum(len(v) for v in got.values()) == 3010      # none twice


def test_cli_mirror_until_caught_up_and_groups_show_the_position(tmp_path, broker):
    src = str(tmp_path / "src")
    with pylog.open(src) as log:
        fill(log, "orders", 200)
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "pylog", "mirror", src, "--bootstrap-servers",
                        broker.bootstrap, "--topics", "orders", "--until-caught-up"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "stopped: 200 records mirrored" in r.stderr
    r = subprocess.run([sys.executable, "-m", "pylog", "groups", src, "describe",
                        "pylog-mirror", "--json"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert '"lag": 0' in r.stdout
    assert sum(len(v) for v in read_kafka(broker.bootstrap, "orders").values()) == 200


def test_bad_arguments_are_refused_before_anything_is_created(tmp_path):
    pytest.importorskip("confluent_kafka")
    from pylog.mirror import Mirror
    path = str(tmp_path / "log")
    for kw in ({"direction": "sideways"}, {"topics": "("}, {"group_id": ""},
               {"max_in_flight": 0}, {"max_in_flight": -5}, {"max_in_flight": True},
               {"max_in_flight": 1.5}, {"max_in_flight": 10_000_001},
               {"max_in_flight": 100, "direction": "from-kafka"}):
        with pytest.raises(InvalidArgument):
            Mirror(path, "127.0.0.1:9092", **kw)
    # settings the Kafka client refuses, both ways: refused before the log
    # directory is created (a leaked KafkaException to Kafka, before)
    for kw in ({"kafka_config": {"nosuch.key": "1"}},
               {"kafka_config": {"acks": "sometimes"}},
               {"kafka_config": ["acks=all"]},
               {"kafka_config": {"nosuch.key": "1"}, "direction": "from-kafka"},
               {"topics": "orders-(?:1|2)", "direction": "from-kafka"}):
        with pytest.raises(InvalidArgument, match="kafka_config|refused"):
            Mirror(path, "127.0.0.1:9092", **kw)
    for bs in ("", "nohost", "a:b", "127.0.0.1:9092,"):
        with pytest.raises(InvalidArgument, match="bootstrap_servers"):
            Mirror(path, bs)
    assert not os.path.exists(path)
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, "-m", "pylog", "mirror", path, "--bootstrap-servers",
                        "127.0.0.1:9092"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "no such file or directory" in r.stderr
    pylog.open(path).close()
    r = subprocess.run([sys.executable, "-m", "pylog", "mirror", path, "--bootstrap-servers",
                        "127.0.0.1:9092", "--max-in-flight", "0"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 2 and "max_in_flight=0" in r.stderr, r.stderr
    with pylog.open(path, readonly=True) as log:
        assert list(log.groups()) == []      # refused before the mirror's group joined
