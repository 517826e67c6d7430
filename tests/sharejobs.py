"""The share-group tests' common setup: a log with a "jobs" topic of
numbered records, and a share consumer of it that reads from the start."""

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
