"""The log's metadata in LMDB: topics, partitions, consumer groups (FORMAT.rst M-*).

One LMDB environment in ``<log>/meta/`` with named databases:

========== ====================================== ===================================
database   key                                    value
========== ====================================== ===================================
info       ``b"format"``                          ``b"2"`` (M-1)
           ``b"deleted\\0"`` topic name           JSON: id, partitions of a deleted
                                                  topic whose directories may
                                                  remain (M-11)
topics     topic name (UTF-8)                     JSON: id, partitions, config (M-2)
partitions topic ``\\0`` partition (4-byte BE)     ``>qqqq``: log start offset,
                                                  checkpoint segment, position,
                                                  next offset (M-5)
offsets    group ``\\0`` topic ``\\0`` partition    ``>qq``: committed offset,
           (4-byte BE)                            commit time ms (M-6)
groups     group name (UTF-8)                     JSON: generation, strategy,
                                                  members, assignment (M-7)
info       ``b"slot\\0"`` offsets key             ``>I`` its commit table slot (C-3)
           ``b"slots"``                           ``>I`` the next free slot (C-3)
========== ====================================== ===================================

Committed offsets live in the commit table ``meta/cursors`` first
(:mod:`pylog.commitstore`, FORMAT.rst C-1 to C-5), checkpointed into ``offsets``.

LMDB serializes writers across processes with a robust mutex (a writer that
dies mid-transaction is rolled back, never wedging the others) and readers
never block. Durability of a write transaction follows the log's sync mode:
``always`` commits with fsync, other modes leave it to the OS (a process
crash still loses nothing that committed), except that create_topic and
delete_topic are made durable at once (M-8).

Thread safety: thread-safe (py-lmdb transactions are per call). Not
fork-safe: the Log reopens this store in a child process.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import struct
import threading
import time
import weakref
from typing import Callable

import lmdb

from . import _locks, groupstate
from .commitstore import Commits, split_okey
from .errors import (
    CorruptLogError,
    DiskFullError,
    FileVanishedError,
    LogClosed,
    LogFailedError,
    LogOSError,
    LogPermissionError,
    MetadataBusyError,
    PylogError,
    TopicExists,
    TopicNotFound,
)
from .forkgate import GATE
from .groupstate import GroupState
from .identity import Identity, vanished
from .metacalls import Calls
from .metafile import (
    ReaderReaper,
    allocate_lock_file,
    check_lmdb_size,
    data_file_absent,
    lmdb_disk_full,
    refuse_lost_metadata,
    refuse_lost_writer_lock,
    refuse_readers_full,
    refuse_unsafe_env_open,
)
from .metalock import MetaLock
from .metatxn import MetaTxn
from .partition import PartitionMeta

FORMAT_VERSION = b"2"           # M-1: 2 added the commit table (C-1 to C-5)
_READ_VERSIONS = (b"1", FORMAT_VERSION)
_TOMBSTONE = b"deleted\0"     # M-11: info keys of deleted topics' tombstones
SHARE_PREFIX = b"share\0"     # info keys of share-partition states (+ an M-6 key)
_PARTITION = struct.Struct(">qqqq")
_P = struct.Struct(">I")
MAP_SIZE_BYTES = 1 << 30   # virtual; grows only as used
# L-7: how long a metadata write (commit, group change, topic admin) waits
# for another process's metadata transaction before MetadataBusyError
DEFAULT_LOCK_TIMEOUT_S = 10.0


def _pkey(topic: str, partition: int) -> bytes:
    return topic.encode() + b"\0" + _P.pack(partition)


# py-lmdb allows one Environment per path per process; Logs of one path in
# one process share it (counted), and a child of fork() never uses its
# parent's (G6).
_ENVS_LOCK = _locks.free_in_child(threading.Lock())
# realpath of meta/ -> [env, users, readonly, pid, identity, metasync, the
# Metadata objects using it (weakly: a Log dropped without close() leaves)]
_ENVS: dict = {}


def _open_env(path: str, *, sync: bool, readonly: bool, owner: object, others: bool):
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        ent = _ENVS.get(key)
        stale = ent is not None and ent[2] and not readonly
    if stale:
        # a read-only Log of this process dropped without close() holds
        # the environment until the collector frees it: free it now
        gc.collect()
    with _ENVS_LOCK:
        ent = _shared_env(key, readonly)
        if ent is not None:
            if ent[2] and not readonly:
                raise PylogError(
                    f"open {os.path.dirname(path)} for writing: this process "
                    "has it open read-only; close that Log first")
            ent[4].check(f"open {os.path.dirname(path)}")     # L-6
            ent[1] += 1
            ent[6].add(owner)
            return ent[0], ent[4], ent[5]
        action = (f"open {os.path.dirname(path)}"
                  f"{' read-only' if readonly else ' for writing'}")
        refuse_unsafe_env_open(_ENVS, path, action, others)     # (L-6: lock.mdb)
        try:
            check_lmdb_size(path)
        except OSError as exc:
            if isinstance(exc, PylogError):
                raise
            raise _access_error(exc, action, readonly) from None
        if not readonly:
            allocate_lock_file(path)
        try:
            with GATE.held():       # (a fork child must not inherit a half-made one)
                env = lmdb.open(path, map_size=MAP_SIZE_BYTES, max_dbs=8,
                                # M-8: never MDB_NOSYNC (a power loss could
                                # corrupt the tree); without sync="always" only
                                # the meta page flush is deferred, which may undo
                                # the last commit but keeps the database whole
                                subdir=True, sync=True, metasync=sync,
                                readonly=readonly, lock=True, create=not readonly,
                                max_readers=1024)
        except lmdb.Error as exc:
            full = lmdb_disk_full(path, exc)
            if full is not None:
                raise DiskFullError(f"open LMDB metadata in {path}: {full}; free space") from None
            refuse_readers_full(action, path, exc)
            # LMDB's exceptions carry no errno: redo its opens (creating
            # nothing) to tell permissions from damage
            found = _lmdb_access_problem(path, readonly)
            if found is not None:
                raise _access_error(found, action, readonly) from None
            if isinstance(exc, lmdb.ReadonlyError):      # EACCES in LMDB 0.9
                raise LogPermissionError(
                    f"{action}: permission denied (EACCES) opening the LMDB "
                    f"metadata in {path} ({exc}); {_ACCESS_HINTS[readonly]}",
                    errno=errno.EACCES, filename=path) from None
            raise CorruptLogError(f"cannot open LMDB metadata: {exc}", path) from None
        try:
            ident = Identity(os.path.join(path, "data.mdb"), "metadata file")
        except OSError as exc:
            env.close()
            raise LogFailedError(f"open LMDB metadata in {path}: data.mdb: "
                                 f"{exc.strerror}") from exc
        _ENVS[key] = [env, 1, readonly, os.getpid(), ident, sync, weakref.WeakSet([owner])]
        return env, ident, sync


def _shared_env(key: str, readonly: bool) -> list | None:
    """The entry of ``_ENVS`` this process may use for ``key`` (under
    _ENVS_LOCK), after dropping one it cannot: inherited through fork(),
    or read-only, wanted for writing, and held by no open Log (each one
    that opened it was dropped without close() and collected)."""
    ent = _ENVS.get(key)
    if ent is None:
        return None
    if ent[3] != os.getpid() or (ent[2] and not readonly and not ent[6]):
        # fork: unmap it here, never use it; stale: no Log uses it
        try:
            ent[0].close()
        except lmdb.Error:
            pass
        del _ENVS[key]
        return None
    return ent


_ACCESS_HINTS = {
    True: "LMDB readers register in meta/lock.mdb, so even readonly=True needs "
          "write access to it: run as the log's owner, or have them grant you "
          "read access to the log and write access to meta/lock.mdb",
    False: "run as the log's owner, or open it with readonly=True to only read it",
}


def _access_error(exc: OSError, action: str, readonly: bool) -> LogOSError:
    code = exc.errno
    hint = (_ACCESS_HINTS[readonly] if code in (errno.EACCES, errno.EPERM)
            else "open it with readonly=True, or remount the filesystem "
            "read-write" if code == errno.EROFS else None)
    return LogOSError.from_os_error(exc, action, hint)


def _lmdb_access_problem(path: str, readonly: bool) -> OSError | None:
    """The OSError that keeps LMDB from opening the environment in ``path``
    (meta/): its opens of data.mdb and lock.mdb done again without creating
    anything. None when they succeed (the failure was something else).

    Closing the probe's descriptor of lock.mdb would drop this process's
    POSIX locks on it, but the environment is not open in this process
    (``_ENVS`` has no entry for it, or LMDB would not have been called)."""
    for name, flags in (("data.mdb", os.O_RDONLY if readonly else os.O_RDWR),
                        ("lock.mdb", os.O_RDWR)):
        p = os.path.join(path, name)
        try:
            fd = os.open(p, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            if readonly and name == "data.mdb":
                return None          # damage, not access: LMDB's error stands
            # LMDB creates it: that needs write and search access to meta/
            if not os.access(path, os.W_OK | os.X_OK,
                             effective_ids=os.access in os.supports_effective_ids):
                return PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
            continue
        except OSError as exc:
            if exc.errno == errno.EROFS and readonly and name == "lock.mdb":
                continue       # LMDB then reads without its lock file
            return exc
        os.close(fd)
    return None


def _close_env(path: str, env, owner: object) -> None:
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        ent = _ENVS.get(key)
        if ent is None or ent[0] is not env:
            return          # already replaced (fork) or closed
        ent[6].discard(owner)
        ent[1] -= 1
        if ent[1] == 0:
            del _ENVS[key]
            with GATE.held():
                env.close()


class Metadata(Commits):
    """See the module docstring. ``lock_identity``: the Log's (token,
    liveness fd), which the commit table's slot locks use (C-2);
    ``others``: other processes are known to have the log open (L-6: lock.mdb);
    ``writers``: some of them for writing (meta.lock), default ``others``."""

    def __init__(self, root: str, *, sync: bool, readonly: bool = False,
                 lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                 lock_identity: tuple[int, int] | None = None, others: bool = False,
                 writers: bool | None = None):
        self.path = os.path.join(root, "meta")
        self.sync_always = sync
        self.cursors = None
        created = not readonly and not os.path.isdir(self.path)
        if not readonly:
            try:
                os.makedirs(self.path, mode=0o755, exist_ok=True)
            except OSError as exc:
                raise _access_error(exc, f"open {root} for writing", readonly) from None
        absent = data_file_absent(self.path)         # L-6: refused untouched
        if absent is not None:
            refuse_lost_metadata(root, self.path, absent)
        self.env, self._identity, metasync = _open_env(
            self.path, sync=sync, readonly=readonly, owner=self, others=others)
        # M-8: the environment is shared by this process's Logs of the path,
        # its meta page flush set by the first: a sync="always" Log opened
        # after a weaker one flushes it after each of its commits itself
        self._flush_each = sync and not metasync
        self._vanished: FileVanishedError | None = None     # L-6, sticky
        self._closed = False
        self._calls = Calls()       # (in flight: see pylog.metacalls)
        self._reaper = ReaderReaper(self.env)
        self._reaper.reap()
        self._wlock: MetaLock | None = None
        try:
            if not readonly:
                refuse_lost_writer_lock(root, others if writers is None else writers)
                self._wlock = MetaLock(root, lock_timeout_s)         # L-7
            self._open_dbs(readonly)
        except lmdb.Error as exc:
            self.close()
            raise CorruptLogError(f"cannot open pylog's LMDB databases: {exc}",
                                  self.path) from None
        except BaseException:
            self.close()
            raise
        if created:
            # the directory entries of meta/, data.mdb and lock.mdb
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            self._check_format(readonly)
            self._init_commits(None if readonly else lock_identity)
        except BaseException:
            self.close()
            raise

    def _open_dbs(self, readonly: bool) -> None:
        """Open the named databases. LMDB opens a named database handle for
        good only in a write transaction (py-lmdb ends read transactions
        with an abort, which closes handles opened in them), so a writable
        open takes the metadata writer lock (L-7) for it: opening a log
        waits at most ``lock_timeout_s`` for a stopped metadata writer, then
        raises MetadataBusyError. A Log already open never waits here."""
        names = (b"info", b"topics", b"partitions", b"offsets", b"groups")
        if readonly:
            dbs = [self.env.open_db(n, create=False) for n in names]
        else:
            assert self._wlock is not None   # made for every writable open
            with self._wlock.held(f"open the metadata of {os.path.dirname(self.path)}"):
                dbs = [self.env.open_db(n, create=True) for n in names]
        self._info, self._topics, self._partitions, self._offsets, self._groups = dbs

    def _check_format(self, readonly: bool) -> None:
        """M-1, read first: only a new log writes (behind the lock). A
        read-only open refuses an unknown format too (a newer pylog's
        metadata may mean something else), and stores nothing."""
        with self._txn("check the metadata format") as txn:
            v = txn.get(b"format", db=self._info)
        if readonly:
            v = FORMAT_VERSION if v is None or v in _READ_VERSIONS else v
        elif v != FORMAT_VERSION:
            if v is None:
                # L-6: LMDB made this environment (data.mdb was empty, or
                # replaced); pylog never wrote it
                refuse_lost_metadata(os.path.dirname(self.path), self.path,
                                     "holds no pylog metadata (a new LMDB environment)")
            with self._txn("check the metadata format", write=True) as txn:
                v = txn.get(b"format", db=self._info)
                if v is None or v in _READ_VERSIONS:
                    # M-1: format 1 has no commit table; 2 only adds one
                    txn.put(b"format", FORMAT_VERSION, db=self._info)
                    v = FORMAT_VERSION
        if v != FORMAT_VERSION:
            raise CorruptLogError(            # M-1
                f"metadata format {v.decode(errors='replace')!r} is not one this "
                f"pylog reads ({', '.join(x.decode() for x in _READ_VERSIONS)}): "
                "a newer pylog wrote it, or the metadata is damaged; open it with "
                "the pylog that wrote it", self.path)

    def close(self) -> None:
        """Release this store's use of the shared environment. Idempotent."""
        if not self._closed:
            self._closed = True
            self.close_commits()
            self._calls.close()
            _close_env(self.path, self.env, self)
            if self._wlock is not None:
                self._wlock.close()

    def sync(self) -> None:
        """Flush LMDB's deferred meta page: every committed transaction is
        durable when this returns (used by interval flushes and close)."""
        try:
            with self._calls.held("sync of the metadata"):
                self.env.sync(True)
        except lmdb.Error as exc:
            raise LogFailedError(f"sync of LMDB metadata in {self.path}: {exc}") from exc
        self.check_identity("sync of the metadata")

    def identity_problem(self) -> str | None:
        """Why data.mdb is no longer the file this store has mapped, or None."""
        return self._identity.problem()

    def check_identity(self, doing: str) -> None:
        """L-6: raise FileVanishedError (and refuse every later write) if
        data.mdb is no longer the file this store has mapped."""
        if self._vanished is None:
            why = self._identity.problem()
            if why is None:
                return
            self._vanished = vanished(doing, why)
        raise self._vanished

    def _txn(self, what: str, write: bool = False, wait: bool = True,
             after: list | None = None) -> MetaTxn:
        """A transaction whose LMDB failures (EIO, ENOSPC, a full map) raise
        LogFailedError naming ``what``: nothing of the call was stored (G8).
        A write whose data.mdb vanished raises FileVanishedError (L-6): the
        commit went into a file nobody will open again. A write first takes
        the metadata writer lock (L-7), waiting at most the configured
        timeout (``wait=False``: not at all), else MetadataBusyError. The
        callables the transaction appended to ``after`` run once it
        committed, still under the writer lock. Use as ``with
        self._txn(...) as txn:``; see :class:`pylog.metatxn.MetaTxn` for Ctrl-C."""
        return MetaTxn(self, what, write, wait, after)

    def _lmdb_error(self, what: str, write: bool, exc: lmdb.Error) -> Exception:
        """The pylog error an LMDB error of a transaction raises."""
        if isinstance(exc, lmdb.CorruptedError):
            return CorruptLogError(f"{what}: LMDB reports damage ({exc})",
                                   os.path.join(self.path, "data.mdb"))
        if isinstance(exc, lmdb.MapFullError):
            return LogFailedError(
                f"{what}: LMDB metadata map is full ({exc}); nothing was stored")
        if self._closed:
            # another thread closed the Log under this call
            return LogClosed(f"{what}: the log was closed")
        full = lmdb_disk_full(self.path, exc)       # EIO too (G8)
        if full is not None:
            return DiskFullError(f"{what}: LMDB metadata commit in {self.path}: {full}; "
                                 "nothing was stored; free space")
        return LogFailedError(
            f"{what}: LMDB metadata {'commit' if write else 'read'} failed "
            f"in {self.path} ({exc}); nothing was stored")

    # -- topics -------------------------------------------------------------
    def _decode_topic(self, name: str, raw: bytes) -> dict:
        try:
            doc = json.loads(raw)
            assert isinstance(doc["partitions"], int) and doc["partitions"] > 0
            assert isinstance(doc["config"], dict)
            return doc
        except (ValueError, KeyError, TypeError, AssertionError):
            raise CorruptLogError(f"metadata of topic {name!r} is damaged",
                                  self.path) from None

    def create_topic(self, name: str, partitions: int, config: dict) -> dict:
        doc = {"id": os.urandom(16).hex(), "partitions": partitions,
               "config": config, "created_ms": int(time.time() * 1000)}
        with self._txn("create topic", write=True) as txn:
            if txn.get(name.encode(), db=self._topics) is not None:
                raise TopicExists(f"topic {name!r} already exists")
            txn.put(name.encode(), json.dumps(doc).encode(), db=self._topics)
            for p in range(partitions):
                txn.put(_pkey(name, p), _PARTITION.pack(0, -1, 0, 0),
                        db=self._partitions)
        # M-8, L-4: durable before any partition directory of the topic is
        # made, or a power loss could leave its records in a directory that
        # the metadata no longer explains (only lost metadata may do that)
        self.make_durable()
        return doc

    def make_durable(self) -> None:
        """M-8: make the last commit durable now whatever the sync mode
        (one fdatasync; with sync="always" it already is). For the rare
        admin commits whose files change only after them (L-4, L-5)."""
        if not self.sync_always:
            self.sync()     # LogFailedError: the change is made, maybe not durable

    def get_topic(self, name: str) -> dict | None:
        with self._txn("get topic") as txn:
            raw = txn.get(name.encode(), db=self._topics)
        return None if raw is None else self._decode_topic(name, raw)

    def topics(self) -> dict[str, dict]:
        with self._txn("topics") as txn:
            return {k.decode(): self._decode_topic(k.decode(), v)
                    for k, v in txn.cursor(db=self._topics)}

    def update_topic(self, name: str, *, partitions: int | None = None,
                     config: dict | None = None) -> dict:
        with self._txn("update topic", write=True) as txn:
            raw = txn.get(name.encode(), db=self._topics)
            if raw is None:
                raise TopicNotFound(f"topic {name!r} does not exist")
            doc = self._decode_topic(name, raw)
            if partitions is not None:
                for p in range(doc["partitions"], partitions):
                    txn.put(_pkey(name, p), _PARTITION.pack(0, -1, 0, 0),
                            db=self._partitions)
                doc["partitions"] = partitions
            if config is not None:
                doc["config"] = config
            txn.put(name.encode(), json.dumps(doc).encode(), db=self._topics)
        if partitions is not None:
            # M-8, L-4: as create_topic, durable before the new partitions'
            # directories are made
            self.make_durable()
        return doc

    def delete_topic(self, name: str) -> dict:
        after: list = []
        with self._txn("delete topic", write=True, after=after) as txn:
            raw = txn.get(name.encode(), db=self._topics)
            if raw is None:
                raise TopicNotFound(f"topic {name!r} does not exist")
            doc = self._decode_topic(name, raw)
            txn.delete(name.encode(), db=self._topics)
            for p in range(doc["partitions"]):
                txn.delete(_pkey(name, p), db=self._partitions)
            # committed offsets of every group for this topic (M-6)
            cur = txn.cursor(db=self._offsets)
            doomed = [k for k, _ in cur
                      if k.split(b"\0", 2)[1:2] == [name.encode()]]
            self.clear_offsets(txn, doomed, after)
            self._drop_from_groups(txn, name)
            doc["share_keys"] = self._drop_share_states(txn, name)
            # M-11: the directories are removed after this commit; until
            # they are, the tombstone lets open and create_topic finish it
            txn.put(_TOMBSTONE + name.encode(), json.dumps(
                {"id": doc.get("id"), "partitions": doc["partitions"],
                 "deleted_ms": int(time.time() * 1000)}).encode(), db=self._info)
        # M-8, L-5: durable before any directory is marked deleted or
        # buried, or a power loss could bring the topic back without them
        self.make_durable()
        return doc

    def _drop_from_groups(self, txn, topic: str) -> None:
        """In delete_topic's transaction: no group owns the topic's
        partitions any more (groupstate.drop_topic). A damaged group
        document is left as it is: it cannot own anything usable."""
        for k, raw in list(txn.cursor(db=self._groups)):
            try:
                state = groupstate.decode(k.decode(), raw, self._data_path())
            except (PylogError, UnicodeDecodeError):
                continue
            new = groupstate.drop_topic(state, topic)
            if new is not state:
                out = groupstate.encode(new)
                if out is not None:
                    txn.put(k, out, db=self._groups)
                else:
                    txn.delete(k, db=self._groups)

    def _drop_share_states(self, txn, topic: str) -> list[bytes]:
        """In delete_topic's transaction: the share groups' states of the
        topic's partitions (Q-3) go with it, so a topic made again under
        the name starts its share groups anew. Returns their keys."""
        doomed = []
        cur = txn.cursor(db=self._info)
        if cur.set_range(SHARE_PREFIX):
            for k, _ in cur:
                if not k.startswith(SHARE_PREFIX):
                    break
                parts = split_okey(bytes(k[len(SHARE_PREFIX):]))
                if parts is not None and parts[1] == topic:
                    doomed.append(bytes(k))
        for k in doomed:
            txn.delete(k, db=self._info)
        return doomed

    def tombstones(self) -> dict[str, dict]:
        """Deleted topics whose directories may remain (M-11): name ->
        {"id", "partitions", "deleted_ms"}."""
        out: dict[str, dict] = {}
        with self._txn("read topic tombstones") as txn:
            cur = txn.cursor(db=self._info)
            if not cur.set_range(_TOMBSTONE):
                return out
            for k, v in cur:
                if not k.startswith(_TOMBSTONE):
                    break
                k = k[len(_TOMBSTONE):]
                try:
                    doc = json.loads(v)
                    assert isinstance(doc["partitions"], int)
                except (ValueError, KeyError, TypeError, AssertionError):
                    raise CorruptLogError(f"tombstone of deleted topic {k!r} is "
                                          "damaged", self.path) from None
                out[k.decode()] = doc
        return out

    def clear_tombstone(self, name: str, topic_id) -> None:
        """Forget the tombstone of ``name`` once its directories are gone,
        unless it is a later deletion's (another id)."""
        with self._txn("clear topic tombstone", write=True) as txn:
            raw = txn.get(_TOMBSTONE + name.encode(), db=self._info)
            if raw is not None and json.loads(raw).get("id") == topic_id:
                txn.delete(_TOMBSTONE + name.encode(), db=self._info)

    # -- partitions -----------------------------------------------------------
    def partition_meta(self, topic: str, partition: int) -> PartitionMeta:
        with self._txn("partition meta") as txn:
            raw = txn.get(_pkey(topic, partition), db=self._partitions)
        if raw is None:
            return PartitionMeta()
        if len(raw) != _PARTITION.size:
            raise CorruptLogError(
                f"metadata of partition {topic}-{partition} is damaged",
                self.path)
        return PartitionMeta(*_PARTITION.unpack(raw))

    def log_start_in(self, txn, topic: str, partition: int) -> int:
        """M-5: the log start offset of a partition as the transaction
        ``txn`` sees it (0 when the partition has no record)."""
        raw = txn.get(_pkey(topic, partition), db=self._partitions)
        if raw is None or len(raw) != _PARTITION.size:
            return 0
        start: int = _PARTITION.unpack(raw)[0]
        return start

    def _update_partition(self, topic, partition, **changes) -> bool:
        """M-5 update without waiting for the writer lock (L-7: appends,
        rolls and retention never wait on another process's metadata
        transaction). Returns False, changing nothing, when it is busy."""
        try:
            self._update_partition_now(topic, partition, changes)
        except MetadataBusyError:
            return False
        return True

    def _update_partition_now(self, topic, partition, changes) -> None:
        with self._txn("update partition", write=True, wait=False) as txn:
            raw = txn.get(_pkey(topic, partition), db=self._partitions)
            pm = (PartitionMeta(*_PARTITION.unpack(raw))
                  if raw and len(raw) == _PARTITION.size else PartitionMeta())
            for k, v in changes.items():
                setattr(pm, k, v)
            txn.put(_pkey(topic, partition),
                    _PARTITION.pack(pm.log_start_offset, pm.checkpoint_base,
                                    pm.checkpoint_position,
                                    pm.checkpoint_next_offset),
                    db=self._partitions)

    def set_checkpoint(self, topic, partition, base, position, next_offset) -> bool:
        """Record a recovery checkpoint (M-5); False when the writer lock
        was busy: an older checkpoint only makes recovery scan more."""
        return self._update_partition(topic, partition, checkpoint_base=base,
                                      checkpoint_position=position,
                                      checkpoint_next_offset=next_offset)

    def set_log_start(self, topic, partition, start) -> bool:
        """Record a new log start offset (M-5, P-5); False when the writer
        lock was busy (retention then deletes nothing this time)."""
        return self._update_partition(topic, partition, log_start_offset=start)

    # -- keys of other modules in ``info`` (share groups: FORMAT.rst Q-3) --------
    def info_get(self, key: bytes, what: str) -> bytes | None:
        """The value of ``key`` in the ``info`` database, or None."""
        with self._txn(what) as txn:
            raw = txn.get(key, db=self._info)
        return None if raw is None else bytes(raw)

    def info_items(self, prefix: bytes, what: str) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of ``info`` whose key starts with ``prefix``."""
        out = []
        with self._txn(what) as txn:
            c = txn.cursor(db=self._info)
            if c.set_range(prefix):
                for k, v in c:
                    if not k.startswith(prefix):
                        break
                    out.append((bytes(k), bytes(v)))
        return out

    def info_update(self, keys: list[bytes], what: str,
                    fn: Callable[[dict[bytes, bytes | None]], dict[bytes, bytes]]) -> None:
        """One write transaction: ``fn`` gets the current values of ``keys``
        (None when missing) and returns the values to store."""
        with self._txn(what, write=True) as txn:
            now = {}
            for k in keys:
                raw = txn.get(k, db=self._info)
                now[k] = None if raw is None else bytes(raw)
            for k, v in fn(now).items():
                txn.put(k, v, db=self._info)

    # -- consumer offsets (the rest: pylog.commitstore) -----------------------------
    def groups_with_offsets(self) -> set[str]:
        names = set()
        with self._txn("groups with offsets") as txn:
            for k, _ in txn.cursor(db=self._offsets):
                names.add(k.split(b"\0", 1)[0].decode())
            for k, _ in txn.cursor(db=self._groups):
                names.add(k.decode())
        return names

    def delete_group(self, group: str,
                     check: Callable[[GroupState], None]) -> bool:
        """Delete ``group``'s document (M-7) and every offset it committed
        (M-6) in one write transaction, after ``check(state)`` (which
        raises to refuse, e.g. GroupNotEmpty) passed on the state read in
        that same transaction. Returns False when there was nothing to
        delete. Durable as the sync mode makes commits (M-8)."""
        prefix = group.encode() + b"\0"
        after: list = []
        with self._txn(f"delete group {group!r}", write=True, after=after) as txn:
            raw = txn.get(group.encode(), db=self._groups)
            check(groupstate.decode(group, raw, self._data_path()))
            cur = txn.cursor(db=self._offsets)
            doomed = []
            if cur.set_range(prefix):
                for k, _ in cur:
                    if not k.startswith(prefix):
                        break
                    doomed.append(k)
            self.clear_offsets(txn, doomed, after)
            if raw is not None:
                txn.delete(group.encode(), db=self._groups)
        return raw is not None or bool(doomed)

    # -- group membership ------------------------------------------------------------
    def group_state(self, group: str) -> GroupState:
        """The group's document (M-7); CorruptGroupError when it is damaged."""
        with self._txn("get group") as txn:
            raw = txn.get(group.encode(), db=self._groups)
        return groupstate.decode(group, raw, self._data_path())

    def change_group(self, group: str, fn, what: str = "update group"):
        """Run ``fn(state, commit) -> (new_state, result)`` on the group's
        state in one write transaction (atomic across processes) and store
        ``new_state``; ``fn`` may call ``commit({(topic, partition):
        offset})`` to store offsets in the same transaction. Nothing is
        stored when ``fn`` raises or the document is damaged
        (CorruptGroupError). Returns ``result``; errors name ``what``."""
        after: list = []
        with self._txn(what, write=True, after=after) as txn:
            raw = txn.get(group.encode(), db=self._groups)
            state = groupstate.decode(group, raw, self._data_path())
            now = int(time.time() * 1000)
            pending: dict = {}

            def commit(offsets):
                pending.update(offsets)

            new, result = fn(state, commit)
            # C-4: fences first, from the slots' committed values
            self.sync_fences(txn, group, new.owners, state.owners)
            if pending:
                self.store_offsets(txn, group, pending, now, new.owners, after)
            if new != state:
                out = groupstate.encode(new)
                if out is not None:
                    txn.put(group.encode(), out, db=self._groups)
                elif raw is not None:
                    txn.delete(group.encode(), db=self._groups)
        return result

    def update_group(self, group: str, fn):
        """Like ``change_group`` on the JSON document: ``fn(doc, commit) ->
        result`` mutates ``doc`` in place. What it leaves is checked to be
        an M-7 document before it is stored."""
        def on_doc(state, commit):
            doc = groupstate.to_doc(state)
            result = fn(doc, commit)
            try:
                return groupstate.from_doc(doc), result
            except ValueError as exc:
                raise PylogError(f"update group {group!r}: the new document is "
                                 f"not an M-7 group document: {exc}") from None
        return self.change_group(group, on_doc)

    def _group_in(self, txn, group: str) -> GroupState:
        return groupstate.decode(group, txn.get(group.encode(), db=self._groups),
                                 self._data_path())

    def _data_path(self) -> str:
        return os.path.join(self.path, "data.mdb")
