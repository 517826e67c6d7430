"""One topic-partition: its segments, its shared state file, appends, reads,
recovery and retention.

Files (FORMAT.rst P-*): ``<topic>-<n>/`` holds the segments and
``partition.state``, a 64-byte seqlocked record mapped by every process that
uses the partition: the committed end (next offset, active segment, byte
position), the layout generation (bumped when segments appear or go) and the
log start offset. A reader learns whether anything is new with one memory
read, no syscall (P-2). The state file is not durable: after the last process
closes or crashes, the next opener rebuilds it by recovery (P-4).

Locks: appends, rolls, retention and recovery hold the partition's append
lock (P-3), a futex word in ``partition.state`` naming the holding Log by a
token whose liveness the kernel tracks (an OFD lock on ``pylog.lock``): free
of syscalls when uncontended, and taken over when its holder died, so a
SIGKILLed writer never wedges the others. Threads of one process are
serialized by a ``threading.Lock`` first. The common append — lock, encode
into the mapped segment, publish, index entry, unlock, wake consumers — is
one native call through the writer's appender (``_native.append_*``),
a writer's first batch and segment growth and rolls included. A batch of a
page or more is encoded in the thread's scratch and written with one
``pwrite`` instead (the kernel fills fresh page-cache pages for a third of
what faulting them in through the map costs); readers see both the same way.

Durability (G1): a batch is written into the active segment and then
published in the state; once published, a process crash cannot lose it (the
page cache holds it). ``sync="always"`` appends return only after
``fdatasync`` of the segment; concurrent appenders share one fdatasync
(group commit, in the native syncer: waiters sleep without the GIL).

Reads: a fetch decodes every uncompressed batch of a segment range in one
native call (``_native.fetch``: framing, CRC and the dense offset sequence
checked batch by batch); a compressed batch is decompressed and decoded on
its own.

State machine: OPEN -> FAILED (an I/O error or corruption; every later call
raises the recorded error until the log is reopened) and OPEN/FAILED ->
CLOSED.

Thread safety: every public method is thread-safe.
"""

from __future__ import annotations

import bisect
import errno
import logging
import mmap
import os
import threading
import time
import weakref
from dataclasses import dataclass
from operator import itemgetter

from . import _native, batch, status
from .config import TopicConfig
from .errors import (CorruptLogError, DiskFullError, FileVanishedError, LogClosed,
                     LogFailedError, LogOSError, OffsetOutOfRange, PylogError,
                     TopicNotFound)
from .files import NotARegularFile, allocate, open_regular, set_aside
from .identity import Identity, unlinked, vanished
from .segment import (INDEX_ENTRY, INDEX_INTERVAL_BYTES, PREALLOCATE_BYTES,
                      PREALLOCATE_BYTES_MIN,
                      TIMEINDEX_ENTRY, Segment, fsync_dir, parse_segment_name)

_log = logging.getLogger("pylog")

STATE_FILE = "partition.state"
STATE_FILE_BYTES = 4096
_DELETED = -1             # P-2: next_offset of a deleted partition

OPEN, FAILED, CLOSED = "OPEN", "FAILED", "CLOSED"

# Writable partitions of this process. In a forked child their maps, locks
# and lock token are the parent's: the child's Log reopens its files on the
# next checked call (Log._check), and this switches off the unchecked fast
# append path (append_one) of the inherited objects so callers take that
# checked path.
_WRITERS: "weakref.WeakSet[Partition]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for part in list(_WRITERS):
        part._forked = True


os.register_at_fork(after_in_child=_after_fork_in_child)
_LIVE_CHECK_S = 1.0   # how often a read-only view looks for a live writer
# Least time between two recovery checkpoints written by flush (P-4); recovery
# rescans what was appended since the last one (a stale checkpoint is safe).
CHECKPOINT_INTERVAL_S = 1.0
# Native append attempts per batch: the first, then after opening or growing
# the segment, then after a roll or another writer's growth; past that the
# slow path takes the batch.
_NATIVE_ATTEMPTS = 3
# errnos of a full disk or quota: the append fails, nothing was published,
# the partition stays usable once space is freed (G8)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class PartitionMeta:
    """What LMDB stores for a partition (M-5): see FORMAT.rst."""
    log_start_offset: int = 0
    checkpoint_base: int = -1       # segment of the recovery checkpoint
    checkpoint_position: int = 0    # bytes before this are durable (P-4)
    checkpoint_next_offset: int = 0


class State(tuple):
    """A consistent snapshot of partition.state (P-2)."""
    __slots__ = ()
    # (itemgetter: read on every fetch, without a Python frame per field)
    next_offset = property(itemgetter(0))
    active_base = property(itemgetter(1))
    active_position = property(itemgetter(2))
    active_max_timestamp = property(itemgetter(3))
    generation = property(itemgetter(4))
    log_start_offset = property(itemgetter(5))


class Cursor:
    """A reader's position in one partition: the next offset to return and,
    when known, the segment and byte position of the batch holding it, and
    that batch's baseOffset (-1 when located through the sparse index)."""
    __slots__ = ("offset", "segment_base", "position", "base")

    def __init__(self, offset: int):
        self.offset = offset
        self.segment_base = -1
        self.position = -1
        self.base = -1


