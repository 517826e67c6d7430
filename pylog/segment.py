"""One segment of a partition: ``<base>.log``, ``<base>.index``, ``<base>.timeindex``.

File model (FORMAT.rst S-*, I-*, T-*):

* ``.log`` holds whole RecordBatch v2 batches back to back from position 0.
  The *active* segment is preallocated (``posix_fallocate``, so a full disk
  fails here with ENOSPC instead of killing the process with SIGBUS later)
  and written through a shared memory map; its valid end lives in the
  partition's state file, not in the file size. A *sealed* segment is
  truncated to its valid end, so its size is its end (S-4).
* ``.index`` and ``.timeindex`` are sparse, derived data (I-3): validated
  before use and rebuilt from the ``.log`` when missing or damaged.

Thread safety: none; the owning Partition serializes every call. Several
processes may map the same files: only the holder of the partition's append
lock writes, and readers never look past the published end.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct

from . import _native
from .errors import CorruptLogError
from .files import NotARegularFile, allocate, open_regular, set_aside

_log = logging.getLogger("pylog")

OFFSET_DIGITS = 20  # S-1: names sort numerically under ls
INDEX_ENTRY = struct.Struct(">ii")      # I-1: relative offset, position
TIMEINDEX_ENTRY = struct.Struct(">qi")  # T-1: timestamp, relative offset
INDEX_INTERVAL_BYTES = 4096             # I-2
# The active segment grows by doubling, from PREALLOCATE_BYTES_MIN up to steps
# of PREALLOCATE_BYTES: small partitions stay small on disk, busy ones remap
# rarely.
PREALLOCATE_BYTES_MIN = 64 * 1024
PREALLOCATE_BYTES = 8 * 1024 * 1024
# A segment shrinks once (at its roll) while readers map it: a retry or two
# suffices; more means something else keeps truncating it.
_MAP_ATTEMPTS = 8


def segment_name(base_offset: int, suffix: str) -> str:
    """``00000000000000000042.log`` (S-1)."""
    return f"{base_offset:0{OFFSET_DIGITS}d}{suffix}"


def parse_segment_name(name: str) -> int | None:
    """The base offset of a ``.log`` file name, or None if it is not one (S-1)."""
    stem, dot, suffix = name.partition(".")
    if suffix != "log" or len(stem) != OFFSET_DIGITS or not stem.isdigit():
        return None
    return int(stem)


class Segment:
    """Open files of one segment; see the module docstring for the model."""

    def __init__(self, directory: str, base_offset: int, *, create: bool = False,
                 writable: bool = False):
        self.directory = directory
        self.base_offset = base_offset
        self.path = os.path.join(directory, segment_name(base_offset, ".log"))
        self.index_path = self.path[:-4] + ".index"
        self.timeindex_path = self.path[:-4] + ".timeindex"
        self.writable = writable
        flags = os.O_RDWR if writable else os.O_RDONLY
        if create:
            flags |= os.O_CREAT
        # P-1: a symlink, FIFO or directory planted in a partition directory
        # is refused (NotARegularFile, a CorruptLogError naming the path);
        # the open never blocks or follows
        self.fd = open_regular(self.path, flags, what="segment file")
        self._map: mmap.mmap | None = None
        self._map_len = 0
        self._wptr = None        # native pointer into the writable map
        self._rptr = None        # native pointer for reads (pointer())
        self._index_fds = (-1, -1)
        # checked (.index, .timeindex) of a sealed segment, which never changes
        self.index_cache: tuple[bytes, bytes] | None = None

    # -- mapping ---------------------------------------------------------
    def file_size(self) -> int:
        return os.fstat(self.fd).st_size

    def replaced(self) -> bool:
        """Is the file at this segment's path no longer the one held open
        (removed, or removed and made again under the same name)?"""
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
                self._map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, prot)
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

    def pointer(self):
        """Native pointer to the current map (None when nothing is mapped),
        for native reads (pl_fetch). Valid until unmap()."""
        if self._rptr is None and self._map is not None:
            self._rptr = _native.pointer(self._map, writable=False)
        return self._rptr

    def hold(self):
        """(a new native pointer to the current map, the map, its length),
        or None when nothing is mapped: for a native call that runs longer
        than the caller holds any lock (Partition.wait_fetch). While the
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
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            i = _open_index(self.index_path, flags)
            try:
                t = _open_index(self.timeindex_path, flags)
            except BaseException:
                os.close(i)
                raise
            self._index_fds = (i, t)
        return self._index_fds

    def _close_index_fds(self) -> None:
        for fd in self._index_fds:
            if fd >= 0:
                os.close(fd)
        self._index_fds = (-1, -1)

    def unmap(self) -> None:
        for ptr in (self._wptr, self._rptr):
            if ptr is not None:
                _native.release(ptr)
        self._wptr = self._rptr = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                if self.writable:
                    raise           # only reader maps are ever held
                # held (hold()): unmapped when the holder lets go
            self._map = None
            self._map_len = 0

    def preallocate(self, size: int) -> None:
        """Reserve blocks up to ``size`` bytes (ENOSPC surfaces here, G8)."""
        if self.file_size() >= size:
            return
        allocate(self.fd, size)

    def truncate(self, size: int) -> None:
        self.unmap()
        os.ftruncate(self.fd, size)

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
        """Why ``idx``/``tidx`` cannot be trusted for the data ``buf[:end]``,
        or None when they pass the I-3 checks.

        ``last_offset`` is the last offset of a sealed segment (None for the
        active one). The checks are cheap (no scan): both files are well
        formed and sorted (I-1, T-1), pair up entry by entry (T-2), a sealed
        segment's timeindex ends with its final max timestamp (T-3), and the
        batch at the last index entry really ends at that entry's offset.
        Every lookup still verifies the batch it lands on.
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
        if sealed and TIMEINDEX_ENTRY.unpack_from(tidx, 12 * n)[1] != \
                last_offset - self.base_offset:
            return "time index does not end at the segment's last offset (T-3)"
        if n:
            rel, pos = INDEX_ENTRY.unpack_from(idx, 8 * (n - 1))
            try:
                h = _native.read_batch_header(buf, pos, end)
            except CorruptLogError:
                return f"last index entry points at no batch (position {pos})"
            if not h.crc_valid or h.last_offset != self.base_offset + rel:
                return f"last index entry does not match the batch at {pos}"
        return None

    def scan_indexes(self, buf, end: int, sealed: bool):
        """Rebuild both indexes by scanning ``buf[:end]`` (I-3).

        Returns (idx bytes, tidx bytes, complete): ``complete`` is False when
        the scan stopped at a bad batch, whose entries are then left out (the
        read that reaches it raises CorruptLogError)."""
        r = _native.scan_segment(buf if buf is not None else b"", 0, end,
                                 expected_offset=self.base_offset,
                                 segment_base_offset=self.base_offset,
                                 index_interval_bytes=INDEX_INTERVAL_BYTES)
        tentries = list(r.timeindex_entries)
        if sealed and r.batch_count:     # T-3
            tentries.append((r.max_timestamp, r.next_offset - 1 - self.base_offset))
        idx = b"".join(INDEX_ENTRY.pack(rel, p) for rel, p in r.index_entries)
        tidx = b"".join(TIMEINDEX_ENTRY.pack(t, rel) for t, rel in tentries)
        return idx, tidx, r.error_position is None and r.end_position == end

    def indexes_before(self, position: int) -> tuple[bytes, bytes]:
        """The index entries for batches before ``position`` and as many time
        index entries (a sealed segment's T-3 entry is dropped): what stays
        true when the segment is cut or appended to at ``position``."""
        idx = self.read_index()
        idx = idx[:len(idx) - len(idx) % 8]
        keep = 0
        for i in range(0, len(idx), 8):
            if INDEX_ENTRY.unpack_from(idx, i)[1] >= position:
                break
            keep = i + 8
        return idx[:keep], self.read_timeindex()[:(keep // 8) * 12]

    def replace_indexes(self, idx: bytes, tidx: bytes) -> None:
        """Rewrite both index files with these bytes (I-3)."""
        _replace_file(self.index_path, idx)
        _replace_file(self.timeindex_path, tidx)

    def close(self) -> None:
        self.unmap()
        self._close_index_fds()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def unlink(self) -> None:
        for p in (self.path, self.index_path, self.timeindex_path):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


def _read_file(path: str) -> bytes:
    """An index file's bytes; b"" when it is missing or not a regular file
    (derived data: the caller rebuilds it, and a writer sets the odd file
    aside when it writes the rebuilt one)."""
    try:
        fd = open_regular(path, os.O_RDONLY, what="index file")
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
        return open_regular(path, flags, what="index file")
    except NotARegularFile as exc:
        _log.warning("%s; renamed to %s, rebuilding the index (I-3)",
                     exc, set_aside(path))
        return open_regular(path, flags | os.O_CREAT, what="index file")


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
