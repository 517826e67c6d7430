"""What processes sharing a partition meet through: the state seqlock
(FORMAT.rst P-2), the doorbells (L-3), byte-range locks, the partition
append lock and its liveness locks (P-3), and the group-commit syncer (G1,
L-6).

Every native status goes through :func:`pylog.status.check`.

Thread safety: the native primitives are atomic across threads and
processes; the syncer is thread-safe (one per writable partition per
process). The waits release the GIL.
"""

from __future__ import annotations

import errno as _errno
import os as _os
import struct as _struct
import time as _time
from typing import Optional

from . import _format, _scratch
from ._buffers import rbuf as _rbuf
from ._buffers import wbuf as _wbuf
from ._pylog_native import ffi, lib
from .errors import InvalidArgument
from .status import E_BUSY, E_INVAL, check

STATE_SIZE = _format.STATE_SIZE
STATE_MAGIC = _format.STATE_MAGIC
STATE_INDEX_POSITION = _format.STATE_INDEX_POSITION
STATE_TAKEOVER = _format.STATE_TAKEOVER     # P-3: uint32, 1 until cleaned up
DOORBELL_SLOT_SIZE = _format.DOORBELL_SLOT_SIZE
LIVENESS_BASE = _format.LIVENESS_BASE
_NULL = ffi.NULL

# ---------------------------------------------------------------------------
# partition state seqlock (P-2)
# ---------------------------------------------------------------------------


def _state_ptr(p):
    if len(p) < STATE_SIZE:
        raise InvalidArgument(f"map the partition state: the buffer needs {STATE_SIZE} "
                              f"bytes, has {len(p)} (P-2)")
    return p


_ALIGNED8 = "the state buffer must be 8-byte aligned (map partition.state)"


def state_publish(state_buf, next_offset, active_base_offset, active_position,
                  active_max_timestamp, layout_generation, log_start_offset) -> None:
    try:
        vals = ffi.new("int64_t[6]", [next_offset, active_base_offset, active_position,
                                      active_max_timestamp, layout_generation,
                                      log_start_offset])
    except (TypeError, OverflowError) as e:
        raise InvalidArgument(f"publish the partition state: fields must be int64: "
                              f"{e}") from e
    with _wbuf(state_buf) as p:
        check(lib.pl_state_publish(_state_ptr(p), vals), "publish the partition state",
              hint=_ALIGNED8)


def state_read(state_buf):
    """The 6 published fields, or None if a writer died mid-publish (BUSY)."""
    with _rbuf(state_buf) as p:
        return state_read_ptr(_state_ptr(p))


def state_read_ptr(state_p):
    """:func:`state_read` through a pointer from :func:`pointer` (read-only
    is fine): the per-poll path, without pinning the buffer on every call."""
    vals, seq = _scratch.state()
    rc = lib.pl_state_read(state_p, vals, seq)
    if rc == E_BUSY:
        return None
    check(rc, "read the partition state", hint=_ALIGNED8)
    return tuple(vals)


def state_repair(state_buf) -> None:
    with _wbuf(state_buf) as p:
        check(lib.pl_state_repair(_state_ptr(p)), "repair the partition state",
              hint=_ALIGNED8)


def state_index_position(state_buf) -> int:
    """Position of the batch of the active segment's last index entry (I-2),
    kept at byte STATE_INDEX_POSITION of partition.state; lock holders only."""
    return _struct.unpack_from("=q", state_buf, STATE_INDEX_POSITION)[0]


def set_state_index_position(state_buf, position: int) -> None:
    _struct.pack_into("=q", state_buf, STATE_INDEX_POSITION, position)


def count_append(state_p, records: int, nbytes: int) -> None:
    """P-10: one append of ``records`` records in ``nbytes`` bytes, counted
    in the state at ``state_p`` (a writable pointer); for the append lock's
    holder (the native appends count their own)."""
    lib.pl_count_append(state_p, records, nbytes)


def count_fetch(state_p, records: int) -> None:
    """P-10: one fetch that gave a consumer ``records`` records."""
    lib.pl_count_fetch(state_p, records)


def count_fsync(state_p, ns: int) -> None:
    """P-11: one fdatasync of a segment of the partition, ``ns`` long."""
    lib.pl_count_fsync(state_p, ns)


def counters_read(state_p) -> tuple[int, ...]:
    """The P-10 and P-11 counters of the state at ``state_p`` (read-only is
    fine), in pl_counters_read's order (``_format.COUNTER_WORDS`` ints)."""
    out = ffi.new("uint64_t[]", _format.COUNTER_WORDS)
    check(lib.pl_counters_read(state_p, out), "read the partition counters",
          hint=_ALIGNED8)
    return tuple(out)


