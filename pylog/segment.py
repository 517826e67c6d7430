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

import errno
import mmap
import os
import struct

from . import _native
from .errors import CorruptLogError

OFFSET_DIGITS = 20  # S-1: names sort numerically under ls
INDEX_ENTRY = struct.Struct(">ii")      # I-1: relative offset, position
TIMEINDEX_ENTRY = struct.Struct(">qi")  # T-1: timestamp, relative offset
INDEX_INTERVAL_BYTES = 4096             # I-2
PREALLOCATE_BYTES = 8 * 1024 * 1024     # growth step of the active segment


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
        # O_NOFOLLOW: a symlink planted in a partition directory is refused.
        self.fd = os.open(self.path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        self._map: mmap.mmap | None = None
        self._map_len = 0
        self._index_cache: tuple[int, bytes] | None = None
        self._index_ok: bool | None = None

    # -- mapping ---------------------------------------------------------
    def file_size(self) -> int:
        return os.fstat(self.fd).st_size

    def mapped(self, need: int) -> mmap.mmap | None:
        """A map covering at least ``need`` bytes (remapped when the file grew).

        Returns None for an empty file. Raises CorruptLogError when the file is
        shorter than ``need`` (someone truncated it under us).
        """
        if self._map is not None and self._map_len >= need:
            return self._map
        size = self.file_size()
        if size < need:
            raise CorruptLogError(
                f"segment is {size} bytes but its data should reach {need}",
                self.path, size)
        if size == 0:
            return None
        self.unmap()
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if self.writable else 0)
        self._map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, prot)
        self._map_len = size
        return self._map

    def unmap(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
            self._map_len = 0

    def preallocate(self, size: int) -> None:
        """Reserve blocks up to ``size`` bytes (ENOSPC surfaces here, G8)."""
        if self.file_size() >= size:
            return
        try:
            os.posix_fallocate(self.fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            # Filesystems without fallocate: extend by writing zeros so the
            # blocks exist before the map touches them.
            cur = self.file_size()
            zeros = bytes(min(1 << 20, size - cur))
            while cur < size:
                n = os.pwrite(self.fd, zeros[:size - cur], cur)
                cur += n

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

    def append_index(self, rel_offset: int, position: int, max_timestamp: int) -> None:
        """Append one .index and one .timeindex entry (I-2, T-2)."""
        _append_file(self.index_path, INDEX_ENTRY.pack(rel_offset, position))
        _append_file(self.timeindex_path,
                     TIMEINDEX_ENTRY.pack(max_timestamp, rel_offset))

    def append_indexes(self, index_entries, timeindex_entries) -> None:
        """Append many entries at once (recovery of the tail, I-3)."""
        _append_file(self.index_path, b"".join(
            INDEX_ENTRY.pack(r, p) for r, p in index_entries))
        _append_file(self.timeindex_path, b"".join(
            TIMEINDEX_ENTRY.pack(t, r) for t, r in timeindex_entries))

    def append_timeindex(self, max_timestamp: int, rel_offset: int) -> None:
        """The final entry of a sealed segment: its max timestamp (T-3)."""
        _append_file(self.timeindex_path,
                     TIMEINDEX_ENTRY.pack(max_timestamp, rel_offset))

    def write_indexes(self, index_entries, timeindex_entries) -> None:
        """Replace both index files atomically (rebuild, I-3)."""
        _replace_file(self.index_path,
                      b"".join(INDEX_ENTRY.pack(r, p) for r, p in index_entries))
        _replace_file(self.timeindex_path,
                      b"".join(TIMEINDEX_ENTRY.pack(t, r)
                               for t, r in timeindex_entries))

    def truncate_indexes(self, position: int) -> tuple[int, int]:
        """Drop index entries at or past ``position``; return the last kept
        entry's (relative offset, position) or (-1, 0)."""
        idx = self.read_index()
        bad = _native.index_validate(idx, max(position, 1) + 2**31)
        if bad is not None:
            idx = idx[:bad - bad % INDEX_ENTRY.size]
        keep = 0
        last = (-1, 0)
        for i in range(0, len(idx) - len(idx) % 8, 8):
            rel, pos = INDEX_ENTRY.unpack_from(idx, i)
            if pos >= position:
                break
            keep = i + 8
            last = (rel, pos)
        tidx = self.read_timeindex()
        tkeep = min(len(tidx) - len(tidx) % 12, (keep // 8) * 12)
        _replace_file(self.index_path, idx[:keep])
        _replace_file(self.timeindex_path, tidx[:tkeep])
        return last

    def close(self) -> None:
        self.unmap()
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
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return b""
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def _append_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                 | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _replace_file(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                 | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def fsync_dir(path: str) -> None:
    """Make a created, renamed or deleted directory entry durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
