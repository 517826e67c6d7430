"""Dead-letter copies of a share group's Archived records, exactly once
(FORMAT.rst Q-5, Q-6).

A record a share consumer archives (``reject``, or the delivery limit)
with a dead-letter topic set goes through three steps under its share
file's lock: (1) a journaled batch puts it in state Dead-lettering, with
a mark naming the dead-letter partition and that partition's end offset
at that moment (where the copy will be); (2) the copy is appended there
with ``_dlq.errors.*`` headers naming its group, topic, partition and
offset; (3) a second batch makes it Archived. A holder killed anywhere in
between leaves the record Dead-lettering: the next holder of the lock
looks for the copy from the mark on, by its headers, appends it only when
it is not there, and archives it. So each Archived record is copied once.

Thread safety: as the ShareConsumer that owns it (one thread at a time),
and every method runs under the share file's lock. Durability: the copies
are appended as the log's sync mode says; a share checkpoint makes the
partitions this process appended to durable before it stores a state
that points past them (Q-3).
"""

from __future__ import annotations

from typing import Any

from . import sharestate as ss
from .errors import OffsetOutOfRange, PartitionNotFound, PylogError, TopicNotFound
from .reader import Cursor
from .records import Record, TopicPartition

DLQ_PREFIX = "_dlq.errors."
REJECTED, DELIVERY_LIMIT = "rejected", "delivery_limit"
_PART_BITS = 16           # Q-6 mark: start << 17 | partition << 1 | rejected
_SCAN = 500


def encode_mark(start: int, dlq_partition: int, reason: str) -> int:
    return (start << (_PART_BITS + 1)) | (dlq_partition << 1) | (reason == REJECTED)


def decode_mark(mark: int) -> tuple[int, int, str]:
    """(start offset, dead-letter partition, reason) of a Q-6 mark."""
    return (mark >> (_PART_BITS + 1), (mark >> 1) & ((1 << _PART_BITS) - 1),
            REJECTED if mark & 1 else DELIVERY_LIMIT)


class DeadLetters:
    """The dead-letter topic of share group ``group`` (module docstring)."""

    def __init__(self, log: Any, group: str, topic: str) -> None:
        self._log = log
        self.group = group
        self.topic = topic
        self._producer: Any = None
        self.copied = 0         # copies this object appended
        self.unflushed = False

    def _dlq_partition(self, source_partition: int) -> int:
        n = self._log.partitions_for(self.topic)
        return source_partition % min(n, 1 << _PART_BITS)

    def prepare(self) -> None:
        """Make the topic (one partition when it is new) and the producer
        that copies into it, if not yet made."""
        if self._producer is None:
            self._log.create_topic(self.topic, partitions=1, exist_ok=True)
            self._producer = self._log.producer()

    def marks(self, tp: TopicPartition,
              doomed: list[tuple[int, int, str]]) -> list[tuple[int, int, int, int]]:
        """Step 1 (Q-5): the Dead-lettering changes of ``doomed`` [(offset,
        delivery count, reason)]."""
        self.prepare()
        p = self._dlq_partition(tp.partition)
        start = self._log.partition(self.topic, p).state().next_offset
        return [(off, ss.DEAD_LETTERING, count, encode_mark(start, p, reason))
                for off, count, reason in doomed]

    def copy(self, tp: TopicPartition, source: Any,
             entries: list[tuple[int, int, int]], look_first: bool) -> None:
        """Step 2 (Q-5): append the copies of ``entries`` [(offset, delivery
        count, mark)] of partition ``tp`` (read from ``source``). With
        ``look_first`` (a dead holder's leftovers), entries whose copy is
        already in the dead-letter partition are skipped."""
        # (made again if it was deleted since the marks were made)
        self._log.create_topic(self.topic, partitions=1, exist_ok=True)
        if self._producer is None:
            self._producer = self._log.producer()
        n = self._log.partitions_for(self.topic)
        there: set[int] = set()
        if look_first:
            there = self._already_copied(tp, entries)
        for off, count, mark in entries:
            if off in there:
                continue
            _start, p, reason = decode_mark(mark)
            p %= n                  # (the topic was made again, smaller)
            try:
                recs = source.fetch(Cursor(off), 1, with_topic=True, row_type=Record)
            except PylogError:
                continue            # deleted by retention: nothing to copy
            if not recs or recs[0][2] != off:
                continue
            r = recs[0]
            headers = list(r[6] or ()) + [
                (DLQ_PREFIX + "topic", tp.topic.encode()),
                (DLQ_PREFIX + "partition", str(tp.partition).encode()),
                (DLQ_PREFIX + "offset", str(off).encode()),
                (DLQ_PREFIX + "group", self.group.encode()),
                (DLQ_PREFIX + "delivery.count", str(count).encode()),
                (DLQ_PREFIX + "reason", reason.encode()),
            ]
            self._producer.send(self.topic, r[5], key=r[4], headers=headers,
                                timestamp_ms=r[3], partition=p)
            self.copied += 1
            self.unflushed = True

    def _already_copied(self, tp: TopicPartition,
                        entries: list[tuple[int, int, int]]) -> set[int]:
        """Offsets of ``entries`` whose copy the dead-letter topic holds at
        or after their mark (Q-5)."""
        want: dict[int, set[int]] = {}
        starts: dict[int, int] = {}
        for off, _count, mark in entries:
            start, p, _reason = decode_mark(mark)
            want.setdefault(p, set()).add(off)
            starts[p] = min(starts.get(p, start), start)
        group, topic, part_no = self.group.encode(), tp.topic.encode(), \
            str(tp.partition).encode()
        found: set[int] = set()
        for p, offs in want.items():
            try:
                dlq = self._log.partition(self.topic, p)
            except (TopicNotFound, PartitionNotFound):
                continue            # gone, and the copies with it
            cur = Cursor(max(starts[p], dlq.state().log_start_offset))
            while True:
                try:
                    recs = dlq.fetch(cur, _SCAN)
                except OffsetOutOfRange:
                    break
                if not recs:
                    break
                for r in recs:
                    h = dict(r[4] or ())
                    if h.get(DLQ_PREFIX + "group") == group and \
                            h.get(DLQ_PREFIX + "topic") == topic and \
                            h.get(DLQ_PREFIX + "partition") == part_no:
                        try:
                            off = int(h.get(DLQ_PREFIX + "offset") or b"")
                        except ValueError:
                            continue
                        if off in offs:
                            found.add(off)
        return found

    def flush(self) -> None:
        """fdatasync the copies (before a ``sync="always"`` checkpoint)."""
        if self.unflushed and self._producer is not None:
            self._producer.flush()
            self.unflushed = False

    def close(self) -> None:
        if self._producer is not None:
            self.flush()
            self._producer.close()
            self._producer = None
