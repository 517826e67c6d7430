"""Opening and sizing the files pylog maps or reads: refusing what is not a
regular file, and allocating blocks before a memory map touches them.

Two hazards live here:

* A FIFO, device, directory or symlink planted where a segment, index or
  state file is expected. ``open(2)`` of a FIFO blocks until a peer opens the
  other end (forever), a symlink leads outside the log, a directory fails
  later with a bare ``OSError``. :func:`open_regular` opens with
  ``O_NONBLOCK | O_NOFOLLOW`` (so the open itself never blocks or follows)
  and refuses anything ``fstat`` does not call a regular file.
* A store through a shared map into a file block the filesystem cannot
  allocate (a sparse file on a full disk) kills the process with SIGBUS.
  :func:`allocate` reserves the blocks first, so a full disk surfaces as an
  ``OSError(ENOSPC)`` the caller turns into :class:`~pylog.errors.DiskFullError`.

:func:`open_log_file` also turns a refused open of a partition's file
(EACCES, EPERM: the file's or directory's owner and mode; EROFS: a
read-only mount) into the documented LogPermissionError /
ReadOnlyFilesystemError: a user's setup problem, not damage, and never a
bare built-in error.

Pure functions over file descriptors: thread-safe. Nothing here syncs;
callers fsync what must be durable.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import struct

from .errors import CorruptLogError, DiskFullError, LogOSError, PylogError

# errnos of a full disk or quota (G8)
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# errnos of an open the process is not allowed (mode, owner, read-only mount)
ACCESS_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class NotARegularFile(CorruptLogError):
    """A path where pylog expects a regular file is a symlink, FIFO,
    directory, device or socket. ``path`` names it and ``kind`` says what
    it is."""

    def __init__(self, path: str, kind: str, what: str = "file"):
        self.kind = kind
        super().__init__(f"{what} is a {kind}, not a regular file; refusing "
                         "to open it", path, None)

    def with_path(self, path: str) -> "NotARegularFile":
        return NotARegularFile(path, self.kind)


def file_kind(mode: int) -> str:
    """What ``st_mode`` is, in words (for messages)."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def open_regular(path: str, flags: int, mode: int = 0o644, *,
                 what: str = "file") -> int:
    """``os.open(path, flags)`` that never blocks in open(2), never follows
    a symlink and returns only descriptors of regular files.

    Raises :class:`NotARegularFile` (a CorruptLogError naming ``path``) for
    anything else; other errors (FileNotFoundError, ENOSPC, EACCES) as
    ``OSError``. The returned descriptor is blocking again (O_NONBLOCK has
    no effect on regular files, but is cleared so it is not inherited by
    anything that reopens through /proc)."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV,
                         errno.EOPNOTSUPP):
            # ELOOP: a symlink (O_NOFOLLOW); EISDIR: a directory opened for
            # writing; ENXIO/ENODEV/EOPNOTSUPP: a FIFO without reader, a
            # device or a socket
            try:
                kind = file_kind(os.lstat(path).st_mode)
            except OSError:
                raise exc from None
            if kind != "regular file":
                raise NotARegularFile(path, kind, what) from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(path, file_kind(st.st_mode), what)
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def access_error(exc: OSError, what: str, *, writing: bool) -> LogOSError:
    """``exc`` (EACCES, EPERM or EROFS met opening ``what``, a file of the
    log, for writing or reading) as LogPermissionError or
    ReadOnlyFilesystemError naming the file, its owner and mode, and what
    to do."""
    if exc.errno == errno.EROFS:
        hint = "open the log with readonly=True, or remount the filesystem read-write"
    elif writing:
        hint = ("a process that writes to a log needs write access to its "
                "directories and files: run as the log's owner, or open it "
                "with readonly=True to only read it")
    else:
        hint = ("a reader needs read access to every file of the log: run as "
                "its owner or have them grant read access")
    action = f"open {what} for {'writing' if writing else 'reading'}"
    return LogOSError.from_os_error(exc, action, hint)


def open_log_file(path: str, flags: int, mode: int = 0o644, *,
                  what: str = "file") -> int:
    """:func:`open_regular` for a file of a partition (segment, index),
    with an open refused by permissions or a read-only filesystem raised
    as :func:`access_error` (a PylogError that is still an OSError of that
    errno, LogPermissionError a PermissionError too). Other errors as
    :func:`open_regular`."""
    try:
        return open_regular(path, flags, mode, what=what)
    except OSError as exc:
        if isinstance(exc, PylogError) or exc.errno not in ACCESS_ERRNOS:
            raise
        raise access_error(exc, what, writing=bool(flags & _WRITE_FLAGS)) from None


def allocate(fd: int, size: int) -> None:
    """Make sure the blocks of bytes [0, size) of ``fd`` exist on disk,
    extending the file to ``size`` if it is shorter; data already there is
    kept. Raises ``OSError(ENOSPC)`` on a full disk — before any map could
    touch a missing block (SIGBUS).

    Uses posix_fallocate. Filesystems without it get zeros written past the
    current end; holes inside the current size cannot be filled that way
    without a race against other writers, so there the caller keeps the risk
    it had (such filesystems are rare: tmpfs, ext4, xfs and btrfs have it)."""
    try:
        os.posix_fallocate(fd, 0, size)
        return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    cur = os.fstat(fd).st_size
    zeros = bytes(min(1 << 20, max(0, size - cur)))
    while cur < size:
        cur += os.pwrite(fd, zeros[:size - cur], cur)


def allocate_once(fd: int, size: int) -> None:
    """:func:`allocate`, skipped when the file already has ``size`` bytes
    all backed by blocks: posix_fallocate changes a file's mtime and ctime
    even when it allocates nothing, and a read-only open of a log (``pylog
    info``, ``top``, a monitor) must leave its files as they were. Meant
    for small files (the doorbell). ``st_blocks`` alone cannot tell: it
    counts an extended attribute's block too (ext4, XFS), so a file that
    is all hole (copied with ``cp --sparse=always``, ``rsync -S``) but
    has one looks whole; the file's extents (FIEMAP) decide when the file
    system gives them, else a file with attributes is allocated again."""
    st = os.fstat(fd)
    if st.st_size >= size and st.st_blocks * 512 >= size:
        covered = _extents_cover(fd, size)
        if covered or (covered is None and not _has_xattrs(fd)):
            return
    allocate(fd, size)


_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_HEADER = struct.Struct("=QQIIII")         # struct fiemap
_FIEMAP_EXTENT = struct.Struct("=QQQ16xI12x")     # struct fiemap_extent
_FIEMAP_MAX = 32


def _extents_cover(fd: int, size: int) -> bool | None:
    """Whether extents (written, unwritten or delayed: blocks the file
    system holds for them) cover bytes [0, size) of ``fd``; None when the
    file system does not say (no FIEMAP: tmpfs, NFS, or more extents than
    asked for)."""
    buf = bytearray(_FIEMAP_HEADER.size + _FIEMAP_EXTENT.size * _FIEMAP_MAX)
    _FIEMAP_HEADER.pack_into(buf, 0, 0, size, 0, 0, _FIEMAP_MAX, 0)
    try:
        fcntl.ioctl(fd, _FS_IOC_FIEMAP, buf, True)
    except OSError:
        return None
    mapped = _FIEMAP_HEADER.unpack_from(buf, 0)[3]
    if mapped >= _FIEMAP_MAX:
        return None
    reached = 0
    for i in range(mapped):
        logical, _phys, length, _flags = _FIEMAP_EXTENT.unpack_from(
            buf, _FIEMAP_HEADER.size + i * _FIEMAP_EXTENT.size)
        if logical > reached:
            return False        # a hole before this extent
        reached = max(reached, logical + length)
    return reached >= size


def _has_xattrs(fd: int) -> bool:
    try:
        return bool(os.listxattr(fd))
    except OSError:
        return False


def allocate_or_full(fd: int, size: int, what: str) -> None:
    """:func:`allocate`, with a full disk raised as the DiskFullError of
    ``what`` (the write the caller needed the blocks for)."""
    try:
        allocate(fd, size)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(what, exc) from exc
        raise


def disk_full_error(what: str, exc: OSError) -> DiskFullError:
    """The DiskFullError for ``exc`` (an ENOSPC/EDQUOT OSError) hit while
    doing ``what``."""
    name = errno.errorcode.get(exc.errno or 0, f"errno {exc.errno}")
    return DiskFullError(f"{what}: disk full ({name}); "
                         "free space or lower retention_bytes")


def set_aside(path: str) -> str:
    """Rename a non-regular file of derived data (an index, the partition
    state) to ``<path>.not-regular`` so a regular one can take its place;
    returns the new name. A symlink is renamed, never followed."""
    aside = path + ".not-regular"
    if os.path.isdir(aside) and not os.path.islink(aside):
        shutil.rmtree(aside, ignore_errors=True)
    os.rename(path, aside)
    return aside
