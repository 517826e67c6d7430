"""Topic administration of a log: create, grow, alter and delete topics,
and the deleted incarnations a delete leaves to finish (FORMAT.rst L-4,
L-5, M-11).

:class:`TopicAdmin` is a base of :class:`pylog.store.LogStore` and works on
its state (``path``, ``meta``, ``_partitions``, ``_lock``...); it is split
out so that the store's open/close/partition code and the admin code each
stay small enough to read.

Thread safety: every method that changes topics holds the Log's lock;
other processes see a change once its metadata commit returns.
Durability: a topic exists once its metadata commit is durable; a delete
is atomic from that commit on (its tombstone finishes it after a crash).
"""

from __future__ import annotations

import builtins
import errno
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from . import topicdirs
from .config import PARTITIONS_MAX, TopicConfig, validate_topic_name
from .errors import (
    DiskFullError,
    InvalidArgument,
    LogFailedError,
    LogOSError,
    PylogError,
    ReadOnlyLog,
    TopicExists,
)
from .files import DISK_FULL_ERRNOS, disk_full_error
from .identity import vanished
from .partition import STATE_FILE, STATE_MAGIC, Partition
from .records import PartitionInfo, TopicInfo
from .segment import fsync_dir

if TYPE_CHECKING:
    from .identity import Identity
    from .metadata import Metadata

_log = logging.getLogger("pylog")


