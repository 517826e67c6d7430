"""Dead-letter routing of records a consumer's deserializer refused.

A consumer opened with ``dead_letter_topic="t.dlq"`` appends each record its
key or value deserializer raises on to that topic, unchanged (key, value,
headers and timestamp as stored) plus headers that say where it came from
and why, and moves on. The topic is created (one partition) when missing.

Headers added (values are UTF-8):

- ``pylog.dlt.topic``, ``pylog.dlt.partition``, ``pylog.dlt.offset``: the
  record's origin;
- ``pylog.dlt.error``: the exception's type and message.

Durability: the consumer flushes the dead-letter producer before it commits
past a routed record, so a commit never outlives the copy (as M-10 holds a
commit behind the records it points past).

Thread safety: as the Consumer that owns it (one thread at a time).
"""

from __future__ import annotations

from typing import Any

from .config import validate_topic_name
from .errors import InvalidArgument

HEADER_PREFIX = "pylog.dlt."
_ERROR_CHARS_MAX = 1000


class DeadLetters:
    """The dead-letter topic of one consumer."""

    def __init__(self, log, topic: str) -> None:
        if not isinstance(topic, str):
            raise InvalidArgument(f"dead_letter_topic={topic!r}; expected a topic name")
        validate_topic_name(topic)
        self.topic = topic
        self._log = log
        # a Producer, made on first use (its module is a layer above)
        self._producer: Any = None
        self.routed = 0              # records routed by this consumer
        self._unflushed = False

    def route(self, raw, exc: BaseException) -> None:
        """Append the raw Record ``raw`` with provenance headers."""
        if self._producer is None:
            self._log.create_topic(self.topic, partitions=1, exist_ok=True)
            self._producer = self._log.producer()
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS_MAX]
        headers = list(raw.headers or ()) + [
            (HEADER_PREFIX + "topic", raw.topic.encode()),
            (HEADER_PREFIX + "partition", str(raw.partition).encode()),
            (HEADER_PREFIX + "offset", str(raw.offset).encode()),
            (HEADER_PREFIX + "error", error.encode("utf-8", "replace")),
        ]
        self._producer.send(self.topic, raw.value, key=raw.key, headers=headers,
                            timestamp_ms=raw.timestamp_ms)
        self.routed += 1
        self._unflushed = True

    def flush(self) -> None:
        """Make every routed record durable (before a commit past it)."""
        if self._unflushed:
            self._producer.flush()
            self._unflushed = False

    def close(self) -> None:
        if self._producer is not None:
            self.flush()
            self._producer.close()
            self._producer = None
