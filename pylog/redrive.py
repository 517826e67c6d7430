"""Redrive: dead-lettered records of a share group back to their topics.

``Log.redrive(group, dead_letter_topic)`` reads the dead-letter topic from
where the last redrive of ``group`` stopped (the committed offsets of the
consumer group ``<group>.redrive`` on it), picks the records a share group
``group`` archived there (header ``_dlq.errors.group``, FORMAT.rst Q-5) and
appends each to its original topic and partition — key, value, timestamp
and its own headers, without the ``_dlq.errors.*`` ones — as a new record
that share consumers take like any other. Dry run unless ``execute``.

Durability: the copies are flushed before the redrive group commits past
them, so a crash redrives a record twice at worst, never loses one.
Thread safety: one redrive of a group at a time.
"""

from __future__ import annotations

from typing import Any

from .records import TopicPartition
from .sharedlq import DLQ_PREFIX


def redrive(log: Any, group: str, dead_letter_topic: str, *,
            execute: bool = False) -> list[dict[str, Any]]:
    """The plan (or what was done): [{dlq_partition, dlq_offset, topic,
    partition, offset, reason, delivery_count}]."""
    rgroup = group + ".redrive"
    parts = log.partitions_for(dead_letter_topic)
    # no group membership: a dry run works on a read-only log too
    c = log.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(dead_letter_topic, p) for p in range(parts)]
        c.assign(tps)
        for tp in tps:
            done = log.meta.committed(rgroup, tp.topic, tp.partition)
            if done is None:
                c.seek_to_beginning(tp)
            else:
                c.seek(tp, done)
        ends = c.end_offsets(tps)
        plan: list[dict[str, Any]] = []
        copies = []
        while any(c.position(tp) < ends[tp] for tp in tps):
            recs = c.poll(timeout_ms=200, max_records=1000)
            if not recs:
                break
            for r in recs:
                h = dict(r.headers)
                if h.get(DLQ_PREFIX + "group") != group.encode():
                    continue
                try:
                    topic = h[DLQ_PREFIX + "topic"].decode()
                    partition = int(h[DLQ_PREFIX + "partition"])
                    offset = int(h[DLQ_PREFIX + "offset"])
                except (KeyError, AttributeError, ValueError):
                    continue                # not a share group's dead letter
                plan.append({"dlq_partition": r.partition, "dlq_offset": r.offset,
                             "topic": topic, "partition": partition, "offset": offset,
                             "reason": (h.get(DLQ_PREFIX + "reason") or b"").decode(),
                             "delivery_count": int(h.get(DLQ_PREFIX + "delivery.count")
                                                   or 0)})
                copies.append((topic, partition, r))
        if execute:
            prod = log.producer()
            for topic, partition, r in copies:
                headers = [(k, v) for k, v in r.headers if not k.startswith(DLQ_PREFIX)]
                prod.send(topic, r.value, key=r.key, headers=headers, partition=partition,
                          timestamp_ms=r.timestamp_ms)
            prod.flush()
            prod.close()
            log.meta.commit(rgroup, {(tp.topic, tp.partition): ends[tp] for tp in tps})
        return plan
    finally:
        c.close()
