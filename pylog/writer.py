"""The writer of one partition: the append entry points, growth and roll
of the active segment (FORMAT.rst S-3, S-4, I-2, P-2, P-3, P-4); making
the appends durable is its :class:`pylog.appendsync.AppendSync`'s.

The common append (lock, encode into the mapped segment, publish, index
entry, unlock, wake consumers) is one native call through the writer's
appender (``_native.append_*``), a writer's first batch and segment growth
and rolls included. A batch of a page or more is encoded in the thread's
scratch and written with one ``pwrite`` instead (the kernel fills fresh
page-cache pages for a third of what faulting them in through the map
costs); readers see both the same way. When the native path cannot take a
batch (compression, another writer keeps changing the segment) it is
appended under the lock in Python.

A writer that takes the append lock over from a dead holder (P-3) first
undoes what that holder left past the published state: it finishes a roll
it had begun, removes stray segments, cuts index entries past the end and
zero-fills the tail (S-3); the native append refuses to run until then.

Thread safety: every public method is thread-safe. Threads of this process
are serialized by the shared state's writer lock (``SharedState.wlock``),
processes by the partition's append lock (P-3), both held only for the
append itself, not for the fdatasync that follows it.

Durability (G1): a batch is written into the active segment and then
published in the state; once published, a process crash cannot lose it
(the page cache holds it). With ``sync="always"`` an append returns only
after ``fdatasync`` of the segment, shared by concurrent appenders (group
commit, pylog.appendsync). Sealed segments are fdatasync'd at their roll
(S-4).
"""

from __future__ import annotations

import errno
import logging
import os
import weakref

from . import _native, batch, status, warmup
from ._locks import try_acquire
from .appendsync import AppendSync
from .errors import (
    CorruptLogError,
    DiskFullError,
    FileVanishedError,
    LogFailedError,
    LogPermissionError,
    PylogError,
    ReadOnlyFilesystemError,
    TooManyMapsError,
    TooManyOpenFilesError,
    TopicNotFound,
)
from .handles import FD_EXHAUSTED, WRITER_COST, too_many_open_files
from .index import last_entry_position
from .producerappend import ProducerAppends
from .producerstate import PartitionProducers
from .retention import enforce_retention_locked
from .segment import (
    INDEX_INTERVAL_BYTES,
    PREALLOCATE_BYTES,
    PREALLOCATE_BYTES_MIN,
    Segment,
    fsync_dir,
    list_segment_bases,
    open_segment,
    unlink_segment,
)
from .sharedstate import State

_log = logging.getLogger("pylog")

OPEN = "OPEN"        # the partition's state (pylog.partition)

# Writers of this process. In a forked child their maps, locks and lock
# token are the parent's: the child's Log reopens its files on the next
# checked call (Log._check), and this switches off the unchecked fast append
# path (append_one) of the inherited objects so callers take that checked
# path.
_WRITERS: "weakref.WeakSet[Writer]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_WRITERS):
        writer._forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)

