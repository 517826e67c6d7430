"""The Log: a directory holding topics, partitions and consumer groups.

Layout (FORMAT.rst L-*): ``meta/`` (LMDB), ``pylog.lock`` (who has the log
open), ``doorbell`` (shared futex words that wake blocked consumers) and one
``<topic>-<partition>/`` directory per partition.

Opening: every process holds a shared OFD lock on ``pylog.lock`` while the
log is open. The first opener (it gets the lock exclusively: nobody else has
the log open, so any previous user crashed or exited) runs recovery on every
partition (P-4) the last close did not leave clean (P-9), then downgrades to
shared. Cost: after a clean close, one read of each partition's state file;
otherwise proportional to the number of partitions and the unflushed tails
(G7). Closing: the last process to close leaves the clean-shutdown record
(P-9).

Fork (G6): a Log used in a child of ``os.fork()`` reopens itself there (new
LMDB environment, new file descriptions and locks) on first use; consumers
that were members of a group in the parent refuse to work in the child.

Thread safety: a Log and its producers are thread-safe. Durability: see the
``sync`` argument of :func:`open`.
"""

from __future__ import annotations

import builtins
import errno
import logging
import mmap
import os
import shutil
import stat
import threading
import time
import warnings
from typing import Any

from . import _locks, _native, cleanshutdown, heartbeat, topicdirs
from .admin import LogAdmin
from .commitsync import CommitSync
from .config import SYNC_MODES, TopicConfig, validate_topic_name
from .errors import (
    CorruptLogError,
    InvalidArgument,
    LogClosed,
    LogFailedError,
    LogNotFound,
    LogOSError,
    NotALogDirectoryError,
    PartitionNotFound,
    PylogError,
    ReadOnlyLog,
    TopicNotFound,
)
from .expiry import (
    DEFAULT_OFFSETS_RETENTION_MS,
    EXPIRY_CHECK_INTERVAL_S,
    expire_groups,
    validate_offsets_retention_ms,
)
from .files import DISK_FULL_ERRNOS, allocate_once, disk_full_error, open_regular
from .handles import (
    FD_EXHAUSTED,
    HandleCache,
    too_many_open_files,
    validate_max_open_files,
    validate_max_open_maps,
)
from .identity import Identity, vanished
from .metadata import DEFAULT_LOCK_TIMEOUT_S, Metadata
from .partition import Partition
from .segment import fsync_dir
from .sharedstate import LOCK_FILE, hold_reader_lock, readers_present, writers_probe
from .topicadmin import TopicAdmin, _state_marks_deleted

_log = logging.getLogger("pylog")

DOORBELL_FILE = "doorbell"
DOORBELL_SLOTS = 512           # L-3: slot 0 rings for every append
RETENTION_CHECK_INTERVAL_S = 60.0
# L-6: how often the maintenance thread checks that the log's files are
# still at their paths (a few stat calls; sync="always" checks every fsync)
IDENTITY_CHECK_S = 1.0
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p",
                       "fuse.sshfs", "afs", "ceph", "glusterfs", "lustre"}


# How many times this process is a fork() child of the process that imported
# pylog: compared on every checked call (a getpid() per call is a syscall).
FORKS = [0]


def _count_fork() -> None:
    FORKS[0] += 1


os.register_at_fork(after_in_child=_count_fork)

