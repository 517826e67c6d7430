"""pylog.open("kafka://...") takes the same arguments as a local log and
raises the same pylog errors: each call here runs on both backends (the
broker of tests/kafkabroker.py) and must give the same result. Methods only
a local log has raise AttributeError on Kafka, naming what to use instead."""

import os
import re
import signal
import threading
import time

import pytest
from backends import open_backend
from kafkabroker import broker_or_skip

import pylog
import pylog.kafka
import pylog.kafka.clients
from pylog import OffsetAndMetadata, TopicPartition
from pylog.errors import (
    CommitFailedError,
    InvalidArgument,
    InvalidTopicName,
    LogClosed,
    PartitionNotFound,
    PylogError,
    TopicNotFound,
)

TP0, TP1 = TopicPartition("orders", 0), TopicPartition("orders", 1)


@pytest.fixture(params=["local", "kafka"])
def log(request, tmp_path):
    with open_backend(request.param, tmp_path) as lg:
        yield lg


@pytest.fixture
def kafka_log(tmp_path):
    with open_backend("kafka", tmp_path) as lg:
        yield lg


def polled_consumer(log):
    """A group member of "billing" that polled the 4 records of "orders"."""
    log.create_topic("orders", partitions=2)
    p = log.producer()
    for i in range(4):
        p.send("orders", b"%d" % i, partition=i % 2)
    c = log.consumer("orders", group_id="billing", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 4:
        assert time.monotonic() < deadline, got
        got += c.poll(timeout=0.5)
    return c


def test_commit_and_committed_take_the_local_shapes(log):
    c = polled_consumer(log)
    assert c.committed([TP0, TP1]) == {TP0: None, TP1: None}
    c.commit({TP1: OffsetAndMetadata(1, "")})
    c.commit([("orders", 0, 2)])            # (topic, partition, offset) triples
    assert c.committed(TP1) == 1
    assert c.committed([TP0, TP1]) == {TP0: 2, TP1: 1}
    assert c.committed(TP0, TP1) == {TP0: 2, TP1: 1}
    c.close()


def test_bad_commit_arguments_raise_invalid_argument(log):
    c = polled_consumer(log)
    with pytest.raises(InvalidArgument, match="a list entry needs an offset"):
        c.commit(offsets=[TP1])
    with pytest.raises(InvalidArgument, match=r"must be an int in \[0, 2\*\*63\)"):
        c.commit({TP1: -5})
    with pytest.raises(InvalidArgument, match="metadata"):
        c.commit({TP1: OffsetAndMetadata(1, "kept elsewhere")})
    assert c.committed(TP1) is None          # nothing was committed
    c.close()


def test_seek_and_poll_arguments(log):
    c = polled_consumer(log)
    with pytest.raises(InvalidArgument, match=r"offset=-3; expected an int in \[0, 2\*\*63\)"):
        c.seek(TP1, -3)
    with pytest.raises(InvalidArgument, match="not assigned"):
        c.seek(TopicPartition("orders", 5), 0)
    assert c.poll(timeout_ms=100) == []
    with pytest.raises(InvalidArgument, match="timeout"):
        c.poll(timeout=1, timeout_ms=100)
    with pytest.raises(InvalidArgument, match="max_records"):
        c.poll(timeout=0, max_records=0)
    c.seek(TP1, 1)
    got = []
    deadline = time.monotonic() + 30
    while not got:
        assert time.monotonic() < deadline
        got = c.poll(timeout=0.5)
    assert [(r.partition, r.offset) for r in got] == [(1, 1)]
    c.close()


def test_calls_after_close_raise_log_closed(log):
    c = polled_consumer(log)
    c.close()
    c.close()                                  # idempotent
    for call in (lambda: c.poll(timeout=0.1), lambda: c.commit(),
                 lambda: c.committed(TP0), lambda: c.seek(TP0, 0), lambda: c.position(TP0)):
        with pytest.raises(LogClosed):
            call()
    p = log.producer()
    p.close()
    with pytest.raises(LogClosed):
        p.send("orders", b"x")


def test_send_to_a_missing_partition_or_topic(log):
    log.create_topic("orders", partitions=2)
    p = log.producer()
    with pytest.raises(PartitionNotFound, match="has 2 partitions; there is no partition 7"):
        p.send("orders", b"x", partition=7)
    with pytest.raises(PartitionNotFound):
        p.send_batch("orders", [b"x"], partition=-1)
    with pytest.raises(TopicNotFound):
        p.send("nope", b"x")
    assert p.send("orders", b"x", partition=1).partition == 1


def test_assign_of_a_missing_partition(log):
    log.create_topic("orders", partitions=2)
    c = log.consumer(enable_auto_commit=False)
    with pytest.raises(PartitionNotFound):
        c.assign([TopicPartition("orders", 2)])
    with pytest.raises(TopicNotFound):
        c.assign([TopicPartition("nope", 0)])
    with pytest.raises(InvalidArgument, match="poll before subscribe"):
        c.poll()
    c.close()


def test_local_only_methods_name_what_to_use_on_kafka(kafka_log):
    kafka_log.create_topic("orders", partitions=1)
    c = kafka_log.consumer(enable_auto_commit=False)
    p = kafka_log.producer()
    for obj, name, hint in ((c, "highwater", "lag()"),
                            (c, "get_watermark_offsets", "describe_topic"),
                            (c, "pause", "assign()"),
                            (c, "poll_values", "poll()"),
                            (c, "run", "commit()"),
                            (p, "partitions_for", "describe_topic"),
                            (kafka_log, "groups", "describe_group")):
        with pytest.raises(AttributeError, match=f"has no {name}\\(\\); use .*") as e:
            getattr(obj, name)
        assert hint in str(e.value)
        assert not hasattr(obj, name)
    with pytest.raises(AttributeError, match="has no attribute 'nonsense'"):
        c.nonsense  # noqa: B018
    c.close()


def test_a_topic_partition_given_as_a_partition_number_says_so(tmp_path):
    """A user trial: send(partition=TopicPartition(...)) said only "there is
    no partition TopicPartition(topic='t', partition=0)"."""
    with pylog.open(tmp_path / "log") as log:
        log.create_topic("t")
        with pytest.raises(PartitionNotFound, match=r"\(a partition is a number: an int\)"):
            log.producer().send("t", b"x", partition=pylog.TopicPartition("t", 0))


def test_send_and_create_topic_arguments_are_checked_as_on_a_local_log(log):
    """A user trial: on Kafka create_topic("t", -1) (or True) made a topic of
    the cluster's default count, a str count or header raised TypeError or
    was sent, timestamp_ms=-5 was stored and 0 became the current time, and
    send_batch sent the items before a bad one."""
    for bad in (-1, 0, True, "2"):
        with pytest.raises(InvalidArgument, match="partitions="):
            log.create_topic(f"bad{bad}", bad)
    assert log.topics() == []
    log.create_topic("orders", partitions=1)
    p = log.producer()
    for kwargs, match in (({"headers": [("a", "str")]}, "header 'a' value must be bytes"),
                          ({"headers": 5}, "headers must be a list"),
                          ({"timestamp_ms": -5}, "timestamp_ms=-5"),
                          ({"timestamp_ms": "5"}, "timestamp_ms='5'")):
        with pytest.raises(InvalidArgument, match=match):
            p.send("orders", b"x", **kwargs)
    with pytest.raises(InvalidTopicName):
        p.send("bad name!", b"x")
    with pytest.raises(InvalidArgument, match="topic must be str"):
        p.send(None, b"x")
    with pytest.raises(InvalidArgument, match="value must be bytes"):
        p.send_batch("orders", [b"a", b"b", "c"])
    with pytest.raises(InvalidArgument, match="batch item"):
        p.send_batch("orders", [b"a", (b"k", b"v", None, None)])
    assert log.describe_topic("orders").partition_info[0].end_offset == 0   # nothing sent
    md = p.send("orders", b"x", headers=[("h", None)], timestamp_ms=1)
    assert (md.offset, md.timestamp_ms) == (0, 1)


def test_a_timestamp_of_zero_is_refused_on_kafka_not_replaced(kafka_log):
    """librdkafka sends timestamp 0 as "now": the record would be stored
    with another timestamp than the one given."""
    kafka_log.create_topic("orders", partitions=1)
    with pytest.raises(InvalidArgument, match="timestamp_ms=0 cannot be sent to Kafka"):
        kafka_log.producer().send("orders", b"x", timestamp_ms=0)


def test_a_cluster_gone_gives_pylog_errors_not_confluent_kafka_ones(tmp_path, monkeypatch):
    """A user trial: with the broker down, topics(), describe_topic(),
    create_topic(), delete_topic(), describe_group(), consumer() of a topic,
    assign() and a send to a topic not seen yet raised confluent-kafka's
    KafkaException or a bare TimeoutError."""
    ck = pytest.importorskip("confluent_kafka")
    for module in (pylog.kafka, pylog.kafka.clients):
        monkeypatch.setattr(module, "ADMIN_TIMEOUT_S", 0.3)
    broker = broker_or_skip(tmp_path)
    try:
        log = pylog.open(f"kafka://{broker.bootstrap}")
        log.create_topic("orders", partitions=1)
        p = log.producer()
        c = log.consumer(enable_auto_commit=False)
    finally:
        broker.kill()
    for call in (log.topics, lambda: log.describe_topic("orders"),
                 lambda: log.create_topic("other"), lambda: log.delete_topic("orders"),
                 lambda: log.describe_group("g"), lambda: log.consumer("orders"),
                 lambda: c.assign([TP0]), lambda: p.send("other", b"x")):
        with pytest.raises(PylogError, match=f"{re.escape(broker.bootstrap)}|topic metadata") as e:
            call()
        assert not isinstance(e.value, ck.KafkaException)


def test_offsets_for_times_on_both_backends(log):
    """A user trial: README's replay by time (offsets_for_times) raised
    a bare AttributeError on Kafka."""
    log.create_topic("orders", partitions=2)
    p = log.producer()
    for i, ts in enumerate((1_000, 2_000, 3_000)):
        p.send("orders", b"%d" % i, partition=0, timestamp_ms=ts)
    c = log.consumer(enable_auto_commit=False)
    assert c.offsets_for_times({TP0: 1_500, TP1: 0}) == {TP0: 1, TP1: None}
    assert c.offsets_for_times({("orders", 0): 3_000}) == {TP0: 2}
    assert c.offsets_for_times({TP0: 9_000}) == {TP0: None}
    assert c.offsets_for_times({}) == {}
    with pytest.raises(InvalidArgument, match="non-negative int ms"):
        c.offsets_for_times({TP0: -1})
    with pytest.raises(PartitionNotFound):
        c.offsets_for_times({TopicPartition("orders", 2): 0})
    with pytest.raises(TopicNotFound):
        c.offsets_for_times({TopicPartition("nope", 0): 0})
    c.close()


def test_a_subscribed_topic_that_does_not_exist_polls_empty(log):
    """A user trial: README ("Surprises avoided") says a subscription to a
    topic not created yet is not an error; on Kafka poll() raised
    TopicNotFound."""
    log.create_topic("orders", partitions=1)
    c = log.consumer("later", "orders", group_id="g", auto_offset_reset="earliest")
    for _ in range(3):
        assert c.poll(timeout=0.5) == []
    c.close()


@pytest.mark.long
def test_a_subscribed_topic_created_later_is_read(log):
    """On Kafka within METADATA_REFRESH_MS (librdkafka's default is 5 min)."""
    c = log.consumer("later", group_id="g", auto_offset_reset="earliest")
    assert c.poll(timeout=0.5) == []
    log.create_topic("later", partitions=1)
    log.producer().send("later", b"hi")
    got = []
    deadline = time.monotonic() + 20
    while not got:
        assert time.monotonic() < deadline
        got = c.poll(timeout=0.5)
    assert [r.value for r in got] == [b"hi"]
    c.close()


def test_a_commit_to_a_cluster_that_does_not_answer_raises_in_time(tmp_path, monkeypatch):
    """A user trial: with the broker stopped (SIGSTOP: the connection stays
    open, nothing answers) commit() waited as long as the broker did (more
    than 480 s), and every other call of the consumer waited behind it."""


    monkeypatch.setattr(pylog.kafka.clients, "COMMIT_TIMEOUT_S", 1.0, raising=False)
    broker = broker_or_skip(tmp_path)
    try:
        log = pylog.open(f"kafka://{broker.bootstrap}")
        c = polled_consumer(log)
        os.kill(broker.proc.pid, signal.SIGSTOP)
        outcome: list[object] = []

        def commit_then_poll() -> None:
            try:
                c.commit()
            except CommitFailedError as exc:
                outcome.append(exc)
            outcome.append(c.poll(timeout=0.2))
        t = threading.Thread(target=commit_then_poll, daemon=True)
        t.start()
        t.join(8)
        assert not t.is_alive(), "commit() or the poll after it is still waiting"
        assert "did not answer in 1.0 s; nothing was committed" in str(outcome[0])
        assert outcome[1] == []
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)
        broker.kill()


