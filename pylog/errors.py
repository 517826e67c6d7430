"""The exception tree of pylog (SPEC §4).

Every error pylog raises on purpose is a subclass of :class:`PylogError`.
Where a built-in exception fits, the class also inherits it, so code that
already catches ``ValueError`` or ``LookupError`` keeps working.

Messages follow one shape: what was being done, to which file or object, why,
and where possible a hint::

    append to order-events-3/00000000000000001234.log: disk full (ENOSPC);
    free space or lower retention_bytes

What an error says about the disk (durability): a call that raised
acknowledged nothing. The errors of an invalid call (InvalidTopicName,
InvalidConfig, InvalidArgument, InvalidTimestamp, RecordTooLarge,
TopicNotFound, TopicExists, PartitionNotFound, LogClosed, ReadOnlyLog,
GroupNotEmpty, CommitFailedError, MetadataBusyError, ForkedLogError) are
raised before anything is written: nothing of the call is on disk. After a
LogFailedError, DiskFullError or LogOSError during a write, every record
acknowledged before it is still there when the log is reopened (G8); the
failed call's own records were not acknowledged and may or may not be
there. CorruptLogError and DeserializationError are raised on reading and
change nothing.

Thread safety: exception objects are plain values, safe to pass between
threads and between processes (a LogOSError keeps its class and fields).
"""

from __future__ import annotations

import errno as _errno
import os as _os
import stat as _stat
from errno import errorcode as _errorcode
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .records import Record


class PylogError(Exception):
    """Base class of every error pylog raises on purpose.

    ``published``: set by ``Producer.send_batch`` over several partitions
    when it failed after some of them were appended: the RecordMetadata
    of the items that were (in the order given), so that a retry sends
    only the others; None otherwise."""

    published: list[Any] | None = None


class InvalidTopicName(PylogError, ValueError):
    """A topic name breaks rule M-3 of FORMAT.rst (charset, length, . or ..)."""


class InvalidConfig(PylogError, ValueError):
    """A configuration key is unknown or its value is out of range."""


class InvalidArgument(PylogError, ValueError):
    """An argument has the wrong type or an out-of-range value."""


class InvalidTimestamp(PylogError, ValueError):
    """A record's producer-supplied timestamp is outside the window the
    topic accepts: more than ``message_timestamp_after_max_ms`` ahead of
    the broker clock or more than ``message_timestamp_before_max_ms``
    behind it (Kafka's message.timestamp.after/before.max.ms).

    ``timestamp`` is the record's, ``bound`` the limit it crossed (ms since
    the epoch) and ``setting`` the topic config key that sets it. Nothing of
    the call was written.
    """

    def __init__(self, message: str, timestamp: int, bound: int, setting: str):
        self.timestamp = timestamp
        self.bound = bound
        self.setting = setting
        super().__init__(message)


class TopicNotFound(PylogError, LookupError):
    """The named topic does not exist in this log."""


class TopicExists(PylogError):
    """create_topic() of a topic that already exists (and exist_ok=False)."""


class PartitionNotFound(PylogError, LookupError):
    """The topic exists but has no partition with that number."""


class RecordTooLarge(PylogError, ValueError):
    """A record (or batch) is larger than the topic's max_message_bytes,
    or holds more records and headers than a batch may (FORMAT.rst B-7)."""


class LogClosed(PylogError):
    """The Log, producer or consumer was used after close()."""


class ReadOnlyLog(PylogError):
    """A write was attempted on a log opened with readonly=True."""


class CorruptLogError(PylogError):
    """Bytes on disk fail validation (CRC, framing, offsets, metadata).

    ``path`` names the damaged file (None when decoding a bare buffer) and
    ``position`` the byte position of the damaged batch or entry in it.
    """

    def __init__(self, reason: str, path: str | None = None,
                 position: int | None = None):
        self.reason = reason
        self.path = path
        self.position = position
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.path if self.path is not None else "<buffer>"
        if self.position is not None:
            where = f"{where} at position {self.position}"
        return (f"corrupt log data in {where}: {self.reason}; "
                "run 'pylog verify' on the log")

    def with_path(self, path: str) -> "CorruptLogError":
        """A copy of this error naming ``path`` (the native layer knows no paths)."""
        return CorruptLogError(self.reason, path, self.position)


