"""The share-group tests' common setup: a log with a "jobs" topic of
numbered records, a share consumer of it that reads from the start, and
what its dead-letter topic "jobs.dlq" holds."""

import pylog


def jobs_log(logdir, n=10, partitions=1, sync="never", **topic_kw):
    """``logdir`` opened with topic "jobs" (made if missing, with
    ``topic_kw``) and ``n`` records b"v0".. spread round-robin over its
    partitions, flushed."""
    log = pylog.open(logdir, sync=sync)
    log.create_topic("jobs", partitions=partitions, exist_ok=True, **topic_kw)
    if n:
        p = log.producer()
        for i in range(n):
            p.send("jobs", b"v%d" % i, partition=i % partitions)
        p.flush()
    return log


def jobs_share(log, **kw):
    """A share consumer of "jobs" in group "g" from the earliest record,
    unless ``kw`` says otherwise."""
    kw.setdefault("group_id", "g")
    kw.setdefault("auto_offset_reset", "earliest")
    return log.share_consumer("jobs", **kw)


def dead_letters(log):
    """Every record of "jobs.dlq" from the start ([] while it is no topic),
    read until a poll waits 100 ms in vain."""
    if "jobs.dlq" not in log.topics():
        return []
    c = log.consumer("jobs.dlq", auto_offset_reset="earliest")
    out = []
    while recs := c.poll(timeout_ms=100):
        out.extend(recs)
    c.close()
    return out