def test_a_fatal_producer_error_is_a_pylog_error_saying_what_to_do(tmp_path):
    """A user trial: the broker of tests/kafkabroker.py killed within a
    second of acknowledged sends loses them (its module doc), and the
    idempotent producer's next send raised confluent-kafka's KafkaException
    (OUT_OF_ORDER_SEQUENCE_NUMBER, fatal); the sends after it a PylogError
    that did not say the producer is dead."""
    ck = pytest.importorskip("confluent_kafka")
    broker = broker_or_skip(tmp_path)
    try:
        log = pylog.open(f"kafka://{broker.bootstrap}")
        log.create_topic("orders", partitions=1)
        time.sleep(2)                        # the broker saved the topic
        p = log.producer()
        for i in range(20):
            p.send("orders", b"%d" % i)
        broker.kill()                        # loses the 20 records
        broker.start()
        errors = []
        for i in range(3):
            with pytest.raises(PylogError) as e:
                p.send("orders", b"after")
            assert not isinstance(e.value, ck.KafkaException)
            errors.append(str(e.value))
        assert all("make a new one with log.producer()" in m for m in errors), errors
        assert log.producer().send("orders", b"new").offset >= 0
    finally:
        broker.kill()


def test_pylog_aio_on_a_kafka_url_says_it_runs_on_a_local_log_only():
    """A user trial: ``async with pylog.aio.open("kafka://...")`` raised
    AttributeError: 'KafkaLog' object has no attribute 'doorbell_pointer'."""
    import pylog.aio
    from pylog.kafka import NotSupportedOnKafka
    with pytest.raises(NotSupportedOnKafka, match="pylog.aio runs on a local log only"):
        pylog.aio.open("kafka://127.0.0.1:9092")