def state_taken_over(state_buf) -> bool:
    """Was the append lock taken over from a dead holder whose leftovers
    nobody has cleaned up yet (P-3)? Set by pl_plock_acquire; for the lock
    holder."""
    return _struct.unpack_from("=I", state_buf, STATE_TAKEOVER)[0] != 0


def clear_state_takeover(state_buf) -> None:
    """The dead holder's leftovers are cleaned up (P-3); lock holders only."""
    _struct.pack_into("=I", state_buf, STATE_TAKEOVER, 0)


# ---------------------------------------------------------------------------
# doorbell (L-3)
# ---------------------------------------------------------------------------

_ALIGNED4 = "a doorbell slot must be 4-byte aligned (map the doorbell file)"


def _slot(p, slot_index):
    off = slot_index * DOORBELL_SLOT_SIZE
    if slot_index < 0 or off + DOORBELL_SLOT_SIZE > len(p):
        raise InvalidArgument(f"find doorbell slot {slot_index}: outside a "
                              f"{len(p)}-byte buffer")
    return p + off


def doorbell_ring(buf, slot_index: int) -> None:
    with _wbuf(buf) as p:
        check(lib.pl_doorbell_ring(_slot(p, slot_index)), "ring a doorbell",
              hint=_ALIGNED4)


def doorbell_load(buf, slot_index: int) -> int:
    with _rbuf(buf) as p:
        return lib.pl_doorbell_load(_slot(p, slot_index))


def doorbell_wait(buf, slot_index: int, expected: int, timeout_s: Optional[float]) -> bool:
    """Wait until the slot's seq differs from ``expected``; True if it changed.

    ``timeout_s`` None waits forever.  The GIL is released while waiting.
    """
    with _wbuf(buf) as p:
        return doorbell_wait_at(_slot(p, slot_index), expected, timeout_s)


def doorbell_load_at(bell_p, slot_index: int) -> int:
    """:func:`doorbell_load` through a :func:`pointer` to the whole doorbell
    map (the poll path: no buffer pinned per call); ``slot_index`` must be a
    slot of it (pylog.store.topic_slot)."""
    return lib.pl_doorbell_load(bell_p + slot_index * DOORBELL_SLOT_SIZE)


def doorbell_wait_at(slot_p, expected: int, timeout_s: Optional[float]) -> bool:
    """:func:`doorbell_wait` on a slot given as a pointer (from
    :func:`pointer`, plus slot_index * DOORBELL_SLOT_SIZE)."""
    seq = expected & 0xFFFFFFFF
    return waited(lambda us: lib.pl_doorbell_wait(slot_p, seq, us), timeout_s,
                  "wait on a doorbell", _ALIGNED4) == 0


class Watch:
    """Whether anyone waits for the rings of a doorbell slot (given as a
    :func:`pointer`) that :func:`doorbell_watch_at` watches: native words
    (pl_watch_set). While off, the watcher also leaves the slot's waiters
    count, so that a ring costs no futex wake for it."""

    __slots__ = ("word", "_slot", "_on")

    def __init__(self, slot_p) -> None:
        self.word = ffi.new("uint32_t[2]")
        self._slot = slot_p
        self._on = False

    def set(self, on: bool) -> None:
        """Someone waits (``on``) or nobody does; on is in force (a ring
        wakes the watcher) when this returns, so a waiter registers, sets
        it, then re-checks its slot."""
        if on != self._on:
            self._on = on
            check(lib.pl_watch_set(self.word, self._slot, 1 if on else 0),
                  "set a doorbell watch", hint=_ALIGNED4)


def doorbell_watch_at(slot_p, expected: int, watch: Watch, timeout_s: Optional[float]) -> bool:
    """:func:`doorbell_wait_at`, except that rings while ``watch`` is off
    are slept through without returning to the interpreter (so without the
    GIL); True once it rang with ``watch`` on."""
    seq = expected & 0xFFFFFFFF
    word = watch.word
    return waited(lambda us: lib.pl_doorbell_watch(slot_p, seq, word, us), timeout_s,
                  "watch a doorbell", _ALIGNED4) == 0


def doorbell_ring_ptr(bell_p, slot: int) -> None:
    """Ring ``slot`` and slot 0 of a doorbell map given as a :func:`pointer` (L-3)."""
    lib.pl_doorbell_ring(bell_p + slot * DOORBELL_SLOT_SIZE)
    if slot:
        lib.pl_doorbell_ring(bell_p)


