"""The commit table: committed offsets at memory speed (FORMAT.rst C-1 to C-7).

``meta/cursors`` is a file every process of the log maps shared: a
4 KiB header (C-1), then 64-byte slots (C-2), one per (group, topic,
partition) that was ever committed, each holding the newest committed
offset. A commit is a store into the map under the slot's lock (csrc/
cursor.c): it survives a SIGKILL of the committing process the moment it
returns, because the page cache outlives the process. LMDB (``offsets``,
M-6) stays the durable home: checkpoints copy the slots that changed into
it (C-5), on the interval, at flush and close, and before a ``sync="always"``
commit returns. After a reboot the table's contents are not trusted (its
pages may have reached the disk in any order): the header's boot id
differs, every slot is cleared, and the offsets come from LMDB again (C-1).

Damage done to the file while Logs have it open (C-7) is the same case
for the slots it reaches: a slot holding what no writer stores, or whose
seq stays odd with no live writer, is emptied under its lock and its key
reads LMDB's durable offset until its next commit claims it again; a
damaged header empties every slot and is written again. Each is logged as
a warning; commits stored in the damaged slots and not yet checkpointed
are lost (redelivery, never a skip), and no call hangs on the garbage.

The slot of a key is found through LMDB (``info``: ``slot``, NUL, offsets
key → slot number, C-3) and cached per process; the slot's own key hash
is checked on every access, so a slot cleared by another process (a
deleted group) is never written as if it were still the key's.

Thread safety: thread-safe; stores of one table are serialized by a lock
per process, the slot locks serialize processes. Not fork-safe: the Log
reopens its metadata (and this table) in a child. Durability: see above;
this module only stores into the map and reads it, the checkpoint itself
is :meth:`pylog.metadata.Metadata.checkpoint_commits`.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
import uuid

from . import status as _status
from ._pylog_native import ffi, lib
from .errors import CorruptLogError, LogFailedError
from .files import allocate_or_full, open_regular
from .handles import FD_EXHAUSTED, too_many_open_files

CURSORS_FILE = "cursors"
_MAGIC = b"PLCURSR1"
_VERSION = 1
_HEADER = struct.Struct("=8sII16s")       # magic, version, slot size, boot id
HEADER_BYTES = lib.PL_CUR_HEADER
SLOT_BYTES = lib.PL_CUR_SLOT
_FIRST_SLOTS = 1024
_DIRTY_BATCH = 4096
# a read-only table cannot take a slot's lock: how long it waits for a
# writer to finish publishing before it reads LMDB instead (C-7)
_READONLY_BUSY_S = 0.05
# a live writer holding a slot's lock this long mid-store is stopped
# (SIGSTOP, a debugger): a writable reader gives up with LogFailedError
_WRITER_BUSY_S = 0.3
_log = logging.getLogger("pylog")

CLAIM = lib.PL_CUR_CLAIM
FENCE = lib.PL_CUR_FENCE
STORE = lib.PL_CUR_STORE
CLEAR = lib.PL_CUR_CLEAR


_BOOT: list[bytes | None] = []       # read once: a process never outlives its boot


def boot_id() -> bytes | None:
    """This boot's identity (Linux), or None where the system gives none:
    then the table is not used at all and commits go to LMDB directly.
    Read once per process; out of descriptors at that first read,
    TooManyOpenFilesError — None would make this process's files look
    like another boot's (a share state rebuilt from LMDB, undoing what
    was applied since its checkpoint; the commit table skipped)."""
    if _BOOT:
        return _BOOT[0]
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            boot: bytes | None = uuid.UUID(f.read().strip().decode()).bytes
    except OSError as exc:
        if exc.errno in FD_EXHAUSTED:
            raise too_many_open_files(exc, "read this boot's id") from None
        boot = None
    except ValueError:
        boot = None
    _BOOT[:] = [boot]
    return boot


def key_hash(okey: bytes) -> int:
    """The 64-bit non-zero hash a slot carries of its offsets key (C-2)."""
    h = int.from_bytes(hashlib.blake2b(okey, digest_size=8).digest(), "little")
    return h or 1


def member_fence(member_id: str | None) -> int:
    """The fence value of a group member (C-4); 0 for no owner."""
    return 0 if member_id is None else key_hash(member_id.encode())


class CursorTable:
    """The mapped ``meta/cursors`` of one Log; see the module docstring.

    ``lock_identity`` is the Log's (token, liveness fd) for the slot locks;
    None opens the table read-only (lock-free reads only)."""

    def __init__(self, meta_dir: str, lock_identity: tuple[int, int] | None,
                 boot: bytes) -> None:
        self.path = os.path.join(meta_dir, CURSORS_FILE)
        self.readonly = lock_identity is None
        self._token, self._live_fd = lock_identity or (0, -1)
        self._boot = boot
        self._mutex = threading.Lock()
        self._checking = threading.Lock()     # one header repair at a time (C-7)
        self._map: mmap.mmap | None = None
        self._base = ffi.NULL
        self._len = 0
        self._seq = ffi.new("uint64_t *")
        self._header = _HEADER.pack(_MAGIC, _VERSION, SLOT_BYTES, boot)
        self.by_okey: dict[bytes, tuple[int, int]] = {}   # C-3 cache: okey -> (slot, hash)
        flags = os.O_RDONLY if self.readonly else os.O_RDWR | os.O_CREAT
        self.fd = open_regular(self.path, flags, what="commit table")
        try:
            self._init_header()
            self._remap()
        except BaseException:
            os.close(self.fd)
            raise

    # -- open ------------------------------------------------------------------------
    def _init_header(self) -> None:
        """C-1: a file of another boot (or a new one) starts over, cleared;
        only a process alone with the file may do that (its flock)."""
        if self.readonly:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            if not self._header_ok():
                raise _Unusable("written before this boot, or not yet")
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        if alone and not self._header_ok():
            self._reset()
        fcntl.flock(self.fd, fcntl.LOCK_SH)      # held while the Log is open
        if not alone and not self._header_ok():
            raise CorruptLogError(
                "the commit table's header is damaged while other processes use "
                "it; close every process of the log and open it again (the "
                "offsets come back from LMDB)", self.path)

    def _header_ok(self) -> bool:
        head = os.pread(self.fd, _HEADER.size, 0)
        if len(head) != _HEADER.size:
            return False
        magic, version, slot, boot = _HEADER.unpack(head)
        return (magic == _MAGIC and version == _VERSION and slot == SLOT_BYTES
                and boot == self._boot
                and os.fstat(self.fd).st_size >= HEADER_BYTES + _FIRST_SLOTS * SLOT_BYTES)

    def _reset(self) -> None:
        os.ftruncate(self.fd, 0)
        allocate_or_full(self.fd, HEADER_BYTES + _FIRST_SLOTS * SLOT_BYTES,
                         f"commit table {self.path}")
        os.pwrite(self.fd, self._header, 0)

    def _remap(self) -> None:
        """Map the whole file again (it grew). The old map stays alive for
        as long as a call in another thread holds a pointer into it."""
        size = os.fstat(self.fd).st_size
        prot = mmap.PROT_READ | (0 if self.readonly else mmap.PROT_WRITE)
        m = mmap.mmap(self.fd, size, mmap.MAP_SHARED, prot)
        self._base = ffi.from_buffer("char[]", m, require_writable=not self.readonly)
        self._map = m
        self._len = size

    def capacity(self) -> int:
        return (self._len - HEADER_BYTES) // SLOT_BYTES

    def ensure(self, slot: int) -> None:
        """Map far enough to reach ``slot``, growing the file when this is
        the allocating writer (the caller holds the metadata writer lock)."""
        if slot < self.capacity():
            return
        need = HEADER_BYTES + (slot + 1) * SLOT_BYTES
        size = os.fstat(self.fd).st_size
        if size < need and not self.readonly:
            target = HEADER_BYTES + max(2 * self.capacity(), slot + 1) * SLOT_BYTES
            # blocks exist: a store never SIGBUSes
            allocate_or_full(self.fd, target, f"commit table {self.path}")
        self._remap()
        if slot >= self.capacity():
            raise CorruptLogError(f"commit table slot {slot} lies past the end of "
                                  "the file", self.path)

    def close(self) -> None:
        """Drop the map and descriptor (the map goes when its last user does)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._map = None
        self._base = ffi.NULL
        self._len = 0

    # -- slots -------------------------------------------------------------------------
    def commit(self, slot: int, key: int, fence: int, offset: int, ms: int) -> int:
        """Store a commit; returns its seq, or a PL_E_STALE / PL_E_FENCED status."""
        with self._mutex:
            base, n = self._base, self._len
            rc = lib.pl_cur_commit(base, n, slot, self._token, self._live_fd, self.fd,
                                   key, fence, offset, ms, self._seq)
            if rc == 0:
                return int(self._seq[0])
        if rc in (_status.E_STALE, _status.E_FENCED):
            return rc
        _status.check(rc, "store a commit in the commit table")
        raise AssertionError("unreachable")

    def set(self, slot: int, key: int, what: int, fence: int = 0,
            offset: int = 0, ms: int = 0) -> int:
        """pl_cur_set: 1 claimed, 0 done, PL_E_STALE (the slot holds another key)."""
        with self._mutex:
            rc = lib.pl_cur_set(self._base, self._len, slot, self._token, self._live_fd,
                                self.fd, key, what, fence, offset, ms)
        if rc == _status.E_STALE:
            return rc
        _status.check(rc, "update the commit table")
        return rc

    def read(self, slot: int, key: int, *, skip_busy: bool = False
             ) -> tuple[int, int, int, int, int] | None:
        """(offset, ms, seq, ckpt_seq, fence), or None when the slot holds
        another key (or none: cleared, or not claimed since the boot), or
        when it is damaged (C-7: emptied here, the caller reads LMDB).
        A slot a live writer is publishing: None at once with
        ``skip_busy`` (the checkpoint leaves it dirty for the next one);
        else waited for, never holding this table's mutex, up to
        _WRITER_BUSY_S, then LogFailedError (a read-only table reads
        LMDB's offset after _READONLY_BUSY_S instead)."""
        out = ffi.new("int64_t[5]")
        deadline = None
        while True:
            rc = lib.pl_cur_read(self._base, self._len, slot, key, out)
            if rc == 0:
                return out[0], out[1], out[2], out[3], out[4]
            if rc == _status.E_STALE:
                return None
            if rc == _status.E_DAMAGED:
                _log.warning("%s: commit table slot %d holds values no writer stores "
                             "(damaged while open, C-7); its offset comes from LMDB",
                             self.path, slot)
                if not self.readonly:
                    self.repair(slot, wait=False)
                return None
            if rc != _status.E_BUSY:
                _status.check(rc, "read the commit table", self.path)
            # a writer is publishing, or died doing it: its lock tells (C-7)
            if not self.readonly and self.repair(slot, wait=False) == 1:
                return None
            if skip_busy:
                return None
            now = time.monotonic()
            if deadline is None:
                deadline = now + (_READONLY_BUSY_S if self.readonly else _WRITER_BUSY_S)
            elif now >= deadline:
                if self.readonly:
                    return None     # LMDB's durable offset: the writer never finished
                raise LogFailedError(
                    f"commit table slot {slot} in {self.path}: a live writer has held "
                    f"it mid-store for {_WRITER_BUSY_S} s (stopped?)")
            time.sleep(0.001)

    def repair(self, slot: int, *, wait: bool, empty: bool = False) -> int:
        """C-7: close a seq a dead writer left odd, empty the slot if it
        holds what no writer stores (or when ``empty``). 1 emptied, 0 sound,
        PL_E_BUSY (a live writer holds it and not ``wait``)."""
        with self._mutex:
            rc = lib.pl_cur_repair(self._base, self._len, slot, self._token,
                                   self._live_fd, self.fd, int(wait), int(empty))
        if rc == _status.E_BUSY:
            return rc
        _status.check(rc, "repair a commit table slot", self.path)
        return rc

    def check(self) -> None:
        """C-7, before a checkpoint: a header overwritten while the table is
        open makes every slot suspect: each is emptied (the offsets come
        from LMDB), then the header is written again."""
        m = self._map
        if self.readonly or m is None or m[:_HEADER.size] == self._header:
            return
        with self._checking:
            if m[:_HEADER.size] != self._header:
                self._rebuild()

    def _rebuild(self) -> None:
        _log.warning("%s: the commit table's header was overwritten while the log "
                     "is open (C-7); emptying every slot: committed offsets come "
                     "from LMDB, commits not yet checkpointed are redelivered", self.path)
        for slot in range(self.capacity()):
            self.repair(slot, wait=False, empty=True)
        os.pwrite(self.fd, self._header, 0)

    def dirty(self) -> list[tuple[int, int, int, int, int]]:
        """Slots changed since their checkpoint: (slot, key, offset, ms, seq).
        Busy or damaged slots met on the way are repaired (C-7), and the
        scan runs again once for the values a repair made readable."""
        for again in (True, False):
            found, bad = self._scan()
            if not bad or self.readonly:
                return found
            emptied = sum(self.repair(slot, wait=False) == 1 for slot in bad)
            if emptied:
                _log.warning("%s: %d commit table slots held values no writer stores "
                             "(damaged while open, C-7); emptied: their offsets come "
                             "from LMDB", self.path, emptied)
            if not again:
                return found
        raise AssertionError("unreachable")

    def _scan(self) -> tuple[list[tuple[int, int, int, int, int]], list[int]]:
        found: list[tuple[int, int, int, int, int]] = []
        bad: list[int] = []
        idx = ffi.new("uint32_t[]", _DIRTY_BATCH)
        vals = ffi.new("int64_t[]", 4 * _DIRTY_BATCH)
        start = 0
        while True:
            n = lib.pl_cur_dirty(self._base, self._len, start, idx, vals, _DIRTY_BATCH)
            _status.check(n, "scan the commit table", self.path)
            for i in range(n):
                if vals[4 * i + 3] == lib.PL_CUR_SEQ_BAD:
                    bad.append(idx[i])
                    continue
                found.append((idx[i], vals[4 * i] & 0xFFFFFFFFFFFFFFFF, vals[4 * i + 1],
                              vals[4 * i + 2], vals[4 * i + 3]))
            if n < _DIRTY_BATCH:
                return found, bad
            start = idx[n - 1] + 1

    def mark(self, slot: int, seq: int) -> None:
        """The value stored with ``seq`` reached LMDB (C-5)."""
        _status.check(lib.pl_cur_mark(self._base, self._len, slot, seq),
                      "mark a commit checkpointed")


class _Unusable(Exception):
    """The table cannot be used by this (read-only) Log: it reads LMDB."""


def open_table(meta_dir: str, lock_identity: tuple[int, int] | None) -> CursorTable | None:
    """The Log's commit table, or None where commits go to LMDB directly:
    no boot id on this system, or a read-only Log of a log whose table was
    not written in this boot (LMDB then has every offset, C-1)."""
    boot = boot_id()
    if boot is None:
        return None
    if lock_identity is None and not os.path.exists(os.path.join(meta_dir, CURSORS_FILE)):
        return None
    try:
        return CursorTable(meta_dir, lock_identity, boot)
    except _Unusable:
        return None
    except PermissionError:
        if lock_identity is None:
            return None         # a reader without access reads LMDB
        raise
