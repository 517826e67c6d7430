"""pylog mirror tried the way a demanding deployment would, against a real
Kafka-compatible broker (tests/kafkabroker.py) and real processes:
transactions to Kafka (aborted and open ones stay local, the group's lag
reaches 0 past transaction markers), a pattern that matches no local
topic, a record Kafka refuses, and two mirrors from Kafka of one log."""

import os
import signal
import subprocess
import sys
import time

import pytest
from kafkabroker import broker_or_skip
from test_mirror import read_kafka
from test_mirror_from_kafka import local_values, make_topic, produce

import pylog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO)


@pytest.fixture
def broker(tmp_path):
    b = broker_or_skip(tmp_path)
    yield b
    b.kill()


def mirror_cli(path, bootstrap, *args):
    return [sys.executable, "-m", "pylog", "mirror", path, "--bootstrap-servers",
            bootstrap, *args]


def test_aborted_and_open_transactions_are_not_mirrored_to_kafka(tmp_path, broker):
    """Kafka consumers would take a mirrored aborted record as real: only
    committed transactions go, an open one once it commits; a partition
    ending with a transaction marker shows lag 0 once caught up."""
    from pylog.mirror import Mirror
    src = str(tmp_path / "src")
    with pylog.open(src) as log:
        log.create_topic("tx", partitions=1)
        log.producer().send("tx", b"plain-0")
        txp = log.producer(transactional_id="t1")
        txp.begin_transaction()
        txp.send("tx", b"aborted-1")
        txp.abort_transaction()
        txp.begin_transaction()
        txp.send("tx", b"committed-3")
        txp.commit_transaction()
        txp.begin_transaction()
        txp.send("tx", b"aborted-5")
        txp.abort_transaction()                # the partition ends with a marker
        with Mirror(log, broker.bootstrap, topics="tx", report=lambda line: None) as m:
            stats = m.run(until_caught_up=True, timeout=30)
            assert stats.records == 2
            assert log.describe_group("pylog-mirror")["lag"] == 0
            txp.begin_transaction()
            txp.send("tx", b"open-7")
            m.run(until_caught_up=True, timeout=30)
            assert [v.value() for v in read_kafka(broker.bootstrap, "tx")[0]] == \
                [b"plain-0", b"committed-3"]          # not before its commit
            txp.commit_transaction()
            stats = m.run(until_caught_up=True, timeout=30)
        assert stats.records == 3
        assert log.describe_group("pylog-mirror")["lag"] == 0
    assert [v.value() for v in read_kafka(broker.bootstrap, "tx")[0]] == \
        [b"plain-0", b"committed-3", b"open-7"]


