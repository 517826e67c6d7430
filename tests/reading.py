"""Reading a whole topic back, for tests (a plain module: ``from conftest
import`` would find tests/promises/conftest.py when the whole suite runs)."""


def read_all(log, topic):
    """Every record of ``topic`` from the start, read until a poll comes back
    empty."""
    c = log.consumer(topic, auto_offset_reset="earliest")
    out = []
    while batch := c.poll(timeout=0.05, max_records=100_000):
        out.extend(batch)
    c.close()
    return out
