"""Recovery of a partition from its segment files (FORMAT.rst P-4, P-5),
in passes as Kafka's LogLoader runs them:

1. segments wholly below the log start offset, left by an interrupted
   retention pass (P-5), are deleted;
2. a partition without segments gets its first, empty one;
3. an empty last segment that the recovery checkpoint does not name, left
   by a roll that crashed before its first batch, is dropped: the previous
   segment is active again;
4. every segment from the checkpoint's on is scanned by
   :meth:`Segment.recover_scan` (torn tail cut, mid-log damage raised,
   indexes rebuilt), checking that each starts where the previous ended,
   and the end found checked against what is known durable (P-12);
5. the state is published (P-2) and a lagging log start offset recorded.

Thread safety: the caller holds the partition's writer lock and append lock
(P-3) for a writing recovery; a read-only one (``write=False``) changes no
file and computes the state in memory. Durability: the segment files are
cut and indexes rewritten in place; what recovery keeps was either
fdatasync'd before the checkpoint or is what the page cache held after a
process crash (G1).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

from .errors import CorruptLogError
from .segment import (
    Segment,
    list_segment_bases,
    segment_is_empty,
    segment_path,
    unlink_segment,
)
from .sharedstate import PartitionMeta, State

_log = logging.getLogger("pylog")


@dataclass(frozen=True)
class Loaded:
    """What a recovery found: the partition's state, the bytes of torn tail
    it cut, and whether it made the partition's first segment."""
    state: State
    truncated: int
    created_first_segment: bool = False


def recover_partition(directory: str, metadata, topic: str, index: int, shared,
                      write: bool, clean: State | None = None) -> Loaded:
    """Recover partition ``index`` of ``topic`` in ``directory``, whose LMDB
    record ``metadata`` (the log's Metadata) holds and whose state file is
    ``shared`` (a SharedState); publish the state when ``write``. Raises
    CorruptLogError for damage that is not a torn tail (G4), and when the
    segments end before what is known durable (P-12). ``clean``: the state
    the last close left clean (P-9) when its files did not match it, true
    and durable, so the segments must reach its end. See the module
    docstring for the passes."""
    meta: PartitionMeta = metadata.partition_meta(topic, index)
    start = meta.log_start_offset
    bases = list_segment_bases(directory)
    durable = durable_end(meta, shared.durable_mark(), clean)
    gen = 1
    if shared.has_magic():
        vals = shared.read()
        if vals is not None:
            # a read-only view keeps the file's generation, so that a
            # writer's recovery (which bumps it) is noticed by state()
            gen = vals[4] + (1 if write else 0)
    # pass 1 (P-5)
    while len(bases) > 1 and bases[1] <= start:
        if write:
            unlink_segment(directory, bases[0])
        bases.pop(0)
    # pass 2
    if not bases:
        lost = lost_error(directory, durable, start, None)
        if lost is not None:
            raise lost
        if write:
            seg = Segment(directory, start, create=True, writable=True)
            seg.write_indexes([], [])
            seg.close()
        st = State((start, start, 0, -1, gen, start))
        if write:
            shared.publish(*st)
        return Loaded(st, 0, created_first_segment=write)
    if bases[0] > start:
        # P-12: records below the first segment are gone. Retention records
        # the start before it deletes (P-5), but that record is only as
        # durable as the metadata's sync mode: after a power loss the files
        # may be ahead of it, which looks the same as files deleted by hand.
        # Either way the start moves up to the data that exists (as Kafka's
        # LogLoader does), never left pointing at nothing, and said loudly.
        why = ("the last close left the partition clean (P-9), so segment "
               "files were deleted outside pylog" if clean is not None else
               "segment files deleted outside pylog, or by retention whose "
               "record of the new start a power loss undid (P-5)")
        _log.warning("%s: records %d to %d are gone: no segment holds them "
                     "(%s is missing; the first segment starts at offset %d): "
                     "%s; the log start offset moves up to %d (P-12)",
                     directory, start, bases[0] - 1,
                     segment_path(directory, start), bases[0], why, bases[0])
        start = bases[0]
    # pass 3
    if len(bases) > 1 and meta.checkpoint_base != bases[-1] and \
            segment_is_empty(directory, bases[-1]):
        # A roll publishes the new segment and then checkpoints it, before
        # any batch goes in: an empty last segment the checkpoint does not
        # name was made by a roll that crashed (or whose checkpoint write
        # failed). Others may have appended to the previous segment past its
        # base since, so it goes, and the previous one is active again.
        _log.warning("%s: dropping the empty segment %d left by an "
                     "interrupted roll", directory, bases[-1])
        if write:
            unlink_segment(directory, bases[-1])
        bases.pop()
    # pass 4: from the checkpoint's segment (P-4). Sealed segments were
    # fdatasync'd when they rolled, so a missing checkpoint segment means
    # start at the first segment after it.
    ck_base, ck_pos, ck_next = _checkpoint(meta, shared, bases[-1])
    first = max(0, bisect.bisect_right(bases, ck_base) - 1)
    first_base = bases[first]
    cut = 0
    next_offset = first_base
    end = 0
    max_ts = -1
    for i in range(first, len(bases)):
        base = bases[i]
        last = i == len(bases) - 1
        seg = Segment(directory, base, writable=write)
        try:
            if base != first_base and base != next_offset:
                raise CorruptLogError(
                    f"segment starts at offset {base} but the previous "
                    f"one ends at {next_offset}", seg.path, 0)
            # The checkpoint's position belongs to its own segment only; a
            # non-last segment (crash during a roll) is scanned whole so
            # that its T-3 entry is right.
            checkpoint = (ck_pos, ck_next) if last and base == ck_base else None
            r = seg.recover_scan(checkpoint=checkpoint, sealed=not last)
            cut += r.truncated
            next_offset, end, max_ts = r.next_offset, r.end, r.max_timestamp
            if write and last:
                shared.set_index_position(r.index_position)
        finally:
            seg.close()
    lost = lost_error(directory, durable, next_offset, bases)
    if lost is not None:
        raise lost
    # pass 5
    st = State((next_offset, bases[-1], end, max_ts, gen, start))
    if write:
        shared.publish(*st)
        # what a dead holder of the append lock left past the end is gone:
        # cut with the torn tail, its roll's empty segment dropped (P-3)
        shared.clear_takeover()
        if start != meta.log_start_offset:
            metadata.set_log_start(topic, index, start)
    return Loaded(st, cut)


