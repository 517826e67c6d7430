"""Checks of the LMDB data file ``meta/data.mdb`` around
:mod:`pylog.metadata`'s use of it (FORMAT.rst M-9, L-6; full disks, G8):

* :func:`check_lmdb_size` refuses a file shorter than its own meta page
  says before LMDB maps it (M-9);
* :func:`refuse_second_environment` refuses to open the metadata of a log
  this process has open under another path;
* :func:`refuse_lost_lock_file` and :func:`refuse_lost_writer_lock`
  refuse to open beside other processes when ``lock.mdb`` or
  ``meta.lock`` was deleted under them (L-6);
* :func:`refuse_lost_metadata` refuses to start an empty metadata store
  over existing partition directories (L-6): ``data.mdb`` missing, empty
  (LMDB would initialise a 0-byte file as a new environment) or a new
  environment pylog never wrote;
* :func:`lmdb_disk_full` tells a full disk among LMDB's write errors,
  which carry no errno and report a short write as EIO;
* :class:`ReaderReaper` frees the reader slots of dead processes.

Thread safety: stateless functions over paths; safe from any thread
(:class:`ReaderReaper` says its own).
Durability: they only read (files, ``statvfs``); nothing here writes
but :class:`ReaderReaper` (lock.mdb's reader table).
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import struct
import time

import lmdb

from .errors import CorruptLogError, FileVanishedError, LogFailedError, PylogError
from .files import DISK_FULL_ERRNOS, allocate, disk_full_error, open_regular

# LMDB's meta pages (pages 0 and 1 of data.mdb), 64-bit layout: a 16-byte
# page header, then MDB_meta: magic, version, address, mapsize, two MDB_db
# (48 bytes each; the first one's md_pad holds the page size), last_pg, txnid.
_LMDB_MAGIC = 0xBEEFC0DE
_META_MAGIC_AT = 16
_META_PAGESIZE_AT = 40
_META_LAST_PG_AT = 136
_META_TXNID_AT = 144

# liblmdb writes a commit's dirty pages in chunks of at most MDB_COMMIT_PAGES
# (64) pages; a chunk cut short by a full filesystem leaves less than that
# free (the short write took the rest)
_LMDB_CHUNK_BYTES = 64 * mmap.PAGESIZE


def check_lmdb_size(path: str) -> None:
    """Refuse a data.mdb shorter than its own meta page says (M-9).

    LMDB maps the file and would touch pages past its end, which kills the
    process with SIGBUS; a truncated file must be an exception instead."""
    data = os.path.join(path, "data.mdb")
    try:
        # a FIFO or symlink there is refused, never opened (it would block)
        fd = open_regular(data, os.O_RDONLY, what="LMDB data file")
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 4096, 0)
        best = None
        for page in (0, 1):
            if page == 1:
                if len(head) < _META_PAGESIZE_AT + 4:
                    break
                psize = struct.unpack_from("=I", head, _META_PAGESIZE_AT)[0]
                if not 512 <= psize <= 65536:
                    break
                meta = os.pread(fd, 160, psize)
            else:
                meta = head[:160]
            if len(meta) < 152 or struct.unpack_from("=I", meta, _META_MAGIC_AT)[0] != _LMDB_MAGIC:
                continue
            psize, = struct.unpack_from("=I", meta, _META_PAGESIZE_AT)
            last_pg, txnid = struct.unpack_from("=QQ", meta, _META_LAST_PG_AT)
            if best is None or txnid > best[0]:
                best = (txnid, last_pg, psize)
    finally:
        os.close(fd)
    if best is None:
        if size:
            raise CorruptLogError("data.mdb has no valid LMDB meta page", data, 0)
        return
    _, last_pg, psize = best
    need = (last_pg + 1) * psize
    if size < need:
        raise CorruptLogError(
            f"data.mdb is {size} bytes but its meta page needs {need} "
            f"(page {last_pg} of {psize} bytes): the file was truncated", data, size)


def data_file_absent(meta: str) -> str | None:
    """How ``meta``/data.mdb holds no metadata at all, in words ("is
    missing", "is empty (0 bytes)"), or None when it is a non-empty file
    (or not a regular file: :func:`check_lmdb_size` refuses that)."""
    try:
        st = os.lstat(os.path.join(meta, "data.mdb"))
    except FileNotFoundError:
        return "is missing"
    except OSError:
        return None         # LMDB's open reports it with its own words
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        return "is empty (0 bytes)"
    return None


def refuse_lost_metadata(root: str, meta: str, how: str) -> None:
    """L-6: the metadata store in ``meta`` is new (``how`` says why: the
    file is missing, empty, or holds no pylog format key). A new log has no
    partition directories; if this one has, its metadata (topics, groups,
    committed offsets) was lost, and starting a fresh, empty one would
    silently drop them, and let a later ``create_topic`` of a name replace
    its directories: raise CorruptLogError."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    found = [n for n in names if "-" in n and not n.endswith("-delete")
             and (os.path.exists(os.path.join(root, n, "partition.state"))
                  or os.path.exists(os.path.join(root, n, "topic.id")))]
    if found:
        raise CorruptLogError(
            f"meta/data.mdb {how} but the log holds partition directories "
            f"({', '.join(sorted(found)[:3])}{', ...' if len(found) > 3 else ''}): "
            "its metadata (topics, groups, committed offsets) was lost. "
            "Refusing to start an empty one over the data; restore data.mdb "
            "from a backup (or, to give up those records, move the partition "
            "directories out of the log)", os.path.join(meta, "data.mdb"))


