"""A partition's shared state file, ``partition.state`` (FORMAT.rst P-2,
P-3): the seqlocked record of the committed end that every process maps,
and the partition's append lock that lives in the same file.

The record (P-2) says where the partition ends: next offset, active segment
and byte position, its max timestamp, the layout generation (bumped when
segments appear or go) and the log start offset. A reader learns whether
anything is new with one memory read, no syscall. The append lock (P-3) is a
futex word in the same map naming the holding Log by a token whose liveness
the kernel tracks (an OFD lock on ``pylog.lock``): free of syscalls when
uncontended, taken over when its holder died, so a SIGKILLed writer never
wedges the others. A takeover raises a flag in the same map that stays up
until a writer has cleaned up what the dead holder left (pylog.writer).

Thread safety: threads of one process are serialized by :attr:`wlock`
(a ``threading.Lock``) before they take the append lock, because the OFD
lock belongs to the file description all of them share: a second thread
"taking" it would succeed, and its unlock would drop the first's.
Publishing and the index position word are for the holder of both locks.
Reading the record is lock-free (the seqlock). Durability: none; the file
is rebuilt by recovery (P-4) after the last process closes or crashes.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter

from . import _format, _native
from ._crossproc import clear_state_takeover, state_taken_over
from ._locks import free_in_child, try_acquire
from .errors import CorruptLogError, PylogError
from .files import NotARegularFile, allocate, open_regular, set_aside
from .handles import map_file, too_many_maps

_log = logging.getLogger("pylog")

STATE_FILE = "partition.state"
STATE_FILE_BYTES = 4096
# P-2: the record's first field, "PLST" in the host byte order the C
# side writes it in
STATE_MAGIC = _native.STATE_MAGIC.to_bytes(4, sys.byteorder)
DELETED = -1             # P-2: next_offset of a deleted partition
# P-7: the durable mark the syncer writes after each fdatasync
_DURABLE = struct.Struct("=qqqQ")
_LOCK_WORD = struct.Struct("=I")          # P-3: the append lock holder's token
_MASK64 = (1 << 64) - 1


def mix64(z: int) -> int:
    """splitmix64's finalizer (P-7), as csrc/sync.c computes it."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def durable_check(base: int, position: int, next_offset: int) -> int:
    """The check word of a durable mark (P-7)."""
    h = mix64(_format.STATE_MAGIC ^ (base & _MASK64))
    h = mix64(h ^ (position & _MASK64))
    return mix64(h ^ (next_offset & _MASK64))
# The append lock (P-3) is a futex word where the kernel has OFD locks
# (csrc/lock.c, Linux): the state file's descriptor is not needed once the
# file is mapped. Elsewhere the lock is an fcntl lock on that descriptor.
LOCK_NEEDS_FD = not sys.platform.startswith("linux")


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


