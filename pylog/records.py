"""Public value types: TopicPartition, Record, RecordMetadata, TopicInfo.

Immutable and thread-safe.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._format import TIMESTAMP_CREATE_TIME


class TopicPartition(NamedTuple):
    """A partition of a topic, as in kafka-python."""
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where a sent record was stored. kafka-python's and aiokafka's other
    names are properties: ``timestamp``, ``timestamp_type``,
    ``topic_partition``. Immutable and thread-safe."""
    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def timestamp(self) -> int:
        """kafka-python's and aiokafka's name of ``timestamp_ms``."""
        return self[3]

    @property
    def timestamp_type(self) -> int:
        """0 (CreateTime), as :attr:`Record.timestamp_type`."""
        return TIMESTAMP_CREATE_TIME

    @property
    def topic_partition(self) -> TopicPartition:
        """aiokafka's ``TopicPartition(topic, partition)`` of the record."""
        return TopicPartition(self[0], self[1])


class Record(NamedTuple):
    """A consumed record. ``key``/``value`` are bytes (or None) unless the
    consumer has deserializers; ``headers`` is a tuple of (str, bytes|None).

    kafka-python's ConsumerRecord names are properties computed on access
    (the decoder builds Records as plain 7-tuples, so they cost nothing
    until read): ``timestamp``, ``timestamp_type``, ``serialized_key_size``,
    ``serialized_value_size``. Immutable and thread-safe."""
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    # Any, not object: bytes, or whatever the deserializers make, which a
    # type checker cannot know; `record.value.decode()` must type-check
    key: Any
    value: Any
    headers: tuple[tuple[str, bytes | None], ...]

    @property
    def timestamp(self) -> int:
        """kafka-python's name of ``timestamp_ms``: ms since the epoch."""
        return self[3]

    @property
    def timestamp_type(self) -> int:
        """0 (CreateTime): pylog writes every batch with create time
        (FORMAT.rst B-1), the producer's or the send time."""
        return TIMESTAMP_CREATE_TIME

    @property
    def serialized_key_size(self) -> int:
        """Bytes of the stored key, -1 for a null key (as kafka-python).
        A deserialized key's stored size is not kept: -1 unless the
        deserializer returned bytes-like data."""
        return _size(self[4])

    @property
    def serialized_value_size(self) -> int:
        """Bytes of the stored value, -1 for a null value (as kafka-python);
        for a deserialized value as ``serialized_key_size`` says."""
        return _size(self[5])


def _size(field: object) -> int:
    if isinstance(field, (bytes, bytearray)):
        return len(field)
    if isinstance(field, memoryview):
        return field.nbytes
    return -1


class PartitionInfo(NamedTuple):
    """One partition of ``TopicInfo.partition_info``: its number, log start
    and end offsets (the next offset to be written), the bytes its
    segments hold and their count."""
    partition: int
    start_offset: int
    end_offset: int
    bytes: int
    segments: int


class TopicInfo(NamedTuple):
    """What describe_topic() returns."""
    name: str
    partitions: int
    config: dict[str, Any]
    partition_info: list[PartitionInfo]


# -- commit values (kafka-python's OffsetAndMetadata) ------------------------------------
class OffsetAndMetadata(NamedTuple):
    """A value of ``Consumer.commit({tp: OffsetAndMetadata(offset, "")})``,
    as kafka-python's: ``offset`` is the next offset to read. pylog stores
    committed offsets only, so ``metadata`` must be empty ("" or None);
    ``leader_epoch`` is accepted and ignored (there are no leaders)."""
    offset: int
    metadata: str | None = ""
    leader_epoch: int = -1
