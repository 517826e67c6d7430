"""The sparse offset and time indexes of a segment (FORMAT.rst I-*, T-*):
their entry layout, the checks that decide whether they can be trusted, the
rebuild from the ``.log``, and the write-back of a rebuilt pair.

Index files are derived data (I-3): every reader checks them before use
(:func:`index_problem`), rebuilds them from the segment when they fail
(:func:`scan_indexes`), and a process that may write puts the rebuilt bytes
back (:func:`write_back`) under the partition's append lock. Lookups still
verify the batch they land on, so a stale entry costs a scan, never a wrong
record.

Thread safety: the functions keep no state. :func:`checked_indexes` caches
a sealed segment's checked pair on the Segment, so its caller serializes
calls per segment (the partition's reader lock). Durability: none needed;
a torn or lost index file is rebuilt on the next read.
"""

from __future__ import annotations

import logging
import os
import struct

from . import _native
from ._locks import try_acquire
from .errors import CorruptLogError

_log = logging.getLogger("pylog")

INDEX_ENTRY = struct.Struct(">ii")      # I-1: relative offset, position
TIMEINDEX_ENTRY = struct.Struct(">qi")  # T-1: timestamp, relative offset
INDEX_INTERVAL_BYTES = 4096             # I-2


def index_problem(idx: bytes, tidx: bytes, buf, end: int, base_offset: int,
                  last_offset: int | None) -> str | None:
    """Why ``idx``/``tidx`` cannot be trusted for the data ``buf[:end]`` of
    the segment at ``base_offset``, or None when they pass the I-3 checks.

    ``last_offset`` is the last offset of a sealed segment (None for the
    active one). The checks are cheap (no scan): both files are well formed
    and sorted (I-1, T-1), pair up entry by entry (T-2), a sealed segment's
    timeindex ends with its final max timestamp (T-3), and the batch at the
    last index entry really ends at that entry's offset.
    """
    if _native.index_validate(idx, end) is not None:
        return "offset index is malformed or points past the data"
    if _native.timeindex_validate(tidx) is not None:
        return "time index is malformed"
    n, nt = len(idx) // 8, len(tidx) // 12
    sealed = last_offset is not None and end > 0
    if nt != n + (1 if sealed else 0):
        return f"{n} index entries but {nt} time index entries"
    # T-2: entry i of both files names the same relative offset (raw
    # big-endian words compared as native ints: equality is unaffected)
    if n and memoryview(idx).cast("i")[0::2].tolist() != \
            memoryview(tidx).cast("i")[2::3].tolist()[:n]:
        return "index and time index disagree on relative offsets"
    if sealed and last_offset is not None and \
            TIMEINDEX_ENTRY.unpack_from(tidx, 12 * n)[1] != last_offset - base_offset:
        return "time index does not end at the segment's last offset (T-3)"
    if n:
        rel, pos = INDEX_ENTRY.unpack_from(idx, 8 * (n - 1))
        try:
            h = _native.read_batch_header(buf, pos, end)
        except CorruptLogError:
            return f"last index entry points at no batch (position {pos})"
        if not h.crc_valid or h.last_offset != base_offset + rel:
            return f"last index entry does not match the batch at {pos}"
    if sealed:
        return final_timestamp_problem(idx, tidx, n, buf, end)
    return None


def final_timestamp_problem(idx: bytes, tidx: bytes, n: int, buf, end: int) -> str | None:
    """T-3: the final timestamp of a sealed segment decides its retention,
    so it is checked against the data: one lowered by damage (and still
    sorted) would delete records not yet expired. It is the larger of the
    last T-2 entry's and of the batches from that entry's batch on (at
    most I-2's 4096 bytes and a batch: their headers' framing is read, not
    their CRCs)."""
    top, pos = -1, 0
    if n:
        top = TIMEINDEX_ENTRY.unpack_from(tidx, 12 * (n - 1))[0]
        pos = INDEX_ENTRY.unpack_from(idx, 8 * (n - 1))[1]
    while pos < end:
        try:
            h = _native.read_batch_header(buf, pos, end, crc=False)
        except CorruptLogError:
            return f"no batch at position {pos} after the last index entry"
        top = max(top, h.max_timestamp)
        pos = h.end_position
    final = TIMEINDEX_ENTRY.unpack_from(tidx, 12 * n)[0]
    if final != top:
        return (f"time index's final timestamp {final} is not the segment's "
                f"maximum {top} (T-3)")
    return None


def scan_indexes(buf, end: int, base_offset: int, sealed: bool):
    """Rebuild both indexes by scanning ``buf[:end]`` (I-2, I-3, T-3).

    Returns (idx bytes, tidx bytes, complete): ``complete`` is False when
    the scan stopped at a bad batch, whose entries are then left out (the
    read that reaches it raises CorruptLogError)."""
    r = _native.scan_segment(buf if buf is not None else b"", 0, end,
                             expected_offset=base_offset,
                             segment_base_offset=base_offset,
                             index_interval_bytes=INDEX_INTERVAL_BYTES)
    tentries = list(r.timeindex_entries)
    if sealed and r.batch_count:     # T-3
        tentries.append((r.max_timestamp, r.next_offset - 1 - base_offset))
    return pack_index(r.index_entries), pack_timeindex(tentries), \
        r.error_position is None and r.end_position == end