class SharedState:
    """``partition.state`` of one partition, mapped (file model: see the
    module docstring).

    Thread safety: reads are lock-free (seqlock); :meth:`publish` and the
    index position are for the thread holding :attr:`wlock` and the append
    lock (:meth:`lock`). Durability: none; recovery rebuilds the file.

    ``map`` is None when a read-only opener found no state file (recovery
    then computes the state in memory). ``fd`` is -1 then, and also once
    the file is mapped unless the append lock needs it (LOCK_NEEDS_FD).

    Bounded maps: registered in the Log's handle cache ``handles`` (one
    map, no descriptor), the map is dropped while idle (:meth:`_release`:
    neither :attr:`wlock` nor the append lock held, no unmap hook refusing)
    and mapped again by the next use of ``map``, ``ptr`` or ``rptr``. A
    file no longer at the path by then (its topic deleted) reads as a
    deleted partition (P-2)."""

    def __init__(self, directory: str, readonly: bool, lock_identity, handles=None):
        self.directory = directory
        self.readonly = readonly
        # (token, liveness fd) naming the owning Log in the append lock (P-3)
        self.lock_identity = lock_identity
        # writers of this process; RLocks for their owner record (used by
        # pylog._locks.try_acquire), never re-entered
        self.wlock = free_in_child(threading.RLock())   # (fork: Writer._forked)
        self.lock_owner: int | None = None     # thread holding the append lock
        self._ptr = None          # writable native pointer (writers)
        self._rptr = None         # native pointer for reads
        self._map = None
        # the handle cache (pylog.handles) and its recently-used flag;
        # _evicted: the map was dropped and is mapped again on use;
        # _file: (st_dev, st_ino) of the file mapped
        self.handles = handles
        self.used = False
        self._evicted = False
        self._file: tuple[int, int] | None = None
        self._remap_lock = threading.RLock()
        # called under wlock before the map is dropped; one returning False
        # keeps it (a writer whose group commit is in flight)
        self.unmap_hooks: list = []
        # set by the Partition: does the directory still hold the topic
        # incarnation (L-4) this state was first mapped for?
        self.same_incarnation: Callable[[], bool] | None = None
        self._open_map()

    def _open_map(self) -> None:
        """Open and map the state file (the map stays None when a read-only
        opener finds none, or one too short to be a state file)."""
        readonly = self.readonly
        path = os.path.join(self.directory, STATE_FILE)
        flags = os.O_RDONLY if readonly else os.O_RDWR | os.O_CREAT
        try:
            self.fd = open_regular(path, flags, what="partition state file")
        except FileNotFoundError:
            self.fd = -1
        except NotARegularFile as exc:
            # rebuilt by recovery (P-4) like a missing one; a writer puts a
            # regular file in its place
            if readonly:
                self.fd = -1
            else:
                _log.warning("%s; renamed to %s", exc, set_aside(path))
                self.fd = open_regular(path, flags, what="partition state file")
        if self.fd < 0:
            return
        if not readonly:
            # blocks first, map second: a sparse page touched through the
            # map on a full disk is SIGBUS, this is ENOSPC
            try:
                allocate(self.fd, STATE_FILE_BYTES)
            except BaseException:
                os.close(self.fd)
                raise
        try:
            st = os.fstat(self.fd)
            if st.st_size >= STATE_FILE_BYTES:
                self._file = (st.st_dev, st.st_ino)
                fd = self.fd
                # map_file keeps no descriptor (Python's mmap would keep a
                # duplicate): a partition at rest holds none (pylog.handles)
                self._bind(self._map_retrying(lambda: map_file(
                    fd, STATE_FILE_BYTES, writable=not readonly)))
                self._register()
        finally:
            if not LOCK_NEEDS_FD:
                os.close(self.fd)
                self.fd = -1

    def attach(self) -> bool:
        """Read-only: map the state file if it was missing at open and a
        writer has since created it; True when mapped."""
        if self._map is None and not self._evicted and self.readonly:
            with self._remap_lock:        # (threads of a reader share it)
                if self._map is None and not self._evicted:
                    if self.fd >= 0:      # a file too short at the last try
                        os.close(self.fd)
                        self.fd = -1
                    self._open_map()
        return self.map is not None

    # -- the map, dropped while idle -----------------------------------------
    @property
    def map(self):
        """The state map (None: no state file, or closed)."""
        m = self._map
        if m is None:
            m = self._mapped()[0]
        self.used = True
        return m

    @property
    def ptr(self):
        """Writable native pointer into the map (writers; None as ``map``)."""
        p = self._ptr
        if p is None:
            p = self._mapped()[1]
        self.used = True
        return p

    @property
    def rptr(self):
        """Native pointer for reads (None as ``map``)."""
        p = self._rptr
        if p is None:
            p = self._mapped()[2]
        self.used = True
        return p

    def ptr_if_mapped(self):
        """``ptr`` without mapping again: what a call pins to keep the map
        it started with alive (Writer._sync_through)."""
        return self._ptr

    def _bind(self, m) -> None:
        self._rptr = self._ptr = None
        if m is not None and not self.readonly:
            self._ptr = _native.pointer(m)
        self._rptr = self._ptr or (None if m is None else _native.pointer(m, writable=False))
        self._map = m

    def _map_retrying(self, call):
        """``call()`` (a map_file), through the handle cache's retry: out
        of maps or descriptors, it unmaps idle ones and tries again, then
        raises TooManyMapsError / TooManyOpenFilesError."""
        action = f"map {os.path.join(self.directory, STATE_FILE)}"
        if self.handles is not None:
            return self.handles.retry(action, call, maps=True)
        try:
            return call()
        except OSError as exc:
            if exc.errno == errno.ENOMEM:
                raise too_many_maps(exc, action) from None
            raise

    def _register(self) -> None:
        """Count the map in the handle cache, which may drop it when idle;
        not where the append lock needs the descriptor (LOCK_NEEDS_FD)."""
        if self.handles is not None and not LOCK_NEEDS_FD:
            self.handles.opened(self, 0, self._release, maps=1)

    def _mapped(self):
        """(map, ptr, rptr) as one consistent triple, the map made again
        first if the cache dropped it (under the lock the drop takes, so
        the triple cannot be dropped half-read)."""
        with self._remap_lock:
            if self._map is None and self._evicted:
                self._remap()
            return self._map, self._ptr, self._rptr

    def _remap(self) -> None:
        """Map the state file again after the cache dropped it (under
        _remap_lock). A file that is no longer the one first mapped
        (deleted, maybe made again by a new topic of the same name) reads
        as a deleted partition (P-2)."""
        path = os.path.join(self.directory, STATE_FILE)

        def open_map():
            try:
                fd = open_regular(path, os.O_RDONLY if self.readonly else os.O_RDWR,
                                  what="partition state file")
            except (FileNotFoundError, NotARegularFile):
                return None
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) != self._file or \
                        st.st_size < STATE_FILE_BYTES:
                    return None
                # a new incarnation's file may have the old one's inode
                # number (freed, then reused): its topic id tells (L-4)
                if self.same_incarnation is not None and not self.same_incarnation():
                    return None
                return map_file(fd, STATE_FILE_BYTES, writable=not self.readonly)
            finally:
                os.close(fd)
        m = self._map_retrying(open_map)
        if m is None:
            self._bind(_deleted_state())
            self._evicted = False      # (nothing to drop: a private page)
            return
        self._bind(m)
        self._evicted = False
        self._register()

    def _release(self, _handle) -> bool:
        """The handle cache's call: drop the map unless it is in use (the
        writer lock or the append lock held, a hook refusing); True when
        dropped. A thread that read a pointer before keeps the map alive
        until it lets go of it (the map unmaps itself then)."""
        if not try_acquire(self.wlock):
            return False
        try:
            if not try_acquire(self._remap_lock):
                return False
            try:
                if self.lock_owner is not None or self._map is None:
                    return False
                for hook in self.unmap_hooks:
                    if not hook():
                        return False
                self._map = self._ptr = self._rptr = None
                self._evicted = True
                if self.handles is not None:
                    self.handles.closed(self)
                return True
            finally:
                self._remap_lock.release()
        finally:
            self.wlock.release()

    # -- the record (P-2) ---------------------------------------------------
    def has_magic(self) -> bool:
        m = self.map
        return m is not None and m[:4] == STATE_MAGIC

    def read(self):
        """The record's values, or None when it is uninitialised or a
        writer is in the middle of publishing it."""
        return _native.state_read(self.map)

    def initialized(self) -> bool:
        m = self.map
        return m is not None and _native.state_read(m) is not None and \
            m[:4] == STATE_MAGIC

    def repair(self):
        """The record's values after repairing an odd sequence left by a
        writer that died while publishing, under its (now released) lock."""
        if self.readonly:
            raise CorruptLogError("partition state is being rewritten by a "
                                  "writer that died", self.directory)
        if self.lock_owner == threading.get_ident():
            # this thread holds the lock (in an append): the odd sequence is
            # a dead process's
            _native.state_repair(self.map)
            return self.read()
        with self.wlock:
            self.lock()
            try:
                _native.state_repair(self.map)
                return self.read()
            finally:
                self.unlock()

    def publish(self, next_offset, base, pos, max_ts, gen, start) -> None:
        """Publish a new end (seqlocked); the caller holds the append lock."""
        _native.state_publish(self.map, next_offset, base, pos, max_ts, gen, start)

    def durable_mark(self) -> tuple[int, int, int] | None:
        """The durable mark (P-7): ``(segment base, position, next offset)``,
        bytes of that segment before ``position`` fdatasync'd; None when the
        file holds none or a torn one (its check word fails)."""
        m = self.map
        if m is None or m[:4] != STATE_MAGIC:
            return None
        base, pos, nxt, check = _DURABLE.unpack_from(m, _format.STATE_DURABLE)
        if check != durable_check(base, pos, nxt) or base < 0 or pos < 0 or nxt < base:
            return None
        return base, pos, nxt

    def store_durable_mark(self, base: int, position: int, next_offset: int) -> None:
        """Store a durable mark (P-7) after an fdatasync of segment ``base``
        made its bytes before ``position`` durable, outside the native
        syncer (a segment synced by path). A store racing another tears the
        mark, whose check word then fails: it is ignored, never wrong."""
        m = self.map
        if m is None or self.readonly:
            return
        _DURABLE.pack_into(m, _format.STATE_DURABLE, base, position, next_offset,
                           durable_check(base, position, next_offset))

    def index_position(self) -> int:
        """Position of the batch of the active segment's last index entry
        (P-3, I-2); for the append lock's holder."""
        return _native.state_index_position(self.map)

    def set_index_position(self, position: int) -> None:
        _native.set_state_index_position(self.map, position)

    def taken_over(self) -> bool:
        """Is the append lock, which the caller holds, taken over from a dead
        holder whose leftovers past the published end are still on disk
        (P-3)? The flag stays set until :meth:`clear_takeover`, so a taker
        that dies before cleaning up leaves the work to the next one."""
        m = self.map
        return m is not None and state_taken_over(m)

    def clear_takeover(self) -> None:
        """The dead holder's leftovers are gone (P-3); for the lock holder."""
        clear_state_takeover(self.map)

    # -- counters (P-10, P-11) ---------------------------------------------
    def count_append(self, records: int, nbytes: int) -> None:
        """Count an append made outside the native appends (P-10); for the
        append lock's holder."""
        if self.ptr is not None:
            _native.count_append(self.ptr, records, nbytes)

    def count_fetch(self, records: int) -> None:
        """Count a fetch that gave a consumer ``records`` records (P-10).
        A read-only opener's map cannot be written: its fetches are not
        counted. Best effort: never raises (see :meth:`_counter_ptr`)."""
        ptr = self._counter_ptr()
        if ptr is not None:
            _native.count_fetch(ptr, records)

    def synced(self, sync: Callable[[], object]) -> None:
        """Run ``sync`` (an fdatasync of one of the partition's segments)
        and count it with its latency (P-11), also when it raises; only
        ``sync`` raises, never the counting."""
        t0 = time.monotonic_ns()
        try:
            sync()
        finally:
            ptr = self._counter_ptr()
            if ptr is not None:
                _native.count_fsync(ptr, time.monotonic_ns() - t0)

    def _counter_ptr(self):
        """``ptr`` for a counter (P-10, P-11), or None when the dropped map
        cannot be made again (out of maps or descriptors): counters are
        for monitoring only, and their caller has already done its work
        (moved a consumer's cursor, synced a segment), which a raise here
        would report as failed."""
        try:
            return self.ptr
        except (OSError, PylogError) as exc:
            _log.debug("counter of %s not updated: %s", self.directory, exc)
            return None

    def counters(self) -> tuple[int, ...] | None:
        """The P-10 and P-11 counters (pl_counters_read's order), or None
        without a mapped state file."""
        if self.rptr is None:
            return None
        return _native.counters_read(self.rptr)

    # -- the append lock (P-3) ---------------------------------------------
    def lock(self, wait: bool = True) -> bool:
        """Take the append lock; the caller holds :attr:`wlock`. Returns
        False only when ``wait`` is false and the lock is busy."""
        token, live_fd = self.lock_identity
        if self._lock_word() == token:
            # This Log holds it already: a KeyboardInterrupt landed as an
            # earlier lock() took it or as an unlock() began (Python handles
            # signals at a call's return and at a function's entry). The
            # caller holds wlock, so no other thread of this Log is between
            # lock() and unlock(): nothing was left half done, keep it.
            self.lock_owner = threading.get_ident()
            return True
        try:
            if not _native.plock_acquire(self.ptr, token, live_fd, self.fd, wait):
                return False
            self.lock_owner = threading.get_ident()
        except BaseException:
            # an interrupt at a call's return may follow the native acquire:
            # the lock word says whether it was taken
            if self._lock_word() == token:
                self.unlock_quietly()
            raise
        return True

    def _lock_word(self) -> int | None:
        """The token of the append lock's holder (0: free; the futex build,
        i.e. Linux) or None without a mapped state."""
        m = self.map
        return None if m is None else _LOCK_WORD.unpack_from(m, _format.STATE_LOCK_WORD)[0]

    def unlock(self) -> None:
        self.lock_owner = None
        _native.plock_release(self.ptr, self.lock_identity[0], self.fd)

    def unlock_quietly(self) -> None:
        try:
            self.unlock()
        except OSError:
            pass

    def close(self) -> None:
        """Drop the map and close the file. The map is not unmapped here: a
        thread may be reading it through its pointer with the GIL released;
        dropping our references unmaps it once the last such call returns."""
        with self._remap_lock:
            self._evicted = False        # never mapped again
            self._ptr = self._rptr = None
            self._map = None
        if self.handles is not None:
            self.handles.closed(self)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# L-2: every process that has the log open for writing holds a read lock on
