"""One segment of a partition: ``<base>.log``, ``<base>.index``, ``<base>.timeindex``.

File model (FORMAT.rst S-*, I-*, T-*):

* ``.log`` holds whole RecordBatch v2 batches back to back from position 0.
  The *active* segment is preallocated (``posix_fallocate``, so a full disk
  fails here with ENOSPC instead of killing the process with SIGBUS later)
  and written through a shared memory map; its valid end lives in the
  partition's state file, not in the file size. A *sealed* segment is
  truncated to its valid end, so its size is its end (S-4).
* ``.index`` and ``.timeindex`` are sparse, derived data (I-3): validated
  before use and rebuilt from the ``.log`` when missing or damaged
  (:mod:`pylog.index`). A Segment knows its index rule (I-2,
  :meth:`Segment.index_due`) and finds an offset's batch with it
  (:meth:`Segment.locate`).
* :meth:`Segment.recover` checks one segment after a crash, cuts a torn
  tail and returns how many bytes it cut (P-4). Whether damage is a torn
  tail is decided by :func:`first_valid_batch_after`, the one search for a
  valid batch after damage, which ``pylog verify`` uses too.

Thread safety: none; the owning Partition serializes every call. Several
processes may map the same files: only the holder of the partition's append
lock writes, and readers never look past the published end.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
from dataclasses import dataclass

from . import _native, batch
from .errors import CorruptLogError, PylogError
from .files import ACCESS_ERRNOS, NotARegularFile, access_error, allocate, open_log_file, set_aside
from .handles import FD_EXHAUSTED, HandleCache, too_many_maps, too_many_open_files
from .index import (
    INDEX_ENTRY,
    INDEX_INTERVAL_BYTES,
    TIMEINDEX_ENTRY,
    index_problem,
    last_entry_position,
    pack_index,
    pack_timeindex,
    scan_indexes,
)

_log = logging.getLogger("pylog")

__all__ = ["INDEX_ENTRY", "INDEX_INTERVAL_BYTES", "TIMEINDEX_ENTRY",
           "OFFSET_DIGITS", "PREALLOCATE_BYTES", "PREALLOCATE_BYTES_MIN",
           "Recovered", "Segment", "first_valid_batch_after", "fsync_dir", "open_segment",
           "sync_path", "with_fds",
           "list_segment_bases", "parse_segment_name", "segment_is_empty",
           "segment_name", "segment_path", "unlink_segment"]

OFFSET_DIGITS = 20  # S-1: names sort numerically under ls
# The active segment grows by doubling, from PREALLOCATE_BYTES_MIN up to steps
# of PREALLOCATE_BYTES: small partitions stay small on disk, busy ones remap
# rarely.
PREALLOCATE_BYTES_MIN = 64 * 1024
PREALLOCATE_BYTES = 8 * 1024 * 1024
# A segment shrinks once (at its roll) while readers map it: a retry or two
# suffices; more means something else keeps truncating it.
_MAP_ATTEMPTS = 8
# zero_tail reads and rewrites the tail in pieces of this size
_ZERO_CHUNK = 1 << 20


def segment_name(base_offset: int, suffix: str) -> str:
    """``00000000000000000042.log`` (S-1)."""
    return f"{base_offset:0{OFFSET_DIGITS}d}{suffix}"


def segment_path(directory: str, base_offset: int, suffix: str = ".log") -> str:
    """The path of segment ``base_offset``'s ``suffix`` file in ``directory``."""
    return os.path.join(directory, segment_name(base_offset, suffix))


def parse_segment_name(name: str) -> int | None:
    """The base offset of a ``.log`` file name, or None if it is not one (S-1)."""
    stem, dot, suffix = name.partition(".")
    if suffix != "log" or len(stem) != OFFSET_DIGITS or not stem.isdigit():
        return None
    return int(stem)


@dataclass(frozen=True)
class Recovered:
    """What :meth:`Segment.recover_scan` found in one segment."""
    next_offset: int      # the offset after its last valid batch
    end: int              # byte position where its valid batches end
    max_timestamp: int    # max timestamp of its batches, -1 when none
    truncated: int        # bytes of a torn tail cut off (P-4), 0 when none
    index_position: int   # position of the batch of its last .index entry (I-2)