class CorruptGroupError(CorruptLogError):
    """A consumer group's membership document (FORMAT.rst M-7) in the
    metadata is damaged. ``group`` names the group. Nothing was changed on
    disk: the group cannot be joined, committed to by its members or reset
    until the document is restored; its committed offsets are stored apart
    (M-6) and are not affected."""

    def __init__(self, group: str, reason: str, path: str | None = None):
        self.group = group
        super().__init__(reason, path)

    def _render(self) -> str:
        where = self.path if self.path is not None else "the metadata"
        return (f"read consumer group {self.group!r} in {where}: its "
                f"membership document (M-7) is damaged ({self.reason}); "
                "nothing was changed. Its committed offsets are stored apart "
                "and are intact: restore meta/data.mdb from a backup, or "
                "consume under another group_id (reset_group can set that "
                "group's offsets)")

    def with_path(self, path: str) -> "CorruptGroupError":
        return CorruptGroupError(self.group, self.reason, path)


class OffsetOutOfRange(PylogError, IndexError):
    """A fetch or seek position is outside [log start offset, end offset]."""


class CommitFailedError(PylogError):
    """An offset commit was refused: the member no longer owns the partition
    (a rebalance moved it, SPEC §5) or the consumer left its group."""


class AcknowledgementError(PylogError):
    """A share consumer's commit could not apply acknowledgements: it no
    longer held these records (their lock expired and another consumer took
    them, or retention deleted them). ``records``: [(topic, partition, offset)]."""

    def __init__(self, message: str, records: list[tuple[str, int, int]]):
        super().__init__(message)
        self.records = records


class ShareGroupConfigError(InvalidArgument):
    """A share consumer asked for a setting its share group already has
    with another value (the settings are the group's: the first consumer
    of the group stores them; ``Log.alter_share_group`` changes them).
    ``group``, ``setting``, ``stored`` (the group's value) and ``asked``."""

    def __init__(self, message: str, group: str, setting: str, stored: object,
                 asked: object):
        super().__init__(message)
        self.group = group
        self.setting = setting
        self.stored = stored
        self.asked = asked


class DeserializationError(PylogError, ValueError):
    """A consumer's key or value deserializer raised on a record.

    ``topic``, ``partition`` and ``offset`` name the record; ``record`` is
    the raw :class:`pylog.Record` (key and value as stored bytes). The
    consumer's position stays on the record: ``seek(tp, offset + 1)`` skips
    it, or open the consumer with ``dead_letter_topic=`` to route such records
    there.
    """

    def __init__(self, message: str, record: Record):
        self.record = record
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        super().__init__(message)


class GroupNotEmpty(PylogError):
    """A group operation that needs an empty group found live members."""


class GroupNotFound(PylogError, LookupError):
    """A group operation named a group that has neither members nor
    committed offsets (Kafka's GroupIdNotFound)."""


class LogFailedError(PylogError):
    """A partition hit an I/O error (EIO, ENOSPC) and is in the FAILED state.

    Every later call on it raises this error, naming the original cause,
    until the log is reopened (G8: fail-stop).
    """


class DiskFullError(LogFailedError):
    """A write found the disk (or quota) full: ENOSPC or EDQUOT.

    Nothing of the failed append was published (a ``send_batch`` over
    several partitions may have appended to others first: ``published``
    names those items), and unlike other LogFailedErrors the partition
    stays usable: retry once space is freed (G8). A full disk never kills
    the process (no SIGBUS): files that are memory-mapped have their
    blocks allocated before they are mapped.
    """


class FileVanishedError(LogFailedError):
    """A file or directory the open log holds (the log directory, a
    partition directory, a segment, ``meta/data.mdb``) was deleted, moved or
    replaced under it (FORMAT.rst L-6): what is written there can never be
    read again, so the affected partitions (or the metadata) fail-stop. An
    open beside other processes whose ``meta/lock.mdb`` was deleted under
    them raises it too, changing nothing."""


class MetadataBusyError(PylogError):
    """A metadata operation (commit, group change, topic admin) gave up
    waiting for the metadata writer lock (FORMAT.rst L-7): another process
    holds it — typically stopped (SIGSTOP, a debugger) inside a metadata
    transaction. ``holder_pid`` names it when known. Nothing was changed;
    the call can be retried. (Not a TimeoutError: that is an OSError, and
    an OSError from the storage layer means an I/O failure.)"""

    def __init__(self, message: str, *, holder_pid: int | None = None):
        self.holder_pid = holder_pid
        super().__init__(message)


class FlushTimeoutError(PylogError):
    """``Producer.flush(timeout=)`` or ``close(timeout=)`` gave up waiting
    for the fdatasync of the records sent (kafka-python's
    KafkaTimeoutError). The records are in the log, readable and safe from
    a process crash; only their power-loss durability was not confirmed in
    time (the sync goes on in the background; flush() again to wait for
    it). Not a TimeoutError: that is an OSError, which from pylog means an
    I/O failure."""


