"""pylog: an embedded, durable, partitioned event log — Kafka's model as a library.

    import pylog
    with pylog.open("data/events") as log:
        log.create_topic("order-events", partitions=4, exist_ok=True)
        log.producer().send("order-events", b"...", key=b"user-42")

The public API is what ``__all__`` names: :func:`open` (which returns a
:class:`Log`; producers and consumers come from ``Log.producer()`` and
``Log.consumer()``), the value types and the error tree, every error a
:class:`PylogError`. Names and defaults follow kafka-python. A Log and a
Producer are thread-safe; a Consumer is used by one thread at a time
(``close()`` and ``wakeup()`` from any). A ``send`` is durable when it
returns as the log's ``sync`` mode says (default ``"always"``: fsynced).
The package is typed (PEP 561).

See README.rst for the guide, FORMAT.rst for the on-disk format, and
docs/ for the reference manual (``sphinx-build -b html docs docs/_build/html``).
"""

from .errors import (
    AcknowledgementError,
    CommitFailedError,
    CorruptGroupError,
    CorruptLogError,
    DeserializationError,
    DiskFullError,
    FileVanishedError,
    FlushTimeoutError,
    ForkedLogError,
    GroupNotEmpty,
    GroupNotFound,
    InvalidArgument,
    InvalidConfig,
    InvalidTimestamp,
    InvalidTopicName,
    LogClosed,
    LogFailedError,
    LogNotFound,
    LogOSError,
    LogPermissionError,
    MetadataBusyError,
    MissingDependencyError,
    NotALogDirectoryError,
    OffsetOutOfRange,
    PartitionNotFound,
    ProducerFencedError,
    PylogError,
    ReadOnlyFilesystemError,
    ReadOnlyLog,
    RecordTooLarge,
    SendTimeoutError,
    ShareGroupConfigError,
    TooManyMapsError,
    TooManyOpenFilesError,
    TopicExists,
    TopicNotFound,
    TransactionError,
)
from .futures import FutureRecordMetadata
from .log import Log, open
from .rebalance import ConsumerRebalanceListener
from .records import (
    OffsetAndMetadata,
    PartitionInfo,
    Record,
    RecordMetadata,
    TopicInfo,
    TopicPartition,
)
from .shareconsumer import ShareConsumer, ShareRecord

__version__ = "0.1.0"

__all__ = [
    "open", "Log", "TopicPartition", "Record", "RecordMetadata", "TopicInfo",
    "PartitionInfo", "PylogError", "MissingDependencyError", "InvalidTopicName", "InvalidConfig",
    "InvalidArgument", "TopicNotFound", "TopicExists", "PartitionNotFound",
    "RecordTooLarge", "LogClosed", "ReadOnlyLog", "CorruptLogError",
    "OffsetOutOfRange", "CommitFailedError", "LogFailedError", "ForkedLogError",
    "GroupNotEmpty", "DeserializationError", "LogOSError", "LogPermissionError",
    "ReadOnlyFilesystemError", "NotALogDirectoryError", "LogNotFound",
    "DiskFullError", "InvalidTimestamp",
    "FileVanishedError", "MetadataBusyError", "ProducerFencedError", "TransactionError",
    "OffsetAndMetadata", "ConsumerRebalanceListener", "FlushTimeoutError",
    "GroupNotFound", "CorruptGroupError", "TooManyOpenFilesError",
    "TooManyMapsError",
    "SendTimeoutError", "FutureRecordMetadata",
    "ShareConsumer", "ShareRecord", "AcknowledgementError", "ShareGroupConfigError",
]
