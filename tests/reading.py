"""Reading a whole topic back, for tests (a plain module: ``from conftest
import`` would find tests/promises/conftest.py when the whole suite runs)."""

from pylog import TopicPartition


def read_all(log, topic):
    """Every record of ``topic`` from the start, read until a poll comes back
    empty."""
    c = log.consumer(topic, auto_offset_reset="earliest")
    out = []
    while batch := c.poll(timeout=0.05, max_records=100_000):
        out.extend(batch)
    c.close()
    return out


def read_to_end(log, topic, isolation_level="read_committed"):
    """Every record of ``topic`` that a consumer reading with
    ``isolation_level`` sees from the start up to the end offsets it finds
    first, in partition then offset order."""
    c = log.consumer(enable_auto_commit=False, isolation_level=isolation_level)
    tps = [TopicPartition(topic, p.partition) for p in log.describe_topic(topic).partition_info]
    c.assign(tps)
    c.seek_to_beginning()
    end = c.end_offsets(tps)
    out = []
    while any(c.position(tp) < end[tp] for tp in tps):
        got = c.poll(timeout=1.0, max_records=10_000)
        if not got:
            break
        out.extend(got)
    c.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))