def test_closing_the_log_closes_its_clients(tmp_path):
    """A user trial: on Kafka, log.close() changed nothing: its producer
    still sent, and log.producer(), log.topics() worked after it."""
    for kind in ("local", "kafka"):
        with open_backend(kind, tmp_path / kind) as log:
            log.create_topic("orders", partitions=1)
            p = log.producer()
            c = log.consumer("orders", group_id="g", auto_offset_reset="earliest")
            p.send("orders", b"x")
            log.close()
            log.close()                               # idempotent
            for call in (lambda: p.send("orders", b"y"), lambda: c.poll(timeout=0.1),
                         log.producer, log.topics, lambda: log.describe_topic("orders"),
                         lambda: log.create_topic("other")):
                with pytest.raises(LogClosed):
                    call()


def test_subscription_and_unsubscribe(log):
    """A user trial: on Kafka subscription() and unsubscribe() raised a
    bare AttributeError."""
    log.create_topic("orders", partitions=2)
    c = log.consumer("orders", group_id="g", auto_offset_reset="earliest")
    assert c.subscription() == {"orders"}
    c.unsubscribe()
    assert c.subscription() == set()
    with pytest.raises(InvalidArgument, match="poll before subscribe"):
        c.poll(timeout=0.1)
    c.subscribe(["orders"])
    assert c.subscription() == {"orders"}
    c.close()
    g = log.consumer("orders", auto_offset_reset="earliest")
    assert g.subscription() == {"orders"}
    g.unsubscribe()
    assert g.subscription() == set() and g.assignment() == set()
    g.close()


