"""Names, limits and configuration of topics and logs.

Everything a caller can configure is validated here, at the public entry
point, before anything touches the disk (G5). Limits carry their unit last
(`max_message_bytes`, `segment_bytes`); rule IDs refer to FORMAT.rst.

Pure data and pure functions: thread-safe.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import InvalidArgument, InvalidConfig, InvalidTimestamp, InvalidTopicName

# M-3: topic names as Kafka allows them, and never a path component that
# could leave the log directory.
#: Longest topic name, in characters (Kafka's limit); names use
#: ``[A-Za-z0-9._-]`` and are never ``.`` or ``..`` (FORMAT.rst M-3).
TOPIC_NAME_LENGTH_MAX = 249
_TOPIC_NAME_RE = re.compile(r"[A-Za-z0-9._-]+\Z")

#: Most partitions a topic may have.
PARTITIONS_MAX = 10_000
#: Longest consumer group id, in characters (it is part of LMDB keys).
GROUP_ID_LENGTH_MAX = 255
#: Smallest ``segment_bytes`` a topic accepts (64 KiB).
SEGMENT_BYTES_MIN = 64 * 1024
# Positions in the .index are int32 (I-1): a segment can never exceed 2 GiB.
#: Largest ``segment_bytes`` (2 GiB - 1: index positions are int32, I-1).
SEGMENT_BYTES_MAX = 2**31 - 1
#: Largest ``max_message_bytes`` a topic accepts (256 MiB).
MAX_MESSAGE_BYTES_MAX = 256 * 1024 * 1024
#: ``max_message_bytes`` of a topic that does not set it (Kafka's default,
#: 1 MiB + 12), lowered to ``segment_bytes`` when that is smaller.
MAX_MESSAGE_BYTES_DEFAULT = 1024 * 1024 + 12   # Kafka's default
#: The ``sync=`` modes of :func:`pylog.open` (README: Guarantees).
SYNC_MODES = ("always", "interval", "never")
#: The ``compression=`` values of a topic: none, or zstd (codec 4).
COMPRESSIONS = (None, "zstd")


def validate_topic_name(name: object) -> str:
    """Return ``name`` if it is a valid topic name (M-3), else raise InvalidTopicName."""
    if not isinstance(name, str):
        raise InvalidTopicName(
            f"topic name must be str, got {type(name).__name__}")
    if not name:
        raise InvalidTopicName("topic name is empty")
    if len(name) > TOPIC_NAME_LENGTH_MAX:
        raise InvalidTopicName(
            f"topic name is {len(name)} characters; the limit is "
            f"{TOPIC_NAME_LENGTH_MAX}")
    if name in (".", ".."):
        raise InvalidTopicName(f"topic name {name!r} is reserved")
    if not _TOPIC_NAME_RE.match(name):
        raise InvalidTopicName(
            f"topic name {name!r} has characters outside [A-Za-z0-9._-]")
    return name


def validate_group_id(group: object, name: str = "group") -> str:
    """Return ``group`` if it is a valid consumer group id (as Consumer's
    ``group_id``: a non-empty str of at most 255 characters without NUL,
    since it is part of LMDB keys, M-6/M-7), else raise InvalidArgument.
    ``name`` is the argument's name in the message."""
    if not isinstance(group, str) or not group or "\0" in group \
            or len(group) > GROUP_ID_LENGTH_MAX:
        raise InvalidArgument(
            f"{name}={group!r:.80}: expected a non-empty str of at most "
            f"{GROUP_ID_LENGTH_MAX} characters without NUL")
    return group


