"""Public value types: TopicPartition, Record, RecordMetadata, TopicInfo.

Immutable and thread-safe.
"""

from __future__ import annotations

from typing import NamedTuple


class TopicPartition(NamedTuple):
    """A partition of a topic, as in kafka-python."""
    topic: str
    partition: int


class RecordMetadata(NamedTuple):
    """Where a sent record was stored."""
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class Record(NamedTuple):
    """A consumed record. ``key``/``value`` are bytes (or None) unless the
    consumer has deserializers; ``headers`` is a tuple of (str, bytes|None)."""
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: object
    value: object
    headers: tuple


class PartitionInfo(NamedTuple):
    partition: int
    start_offset: int
    end_offset: int
    bytes: int
    segments: int


class TopicInfo(NamedTuple):
    """What describe_topic() returns."""
    name: str
    partitions: int
    config: dict
    partition_info: list


# -- commit values (kafka-python's OffsetAndMetadata) ------------------------------------
class OffsetAndMetadata(NamedTuple):
    """A value of ``Consumer.commit({tp: OffsetAndMetadata(offset, "")})``,
    as kafka-python's: ``offset`` is the next offset to read. pylog stores
    committed offsets only, so ``metadata`` must be empty ("" or None);
    ``leader_epoch`` is accepted and ignored (there are no leaders)."""
    offset: int
    metadata: str | None = ""
    leader_epoch: int = -1