def waited(wait, timeout_s: Optional[float], what: str, hint: str) -> int:
    """The non-negative result of ``wait(us)``, a native futex wait given
    its timeout in microseconds (-1: none, for ``timeout_s`` None), called
    again with the time left after EINTR (Python's signal handlers run in
    between); any other status raises as :func:`pylog.status.check` maps it
    (``what``: the wait, ``hint``: what a PL_E_INVAL means here)."""
    deadline = None if timeout_s is None else _time.monotonic() + max(0.0, timeout_s)
    us = -1 if timeout_s is None else int(max(0.0, timeout_s) * 1e6)
    while True:
        rc = wait(us)
        if rc >= 0:
            return rc
        if rc == -_errno.EINTR:
            if deadline is not None:
                us = max(0, int((deadline - _time.monotonic()) * 1e6))
            continue
        check(rc, what, hint=hint if rc == E_INVAL else None)


# ---------------------------------------------------------------------------
# byte-range locks (OFD locks on Linux)
# ---------------------------------------------------------------------------

_LOCK_MODES = {"u": 0, "r": 1, "w": 2}


def lock(fd: int, start: int, length: int, mode: str, wait: bool) -> bool:
    """Lock (``'r'``/``'w'``) or unlock (``'u'``) ``length`` bytes (0 = to EOF) at ``start``.

    Returns False if the range is busy and ``wait`` is false; raises OSError otherwise.
    """
    try:
        m = _LOCK_MODES[mode]
    except KeyError:
        raise InvalidArgument(f"lock a file range: mode must be 'u', 'r' or 'w', "
                              f"got {mode!r}") from None
    if hasattr(fd, "fileno"):
        fd = fd.fileno()
    while True:
        rc = lib.pl_lock(fd, start, length, m, 1 if wait else 0)
        if rc == 0:
            return True
        if rc == -_errno.EINTR:
            continue
        if not wait and rc in (-_errno.EAGAIN, -_errno.EACCES):
            return False
        check(rc, f"lock bytes {start}+{length} of fd {fd} ({mode})")


# ---------------------------------------------------------------------------
# the partition append lock (P-3)
# ---------------------------------------------------------------------------

def new_lock_token() -> int:
    """A random non-zero 31-bit token naming one open Log as a lock holder."""
    return int.from_bytes(_os.urandom(4), "little") % 0x7FFFFFFF + 1


def liveness_lock(live_fd: int, token: int) -> None:
    """Hold the read lock that tells others the Log with ``token`` is alive."""
    check(lib.pl_liveness_lock(live_fd, token), "take the liveness lock of this Log (P-3)",
          hint="the token must be a non-zero 31-bit number")


def plock_acquire(state_p, token: int, live_fd: int, state_fd: int, wait: bool) -> bool:
    """Take a partition's append lock (P-3). Returns False only when busy and
    not waiting. Taking it over from a dead holder counts as taking it."""
    while True:
        rc = lib.pl_plock_acquire(state_p, token, live_fd, state_fd, 1 if wait else 0)
        if rc in (0, 1):
            return True
        if rc == E_BUSY:
            return False
        if rc == -_errno.EINTR:
            continue
        check(rc, "take the partition's append lock (P-3)",
              hint="the state must be mapped, the token non-zero, and this Log "
                   "must not hold the lock already")


def plock_release(state_p, token: int, state_fd: int) -> None:
    check(lib.pl_plock_release(state_p, token, state_fd),
          "release the partition's append lock (P-3)",
          hint="this Log does not hold it: it was taken over after this Log "
               "was thought dead")


# ---------------------------------------------------------------------------
# group commit (G1, L-6)
# ---------------------------------------------------------------------------

def syncer():
    """A group-commit syncer (``pl_syncer``, pylog_native.h), freed with
    the returned object."""
    s = lib.pl_syncer_new()
    if s == _NULL:
        raise MemoryError("pl_syncer_new")
    return ffi.gc(s, lib.pl_syncer_free)


def syncer_set_fd(s, fd: int, durable_next: int, path: str | None = None) -> None:
    """Sync ``fd`` (the new active segment; -1: none) from now on; offsets
    below ``durable_next`` are durable (sealed segments, S-4). With
    ``path``, every sync also checks that the file is still there (L-6:
    E_VANISHED otherwise)."""
    rc = lib.pl_syncer_set_fd(s, fd, durable_next,
                              _os.fsencode(path) if path is not None else _NULL)
    check(rc, "switch group commit to a new segment", path)


#: ``sync_through(syncer, appender, target_next)``: return 0 once the
#: offsets below target_next appended through ``appender`` are durable;
#: -errno of the (sticky) failed fdatasync, PL_E_VANISHED (sticky, L-6),
#: PL_E_NOFD (not sticky: no descriptor for the sync, nothing lost) or
#: PL_E_STALE (closed). Waits without the GIL.
sync_through = lib.pl_sync_through
