"""One log on either backend for the suites that must behave alike on
both: a local log in the test's tmp_path, or pylog on Kafka against a
fresh broker of tests/kafkabroker.py (the test skips without one)."""

import contextlib

from kafkabroker import broker_or_skip

import pylog


@contextlib.contextmanager
def open_backend(kind: str, tmp_path):
    """The open log of ``kind`` ("local" or "kafka"), closed after the
    block; the Kafka broker is killed after it too."""
    if kind == "local":
        with pylog.open(str(tmp_path / "log")) as lg:
            yield lg
        return
    broker = broker_or_skip(tmp_path)
    try:
        with pylog.open(f"kafka://{broker.bootstrap}") as lg:
            yield lg
    finally:
        broker.kill()