def test_a_send_the_cluster_never_acknowledged_is_not_stored_after_the_error(
        tmp_path, monkeypatch):
    """A user trial: with the broker down, send() raised FlushTimeoutError
    (whose doc says the records are in the log) after SEND_TIMEOUT_S, and
    librdkafka kept the record queued for its own 300 s: the broker back,
    it was stored after the error, twice when the caller had sent it again."""
    monkeypatch.setattr(pylog.kafka.clients, "SEND_TIMEOUT_S", 1.0)
    broker = broker_or_skip(tmp_path)
    try:
        log = pylog.open(f"kafka://{broker.bootstrap}")
        log.create_topic("orders", partitions=1)
        p = log.producer()
        p.send("orders", b"before")
        time.sleep(2)                        # the broker saved the topic
        broker.kill()
        with pytest.raises(PylogError, match="may or may not be stored") as e:
            p.send("orders", b"lost")
        assert type(e.value).__name__ == "SendTimeoutError"
        broker.start()
        p.flush(3)
        assert log.describe_topic("orders").partition_info[0].end_offset == 1
    finally:
        broker.kill()


def test_consumer_options_are_checked_as_on_a_local_log(log):
    """A user trial: on Kafka group_id="" made a consumer without a group,
    group_id=5, max_poll_records=0 and enable_auto_commit="yes" were taken,
    and auto_commit_interval_ms=-1 raised confluent-kafka's KafkaException."""
    log.create_topic("orders", partitions=1)
    for kwargs, match in (({"group_id": ""}, "group_id=''"),
                          ({"group_id": 5}, "group_id=5"),
                          ({"max_poll_records": 0}, "max_poll_records=0"),
                          ({"enable_auto_commit": "yes"}, "expected True or False"),
                          ({"auto_commit_interval_ms": -1}, "auto_commit_interval_ms=-1"),
                          ({"session_timeout_ms": "10"}, "session_timeout_ms='10'")):
        with pytest.raises(InvalidArgument, match=match):
            log.consumer("orders", **kwargs)