def filesystem_type(path: str) -> str | None:
    """The filesystem type of ``path`` from /proc/mounts (None if unknown)."""
    try:
        with builtins.open("/proc/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split()[:3] for line in f]
    except OSError:
        return None
    path = os.path.realpath(path)
    best, fstype = "", None
    for m in mounts:
        if len(m) == 3:
            mp = m[1].replace("\\040", " ")
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best, fstype = mp, m[2]
    return fstype


class LogStore(TopicAdmin, LogAdmin):
    """An open log directory: files, partitions, topics and metadata.

    Topic administration comes from :class:`~pylog.topicadmin.TopicAdmin`,
    kafka-python's admin names (list_topics, delete_records, delete_group...)
    from :class:`~pylog.admin.LogAdmin`. The public :class:`pylog.Log` (in
    log.py) adds producers, consumers and group administration on top;
    create it with :func:`pylog.open`."""

    def __init__(self, path: str | os.PathLike[str], *, sync: str = "always",
                 readonly: bool = False,
                 sync_interval_ms: int = 1000, allow_network_filesystem: bool = False,
                 metadata_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
                 max_open_files: int | None = None,
                 offsets_retention_ms: int = DEFAULT_OFFSETS_RETENTION_MS,
                 max_open_maps: int | None = None):
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgument(f"path must be str or PathLike, got {type(path).__name__}")
        raw = os.fspath(path)
        if not isinstance(raw, str):
            raw = os.fsdecode(raw)
        if not raw:
            raise InvalidArgument("open: the path is empty; pass '.' to open "
                                  "(or create) a log in the current directory")
        if "\0" in raw:
            raise InvalidArgument(f"open {raw!r}: the path contains a NUL byte")
        if sync not in SYNC_MODES:
            raise InvalidArgument(f"sync={sync!r}; expected one of {SYNC_MODES}")
        if isinstance(sync_interval_ms, bool) or not isinstance(sync_interval_ms, int) \
                or not 1 <= sync_interval_ms <= 3_600_000:
            raise InvalidArgument(
                f"sync_interval_ms={sync_interval_ms!r}; expected int in [1, 3600000]")
        if isinstance(metadata_timeout, bool) or \
                not isinstance(metadata_timeout, (int, float)) or \
                not 0 <= metadata_timeout <= 3600:
            raise InvalidArgument(
                f"metadata_timeout={metadata_timeout!r}; expected seconds in [0, 3600]")
        self.metadata_timeout = float(metadata_timeout)
        # the descriptors this Log keeps for segments, however many it has
        # (pylog.handles)
        self.max_open_files = validate_max_open_files(max_open_files)
        # and the memory maps, partition states included (pylog.handles)
        self.max_open_maps = validate_max_open_maps(max_open_maps)
        self.offsets_retention_ms = validate_offsets_retention_ms(offsets_retention_ms)
        self.path = os.path.abspath(raw)
        self.sync = sync
        self.readonly = readonly
        self.sync_interval_ms = sync_interval_ms
        self._allow_nfs = allow_network_filesystem
        self._closed = False
        self._lock = _locks.free_in_child(threading.RLock())   # (fork: see _check)
        _locks.close_in_child(self, "_lock_fd")     # (P-3: dies with this process)
        if readonly:
            check_log_dir(self.path, f"open {self.path} read-only")
        else:
            self._make_log_dir()
        fstype = filesystem_type(self.path)
        if fstype in NETWORK_FILESYSTEMS:
            msg = (f"open {self.path}: it is on a network filesystem ({fstype}), "
                   "where file locks and shared maps are unsafe (G6)")
            if not allow_network_filesystem:
                raise PylogError(msg + "; pass allow_network_filesystem=True "
                                 "to accept the risk")
            warnings.warn(msg)
        self._open_files()

    # -- open / fork -----------------------------------------------------------
    def _make_log_dir(self) -> None:
        """Create the log directory (and its parents) unless it exists;
        refuse a path that is, or lies below, something else than a directory."""
        action = f"open {self.path} for writing"
        _refuse_inside_a_log(self.path, action)
        if _not_a_directory(self.path, action, may_create=True):
            return
        try:
            os.makedirs(self.path, mode=0o755)
        except FileExistsError as exc:
            if not os.path.isdir(self.path):      # made by someone else meanwhile
                raise _open_error(exc, action, readonly=False) from None
            return
        except OSError as exc:
            raise _open_error(exc, action, readonly=False, creating=True) from None
        # L-1: the log directory's own entry survives a power loss
        try:
            fsync_dir(os.path.dirname(self.path))
        except OSError as exc:
            raise _open_error(exc, action, readonly=False) from None

    def _open_files(self) -> None:
        creating = False                # a new log: the hints differ
        if not self.readonly:
            try:
                os.lstat(os.path.join(self.path, "meta"))
            except FileNotFoundError:
                creating = True
            except OSError:
                pass
        try:
            self._open_files_or_raise()
        except OSError as exc:
            if isinstance(exc, PylogError):
                raise
            raise _open_error(exc, f"open {self.path}"
                              f"{' read-only' if self.readonly else ' for writing'}",
                              readonly=self.readonly, creating=creating) from None

    def _open_files_or_raise(self) -> None:
        self._identity = Identity(self.path, "log directory")     # L-6
        self._pid = os.getpid()
        self._forks = FORKS[0]
        self._partitions: dict[tuple[str, int], Partition] = {}
        # (fresh after a fork too: the inherited one holds the parent's segments)
        self.handles = HandleCache(self.max_open_files, self.max_open_maps)
        self._commit_sync = CommitSync(self.path, self._partitions, self.handles)
        self._topic_cache: dict[str, tuple[float, dict[str, Any]]] = {}
        # partitions the first opener did not recover (P-9): indexes checked at first use (I-3)
        self._unchecked: set[tuple[str, int]] = set()
        self._lock_fd = -1
        first = others = False      # others: processes known to have the log open
        if not self.readonly:
            self._lock_fd = os.open(os.path.join(self.path, LOCK_FILE),
                                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            first = _native.lock(self._lock_fd, 0, 1, "w", False)
            others = not first or readers_present(self._lock_fd)
            if not first:
                _native.lock(self._lock_fd, 0, 1, "r", True)
            # L-2 / P-3: this Log's name in partition append locks, alive as
            # long as this read lock is held (the kernel drops it on death)
            self._lock_token = _native.new_lock_token()
            _native.liveness_lock(self._lock_fd, self._lock_token)
        else:
            probe = writers_probe(self.path)    # (no writer: states may be stale)
            self._lock_fd = hold_reader_lock(self.path)     # (L-2: seen by writers)
            first, others = probe is False, probe is True
        self._first_opener = first
        try:
            self.meta = Metadata(self.path, sync=(self.sync == "always"),
                                 readonly=self.readonly,
                                 lock_timeout_s=self.metadata_timeout,
                                 lock_identity=None if self.readonly else
                                 (self._lock_token, self._lock_fd), others=others,
                                 writers=not first)
        except BaseException:
            self._release_lock_file()
            raise
        try:
            self._open_doorbell()
            if not self.readonly:
                self._finish_deletions(strict=False)      # L-5
            if first:
                self._recover_all()
                if not self.readonly:
                    _native.lock(self._lock_fd, 0, 1, "r", True)   # downgrade
            elif not self.readonly:
                # P-9: a last closer that held the lock as this open began
                # may have left its record; this session will write
                cleanshutdown.remove(self.path)
        except BaseException:
            # nothing may stay open: the caller could not close what it never got
            for part in self._partitions.values():
                part.close()
            self.meta.close()
            self._release_lock_file()
            raise
        self._stop = threading.Event()
        self._maint: threading.Thread | None = None
        if not self.readonly:
            self._maint = threading.Thread(target=self._maintenance,
                                           name="pylog-maintenance", daemon=True)
            self._maint.start()
        self._expiry: threading.Thread | None = None
        if not self.readonly and self.offsets_retention_ms >= 0:
            self._expiry = threading.Thread(target=self._expire_idle_groups,
                                            name="pylog-expiry", daemon=True)
            self._expiry.start()

    def _release_lock_file(self) -> None:
        fd, self._lock_fd = self._lock_fd, -1   # (-1 first: a fork meanwhile must not close it)
        if fd >= 0:
            os.close(fd)

    def _open_doorbell(self) -> None:
        """Map ``doorbell`` (L-3). Waiting writes the waiter count, so even a
        read-only log maps it writable when it may; otherwise consumers of
        this Log fall back to short sleeps (``self._bell`` is None)."""
        p = os.path.join(self.path, DOORBELL_FILE)
        size = DOORBELL_SLOTS * _native.DOORBELL_SLOT_SIZE
        self._bell = self._bell_ptr = None
        try:
            fd = open_regular(p, os.O_RDWR | (0 if self.readonly else os.O_CREAT),
                              what="doorbell file")
        except (OSError, CorruptLogError):
            if not self.readonly:
                raise
            return
        try:
            # Blocks before the map: waiting and ringing store into it, and
            # a store into a sparse page on a full disk is SIGBUS. A
            # read-only log does without a doorbell then (short sleeps); a
            # writable one must ring it, so it refuses to open.
            try:
                allocate_once(fd, size)
            except OSError as exc:
                if exc.errno not in DISK_FULL_ERRNOS:
                    raise
                if self.readonly:
                    return
                raise disk_full_error(f"open {self.path}: allocating "
                                      f"{DOORBELL_FILE}", exc) from exc
            if os.fstat(fd).st_size >= size:
                self._bell = mmap.mmap(fd, size, mmap.MAP_SHARED,
                                       mmap.PROT_READ | mmap.PROT_WRITE)
                self._bell_ptr = _native.pointer(self._bell)
        finally:
            os.close(fd)

    def _recover_all(self) -> None:
        """The first opener's recovery (L-2, P-4) of every partition but
        those the last close left clean (P-9): these open lazily, on first
        use, with nothing to recover. The clean-shutdown record is removed
        (durably) before the log is shared or written."""
        for name in os.listdir(self.path):
            if name.endswith("-delete") and not self.readonly:
                shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)
        nonce = None if self.readonly else cleanshutdown.read_nonce(self.path)
        for topic, doc in self.meta.topics().items():
            for p in range(doc["partitions"]):
                d = os.path.join(self.path, f"{topic}-{p}")
                clean = cleanshutdown.clean_state(d, nonce)
                if clean is not None:
                    problem = cleanshutdown.files_problem(d, clean)
                    if problem is None:
                        self._unchecked.add((topic, p))
                        continue
                    # P-12: the files no longer hold the clean state: the
                    # recovery checks them against it, and reports
                    _log.warning("%s: %s since the clean close; recovering "
                                 "the partition (P-9, P-12)", d, problem)
                # the state of a directory of another incarnation, which
                # the claim retires (L-4), says nothing of the new one's
                foreign = _foreign_dir(d, doc["id"])
                part = self._open_partition(topic, p, doc, recover=False)
                part.recover(clean=None if foreign else clean)
        if not self.readonly:
            cleanshutdown.remove(self.path)

    def _check(self) -> None:
        if self._closed:
            raise LogClosed(f"log {self.path} is closed")
        if FORKS[0] != self._forks:
            self._reopen_after_fork()

    def _reopen_after_fork(self) -> None:
        # Inherited LMDB handles, OFD locks and maps belong to the parent:
        # drop them unused (closing could flush or unlock on its behalf).
        with self._lock:
            if os.getpid() == self._pid:
                return
            # py-lmdb refuses a second environment on one path per process;
            # closing the inherited one only unmaps it here (LMDB's reader
            # slots and locks are keyed by the parent's pid and stay its own).
            self.meta.close()
            self._open_files()

    # -- partitions -----------------------------------------------------------
    def _topic_doc(self, topic: str, max_age_s: float = 1.0) -> dict[str, Any]:
        try:
            hit = self._topic_cache.get(topic)
        except TypeError:                # unhashable: refused below
            hit = None
        now = time.monotonic()
        if hit is not None and now - hit[0] < max_age_s:
            return hit[1]
        validate_topic_name(topic)
        doc = self.meta.get_topic(topic)
        if doc is None:
            self._topic_cache.pop(topic, None)
            raise TopicNotFound(f"topic {topic!r} does not exist in {self.path}")
        self._topic_cache[topic] = (now, doc)
        return doc

    def _open_partition(self, topic: str, p: int, doc: dict[str, Any],
                        recover: bool = True) -> Partition:
        key = (topic, p)
        part = self._partitions.get(key)
        if part is not None and part.topic_id == doc["id"]:
            return part
        cfg = TopicConfig.from_dict(doc["config"])
        action = f"open partition {topic}-{p} in {self.path}"
        # EMFILE here: the handle cache closes idle segments, then one retry
        d = os.path.join(self.path, f"{topic}-{p}")
        foreign = self.handles.retry(action, lambda: _foreign_dir(d, doc["id"]))
        self.handles.retry(action, lambda: self._claim_directory(topic, p, doc["id"]))
        if foreign and not self.readonly:    # retired: a new directory
            self._unchecked.discard(key)
            _reset_partition_meta(self.meta, topic, p, d)
        try:
            part = self.handles.retry(action, lambda: Partition(
                self.path, topic, p, cfg, self.meta, sync=self.sync,
                readonly=self.readonly, create=not self.readonly,
                doorbell=(self._bell, topic_slot(topic)),
                lock_identity=None if self.readonly else (self._lock_token, self._lock_fd),
                handles=self.handles))
        except OSError as exc:
            if isinstance(exc, PylogError):
                raise
            if exc.errno in DISK_FULL_ERRNOS:
                raise disk_full_error(f"open partition {topic}-{p} in "
                                      f"{self.path}", exc) from exc
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise _open_error(exc, f"open partition {topic}-{p} in {self.path}",
                                  readonly=self.readonly) from None
            raise LogFailedError(
                f"open partition {topic}-{p} in {self.path}: {exc.strerror} "
                f"(errno {exc.errno})") from exc
        part.topic_id = doc["id"]
        if recover and (self.readonly and self._first_opener or
                        not part.initialized()):
            # P-4: only the first opener recovers a published partition;
            # a writable non-first opener initialises a new one, and that
            # is decided again under the append lock (Partition.recover)
            try:
                part.recover(unpublished_only=not self.readonly)
            except OSError as exc:
                if isinstance(exc, PylogError):
                    raise
                if exc.errno in FD_EXHAUSTED:
                    part.close()
                    raise too_many_open_files(exc, action) from None
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                part.close()
                raise _open_error(exc, f"open partition {topic}-{p} in {self.path}",
                                  readonly=self.readonly) from None
        if key in self._unchecked and part.writer is not None:
            self._unchecked.discard(key)
            _check_indexes(part, action)
        old = self._partitions.get(key)
        self._partitions[key] = part
        if old is not None:
            old.close()
        return part

    def partition(self, topic: str, p: int) -> Partition:
        """The Partition object for (topic, p); raises TopicNotFound /
        PartitionNotFound. Internal API for producers, consumers and the CLI."""
        self._check()
        try:
            part = self._partitions.get((topic, p))
        except TypeError:                # unhashable: refused below
            part = None
        if part is not None:
            return part
        with self._lock:
            doc = self._topic_doc(topic, 0)
            if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < doc["partitions"]:
                raise PartitionNotFound(
                    f"topic {topic!r} has {doc['partitions']} partitions; "
                    f"there is no partition {p!r}")
            part = self._open_partition(topic, p, doc)
            return part

    @property
    def closed(self) -> bool:
        """Was :meth:`close` called?"""
        return self._closed

    def check_open(self) -> None:
        """Raise LogClosed once closed (and reopen after a fork, as every
        call does)."""
        self._check()

    def liveness(self) -> tuple[int, int]:
        """This Log's (token, liveness fd): alive while the Log is open,
        dropped by the kernel when its process dies (P-3). Writable Logs only."""
        if self.readonly:
            raise ReadOnlyLog(f"log {self.path} is open read-only: it has no liveness token")
        return self._lock_token, self._lock_fd

    def flush_appended(self) -> None:
        """fdatasync every partition this process appended to (M-10: before
        a checkpoint stores state that points past those records)."""
        for part in list(self._partitions.values()):
            if not part.readonly and not part.closed:
                try:
                    part.flush()
                except TopicNotFound:
                    pass        # deleted meanwhile: no record of it is served

    def open_partitions(self) -> dict[tuple[str, int], Partition]:
        """The Partitions this Log has open, by (topic, partition): the
        consumer's per-poll lookup (read it, never change it); a partition
        missing here is opened by :meth:`partition`."""
        return self._partitions

    def forget_topic(self, topic: str) -> None:
        """Drop what is cached of a topic another process deleted: its
        description and its partitions of the deleted incarnation (L-4);
        those of a topic made again under the name stay open for readers."""
        with self._lock:
            self._topic_cache.pop(topic, None)
            current = (self.meta.get_topic(topic) or {}).get("id")    # (one read)
            for key, part in [kp for kp in self._partitions.items() if kp[0][0] == topic]:
                if part.topic_id is None or part.topic_id != current:
                    del self._partitions[key]
                    part.close()

    def partitions_for(self, topic: str, max_age_s: float = 1.0) -> int:
        self._check()
        return int(self._topic_doc(topic, max_age_s)["partitions"])

    # -- doorbell --------------------------------------------------------------------
    def doorbell(self) -> Any:
        return self._bell

    def doorbell_pointer(self) -> Any:
        """A pointer to the doorbell map for the consumers' poll path, or
        None; it keeps the map alive for as long as a caller holds it."""
        return self._bell_ptr

    # -- housekeeping --------------------------------------------------------------
    def _maintenance(self) -> None:
        """Interval flushes (sync="interval"), retention every
        RETENTION_CHECK_INTERVAL_S, and the L-6 identity check every
        IDENTITY_CHECK_S: it bounds how long sends are acknowledged into
        files that were deleted under the log in the modes without an
        fsync per send."""
        interval = self.sync_interval_ms / 1000.0
        now = time.monotonic()
        next_flush = now + interval
        next_retention = now + RETENTION_CHECK_INTERVAL_S
        next_identity = now + IDENTITY_CHECK_S
        while True:
            # C-5: commits are checkpointed on the interval in every mode
            wake = min(next_identity, next_retention, next_flush)
            if self._stop.wait(max(0.0, wake - time.monotonic())):
                return
            if os.getpid() != self._pid:
                return
            parts = list(self._partitions.values())
            now = time.monotonic()
            if now >= next_identity:
                next_identity = now + IDENTITY_CHECK_S
                self._check_identity(parts)
            if now >= next_flush:
                next_flush = now + interval
                if self.sync == "interval":
                    for part in parts:
                        try:
                            part.flush()
                        except PylogError:
                            pass    # recorded in the partition (FAILED) and raised to callers
                try:
                    self.checkpoint_commits()
                    if self.sync == "interval":
                        self.meta.sync()
                except PylogError:
                    pass        # the next commit, flush or close raises it
                except Exception:
                    # a bug must not end the thread: the flushes and
                    # checkpoints of every later interval depend on it
                    _log.exception("%s: commit checkpoint failed; retried at the "
                                   "next interval", self.path)
            if now >= next_retention:
                next_retention = now + RETENTION_CHECK_INTERVAL_S
                for part in parts:
                    try:
                        part.enforce_retention()
                    except (PylogError, OSError):
                        pass

    def _expire_idle_groups(self) -> None:
        """The expiry of idle groups (M-12, pylog.expiry) at open and every
        EXPIRY_CHECK_INTERVAL_S, in a thread of its own: its deletions wait
        for the metadata writer lock, which must never delay the
        maintenance thread's flushes."""
        stop, pid = self._stop, self._pid
        while os.getpid() == pid:
            try:
                expire_groups(self.meta, self.offsets_retention_ms, stopping=stop.is_set)
            except PylogError:
                pass        # busy or failing metadata: the next pass tries again
            if stop.wait(EXPIRY_CHECK_INTERVAL_S):
                return

    def _check_identity(self, parts: list[Partition]) -> None:
        """L-6: fail every partition held in files that left their paths
        (all of them when the log directory itself went), so that their
        next append raises FileVanishedError instead of being acknowledged."""
        why = self._identity.problem()
        # without its data.mdb the log cannot be opened again (L-6), so
        # nothing appended from now on could be read back
        meta_why = self.meta.identity_problem()
        try:
            self.meta.check_identity("metadata check")
        except PylogError:
            pass        # sticky in the store: its next write raises it
        for part in parts:
            if part.readonly or part.closed:
                continue
            if why is not None:
                part.fail(vanished(f"append to {part.name}", why))
            elif meta_why is not None:
                part.fail(vanished(f"append to {part.name}", meta_why))
            else:
                part.check_identity()

    def checkpoint_commits(self) -> int:
        """C-5: copy the commits stored in the commit table since the last
        checkpoint into LMDB, after making the records they point past
        durable (M-10): the partitions this process wrote (dead-letter
        copies among them) and the active segments of the committed ones,
        within a bound per checkpoint (pylog.commitsync). Returns how many
        offsets were copied."""
        return self.meta.checkpoint_commits(
            None if self.sync == "always" else self._commit_sync)

    def flush(self) -> None:
        """fdatasync every partition this process appended to, and the
        metadata (committed offsets, topics)."""
        self._check()
        for part in list(self._partitions.values()):
            try:
                part.flush()
            except TopicNotFound:
                pass        # deleted meanwhile: no record of it is served
        if not self.readonly:
            self.checkpoint_commits()
            self.meta.sync()

    def close(self) -> None:
        """Flush, release files and locks. Idempotent."""
        if self._closed:
            return
        if os.getpid() != self._pid:
            self._closed = True
            return
        errors = []
        if not self.readonly:
            try:
                self.checkpoint_commits()       # while partitions still open
            except Exception as exc:   # keep closing
                errors.append(exc)
        self._closed = True
        self._stop.set()
        heartbeat.stop(self)
        for thread in (self._maint, self._expiry):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)
        failed = {part.dir for part in self._partitions.values()
                  if part.failed is not None}
        for part in list(self._partitions.values()):
            try:
                part.close()
            except Exception as exc:   # keep closing the rest
                errors.append(exc)
        self._partitions.clear()
        if not self.readonly:
            try:
                self.meta.sync()
            except PylogError as exc:
                errors.append(exc)
        if not self.readonly and not errors:
            self._mark_clean_if_last(failed)
        self.meta.close()
        self._release_lock_file()
        # The doorbell is not unmapped here: a consumer may be waiting on it
        # through its pointer with the GIL released. Dropping our references
        # unmaps it once the last such call returns.
        self._bell = self._bell_ptr = None
        if errors:
            raise errors[0]

    def _mark_clean_if_last(self, failed: set[str]) -> None:
        """P-9: when no other process has the log open (the lock converts to
        exclusive), leave the clean-shutdown record so that the next first
        opener skips recovering what nobody changed. A partition that
        failed here is left out: its next open looks at it again."""
        try:
            if not _native.lock(self._lock_fd, 0, 1, "w", False):
                return
            dirs = [d for topic, doc in self.meta.topics().items()
                    for p in range(doc["partitions"])
                    if (d := os.path.join(self.path, f"{topic}-{p}")) not in failed]
        except (OSError, PylogError) as exc:
            _log.warning("%s: no clean-shutdown record (%s)", self.path, exc)
            return
        cleanshutdown.mark_all(self.path, dirs)

    def __enter__(self) -> LogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<pylog.Log {self.path!r} sync={self.sync}{' readonly' if self.readonly else ''}>"


