"""The producer and consumer of :class:`pylog.kafka.KafkaLog`: pylog's
Producer and Consumer methods over confluent-kafka's clients.

Thread safety: a KafkaProducer is thread-safe; a KafkaConsumer is used by
one thread at a time. Durability: ``send`` returns once the cluster
acknowledged the record (``acks=all``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

from ..errors import (
    FlushTimeoutError,
    InvalidArgument,
    OffsetOutOfRange,
    PylogError,
    RecordTooLarge,
    TopicNotFound,
)
from ..records import Record, RecordMetadata, TopicPartition

ADMIN_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 120.0

PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True, "acks": "all", "linger.ms": 1,
    # keyed records land where Kafka's Java client and pylog put them
    "partitioner": "murmur2_random",
}


def kafka_module() -> ModuleType:
    """confluent_kafka, or an error saying how to install it."""
    try:
        import confluent_kafka
        import confluent_kafka.admin  # noqa: F401
    except ImportError as exc:
        raise PylogError(f"pylog on Kafka needs confluent-kafka ({exc}); install it "
                         "with: pip install 'pylog[kafka]'") from None
    return confluent_kafka


def _check_bytes(what: str, v: object) -> None:
    if v is not None and not isinstance(v, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"send: {what} must be bytes or None, got {type(v).__name__}")


class KafkaProducer:
    """pylog's Producer (``send``, ``send_batch``, ``flush``, ``close``)
    on an idempotent confluent-kafka producer."""

    def __init__(self, ck: ModuleType, bootstrap_servers: str, acks: str = "all") -> None:
        self._ck = ck
        self._bootstrap = bootstrap_servers
        # idempotence needs acks=all; acks=1 (sync="never"/"interval") goes without
        self._p = ck.Producer({"bootstrap.servers": bootstrap_servers, **PRODUCER_CONFIG,
                               "acks": acks, "enable.idempotence": acks == "all"})
        self._topics: set[str] = set()
        self._lock = threading.Lock()

    def _check_topic(self, topic: str) -> None:
        # a missing topic is an error, as on a local log (a broker with
        # auto.create.topics.enable would otherwise make it)
        if topic in self._topics:
            return
        md = self._p.list_topics(timeout=ADMIN_TIMEOUT_S)
        with self._lock:
            self._topics = {t for t, m in md.topics.items() if m.error is None}
        if topic not in self._topics:
            raise TopicNotFound(f"send to {topic!r}: no such topic on the Kafka cluster "
                                f"{self._bootstrap}")

    def _produce(self, topic: str, value: object, key: object, headers: Any,
                 partition: int | None, timestamp_ms: int | None,
                 results: list[Any], i: int) -> None:
        _check_bytes("value", value)
        _check_bytes("key", key)

        def done(err: Any, msg: Any) -> None:
            results[i] = (err, msg)
        while True:
            try:
                self._p.produce(topic, value, key, partition=-1 if partition is None else partition,
                                headers=list(headers) if headers else None,
                                timestamp=timestamp_ms or 0, on_delivery=done)
                return
            except BufferError:
                self._p.poll(0.05)

    def _wait(self, results: list[Any]) -> list[RecordMetadata]:
        deadline = time.monotonic() + SEND_TIMEOUT_S
        while any(r is None for r in results):
            if time.monotonic() > deadline:
                raise FlushTimeoutError(f"send: no acknowledgement in {SEND_TIMEOUT_S} s")
            self._p.poll(0.05)
        out = []
        for err, msg in results:
            if err is not None:
                if err.code() == self._ck.KafkaError.MSG_SIZE_TOO_LARGE:
                    raise RecordTooLarge(f"send to {msg.topic()}: {err.str()}")
                if err.code() in (self._ck.KafkaError._UNKNOWN_PARTITION,
                                  self._ck.KafkaError.UNKNOWN_TOPIC_OR_PART):
                    raise TopicNotFound(f"send to {msg.topic()}: {err.str()}")
                raise PylogError(f"send to {msg.topic()}: {err.str()}")
            out.append(RecordMetadata(msg.topic(), msg.partition(), msg.offset(),
                                      msg.timestamp()[1]))
        return out

    def send(self, topic: str, value: object = None, key: object = None, *,
             headers: Any = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> RecordMetadata:
        """Send one record; return where it went once the cluster
        acknowledged it."""
        self._check_topic(topic)
        results: list[Any] = [None]
        self._produce(topic, value, key, headers, partition, timestamp_ms, results, 0)
        return self._wait(results)[0]

    def send_batch(self, topic: str, items: Iterable[Any], *, partition: int | None = None,
                   timestamp_ms: int | None = None) -> list[RecordMetadata]:
        """Send ``value`` | ``(key, value)`` | ``(key, value, headers)``
        items; return once all were acknowledged (not atomic on Kafka)."""
        self._check_topic(topic)
        items = list(items)
        results: list[Any] = [None] * len(items)
        for i, item in enumerate(items):
            if isinstance(item, tuple):
                key, value, headers = (item + (None,))[:3] if len(item) in (2, 3) else \
                    (None, item, None)
            else:
                key, value, headers = None, item, None
            self._produce(topic, value, key, headers, partition, timestamp_ms, results, i)
        return self._wait(results)

    def flush(self, timeout: float | None = None) -> None:
        """Return when every record sent was acknowledged."""
        left = self._p.flush(-1 if timeout is None else timeout)
        if left:
            raise FlushTimeoutError(f"flush: {left} records not acknowledged in {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        self.flush(timeout)


class KafkaConsumer:
    """pylog's Consumer on a confluent-kafka consumer, with pylog's commit
    rules (pylog.delivery): auto-commit and ``close()`` commit the records
    the application finished (those returned by a poll before the last);
    ``commit()`` without offsets commits everything poll() returned."""

    def __init__(self, ck: ModuleType, config: dict[str, Any], max_poll_records: int,
                 has_group: bool) -> None:
        self._ck = ck
        self._c = ck.Consumer(config)
        self._max = max_poll_records
        self._has_group = has_group
        self._auto_commit = bool(config.get("enable.auto.commit"))
        self._handed: list[Any] = []
        self._unfetched_seeks: dict[tuple[str, int], int] = {}
        self._closed = False

    def _tp(self, tp: Any) -> Any:
        return self._ck.TopicPartition(tp[0], tp[1])

    def subscribe(self, topics: str | Iterable[str] = (), pattern: str | None = None) -> None:
        names = [topics] if isinstance(topics, str) else list(topics)
        if pattern is not None:
            names.append(f"^({pattern})$")
        if not names:
            raise InvalidArgument("subscribe needs topics or a pattern")
        self._c.subscribe(names)

    def assign(self, partitions: Iterable[Any]) -> None:
        self._unfetched_seeks.clear()
        self._c.assign([self._tp(tp) for tp in partitions])

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(t.topic, t.partition) for t in self._c.assignment()}

    def _store_handed(self) -> None:
        for m in self._handed:
            self._c.store_offsets(message=m)
        self._handed = []

    def poll(self, timeout: float | None = None, max_records: int | None = None) -> list[Record]:
        """Records of the assigned partitions, in offset order per partition."""
        if self._has_group:
            self._store_handed()
        msgs = self._c.consume(num_messages=max_records or self._max,
                               timeout=-1 if timeout is None else timeout)
        out = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == self._ck.KafkaError._PARTITION_EOF:
                    continue
                if err.code() in (self._ck.KafkaError.OFFSET_OUT_OF_RANGE,
                                  self._ck.KafkaError._AUTO_OFFSET_RESET):
                    raise OffsetOutOfRange(f"{m.topic()}-{m.partition()}: {err.str()}")
                raise PylogError(f"poll: {err.str()}")
            out.append(Record(m.topic(), m.partition(), m.offset(), m.timestamp()[1],
                              m.key(), m.value(), tuple(m.headers() or ())))
            self._handed.append(m)
        return out

    def __iter__(self) -> Iterator[Record]:
        while not self._closed:
            yield from self.poll(timeout=0.5)

    def commit(self, offsets: dict[Any, int] | None = None) -> None:
        """Commit ``{tp: next offset}``, or what poll() returned."""
        if not self._has_group:
            raise InvalidArgument("commit needs a group_id")
        if offsets is None:
            self._store_handed()
            try:
                self._c.commit(asynchronous=False)
            except self._ck.KafkaException as exc:
                if exc.args[0].code() != self._ck.KafkaError._NO_OFFSET:
                    raise
            return
        self._c.commit(offsets=[self._ck.TopicPartition(tp[0], tp[1], off)
                                for tp, off in offsets.items()], asynchronous=False)

    def committed(self, tp: Any) -> int | None:
        got: int = self._c.committed([self._tp(tp)], timeout=ADMIN_TIMEOUT_S)[0].offset
        return got if got >= 0 else None

    def position(self, tp: Any) -> int:
        pos: int = self._c.position([self._tp(tp)])[0].offset
        if pos >= 0:
            return pos
        committed = self.committed(tp)
        if committed is not None:
            return committed
        low: int = self._c.get_watermark_offsets(self._tp(tp), timeout=ADMIN_TIMEOUT_S)[0]
        return low

    def seek(self, tp: Any, offset: int) -> None:
        self._seek(tp, offset)

    def _seek(self, tp: Any, offset: int) -> None:
        self._handed = [m for m in self._handed
                        if (m.topic(), m.partition()) != (tp[0], tp[1])]
        target = self._ck.TopicPartition(tp[0], tp[1], offset)
        try:
            self._c.seek(target)
            return
        except self._ck.KafkaException as exc:
            if exc.args[0].code() != self._ck.KafkaError._STATE:
                raise
        # librdkafka refuses to seek a partition not fetched yet (just
        # assigned): a manual assignment is given again with the target
        # offset and every other partition at its position
        if self._has_group:
            raise InvalidArgument(f"seek {tp[0]}-{tp[1]}: not fetched yet on Kafka; "
                                  "poll() once after the group assigned it")
        current = self._c.assignment()
        if (tp[0], tp[1]) not in {(t.topic, t.partition) for t in current}:
            raise InvalidArgument(f"seek {tp[0]}-{tp[1]}: not assigned")
        self._unfetched_seeks[(tp[0], tp[1])] = offset
        where = []
        for t in self._c.position(current):
            key = (t.topic, t.partition)
            # a partition not fetched yet keeps the seek it was given
            off = t.offset if t.offset >= 0 and key != (tp[0], tp[1]) else \
                self._unfetched_seeks.get(key, t.offset)
            where.append(self._ck.TopicPartition(t.topic, t.partition, off))
        self._c.assign(where)

    def seek_to_beginning(self, *partitions: Any) -> None:
        for tp in partitions or self.assignment():
            self._seek(tp, self._ck.OFFSET_BEGINNING)

    def seek_to_end(self, *partitions: Any) -> None:
        for tp in partitions or self.assignment():
            self._seek(tp, self._ck.OFFSET_END)

    def lag(self) -> dict[TopicPartition, int]:
        out = {}
        for tp in self.assignment():
            _, high = self._c.get_watermark_offsets(self._tp(tp), timeout=ADMIN_TIMEOUT_S)
            out[tp] = max(0, high - self.position(tp))
        return out

    def close(self, autocommit: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if autocommit and self._auto_commit:
            # the finished records only (stored by the polls after them), as
            # a local consumer's close(): the last poll's may not be done
            try:
                self._c.commit(asynchronous=False)
            except self._ck.KafkaException:
                pass
        self._c.close()