def lmdb_disk_full(path: str, exc: lmdb.Error) -> str | None:
    """"disk full (...)" when LMDB's failure ``exc`` of a write in ``path``
    (meta/) was a full disk or quota (G8), else None.

    py-lmdb's exceptions carry no errno, only its text. ENOSPC and EDQUOT
    are a full disk; so is EIO when the filesystem has (almost) no space
    left, because liblmdb reports a write cut short (the filesystem filled
    during it) as EIO. An EIO with room to spare stays an I/O error."""
    text = str(exc)
    for code in DISK_FULL_ERRNOS:
        if os.strerror(code) in text:
            return f"disk full ({errno.errorcode[code]})"
    if os.strerror(errno.EIO) not in text:
        return None
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free >= _LMDB_CHUNK_BYTES:
        return None
    return f"disk full (LMDB reports a short write as EIO; {free} bytes free)"


# lock.mdb's size for max_readers=1024 (liblmdb: 1023 reader slots of 64
# bytes after a 192-byte header); a larger file only gives more slots.
_LOCK_FILE_BYTES = 65664


def refuse_unsafe_env_open(envs: dict, path: str, action: str, others: bool) -> None:
    """Refuse to open the LMDB environment in ``path`` (meta/) where LMDB
    would go wrong, creating nothing: :func:`refuse_second_environment`,
    and when ``others`` (other processes hold the log)
    :func:`refuse_lost_lock_file`."""
    refuse_second_environment(envs, path, action)
    if others:
        refuse_lost_lock_file(path, action)


def refuse_second_environment(envs: dict, path: str, action: str) -> None:
    """Refuse to open the environment in ``path`` (meta/) when this process
    has it open under another path (``envs``: pylog.metadata's table, by
    real path; a bind mount shows one directory at two paths). LMDB must
    not open an environment twice in a process: its refused second open
    cleared the reader slots of the first, whose snapshots writers could
    then overwrite, and reported the log as corrupt."""
    try:
        st = os.stat(os.path.join(path, "data.mdb"))
    except OSError:
        return
    for other, ent in envs.items():
        if ent[4].key == (st.st_dev, st.st_ino) and ent[3] == os.getpid():
            raise PylogError(
                f"{action}: this process has the log open already as "
                f"{os.path.dirname(other)} (one directory reached by two paths, "
                "e.g. a bind mount); nothing was changed: use that Log, or "
                "open the log by that path")


def refuse_lost_lock_file(path: str, action: str) -> None:
    """L-6: refuse to open the metadata in ``path`` (meta/) when other
    processes have the log open but ``lock.mdb`` is missing: it was deleted
    under them. They keep using their (unlinked) copy, which holds LMDB's
    reader table; LMDB would make a new one here, and this process's reads
    would then be invisible to their writers, which could reuse the pages
    being read (torn reads, a false CorruptLogError, wrong offsets)."""
    if os.path.lexists(os.path.join(path, "lock.mdb")) or \
            not os.path.lexists(os.path.join(path, "data.mdb")):
        return
    raise FileVanishedError(
        f"{action}: {os.path.join(path, 'lock.mdb')} is missing while other "
        "processes have the log open: it was deleted under them, with LMDB's "
        "table of their readers, and reading beside them without it could "
        "read pages they rewrite. Nothing was changed; close every process "
        "using the log, then open it again")