class TopicAdmin:
    """Topic administration; see the module docstring."""

    # set by LogStore, of which this is a base
    path: str
    sync: str
    readonly: bool
    meta: Metadata
    _lock: threading.RLock
    _lock_fd: int
    _lock_token: int
    _identity: Identity
    _partitions: dict[tuple[str, int], Partition]
    _topic_cache: dict[str, tuple[float, dict[str, Any]]]

    if TYPE_CHECKING:
        def _check(self) -> None: ...
        def _topic_doc(self, topic: str, max_age_s: float = 1.0) -> dict[str, Any]: ...
        def _open_partition(self, topic: str, p: int, doc: dict[str, Any],
                            recover: bool = True) -> Partition: ...
        def partition(self, topic: str, p: int) -> Partition: ...

    # -- topic admin ------------------------------------------------------------
    def _writable(self, what: str) -> None:
        self._check()
        if self.readonly:
            raise ReadOnlyLog(f"{what}: log {self.path} was opened read-only")

    def create_topic(self, name: str, partitions: int = 1, *, exist_ok: bool = False,
                     **config: Any) -> TopicInfo:
        """Create a topic; config keys: retention_ms, retention_bytes,
        segment_bytes, max_message_bytes, compression,
        message_timestamp_after_max_ms, message_timestamp_before_max_ms
        (see :class:`pylog.config.TopicConfig`). Returns its TopicInfo.

        With ``exist_ok``, an existing topic is returned as it is (its
        partition count and config are not changed)."""
        validate_topic_name(name)
        self._writable(f"create topic {name!r}")
        if isinstance(partitions, bool) or not isinstance(partitions, int) \
                or not 1 <= partitions <= PARTITIONS_MAX:
            raise InvalidArgument(
                f"partitions={partitions!r}; expected int in [1, {PARTITIONS_MAX}]")
        cfg = TopicConfig.from_dict(config)
        action = f"create topic {name!r} in {self.path}"
        with self._lock:
            if exist_ok and self.meta.get_topic(name) is not None:
                return self.describe_topic(name)
            self._check_dir_writable(action, "nothing was created; ")
            # L-5: a deleted incarnation's directories go first, or nothing
            # is created (a new topic never adopts them)
            self._finish_deletions(only=name)
            try:
                doc = self.meta.create_topic(name, partitions, cfg.to_dict())
            except TopicExists:
                if not exist_ok:
                    raise
                return self.describe_topic(name)
            self._topic_cache.pop(name, None)
            try:
                for p in range(partitions):
                    self._open_partition(name, p, doc)
            except BaseException as exc:
                # all or nothing: a topic whose partitions cannot all be
                # made is taken out of the metadata, with what was made
                left = self._undo_create_topic(name, doc)
                if not isinstance(exc, (OSError, LogFailedError)):
                    raise
                if isinstance(exc, DiskFullError) or \
                        getattr(exc, "errno", None) in DISK_FULL_ERRNOS:
                    # the undo itself needs space: what it left is a topic
                    # whose partitions are made on first use (G8)
                    raise DiskFullError(
                        f"{action}: disk full ({exc}); " + (
                            "nothing was created" if not left else
                            "the topic exists, its partitions are created on "
                            "first use once space is freed")) from exc
                raise _restate(exc, action, "nothing was created" if not left else
                               f"the topic was removed again but {left} could "
                               "not be; remove it by hand") from None
        return self.describe_topic(name)

    def _check_dir_writable(self, action: str, hint_prefix: str = "") -> None:
        """Raise LogPermissionError before anything changes if this process
        may not create or remove partition directories in the log directory
        (FileVanishedError when the log directory itself is gone, L-6)."""
        gone = self._identity.problem()
        if gone is not None:
            raise vanished(action, gone)
        effective = os.access in os.supports_effective_ids
        if not os.access(self.path, os.W_OK | os.X_OK, effective_ids=effective):
            denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), self.path)
            try:
                mine = os.stat(self.path).st_uid == os.geteuid()
            except OSError:
                mine = False
            raise LogOSError.from_os_error(
                denied, action, hint_prefix + (
                    f"you own it: make it writable again (chmod u+wx {self.path})"
                    if mine else "run as the log's owner, or have them grant "
                    f"you write access to {self.path}"))

    def _undo_create_topic(self, name: str, doc: dict[str, Any]) -> str | None:
        """Take a topic this process just created out of the metadata (if it
        is still that topic) and remove its partition directories; returns
        what could not be removed, or None. The directories go first: on a
        full disk their space is what lets the metadata commit through."""
        try:
            self._remove_partition_dirs(name, doc["partitions"], doc["id"])
        except OSError as exc:
            return f"{exc.filename or 'a partition directory'} ({exc.strerror})"
        try:
            current = self.meta.get_topic(name)
            if current is not None and current["id"] == doc["id"]:
                self.meta.delete_topic(name)
        except PylogError as exc:
            return f"its metadata ({exc})"
        finally:
            self._topic_cache.pop(name, None)
        return None

    def _remove_partition_dirs(self, name: str, count: int, topic_id: str | None) -> None:
        """Tell other processes partitions 0..count-1 of incarnation
        ``topic_id`` of ``name`` are gone (P-2) and remove their
        directories; raises the first OSError."""
        for p in range(count):
            d = os.path.join(self.path, f"{name}-{p}")
            if not os.path.isdir(d) or os.path.islink(d):
                part = self._partitions.pop((name, p), None)
                if part is not None:
                    part.close()
                continue
            found = topicdirs.read_id(d)
            if found != topic_id and (found is not None or topicdirs.holds_records(d)):
                continue        # not this incarnation's: never removed here (L-4)
            try:
                self._retire_directory(name, p, d, topic_id)
            except FileNotFoundError:
                pass

    def _open_new_partitions(self, name: str, doc: dict[str, Any],
                             numbers: builtins.range | list[int]) -> None:
        """Create the directories of new partitions. On an I/O error the
        topic stays recorded and its partitions are created on first use, so
        the call can simply be retried once the disk is healthy (G8)."""
        for p in numbers:
            try:
                self._open_partition(name, p, doc)
            except LogOSError:
                raise
            except DiskFullError as exc:
                raise DiskFullError(
                    f"{exc}; the topic exists, its partitions are created on "
                    "first use once space is freed") from exc.__cause__
            except OSError as exc:
                raise LogFailedError(
                    f"create partition {name}-{p} in {self.path}: {exc.strerror} "
                    f"(errno {exc.errno}); the topic exists, its partition is "
                    "created on first use once the disk is healthy") from exc

    def topics(self) -> list[str]:
        """The names of the log's topics, sorted (as ``list_topics()``).
        Thread-safe; reads the metadata (LMDB), never blocks on writers."""
        self._check()
        return sorted(self.meta.topics())

    def describe_topic(self, name: str) -> TopicInfo:
        """Topic ``name``'s partition count, config (every key of
        :class:`~pylog.config.TopicConfig`, defaults filled in) and a
        :class:`~pylog.PartitionInfo` per partition (start and end offset,
        bytes and segments on disk, read now). Raises TopicNotFound.
        Thread-safe; opens each partition it describes."""
        validate_topic_name(name)
        self._check()
        doc = self._topic_doc(name, 0)
        infos = [PartitionInfo(**self.partition(name, p).describe())
                 for p in range(doc["partitions"])]
        # through TopicConfig: keys a log created by an older version lacks
        # show their defaults, which is what applies
        return TopicInfo(name, doc["partitions"],
                         TopicConfig.from_dict(doc["config"]).to_dict(), infos)

    def create_partitions(self, name: str, total: int) -> TopicInfo:
        """Grow a topic to ``total`` partitions (never shrinks, as Kafka; M-4)."""
        validate_topic_name(name)
        self._writable(f"add partitions to {name!r}")
        doc = self._topic_doc(name, 0)
        if isinstance(total, bool) or not isinstance(total, int) or \
                not doc["partitions"] < total <= PARTITIONS_MAX:
            raise InvalidArgument(
                f"total={total!r}: must be an int above the current "
                f"{doc['partitions']} partitions and at most {PARTITIONS_MAX}")
        with self._lock:
            self._check_dir_writable(f"add partitions to {name!r} in {self.path}",
                                     "nothing was changed; ")
            doc = self.meta.update_topic(name, partitions=total)
            self._topic_cache.pop(name, None)
            self._open_new_partitions(name, doc, range(total))
        return self.describe_topic(name)

    def alter_topic(self, name: str, **config: Any) -> TopicInfo:
        """Change config keys of a topic (takes effect for new segments and
        the next retention pass; other processes see it within a second)."""
        validate_topic_name(name)
        self._writable(f"alter topic {name!r}")
        doc = self._topic_doc(name, 0)
        cfg = TopicConfig.from_dict(doc["config"]).replace(**config)
        with self._lock:
            doc = self.meta.update_topic(name, config=cfg.to_dict())
            self._topic_cache.pop(name, None)
            for p in range(doc["partitions"]):
                part = self._partitions.get((name, p))
                if part is not None:
                    part.config = cfg
        return self.describe_topic(name)

    def delete_topic(self, name: str) -> None:
        """Delete a topic, its records and the groups' offsets for it.

        Atomic: the topic is gone for every process once the metadata commit
        (which records a tombstone, M-11) returns. Its directories are then
        marked deleted and removed; when that fails (the log directory does
        not allow the rename, a crash), the tombstone makes the next open or
        ``create_topic`` of the name finish it, and a new topic never adopts
        them (L-4, L-5). Raises LogFailedError, after the delete took effect,
        when directories could not be removed."""
        validate_topic_name(name)
        self._writable(f"delete topic {name!r}")
        action = f"delete topic {name!r} in {self.path}"
        with self._lock:
            self._check_dir_writable(action, "nothing was deleted; ")
            doc = self.meta.delete_topic(name)
            self._topic_cache.pop(name, None)
            self._share_states_deleted(doc["share_keys"])
            failed = self._bury_incarnation(name, doc["partitions"], doc.get("id"))
            if failed:
                raise LogFailedError(
                    f"delete topic {name!r} in {self.path}: the topic is deleted, "
                    f"but {failed}; its records are never served again, and the "
                    "directories are removed by the next open or create_topic of "
                    "the name once the log directory allows it (L-5)")

    def _share_states_deleted(self, keys: list[bytes]) -> None:
        """The share-partition states ``keys`` (Q-3) went with a deleted
        topic: the Log (pylog.log) removes their files too."""

    # -- deleted incarnations (L-4, L-5, M-11) ----------------------------------------
    def _finish_deletions(self, only: str | None = None, strict: bool = True) -> None:
        """Remove the directories that tombstones (M-11) list, then the
        tombstones. With ``strict``, a directory that cannot be removed
        raises LogFailedError; otherwise it is logged and left for later
        (an open must not fail because a deleted topic's files linger)."""
        try:
            tombs = self.meta.tombstones()
        except PylogError:
            if strict:
                raise
            return
        for name, tomb in tombs.items():
            if only is not None and name != only:
                continue
            failed = self._bury_incarnation(name, tomb["partitions"], tomb.get("id"))
            if failed and strict:
                raise LogFailedError(
                    f"create topic {name!r} in {self.path}: {failed}; a topic "
                    "never reuses the directories of a deleted one, so nothing "
                    "was created; make the log directory writable and retry")
            if failed:
                _log.warning("%s: deleted topic %r: %s; retried at the next open",
                             self.path, name, failed)

    def _bury_incarnation(self, name: str, partitions: int, topic_id: str | None) -> str:
        """Mark deleted and remove the directories of incarnation
        ``topic_id`` of topic ``name``; clear its tombstone when all are
        gone. Returns "" or what could not be removed. Under self._lock."""
        problems = []
        for p in range(partitions):
            d = os.path.join(self.path, f"{name}-{p}")
            if not os.path.isdir(d) or not topicdirs.belongs_to(d, topic_id):
                continue                # gone, or a newer incarnation's
            try:
                self._retire_directory(name, p, d, topic_id)
            except FileNotFoundError:
                pass
            except (OSError, PylogError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else str(exc)
                problems.append(f"{name}-{p} ({why})")
        if problems:
            return "could not remove the directories " + ", ".join(problems)
        # the renames are durable before the tombstone goes (a power loss
        # must not bring back a directory nothing lists any more)
        try:
            fsync_dir(self.path)
        except OSError as exc:
            return f"could not make the removal durable ({exc.strerror})"
        self.meta.clear_tombstone(name, topic_id)
        return ""

    def _retire_directory(self, name: str, p: int, d: str, topic_id: str | None) -> None:
        """Tell processes that still use the partition it is gone (P-2),
        then move the directory to a grave and remove it (L-5)."""
        part = self._partitions.get((name, p))
        if part is not None and getattr(part, "topic_id", None) in (topic_id, None):
            del self._partitions[(name, p)]
        else:
            part = None
        if part is None or part.closed:
            part = Partition(self.path, name, p, TopicConfig(), self.meta,
                             sync=self.sync,
                             lock_identity=(self._lock_token, self._lock_fd))
        try:
            if part.initialized():
                part.mark_deleted()
        finally:
            part.close()
        topicdirs.bury(d)

    def _claim_directory(self, topic: str, p: int, topic_id: str) -> None:
        """Make sure the directory of (topic, p) is incarnation
        ``topic_id``'s before it is opened (L-4): a leftover of a deleted
        incarnation is retired (writable) or refused (read-only), never
        adopted."""
        d = os.path.join(self.path, f"{topic}-{p}")
        if self.readonly:
            found = topicdirs.read_id(d)
            if found is not None and found != topic_id:
                raise LogFailedError(
                    f"open partition {topic}-{p} in {self.path}: its directory "
                    "belongs to a deleted incarnation of the topic (L-4); open "
                    "the log for writing once to remove it")
            return
        for _ in range(3):
            try:
                topicdirs.claim(d, topic_id, deleted_mark=_state_marks_deleted)
                return
            except topicdirs.ForeignIncarnation as foreign:
                self._check_leftover(topic, p, d, foreign.found)
                try:
                    self._retire_directory(topic, p, d, None)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise LogFailedError(
                        f"open partition {topic}-{p} in {self.path}: its directory "
                        "holds a deleted incarnation of the topic and cannot be "
                        f"removed ({exc.strerror}); make the log directory "
                        "writable (L-4)") from exc
            except OSError as exc:
                if exc.errno in DISK_FULL_ERRNOS:
                    raise disk_full_error(f"create partition directory {d}",
                                          exc) from exc
                raise LogFailedError(
                    f"create partition directory {d}: {exc.strerror} "
                    f"(errno {exc.errno})") from exc
        raise LogFailedError(f"open partition {topic}-{p} in {self.path}: its "
                             "directory keeps changing incarnation (L-4)")

    def _check_leftover(self, topic: str, p: int, d: str, found: str | None) -> None:
        """Raise LogFailedError unless the directory ``d`` of incarnation
        ``found`` (another one) may be retired: it holds no record, or the
        metadata lists ``found`` as deleted (its tombstone, M-11) or its
        state was marked deleted (P-2, written after the delete's commit).
        A power loss cannot leave such a directory behind (M-8: the commits
        of create_topic and delete_topic are durable before their
        directories change), so a foreign id alone means the metadata was
        replaced or lost (an old copy of data.mdb restored) or a power loss
        hit an older pylog: its records are then their only copy, and are
        never removed on that guess (L-4, L-5)."""
        if found is None or _state_marks_deleted(d) or not topicdirs.holds_records(d):
            return
        tomb = self.meta.tombstones().get(topic)
        if tomb is not None and tomb.get("id") == found:
            return
        raise LogFailedError(
            f"open partition {topic}-{p} in {self.path}: its directory {d} holds "
            f"records of another incarnation of the topic (topic.id {found}) that "
            "the metadata does not list as deleted (L-4): meta/data.mdb is not the "
            "one that created it (replaced by an older copy, or the topic's "
            "creation lost to a power loss under an older pylog, which did not "
            "make it durable first, M-8); nothing was removed. "
            "Put back the data.mdb that goes with the directory, or move the "
            "directory out of the log to give up its records")

    def enforce_retention(self) -> int:
        """Apply retention to every partition now; return segments deleted."""
        self._writable("enforce retention")
        n = 0
        for topic, doc in self.meta.topics().items():
            for p in range(doc["partitions"]):
                n += self.partition(topic, p).enforce_retention()
        return n


def _state_marks_deleted(directory: str) -> bool:
    """Does ``partition.state`` in ``directory`` mark it deleted (P-2)? Read
    without the seqlock: a deleted mark is never overwritten."""
    try:
        with builtins.open(os.path.join(directory, STATE_FILE), "rb") as f:
            head = f.read(24)
    except OSError:
        return False
    return len(head) == 24 and head[:4] == STATE_MAGIC and \
        int.from_bytes(head[16:24], sys.byteorder, signed=True) == -1


def _restate(exc: BaseException, action: str, outcome: str) -> PylogError:
    """A failure met while doing ``action``, said as the outcome of it: a
    LogOSError of the fitting class for an OSError (raw, or the cause of a
    LogFailedError), else a LogFailedError."""
    cause = exc.__cause__ if isinstance(exc, LogFailedError) else exc
    if isinstance(cause, LogOSError):
        return type(cause)(f"{action}: {cause}; {outcome}", errno=cause.errno,
                           strerror=cause.strerror, filename=cause.filename)
    if isinstance(cause, OSError):
        return LogOSError.from_os_error(cause, action, outcome)
    return LogFailedError(f"{action}: {exc}; {outcome}")