def test_consumer_timeout_ms_and_isolation_level(log):
    """A user trial: on Kafka both raised NotSupportedOnKafka ("no Kafka
    equivalent"), though Kafka's clients have both."""
    log.create_topic("orders", partitions=1)
    p = log.producer()
    p.send("orders", b"a")
    p.send("orders", b"b")
    c = log.consumer("orders", group_id="g", auto_offset_reset="earliest",
                     consumer_timeout_ms=1500, isolation_level="read_committed")
    t0 = time.monotonic()
    assert [r.value for r in c] == [b"a", b"b"]      # then 1.5 s without one
    assert 1.5 <= time.monotonic() - t0 < 15
    c.close()
    with pytest.raises(InvalidArgument, match="isolation_level='bogus'"):
        log.consumer("orders", isolation_level="bogus")
    with pytest.raises(InvalidArgument, match="consumer_timeout_ms=-1"):
        log.consumer("orders", consumer_timeout_ms=-1)


def test_unsubscribe_of_a_pattern_subscriber_leaves_the_group(kafka_log):
    """A review: unsubscribe() after subscribe(pattern=...) only unassigned
    (the subscription held no names), so the consumer stayed a member and
    the next rebalance gave it a partition back: a second member of the
    group got 1 of the 2 partitions."""
    log = kafka_log
    log.create_topic("orders", partitions=2)
    c = log.consumer(group_id="g", pattern="ord.*", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    deadline = time.monotonic() + 30
    while len(c.assignment()) < 2:
        assert time.monotonic() < deadline
        c.poll(timeout=0.5)
    c.unsubscribe()
    c2 = log.consumer("orders", group_id="g", auto_offset_reset="earliest",
                      enable_auto_commit=False)
    try:
        deadline = time.monotonic() + 20
        while len(c2.assignment()) < 2 and time.monotonic() < deadline:
            c2.poll(timeout=0.5)
        assert c2.assignment() == {TP0, TP1}
    finally:
        c2.close()
        c.close()


@pytest.mark.parametrize("call, error", [
    (lambda lg: lg.consumer(group_id="g", pattern="("), InvalidArgument),
    (lambda lg: lg.consumer(group_id="g").subscribe(123), InvalidArgument),
    (lambda lg: lg.consumer(group_id="g").subscribe(["bad name!"]), InvalidTopicName),
])
def test_subscribe_checks_its_arguments_as_a_local_consumer(log, call, error):
    """A review: on Kafka a bad pattern raised confluent-kafka's
    KafkaException, topics=123 a TypeError, and a bad topic name was
    taken (a subscription that never matches)."""
    log.create_topic("orders", partitions=2)
    with pytest.raises(error):
        call(log)


def test_offsets_for_times_past_any_timestamp_is_none(log):
    """A review: on Kafka a timestamp past int64 raised OverflowError; a
    local consumer answers None (no record has it)."""
    log.create_topic("orders", partitions=2)
    c = log.consumer()
    assert c.offsets_for_times({TP0: 2**63, TP1: 2**64}) == {TP0: None, TP1: None}
    c.close()


@pytest.mark.parametrize("call", [
    lambda lg: lg.describe_group(""),
    lambda lg: lg.producer().flush(-1),
    lambda lg: lg.producer().flush("x"),
])
def test_flush_and_describe_group_check_arguments(log, call):
    """A review: on Kafka describe_group("") raised ValueError,
    flush("x") TypeError, and flush(-1) waited without a bound."""
    with pytest.raises(InvalidArgument):
        call(log)


def test_send_batch_refused_midway_says_what_was_stored(kafka_log):
    """A review: on Kafka a batch whose third item was over librdkafka's
    message.max.bytes raised RecordTooLarge while the two before it were
    queued and then stored: a retry stored them twice. The error now
    names them (``published``, as a local send_batch's)."""
    log = kafka_log
    log.create_topic("orders", partitions=1)
    p = log.producer()
    with pytest.raises(pylog.errors.RecordTooLarge) as info:
        p.send_batch("orders", [b"a", b"b", b"x" * (2 << 20)])
    p.flush(10)
    end = log.describe_topic("orders").partition_info[0].end_offset
    published = info.value.published or []
    assert [m.offset for m in published] == list(range(end))
    assert end == 2
    p.close()
