"""Per-thread scratch memory of the native calls.

The fetch fields, the struct formats of the row cutter, the append batches
and the state reads each reuse one buffer per thread, call after call:
what a call keeps is copied out of it before the thread's next call. The
appends and fetches run without the GIL, so two threads never share one.
Memory from :data:`raw_alloc` is left uncleared, so only the pages a
thread's calls touched are resident.

Thread safety: every buffer belongs to the thread that made it
(``threading.local``). Process memory: a forked child makes its own.
"""

from __future__ import annotations

import struct as _struct
import threading

from ._pylog_native import ffi, lib

#: the thread-local holder of every scratch buffer (attributes: state,
#: shape, fetch, append, wait, committed)
local = threading.local()
#: ffi.new without clearing the memory
raw_alloc = ffi.new_allocator(should_clear_after_alloc=False)

# Records one fetch decodes at most; a batch with more takes the per-batch
# path (PL_FETCH_ROOM, as do PL_FETCH_HEADERS and compressed batches).
# Bounds the scratch memory of a thread (6 MiB).
FETCH_RECORDS_MAX = 65536
# A fetch starts no new batch past this many records: the objects built from
# one fetch then stay in the CPU caches (one step of 10,000 ran ~25% slower).
FETCH_RECORDS_STEP = 2048
HEADERS_PER_RECORD_ROOM = 2

# pl_fetch_out, field by field (pylog_native.h), read in one call
FETCH_OUT = _struct.Struct("=5q2i2q")

APPEND_WRITE_BYTES_MIN = lib.PL_APPEND_WRITE_BYTES_MIN
# Batches up to this size are encoded in the calling thread's scratch and
# written with one pwrite (pl_appender.scratch); longer ones go through the
# map. Covers the default max_message_bytes (1 MiB); the memory is allocated
# uncleared, so only what a thread's batches touched is resident.
APPEND_SCRATCH_BYTES = 1024 * 1024 + 64 * 1024

# struct-format characters per field of pl_records_shape ("<gap>x<len>s",
# each number < 2**31)
SHAPE_CHARS_PER_FIELD = 2 * 10 + 2


def fetch():
    """This thread's (fields, headers, out, out's bytes, records capacity)
    for FETCH_RECORDS_MAX records."""
    s = getattr(local, "fetch", None)
    if s is None:
        out = ffi.new("pl_fetch_out *")
        assert ffi.sizeof(out[0]) == FETCH_OUT.size
        s = local.fetch = (ffi.new("int64_t[]", 8 * FETCH_RECORDS_MAX),
                           ffi.new("int64_t[]", 4 * HEADERS_PER_RECORD_ROOM
                                   * FETCH_RECORDS_MAX),
                           out, ffi.buffer(out), FETCH_RECORDS_MAX)
    return s


def _new_wait_request():
    """A ``pl_wait_fetch_req`` whose output fields point at the
    :func:`fetch` scratch."""
    fields, hdrs, _, _, cap = fetch()
    r = ffi.new("pl_wait_fetch_req *")
    r.soft_records = FETCH_RECORDS_STEP
    r.fields, r.fields_cap = fields, cap
    r.hdrs, r.hdr_cap = hdrs, HEADERS_PER_RECORD_ROOM * cap
    return r


def wait_request():
    """This thread's ``pl_wait_fetch_req`` (the caller fills in the rest
    per call)."""
    r = getattr(local, "wait", None)
    if r is None:
        r = local.wait = _new_wait_request()
    return r


# A doorbell slot of this process's own that always reads as rung (seq 1,
# awaited as 0): pl_wait_fetch on it decodes at once, touching no shared slot
_RUNG = ffi.new("uint32_t[16]", [1])


def committed_request():
    """This thread's (request, then :func:`fetch`'s tuple) for fetches that
    never wait: a second ``pl_wait_fetch_req`` whose doorbell part is set
    once, to :data:`_RUNG`, no waiting count and no timeout."""
    s = getattr(local, "committed", None)
    if s is None:
        req = _new_wait_request()
        req.slot, req.expected, req.waiting, req.timeout_us = _RUNG, 0, ffi.NULL, -1
        s = local.committed = (req,) + fetch()
    return s


def state():
    """This thread's (int64_t[6], uint64_t *) for pl_state_read."""
    s = getattr(local, "state", None)
    if s is None:
        s = local.state = (ffi.new("int64_t[6]"), ffi.new("uint64_t *"))
    return s


def shape(cap: int):
    """This thread's (char[cap] or larger, size_t *, uint32_t *, its
    capacity) for pl_records_shape; grown to the largest size asked for,
    never cleared (the C code writes what is read back)."""
    s = getattr(local, "shape", None)
    if s is None or s[3] < cap:
        s = local.shape = (raw_alloc("char[]", cap), ffi.new("size_t *"),
                           ffi.new("uint32_t *"), cap)
    return s


def use_append_scratch(nbytes: int) -> None:
    """Give the calling thread an append scratch of ``nbytes`` (replacing
    the one it had). With 0 every batch of this thread goes through the map
    instead of one pwrite; the result on disk is the same bytes."""
    local.append = (raw_alloc("uint8_t[]", max(nbytes, 1)), nbytes)


def append_scratch_bytes() -> int:
    """The size of the calling thread's append scratch (0: none yet)."""
    s = getattr(local, "append", None)
    return 0 if s is None else s[1]


def with_append(a):
    """Point the appender ``a`` at this thread's append scratch and return
    it (the append runs without the GIL: two threads appending to two
    partitions each need their own)."""
    s = getattr(local, "append", None)
    if s is None:
        s = local.append = (raw_alloc("uint8_t[]", APPEND_SCRATCH_BYTES),
                            APPEND_SCRATCH_BYTES)
    a.scratch, a.scratch_cap = s    # (the size it was allocated with)
    return a
