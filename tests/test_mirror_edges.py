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
