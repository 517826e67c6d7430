"""pylog: an embedded, durable, partitioned event log — Kafka's model as a library.

    import pylog
    with pylog.open("data/events") as log:
        log.create_topic("order-events", partitions=4, exist_ok=True)
        log.producer().send("order-events", b"...", key=b"user-42")

See README.rst for the guide and FORMAT.rst for the on-disk format.
"""

from .errors import (CommitFailedError, CorruptLogError, DeserializationError,
                     DiskFullError, FileVanishedError, FlushTimeoutError, ForkedLogError,
                     MetadataBusyError,
                     GroupNotEmpty, InvalidArgument, InvalidConfig,
                     InvalidTimestamp, InvalidTopicName, LogClosed, LogFailedError,
                     LogNotFound, LogOSError, LogPermissionError, NotALogDirectoryError,
                     ReadOnlyFilesystemError,
                     OffsetOutOfRange, PartitionNotFound, PylogError,
                     ReadOnlyLog, RecordTooLarge, TopicExists, TopicNotFound)
from .log import Log, open
from .rebalance import ConsumerRebalanceListener
from .records import (OffsetAndMetadata, PartitionInfo, Record, RecordMetadata, TopicInfo,
                      TopicPartition)

__version__ = "0.1.0"

__all__ = [
    "open", "Log", "TopicPartition", "Record", "RecordMetadata", "TopicInfo",
    "PartitionInfo", "PylogError", "InvalidTopicName", "InvalidConfig",
    "InvalidArgument", "TopicNotFound", "TopicExists", "PartitionNotFound",
    "RecordTooLarge", "LogClosed", "ReadOnlyLog", "CorruptLogError",
    "OffsetOutOfRange", "CommitFailedError", "LogFailedError", "ForkedLogError",
    "GroupNotEmpty", "DeserializationError", "LogOSError", "LogPermissionError",
    "ReadOnlyFilesystemError", "NotALogDirectoryError", "LogNotFound",
    "DiskFullError", "InvalidTimestamp",
    "FileVanishedError", "MetadataBusyError",
    "OffsetAndMetadata", "ConsumerRebalanceListener", "FlushTimeoutError",
]