class Segment:
    """Open files of one segment; see the module docstring for the model.

    Thread safety: none; the owner serializes calls (the partition's writer
    lock for the writer's handle, its reader lock for reader maps).
    Durability: :meth:`sync` makes the ``.log`` durable; index files never
    need to be (I-3). :meth:`recover` truncates only the file it holds.
    """

    def __init__(self, directory: str, base_offset: int, *, create: bool = False,
                 writable: bool = False):
        self.directory = directory
        self.base_offset = base_offset
        self.path = segment_path(directory, base_offset)
        self.index_path = segment_path(directory, base_offset, ".index")
        self.timeindex_path = segment_path(directory, base_offset, ".timeindex")
        self.writable = writable
        flags = os.O_RDWR if writable else os.O_RDONLY
        if create:
            flags |= os.O_CREAT
        # P-1: a symlink, FIFO or directory planted in a partition directory
        # is refused (NotARegularFile, a CorruptLogError naming the path);
        # the open never blocks or follows; EACCES/EROFS are
        # LogPermissionError / ReadOnlyFilesystemError (pylog.files)
        self.fd = open_log_file(self.path, flags, what="segment file")
        self._map: mmap.mmap | None = None
        self._map_len = 0
        self._wptr = None        # native pointer into the writable map
        self._rptr = None        # native pointer for reads (pointer())
        self._index_fds = (-1, -1)
        # checked (.index, .timeindex) of a sealed segment, which never changes
        self.index_cache: tuple[bytes, bytes] | None = None
        # the Log's handle cache this segment is registered in (None: not
        # bounded, e.g. recovery's short-lived handles), and its
        # recently-used flag (pylog.handles)
        self.handles: HandleCache | None = None
        self.used = False

    def register(self, handles: HandleCache | None, cost: int, release) -> None:
        """Count this open segment as ``cost`` descriptors in ``handles``,
        which may close it through ``release`` (see pylog.handles); closing
        it unregisters it."""
        if handles is not None:
            self.handles = handles
            handles.opened(self, cost, release)

    # -- mapping ---------------------------------------------------------
    def file_size(self) -> int:
        return os.fstat(self.fd).st_size

    def replaced(self) -> bool:
        """Is the file at this segment's path no longer the one held open
        (removed, or removed and made again under the same name)?"""
        if self.fd < 0:
            return True          # closed (by the handle cache): not held
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        held = os.fstat(self.fd)
        return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)

    def mapped(self, need: int) -> mmap.mmap | None:
        """A map covering at least ``need`` bytes (remapped when the file grew).

        Returns None for an empty file. Raises CorruptLogError when the file is
        shorter than ``need`` (someone truncated it under us).
        """
        if self._map is not None and self._map_len >= need:
            return self._map
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if self.writable else 0)
        for _ in range(_MAP_ATTEMPTS):
            size = self.file_size()
            if size < need:
                raise CorruptLogError(
                    f"segment is {size} bytes but its data should reach {need}",
                    self.path, size)
            if size == 0:
                return None
            self.unmap()
            try:
                self._map = self._mmap(size, prot)
            except ValueError:
                # The file shrank between our fstat and mmap's: a writer
                # rolling the segment truncated its preallocated tail to
                # the valid end (S-4), which is still >= need. Map again at
                # the new size.
                continue
            self._map_len = size
            return self._map
        raise CorruptLogError(f"segment kept changing size while being mapped "
                              f"({_MAP_ATTEMPTS} attempts)", self.path, None)

    def _mmap(self, size: int, prot: int) -> mmap.mmap:
        """Map ``size`` bytes. Python's mmap duplicates the descriptor, so
        it may meet EMFILE, and the process may be out of maps (ENOMEM):
        the handle cache then closes idle handles and it is tried once more
        (TooManyOpenFilesError, TooManyMapsError when still out)."""
        return with_fds(self.handles, f"map {self.path}",
                        lambda: mmap.mmap(self.fd, size, mmap.MAP_SHARED, prot),
                        maps=True)

    def pointer(self):
        """Native pointer to the current map (None when nothing is mapped),
        for native reads (pl_fetch). Valid until unmap()."""
        if self._rptr is None and self._map is not None:
            self._rptr = _native.pointer(self._map, writable=False)
        return self._rptr

    def hold(self):
        """(a new native pointer to the current map, the map, its length),
        or None when nothing is mapped: for a native call that runs longer
        than the caller holds any lock (Reader.wait_fetch). While the
        pointer is held the map cannot be unmapped (unmap() then leaves it to
        the holder), who releases it (_native.release)."""
        m = self._map
        if m is None:
            return None
        try:
            return _native.pointer(m, writable=False), m, len(m)
        except ValueError:          # closed by another thread just now
            return None

    def writer_pointer(self):
        """(native pointer, capacity) of the writable map, for the one-call
        append; (None, 0) when nothing is mapped yet. Valid until unmap()."""
        if self._wptr is None and self._map is not None and self.writable:
            self._wptr = _native.pointer(self._map)
        return self._wptr, self._map_len

    def index_fds(self) -> tuple[int, int]:
        """Append-only descriptors of .index and .timeindex (writer side)."""
        if self._index_fds[0] < 0:
            self._index_fds = with_fds(self.handles, f"open the indexes of {self.path}",
                                       self._open_index_fds)
        return self._index_fds

    def _open_index_fds(self) -> tuple[int, int]:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        i = _open_index(self.index_path, flags)
        try:
            t = _open_index(self.timeindex_path, flags)
        except BaseException:
            os.close(i)
            raise
        return i, t

    def _close_index_fds(self) -> None:
        for fd in self._index_fds:
            if fd >= 0:
                os.close(fd)
        self._index_fds = (-1, -1)

    def unmap(self) -> None:
        # The fields are cleared first: a Ctrl-C the application catches
        # may land between any two lines, and a closed map or a released
        # pointer left in them would fail every later append (a map
        # dropped before its close is closed when it is collected)
        ptrs, m = (self._wptr, self._rptr), self._map
        self._wptr = self._rptr = self._map = None
        self._map_len = 0
        for ptr in ptrs:
            if ptr is not None:
                _native.release(ptr)
        if m is not None:
            try:
                m.close()
            except BufferError:
                if self.writable:
                    raise           # only reader maps are ever held
                # held (hold()): unmapped when the holder lets go

    def preallocate(self, size: int) -> None:
        """Reserve blocks up to ``size`` bytes (ENOSPC surfaces here, G8)."""
        if self.file_size() >= size:
            return
        allocate(self.fd, size)

    def truncate(self, size: int) -> None:
        self.unmap()
        os.ftruncate(self.fd, size)

    def zero_tail(self, position: int) -> int:
        """Zero every non-zero byte from ``position`` to the end of the file,
        restoring S-3 past a dead writer's torn batch (P-3); returns how
        many bytes were rewritten. Reads the whole tail: it is bounded by
        one growth step of the preallocation (PREALLOCATE_BYTES) plus a
        batch. The blocks stay allocated (zeros are written, no hole is
        punched), so a store through a map never meets a full disk."""
        size = self.file_size()
        done = 0
        pos = position
        while pos < size:
            chunk = os.pread(self.fd, min(_ZERO_CHUNK, size - pos), pos)
            if not chunk:
                break
            if chunk.count(0) != len(chunk):
                view = memoryview(bytes(len(chunk)))
                at = pos
                while view:
                    n = os.pwrite(self.fd, view, at)
                    view, at = view[n:], at + n
                done += len(chunk)
            pos += len(chunk)
        return done

    def sync(self) -> None:
        os.fdatasync(self.fd)

    # -- indexes -----------------------------------------------------------
    def read_index(self) -> bytes:
        """The ``.index`` bytes (b"" when missing)."""
        return _read_file(self.index_path)

    def read_timeindex(self) -> bytes:
        return _read_file(self.timeindex_path)

    def append_timeindex(self, max_timestamp: int, rel_offset: int) -> None:
        """The final entry of a sealed segment: its max timestamp (T-3)."""
        _append_file(self.timeindex_path,
                     TIMEINDEX_ENTRY.pack(max_timestamp, rel_offset))

    def write_indexes(self, index_entries, timeindex_entries) -> None:
        """Rewrite both index files (rebuild, I-3)."""
        _replace_file(self.index_path,
                      b"".join(INDEX_ENTRY.pack(r, p) for r, p in index_entries))
        _replace_file(self.timeindex_path,
                      b"".join(TIMEINDEX_ENTRY.pack(t, r)
                               for t, r in timeindex_entries))

    def index_problem(self, idx: bytes, tidx: bytes, buf, end: int,
                      last_offset: int | None) -> str | None:
        """Why ``idx``/``tidx`` cannot be trusted for ``buf[:end]`` (see
        :func:`pylog.index.index_problem`), or None."""
        return index_problem(idx, tidx, buf, end, self.base_offset, last_offset)

    def scan_indexes(self, buf, end: int, sealed: bool):
        """Both indexes rebuilt from ``buf[:end]`` (see
        :func:`pylog.index.scan_indexes`)."""
        return scan_indexes(buf, end, self.base_offset, sealed)

    def indexes_before(self, position: int) -> tuple[bytes, bytes]:
        """The index entries for batches before ``position`` and as many time
        index entries (a sealed segment's T-3 entry is dropped): what stays
        true when the segment is cut or appended to at ``position``."""
        idx = self.read_index()
        # positions increase (I-1): a binary search, not a walk of what may
        # be a million entries (a checker of the kept prefix rejects an
        # unsorted index, I-3)
        lo, hi = 0, len(idx) // 8
        while lo < hi:
            mid = (lo + hi) // 2
            if INDEX_ENTRY.unpack_from(idx, mid * 8)[1] >= position:
                hi = mid
            else:
                lo = mid + 1
        return idx[:lo * 8], self.read_timeindex()[:lo * 12]

    def replace_indexes(self, idx: bytes, tidx: bytes) -> None:
        """Rewrite both index files with these bytes (I-3)."""
        _replace_file(self.index_path, idx)
        _replace_file(self.timeindex_path, tidx)

    # -- lookups -------------------------------------------------------------
    def locate(self, offset: int, end: int, idx: bytes) -> int:
        """Byte position of the batch holding ``offset`` (or of the first
        batch after it) among the batches in ``[0, end)``, found with the
        checked sparse index ``idx`` (I-2): the last entry at or before the
        offset, trusted only if the batch it points at ends at its offset
        (I-3), then a walk that checks the dense offset sequence (S-2).
        Raises CorruptLogError (with this file) for a bad batch on the way."""
        pos = 0
        expected = self.base_offset       # baseOffset of the batch at pos
        m = self.mapped(end) if end else None
        hit = _native.index_lookup(idx, offset - self.base_offset) if idx else None
        if hit is not None:
            try:
                h = _native.read_batch_header(m, hit[1], end)
                if h.crc_valid and h.last_offset == self.base_offset + hit[0]:
                    pos, expected = hit[1], h.base_offset
            except CorruptLogError:
                pass
        while pos < end:
            try:
                header = batch.read_header(m, pos, end)
            except CorruptLogError as exc:
                raise exc.with_path(self.path) from None
            # baseOffset is outside the CRC (B-4): check the dense sequence
            if header.base_offset != expected:
                raise CorruptLogError(
                    f"batch claims offset {header.base_offset} where "
                    f"{expected} belongs: baseOffset is not the expected next "
                    "offset", self.path, pos)
            if header.last_offset >= offset:
                return pos
            pos += header.size
            expected = header.last_offset + 1
        return pos

    # -- the index rule (I-2) -----------------------------------------------
    @staticmethod
    def index_due(position: int, last_entry_position: int) -> bool:
        """I-2: does the batch at ``position`` get an index entry, the last
        entry's batch being at ``last_entry_position`` (0 when none)?"""
        return position - last_entry_position >= INDEX_INTERVAL_BYTES

    def append_index_entry(self, last_offset: int, position: int,
                           max_timestamp: int) -> None:
        """Append the I-2 entry of the batch at ``position`` ending at
        ``last_offset`` and its T-2 time index entry (writer side)."""
        ifd, tfd = self.index_fds()
        rel = last_offset - self.base_offset
        os.write(ifd, INDEX_ENTRY.pack(rel, position))
        os.write(tfd, TIMEINDEX_ENTRY.pack(max_timestamp, rel))

    # -- recovery --------------------------------------------------------------
    def recover(self, *, checkpoint: tuple[int, int] | None = None,
                sealed: bool = False) -> int:
        """Check this segment's batches, cut a torn tail, rebuild its
        indexes (P-4, I-3); return how many bytes of torn tail were cut.
        The end of data (S-3: zeros, or fewer bytes than a batch's
        baseOffset and batchLength) is trimmed too, but is no damage and is
        not counted.

        Needs a writable Segment. Raises CorruptLogError (file, position) for
        damage that is not a torn tail. See :meth:`recover_scan`."""
        return self.recover_scan(checkpoint=checkpoint, sealed=sealed).truncated

    def recover_scan(self, *, checkpoint: tuple[int, int] | None = None,
                     sealed: bool = False) -> Recovered:
        """Scan the batches from ``checkpoint`` (position, the offset of the
        batch there: data before it was fdatasync'd, P-4) or from position 0,
        checking framing, CRC and the dense offset sequence (S-2).

        At the first bad batch: when a valid batch follows it
        (:func:`first_valid_batch_after`), or the segment is ``sealed`` (not
        the last one, whose whole data was fdatasync'd at its roll, S-4), the
        damage is mid-log and CorruptLogError is raised; otherwise it is a
        torn tail. A writable Segment then gets its indexes rewritten (with
        the T-3 entry when ``sealed``) and, when not sealed, is truncated to
        its valid end; a read-only one is left untouched."""
        write = self.writable
        base = self.base_offset
        size = self.file_size()
        m = self.mapped(size) if size else None
        pos0, expected, idx, tidx, ts0, last_entry = 0, base, b"", b"", -1, 0
        if not sealed and checkpoint is not None and 0 < checkpoint[0] <= size:
            idx, tidx = self.indexes_before(checkpoint[0])
            problem = self.index_problem(idx, tidx, m, checkpoint[0], None)
            if problem is None:
                pos0, expected = checkpoint
                if idx:
                    last_entry = INDEX_ENTRY.unpack_from(idx, len(idx) - 8)[1]
                    ts0 = TIMEINDEX_ENTRY.unpack_from(tidx, len(tidx) - 12)[0]
                # the segment's max timestamp: the last entry's, and the few
                # batches after it (fewer than I-2's interval)
                ts0 = max(ts0, self._headers_max_timestamp(m, last_entry, pos0))
            else:
                _log.warning("%s: %s; rebuilding the indexes (I-3)",
                             self.path, problem)
                idx = tidx = b""
        r = _native.scan_segment(
            m if m is not None else b"", pos0, size,
            expected_offset=expected, segment_base_offset=base,
            index_interval_bytes=INDEX_INTERVAL_BYTES,
            bytes_since_last_entry=pos0 - last_entry, max_timestamp=ts0)
        if r.error_position is None and not sealed and r.end_position < size \
                and first_valid_batch_after(m, r.end_position, size,
                                            min_offset=r.next_offset) is not None:
            # the scan stops at a zero batchLength (the preallocated tail,
            # S-3); one zeroed by damage must not hide what follows
            raise CorruptLogError("batchLength is 0 but valid batches follow",
                                  self.path, r.end_position)
        cut = 0
        if r.error_position is not None:
            if r.continues_after_error or sealed or first_valid_batch_after(
                    m, r.error_position, size, min_offset=r.next_offset) is not None:
                raise CorruptLogError(r.error_reason or "damaged batch", self.path,
                                      r.error_position)
            cut = size - r.end_position
            if write:
                _log.warning("%s: torn tail after a crash: cut %d bytes at "
                             "position %d (%s)", self.path, cut, r.end_position,
                             r.error_reason)
            else:
                _log.warning("%s: torn tail after a crash: %d bytes at position %d "
                             "(%s) are not read; opened read-only, the file is left "
                             "as it is (a writer's open cuts them)", self.path, cut,
                             r.end_position, r.error_reason)
        next_offset = r.next_offset if r.batch_count else expected
        end = r.end_position
        idx += pack_index(r.index_entries)
        tidx += pack_timeindex(r.timeindex_entries)
        if write:
            self.unmap()
            if sealed and next_offset > base:   # T-3
                tidx += TIMEINDEX_ENTRY.pack(r.max_timestamp, next_offset - 1 - base)
            try:
                self.replace_indexes(idx, tidx)
            except OSError as exc:
                # derived data (I-3): a full disk must not keep the log from
                # opening; a reader rebuilds what is torn
                _log.warning("%s: recovered index not written: %s",
                             self.index_path, exc)
            if not sealed and size > end:
                self.truncate(end)
        return Recovered(next_offset, end, r.max_timestamp, cut,
                         last_entry_position(idx))

    def _headers_max_timestamp(self, m, pos: int, end: int) -> int:
        """Max timestamp of the batches in ``[pos, end)``, headers only."""
        max_ts = -1
        while pos < end:
            try:
                h = batch.read_header(m, pos, end)
            except CorruptLogError as exc:
                raise exc.with_path(self.path) from None
            max_ts = max(max_ts, h.max_timestamp)
            pos += h.size
        return max_ts

    def close(self) -> None:
        """Unmap and close every descriptor (idempotent)."""
        self.unmap()
        self._close_index_fds()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.handles is not None:
            self.handles.closed(self)
            self.handles = None

    def unlink(self) -> None:
        for p in (self.path, self.index_path, self.timeindex_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def open_segment(handles: HandleCache | None, directory: str, base_offset: int, *,
                 cost: int, release, create: bool = False,
                 writable: bool = False) -> Segment:
    """A Segment registered in the Log's handle cache ``handles`` as
    ``cost`` descriptors (pylog.handles), which closes it through
    ``release`` when it needs room. EMFILE/ENFILE: idle handles are closed
    and the open is tried once more, then TooManyOpenFilesError."""
    seg = with_fds(handles, f"open {segment_path(directory, base_offset)}",
                   lambda: Segment(directory, base_offset, create=create,
                                   writable=writable))
    seg.register(handles, cost, release)
    return seg


def sync_path(handles: HandleCache | None, path: str) -> None:
    """fdatasync the file at ``path`` through a descriptor opened for the
    call (a segment whose handle was closed with writes not yet durable);
    nothing when it is gone (deleted: nothing left to make durable).
    OSError when the sync fails; TooManyOpenFilesError as :func:`with_fds`;
    LogPermissionError / ReadOnlyFilesystemError when it may not be opened."""
    try:
        fd = with_fds(handles, f"fdatasync {path}",
                      lambda: os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC))
    except FileNotFoundError:
        return
    except OSError as exc:
        if isinstance(exc, PylogError) or exc.errno not in ACCESS_ERRNOS:
            raise
        raise access_error(exc, "segment file", writing=False) from None
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def with_fds(handles: HandleCache | None, action: str, call, *, maps: bool = False):
    """``call()``, which needs descriptors (``maps``: and maps a file): on
    EMFILE/ENFILE (ENOMEM) the handle cache (when there is one) closes idle
    handles and it is tried once more; raises TooManyOpenFilesError
    (TooManyMapsError) naming ``action`` when still out."""
    if handles is not None:
        return handles.retry(action, call, maps=maps)
    try:
        return call()
    except OSError as exc:
        if isinstance(exc, PylogError):
            raise
        if exc.errno in FD_EXHAUSTED:
            raise too_many_open_files(exc, action) from None
        if maps and exc.errno == errno.ENOMEM:
            raise too_many_maps(exc, action) from None
        raise


