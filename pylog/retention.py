"""Retention of one partition: whole sealed segments past ``retention_ms``
or ``retention_bytes`` are deleted, oldest first (FORMAT.rst P-5, T-3).

Time retention reads a sealed segment's final time index entry (T-3) from a
checked (or rebuilt) time index: a damaged one must never delete records
that are not yet expired. The new log start offset is recorded in LMDB
first and the files deleted second (P-5): a crash in between leaves files
below the start offset, which the next recovery deletes.

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

import os
import time
from typing import Any

from .errors import OffsetOutOfRange
from .index import last_timestamp
from .segment import Segment, list_segment_bases, segment_path, unlink_segment


def enforce_retention_locked(part: Any, now_ms: int | None = None) -> int:
    """Delete the sealed segments of ``part`` (a writable Partition) past
    its retention; return how many were deleted. The caller holds the
    partition's writer lock and append lock."""
    cfg = part.config
    if cfg.retention_ms < 0 and cfg.retention_bytes < 0:
        return 0
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    st = part.state()
    bases = [b for b in list_segment_bases(part.dir) if b <= st.active_base]
    sizes = {}
    for b in bases:
        try:
            sizes[b] = os.stat(segment_path(part.dir, b)).st_size
        except FileNotFoundError:
            sizes[b] = 0
    sizes[st.active_base] = st.active_position
    total = sum(sizes.values())
    doomed = []
    for i, b in enumerate(bases[:-1]):      # the active segment stays
        expired = False
        if cfg.retention_ms >= 0:
            # T-3 of a checked (or rebuilt) time index: a damaged one must
            # not delete records that are not yet expired
            seg = Segment(part.dir, b)
            try:
                _, t = part.reader.indexes(seg, seg.file_size(), bases[i + 1] - 1,
                                           locked=True)
            finally:
                seg.close()
            mts = last_timestamp(t)
            expired = 0 <= mts < now_ms - cfg.retention_ms
        if cfg.retention_bytes >= 0 and total - sizes[b] >= cfg.retention_bytes:
            expired = True
        if not expired:
            break
        doomed.append(b)
        total -= sizes[b]
    if not doomed:
        return 0
    # P-6: never below a start that delete_records moved into a segment
    new_start = max(bases[len(doomed)], st.log_start_offset)
    # P-5: metadata first, then files. L-7: never wait for another
    # process's metadata transaction; retry next time.
    if not part.meta.set_log_start(part.topic, part.index, new_start):
        return 0
    part.shared.publish(st.next_offset, st.active_base, st.active_position,
                        st.active_max_timestamp, st.generation + 1, new_start)
    for b in doomed:
        unlink_segment(part.dir, b)
    return len(doomed)


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
    bases = [b for b in list_segment_bases(part.dir) if b <= st.active_base]
    for i, b in enumerate(bases[:-1]):          # the active segment stays
        if bases[i + 1] <= before:
            unlink_segment(part.dir, b)
    return before