class SendTimeoutError(PylogError):
    """``FutureRecordMetadata.get(timeout=)`` of a lingering producer's send
    gave up waiting (kafka-python's KafkaTimeoutError). The record is not
    known to be stored yet; the future stays usable: get() again, or
    flush() the producer. Not a TimeoutError: that is an OSError, which from
    pylog means an I/O failure."""


class ForkedLogError(PylogError):
    """An object created before os.fork() was used in the child process."""


class MissingDependencyError(PylogError, ImportError):
    """A feature needs an optional dependency that is not installed; the
    message names the extra to install (``pip install 'pylog[metrics]'``)."""


class ProducerFencedError(PylogError):
    """A newer producer with the same ``transactional_id`` was created (its
    epoch is higher), or this producer's transaction was aborted for it
    (the owner died or ``transaction_timeout_ms`` passed): this instance
    may send nothing more, and its open transaction, if any, was or will
    be aborted. Close it; the newer instance carries on (Kafka's
    ProducerFencedException). FORMAT.rst X-5."""


class TransactionError(PylogError):
    """A transactional call made in the wrong state: ``send`` of a
    transactional producer outside a transaction, ``begin_transaction``
    inside one, ``commit_transaction``/``abort_transaction`` or
    ``send_offsets_to_transaction`` with none open, or a transactional
    call on a producer made without ``transactional_id``. Nothing was
    written."""


class LogOSError(PylogError, OSError):
    """An operating-system call on the log's files failed: what pylog tried,
    on which path, why, and a hint. The subclasses below name the failures a
    user can cause (permissions, a read-only filesystem, a path that cannot
    hold a log); others keep this class.

    ``errno``, ``strerror`` and ``filename`` are those of the OSError behind
    it (``filename`` is the file or directory the failing call named);
    ``str()`` is the message.
    """

    def __init__(self, message: str, *, errno: int | None = None,
                 strerror: str | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno = errno
        self.strerror = strerror
        self.filename = filename

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Callable[..., LogOSError], tuple[Any, ...]]:
        return (_rebuild_os_error, (type(self), self.args[0] if self.args else "",
                                    self.errno, self.strerror, self.filename))

    @classmethod
    def from_os_error(cls, exc: OSError, action: str,
                      hint: str | None = None) -> LogOSError:
        """The LogOSError subclass fitting ``exc.errno``, with the message
        ``<action>: <what went wrong> (<ERRNO NAME>)[; <hint>]``.

        ``action`` says what was tried and on which log ("open /x/log for
        writing"); the message adds the file the call named, its owner and
        mode where that explains a permission problem."""
        code = exc.errno
        name = _errorcode.get(code, f"errno {code}") if code else "no errno"
        target = exc.filename
        other = (LogOSError, (exc.strerror or str(exc)).lower(), " ({})")
        klass, why, shape = other if code is None else _OS_ERRORS.get(code, other)
        detail = ""
        if target is not None:
            detail = shape.format(target)
            if klass is LogPermissionError:
                detail += _owner_note(target)
        message = f"{action}: {why} ({name}){detail}"
        if hint:
            message += f"; {hint}"
        if code in (_errno.EMFILE, _errno.ENFILE):
            message += "; " + _FD_HINT
        return klass(message, errno=code, strerror=exc.strerror, filename=target)


def _rebuild_os_error(klass: type[LogOSError], message: str, errno: int | None,
                      strerror: str | None, filename: str | None) -> LogOSError:
    return klass(message, errno=errno, strerror=strerror, filename=filename)


def _owner_note(path: str) -> str:
    """`` (owner uid 0, mode 0644; its directory /x: owner uid 0, mode 0555;
    you are uid 1000)``: of ``path`` and of its parent directory, whose
    permissions decide a create, rename or unlink there; only what can be
    inspected; empty when neither can."""
    parts = []
    parent = _os.path.dirname(_os.path.abspath(path))
    for p, prefix in ((path, ""), (parent, f"its directory {parent}: " if
                                   _os.path.lexists(path) else f"in {parent}: ")):
        try:
            st = _os.stat(p)
        except OSError:
            continue
        parts.append(f"{prefix}owner uid {st.st_uid}, mode {_stat.S_IMODE(st.st_mode):04o}")
    if not parts:
        return ""
    return f" ({'; '.join(parts)}; you are uid {_os.geteuid()})"