def durable_end(meta: PartitionMeta, mark, clean: State | None) -> tuple[int, int]:
    """P-12: (next offset, segment base) the segments must reach: the
    recovery checkpoint's (M-5), the durable mark's ``mark`` (P-7, or
    None) and, for a partition the last close left clean, its published
    end (P-9). Each was durable when recorded, and records are only ever
    removed past durable positions or below the log start, as whole
    segments."""
    best = (meta.checkpoint_next_offset, meta.checkpoint_base)
    if mark is not None:
        best = max(best, (mark[2], mark[0]))
    if clean is not None:
        best = max(best, (clean.next_offset, clean.active_base))
    return best


def lost_error(directory: str, durable: tuple[int, int], end: int,
               bases) -> CorruptLogError | None:
    """P-12: when the segments (``bases``) end at ``end``, before the
    durable end ``durable``, the CorruptLogError naming the missing file
    (or the short last one) and the acknowledged records gone."""
    nxt, base = durable
    if end >= nxt:
        return None
    if not bases or base not in bases:
        path, position = segment_path(directory, base), None
        what = f"the segment file that holds them ({path}) is missing"
    else:
        path, position = segment_path(directory, bases[-1]), None
        what = "the last segment file ends before them (cut short)"
    return CorruptLogError(
        f"records {end} to {nxt - 1} were durable but no segment holds them: "
        f"{what} (P-12)", path, position)


def _checkpoint(meta: PartitionMeta, shared, active_base: int) -> tuple[int, int, int]:
    """(segment base, position, next offset) to scan from: the later of the
    LMDB checkpoint (M-5) and the durable mark in the state file (P-7),
    the mark only when it names the active segment (a mark of another one
    is a dropped roll's or left from before a retention pass)."""
    ck = (meta.checkpoint_base, meta.checkpoint_position, meta.checkpoint_next_offset)
    mark = shared.durable_mark()
    if mark is not None and mark[0] == active_base and mark[:2] > ck[:2]:
        return mark
    return ck
