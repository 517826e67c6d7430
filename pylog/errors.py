"""The exception tree of pylog (SPEC §4).

Every error pylog raises on purpose is a subclass of :class:`PylogError`.
Where a built-in exception fits, the class also inherits it, so code that
already catches ``ValueError`` or ``LookupError`` keeps working.

Messages follow one shape: what was being done, to which file or object, why,
and where possible a hint::

    append to order-events-3/00000000000000001234.log: disk full (ENOSPC);
    free space or lower retention_bytes
"""

from __future__ import annotations


class PylogError(Exception):
    """Base class of every error pylog raises on purpose."""


class InvalidTopicName(PylogError, ValueError):
    """A topic name breaks rule M-3 of FORMAT.rst (charset, length, . or ..)."""


class InvalidConfig(PylogError, ValueError):
    """A configuration key is unknown or its value is out of range."""


class InvalidArgument(PylogError, ValueError):
    """An argument has the wrong type or an out-of-range value."""


class TopicNotFound(PylogError, LookupError):
    """The named topic does not exist in this log."""


class TopicExists(PylogError):
    """create_topic() of a topic that already exists (and exist_ok=False)."""


class PartitionNotFound(PylogError, LookupError):
    """The topic exists but has no partition with that number."""


class RecordTooLarge(PylogError, ValueError):
    """A record (or batch) is larger than the topic's max_message_bytes."""


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


class OffsetOutOfRange(PylogError, IndexError):
    """A fetch or seek position is outside [log start offset, end offset]."""


class CommitFailedError(PylogError):
    """An offset commit was refused: the member no longer owns the partition
    (a rebalance moved it, SPEC §5) or the consumer left its group."""


class DeserializationError(PylogError, ValueError):
    """A consumer's key or value deserializer raised on a record.

    ``topic``, ``partition`` and ``offset`` name the record; ``record`` is
    the raw :class:`pylog.Record` (key and value as stored bytes). The
    consumer's position stays on the record: ``seek(tp, offset + 1)`` skips
    it, or open the consumer with ``dead_letter_topic=`` to route such records
    there.
    """

    def __init__(self, message: str, record):
        self.record = record
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        super().__init__(message)


class GroupNotEmpty(PylogError):
    """A group operation that needs an empty group found live members."""


class LogFailedError(PylogError):
    """A partition hit an I/O error (EIO, ENOSPC) and is in the FAILED state.

    Every later call on it raises this error, naming the original cause,
    until the log is reopened (G8: fail-stop).
    """


class FileVanishedError(LogFailedError):
    """A file or directory the open log holds (the log directory, a
    partition directory, a segment, ``meta/data.mdb``) was deleted, moved or
    replaced under it (FORMAT.rst L-6): what is written there can never be
    read again, so the affected partitions (or the metadata) fail-stop."""


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


class ForkedLogError(PylogError):
    """An object created before os.fork() was used in the child process."""


__all__ = [name for name in dir() if name.endswith(("Error", "Name", "Found",
                                                    "Exists", "Large",
                                                    "Closed", "Log", "Range",
                                                    "Config", "Argument",
                                                    "Empty"))]