def _check_indexes(part: Partition, action: str) -> None:
    """I-3, P-9: the first use of a partition the open did not recover
    (clean close) checks its active segment's indexes. A partition that
    failed since is left failed; a segment file gone since the open's
    check (P-12) is CorruptLogError, never a bare FileNotFoundError."""
    if part.failed is not None:
        return
    assert part.writer is not None
    try:
        part.writer.check_indexes()
    except OSError as exc:
        part.close()
        if isinstance(exc, PylogError):
            raise
        if exc.errno in FD_EXHAUSTED:
            raise too_many_open_files(exc, action) from None
        if exc.errno == errno.ENOENT:
            raise CorruptLogError(
                f"{action}: {exc.filename} is missing, deleted since the clean "
                "close (P-9, P-12)", exc.filename) from exc
        raise


def _foreign_dir(d: str, topic_id: str) -> bool:
    """Is ``d`` (before its claim) a directory of another incarnation of
    the topic than ``topic_id`` (L-4), which the claim retires or refuses?"""
    found = topicdirs.read_id(d)
    if found is not None:
        return found != topic_id
    return os.path.isdir(d) and _state_marks_deleted(d)


def _reset_partition_meta(meta: Metadata, topic: str, p: int, d: str) -> None:
    """The claim retired another incarnation's directory ``d`` (L-4): the
    new one holds no record of the topic's incarnation. The partition's
    LMDB record (checkpoint and log start, M-5), if not a new partition's,
    described the retired directory (a writer of the old incarnation, or
    metadata restored) and is reset, so that recovery (P-12) never counts
    records of another incarnation as lost."""
    pm = meta.partition_meta(topic, p)
    if (pm.log_start_offset, pm.checkpoint_base, pm.checkpoint_next_offset) \
            == (0, -1, 0):
        return
    _log.warning("%s: the directory of another incarnation of topic %r was "
                 "retired (L-4); the partition's recovery checkpoint and log "
                 "start (offsets %d, %d) were not this incarnation's and are "
                 "reset (M-5, P-12)", d, topic, pm.checkpoint_next_offset,
                 pm.log_start_offset)
    deadline = time.monotonic() + 5.0
    while not (meta.set_checkpoint(topic, p, -1, 0, 0) and
               meta.set_log_start(topic, p, 0)):
        if time.monotonic() > deadline:    # recovery may then report P-12
            _log.warning("%s: metadata busy; the reset was not recorded", d)
            break
        time.sleep(0.01)