def pack_index(entries) -> bytes:
    """``.index`` bytes of (relative offset, position) pairs (I-1)."""
    return b"".join(INDEX_ENTRY.pack(r, p) for r, p in entries)


def pack_timeindex(entries) -> bytes:
    """``.timeindex`` bytes of (timestamp, relative offset) pairs (T-1)."""
    return b"".join(TIMEINDEX_ENTRY.pack(t, r) for t, r in entries)


def last_entry_position(idx: bytes) -> int:
    """Batch position of the last .index entry, 0 when there is none (I-2)."""
    n = len(idx) - len(idx) % INDEX_ENTRY.size
    return INDEX_ENTRY.unpack_from(idx, n - INDEX_ENTRY.size)[1] if n else 0


def last_timestamp(tidx: bytes) -> int:
    """The timestamp of the last time index entry (T-3 for a sealed
    segment), or -1 when there is none."""
    if len(tidx) < TIMEINDEX_ENTRY.size:
        return -1
    return TIMEINDEX_ENTRY.unpack_from(tidx, len(tidx) - TIMEINDEX_ENTRY.size)[0]


def checked_indexes(seg, end: int, last_offset: int | None,
                    write_back=None) -> tuple[bytes, bytes]:
    """``seg``'s (.index, .timeindex), checked before use and rebuilt from
    the .log when missing or damaged (I-3). ``last_offset`` is None for the
    active segment, whose entries past ``end`` (published after the caller's
    state snapshot) are ignored. A complete rebuild is handed to
    ``write_back(seg, end, last_offset, idx, tidx)`` when given (a process
    that may write). A sealed segment's pair is cached on ``seg``: it never
    changes."""
    if last_offset is not None and seg.index_cache is not None:
        return seg.index_cache
    if last_offset is None:
        idx, tidx = seg.indexes_before(end)
        # a writer publishes a batch, then writes its .index entry, then its
        # .timeindex entry (csrc/append.c): read between the two, the pair
        # has one more offset entry than time entries, which is not damage.
        # Their common prefix is sound; the entry left out costs a longer
        # walk from the one before it, never a wrong record.
        n = min(len(idx) // INDEX_ENTRY.size, len(tidx) // TIMEINDEX_ENTRY.size)
        idx, tidx = idx[:n * INDEX_ENTRY.size], tidx[:n * TIMEINDEX_ENTRY.size]
    else:
        idx, tidx = seg.read_index(), seg.read_timeindex()
    m = seg.mapped(end) if end else None
    problem = index_problem(idx, tidx, m, end, seg.base_offset, last_offset)
    if problem is not None:
        _log.warning("%s: %s; rebuilding the indexes (I-3)", seg.path, problem)
        stored = tidx
        idx, tidx, complete = scan_indexes(m, end, seg.base_offset,
                                           last_offset is not None)
        if complete and write_back is not None:
            write_back(seg, end, last_offset, idx, tidx)
        elif last_offset is not None:
            tidx = _keep_final_timestamp(tidx, stored)
    if last_offset is not None:
        seg.index_cache = (idx, tidx)
    return idx, tidx


def _keep_final_timestamp(tidx: bytes, stored: bytes) -> bytes:
    """The time index of a sealed segment rebuilt from a scan that stopped
    at a bad batch: its final (T-3) timestamp is the maximum of the batches
    before it only, and those after it may be newer. Retention goes by it,
    so the stored final timestamp is kept when higher: damage must never
    make records expire early (a higher one only keeps them longer)."""
    if len(tidx) < TIMEINDEX_ENTRY.size or len(stored) < TIMEINDEX_ENTRY.size \
            or len(stored) % TIMEINDEX_ENTRY.size:
        return tidx
    kept = last_timestamp(stored)
    ts, rel = TIMEINDEX_ENTRY.unpack_from(tidx, len(tidx) - TIMEINDEX_ENTRY.size)
    if kept <= ts:
        return tidx
    return tidx[:-TIMEINDEX_ENTRY.size] + TIMEINDEX_ENTRY.pack(kept, rel)


def write_back(shared, read_state, seg, end: int, last_offset: int | None,
               idx: bytes, tidx: bytes, *, locked: bool) -> None:
    """Replace ``seg``'s damaged index files with rebuilt ``idx``/``tidx``
    under the append lock of ``shared`` (a SharedState): never wait for it
    (a reader must not stall behind a writer; the next reader retries), and
    for the active segment only if nothing was appended meanwhile
    (``read_state()`` is the partition's published state). ``locked``: the
    caller holds the append lock."""
    if not locked:
        if not try_acquire(shared.wlock):
            return
        try:
            if not shared.lock(wait=False):
                return
            try:
                write_back(shared, read_state, seg, end, last_offset, idx, tidx,
                           locked=True)
            finally:
                shared.unlock()
        finally:
            shared.wlock.release()
        return
    if not os.path.exists(seg.path):       # deleted by retention meanwhile
        return
    if last_offset is None:
        st = read_state()
        if st.active_base != seg.base_offset or st.active_position != end:
            return
        shared.set_index_position(last_entry_position(idx))
    try:
        seg.replace_indexes(idx, tidx)
    except OSError as exc:
        # best effort: indexes are derived data (I-3); the reader already
        # has the rebuilt entries, and the next reader retries the write
        _log.warning("%s: rebuilt index not written back: %s", seg.index_path, exc)