# Native append attempts per batch: the first, then after opening or growing
# the segment, then after a roll or another writer's growth; past that the
# slow path takes the batch.
_NATIVE_ATTEMPTS = 3
# errnos of a full disk or quota: the append fails, nothing was published,
# the partition stays usable once space is freed (G8)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class Writer(ProducerAppends):
    """Appends to one partition. ``part`` is the owning Partition: its state
    machine (``status``, ``check``, ``fail``), published state, config,
    metadata and directory identity.

    Thread safety: thread-safe; appends hold ``SharedState.wlock`` and the
    append lock (P-3), never across an fdatasync. Durability: an append is
    durable against a process crash once it returns, and against power
    loss too with sync="always" (group commit); :meth:`flush` makes every
    append of this writer durable in any mode (G1)."""

    def __init__(self, part, shared, *, sync: str, bell_ptr, bell_slot: int,
                 handoff, create: bool, handles=None):
        self._part = part
        self._shared = shared
        self._wlock = shared.wlock
        self.name = part.name
        self.dir = part.dir
        self.sync_mode = sync
        self._sync_always = sync == "always"
        # (doorbell map pointer, slot) of the log (L-3): appends ring it
        self._bell_ptr = bell_ptr
        self._bell_slot = bell_slot
        self._handoff = handoff
        # The native appender (used under self._wlock); it is set up for the
        # active segment's map self._appender_map, and carries the end of
        # the last batch this writer appended (written_*).
        self._appender = _native.appender()
        self._index_warned: str | None = None   # the index whose failure was logged
        self._appender.written_base = self._appender.written_end = -1
        self._appender_map = None
        self._forked = False             # see _after_fork_in_child
        self._active: Segment | None = None
        # the Log's HandleCache (pylog.handles), which may close the active
        # segment while it is idle (_release)
        self._handles = handles
        # durability (G1): group commit, flush; its two methods the append
        # paths call are bound here once (no delegating call per append)
        self._sync = AppendSync(part, shared, self._appender, sync=sync,
                                create=create, handles=handles)
        self._sync_through = self._sync.sync_through
        self._make_dir_durable = self._sync.make_dir_durable
        shared.unmap_hooks.append(self._state_unmapped)
        # the partition's producer state, made on first use
        self._producers: PartitionProducers | None = None
        _WRITERS.add(self)

    @property
    def appender(self):
        return self._appender

    @property
    def active(self) -> Segment | None:
        """The writer's handle of the active segment (None before its first
        append)."""
        return self._active

    def new_partition_files(self) -> None:
        """Recovery made the partition's first segment (see
        :meth:`AppendSync.new_partition_files`)."""
        self._sync.new_partition_files()

    @property
    def _written(self) -> tuple[int, int]:
        """(segment base, end position) of the last batch appended here."""
        return self._appender.written_base, self._appender.written_end

    def _set_active(self, seg: Segment | None) -> None:
        """Make ``seg`` this writer's active segment. Offsets below its base
        are in sealed segments, durable since their roll (S-4). If the
        syncer cannot follow it (out of descriptors), ``seg`` is closed and
        TooManyOpenFilesError raised with nothing changed on disk."""
        if seg is None:
            self._active = None
            self._sync.follow(None)
            return
        try:
            self._sync.follow(seg)
        except BaseException:
            self._active = None
            seg.close()
            raise
        self._active = seg

    def _open_active(self, base: int, *, create: bool = False) -> Segment:
        """Open segment ``base`` for writing, counted in the handle cache."""
        return open_segment(self._handles, self.dir, base, cost=WRITER_COST,
                            release=self._release, create=create, writable=True)

    def _state_unmapped(self) -> bool:
        """The partition's state map is about to be dropped (pylog.handles,
        under _wlock): unless a group commit is in flight (its leader
        writes the durable mark through the appender, P-7), the appender
        lets go of it and is set up again on the next append; True then."""
        if not self._sync.state_unmapped():
            return False
        self._appender_map = None
        return True

    def _release(self, seg: Segment) -> bool:
        """The handle cache's call: close the active segment ``seg`` unless
        an append holds the writer lock; True when closed. With
        sync="always" what was appended is made durable first (an
        appender may be about to wait for it); otherwise the segment's
        path is remembered and :meth:`flush` makes it durable. The syncer
        is told the appended offsets are covered, so a sync in flight
        returns instead of failing on the closed segment."""
        if not try_acquire(self._wlock):
            return False
        try:
            a = self._appender
            if self._active is seg:
                if self._sync_always and not self._sync.sync_before_release():
                    return False       # the append's own sync reports it
                if not self._sync_always and a.written_base == seg.base_offset:
                    self._sync.released_dirty = seg.path
                self._appender_map = None
                self._active = None
                seg.close()
                self._sync.follow(None, max(a.written_next, 0))
            else:
                seg.close()
            return True
        finally:
            self._wlock.release()

    def let_go(self, seg: Segment) -> None:
        """Close ``seg`` once another process rolled past it, as the cache's release."""
        if self._active is seg:
            self._release(seg)

    def append(self, records, *, compression: str | None = None) -> tuple[int, int]:
        """Append one batch; return (base offset, timestamp of the first record).

        ``records`` are validated tuples (timestamp_ms, key, value, headers).
        Durable per the sync mode before returning (G1). Raises LogFailedError
        after an I/O error, which also moves the partition to FAILED.
        """
        if self._part.status is not OPEN:
            self._part.check()
        with self._wlock:
            if self._part.status is not OPEN:
                self._part.check()
            base = None
            if compression is None:
                base = self._append_native(
                    lambda a: _native.append_records(a, records), records)
            if base is None:
                base = self._append_slow(records, compression)
            target = self._appender.written_next
        if self._sync_always:
            self._sync_through(target)
        return base, records[0][0]

    def append_one(self, timestamp_ms: int, key, value, hkey=None, hval=None):
        """Append one record (key/value: bytes or None) with no header, or
        with one when ``hkey`` (UTF-8 bytes) is given (``hval``: bytes);
        return its offset, or None when the caller must use
        :meth:`append` (first append of this writer, the segment must grow
        or roll, the partition is not OPEN). The producer's per-record hot
        path: one native call, no per-call allocation. Durable per the sync
        mode when it returns an offset."""
        with self._wlock:
            a = self._appender_or_none()
            if a is None:
                return None
            # (a null key or value is passed as b"" with length -1)
            if hkey is None:
                rc = _native.append_record(a, timestamp_ms, key or b"",
                                           -1 if key is None else len(key), value or b"",
                                           -1 if value is None else len(value))
            else:
                rc = _native.append_record_h1(
                    a, timestamp_ms, key or b"", -1 if key is None else len(key),
                    value or b"", -1 if value is None else len(value), hkey, len(hkey),
                    hval, len(hval))
            if rc >= 0:
                base = rc                    # the record's offset
            else:
                recs = ((timestamp_ms, key, value,
                         () if hkey is None else ((hkey, hval),)),)
                base = self._append_native(lambda a: _native.append_records(a, recs),
                                           recs, rc)
            if base is None or not self._sync_always:
                return base
            target = a.written_next
        self._sync_through(target)
        return base

    def append_columns(self, timestamp_ms: int, cols):
        """Append ``cols`` (``_native.columns``: records without headers)
        sharing ``timestamp_ms`` (or each with its own: a buffer of int64s),
        uncompressed; return the base offset, or
        None when the caller must use :meth:`append` (as :meth:`append_one`).
        Durable per the sync mode when it returns."""
        if self._part.status is not OPEN:
            self._part.check()
        with self._wlock:
            if self._part.status is not OPEN:
                self._part.check()
            base = self._append_native(
                lambda a: _native.append_columns(a, timestamp_ms, cols), None)
            target = self._appender.written_next
        if base is not None and self._sync_always:
            self._sync_through(target)
        return base

    def _appender_or_none(self):
        """The preamble of the one-record appends (:meth:`append_one`,
        ``append_one_producer``): the appender, ready for the active
        segment; None when the caller must take the general path (in a
        forked child, the partition not OPEN, nothing mapped yet). Marks the
        segment and the state map used, so the handle cache does not drop
        them as idle (pylog.handles). Under _wlock."""
        if self._forked or self._part.status is not OPEN:
            return None
        seg = self._active
        m = self._appender_map
        if m is None or seg is None or seg._wptr is not m:
            return self._appender_ready()
        seg.used = True
        self._shared.used = True
        return self._appender

    def _appender_ready(self):
        """The appender, set up for the active segment's current map; None
        when the slow path must run (nothing mapped yet). Under _wlock."""
        seg = self._active
        if seg is None or self._shared.ptr is None:
            return None
        seg.used = True                  # (pylog.handles: recently used)
        ptr, cap = seg.writer_pointer()
        if ptr is None:
            return None
        if self._appender_map is not ptr:
            shared = self._shared
            _native.appender_setup(
                self._appender, state_p=shared.ptr,
                lock=(shared.lock_identity[0], shared.lock_identity[1], shared.fd),
                seg_p=ptr, seg_cap=cap, seg_base=seg.base_offset, seg_fd=seg.fd,
                index_fds=seg.index_fds(), index_interval=INDEX_INTERVAL_BYTES,
                bell_p=self._bell_ptr, slot=self._bell_slot, handoff=self._handoff)
            self._appender_map = ptr
        return self._appender

    def _append_native(self, call, records, rc: int | None = None):
        """Run ``call(appender)``, one native append, retrying after making
        room: opening this writer's segment when nothing is mapped yet,
        growing it when the batch does not fit, rolling it when the batch
        would pass segment_bytes (``rc``: the result of a first attempt the
        caller already made). Returns the base offset, or None when the slow
        path must run (another writer keeps changing the segment); raises
        for errors. Under _wlock."""
        for attempt in range(_NATIVE_ATTEMPTS):
            if rc is None:
                a = self._appender_ready()
                if a is None:
                    # this writer's first append: open the segment, map it
                    self._make_room(1)
                    a = self._appender_ready()
                    if a is None:
                        return None
                rc = call(a)
            if rc != _native.E_NOSPACE or attempt == _NATIVE_ATTEMPTS - 1:
                break
            self._make_room(self._appender.out.size)
            rc = None
        assert rc is not None           # the last attempt breaks with its result
        return self._appended(rc, records)

    def _make_room(self, size: int) -> None:
        """Make the active segment (opened for this writer if need be) hold
        ``size`` more bytes: grow its preallocation, or roll it first when a
        batch of ``size`` bytes would pass segment_bytes (S-4). Under _wlock;
        takes the append lock. I/O errors as in :meth:`_append_slow`."""
        def make_room():
            self._make_dir_durable()
            st = self._part.state()
            seg = self._writer_segment(st)
            pos = st.active_position
            if pos + size > self._part.config.segment_bytes and pos > 0:
                seg = self._roll(seg, st.next_offset, pos, st.active_max_timestamp,
                                 st.generation, st.log_start_offset)
                pos = 0
            self._grow(seg, pos + size)
            seg.mapped(pos + size)
        self._locked_append_step(make_room)

    def _grow(self, seg: Segment, need: int) -> None:
        """Preallocate the active segment to hold ``need`` bytes, doubling
        from PREALLOCATE_BYTES_MIN in steps of at most PREALLOCATE_BYTES (up
        to segment_bytes), bring the new tail into the page cache ahead of
        the appends (pylog.warmup: mostly in the background), and drop its
        map; under the append lock."""
        cur = seg.file_size()
        if cur < need:       # (another writer may have grown it already)
            grow = min(max(cur, PREALLOCATE_BYTES_MIN), PREALLOCATE_BYTES)
            size = max(need, min(self._part.config.segment_bytes, cur + grow))
            seg.preallocate(size)
            # the new tail's first fault would zero-fill all of it at once
            warmup.warm(seg.fd, cur, size)
        seg.unmap()

    def _appended(self, rc: int, records):
        """The base offset of a native append that returned ``rc``, or None
        when the slow path must run; raises for errors. Under _wlock."""
        a = self._appender
        if rc == 0:
            return a.out.base_offset
        if rc in (_native.APPEND_INDEX_FAILED, _native.E_APPENDED_NO_INDEX):
            where = self._active.index_path if self._active else self.name
            if where != self._index_warned:     # (once per index: not per append)
                self._index_warned = where
                _log.warning("%s: index entry not written (%s); the index is "
                             "derived data and will be rebuilt (I-3); later "
                             "entries it misses are not reported", where,
                             os.strerror(a.out.index_errno))
            return a.out.base_offset
        if rc in (_native.E_NOSPACE, _native.E_STALE):
            return None
        if rc == _native.E_DELETED:
            raise TopicNotFound(f"topic {self._part.topic!r} was deleted")
        if -rc in _DISK_FULL:
            # a batch written with pwrite (pl_appender.scratch) found the
            # disk full: nothing was published, the partition stays usable (G8)
            raise self._disk_full(-rc)
        if status.is_errno(rc):       # an I/O error fails the partition (G8)
            exc = status.error(rc, f"append to {self.name}")
            self._part.fail(exc)
            raise LogFailedError(str(exc)) from exc
        # batch encoding refused the records: a caller bug, not an I/O error
        if rc == _native.E_INVAL and records is not None:
            batch.encode(records, base_offset=0)   # raises the descriptive error
        raise status.error(rc, f"append to {self.name}")

    def _append_slow(self, records, compression):
        """Append under the lock in Python: grows or rolls the segment,
        compresses, and (re)opens the writer's segment."""
        base = self._locked_append_step(lambda: self._append_locked(records, compression))
        self._ring()
        return base

    def _locked_append_step(self, step):
        """Run ``step()`` under the append lock. An I/O error fails the
        partition (LogFailedError), except ENOSPC: nothing was published, so
        the call fails and the partition stays usable once space is freed
        (G8). So does a file the process may not open (LogPermissionError,
        ReadOnlyFilesystemError, raised only by opens: pylog.files): a
        step opens files before it publishes, or, retention's, after a roll
        it completed, so nothing is left half-done, and the partition works
        again once access is granted."""
        self._shared.lock()
        try:
            if self._shared.taken_over():
                self._clean_after_takeover()
            result = step()
        except (OSError, CorruptLogError, FileVanishedError) as exc:
            self._shared.unlock_quietly()
            if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
                raise self._disk_full(exc.errno) from exc
            if isinstance(exc, (TooManyMapsError, LogPermissionError,
                                ReadOnlyFilesystemError)):
                raise              # nothing was published either
            if isinstance(exc, OSError) and exc.errno in FD_EXHAUSTED:
                # nothing was published: the partition stays usable
                if isinstance(exc, TooManyOpenFilesError):
                    raise
                raise too_many_open_files(exc, f"append to {self.name}") from exc
            if isinstance(exc, FileVanishedError) or self._part.check_identity():
                self._part.fail(exc)
                self._part.check()                # L-6: raises FileVanishedError
            self._part.fail(exc)
            raise LogFailedError(f"append to {self.name}: {exc}") from exc
        except BaseException:
            self._shared.unlock_quietly()
            raise
        self._shared.unlock()
        return result

    def _clean_after_takeover(self) -> None:
        """P-3: the append lock was taken over from a holder that died in the
        middle of its work; undo what it left past the published state
        before appending. Under _wlock and the append lock; idempotent (a
        taker that dies here leaves the flag set for the next one).

        * A roll it had begun (S-4) is finished: its next segment file, at
          the published next offset, may exist half made, and the active
          segment may already be truncated to its end (sealed) under maps
          of other writers; publishing the new segment sends every writer
          there (their appends see another base and remap). Any other
          segment file past the active one is removed.
        * Index entries at or past the published end (the slow path writes
          its entry before publishing) and a T-3 entry of the unfinished
          seal are cut; the index position word (I-2) is reset to match.
        * The bytes past the published end are zero-filled again (S-3):
          a torn or unpublished batch would otherwise be garbage after the
          end that ``pylog verify`` reports."""
        st = self._part.state()          # repairs a seqlock left odd (P-2)
        pos = st.active_position
        roll_next = False
        for base in list_segment_bases(self.dir):
            if base <= st.active_base:
                continue
            if base == st.next_offset and pos > 0:
                roll_next = True
            else:
                unlink_segment(self.dir, base)
        seg = self._writer_segment(st)
        idx, tidx = seg.indexes_before(pos)
        if idx != seg.read_index() or tidx != seg.read_timeindex():
            seg.replace_indexes(idx, tidx)
        self._shared.set_index_position(last_entry_position(idx))
        cleaned = seg.zero_tail(pos)
        seg.unmap()                      # the appender maps it afresh
        if roll_next:
            self._roll(seg, st.next_offset, pos, st.active_max_timestamp,
                       st.generation, st.log_start_offset)
        _log.warning("%s: took the append lock over from a dead holder (P-3); "
                     "zeroed %d bytes past the end%s", self.name, cleaned,
                     ", finished its roll" if roll_next else "")
        self._shared.clear_takeover()

    def _disk_full(self, code: int) -> DiskFullError:
        return DiskFullError(f"append to {self.name}: disk full "
                              f"({errno.errorcode[code]}); free space or lower "
                              "retention_bytes")

    def _ring(self) -> None:
        if self._bell_ptr is not None:
            _native.doorbell_ring_ptr(self._bell_ptr, self._bell_slot)

    def _unlock_quietly(self) -> None:
        try:
            self._shared.unlock()
        except OSError:
            pass

    def _writer_segment(self, st: State) -> Segment:
        seg = self._active
        if seg is None or seg.base_offset != st.active_base:
            self._active = None
            if seg is not None:
                seg.close()
            seg = self._open_active(st.active_base)
            self._set_active(seg)
        return seg

    def _append_locked(self, records, compression, fields=batch.NO_PRODUCER):
        # (fields: X-1, the producer appends of pylog.producerappend)
        self._make_dir_durable()
        st = self._part.state()
        seg = self._writer_segment(st)
        pos = st.active_position
        next_offset = st.next_offset
        gen = st.generation
        max_ts_seg = st.active_max_timestamp
        for _ in range(4):
            m = seg.mapped(pos)
            try:
                size = batch.encode_into(m if m is not None else bytearray(0),
                                         pos, records, base_offset=next_offset,
                                         compression=compression, producer=fields)
                break
            except batch.NoSpace as exc:
                need = pos + exc.needed
                if need <= self._part.config.segment_bytes or pos == 0:
                    self._grow(seg, need)
                else:
                    seg = self._roll(seg, next_offset, pos, max_ts_seg, gen,
                                     st.log_start_offset)
                    st = self._part.state()
                    pos, gen, max_ts_seg = 0, st.generation, -1
        else:
            raise AssertionError("batch does not fit in an empty segment")
        n = len(records)
        last_offset = next_offset + n - 1
        batch_max_ts = max(r[0] for r in records) if n > 1 else records[0][0]
        max_ts_seg = max(max_ts_seg, batch_max_ts)
        if seg.index_due(pos, self._shared.index_position()):
            # the position of the last entry is shared by all writers (P-3)
            seg.append_index_entry(last_offset, pos, max_ts_seg)
            self._shared.set_index_position(pos)
        end = pos + size
        self._shared.publish(last_offset + 1, seg.base_offset, end, max_ts_seg, gen,
                      st.log_start_offset)
        self._shared.count_append(n, size)      # P-10 (the native appends count their own)
        a = self._appender
        a.written_base, a.written_end, a.written_next = seg.base_offset, end, last_offset + 1
        return next_offset

    def _roll(self, seg: Segment, next_offset: int, pos: int, max_ts: int,
              gen: int, start: int) -> Segment:
        """Seal the active segment and start a new one at ``next_offset`` (S-4).

        The new segment is created and preallocated first: ENOSPC (the likely
        failure) then leaves the old segment untouched and still active, and
        the half-made new one is removed, so later appends to the old one
        cannot collide with it (G8). A crash before the publish leaves an
        empty new segment that recovery drops (P-4)."""
        self._part.dir_identity.check(f"roll of {self.name}")     # L-6
        new = self._open_active(next_offset, create=True)
        try:
            new.truncate(0)                  # a leftover of a crashed roll
            new.write_indexes([], [])
            new.preallocate(min(self._part.config.segment_bytes, PREALLOCATE_BYTES_MIN))
            self._shared.synced(seg.sync)    # sealed segments are always durable
            seg.truncate(pos)
            self._shared.synced(seg.sync)    # (P-11: counted)
            if max_ts >= 0:                  # T-3: the final max timestamp
                seg.append_timeindex(max_ts, next_offset - 1 - seg.base_offset)
            fsync_dir(self.dir)
        except BaseException:
            new.close()
            new.unlink()
            raise
        self._shared.set_index_position(0)      # I-2
        self._shared.publish(next_offset, next_offset, 0, -1, gen + 1, start)
        self._part.segments.rolled(gen, seg.base_offset, pos, max_ts, next_offset)
        self._part.meta.set_checkpoint(self._part.topic, self._part.index, next_offset, 0,
                                  next_offset)
        seg.close()
        self._set_active(new)
        enforce_retention_locked(self._part)
        return new

    def flush(self, *, checkpoint: bool = False) -> None:
        """Make everything appended so far durable, and advance the recovery
        checkpoint (P-4); see :meth:`AppendSync.flush`."""
        self._part.check()
        with self._wlock:
            active = self._active
            written = self._written
            written_next = self._appender.written_next
        self._sync.flush(active is not None, written, written_next,
                         checkpoint=checkpoint)

    def close(self) -> None:
        """Release the active segment under the writer lock (see
        AppendSync.closing), first cleaning up after a dead holder of the
        append lock (P-3) if free or dead: nothing past the published end."""
        with self._wlock:
            self._appender_map = None
            if self._active is not None:
                self._clean_up_dead_holder()
                self._sync.closing()
                self._active.close()
                self._set_active(None)

    def check_indexes(self) -> None:
        """I-3 for a partition the first opener did not recover (P-9): the
        active segment's indexes, damaged, cut or deleted since the clean
        close, are rebuilt before this writer appends entries to them (an
        entry after a partial one would be misread). Under _wlock and the
        append lock; reads the index files and the segment up to its end."""
        with self._wlock:
            self._shared.lock()
            try:
                st = self._part.state()
                pos = st.active_position
                seg = self._writer_segment(st)
                idx, tidx = seg.indexes_before(pos)
                m = seg.mapped(pos) if pos else None
                # a deleted index file reads as empty, which the checks
                # accept (entries are sparse): it is rebuilt too, or the
                # segment would stay unindexed below the next append
                missing = not (os.path.exists(seg.index_path)
                               and os.path.exists(seg.timeindex_path))
                if m is not None and (
                        missing or seg.index_problem(idx, tidx, m, pos, None) is not None):
                    idx, tidx, _complete = seg.scan_indexes(m, pos, False)
                if missing or idx != seg.read_index() or tidx != seg.read_timeindex():
                    _log.warning("%s: the active segment's indexes did not match "
                                 "it; rebuilt (I-3)", self.name)
                    seg.replace_indexes(idx, tidx)
                    self._shared.set_index_position(last_entry_position(idx))
            finally:
                self._shared.unlock()

    def _clean_up_dead_holder(self) -> None:
        """Under _wlock: take the append lock without waiting (a dead
        holder's is taken over, P-3) and clean up if it was."""
        # (the partition is already marked CLOSED here; a failed one is left
        # to the next opener's recovery)
        if self._part.failed is not None or self._shared.ptr is None:
            return
        try:
            if not self._shared.lock(wait=False):
                return                    # a live holder: it is its business
        except (OSError, PylogError):
            return
        try:
            if self._shared.taken_over():
                self._clean_after_takeover()
        except TopicNotFound:
            pass                          # deleted: nothing to clean
        except (OSError, PylogError) as exc:
            _log.warning("%s: cleaning up after a dead append lock holder "
                         "failed (P-3): %s", self.name, exc)
        finally:
            self._shared.unlock_quietly()