def topic_slot(topic: str) -> int:
    """The doorbell slot of a topic (L-3); slot 0 is shared by all."""
    return 1 + _native.crc32c(topic.encode()) % (DOORBELL_SLOTS - 1)


def _not_a_directory(path: str, action: str, may_create: bool = False) -> bool:
    """True if ``path`` is a directory, False if nothing is there; raise
    NotALogDirectoryError if something else is (a file, a dangling symlink,
    a path below a file) and the fitting LogOSError if it cannot be looked at."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise NotALogDirectoryError(
                f"{action}: {path} is a symlink to {os.readlink(path)!r}, which "
                "does not exist (ENOENT); a log is a directory: remove the "
                "symlink or create its target", errno=errno.ENOENT,
                filename=path) from None
        return False
    except NotADirectoryError as exc:
        above = _file_above(path)
        raise NotALogDirectoryError(
            f"{action}: {above} is a file, not a directory, so no log can be "
            f"below it (ENOTDIR); a log is a directory: choose another path",
            errno=exc.errno, strerror=exc.strerror, filename=above) from None
    except OSError as exc:
        raise _open_error(exc, action, readonly=False) from None
    if not stat.S_ISDIR(st.st_mode):
        kind = "regular file" if stat.S_ISREG(st.st_mode) else "non-directory"
        raise NotALogDirectoryError(
            f"{action}: {path} is a {kind}, not a log directory (ENOTDIR); "
            "a log is a directory: pass the log's directory" +
            (", or a path where a new one may be created" if may_create else ""),
            errno=errno.ENOTDIR, filename=path)
    return True


def _refuse_inside_a_log(path: str, action: str) -> None:
    """InvalidArgument when ``path``, not itself a log, lies inside one."""
    if os.path.isdir(os.path.join(path, "meta")):
        return
    outer = _log_around(path)
    if outer is not None:
        raise InvalidArgument(
            f"{action}: {path} lies inside the log {outer} (one of its partition "
            f"or metadata directories, or below one); a new log there would mix "
            f"its files with that log's: open {outer} itself, or choose a path "
            "outside it")


def _log_around(path: str) -> str | None:
    """The log directory ``path`` lies inside, if any: the nearest of its
    parent directories that holds a log's ``meta/data.mdb``."""
    probe = os.path.dirname(path)
    while True:
        if os.path.isfile(os.path.join(probe, "meta", "data.mdb")):
            return probe
        parent = os.path.dirname(probe)
        if parent == probe:
            return None
        probe = parent


