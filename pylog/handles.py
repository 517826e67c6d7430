"""Bounded file descriptors: the Log's cache of open segment handles, the
default bound taken from RLIMIT_NOFILE, and maps that hold no descriptor.

A Log may have any number of topics, partitions and segments; the
descriptors it holds must not grow with them (RocksDB's
``max_open_files``). What holds descriptors, and how each is bounded:

* an open segment: its ``.log`` descriptor, and the duplicate Python's
  ``mmap`` keeps of it; a writer's active segment adds its two index
  descriptors and the group-commit syncer's duplicate. Every segment that
  a reader or writer opens is registered here with what it costs
  (:data:`READER_COST`, :data:`WRITER_COST`) and closed again,
  least recently used first, once the total passes the bound; the owner
  reopens it on its next use.
* a partition's ``partition.state``: mapped with :func:`map_file`, which
  keeps no descriptor, and closed once mapped where the append lock does
  not need it (the futex lock of Linux, FORMAT.rst P-3). What remains per
  partition is one 4 KiB map and no descriptor.
* per Log: the lock file, LMDB's files and the doorbell (a fixed handful).

Eviction is second chance (CLOCK): a use sets the handle's ``used`` flag
(one attribute store, cheap enough for the append path); the sweep clears
set flags and closes the first handle found clear. A handle is closed only
by its owner's ``release`` callback, which takes the owner's lock without
waiting: a handle in use by an in-flight read or append (its owner's lock
held) is skipped, never closed under it.

Thread safety: :class:`HandleCache` is thread-safe (one re-entrant lock;
owners' locks are only ever tried, never waited for, while it is held, so
no lock order can deadlock). Durability: closing a handle changes nothing
on disk; a writer's handle is made durable (fdatasync) before it is
released (pylog.writer).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import resource
import threading
from collections import OrderedDict
from typing import Any, Callable, TypeVar

from .errors import InvalidArgument, TooManyOpenFilesError

_log = logging.getLogger("pylog")

__all__ = ["HandleCache", "MAX_OPEN_FILES_MAX", "MAX_OPEN_FILES_MIN", "READER_COST",
           "WRITER_COST", "default_max_open_files", "map_file",
           "too_many_open_files"]

# descriptors a reader's segment holds: the file and mmap's duplicate
READER_COST = 2
# a writer's active segment: the file, mmap's duplicate, .index, .timeindex
# and the syncer's duplicate (pylog.writer)
WRITER_COST = 5
MAX_OPEN_FILES_MIN = 8             # one writer's segment and a reader's fit
MAX_OPEN_FILES_MAX = 1 << 20
# descriptors left to everything else of the process (LMDB, the lock file,
# sockets, the application's own files) by the default bound
_DEFAULT_MARGIN = 32
_DEFAULT_FLOOR = 64
_DEFAULT_CEILING = 4096
FD_EXHAUSTED = (errno.EMFILE, errno.ENFILE)
_T = TypeVar("_T")


def default_max_open_files(soft_limit: int | None = None) -> int:
    """The default bound: half the process's RLIMIT_NOFILE soft limit less
    a margin, at least 64 and at most 4096 (96 at ``ulimit -n 256``, 480
    at 1024). Half: the other half stays for the application and for
    descriptors held only for the length of a call."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit <= 0:
        return _DEFAULT_CEILING
    return min(max(soft_limit // 2 - _DEFAULT_MARGIN, _DEFAULT_FLOOR), _DEFAULT_CEILING)


def validate_max_open_files(value: Any) -> int:
    """``value`` of the ``max_open_files`` argument, checked (None: the
    default); InvalidArgument otherwise."""
    if value is None:
        return default_max_open_files()
    if isinstance(value, bool) or not isinstance(value, int) \
            or not MAX_OPEN_FILES_MIN <= value <= MAX_OPEN_FILES_MAX:
        raise InvalidArgument(
            f"max_open_files={value!r}; expected None (derived from ulimit -n) "
            f"or an int in [{MAX_OPEN_FILES_MIN}, {MAX_OPEN_FILES_MAX}]")
    return value


def too_many_open_files(exc: OSError, action: str) -> TooManyOpenFilesError:
    """EMFILE/ENFILE met by ``action``, as the PylogError naming the limit
    and the settings that move it."""
    return TooManyOpenFilesError.from_os_error(exc, action)  # type: ignore[return-value]


class HandleCache:
    """The open segment handles of one Log, at most ``limit`` descriptors'
    worth (see the module docstring).

    A handle is any object with a writable ``used`` attribute; its owner
    registers it with :meth:`opened` (cost in descriptors, and a
    ``release(handle) -> bool`` that closes it if the owner's lock is free)
    and unregisters it with :meth:`closed` when it closes it itself.

    Thread safety: thread-safe. Durability: none (see the module)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._lock = threading.RLock()
        # id(handle) -> (handle, cost, release); the sweep's order
        self._handles: OrderedDict[int, tuple[Any, int, Callable[[Any], bool]]] = \
            OrderedDict()
        self._open = 0
        self.evictions = 0            # handles closed to stay in bounds

    @property
    def open_cost(self) -> int:
        """Descriptors the registered handles hold (at most about ``limit``)."""
        return self._open

    def __len__(self) -> int:
        return len(self._handles)

    def opened(self, handle: Any, cost: int, release: Callable[[Any], bool]) -> None:
        """Register ``handle`` (just opened, in use by the caller) and close
        others, least recently used first, until the total is in bounds."""
        with self._lock:
            key = id(handle)
            old = self._handles.pop(key, None)
            if old is not None:
                self._open -= old[1]
            handle.used = True
            self._handles[key] = (handle, cost, release)
            self._open += cost
            if self._open > self.limit:
                self._evict(self._open - self.limit, keep=handle)

    def closed(self, handle: Any) -> None:
        """``handle`` was closed by its owner: forget it (idempotent)."""
        with self._lock:
            entry = self._handles.pop(id(handle), None)
            if entry is not None:
                self._open -= entry[1]

    def shrink(self) -> int:
        """Close every handle not in use (after EMFILE: make room for the
        call that met it); return how many descriptors that freed."""
        with self._lock:
            before = self._open
            self._evict(self._open, keep=None, second_chance=False)
            return before - self._open

    def _evict(self, need: int, *, keep: Any, second_chance: bool = True) -> None:
        """Close handles until ``need`` descriptors' worth are freed or every
        handle was visited twice. Under self._lock."""
        freed = 0
        budget = 2 * len(self._handles)
        while freed < need and budget > 0 and self._handles:
            budget -= 1
            key, (handle, cost, release) = next(iter(self._handles.items()))
            self._handles.move_to_end(key)
            if handle is keep:
                continue
            if second_chance and handle.used:
                handle.used = False
                continue
            # release() closes it and calls closed(), or leaves it (in use)
            try:
                released = release(handle)
            except OSError as exc:       # (a close that failed: keep going)
                _log.warning("closing an idle segment failed: %s", exc)
                released = False
            if released:
                if self._handles.pop(key, None) is not None:
                    self._open -= cost       # (its owner did not call closed())
                freed += cost
                self.evictions += 1

    def retry(self, action: str, call: Callable[[], _T]) -> _T:
        """``call()``; on EMFILE/ENFILE close every idle handle and call it
        once more; if it fails so again, raise TooManyOpenFilesError naming
        ``action``. Other errors propagate unchanged."""
        try:
            return call()
        except OSError as exc:
            if exc.errno not in FD_EXHAUSTED or isinstance(exc, TooManyOpenFilesError):
                raise
            if not self.shrink():
                raise too_many_open_files(exc, action) from None
        try:
            return call()
        except OSError as exc:
            if exc.errno not in FD_EXHAUSTED or isinstance(exc, TooManyOpenFilesError):
                raise
            raise too_many_open_files(exc, action) from None


# -- maps without a descriptor ------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                  ctypes.c_int, ctypes.c_int64]
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value
_MAP_TYPES: dict[int, Any] = {}


def _map_type(size: int) -> Any:
    """A ctypes char array type of ``size`` bytes that unmaps itself when
    the last reference to it goes (a native pointer from
    ``_native.pointer`` holds one)."""
    t = _MAP_TYPES.get(size)
    if t is None:
        def __del__(self: Any) -> None:
            _munmap(ctypes.addressof(self), size)
        t = _MAP_TYPES[size] = type(f"FileMap{size}", (ctypes.c_char * size,),
                                    {"__del__": __del__})
    return t


def map_file(fd: int, size: int, *, writable: bool) -> Any:
    """A shared map of the first ``size`` bytes of ``fd`` that, unlike
    Python's ``mmap``, keeps no duplicate of the descriptor: the caller may
    close ``fd`` at once. The map supports the buffer protocol and slicing
    (bytes); it is unmapped when the last reference to it goes, never
    explicitly (a thread may be using it without the GIL). Raises OSError."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    addr = _mmap(None, size, prot, mmap.MAP_SHARED, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return _map_type(size).from_address(addr)
