"""pylog.mirror from Kafka into a local log, tried the way a user moving
data off a cluster would (a real Kafka-compatible broker,
tests/kafkabroker.py): a record the local topic refuses stops the mirror
without skipping it, a Kafka topic that grows keeps being mirrored, and
``until_caught_up`` returns when nothing matches."""

import time

import pytest
from kafkabroker import broker_or_skip

import pylog
from pylog import TopicPartition
from pylog.errors import InvalidArgument
from pylog.mirrorstats import MirrorError


@pytest.fixture
def broker(tmp_path):
    b = broker_or_skip(tmp_path)
    yield b
    b.kill()


def produce(bootstrap, topic, values, partition=None):
    """``values`` sent to the broker's ``topic`` (made by the broker on
    first use), each acknowledged."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2_000_000})
    for v in values:
        kw = {} if partition is None else {"partition": partition}
        p.produce(topic, v, **kw)
    assert p.flush(30) == 0


def make_topic(bootstrap, topic, partitions):
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


def local_values(path, topic):
    with pylog.open(path) as log:
        n = log.describe_topic(topic).partitions
        c = log.consumer(enable_auto_commit=False)
        c.assign([TopicPartition(topic, p) for p in range(n)])
        c.seek_to_beginning()
        out = []
        while batch := c.poll(timeout=1.0, max_records=10_000):
            out += batch
        c.close()
    return out


def test_a_record_the_local_topic_refuses_stops_the_mirror_and_skips_nothing(
        tmp_path, broker):
    """Record 150 is larger than the local topic takes: the step raised
    RecordTooLarge (not a MirrorError) with the consumer already past up to
    5,000 records, so running the mirror again skipped them and committed
    past them: lost for good (found by trying it with a full disk). Now a
    MirrorError names the record, and once the topic is altered the same
    mirror goes on from it: every record, in order, once."""
    from pylog.mirror import Mirror
    make_topic(broker.bootstrap, "orders", 1)
    values = [b"v%03d" % i for i in range(300)]
    values[150] = b"x" * 100_000
    produce(broker.bootstrap, "orders", values)
    dst = str(tmp_path / "dst")
    with pylog.open(dst) as log:
        log.create_topic("orders", max_message_bytes=65536)
    with Mirror(dst, broker.bootstrap, topics="orders", direction="from-kafka",
                group_id="edge") as m:
        with pytest.raises(MirrorError, match="offset 150"):
            m.run(until_caught_up=True, timeout=60)
        m.log.alter_topic("orders", max_message_bytes=1_000_000, segment_bytes=4_000_000)
        m.run(until_caught_up=True, timeout=60)
    got = local_values(dst, "orders")
    assert [r.value for r in got] == values


def test_a_kafka_topic_that_grows_keeps_being_mirrored(tmp_path, broker):
    """The Kafka topic gains partitions while the mirror runs: the mirror
    routed by the partition count it saw first and raised
    PartitionNotFound for partition 2. Now it looks again."""
    from confluent_kafka.admin import AdminClient, NewPartitions

    from pylog.mirror import Mirror
    make_topic(broker.bootstrap, "cmds", 2)
    for p in range(2):
        produce(broker.bootstrap, "cmds", [b"a%d-%d" % (p, i) for i in range(10)], p)
    dst = str(tmp_path / "dst")
    with Mirror(dst, broker.bootstrap, topics="cmds", direction="from-kafka",
                group_id="edge", kafka_config={"topic.metadata.refresh.interval.ms": 500}
                ) as m:
        m.run(until_caught_up=True, timeout=60)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for f in admin.create_partitions([NewPartitions("cmds", 4)]).values():
            f.result(30)
        for p in range(4):
            produce(broker.bootstrap, "cmds", [b"b%d-%d" % (p, i) for i in range(5)], p)
        deadline = time.monotonic() + 60
        while m.stats.records < 40 and time.monotonic() < deadline:
            m.run(until_caught_up=True, timeout=5)
    got = sorted(r.value for r in local_values(dst, "cmds"))
    want = sorted([b"a%d-%d" % (p, i) for p in range(2) for i in range(10)] +
                  [b"b%d-%d" % (p, i) for p in range(4) for i in range(5)])
    assert got == want


def test_until_caught_up_returns_when_no_kafka_topic_matches(tmp_path, broker):
    """``--until-caught-up`` with a pattern no Kafka topic matches ran
    forever (nothing assigned read as 'not at the end')."""
    from pylog.mirror import Mirror
    make_topic(broker.bootstrap, "orders", 1)
    t0 = time.monotonic()
    with Mirror(str(tmp_path / "dst"), broker.bootstrap, topics="nomatch",
                direction="from-kafka", group_id="edge") as m:
        m.run(until_caught_up=True, timeout=60)
    assert time.monotonic() - t0 < 45


def test_settings_the_kafka_client_refuses_are_invalid_arguments(tmp_path, broker):
    """A bad ``kafka_config`` key, or a pattern librdkafka's regex engine
    cannot read, leaked confluent-kafka's KafkaException."""
    from pylog.mirror import Mirror
    for kw in ({"kafka_config": {"nosuch.key": "1"}}, {"topics": "orders-(?:1|2)"}):
        with pytest.raises(InvalidArgument):
            Mirror(str(tmp_path / "dst"), broker.bootstrap, **{"topics": "orders", **kw},
                   direction="from-kafka", group_id="edge")