def _file_above(path: str) -> str:
    """The first component of ``path`` that exists and is not a directory."""
    probe = path
    while True:
        parent = os.path.dirname(probe)
        if parent == probe:
            return path
        if os.path.exists(parent) and not os.path.isdir(parent):
            probe = parent
            continue
        if os.path.isdir(parent):
            return probe
        probe = parent


def check_log_dir(root: str, action: str) -> None:
    """Raise the fitting PylogError unless ``root`` is a directory holding a
    log's ``meta/``: LogNotFound, NotALogDirectoryError, or
    LogPermissionError when it cannot be looked into. Touches nothing."""
    if not _not_a_directory(root, action):
        raise LogNotFound(
            f"{action}: no log at {root}, the path does not exist (ENOENT); "
            "check the path (readonly=True never creates a log)",
            errno=errno.ENOENT, filename=root)
    meta = os.path.join(root, "meta")
    try:
        st = os.stat(meta)
    except FileNotFoundError:
        outer = _log_around(root)
        raise LogNotFound(
            f"{action}: {root} is not a pylog log, it has no meta/ directory "
            "(ENOENT); " + (f"it lies inside the log {outer}: open that" if outer
                            else "check the path (readonly=True never creates a log)"),
            errno=errno.ENOENT, filename=meta) from None
    except OSError as exc:
        raise _open_error(exc, action, readonly=True) from None
    if not stat.S_ISDIR(st.st_mode):
        raise LogNotFound(f"{action}: {root} is not a pylog log, its meta is "
                          "not a directory (ENOTDIR)", errno=errno.ENOTDIR,
                          filename=meta)


def _open_error(exc: OSError, action: str, *, readonly: bool,
                creating: bool = False) -> LogOSError:
    """``exc``, met while opening a log, as the fitting LogOSError with a hint."""
    code = exc.errno
    if code in (errno.EACCES, errno.EPERM):
        if creating:
            hint = ("choose a directory you may write to, or have its owner "
                    "grant you write access")
        elif readonly:
            hint = ("run as the log's owner, or have them grant you read access "
                    "(and write access to meta/lock.mdb, where LMDB readers "
                    "register)")
        else:
            hint = ("run as the log's owner, or open it with readonly=True to "
                    "only read it")
    elif code == errno.EROFS:
        hint = ("a new log cannot be created there; choose a writable filesystem"
                if creating else "open it with readonly=True, or remount the "
                "filesystem read-write")
    elif code == errno.ENAMETOOLONG:
        hint = "choose a shorter path"
    else:
        hint = None
    return LogOSError.from_os_error(exc, action, hint)