class Partition:
    """See the module docstring."""

    def __init__(self, root: str, topic: str, index: int, config: TopicConfig,
                 meta, *, sync: str = "always", readonly: bool = False,
                 create: bool = False, doorbell=None, lock_identity=None):
        self.topic = topic
        self.index = index
        self.name = f"{topic}-{index}"
        self.dir = os.path.join(root, self.name)
        self.config = config
        self.sync_mode = sync
        self._sync_always = sync == "always"
        self.readonly = readonly
        self._meta = meta
        # (doorbell map, slot) of the log (L-3): appends ring it
        self._bell_ptr = None
        self._bell_slot = 0
        if doorbell is not None and doorbell[0] is not None and not readonly:
            self._bell_ptr = _native.pointer(doorbell[0])
            self._bell_slot = doorbell[1]
        # This process's blocked wait_fetch calls and the appends that wake
        # them (_native.Handoff); not with sync="always", whose append
        # releases the GIL for its fdatasync right after anyway.
        self._handoff = _native.Handoff() \
            if self._bell_ptr is not None and not self._sync_always else None
        self._state_ptr = None
        # The writer's native appender (used under self._wlock); it is set up
        # for the active segment's map self._appender_map, and carries the
        # end of the last batch this writer appended (written_*).
        self._appender = _native.appender()
        self._appender.written_base = self._appender.written_end = -1
        self._appender_map = None
        self._forked = False             # see _after_fork_in_child
        self._next_checkpoint = 0.0      # see flush
        if not readonly:
            _WRITERS.add(self)
        # (token, liveness fd) naming the owning Log in the append lock (P-3)
        if lock_identity is None and not readonly:
            raise ValueError("a writable Partition needs the Log's lock identity")
        self._lock_identity = lock_identity
        self._dir_durable = not create    # see _make_dir_durable
        self._status = OPEN
        self._failure: BaseException | None = None
        self._wlock = threading.Lock()      # writers of this process
        self._lock_owner: int | None = None  # thread holding the append lock
        self._rlock = threading.Lock()      # reader segment cache
        # group commit (G1): the native syncer of this writer's appends
        self._syncer = None if readonly else _native.syncer()
        self._active: Segment | None = None  # writer's handle
        self._readers: dict[int, Segment] = {}
        self._row_builds: dict = {}      # fetch's row options per row_type
        self._reader_sizes: dict[int, int] = {}
        self._bases: list[int] = []
        self._bases_gen = -1
        self._memory_state: State | None = None   # readonly view, no writer
        self._next_live_check = 0.0
        if create and not readonly:
            os.makedirs(self.dir, mode=0o755, exist_ok=True)
        elif not os.path.isdir(self.dir):
            raise CorruptLogError("partition directory is missing", self.dir)
        if os.path.islink(self.dir):
            raise CorruptLogError("partition directory is a symlink; refusing "
                                  "to follow it", self.dir)
        self._dir_identity = Identity(self.dir, "partition directory")   # L-6
        state_path = os.path.join(self.dir, STATE_FILE)
        flags = os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT
        try:
            self._state_fd = open_regular(state_path, flags, what="partition state file")
        except FileNotFoundError:
            self._state_fd = -1
        except NotARegularFile as exc:
            # rebuilt by recovery (P-4) like a missing one; a writer puts a
            # regular file in its place
            if readonly:
                self._state_fd = -1
            else:
                _log.warning("%s; renamed to %s", exc, set_aside(state_path))
                self._state_fd = open_regular(state_path, flags, what="partition state file")
        self._state_map = None
        self._state_rptr = None
        if self._state_fd >= 0:
            if not readonly:
                # blocks first, map second: a sparse page touched through
                # the map on a full disk is SIGBUS, this is ENOSPC
                try:
                    allocate(self._state_fd, STATE_FILE_BYTES)
                except BaseException:
                    os.close(self._state_fd)
                    raise
            if os.fstat(self._state_fd).st_size >= STATE_FILE_BYTES:
                prot = mmap.PROT_READ | (0 if readonly else mmap.PROT_WRITE)
                self._state_map = mmap.mmap(self._state_fd, STATE_FILE_BYTES,
                                            mmap.MAP_SHARED, prot)
                if not readonly:
                    self._state_ptr = _native.pointer(self._state_map)
                self._state_rptr = self._state_ptr or _native.pointer(
                    self._state_map, writable=False)

    # -- state machine -----------------------------------------------------
    def _check(self) -> None:
        if self._status is OPEN:
            return
        if self._status is CLOSED:
            raise LogClosed(f"partition {self.name} is closed")
        cls = FileVanishedError if isinstance(self._failure, FileVanishedError) \
            else LogFailedError
        raise cls(
            f"partition {self.name} failed earlier and refuses further use "
            f"until the log is reopened: {self._failure}") from self._failure

    def _fail(self, exc: BaseException) -> None:
        if self._status is OPEN:
            self._status = FAILED
            self._failure = exc
            _log.error("partition %s failed: %s", self.name, exc)

    @property
    def closed(self) -> bool:
        return self._status is CLOSED

    @property
    def failed(self) -> BaseException | None:
        return self._failure

    # -- shared state --------------------------------------------------------
    def state(self) -> State:
        """The committed end of the partition, as all processes see it."""
        if self._memory_state is not None:
            if time.monotonic() < self._next_live_check or not self._writer_took_over():
                return self._memory_state
            self._memory_state = None
        ptr = self._state_rptr       # (close() drops it: keep ours for the call)
        if ptr is None:
            self._check()
            raise CorruptLogError("partition state is missing", self.dir)
        vals = _native.state_read_ptr(ptr)
        if vals is None:
            # A writer died in the middle of publishing: repair under its
            # (now released) lock.
            if self.readonly:
                raise CorruptLogError("partition state is being rewritten by "
                                      "a writer that died", self.dir)
            if self._lock_owner == threading.get_ident():
                # this thread holds the lock (in an append): the odd sequence
                # is a dead process's
                _native.state_repair(self._state_map)
                vals = _native.state_read(self._state_map)
            else:
                # The OFD lock belongs to the file description, which all our
                # threads share: taking it while another of our threads holds
                # it would "succeed" and our unlock would drop theirs. So
                # queue behind our own writers first.
                with self._wlock:
                    self._lock()
                    try:
                        _native.state_repair(self._state_map)
                        vals = _native.state_read(self._state_map)
                    finally:
                        self._unlock()
        st = State(vals)
        if st.next_offset == _DELETED:
            raise TopicNotFound(f"topic {self.topic!r} was deleted")
        return st

    def _writer_took_over(self) -> bool:
        """Read-only view: has a writer opened the log and republished the
        state since the view was computed? Checked at most every
        _LIVE_CHECK_S."""
        self._next_live_check = time.monotonic() + _LIVE_CHECK_S
        if self._state_map is None or self._state_map[:4] != b"PLST":
            return False
        vals = _native.state_read(self._state_map)
        return vals is not None and vals[4] > self._memory_state.generation

    def initialized(self) -> bool:
        return (self._state_map is not None
                and _native.state_read(self._state_map) is not None
                and self._state_map[:4] == b"PLST")

    def _publish(self, next_offset, base, pos, max_ts, gen, start) -> None:
        _native.state_publish(self._state_map, next_offset, base, pos, max_ts,
                              gen, start)

    def _lock(self, wait: bool = True) -> bool:
        """Take the append lock (P-3); the caller holds ``self._wlock``.
        Returns False only when ``wait`` is false and the lock is busy."""
        token, live_fd = self._lock_identity
        if not _native.plock_acquire(self._state_ptr, token, live_fd,
                                     self._state_fd, wait):
            return False
        self._lock_owner = threading.get_ident()
        return True

    def _unlock(self) -> None:
        self._lock_owner = None
        _native.plock_release(self._state_ptr, self._lock_identity[0], self._state_fd)

    # -- segments --------------------------------------------------------------
    def _list_bases(self) -> list[int]:
        bases = []
        for name in os.listdir(self.dir):
            b = parse_segment_name(name)
            if b is not None:
                bases.append(b)
        bases.sort()
        return bases

    def _segment_bases(self, st: State) -> list[int]:
        if self._bases_gen != st.generation or not self._bases:
            bases = [b for b in self._list_bases()
                     if st.log_start_offset - 1 < b <= st.active_base
                     or b == st.active_base]
            # a segment wholly below log start is waiting for deletion (P-5)
            keep = []
            for i, b in enumerate(bases):
                nxt = bases[i + 1] if i + 1 < len(bases) else None
                if nxt is not None and nxt <= st.log_start_offset:
                    continue
                keep.append(b)
            if not keep or keep[-1] != st.active_base:
                allb = self._list_bases()
                keep = [b for b in allb if b <= st.active_base]
            self._bases = keep
            self._bases_gen = st.generation
            for b in list(self._readers):
                # gone, or made again under the same name (a recovery drops
                # an empty segment of a crashed roll; the next roll may
                # create the same base): a map of the old file reads zeros
                if b not in keep or self._readers[b].replaced():
                    self._readers.pop(b).close()
                    self._reader_sizes.pop(b, None)
        return self._bases

    def _reader(self, base: int) -> Segment:
        seg = self._readers.get(base)
        if seg is None:
            if len(self._readers) >= 4:   # G7: a few maps per partition
                old_base = min(self._readers, key=lambda b: b == base)
                self._readers.pop(old_base).close()
                self._reader_sizes.pop(old_base, None)
            try:
                seg = Segment(self.dir, base)
            except FileNotFoundError:
                raise OffsetOutOfRange(
                    f"segment {base} of {self.name} was deleted by "
                    "retention while being read") from None
            except OSError as exc:
                if isinstance(exc, PylogError):
                    raise
                # EACCES on another user's segment is not damage
                raise LogOSError.from_os_error(
                    exc, f"read segment {base} of {self.name}",
                    "a reader needs read access to every file of the log: run "
                    "as its owner or have them grant read access") from None
            self._readers[base] = seg
        return seg

    def _segment_end(self, seg: Segment, st: State) -> int:
        if seg.base_offset == st.active_base:
            return st.active_position
        size = self._reader_sizes.get(seg.base_offset)
        if size is None:
            size = self._reader_sizes[seg.base_offset] = seg.file_size()
        return size

    @staticmethod
    def _sealed_last_offset(bases: list[int], base: int, st: State) -> int | None:
        """Last offset of sealed segment ``base`` (None for the active one)."""
        if base == st.active_base:
            return None
        i = bisect.bisect_right(bases, base)
        return bases[i] - 1 if i < len(bases) else None

    def _indexes(self, seg: Segment, end: int, last_offset: int | None, *,
                 locked: bool = False) -> tuple[bytes, bytes]:
        """``seg``'s (.index, .timeindex), checked before use and rebuilt from
        the .log when missing or damaged (I-3); rebuilt files are written back
        when this process may write. ``last_offset`` is None for the active
        segment, whose entries past ``end`` (published after the caller's
        state snapshot) are ignored. ``locked``: the caller holds the append
        lock."""
        if last_offset is not None and seg.index_cache is not None:
            return seg.index_cache
        if last_offset is None:
            idx, tidx = seg.indexes_before(end)
        else:
            idx, tidx = seg.read_index(), seg.read_timeindex()
        m = seg.mapped(end) if end else None
        problem = seg.index_problem(idx, tidx, m, end, last_offset)
        if problem is not None:
            _log.warning("%s: %s; rebuilding the indexes (I-3)", seg.path, problem)
            idx, tidx, complete = seg.scan_indexes(m, end, last_offset is not None)
            if complete and not self.readonly:
                self._write_back_indexes(seg, end, last_offset, idx, tidx, locked)
        if last_offset is not None:
            seg.index_cache = (idx, tidx)
        return idx, tidx

    def _write_back_indexes(self, seg, end, last_offset, idx, tidx, locked) -> None:
        """Replace damaged index files under the append lock: never wait for
        it (a reader must not stall behind a writer; the next reader retries),
        and for the active segment only if nothing was appended meanwhile."""
        if not locked:
            if not self._wlock.acquire(blocking=False):
                return
            try:
                if not self._lock(wait=False):
                    return
                try:
                    self._write_back_indexes(seg, end, last_offset, idx, tidx, True)
                finally:
                    self._unlock()
            finally:
                self._wlock.release()
            return
        if not os.path.exists(seg.path):       # deleted by retention meanwhile
            return
        if last_offset is None:
            st = self.state()
            if st.active_base != seg.base_offset or st.active_position != end:
                return
            _native.set_state_index_position(self._state_map, _last_entry_position(idx))
        try:
            seg.replace_indexes(idx, tidx)
        except OSError as exc:
            # best effort: indexes are derived data (I-3); the reader already
            # has the rebuilt entries, and the next reader retries the write
            _log.warning("%s: rebuilt index not written back: %s", seg.index_path, exc)

    # -- recovery --------------------------------------------------------------
    def recover(self) -> int:
        """Rebuild the shared state from the segments (P-4); return bytes cut.

        Run by the first process to open the log (nobody else has it open) and
        for a partition whose state was never initialised. Scans from the
        recovery checkpoint to the last whole batch, truncates a torn tail,
        rebuilds the tail of the indexes. Mid-log damage (a bad batch followed
        by valid ones, G4) puts the partition in FAILED with CorruptLogError.
        """
        if self.readonly:
            # A view computed in memory, the files untouched; damage fails
            # this partition only, so inspection of the rest goes on.
            self._memory_state = None
            try:
                st, cut = self._recover_scan(write=False)
            except CorruptLogError as exc:
                self._fail(exc)
                return 0
            self._memory_state = st
            self._next_live_check = time.monotonic() + _LIVE_CHECK_S
            return cut
        with self._wlock:
            self._lock()
            try:
                st, cut = self._recover_scan(write=True)
                return cut
            except CorruptLogError as exc:
                self._fail(exc)
                return 0
            finally:
                self._unlock()

    def _recover_scan(self, write: bool):
        pm: PartitionMeta = self._meta.partition_meta(self.topic, self.index)
        start = pm.log_start_offset
        bases = self._list_bases()
        gen = 1
        if self._state_map is not None and self._state_map[:4] == b"PLST":
            vals = _native.state_read(self._state_map)
            if vals is not None:
                # a read-only view keeps the file's generation, so that a
                # writer's recovery (which bumps it) is noticed by state()
                gen = vals[4] + (1 if write else 0)
        # P-5: segments wholly below the log start offset are leftovers of an
        # interrupted retention pass.
        while len(bases) > 1 and bases[1] <= start:
            if write:
                _unlink_segment(self.dir, bases[0])
            bases.pop(0)
        if not bases:
            if write:
                seg = Segment(self.dir, start, create=True, writable=True)
                seg.write_indexes([], [])
                seg.close()
                # the directory entries become durable before the first
                # durable append (_make_dir_durable), not here: creating a
                # topic of 1000 partitions must not cost 1000 fsyncs
                self._dir_durable = False
            st = State((start, start, 0, -1, gen, start))
            if write:
                self._publish(*st)
            return st, 0
        if bases[0] > start:
            start = bases[0]   # retention metadata lagged behind the files
        if len(bases) > 1 and pm.checkpoint_base != bases[-1] and \
                self._segment_is_empty(bases[-1]):
            # A roll publishes the new segment and then checkpoints it, before
            # any batch goes in: an empty last segment the checkpoint does not
            # name was made by a roll that crashed (or whose checkpoint write
            # failed). Others may have appended to the previous segment past
            # its base since, so it goes, and the previous one is active again.
            _log.warning("%s: dropping the empty segment %d left by an "
                         "interrupted roll", self.dir, bases[-1])
            if write:
                _unlink_segment(self.dir, bases[-1])
            bases.pop()
        # Scan from the checkpoint's segment (P-4). Sealed segments were
        # fdatasync'd when they rolled, so a missing checkpoint segment means
        # start at the first segment after it.
        first = max(0, bisect.bisect_right(bases, pm.checkpoint_base) - 1)
        ck_base = bases[first]
        cut = 0
        next_offset = ck_base
        end = 0
        max_ts = -1
        for i in range(first, len(bases)):
            base = bases[i]
            last = i == len(bases) - 1
            seg = Segment(self.dir, base, writable=write)
            try:
                size = seg.file_size()
                m = seg.mapped(size) if size else None
                if base != ck_base and base != next_offset:
                    raise CorruptLogError(
                        f"segment starts at offset {base} but the previous "
                        f"one ends at {next_offset}", seg.path, 0)
                pos0, expected, idx, tidx, ts0, last_entry = 0, base, b"", b"", -1, 0
                # The checkpoint's position belongs to its own segment only;
                # a non-last segment (crash during a roll) is scanned whole so
                # that its T-3 entry is right.
                if last and base == pm.checkpoint_base and \
                        0 < pm.checkpoint_position <= size:
                    idx, tidx = seg.indexes_before(pm.checkpoint_position)
                    problem = seg.index_problem(idx, tidx, m,
                                                pm.checkpoint_position, None)
                    if problem is None:
                        pos0 = pm.checkpoint_position
                        expected = pm.checkpoint_next_offset
                        if idx:
                            last_entry = INDEX_ENTRY.unpack_from(idx, len(idx) - 8)[1]
                            ts0 = TIMEINDEX_ENTRY.unpack_from(tidx, len(tidx) - 12)[0]
                        # the segment's max timestamp: the last entry's, and
                        # the few batches after it (fewer than I-2's interval)
                        ts0 = max(ts0, self._headers_max_timestamp(
                            m, seg, last_entry, pos0))
                    else:
                        _log.warning("%s: %s; rebuilding the indexes (I-3)",
                                     seg.path, problem)
                        idx = tidx = b""
                r = _native.scan_segment(
                    m if m is not None else b"", pos0, size,
                    expected_offset=expected, segment_base_offset=base,
                    index_interval_bytes=INDEX_INTERVAL_BYTES,
                    bytes_since_last_entry=pos0 - last_entry, max_timestamp=ts0)
                if r.error_position is None and last and r.end_position < size \
                        and self._valid_batch_after(m, r.end_position, r.next_offset,
                                                    size):
                    # the scan stops at a zero batchLength (the preallocated
                    # tail); one zeroed by damage must not hide what follows
                    raise CorruptLogError(
                        "batchLength is 0 but valid batches follow",
                        seg.path, r.end_position)
                if r.error_position is not None:
                    if r.continues_after_error or not last or \
                            self._valid_batch_after(m, r.error_position,
                                                    r.next_offset, size):
                        raise CorruptLogError(r.error_reason, seg.path,
                                              r.error_position)
                    cut = size - r.end_position
                    _log.warning("%s: torn tail after a crash: cut %d bytes at "
                                 "position %d (%s)", seg.path, cut,
                                 r.end_position, r.error_reason)
                next_offset = r.next_offset if r.batch_count else expected
                end = r.end_position
                max_ts = r.max_timestamp
                if write:
                    seg.unmap()
                    idx += b"".join(INDEX_ENTRY.pack(*e) for e in r.index_entries)
                    tidx += b"".join(TIMEINDEX_ENTRY.pack(*e)
                                     for e in r.timeindex_entries)
                    if not last and next_offset > base:   # T-3
                        tidx += TIMEINDEX_ENTRY.pack(max_ts, next_offset - 1 - base)
                    try:
                        seg.replace_indexes(idx, tidx)
                    except OSError as exc:
                        # derived data (I-3): a full disk must not keep the
                        # log from opening; a reader rebuilds what is torn
                        _log.warning("%s: recovered index not written: %s",
                                     seg.index_path, exc)
                    if last:
                        _native.set_state_index_position(
                            self._state_map, _last_entry_position(idx))
                    if last and size > end:
                        seg.truncate(end)
            finally:
                seg.close()
        st = State((next_offset, bases[-1], end, max_ts, gen, start))
        if write:
            self._publish(*st)
            if start != pm.log_start_offset:
                self._meta.set_log_start(self.topic, self.index, start)
        return st, cut

    def _segment_is_empty(self, base: int) -> bool:
        """True if segment ``base`` holds no batch: shorter than a batch
        length field, or a zero batchLength at position 0 (preallocated)."""
        path = os.path.join(self.dir, f"{base:020d}.log")
        try:
            # P-1: never follows a symlink, never blocks on a FIFO
            fd = open_regular(path, os.O_RDONLY, what="segment file")
        except FileNotFoundError:
            return True
        try:
            head = os.pread(fd, 12, 0)
        finally:
            os.close(fd)
        return len(head) < 12 or head[8:12] == b"\0\0\0\0"

    @staticmethod
    def _headers_max_timestamp(m, seg: Segment, pos: int, end: int) -> int:
        """Max timestamp of the batches in ``[pos, end)``, headers only."""
        max_ts = -1
        while pos < end:
            try:
                h = batch.read_header(m, pos, end)
            except CorruptLogError as exc:
                raise exc.with_path(seg.path) from None
            max_ts = max(max_ts, h.max_timestamp)
            pos += h.size
        return max_ts

    @staticmethod
    def _valid_batch_after(m, bad_pos: int, next_offset: int, size: int) -> bool:
        """G4: is there a whole, valid batch with an offset at or after
        ``next_offset`` anywhere after ``bad_pos``? Then the damage there is
        mid-log, not a torn tail, even when the bad batch's length field is
        itself damaged (which hides where the next batch starts from the
        native scan). A torn tail is a prefix of one batch followed by zeros,
        so it never has one.

        Candidates are found at C speed by the bytes every pylog batch has at
        position 12: partitionLeaderEpoch 0 and magic 2 (B-2, B-3)."""
        if m is None:
            return False
        marker = b"\x00\x00\x00\x00\x02"
        pos = bad_pos + 1
        while True:
            hit = m.find(marker, pos + 12, size)
            if hit < 0:
                return False
            cand = hit - 12
            try:
                h = _native.read_batch_header(m, cand, size)
            except CorruptLogError:
                h = None
            if h is not None and h.crc_valid and h.base_offset >= next_offset \
                    and h.records_count > 0:
                return True
            pos = cand + 1

    # -- appends -----------------------------------------------------------------
    @property
    def _written(self) -> tuple[int, int]:
        """(segment base, end position) of the last batch appended here."""
        return self._appender.written_base, self._appender.written_end

    def _set_active(self, seg: Segment | None) -> None:
        """Make ``seg`` this writer's active segment. Offsets below its base
        are in sealed segments, durable since their roll (S-4)."""
        self._active = seg
        _native.syncer_set_fd(self._syncer, seg.fd if seg is not None else -1,
                              seg.base_offset if seg is not None else 0,
                              seg.path if seg is not None else None)

    def append(self, records, *, compression: str | None = None) -> tuple[int, int]:
        """Append one batch; return (base offset, timestamp of the first record).

        ``records`` are validated tuples (timestamp_ms, key, value, headers).
        Durable per the sync mode before returning (G1). Raises LogFailedError
        after an I/O error, which also moves the partition to FAILED.
        """
        if self._status is not OPEN:
            self._check()
        with self._wlock:
            if self._status is not OPEN:
                self._check()
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

    def append_one(self, timestamp_ms: int, key, value):
        """Append one record without headers (key/value: bytes or None);
        return its offset, or None when the caller must use :meth:`append`
        (first append of this writer, the segment must grow or roll, the
        partition is not OPEN). The producer's per-record hot path: one
        native call, no per-call allocation. Durable per the sync mode when
        it returns an offset."""
        with self._wlock:
            if self._forked or self._status is not OPEN:
                return None
            seg = self._active
            m = self._appender_map
            if (m is None or seg is None or seg._wptr is not m) \
                    and self._appender_ready() is None:
                return None
            a = self._appender
            # (a null key or value is passed as b"" with length -1)
            rc = _native.append_record(a, timestamp_ms, key or b"",
                                       -1 if key is None else len(key), value or b"",
                                       -1 if value is None else len(value))
            if rc >= 0:
                base = rc                    # the record's offset
            else:
                recs = ((timestamp_ms, key, value, ()),)
                base = self._append_native(lambda a: _native.append_records(a, recs),
                                           recs, rc)
            if base is None or not self._sync_always:
                return base
            target = a.written_next
        self._sync_through(target)
        return base

    def append_columns(self, timestamp_ms: int, cols):
        """Append ``cols`` (``_native.columns``: records without headers)
        sharing ``timestamp_ms``, uncompressed; return the base offset, or
        None when the caller must use :meth:`append` (as :meth:`append_one`).
        Durable per the sync mode when it returns."""
        if self._status is not OPEN:
            self._check()
        with self._wlock:
            if self._status is not OPEN:
                self._check()
            base = self._append_native(
                lambda a: _native.append_columns(a, timestamp_ms, cols), None)
            target = self._appender.written_next
        if base is not None and self._sync_always:
            self._sync_through(target)
        return base

    def _appender_ready(self):
        """The appender, set up for the active segment's current map; None
        when the slow path must run (nothing mapped yet). Under _wlock."""
        seg = self._active
        if seg is None or self._state_ptr is None:
            return None
        ptr, cap = seg.writer_pointer()
        if ptr is None:
            return None
        if self._appender_map is not ptr:
            _native.appender_setup(
                self._appender, state_p=self._state_ptr,
                lock=(self._lock_identity[0], self._lock_identity[1], self._state_fd),
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
        return self._appended(rc, records)

    def _make_room(self, size: int) -> None:
        """Make the active segment (opened for this writer if need be) hold
        ``size`` more bytes: grow its preallocation, or roll it first when a
        batch of ``size`` bytes would pass segment_bytes (S-4). Under _wlock;
        takes the append lock. I/O errors as in :meth:`_append_slow`."""
        def make_room():
            self._make_dir_durable()
            st = self.state()
            seg = self._writer_segment(st)
            pos = st.active_position
            if pos + size > self.config.segment_bytes and pos > 0:
                seg = self._roll(seg, st.next_offset, pos, st.active_max_timestamp,
                                 st.generation, st.log_start_offset)
                pos = 0
            self._grow(seg, pos + size)
            seg.mapped(pos + size)
        self._locked_append_step(make_room)

    def _grow(self, seg: Segment, need: int) -> None:
        """Preallocate the active segment to hold ``need`` bytes, doubling
        from PREALLOCATE_BYTES_MIN in steps of at most PREALLOCATE_BYTES (up
        to segment_bytes), and drop its map; under the append lock."""
        cur = seg.file_size()
        if cur < need:       # (another writer may have grown it already)
            grow = min(max(cur, PREALLOCATE_BYTES_MIN), PREALLOCATE_BYTES)
            seg.preallocate(max(need, min(self.config.segment_bytes, cur + grow)))
        seg.unmap()

    def _appended(self, rc: int, records):
        """The base offset of a native append that returned ``rc``, or None
        when the slow path must run; raises for errors. Under _wlock."""
        a = self._appender
        if rc == 0:
            return a.out.base_offset
        if rc in (_native.APPEND_INDEX_FAILED, _native.E_APPENDED_NO_INDEX):
            _log.warning("%s: index entry not written (%s); the index is "
                         "derived data and will be rebuilt (I-3)", self._active.index_path,
                         os.strerror(a.out.index_errno))
            return a.out.base_offset
        if rc in (_native.E_NOSPACE, _native.E_STALE):
            return None
        if rc == _native.E_DELETED:
            raise TopicNotFound(f"topic {self.topic!r} was deleted")
        if -rc in _DISK_FULL:
            # a batch written with pwrite (pl_appender.scratch) found the
            # disk full: nothing was published, the partition stays usable (G8)
            raise self._disk_full(-rc)
        if status.is_errno(rc):       # an I/O error fails the partition (G8)
            exc = status.error(rc, f"append to {self.name}")
            self._fail(exc)
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
        (G8)."""
        self._lock()
        try:
            result = step()
        except (OSError, CorruptLogError, FileVanishedError) as exc:
            self._unlock_quietly()
            if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
                raise self._disk_full(exc.errno) from exc
            if isinstance(exc, FileVanishedError) or self.check_identity():
                self._fail(exc)
                self._check()                # L-6: raises FileVanishedError
            self._fail(exc)
            raise LogFailedError(f"append to {self.name}: {exc}") from exc
        except BaseException:
            self._unlock_quietly()
            raise
        self._unlock()
        return result

    def _disk_full(self, code: int) -> DiskFullError:
        return DiskFullError(f"append to {self.name}: disk full "
                              f"({errno.errorcode[code]}); free space or lower "
                              "retention_bytes")

    def _ring(self) -> None:
        if self._bell_ptr is not None:
            _native.doorbell_ring_ptr(self._bell_ptr, self._bell_slot)

    def _unlock_quietly(self) -> None:
        try:
            self._unlock()
        except OSError:
            pass

    def _writer_segment(self, st: State) -> Segment:
        seg = self._active
        if seg is None or seg.base_offset != st.active_base:
            if seg is not None:
                seg.close()
            seg = Segment(self.dir, st.active_base, writable=True)
            self._set_active(seg)
        return seg

    def _make_dir_durable(self) -> None:
        """fsync the partition directory and its parent once, before the
        first append this process makes durable (G1 in sync="always")."""
        if not self._dir_durable and self.sync_mode == "always":
            fsync_dir(self.dir)
            fsync_dir(os.path.dirname(self.dir))
        self._dir_durable = True

    def _append_locked(self, records, compression):
        self._make_dir_durable()
        st = self.state()
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
                                         compression=compression)
                break
            except batch.NoSpace as exc:
                need = pos + exc.needed
                if need <= self.config.segment_bytes or pos == 0:
                    self._grow(seg, need)
                else:
                    seg = self._roll(seg, next_offset, pos, max_ts_seg, gen,
                                     st.log_start_offset)
                    st = self.state()
                    pos, gen, max_ts_seg = 0, st.generation, -1
        else:
            raise AssertionError("batch does not fit in an empty segment")
        n = len(records)
        last_offset = next_offset + n - 1
        batch_max_ts = max(r[0] for r in records) if n > 1 else records[0][0]
        max_ts_seg = max(max_ts_seg, batch_max_ts)
        if pos - _native.state_index_position(self._state_map) >= INDEX_INTERVAL_BYTES:
            # I-2; the position of the last entry is shared by all writers
            os.write(seg.index_fds()[0], INDEX_ENTRY.pack(last_offset - seg.base_offset, pos))
            os.write(seg.index_fds()[1], TIMEINDEX_ENTRY.pack(
                max_ts_seg, last_offset - seg.base_offset))
            _native.set_state_index_position(self._state_map, pos)
        end = pos + size
        self._publish(last_offset + 1, seg.base_offset, end, max_ts_seg, gen,
                      st.log_start_offset)
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
        self._dir_identity.check(f"roll of {self.name}")     # L-6
        new = Segment(self.dir, next_offset, create=True, writable=True)
        try:
            new.truncate(0)                  # a leftover of a crashed roll
            new.write_indexes([], [])
            new.preallocate(min(self.config.segment_bytes, PREALLOCATE_BYTES_MIN))
            seg.sync()                       # sealed segments are always durable
            seg.truncate(pos)
            seg.sync()
            if max_ts >= 0:                  # T-3: the final max timestamp
                seg.append_timeindex(max_ts, next_offset - 1 - seg.base_offset)
            fsync_dir(self.dir)
        except BaseException:
            new.close()
            new.unlink()
            raise
        _native.set_state_index_position(self._state_map, 0)      # I-2
        self._publish(next_offset, next_offset, 0, -1, gen + 1, start)
        self._meta.set_checkpoint(self.topic, self.index, next_offset, 0,
                                  next_offset)
        seg.close()
        self._set_active(new)
        self._enforce_retention_locked()
        return new

    # -- durability ----------------------------------------------------------------
    def _sync_through(self, target_next: int) -> None:
        """Group commit: return once the offsets below ``target_next`` that
        this writer appended are durable. Concurrent callers share
        fdatasyncs: one leads, the others wait in the native syncer without
        the GIL (pl_sync_through), and one sync covers every append made
        before it began. Raises LogFailedError (and fails the partition)
        when fdatasync fails; every later call then fails too."""
        rc = _native.sync_through(self._syncer, self._appender, target_next)
        if rc == 0:
            return
        if rc == _native.E_STALE:            # closed under us
            self._check()
            raise LogClosed(f"partition {self.name} is closed")
        if rc == _native.E_VANISHED:         # L-6
            self.check_identity(f"the segment file of {self.name} was deleted")
            self._check()
        if rc == _native.E_NOFD:             # not sticky, as in C: nothing lost
            raise status.error(rc, f"fdatasync of {self.name}")
        if status.is_errno(rc):
            exc = OSError(-rc, os.strerror(-rc))
            self._fail(exc)
            raise LogFailedError(
                f"fdatasync of {self.name}: {exc.strerror} (errno {exc.errno}); "
                "records appended since the last successful sync may be "
                "lost") from exc
        self._check()
        raise status.error(rc, f"fdatasync of {self.name}")

    def flush(self, *, checkpoint: bool = False) -> None:
        """Make everything appended so far durable, and advance the recovery
        checkpoint (P-4) so the next recovery scans less — at most every
        CHECKPOINT_INTERVAL_S, or now with ``checkpoint``: the checkpoint is
        an LMDB commit, which would cost a flush more than its fdatasync."""
        self._check()
        if self.readonly:
            return
        with self._wlock:
            if self._active is None:
                return
            written = self._written
            written_next = self._appender.written_next
        if written[0] >= 0:
            self._sync_through(written_next)
            now = time.monotonic()
            if not checkpoint and now < self._next_checkpoint:
                return
            self._next_checkpoint = now + CHECKPOINT_INTERVAL_S
            st = self.state()
            if st.active_base == written[0]:
                self._meta.set_checkpoint(self.topic, self.index, written[0],
                                          written[1], written_next)

    def sync_for_commit(self) -> None:
        """Make the committed records of the active segment durable before a
        consumer commits an offset in them, from any process (a reader's
        descriptor will do): a committed offset must never point past what a
        power loss keeps. Free with sync="always", where appends already are
        durable; sealed segments are durable since their roll (S-4)."""
        if self.sync_mode == "always" or self.readonly:
            return
        self._check()
        st = self.state()
        with self._rlock:
            self._segment_bases(st)
            seg = self._reader(st.active_base)
            try:
                os.fdatasync(seg.fd)
            except OSError as exc:
                raise LogFailedError(
                    f"fdatasync of {seg.path} before an offset commit: "
                    f"{exc.strerror} (errno {exc.errno})") from exc

    # -- reads -----------------------------------------------------------------
    def fetch(self, cursor: Cursor, max_records: int, *, values_only: bool = False,
              with_topic: bool = False, row_type=None) -> list:
        """Up to ``max_records`` records at or after ``cursor.offset``.

        Returns tuples (offset, timestamp_ms, key, value, headers) — with
        ``with_topic``, (topic, partition, offset, ...) as pylog.Record
        orders them, built as ``row_type`` when given — or values when
        ``values_only``, and advances the cursor. Never returns records
        that are not committed (P-2). Raises OffsetOutOfRange when the cursor
        is below the log start offset and CorruptLogError (with file and
        position) when a batch fails its CRC or breaks the dense offset
        sequence (G4; baseOffset is outside the CRC).
        """
        self._check()
        st = self.state()
        if cursor.offset >= st.next_offset:
            if cursor.offset > st.next_offset:
                raise OffsetOutOfRange(
                    f"offset {cursor.offset} of {self.name} is past the end "
                    f"offset {st.next_offset}")
            return []
        if cursor.offset < st.log_start_offset:
            raise OffsetOutOfRange(
                f"offset {cursor.offset} of {self.name} is below the log start "
                f"offset {st.log_start_offset} (deleted by retention)")
        out: list = []
        with self._rlock:
            bases = self._segment_bases(st)
            if cursor.segment_base not in bases or cursor.position < 0:
                i = bisect.bisect_right(bases, cursor.offset) - 1
                if i < 0:
                    raise OffsetOutOfRange(
                        f"offset {cursor.offset} of {self.name} precedes the "
                        "first segment")
                seg = self._reader(bases[i])
                end = self._segment_end(seg, st)
                cursor.segment_base = seg.base_offset
                cursor.base = -1
                cursor.position = self._locate(
                    seg, cursor.offset, end,
                    self._sealed_last_offset(bases, seg.base_offset, st))
            build = self._row_build(values_only, with_topic, row_type)
            while len(out) < max_records:
                seg = self._reader(cursor.segment_base)
                end = self._segment_end(seg, st)
                if cursor.position >= end:
                    if seg.base_offset == st.active_base:
                        break
                    i = bases.index(seg.base_offset) + 1
                    if i >= len(bases):
                        break
                    # a segment's first batch starts at its base offset (S-1)
                    cursor.segment_base, cursor.position = bases[i], 0
                    cursor.base = bases[i]
                    continue
                m = seg.mapped(end)
                if cursor.position < end:
                    # every uncompressed batch up to `end`: one native call
                    room = max_records - len(out)
                    try:
                        recs, res = _native.fetch(seg.pointer(), m, end, cursor.position,
                                                  cursor.offset, cursor.base, room, build)
                    except CorruptLogError as exc:
                        raise exc.with_path(seg.path) from None
                    out.extend(recs)
                    cursor.offset, cursor.position = res.next_offset, res.position
                    cursor.base = res.position_base
                    if res.stop == _native.FETCH_CORRUPT:
                        if out:
                            break    # the good records first; the next fetch raises
                        if self._drop_if_replaced(seg, locked=True):
                            continue     # read the file now at its path
                        raise CorruptLogError(res.error, seg.path, res.stop_position)
                    if res.stop == _native.FETCH_END and seg.base_offset == st.active_base:
                        break                # at the committed end (the poll path)
                    if res.stop in (_native.FETCH_END, _native.FETCH_FULL):
                        continue
                # a compressed batch, or one too big for a native fetch: alone
                try:
                    header, recs = self._one_batch(seg, m, end, cursor, values_only,
                                                   with_topic, row_type)
                except CorruptLogError:
                    if out:
                        break    # the good records first; the next fetch raises
                    raise
                room = max_records - len(out)
                if len(recs) > room:
                    recs = recs[:room]
                    out.extend(recs)
                    cursor.offset += room
                    cursor.base = header.base_offset
                    break
                out.extend(recs)
                cursor.offset = header.last_offset + 1
                cursor.position += header.size
                cursor.base = cursor.offset
        return out

    def _row_build(self, values_only: bool, with_topic: bool, row_type) -> tuple:
        """The row options of _native.fetch for fetch's arguments."""
        if values_only:
            return _native.VALUES_ONLY
        if not with_topic:
            return _native.PLAIN_ROWS
        build = self._row_builds.get(row_type)
        if build is None:
            build = self._row_builds[row_type] = (self.topic, self.index, row_type, False)
        return build

    def wait_fetch(self, cursor: Cursor, slot_p, seen: int, timeout: float, max_records: int,
                   *, values_only: bool = False, with_topic: bool = False,
                   row_type=None) -> list | None:
        """The blocked poll's path: wait up to ``timeout`` seconds for the
        doorbell slot at ``slot_p`` (a pointer into the doorbell map, which
        the caller keeps mapped) to move from ``seen``, and
        once woken decode, in the same native call and before the
        interpreter is back, what this partition committed after ``cursor``
        in its active segment. Returns None on timeout; [] when woken with
        nothing decoded that way (the segment rolled or outgrew the reader's
        map, the cursor is not positioned in the active segment, the wake
        was for another partition of the topic, ...: the caller fetches the
        usual way); else the records as :meth:`fetch` returns them, with
        ``cursor`` advanced. A damaged batch raises CorruptLogError as in
        :meth:`fetch`.

        Thread safety: as :meth:`fetch`; the partition's read lock is held
        while the reader's map is taken, not through the wait. The call
        reads the segment through its own export of that map, so a reader
        another thread closes meanwhile stays mapped until the call is done
        (Segment.unmap). An append of this process that wakes the call waits
        (bounded) until the woken thread holds the GIL (_native.Handoff)."""
        self._check()
        state_p = self._state_rptr
        held = None
        if cursor.position >= 0 and state_p is not None and self._memory_state is None:
            with self._rlock:       # (another thread's fetch may remap it)
                seg = self._readers.get(cursor.segment_base)
                held = seg.hold() if seg is not None else None
        if held is None:
            woken = _native.doorbell_wait_at(slot_p, seen, timeout)
            return [] if woken else None
        ptr, m, map_len = held
        build = self._row_build(values_only, with_topic, row_type)
        try:
            req = _native.wait_request()
            req.slot, req.expected, req.state = slot_p, seen & 0xFFFFFFFF, state_p
            req.seg_base, req.seg_len = cursor.segment_base, map_len
            req.pos, req.next, req.first_base = cursor.position, cursor.offset, cursor.base
            req.max_records = max_records
            got = _native.wait_fetch(req, ptr, m, timeout, build, self._handoff)
        except CorruptLogError as exc:
            raise exc.with_path(seg.path) from None
        if not got:
            return None if got is None else []
        recs, res = got
        if not recs and res.stop == _native.FETCH_CORRUPT:
            if self._drop_if_replaced(seg, locked=False):
                return []            # the caller fetches from the new file
            raise CorruptLogError(res.error, seg.path, res.stop_position)
        cursor.offset, cursor.position = res.next_offset, res.position
        cursor.base = res.position_base
        return recs

    def _drop_if_replaced(self, seg: Segment, *, locked: bool) -> bool:
        """A read found damage: was it a map of a file since removed and made
        again under the same name (a recovery dropped the empty segment of a
        crashed roll, and the next roll created the same base)? Then forget
        that reader, so the next read maps the file now at the path."""
        if not seg.replaced():
            return False
        if not locked:
            with self._rlock:
                return self._drop_if_replaced(seg, locked=True)
        if self._readers.get(seg.base_offset) is seg:
            del self._readers[seg.base_offset]
            self._reader_sizes.pop(seg.base_offset, None)
            seg.close()
        return True

    def _one_batch(self, seg: Segment, m, end: int, cursor: Cursor, values_only: bool,
                   with_topic: bool, row_type):
        """(header, rows from cursor.offset on) of the batch at the cursor,
        decoded alone (compressed, or too big for a native fetch)."""
        try:
            header = batch.read_header(m, cursor.position, end)
            if values_only:
                recs = batch.decode_values(m, header)
            elif with_topic:
                recs = batch.decode(m, header, self.topic, self.index, row_type)
            else:
                recs = batch.decode(m, header)
        except CorruptLogError as exc:
            raise exc.with_path(seg.path) from None
        # baseOffset is outside the CRC (B-4): offsets are dense, so the
        # batch here must hold the offset the cursor expects, or the bytes
        # are damaged (G4: never return wrong offsets).
        if not header.base_offset <= cursor.offset <= header.last_offset or \
                cursor.base >= 0 and header.base_offset != cursor.base:
            raise CorruptLogError(
                f"batch holds offsets {header.base_offset}.."
                f"{header.last_offset} where offset {cursor.offset} "
                "belongs: baseOffset is not the expected next offset",
                seg.path, cursor.position)
        if header.base_offset < cursor.offset:
            if values_only:
                recs = self._values_from(m, header, cursor.offset)
            else:
                oi = 2 if with_topic else 0
                recs = [r for r in recs if r[oi] >= cursor.offset]
        return header, recs

    def _values_from(self, m, header, offset) -> list:
        return [r[3] for r in batch.decode(m, header) if r[0] >= offset]

    def _locate(self, seg: Segment, offset: int, end: int,
                last_offset: int | None) -> int:
        """Byte position of the batch holding ``offset`` (or of the first
        batch after it) in ``seg``, found with the sparse index (I-2)."""
        pos = 0
        expected = seg.base_offset       # baseOffset of the batch at pos
        idx, _ = self._indexes(seg, end, last_offset)
        m = seg.mapped(end) if end else None
        hit = _native.index_lookup(idx, offset - seg.base_offset) if idx else None
        if hit is not None:
            # I-3: trust an entry only if the batch it points at ends at its
            # offset; otherwise walk from the start of the segment.
            try:
                h = _native.read_batch_header(m, hit[1], end)
                if h.crc_valid and h.last_offset == seg.base_offset + hit[0]:
                    pos, expected = hit[1], h.base_offset
            except CorruptLogError:
                pass
        while pos < end:
            try:
                header = batch.read_header(m, pos, end)
            except CorruptLogError as exc:
                raise exc.with_path(seg.path) from None
            # baseOffset is outside the CRC (B-4): check the dense sequence
            if header.base_offset != expected:
                raise CorruptLogError(
                    f"batch claims offset {header.base_offset} where "
                    f"{expected} belongs: baseOffset is not the expected next "
                    "offset", seg.path, pos)
            if header.last_offset >= offset:
                return pos
            pos += header.size
            expected = header.last_offset + 1
        return pos

    def offset_for_time(self, timestamp_ms: int) -> int | None:
        """The first offset whose record has timestamp >= ``timestamp_ms``."""
        self._check()
        st = self.state()
        cur = Cursor(st.log_start_offset)
        with self._rlock:
            bases = self._segment_bases(st)
            start_offset = None
            for b in bases:
                seg = self._reader(b)
                end = self._segment_end(seg, st)
                _, t = self._indexes(seg, end,
                                     self._sealed_last_offset(bases, b, st))
                if b == st.active_base:
                    seg_max = st.active_max_timestamp
                else:
                    seg_max = _last_timestamp(t)      # T-3
                if seg_max >= timestamp_ms or seg_max < 0:
                    hit = _native.timeindex_lookup(t, timestamp_ms) if t else None
                    start_offset = b + hit[1] + 1 if hit else b
                    break
            if start_offset is None:
                return None
        cur.offset = max(start_offset, st.log_start_offset)
        while True:
            recs = self.fetch(cur, 1000)
            if not recs:
                return None
            for r in recs:
                if r[1] >= timestamp_ms:
                    return r[0]

    # -- retention ---------------------------------------------------------------
    def enforce_retention(self, now_ms: int | None = None) -> int:
        """Delete whole sealed segments past retention_ms / retention_bytes;
        return how many were deleted."""
        self._check()
        if self.readonly:
            return 0
        with self._wlock:
            self._lock()
            try:
                return self._enforce_retention_locked(now_ms)
            finally:
                self._unlock()

    def _enforce_retention_locked(self, now_ms: int | None = None) -> int:
        cfg = self.config
        if cfg.retention_ms < 0 and cfg.retention_bytes < 0:
            return 0
        import time
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        st = self.state()
        bases = [b for b in self._list_bases() if b <= st.active_base]
        sizes = {}
        for b in bases:
            try:
                sizes[b] = os.stat(os.path.join(self.dir, f"{b:020d}.log")).st_size
            except FileNotFoundError:
                sizes[b] = 0
        sizes[st.active_base] = st.active_position
        total = sum(sizes.values())
        doomed = []
        for i, b in enumerate(bases[:-1]):      # the active segment stays
            expired = False
            if cfg.retention_ms >= 0:
                # T-3 of a checked (or rebuilt) time index: a damaged one
                # must not delete records that are not yet expired
                seg = Segment(self.dir, b)
                try:
                    _, t = self._indexes(seg, seg.file_size(), bases[i + 1] - 1,
                                         locked=True)
                finally:
                    seg.close()
                mts = _last_timestamp(t)
                expired = 0 <= mts < now_ms - cfg.retention_ms
            if cfg.retention_bytes >= 0 and total - sizes[b] >= cfg.retention_bytes:
                expired = True
            if not expired:
                break
            doomed.append(b)
            total -= sizes[b]
        if not doomed:
            return 0
        new_start = bases[len(doomed)]
        # P-5: metadata first, then files: a crash in between leaves files
        # below the start offset, which the next recovery deletes. L-7: never
        # wait for another process's metadata transaction; retry next time.
        if not self._meta.set_log_start(self.topic, self.index, new_start):
            return 0
        self._publish(st.next_offset, st.active_base, st.active_position,
                      st.active_max_timestamp, st.generation + 1, new_start)
        for b in doomed:
            _unlink_segment(self.dir, b)
        return len(doomed)

    # -- inspection ------------------------------------------------------------------
    def describe(self) -> dict:
        st = self.state()
        bases = [b for b in self._list_bases() if b <= st.active_base]
        size = 0
        for b in bases:
            if b == st.active_base:
                size += st.active_position
            else:
                try:
                    size += os.stat(os.path.join(self.dir, f"{b:020d}.log")).st_size
                except FileNotFoundError:
                    pass
        return {"partition": self.index, "start_offset": st.log_start_offset,
                "end_offset": st.next_offset, "bytes": size,
                "segments": len(bases)}

    def check_identity(self, why: str | None = None) -> str | None:
        """L-6: why the directory or active segment this partition holds is
        no longer at its path (None: it is; ``why``: the caller knows); a
        vanished one fails the partition (every later append raises)."""
        why = self._dir_identity.problem() or unlinked(self._active) or why
        if why is not None and not self.readonly:
            self._fail(vanished(f"append to {self.name}", why))
        return why

    def fail(self, exc: BaseException) -> None:
        """Move to FAILED with ``exc`` (L-6: the Log found the files gone)."""
        self._fail(exc)

    def mark_deleted(self) -> None:
        """Tell every process the partition is gone (P-2) before its files go."""
        with self._wlock:
            self._lock()
            try:
                self._publish(_DELETED, 0, 0, -1, 0, 0)
            finally:
                self._unlock()

    def close(self) -> None:
        """Flush (advancing the checkpoint) and release files. Idempotent."""
        if self._status is CLOSED:
            return
        try:
            if self._status is OPEN and not self.readonly and self._active is not None:
                try:
                    self.flush(checkpoint=True)
                except TopicNotFound:
                    pass
        finally:
            self._status = CLOSED
            with self._wlock:
                self._appender_map = None
                if self._active is not None:
                    self._active.close()
                    self._set_active(None)
            with self._rlock:
                for seg in self._readers.values():
                    seg.close()
                self._readers.clear()
            # The state map is not unmapped here: a thread may be reading it
            # through its pointer with the GIL released (state()). Dropping
            # our references unmaps it once the last such call returns.
            if self._bell_ptr is not None:
                _native.release(self._bell_ptr)
            self._state_ptr = self._state_rptr = self._bell_ptr = None
            self._state_map = None
            if self._state_fd >= 0:
                os.close(self._state_fd)
                self._state_fd = -1


def _last_entry_position(idx: bytes) -> int:
    """Batch position of the last .index entry, 0 when there is none (I-2)."""
    n = len(idx) - len(idx) % INDEX_ENTRY.size
    return INDEX_ENTRY.unpack_from(idx, n - INDEX_ENTRY.size)[1] if n else 0


def _last_timestamp(tidx: bytes) -> int:
    """The timestamp of the last time index entry (T-3 for a sealed
    segment), or -1 when there is none."""
    if len(tidx) < TIMEINDEX_ENTRY.size:
        return -1
    return TIMEINDEX_ENTRY.unpack_from(tidx, len(tidx) - TIMEINDEX_ENTRY.size)[0]


def _unlink_segment(directory: str, base: int) -> None:
    stem = os.path.join(directory, f"{base:020d}")
    for suffix in (".log", ".index", ".timeindex"):
        try:
            os.unlink(stem + suffix)
        except FileNotFoundError:
            pass
