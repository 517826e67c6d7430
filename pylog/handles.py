"""Bounded file descriptors and memory maps: the Log's cache of open
segment handles and partition state maps, the default bounds taken from
RLIMIT_NOFILE and ``vm.max_map_count``, and maps that hold no descriptor.

A Log may have any number of topics, partitions and segments; the
descriptors and memory maps it holds must not grow with them (RocksDB's
``max_open_files``; Linux refuses a process more than ``vm.max_map_count``
maps, 65,530 by default). What holds descriptors, and how each is bounded:

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
  partition is one 4 KiB map and no descriptor, registered here too (no
  descriptor, one map) and unmapped when idle (pylog.sharedstate).
* per Log: the lock file, LMDB's files and the doorbell (a fixed handful).

Maps: every open segment holds one (its data, mapped on first use) and
every partition state one; the cache keeps their number at most
``max_open_maps`` (:func:`default_max_open_maps`), unmapping state maps
first (a remap is an open, a 4 KiB map and a close), then segments. A map
held by a call in flight (a blocked poll, a pointer in native code) stays
until that call returns: the bound counts what the Log holds, not those.

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

from .errors import InvalidArgument, TooManyMapsError, TooManyOpenFilesError

_log = logging.getLogger("pylog")

__all__ = ["HandleCache", "MAX_OPEN_FILES_MAX", "MAX_OPEN_FILES_MIN", "READER_COST",
           "WRITER_COST", "default_max_open_files", "map_file",
           "too_many_open_files", "MAX_OPEN_MAPS_MAX", "MAX_OPEN_MAPS_MIN",
           "default_max_open_maps", "max_map_count", "too_many_maps",
           "validate_max_open_maps"]

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
# maps: a writer's segment, its partition's state and a reader's segment fit
MAX_OPEN_MAPS_MIN = 8
MAX_OPEN_MAPS_MAX = 1 << 24
# the default keeps a quarter of vm.max_map_count: the interpreter, its
# libraries, thread stacks, LMDB and the application map the rest
_MAPS_SHARE = 4
_MAPS_FLOOR = 64
_MAPS_CEILING = 16384
_MAX_MAP_COUNT_DEFAULT = 65530       # Linux's default vm.max_map_count
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
    return _checked_bound("max_open_files", value, MAX_OPEN_FILES_MIN, MAX_OPEN_FILES_MAX,
                          "ulimit -n")


def _checked_bound(name: str, value: Any, lo: int, hi: int, default_from: str) -> int:
    """``value`` of the argument ``name`` when it is an int in [lo, hi];
    InvalidArgument otherwise (None, the default, is derived from
    ``default_from``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"{name}={value!r}; expected None (derived from "
                              f"{default_from}) or an int in [{lo}, {hi}]")
    return value


def max_map_count() -> int:
    """The system's limit of maps per process (``vm.max_map_count``); Linux's
    default where it cannot be read."""
    try:
        with open("/proc/sys/vm/max_map_count", "rb") as f:
            return max(int(f.read().strip()), 1)
    except (OSError, ValueError):
        return _MAX_MAP_COUNT_DEFAULT