# byte 0 of this file in the log directory for as long as it has it open
LOCK_FILE = "pylog.lock"


# L-2: a read-only Log holds a shared OFD lock on this byte of pylog.lock
# (through a read-only descriptor): writers hold byte 0 only
READER_BYTE = 1


def hold_reader_lock(root: str) -> int:
    """A descriptor of ``root``'s pylog.lock holding a shared lock on
    :data:`READER_BYTE` for a read-only Log, or -1 when pylog.lock cannot
    be opened for reading (the Log is then unseen, as it would be without
    this lock). Close it to release the lock."""
    try:
        fd = os.open(os.path.join(root, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        _native.lock(fd, READER_BYTE, 1, "r", True)   # (a probe holds it only briefly)
    except OSError:
        os.close(fd)
        return -1
    return fd


def readers_present(fd: int) -> bool:
    """Whether some read-only Log holds the log whose pylog.lock ``fd``
    (opened for writing) is; probing takes and at once releases a write
    lock on :data:`READER_BYTE`."""
    got = _native.lock(fd, READER_BYTE, 1, "w", False)
    if got:
        _native.lock(fd, READER_BYTE, 1, "u", False)
    return not got


def writers_present(root: str) -> bool:
    """True if some process has the log at ``root`` open for writing (holds
    a lock on pylog.lock, L-2), or if that cannot be probed (see
    :func:`writers_probe`)."""
    return writers_probe(root) is not False


def writers_probe(root: str) -> bool | None:
    """Whether some process has the log at ``root`` open for writing (holds
    a lock on pylog.lock, L-2): None when pylog.lock cannot be opened for
    the probe (a read-only filesystem, no write access to it). Probing
    takes and at once releases a write lock on byte 0."""
    lp = os.path.join(root, LOCK_FILE)
    try:
        fd = os.open(lp, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return None          # cannot probe: callers say what that means
    try:
        got = _native.lock(fd, 0, 1, "w", False)
        if got:
            _native.lock(fd, 0, 1, "u", False)
        return not got
    finally:
        os.close(fd)


def _deleted_state():
    """A private page holding a P-2 record of a deleted partition: what a
    dropped map of a state file since deleted is replaced with."""
    page = (ctypes.c_char * STATE_FILE_BYTES)()     # (malloc: 16-byte aligned)
    _native.state_publish(page, DELETED, 0, 0, -1, 0, 0)
    return page