def first_valid_batch_after(buf, start: int, end: int, *,
                            min_offset: int | None = None) -> int | None:
    """The position of the first batch that starts after ``start`` (at
    ``start + 1`` or later), lies whole before ``end``, passes its CRC
    (B-4), holds records (B-5) and, given ``min_offset``, has a baseOffset
    of at least that; None when there is none.

    The one answer to "is the damage at ``start`` followed by valid data?":
    recovery (P-4: then it is mid-log corruption, not a torn tail) and
    ``pylog verify`` (where to resume reporting) both ask it here, so they
    cannot disagree. A torn tail is a prefix of one batch followed by zeros,
    so it has none. Candidates are found at C speed by the magic byte (B-3),
    which also finds batches whose length field the damage hid from the
    native scan."""
    if buf is None:
        return None
    magic_at = _native.MAGIC_OFFSET
    q = max(start + 1, 0) + magic_at
    while True:
        q = buf.find(b"\x02", q, end)
        if q < 0:
            return None
        cand = q - magic_at
        try:
            h = _native.read_batch_header(buf, cand, end)
        except PylogError:
            h = None
        if h is not None and h.crc_valid and h.records_count > 0 and \
                (min_offset is None or h.base_offset >= min_offset):
            return cand
        q += 1


def list_segment_bases(directory: str) -> list[int]:
    """Base offsets of the ``.log`` files in ``directory``, ascending (S-1)."""
    return sorted(b for b in map(parse_segment_name, os.listdir(directory))
                  if b is not None)