@dataclass(frozen=True)
class TopicConfig:
    """A topic's configuration; keys and units are Kafka's. The keyword
    arguments of ``create_topic`` and ``alter_topic`` are these fields.

    ``retention_ms`` (default 604,800,000: 7 days) / ``retention_bytes``
    (default -1, per partition): -1 keeps everything; retention deletes
    whole sealed segments (whichever limit is hit first); 0 is refused.
    ``segment_bytes`` (default 128 MiB; 64 KiB .. 2 GiB - 1): size at which
    the active segment rolls.
    ``max_message_bytes`` (default 1 MiB + 12, at most ``segment_bytes``):
    the largest encoded batch a producer may append.
    ``compression`` (default None): None or "zstd" (codec 4).
    ``message_timestamp_after_max_ms`` (default 3,600,000) /
    ``message_timestamp_before_max_ms`` (default -1): how far ahead of /
    behind this machine's clock a producer-supplied timestamp may be
    (Kafka's message.timestamp.after/before.max.ms); -1 is unbounded. One
    far-future timestamp would otherwise keep its segment, and every later
    one, from time retention for good.

    Every value is checked when the object is built (InvalidConfig names
    the key and its range), before anything touches the disk. Immutable,
    so thread-safe; it is stored in the log's metadata by ``create_topic``
    and ``alter_topic``, durable when they return.
    """

    retention_ms: int = 7 * 86_400_000
    retention_bytes: int = -1
    segment_bytes: int = 128 * 1024 * 1024
    max_message_bytes: int | None = None   # default: min(1 MiB + 12, segment_bytes)
    compression: str | None = None
    message_timestamp_after_max_ms: int = 3_600_000    # Kafka >= 3.6
    message_timestamp_before_max_ms: int = -1

    def __post_init__(self) -> None:
        if self.max_message_bytes is None and isinstance(self.segment_bytes, int):
            object.__setattr__(self, "max_message_bytes",
                               min(MAX_MESSAGE_BYTES_DEFAULT, self.segment_bytes))
        def _int(name: str, lo: int, hi: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidConfig(
                    f"{name} must be int, got {type(value).__name__}")
            if not lo <= value <= hi:
                raise InvalidConfig(
                    f"{name}={value} is out of range [{lo}, {hi}]")

        _int("retention_ms", -1, 2**62)
        if self.retention_ms == 0:
            raise InvalidConfig("retention_ms=0 would delete every record; "
                                "use -1 to keep everything")
        _int("retention_bytes", -1, 2**62)
        _int("segment_bytes", SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX)
        _int("max_message_bytes", 64, MAX_MESSAGE_BYTES_MAX)
        assert self.max_message_bytes is not None   # _int checked it is an int
        if self.max_message_bytes > self.segment_bytes:
            raise InvalidConfig(
                f"max_message_bytes={self.max_message_bytes} exceeds "
                f"segment_bytes={self.segment_bytes}; a batch must fit in a "
                "segment")
        _int("message_timestamp_after_max_ms", -1, 2**62)
        _int("message_timestamp_before_max_ms", -1, 2**62)
        if self.compression not in COMPRESSIONS:
            raise InvalidConfig(
                f"compression={self.compression!r}; expected None or 'zstd'")

    def timestamp_ok(self, timestamp_ms: int, now_ms: int) -> bool:
        """Whether a producer-supplied ``timestamp_ms`` is in [0, 2**62) and
        inside the window check_timestamp enforces (the producer's fast
        path; check_timestamp says why not)."""
        if not 0 <= timestamp_ms < 2**62:
            return False
        after = self.message_timestamp_after_max_ms
        before = self.message_timestamp_before_max_ms
        return (after < 0 or timestamp_ms <= now_ms + after) and \
            (before < 0 or timestamp_ms >= now_ms - before)

    def check_timestamp(self, topic: str, timestamp_ms: int, now_ms: int) -> None:
        """Raise InvalidTimestamp when a producer-supplied ``timestamp_ms``
        is outside [now - before_max, now + after_max] (G5: before anything
        is written)."""
        after = self.message_timestamp_after_max_ms
        if after >= 0 and timestamp_ms > now_ms + after:
            raise InvalidTimestamp(
                f"send to {topic}: timestamp_ms={timestamp_ms} is "
                f"{timestamp_ms - now_ms} ms ahead of the clock ({now_ms}); "
                f"the topic accepts at most {now_ms + after} "
                f"(message_timestamp_after_max_ms={after}); nothing was written",
                timestamp_ms, now_ms + after, "message_timestamp_after_max_ms")
        before = self.message_timestamp_before_max_ms
        if before >= 0 and timestamp_ms < now_ms - before:
            raise InvalidTimestamp(
                f"send to {topic}: timestamp_ms={timestamp_ms} is "
                f"{now_ms - timestamp_ms} ms behind the clock ({now_ms}); "
                f"the topic accepts at least {now_ms - before} "
                f"(message_timestamp_before_max_ms={before}); nothing was written",
                timestamp_ms, now_ms - before, "message_timestamp_before_max_ms")

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The configuration keys, in field order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TopicConfig":
        """A config from ``{key: value}``; missing keys take their default,
        unknown keys raise InvalidConfig naming the valid ones."""
        unknown = set(values) - set(cls.keys())
        if unknown:
            raise InvalidConfig(
                f"unknown topic config {sorted(unknown)}; valid keys are "
                f"{list(cls.keys())}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every key with its value (``max_message_bytes`` resolved)."""
        return asdict(self)

    def replace(self, **changes: Any) -> "TopicConfig":
        """A copy with ``changes`` applied, checked as a new config is."""
        merged = self.to_dict()
        merged.update(changes)
        return TopicConfig.from_dict(merged)