def default_max_open_maps(map_count: int | None = None) -> int:
    """The default bound of maps: a quarter of ``vm.max_map_count``, at least
    64 and at most 16,384 (16,382 at Linux's default 65,530). Segments are
    bounded by ``max_open_files`` too (each costs two descriptors or more
    and one map), so at ``ulimit -n 256`` they hold at most 48 of them and
    the rest serve partition states."""
    if map_count is None:
        map_count = max_map_count()
    return min(max(map_count // _MAPS_SHARE, _MAPS_FLOOR), _MAPS_CEILING)


def validate_max_open_maps(value: Any) -> int:
    """``value`` of the ``max_open_maps`` argument, checked (None: the
    default); InvalidArgument otherwise."""
    if value is None:
        return default_max_open_maps()
    return _checked_bound("max_open_maps", value, MAX_OPEN_MAPS_MIN, MAX_OPEN_MAPS_MAX,
                          "vm.max_map_count")


def too_many_maps(exc: OSError, action: str, held: int | None = None) -> TooManyMapsError:
    """ENOMEM met by an mmap of ``action``, as the PylogError naming the
    limit and the settings that move it (``held``: maps the Log holds)."""
    count = max_map_count()
    mine = "" if held is None else f", {held} of them this Log's"
    return TooManyMapsError(
        f"{action}: out of memory maps (ENOMEM): the process reached its limit "
        f"of maps (vm.max_map_count={count}{mine}) or of address space; lower "
        "max_open_maps= of pylog.open (the maps a Log keeps for partition "
        "states and segments; default: a quarter of vm.max_map_count) or map "
        "fewer files elsewhere in the process, or raise the limit (sysctl "
        "vm.max_map_count)", errno=exc.errno, strerror=exc.strerror,
        filename=exc.filename)


def too_many_open_files(exc: OSError, action: str) -> TooManyOpenFilesError:
    """EMFILE/ENFILE met by ``action``, as the PylogError naming the limit
    and the settings that move it."""
    return TooManyOpenFilesError.from_os_error(exc, action)  # type: ignore[return-value]


class HandleCache:
    """The open segment handles and partition state maps of one Log, at most
    ``limit`` descriptors' and ``map_limit`` maps' worth (see the module
    docstring).

    A handle is any object with a writable ``used`` attribute; its owner
    registers it with :meth:`opened` (cost in descriptors and in maps, and
    a ``release(handle) -> bool`` that closes it if the owner's lock is
    free) and unregisters it with :meth:`closed` when it closes it itself.

    Thread safety: thread-safe. Durability: none (see the module)."""

    def __init__(self, limit: int, map_limit: int | None = None):
        self.limit = limit
        self.map_limit = default_max_open_maps() if map_limit is None else map_limit
        self._lock = threading.RLock()
        # id(handle) -> (handle, descriptors, maps, release), each in the
        # sweep's order: handles with descriptors (segments), and those
        # with maps only (partition states), swept first for maps
        self._handles: OrderedDict[int, tuple[Any, int, int, Callable[[Any], bool]]] = \
            OrderedDict()
        self._maps_only: OrderedDict[int, tuple[Any, int, int, Callable[[Any], bool]]] = \
            OrderedDict()
        self._open = 0
        self._maps = 0
        self._state_maps = 0          # of _maps, those of _maps_only
        self.evictions = 0            # handles closed to stay in bounds

    @property
    def open_cost(self) -> int:
        """Descriptors the registered handles hold (at most about ``limit``)."""
        return self._open

    @property
    def open_maps(self) -> int:
        """Maps the registered handles hold (at most about ``map_limit``)."""
        return self._maps

    def __len__(self) -> int:
        return len(self._handles) + len(self._maps_only)

    def opened(self, handle: Any, cost: int, release: Callable[[Any], bool],
               maps: int = 1) -> None:
        """Register ``handle`` (just opened, in use by the caller) as ``cost``
        descriptors and ``maps`` maps, and close others, least recently used
        first, until the totals are in bounds."""
        with self._lock:
            self._forget(handle)
            handle.used = True
            ring = self._handles if cost else self._maps_only
            ring[id(handle)] = (handle, cost, maps, release)
            self._open += cost
            self._maps += maps
            if not cost:
                self._state_maps += maps
            if self._open > self.limit:
                self._evict(self._handles, self._fds_over, keep=handle)
            if self._maps > self.map_limit:
                # segments first while they hold more than half the maps
                # (a partition in use needs its state map and one segment
                # map), then states, then segments again
                self._evict(self._handles, self._segments_over, keep=handle)
                self._evict(self._maps_only, self._maps_over, keep=handle)
                self._evict(self._handles, self._maps_over, keep=handle)

    def closed(self, handle: Any) -> None:
        """``handle`` was closed by its owner: forget it (idempotent)."""
        with self._lock:
            self._forget(handle)

    def _forget(self, handle: Any) -> None:
        key = id(handle)
        for ring in (self._handles, self._maps_only):
            entry = ring.pop(key, None)
            if entry is not None:
                self._uncount(entry[1], entry[2])

    def _uncount(self, cost: int, maps: int) -> None:
        self._open -= cost
        self._maps -= maps
        if not cost:
            self._state_maps -= maps

    def _fds_over(self) -> bool:
        return self._open > self.limit

    def _maps_over(self) -> bool:
        return self._maps > self.map_limit

    def _segments_over(self) -> bool:
        return self._maps > self.map_limit and \
            2 * (self._maps - self._state_maps) > self.map_limit

    def shrink(self, *, maps: bool = False) -> int:
        """Close every handle not in use (after EMFILE, or ENOMEM of an mmap:
        make room for the call that met it); return how many descriptors
        (``maps``: maps) that freed."""
        with self._lock:
            fds, held = self._open, self._maps
            for ring in (self._maps_only, self._handles):
                self._evict(ring, lambda: True, keep=None, second_chance=False)
            return held - self._maps if maps else fds - self._open

    def _evict(self, ring: OrderedDict[int, tuple[Any, int, int, Callable[[Any], bool]]],
               over: Callable[[], bool], *, keep: Any, second_chance: bool = True) -> None:
        """Close handles of ``ring`` while ``over()`` or until every one was
        visited twice. Under self._lock."""
        budget = 2 * len(ring)
        while over() and budget > 0 and ring:
            budget -= 1
            key, (handle, cost, maps, release) = next(iter(ring.items()))
            ring.move_to_end(key)
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
                if ring.pop(key, None) is not None:
                    self._uncount(cost, maps)    # (its owner did not call closed())
                self.evictions += 1

    def retry(self, action: str, call: Callable[[], _T], *, maps: bool = False) -> _T:
        """``call()``; on EMFILE/ENFILE (and with ``maps``, on ENOMEM: an
        mmap) close every idle handle and call it once more; if it fails so
        again, raise TooManyOpenFilesError or TooManyMapsError naming
        ``action``. Other errors propagate unchanged."""
        try:
            return call()
        except OSError as exc:
            if not _exhausted(exc, maps):
                raise
            enomem = exc.errno == errno.ENOMEM
            if not self.shrink(maps=enomem):
                raise self._error(exc, action) from None
        try:
            return call()
        except OSError as exc:
            if not _exhausted(exc, maps):
                raise
            raise self._error(exc, action) from None

    def _error(self, exc: OSError, action: str) -> OSError:
        if exc.errno == errno.ENOMEM:
            return too_many_maps(exc, action, self._maps)
        return too_many_open_files(exc, action)


def _exhausted(exc: OSError, maps: bool) -> bool:
    """Is ``exc`` running out of descriptors (or, ``maps``, of maps), and
    not already reported as such?"""
    if isinstance(exc, (TooManyOpenFilesError, TooManyMapsError)):
        return False
    return exc.errno in FD_EXHAUSTED or (maps and exc.errno == errno.ENOMEM)


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
