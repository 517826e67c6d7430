"""A log and readers for the transaction tests (test_transactions.py,
test_txn_failures.py): topics "t" (2 partitions) and "in", every batch as
kafka-python parses it, read_committed readers."""

import os

from kafka.record.memory_records import MemoryRecords

import pylog
from pylog import TopicPartition as TP
from pylog.segment import parse_segment_name

T0, T1 = TP("t", 0), TP("t", 1)


def open_txn_log(tmp_path):
    """A Log with topics "t" (2 partitions) and "in" (1)."""
    lg = pylog.open(tmp_path / "log")
    lg.create_topic("t", partitions=2)
    lg.create_topic("in", partitions=1)
    return lg


def kafka_batches(log, topic, p):
    """Every batch of a partition as kafka-python parses its segments."""
    part = log.partition(topic, p)
    st = part.state()
    out = []
    for name in sorted(os.listdir(part.dir)):
        base = parse_segment_name(name)
        if base is None:
            continue
        with open(os.path.join(part.dir, name), "rb") as f:
            data = f.read()
        if base == st.active_base:
            data = data[:st.active_position]
        mr = MemoryRecords(data)
        assert mr.valid_bytes() == len(data)
        while (b := mr.next_batch()) is not None:
            assert b.validate_crc()
            out.append((b, list(b)))
    return out


def values(consumer, timeout=0.3):
    return [(r.partition, r.value) for r in consumer.poll(timeout=timeout)]


def committed_reader(log, *topics, **kw):
    return log.consumer(*topics, auto_offset_reset="earliest",
                        isolation_level="read_committed", **kw)
