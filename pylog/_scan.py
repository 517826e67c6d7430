"""Segment scans and index searches of the native core (csrc/scan.c,
csrc/index.c): the walk over a segment's batches that recovery (P-4) and
index rebuilds (I-2, T-2) use, and the offset and time index lookups and
checks (I-1, T-1).

Thread safety: stateless; each call reads only the buffers it is given.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from ._buffers import rbuf as _rbuf
from ._pylog_native import ffi, lib
from .errors import InvalidArgument
from .status import check as _check
from .status import reason as _reason

_INT32_MAX = 2**31 - 1

class ScanResult(NamedTuple):
    end_position: int
    next_offset: int
    max_timestamp: int
    batch_count: int
    error_position: Optional[int]
    error_reason: Optional[str]
    continues_after_error: bool
    index_entries: list
    timeindex_entries: list
    bytes_since_last_entry: int


def scan_segment(buf, start: int = 0, end: Optional[int] = None, *, expected_offset: int = -1,
                 segment_base_offset: int = 0, index_interval_bytes: int = 4096,
                 bytes_since_last_entry: int = 0, max_timestamp: int = -1,
                 entry_cap: int = 4096) -> ScanResult:
    """Walk valid batches of ``buf[start:end]`` (see pl_segment_scan).

    ``expected_offset`` -1 disables the baseOffset continuity check.  A
    zero-filled tail is a clean end.  Index entries use positions in ``buf``.
    ``entry_cap`` index entries are collected per native call: the scan
    resumes where a full call stopped, so it bounds memory, not the result.
    """
    if entry_cap < 1:
        raise InvalidArgument(f"scan a segment: entry_cap={entry_cap!r} must be at least 1")
    idx = ffi.new("int32_t[]", 2 * entry_cap)
    tidx = ffi.new("int64_t[]", 2 * entry_cap)
    out = ffi.new("pl_scan_out *")
    index_entries: list[tuple[int, int]] = []
    timeindex_entries: list[tuple[int, int]] = []
    batch_count = 0
    next_offset = expected_offset
    check = expected_offset >= 0
    pos = start
    maxts = max_timestamp
    bsle = bytes_since_last_entry
    with _rbuf(buf) as p:
        n = len(p)
        if end is None:
            end = n
        if not (0 <= start <= end <= n):
            raise InvalidArgument(f"scan a segment: start/end {start}/{end} outside a "
                                  f"{n}-byte buffer")
        while True:
            cnt = lib.pl_segment_scan(p, end, pos, next_offset if check else -1,
                                      segment_base_offset, index_interval_bytes, bsle, maxts,
                                      idx, tidx, entry_cap, out)
            _check(cnt, "scan a segment", hint="start, end and index arguments in range")
            if cnt:
                iv = memoryview(ffi.buffer(idx, 8 * cnt)).cast("i").tolist()
                tv = memoryview(ffi.buffer(tidx, 16 * cnt)).cast("q").tolist()
                index_entries.extend(zip(iv[0::2], iv[1::2]))
                timeindex_entries.extend(zip(tv[0::2], tv[1::2]))
            if out.batch_count:
                next_offset = out.next_offset
            batch_count += out.batch_count
            pos = out.end_position
            maxts = out.max_timestamp
            bsle = out.bytes_since_last_entry
            if not out.capacity_stop:
                break
    reason = out.error_reason
    return ScanResult(pos, next_offset, maxts, batch_count,
                      out.error_position if reason else None,
                      _reason(reason) if reason else None,
                      bool(out.continues_after_error) if reason else False,
                      index_entries, timeindex_entries, bsle)


# ---------------------------------------------------------------------------
# indexes
# ---------------------------------------------------------------------------

def index_lookup(index_bytes, target_rel: int):
    """Largest (rel_offset, position) entry with rel_offset <= target, or None."""
    if not -2**31 <= target_rel <= _INT32_MAX:
        target_rel = _INT32_MAX if target_rel > 0 else -2**31
    rel = ffi.new("int32_t *")
    posp = ffi.new("int32_t *")
    with _rbuf(index_bytes) as p:
        rc = lib.pl_index_lookup(p, len(p), target_rel, rel, posp)
    if rc == 0:
        return rel[0], posp[0]
    if rc == 1:
        return None
    _check(rc, "look up an offset index (I-1)")
    raise AssertionError(f"pl_index_lookup returned {rc}")


def index_validate(index_bytes, segment_size: int):
    """None if the offset index is sane, else the byte position of the first bad entry."""
    with _rbuf(index_bytes) as p:
        r = lib.pl_index_validate(p, len(p), segment_size)
    if r == 0:
        return None
    _check(r, "validate an offset index (I-1)")
    return r - 1


def timeindex_lookup(tindex_bytes, target_ts: int):
    """Largest (timestamp, rel_offset) entry with timestamp < target_ts, or None."""
    if not -2**63 <= target_ts < 2**63:
        target_ts = 2**63 - 1 if target_ts > 0 else -2**63
    ts = ffi.new("int64_t *")
    rel = ffi.new("int32_t *")
    with _rbuf(tindex_bytes) as p:
        rc = lib.pl_timeindex_lookup(p, len(p), target_ts, ts, rel)
    if rc == 0:
        return ts[0], rel[0]
    if rc == 1:
        return None
    _check(rc, "look up a time index (T-1)")
    raise AssertionError(f"pl_timeindex_lookup returned {rc}")


def timeindex_validate(tindex_bytes):
    """None if the time index is sane, else the byte position of the first bad entry."""
    with _rbuf(tindex_bytes) as p:
        r = lib.pl_timeindex_validate(p, len(p))
    if r == 0:
        return None
    _check(r, "validate a time index (T-1)")
    return r - 1
