"""Retention of one partition: whole sealed segments past ``retention_ms``
or ``retention_bytes`` are deleted, oldest first (FORMAT.rst P-5, T-3).

Decisions come from the partition's in-memory segment list (P-8,
:mod:`pylog.segmentlist`): base offsets, sizes and final max timestamps,
so a pass costs the same however many segments or other files the
directory holds. A sealed segment's final max timestamp (T-3) is the one
its roll wrote, or is read once from its checked (or rebuilt) time index:
a damaged one must never delete records that are not yet expired. The new
log start offset is recorded in LMDB first and the files deleted second
(P-5): a crash in between leaves files below the start offset, which the
next recovery deletes.

:func:`delete_records_locked` moves the log start offset up to a given
offset (Kafka's DeleteRecords, P-6), possibly into a segment, and deletes
the segments wholly below it as retention does.

Thread safety: :func:`enforce_retention_locked` runs under the partition's
writer lock and append lock (P-3), as rolls call it; the partition's
``enforce_retention`` takes both. Durability: the LMDB record of the log
start is durable per the metadata's sync mode; deleting files needs no
fsync (a resurrected file is below the start offset and deleted again).
"""

from __future__ import annotations

import time
from typing import Any

from .errors import OffsetOutOfRange
from .index import last_timestamp
from .segment import Segment, unlink_segment


def enforce_retention_locked(part: Any, now_ms: int | None = None) -> int:
    """Delete the sealed segments of ``part`` (a writable Partition) past
    its retention; return how many were deleted. The caller holds the
    partition's writer lock and append lock. Decides from the partition's
    in-memory segment list (P-8): its cost does not grow with the number
    of segments or of other files in the directory."""
    cfg = part.config
    if cfg.retention_ms < 0 and cfg.retention_bytes < 0:
        return 0
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    st = part.state()
    segs = part.segments
    bases = segs.bases(st)
    total = segs.sealed_bytes() + st.active_position \
        if cfg.retention_bytes >= 0 else 0
    doomed = 0
    while doomed < len(bases) - 1:          # the active segment stays
        b = bases[doomed]
        expired = False
        if cfg.retention_ms >= 0:
            mts = segs.max_timestamp(b)
            if mts is None:
                mts = _final_max_timestamp(part, b, bases[doomed + 1] - 1)
                segs.set_max_timestamp(b, mts)
            expired = 0 <= mts < now_ms - cfg.retention_ms
        if cfg.retention_bytes >= 0 and total - segs.size(b) >= cfg.retention_bytes:
            expired = True
        if not expired:
            break
        if cfg.retention_bytes >= 0:
            total -= segs.size(b)
        doomed += 1
    if not doomed:
        return 0
    # P-6: never below a start that delete_records moved into a segment
    new_start = max(bases[doomed], st.log_start_offset)
    # P-5: metadata first, then files. L-7: never wait for another
    # process's metadata transaction; retry next time.
    if not part.meta.set_log_start(part.topic, part.index, new_start):
        return 0
    part.shared.publish(st.next_offset, st.active_base, st.active_position,
                        st.active_max_timestamp, st.generation + 1, new_start)
    gone = bases[:doomed]
    segs.dropped(st.generation, doomed)
    for b in gone:
        unlink_segment(part.dir, b)
    return doomed


def _final_max_timestamp(part: Any, base: int, last_offset: int) -> int:
    """T-3 of sealed segment ``base`` from a checked (or rebuilt) time
    index: a damaged one must not delete records that are not yet expired."""
    seg = Segment(part.dir, base)
    try:
        _, t = part.reader.indexes(seg, seg.file_size(), last_offset, locked=True)
    finally:
        seg.close()
    return last_timestamp(t)


def delete_records_locked(part: Any, before: int) -> int | None:
    """Move the log start offset of ``part`` (a writable Partition) up to
    ``before`` (P-6) and delete the sealed segments wholly below it.
    Returns the log start offset now (unchanged when ``before`` is not
    above it), or None when the metadata writer lock was busy (L-7: one
    try, nothing changed; the caller retries). Raises OffsetOutOfRange
    when ``before`` is past the end offset.

    The caller holds the partition's writer lock and append lock. Durable
    when it returns: the records below the new start are durable first (a
    power loss must not cut the tail below it), then the metadata record
    is fsynced, then the state is published and files are deleted (P-5)."""
    st = part.state()
    if before > st.next_offset:
        raise OffsetOutOfRange(
            f"delete records of {part.name} before offset {before}: the end "
            f"offset is {st.next_offset}; pass at most the end offset (or -1 "
            "for it)")
    if before <= st.log_start_offset:
        return int(st.log_start_offset)
    part.sync_for_commit()           # P-6: the start never passes durable data
    if not part.meta.set_log_start(part.topic, part.index, before):
        return None
    part.meta.sync()
    part.shared.publish(st.next_offset, st.active_base, st.active_position,
                        st.active_max_timestamp, st.generation + 1, before)
    bases = part.segments.bases(st)
    gone = [b for i, b in enumerate(bases[:-1]) if bases[i + 1] <= before]
    part.segments.dropped(st.generation, len(gone))
    for b in gone:                              # the active segment stays
        unlink_segment(part.dir, b)
    return before