def test_until_caught_up_returns_when_no_local_topic_matches(tmp_path, broker):
    """As from Kafka: a pattern matching nothing returns (it hung), and
    says that nothing matched."""
    src = str(tmp_path / "src")
    with pylog.open(src) as log:
        log.create_topic("orders", partitions=1)
        log.producer().send("orders", b"x")
    r = subprocess.run(mirror_cli(src, broker.bootstrap, "--topics", "order",
                                  "--until-caught-up"),
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 0, r.stderr
    assert "no local topic matches 'order'" in r.stderr
    assert "stopped: 0 records mirrored" in r.stderr


def test_a_record_kafka_refuses_stops_the_mirror_naming_it(tmp_path, broker):
    """A local record over the Kafka client's message.max.bytes: the error
    names it and the setting; nothing after it is skipped, and with the
    limit raised the next run goes on from it."""
    src = str(tmp_path / "src")
    with pylog.open(src) as log:
        log.create_topic("t", partitions=1)
        p = log.producer()
        for v in (b"small-0", b"z" * 1_040_000, b"small-2"):
            p.send("t", v)
    r = subprocess.run(mirror_cli(src, broker.bootstrap, "--until-caught-up"),
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 2, r.stderr
    assert "t-0 offset 1 (1040000 bytes) cannot be produced to Kafka" in r.stderr
    assert "message.max.bytes" in r.stderr
    r = subprocess.run(mirror_cli(src, broker.bootstrap, "--until-caught-up",
                                  "-X", "message.max.bytes=2000000"),
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert r.returncode == 0, r.stderr
    assert [len(m.value()) for m in read_kafka(broker.bootstrap, "t")[0]] == \
        [7, 1_040_000, 7]


def test_run_again_after_a_refused_record_commits_nothing_unsent(tmp_path, broker):
    """Review of the refused record's error: run() again on the same Mirror
    went on past the refused record and committed the position of a
    partition whose polled records were never handed to the producer
    (p1-a..c: in the local group as mirrored, never in Kafka). Run again,
    it reads again from the committed offsets and stops at the record
    once more; nothing below a committed offset is missing from Kafka."""
    from pylog.mirror import Mirror
    from pylog.mirrorstats import MirrorError
    src = str(tmp_path / "src")
    local = {0: [b"p0-s0", b"z" * 1_040_000, b"p0-s2"], 1: [b"p1-a", b"p1-b", b"p1-c"]}
    with pylog.open(src) as log:
        log.create_topic("t", partitions=2)
        p = log.producer()
        for part, values in local.items():
            for v in values:
                p.send("t", v, partition=part)
        p.flush()
        with Mirror(log, broker.bootstrap, topics="t", report=lambda line: None) as m:
            for _ in range(2):
                with pytest.raises(MirrorError, match="t-0 offset 1"):
                    m.run(until_caught_up=True, timeout=30)
        committed = {q["partition"]: q["committed"]
                     for q in log.describe_group("pylog-mirror")["partitions"]}
    kafka = read_kafka(broker.bootstrap, "t")
    for part, off in committed.items():
        got = [msg.value() for msg in kafka.get(part, [])]
        assert off is None or got[:off] == local[part][:off], (part, off, got)


def test_a_from_kafka_mirror_replaced_by_a_second_one_stops_with_an_error(
        tmp_path, broker):
    """Two mirrors of one log and group from Kafka: as Kafka does with a
    static member, the second takes the partitions over; the first must
    stop with an error naming why (it went on running, mirroring
    nothing, and exited 0 when told to stop), and nothing is lost."""
    dst = str(tmp_path / "dst")
    make_topic(broker.bootstrap, "cmd", 2)
    produce(broker.bootstrap, "cmd", [b"a%d" % i for i in range(500)])
    pylog.open(dst).close()
    argv = mirror_cli(dst, broker.bootstrap, "--from-kafka", "--topics", "cmd")
    first = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=ENV)
    second = None
    try:
        deadline = time.monotonic() + 30
        while len(local_values_or_none(dst, "cmd")) < 500:
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.5)
        second = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=ENV)
        try:
            err = first.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            first.send_signal(signal.SIGTERM)
            err = first.communicate(timeout=30)[1]
            pytest.fail(f"the replaced mirror kept running: {err}")
        assert first.returncode == 2, err
        assert "another mirror of this log joined the Kafka group" in err, err
        produce(broker.bootstrap, "cmd", [b"b%d" % i for i in range(500)])
        deadline = time.monotonic() + 30
        while len(local_values_or_none(dst, "cmd")) < 1000:
            assert time.monotonic() < deadline and second.poll() is None
            time.sleep(0.5)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=30)
    values = [r.value for r in local_values(dst, "cmd")]
    assert sorted(values) == sorted([b"a%d" % i for i in range(500)] +
                                    [b"b%d" % i for i in range(500)])


def local_values_or_none(path, topic):
    try:
        return local_values(path, topic)
    except pylog.errors.TopicNotFound:
        return []


def test_close_says_what_it_waits_for_when_the_broker_is_frozen(tmp_path, broker):
    """A user trial: with the broker frozen (SIGSTOP) and records in
    flight, stopping the mirror waited its whole close timeout without a
    word, which looks like a hang. It says what it waits for, and for how
    long; the records stay in the local log for the next run."""
    from pylog.mirror import Mirror
    src = str(tmp_path / "src")
    lines: list[str] = []
    with pylog.open(src) as log:
        log.create_topic("t", partitions=1)
        m = Mirror(log, broker.bootstrap, topics="t", report=lines.append)
        try:
            m.run(until_caught_up=True, timeout=30)     # (the topic made in Kafka)
            log.producer().send_batch("t", [b"r%d" % i for i in range(100)])
            os.kill(broker.proc.pid, signal.SIGSTOP)
            try:
                m.run(timeout=1.0)
                start = time.monotonic()
                m.close(timeout=1.0)
                assert time.monotonic() - start < 10
            finally:
                os.kill(broker.proc.pid, signal.SIGCONT)
        finally:
            m.close()
    assert any("waiting up to 1 s for" in line and "in flight" in line for line in lines), \
        lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_cli_mirror_stops_on_a_signal_with_status_0(tmp_path, broker, sig):
    """README: ``pylog mirror`` stops on Ctrl-C or SIGTERM with status 0,
    having mirrored what it read; an error stops it with status 2 (above)."""
    src = str(tmp_path / "src")
    with pylog.open(src) as log:
        log.create_topic("t", partitions=1)
        log.producer().send_batch("t", [b"r%d" % i for i in range(50)])
    proc = subprocess.Popen(mirror_cli(src, broker.bootstrap), stderr=subprocess.PIPE,
                            text=True, env=ENV)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline and proc.poll() is None
            try:
                if len(read_kafka(broker.bootstrap, "t").get(0, [])) == 50:
                    break
            except KeyError:        # (the mirror has not made the topic yet)
                pass
            time.sleep(0.3)
        proc.send_signal(sig)
        err = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