def segment_is_empty(directory: str, base: int) -> bool:
    """True if segment ``base`` holds no batch: missing, shorter than a
    batch length field, or a zero batchLength at position 0 (S-3)."""
    try:
        # P-1: never follows a symlink, never blocks on a FIFO
        fd = open_log_file(segment_path(directory, base), os.O_RDONLY,
                           what="segment file")
    except FileNotFoundError:
        return True
    try:
        head = os.pread(fd, 12, 0)
    finally:
        os.close(fd)
    return len(head) < 12 or head[8:12] == b"\0\0\0\0"


def unlink_segment(directory: str, base: int) -> None:
    """Remove segment ``base``'s three files (those that exist)."""
    for suffix in (".log", ".index", ".timeindex"):
        try:
            os.unlink(segment_path(directory, base, suffix))
        except FileNotFoundError:
            pass


def _read_file(path: str) -> bytes:
    """An index file's bytes; b"" when it is missing or not a regular file
    (derived data: the caller rebuilds it, and a writer sets the odd file
    aside when it writes the rebuilt one)."""
    try:
        fd = open_log_file(path, os.O_RDONLY, what="index file")
    except FileNotFoundError:
        return b""
    except NotARegularFile as exc:
        _log.warning("%s; treating the index as missing (I-3)", exc)
        return b""
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _open_index(path: str, flags: int) -> int:
    """Open an index file for writing. A symlink, FIFO or directory there
    is renamed aside (``<name>.not-regular``, never followed or written
    through) and a regular file made in its place: indexes are derived
    data (I-3), rebuilt from the segment, so an odd file never keeps a log
    from opening."""
    try:
        return open_log_file(path, flags, what="index file")
    except NotARegularFile as exc:
        _log.warning("%s; renamed to %s, rebuilding the index (I-3)",
                     exc, set_aside(path))
        return open_log_file(path, flags | os.O_CREAT, what="index file")


def _append_file(path: str, data: bytes) -> None:
    fd = _open_index(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _replace_file(path: str, data: bytes) -> None:
    """Rewrite ``path`` in place (same inode, O_TRUNC). Not atomic, on
    purpose: writers in other processes hold O_APPEND descriptors of the
    active segment's index files, which a rename would orphan. Index files
    are derived data, checked before use (I-3): a torn rewrite is rebuilt."""
    fd = _open_index(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Make a created, renamed or deleted directory entry durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
