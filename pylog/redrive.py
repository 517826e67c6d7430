"""Redrive: dead-lettered records of a share group back to their topics.

``Log.redrive(group, dead_letter_topic)`` reads the dead-letter topic from
where the last redrive of ``group`` stopped, picks the records a share
group ``group`` archived there (header ``_dlq.errors.group``, FORMAT.rst
Q-5) and appends each to its original topic and partition — key, value,
timestamp and its own headers, without the ``_dlq.errors.*`` ones — as a
new record that share consumers take like any other. Dry run unless
``execute``.

A dead letter that cannot go back as it came must not stop the others (a
redrive that raised on it would raise at every later run too, and copy
again what it sent before the error): one whose topic or partition no
longer exists is skipped — its plan entry says why in ``skipped``, it
stays in the dead-letter topic, and the progress moves past it — as is
one its topic refuses when sent (larger than its ``max_message_bytes``
now, or the topic deleted meanwhile); one whose timestamp its topic's
window (``message_timestamp_before_max_ms``) no longer accepts is sent
with the current time instead.

Where a redrive stopped is its own LMDB ``info`` key (FORMAT.rst Q-8:
``redrive``, NUL, group, NUL, topic → the topic's id and an offset per
partition), not a consumer group's offsets: those are deleted when the
group sits idle for ``offsets_retention_ms`` (pylog.expiry), and a later
redrive would then send every old dead letter again; a consumer group
would also be listed by ``Log.groups()`` and could clash with a user's
group of the same name. The topic id makes a re-created dead-letter topic
start from its beginning. A log whose redrive progress predates the key
(kept as the offsets of consumer group ``<group>.redrive``) goes on from
there until its next executed redrive stores the key.

Durability: the copies are flushed, and the dead-letter partitions made
durable up to where the redrive stopped (M-10), before the progress is
stored, so a crash redrives a record twice at worst, never loses one.
Thread safety: one redrive of a group at a time.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import (
    CorruptLogError,
    InvalidTimestamp,
    PartitionNotFound,
    RecordTooLarge,
    TopicNotFound,
)
from .records import TopicPartition
from .sharedlq import DLQ_PREFIX

KEY_PREFIX = b"redrive\0"


def progress_key(group: str, topic: str) -> bytes:
    """The Q-8 key of ``group``'s redrive progress on dead-letter ``topic``
    (a group id holds no NUL: the key names one pair)."""
    return KEY_PREFIX + group.encode() + b"\0" + topic.encode()


def _stored_progress(log: Any, group: str, topic: str, topic_id: str,
                     parts: int) -> list[int | None]:
    """Where the last executed redrive stopped in each partition of
    ``topic`` (None: from the beginning)."""
    raw = log.meta.info_get(progress_key(group, topic), "read redrive progress")
    if raw is None:
        # progress of a version that kept it as a consumer group's offsets
        legacy = group + ".redrive"
        return [log.meta.committed(legacy, topic, p) for p in range(parts)]
    try:
        doc = json.loads(raw)
        offsets = doc["offsets"]
        assert isinstance(offsets, list) and all(
            isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CorruptLogError(f"the redrive progress of group {group!r} on "
                              f"{topic!r} is damaged in LMDB") from None
    if doc.get("id") != topic_id:
        return [None] * parts       # the topic was re-created since
    return [offsets[p] if p < len(offsets) else None for p in range(parts)]


def redrive(log: Any, group: str, dead_letter_topic: str, *,
            execute: bool = False) -> list[dict[str, Any]]:
    """The plan (or what was done): [{dlq_partition, dlq_offset, topic,
    partition, offset, reason, delivery_count}]."""
    parts = log.partitions_for(dead_letter_topic)
    doc = log.meta.get_topic(dead_letter_topic)
    if doc is None:                  # deleted since partitions_for read it
        raise TopicNotFound(f"topic {dead_letter_topic!r} does not exist in {log.path}")
    topic_id = str(doc["id"])
    done_to = _stored_progress(log, group, dead_letter_topic, topic_id, parts)
    # no group membership: a dry run works on a read-only log too
    c = log.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(dead_letter_topic, p) for p in range(parts)]
        c.assign(tps)
        for tp, done in zip(tps, done_to):
            if done is None:
                c.seek_to_beginning(tp)
            else:
                c.seek(tp, done)
        ends = c.end_offsets(tps)
        plan: list[dict[str, Any]] = []
        copies = []
        widths: dict[str, int | None] = {}      # partitions per topic, None: gone
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
                why = _unsendable(log, widths, topic, partition)
                if why is None:
                    copies.append((topic, partition, r, plan[-1]))
                else:
                    plan[-1]["skipped"] = why
        if execute:
            prod = log.producer()
            for topic, partition, r, entry in copies:
                headers = [(k, v) for k, v in r.headers if not k.startswith(DLQ_PREFIX)]
                try:
                    try:
                        prod.send(topic, r.value, key=r.key, headers=headers,
                                  partition=partition, timestamp_ms=r.timestamp_ms)
                    except InvalidTimestamp:
                        # (a refused send wrote nothing) a retry is a new
                        # record: the current time is always in the window
                        prod.send(topic, r.value, key=r.key, headers=headers,
                                  partition=partition)
                except (RecordTooLarge, TopicNotFound, PartitionNotFound) as exc:
                    entry["skipped"] = f"refused by {topic!r}: {exc}"   # (wrote nothing)
            prod.flush()
            prod.close()
            # M-10: progress never points past dead letters a power loss
            # could take (new ones would take their offsets, unread)
            for tp in tps:
                log.partition(tp.topic, tp.partition).sync_for_commit()
            # what was read, not the end offsets: a poll that came back
            # empty early must not skip records, and those read past the
            # ends were copied too
            value = json.dumps({"id": topic_id,
                                "offsets": [c.position(tp) for tp in tps]}).encode()
            key = progress_key(group, dead_letter_topic)
            log.meta.info_update([key], f"store the redrive progress of {group!r}",
                                 lambda _now: {key: value})
        return plan
    finally:
        c.close()


def _unsendable(log: Any, widths: dict[str, int | None], topic: str,
                partition: int) -> str | None:
    """Why a dead letter of ``topic``-``partition`` cannot be redriven (its
    topic was deleted, or has fewer partitions now), None when it can.
    ``widths`` caches the partition counts of the topics seen."""
    if topic not in widths:
        try:
            widths[topic] = log.partitions_for(topic)
        except TopicNotFound:
            widths[topic] = None
    n = widths[topic]
    if n is None:
        return f"topic {topic!r} no longer exists"
    if not 0 <= partition < n:
        return f"topic {topic!r} has no partition {partition} now"
    return None