def refuse_lost_writer_lock(root: str, others: bool) -> None:
    """L-6, L-7: when ``others`` (other processes have the log open), as
    :func:`refuse_lost_lock_file` for ``meta.lock``, the metadata writer
    lock: made anew beside processes that hold the deleted
    one, it would not keep this process's writers from theirs, and one of
    them stopped inside a write would block this process in LMDB's own
    mutex, with no timeout (every thread with it), not MetadataBusyError."""
    lock = os.path.join(root, "meta.lock")
    if not others or os.path.lexists(lock) or \
            not os.path.lexists(os.path.join(root, "meta", "data.mdb")):
        return
    raise FileVanishedError(
        f"open {root} for writing: {lock} is missing while other processes "
        "have the log open: it was deleted under them, and without it this process's "
        "metadata writes would not wait behind theirs. Nothing was changed; "
        "close every process using the log, then open it again")


def refuse_readers_full(action: str, path: str, exc: lmdb.Error) -> None:
    """Raise LogFailedError when LMDB's open of ``path`` (meta/) failed
    because its reader table is full (it reads once as it opens): every
    slot is taken by a live reader or by a process killed while reading
    that no pylog process has freed (each frees them at open and before
    its metadata writes, :class:`ReaderReaper`; this one cannot before it
    has the environment). Not damage: nothing is wrong with the files."""
    if isinstance(exc, lmdb.ReadersFullError):
        raise LogFailedError(
            f"{action}: LMDB's reader table ({os.path.join(path, 'lock.mdb')}) "
            "is full: 1023 readers are registered, by live processes or by "
            "processes killed while reading. Nothing was changed; the next "
            "metadata write of a process that has the log open frees the "
            "dead ones (or close every process using the log)") from None


def allocate_lock_file(path: str) -> None:
    """Create ``lock.mdb`` with its blocks allocated before liblmdb maps it.

    liblmdb sizes a new lock file with ftruncate (sparse) and initializes it
    through a shared map: on a full disk that store is SIGBUS, killing the
    process. An existing file of the right size is used as it is, so doing
    this first turns the full disk into ENOSPC here (DiskFullError)."""
    try:
        fd = open_regular(os.path.join(path, "lock.mdb"), os.O_RDWR | os.O_CREAT,
                          what="LMDB lock file")
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(f"open LMDB metadata in {path}", exc) from exc
        return          # liblmdb reports it with its own words
    try:
        allocate(fd, max(_LOCK_FILE_BYTES, os.fstat(fd).st_size))
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(f"open LMDB metadata in {path}", exc) from exc
        raise
    finally:
        os.close(fd)


# how often a process frees dead processes' reader slots before its writes
_REAP_EVERY_S = 1.0


class ReaderReaper:
    """Frees the LMDB reader slots of dead processes (``mdb_reader_check``).

    A process killed (SIGKILL, the OOM killer) inside a metadata read keeps
    its slot in ``meta/lock.mdb`` with the snapshot it read: while any
    process has the log open, LMDB keeps every page freed since then, so
    each later write grows ``data.mdb`` until the map is full and every
    metadata write fails; and each such slot is one less of the table's
    1023. LMDB frees them only when asked: :meth:`reap` asks at open,
    before a write (at most every ``_REAP_EVERY_S``), and when the table
    is full. A live process's slot is never freed (LMDB tells by its lock
    on lock.mdb), so a stopped reader still holds its snapshot.

    Thread safety: :meth:`reap` may be called from any thread (LMDB takes
    its reader table mutex). Durability: it changes only lock.mdb."""

    __slots__ = ("_env", "_next")

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self._next = 0.0

    def reap(self, now: bool = True) -> int:
        """Free dead processes' slots; how many. ``now=False``: only when
        the last reap is ``_REAP_EVERY_S`` old (0 otherwise)."""
        t = time.monotonic()
        if not now and t < self._next:
            return 0
        self._next = t + _REAP_EVERY_S
        try:
            return self._env.reader_check()
        except lmdb.Error:
            return 0        # (the operation itself reports the trouble)