class LogPermissionError(LogOSError, PermissionError):
    """The operating system refused access to a file or directory of the log
    (EACCES, EPERM): another user's log, a directory without write permission.
    Never reported as corruption. Fix the permissions or run as the log's
    owner; a log that may only be read can be opened with ``readonly=True``
    (which still needs write access to ``meta/lock.mdb``)."""


class ReadOnlyFilesystemError(LogOSError):
    """The log is on a read-only filesystem (EROFS) and the call needed to
    write there; open it with ``readonly=True`` or remount read-write."""


class TooManyOpenFilesError(LogOSError):
    """The process (EMFILE) or the system (ENFILE) ran out of file
    descriptors, even after the Log closed every segment it held and was not
    using. Nothing was appended by the call that raised it, nothing
    acknowledged is lost and the partition stays usable: lower the Log's
    ``max_open_files`` (pylog.open), open fewer files elsewhere in the
    process, or raise the limit (``ulimit -n``, RLIMIT_NOFILE)."""


class TooManyMapsError(LogOSError):
    """The process ran out of memory maps (mmap failed with ENOMEM: it holds
    ``vm.max_map_count`` maps, or its address space is exhausted), even after
    the Log unmapped every partition state and segment it held and was not
    using. Nothing was appended by the call that raised it, nothing
    acknowledged is lost and the partition stays usable: lower the Log's
    ``max_open_maps`` (pylog.open), map fewer files elsewhere in the
    process, or raise the limit (``sysctl vm.max_map_count``)."""


_FD_HINT = ("lower max_open_files= of pylog.open (the descriptors a Log keeps "
            "for segments; default: from the limit) or open fewer files "
            "elsewhere in the process, or raise the process's limit "
            "(ulimit -n, RLIMIT_NOFILE)")


class NotALogDirectoryError(LogOSError, NotADirectoryError):
    """The path given for a log is (or lies below) something that is not a
    directory: a regular file, a dangling symlink, a device."""


class LogNotFound(LogOSError, FileNotFoundError):
    """No log at the path (``readonly=True`` never creates one): the path
    does not exist or has no ``meta/`` directory."""


# errno -> (class, what went wrong, how the named file is shown)
_OS_ERRORS: dict[int, tuple[type[LogOSError], str, str]] = {
    _errno.EACCES: (LogPermissionError, "permission denied", " on {}"),
    _errno.EMFILE: (TooManyOpenFilesError, "too many open files in the process "
                    "(RLIMIT_NOFILE)", " (opening {})"),
    _errno.ENFILE: (TooManyOpenFilesError, "too many open files in the system",
                    " (opening {})"),
    _errno.EPERM: (LogPermissionError, "permission denied", " on {}"),
    _errno.EROFS: (ReadOnlyFilesystemError, "the filesystem is read-only",
                   " (writing {})"),
    _errno.ENOTDIR: (NotALogDirectoryError, "not a directory",
                     ": a directory above {} is a file"),
    _errno.EEXIST: (NotALogDirectoryError, "not a directory",
                    ": {} exists and is not a directory"),
    _errno.ENOENT: (LogNotFound, "no such file or directory", ": {}"),
}


__all__ = [name for name in dir() if name.endswith(("Error", "Name", "Found",
                                                    "Exists", "Large",
                                                    "Closed", "Log", "Range",
                                                    "Config", "Argument", "Timestamp",
                                                    "Empty"))]


def kafka_name_error(obj: object, name: str, instead: dict[str, str],
                     client: str | None = None) -> AttributeError:
    """The AttributeError for ``name``, saying what to use instead when it
    is in ``instead``: a name of the Kafka client ``client`` that pylog does
    not offer or, without ``client``, a local log's name that pylog on
    Kafka does not offer."""
    hint = instead.get(name)
    if hint is None:
        return AttributeError(f"{type(obj).__name__!r} object has no attribute {name!r}",
                              name=name, obj=obj)
    if client is None:
        return AttributeError(f"{type(obj).__name__} (pylog on Kafka) has no {name}(); "
                              f"use {hint}", name=name, obj=obj)
    return AttributeError(f"pylog's {type(obj).__name__} has no {name}() "
                          f"({client}.{name}); use {hint}", name=name, obj=obj)


def not_transferable(obj: object) -> TypeError:
    """The TypeError of serializing a Log or a client of one for another
    process (multiprocessing's spawn and forkserver, a ProcessPoolExecutor):
    its files, maps and locks belong to this process."""
    return TypeError(f"a pylog {type(obj).__name__} cannot be sent to another "
                     "process (serialized): pass the log's path and open it in that "
                     "process with pylog.open(path)")
