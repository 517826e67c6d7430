"""The producer and consumer of :class:`pylog.kafka.KafkaLog`: pylog's
Producer and Consumer methods over confluent-kafka's clients.

Arguments go through the same checks as a local log's (pylog.consumerargs,
the producer's partition check), so a call gives the same result, or the
same pylog exception, on both backends; confluent-kafka's KafkaException
becomes the pylog error of the same meaning (:func:`kafka_error`), and a
client used after ``close()`` raises LogClosed. Methods only a local log
offers raise AttributeError naming what to use instead.

Thread safety: a KafkaProducer is thread-safe; a KafkaConsumer is used by
one thread at a time. Durability: ``send`` returns once the cluster
acknowledged the record (``acks=all``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Any

from ..config import validate_topic_name
from ..consumerargs import (
    MAX_POLL_RECORDS_MAX,
    as_tp,
    as_tps,
    commit_offsets,
    poll_timeout,
    topic_list,
)
from ..errors import (
    CommitFailedError,
    FlushTimeoutError,
    InvalidArgument,
    LogClosed,
    OffsetOutOfRange,
    PartitionNotFound,
    PylogError,
    RecordTooLarge,
    SendTimeoutError,
    TopicNotFound,
    kafka_name_error,
)
from ..positions import committed_partitions
from ..producer import Producer
from ..records import Record, RecordMetadata, TopicPartition

_logger = logging.getLogger("pylog")

ADMIN_TIMEOUT_S = 10.0
#: The longest a consumer's commit waits for a cluster that does not answer
#: (librdkafka's synchronous commit has no timeout: KafkaConsumer._commit_sync).
COMMIT_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 120.0

PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True, "acks": "all", "linger.ms": 1,
    # keyed records land where Kafka's Java client and pylog put them
    "partitioner": "murmur2_random",
}

# Methods of a local log's clients (or of Kafka clients) that the Kafka
# backend does not offer, and what to use instead (raised as AttributeError
# by __getattr__; docs/kafka.rst lists them).
CONSUMER_INSTEAD: dict[str, str] = {
    "highwater": "lag() for the records left after the position, or "
                 "KafkaLog.describe_topic(topic).partition_info (end_offset)",
    "get_watermark_offsets": "KafkaLog.describe_topic(topic).partition_info "
                             "(start_offset, end_offset)",
    "beginning_offsets": "KafkaLog.describe_topic(topic).partition_info (start_offset)",
    "end_offsets": "KafkaLog.describe_topic(topic).partition_info (end_offset)",
    "pause": "nothing on Kafka through pylog: assign() only the partitions to "
             "read, or use confluent-kafka's Consumer directly",
    "resume": "assign() with the partitions to read again",
    "poll_values": "poll(), and each Record's value",
    "run": "a loop: for record in consumer: handle it, then consumer.commit()",
    "consume": "poll(timeout=..., max_records=...), which returns a list of Records",
    "store_offsets": "commit({TopicPartition: offset})",
}
PRODUCER_INSTEAD: dict[str, str] = {
    "partitions_for": "KafkaLog.describe_topic(topic).partitions",
    "produce": "send(topic, value, key=..., headers=...), which returns the "
               "RecordMetadata once the cluster acknowledged it",
    "poll": "nothing: send() returns once the cluster acknowledged the record",
}
LOG_INSTEAD: dict[str, str] = {
    "groups": "describe_group(group_id) for a group you name, or the cluster's "
              "tools (kafka-consumer-groups.sh --list)",
    "list_consumer_groups": "describe_group(group_id) for a group you name, or the "
                            "cluster's tools (kafka-consumer-groups.sh --list)",
    "partitions_for": "describe_topic(topic).partitions",
    "list_topics": "topics()",
    "reset_group": "the cluster's tools (kafka-consumer-groups.sh --reset-offsets)",
    "delete_group": "the cluster's tools (kafka-consumer-groups.sh --delete)",
    "create_partitions": "the cluster's tools (kafka-topics.sh --alter --partitions)",
    "alter_topic": "the cluster's tools (kafka-configs.sh --alter)",
}


def no_attribute(obj: object, name: str, instead: dict[str, str]) -> AttributeError:
    """The AttributeError for ``name`` on a Kafka-backed object, saying what
    to use instead when the name is one of a local log's or a Kafka client's
    (errors.kafka_name_error without a client: the Kafka backend's wording)."""
    return kafka_name_error(obj, name, instead)


def kafka_module() -> ModuleType:
    """confluent_kafka, or an error saying how to install it."""
    try:
        import confluent_kafka
        import confluent_kafka.admin  # noqa: F401
    except ImportError as exc:
        raise PylogError(f"pylog on Kafka needs confluent-kafka ({exc}); install it "
                         "with: pip install 'pylog[kafka]'") from None
    return confluent_kafka


def kafka_error(ck: ModuleType, err: Any, what: str) -> PylogError:
    """The pylog error for librdkafka's ``err`` (a KafkaError, or a
    KafkaException carrying one) raised by ``what``."""
    if isinstance(err, ck.KafkaException):
        err = err.args[0] if err.args else err
    if not isinstance(err, ck.KafkaError):
        return PylogError(f"{what}: {err}")
    code, text = err.code(), f"{what}: {err.str()}"
    e = ck.KafkaError
    if err.fatal() or code == e._FATAL:
        # librdkafka refuses every later call of this client
        return PylogError(f"{text} (a fatal error: this client does nothing more; "
                          "close it and make a new one with log.producer() or "
                          "log.consumer())")
    if code in (e.UNKNOWN_TOPIC_OR_PART, e._UNKNOWN_TOPIC):
        return TopicNotFound(text)
    if code == e._UNKNOWN_PARTITION:
        return PartitionNotFound(text)
    if code == e._MSG_TIMED_OUT:
        return SendTimeoutError(f"{text}: the cluster did not acknowledge it in "
                                f"{SEND_TIMEOUT_S} s; it may or may not be stored (one "
                                "sent but not acknowledged is), so a retry may store "
                                "it twice")
    if code == e.MSG_SIZE_TOO_LARGE:
        return RecordTooLarge(text)
    if code in (e.OFFSET_OUT_OF_RANGE, e._AUTO_OFFSET_RESET):
        return OffsetOutOfRange(text)
    if code in (e.ILLEGAL_GENERATION, e.UNKNOWN_MEMBER_ID, e.REBALANCE_IN_PROGRESS,
                e.FENCED_INSTANCE_ID, e._ASSIGNMENT_LOST):
        # the coordinator refused: a rebalance moved the partition, or the
        # committer is not a member of a group that has members
        return CommitFailedError(f"{text} (the group rebalanced, or this consumer is "
                                 "not one of its members); poll again, and commit "
                                 "what it returns")
    return PylogError(text)


@contextlib.contextmanager
def kafka_errors(ck: ModuleType, what: str, bootstrap: str) -> Iterator[None]:
    """Raise the pylog error for a KafkaException of the block
    (:func:`kafka_error`), and a PylogError for an admin result not
    answered in time (concurrent.futures' TimeoutError): a cluster that is
    down or unreachable gives a pylog error, never a confluent-kafka one."""
    try:
        yield
    except ck.KafkaException as exc:
        raise kafka_error(ck, exc, f"{what} (Kafka cluster {bootstrap})") from None
    except concurrent.futures.TimeoutError:
        raise PylogError(f"{what}: the Kafka cluster {bootstrap} did not answer "
                         f"in {ADMIN_TIMEOUT_S} s") from None


def _timestamp(ts: object) -> int:
    """A local producer's timestamp check (an int in [0, 2**62)), and 0
    refused: librdkafka takes a timestamp of 0 as "now", so the record
    would be stored with another timestamp than the one given."""
    if ts is None:
        return 0
    out = Producer._timestamp(ts)  # type: ignore[arg-type]
    if out == 0:
        raise InvalidArgument("timestamp_ms=0 cannot be sent to Kafka (librdkafka "
                              "sends 0 as the current time); give 1 or later")
    return out


def _bytes(what: str, v: object) -> bytes | None:
    """``v`` as bytes (bytearray and memoryview converted) or None; a
    local producer's message without its serializer hint (the Kafka
    backend takes no serializers)."""
    if v is None or type(v) is bytes:
        return v
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise InvalidArgument(f"send: {what} must be bytes or None, got {type(v).__name__}")


def _item(item: object) -> tuple[object, object, object]:
    """(key, value, headers) of a send_batch item, as a local producer
    reads them."""
    if type(item) is not tuple:
        return None, item, None
    if len(item) == 2:
        return item[0], item[1], None
    if len(item) == 3:
        return item
    raise InvalidArgument(f"a batch item must be value, (key, value) or (key, value, "
                          f"headers); got a {len(item)}-tuple")


class KafkaProducer:
    """pylog's Producer (``send``, ``send_batch``, ``flush``, ``close``)
    on an idempotent confluent-kafka producer."""

    def __init__(self, ck: ModuleType, bootstrap_servers: str, acks: str = "all") -> None:
        self._ck = ck
        self._bootstrap = bootstrap_servers
        # idempotence needs acks=all; acks=1 (sync="never"/"interval") goes without
        self._p = ck.Producer({"bootstrap.servers": bootstrap_servers, **PRODUCER_CONFIG,
                               # librdkafka gives a record up when send() does
                               # (its default, 300 s, would store it after the
                               # error: twice, when the caller sent it again)
                               "message.timeout.ms": int(SEND_TIMEOUT_S * 1000),
                               "acks": acks, "enable.idempotence": acks == "all"})
        self._partitions: dict[str, int] = {}    # topic -> partition count
        self._lock = threading.Lock()
        self._closed = False

    def _refresh(self) -> None:
        with kafka_errors(self._ck, "send: topic metadata", self._bootstrap):
            md = self._p.list_topics(timeout=ADMIN_TIMEOUT_S)
        with self._lock:
            self._partitions = {t: len(m.partitions) for t, m in md.topics.items()
                                if m.error is None and m.partitions}

    def _check(self, topic: str, partition: int | None) -> None:
        """LogClosed, TopicNotFound and PartitionNotFound as a local
        producer raises them, before anything is sent."""
        if self._closed:
            raise LogClosed("producer is closed")
        if type(topic) is not str:
            raise InvalidArgument(f"topic must be str, got {type(topic).__name__}")
        validate_topic_name(topic)
        n = self._partitions.get(topic)
        # a missing topic is an error, as on a local log (a broker with
        # auto.create.topics.enable would otherwise make it); the counts
        # are looked up again before refusing (partitions may have been added)
        if n is None or (isinstance(partition, int) and partition >= n):
            self._refresh()
            n = self._partitions.get(topic)
        if n is None:
            raise TopicNotFound(f"send to {topic!r}: no such topic on the Kafka cluster "
                                f"{self._bootstrap}")
        if partition is not None and (isinstance(partition, bool) or
                                      not isinstance(partition, int) or
                                      not 0 <= partition < n):
            raise PartitionNotFound(f"topic {topic!r} has {n} partitions; there is no "
                                    f"partition {partition!r}")

    @staticmethod
    def _record(key: object, value: object, headers: Any) -> tuple[Any, Any, Any]:
        """(key, value, headers) checked and converted as a local producer
        does (InvalidArgument), before anything is sent."""
        return (_bytes("key", key), _bytes("value", value),
                list(Producer._headers(headers)) or None)

    def _produce(self, topic: str, record: tuple[Any, Any, Any], partition: int | None,
                 timestamp: int, results: list[Any], i: int) -> None:
        key, value, headers = record

        def done(err: Any, msg: Any) -> None:
            results[i] = (err, msg)
        while True:
            try:
                self._p.produce(topic, value, key, partition=-1 if partition is None else partition,
                                headers=headers, timestamp=timestamp, on_delivery=done)
                return
            except BufferError:
                self._serve(0.05)
            except self._ck.KafkaException as exc:
                raise kafka_error(self._ck, exc, f"send to {topic}") from None

    def _serve(self, timeout: float) -> None:
        """Serve delivery reports; librdkafka's poll raises a fatal error
        (an idempotent producer whose sequence the cluster lost) as a
        KafkaException: the pylog error."""
        try:
            self._p.poll(timeout)
        except self._ck.KafkaException as exc:
            raise kafka_error(self._ck, exc, "send") from None

    def _wait(self, results: list[Any]) -> list[RecordMetadata]:
        # librdkafka's report of the expiry (message.timeout.ms) comes first
        deadline = time.monotonic() + SEND_TIMEOUT_S + 10
        while any(r is None for r in results):
            if time.monotonic() > deadline:
                raise SendTimeoutError(f"send: no acknowledgement in {SEND_TIMEOUT_S} s; "
                                       "the record may or may not be stored")
            self._serve(0.05)
        out = []
        for err, msg in results:
            if err is not None:
                raise kafka_error(self._ck, err, f"send to {msg.topic()}")
            out.append(RecordMetadata(msg.topic(), msg.partition(), msg.offset(),
                                      msg.timestamp()[1]))
        return out

    def send(self, topic: str, value: object = None, key: object = None, *,
             headers: Any = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> RecordMetadata:
        """Send one record; return where it went once the cluster
        acknowledged it."""
        self._check(topic, partition)
        ts = _timestamp(timestamp_ms)
        record = self._record(key, value, headers)
        results: list[Any] = [None]
        self._produce(topic, record, partition, ts, results, 0)
        return self._wait(results)[0]

    def send_batch(self, topic: str, items: Iterable[Any], *, partition: int | None = None,
                   timestamp_ms: int | None = None) -> list[RecordMetadata]:
        """Send ``value`` | ``(key, value)`` | ``(key, value, headers)``
        items; return once all were acknowledged (not atomic on Kafka). All
        items are checked before any is sent: one bad item sends none. An
        item librdkafka refuses when it is handed over (over its
        message.max.bytes: RecordTooLarge) comes after those before it were
        sent: the error's ``published`` holds their RecordMetadata once the
        cluster acknowledged them (as a local send_batch's over several
        partitions), so that a retry sends only the others."""
        self._check(topic, partition)
        ts = _timestamp(timestamp_ms)
        if isinstance(items, (bytes, str)) or not hasattr(items, "__iter__"):
            raise InvalidArgument(f"items must be a list of records, got "
                                  f"{type(items).__name__}")
        records = [self._record(*_item(item)) for item in items]
        results: list[Any] = [None] * len(records)
        for i, record in enumerate(records):
            try:
                self._produce(topic, record, partition, ts, results, i)
            except PylogError as exc:
                if i:
                    # the records before it are queued, and will be stored
                    del results[i:]
                    exc.published = self._wait(results)
                raise
        return self._wait(results)

    def flush(self, timeout: float | None = None) -> None:
        """Return when every record sent was acknowledged."""
        if timeout is not None and (isinstance(timeout, bool) or
                                    not isinstance(timeout, (int, float)) or timeout < 0):
            # (librdkafka takes a negative timeout as "wait forever")
            raise InvalidArgument(f"timeout={timeout!r}; expected seconds >= 0, or None")
        try:
            left = self._p.flush(-1 if timeout is None else timeout)
        except self._ck.KafkaException as exc:
            raise kafka_error(self._ck, exc, "flush") from None
        if left:
            raise FlushTimeoutError(f"flush: {left} records not acknowledged in {timeout} s")

    def __getattr__(self, name: str) -> Any:
        raise no_attribute(self, name, PRODUCER_INSTEAD)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close; idempotent (a send after it raises LogClosed)."""
        if self._closed:
            return
        self._closed = True
        self.flush(timeout)


class KafkaConsumer:
    """pylog's Consumer on a confluent-kafka consumer, with pylog's commit
    rules (pylog.delivery): auto-commit and ``close()`` commit the records
    the application finished (those returned by a poll before the last);
    ``commit()`` without offsets commits everything poll() returned."""

    def __init__(self, ck: ModuleType, config: dict[str, Any], max_poll_records: int,
                 has_group: bool, consumer_timeout_ms: float | None = None) -> None:
        self._ck = ck
        self._c = ck.Consumer(config)
        self._max = max_poll_records
        self._has_group = has_group
        self._auto_commit = bool(config.get("enable.auto.commit"))
        self._reset_none = config.get("auto.offset.reset") == "error"
        self._handed: list[Any] = []
        self._unfetched_seeks: dict[tuple[str, int], int] = {}
        self._subscribed = False
        self._subscription: set[str] = set()
        # librdkafka holds a subscription (names or a pattern): unsubscribe()
        # must drop it, or the consumer stays a member and gets partitions
        self._rd_subscribed = False
        self._idle_s = None if consumer_timeout_ms is None else consumer_timeout_ms / 1000.0
        self._warned_missing: set[str] = set()
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise LogClosed("consumer is closed")

    def _tp(self, tp: TopicPartition, offset: int | None = None) -> Any:
        if offset is None:
            return self._ck.TopicPartition(tp.topic, tp.partition)
        return self._ck.TopicPartition(tp.topic, tp.partition, offset)

    def _error(self, exc: Exception, what: str) -> PylogError:
        return kafka_error(self._ck, exc, what)

    def subscribe(self, topics: str | Iterable[str] = (), pattern: str | None = None) -> None:
        self._check()
        # a local consumer's checks: librdkafka would take a bad name as
        # given and raise its own KafkaException for a bad pattern
        given = topic_list(topics)
        for t in given:
            validate_topic_name(t)
        names = list(given)
        if pattern is not None:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise InvalidArgument(f"pattern {pattern!r} is not a regex: {exc}") from None
            names.append(f"^({pattern})$")
        if not names:
            raise InvalidArgument("subscribe needs topics or a pattern")
        try:
            self._c.subscribe(names)
        except self._ck.KafkaException as exc:
            raise self._error(exc, "subscribe") from None
        self._subscribed = self._rd_subscribed = True
        self._subscription = set(given)

    def subscription(self) -> set[str]:
        """The subscribed topic names (not those a pattern matches)."""
        return set(self._subscription)

    def unsubscribe(self) -> None:
        """Drop the subscription (or assignment); a group member leaves its
        group, committing first with auto-commit the records finished (as
        librdkafka commits the stored offsets at a revoke)."""
        self._check()
        try:
            if self._rd_subscribed:
                self._c.unsubscribe()
                self._serve_revoke()
            else:
                self._c.unassign()
        except self._ck.KafkaException as exc:
            raise self._error(exc, "unsubscribe") from None
        self._subscribed = self._rd_subscribed = False
        self._subscription = set()
        self._handed = []
        self._unfetched_seeks.clear()

    def _serve_revoke(self) -> None:
        """Serve the revoke librdkafka queues at an unsubscribe (it leaves
        the group only once a poll served it, and poll() now refuses), up
        to ADMIN_TIMEOUT_S; records it returns meanwhile are dropped (their
        offsets were never stored)."""
        deadline = time.monotonic() + ADMIN_TIMEOUT_S
        while self._c.assignment() and time.monotonic() < deadline:
            self._c.poll(0.05)
        self._c.poll(0)

    def assign(self, partitions: Iterable[Any]) -> None:
        """Consume exactly these partitions; raises TopicNotFound /
        PartitionNotFound for one that does not exist, as a local consumer."""
        self._check()
        tps = as_tps((list(partitions),))
        self._known(tps, "assign")
        self._unfetched_seeks.clear()
        self._c.assign([self._tp(tp) for tp in tps])
        self._subscribed = True

    def _known(self, tps: list[TopicPartition], what: str) -> None:
        """TopicNotFound / PartitionNotFound for a partition of ``tps`` the
        cluster does not have, as a local consumer raises them."""
        if not tps:
            return
        try:
            topics = self._c.list_topics(timeout=ADMIN_TIMEOUT_S).topics
        except self._ck.KafkaException as exc:
            raise self._error(exc, f"{what}: topic metadata") from None
        for tp in tps:
            t = topics.get(tp.topic)
            if t is None or t.error is not None or not t.partitions:
                raise TopicNotFound(f"topic {tp.topic!r} does not exist")
            if tp.partition not in t.partitions:
                raise PartitionNotFound(f"topic {tp.topic!r} has {len(t.partitions)} "
                                        f"partitions; there is no partition "
                                        f"{tp.partition}")

    def assignment(self) -> set[TopicPartition]:
        self._check()
        return {TopicPartition(t.topic, t.partition) for t in self._c.assignment()}

    def _store_handed(self) -> None:
        for m in self._handed:
            self._c.store_offsets(message=m)
        self._handed = []

    def poll(self, timeout: float | None = None, max_records: int | None = None, *,
             timeout_ms: int | None = None) -> list[Record]:
        """Records of the assigned partitions, in offset order per partition,
        waiting up to ``timeout`` seconds or ``timeout_ms`` milliseconds (not
        both; default 0: no wait), as a local consumer's poll."""
        self._check()
        wait = poll_timeout(timeout, timeout_ms)
        if max_records is None:
            max_records = self._max
        elif isinstance(max_records, bool) or not isinstance(max_records, int) \
                or not 1 <= max_records <= MAX_POLL_RECORDS_MAX:
            raise InvalidArgument(f"max_records={max_records!r}; expected an int in "
                                  f"[1, {MAX_POLL_RECORDS_MAX}]")
        if not self._subscribed:
            raise InvalidArgument("poll before subscribe() or assign()")
        try:
            if self._has_group:
                self._store_handed()
            msgs = self._c.consume(num_messages=max_records, timeout=wait)
        except self._ck.KafkaException as exc:
            raise self._error(exc, "poll") from None
        out = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == self._ck.KafkaError._PARTITION_EOF:
                    continue
                if self._has_group and err.code() in (self._ck.KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                      self._ck.KafkaError._UNKNOWN_TOPIC):
                    # a subscribed topic that does not exist (yet) is not an
                    # error, as on a local log: logged once, polled as empty
                    self._missing(m.topic() or "?")
                    continue
                raise self._error(err, f"poll {m.topic()}-{m.partition()}")
            out.append(Record(m.topic(), m.partition(), m.offset(), m.timestamp()[1],
                              m.key(), m.value(), tuple(m.headers() or ())))
            self._handed.append(m)
        return out

    def _missing(self, topic: str) -> None:
        if topic not in self._warned_missing:
            self._warned_missing.add(topic)
            _logger.warning("Kafka consumer: subscribed topic %r does not exist on the "
                            "cluster; poll returns nothing of it until it is created",
                            topic)

    def __iter__(self) -> Iterator[Record]:
        """Records one at a time until close(), or until none came for
        ``consumer_timeout_ms`` (default None: never), as a local consumer."""
        idle_since = time.monotonic()
        while not self._closed:
            wait = 0.5
            if self._idle_s is not None:
                left = self._idle_s - (time.monotonic() - idle_since)
                if left <= 0:
                    return
                wait = min(wait, left)
            records = self.poll(timeout=wait)
            if records:
                yield from records
                idle_since = time.monotonic()

    def commit(self, offsets: object = None, *, message: object = None,
               asynchronous: bool = False) -> None:
        """Commit ``offsets`` (the shapes a local consumer's commit takes:
        {tp: next offset | OffsetAndMetadata}, confluent-kafka's list, or
        ``message=record``), or without them what poll() returned.
        ``asynchronous`` is accepted and changes nothing: the commit is done
        when this returns. Raises CommitFailedError when the group's
        coordinator refuses it (a rebalance, or not a member), or when the
        cluster does not answer within COMMIT_TIMEOUT_S (nothing is
        committed then, see _commit_sync)."""
        self._check()
        if not self._has_group:
            raise InvalidArgument("commit needs a group_id")
        clean = commit_offsets(offsets, message)
        try:
            if clean is None:
                self._store_handed()
                try:
                    self._commit_sync(None)
                except self._ck.KafkaException as exc:
                    if exc.args[0].code() != self._ck.KafkaError._NO_OFFSET:
                        raise
                return
            if clean:
                self._commit_sync([self._tp(tp, off) for tp, off in clean.items()])
        except self._ck.KafkaException as exc:
            raise self._error(exc, "commit") from None

    def _commit_sync(self, offsets: list[Any] | None) -> None:
        """librdkafka's synchronous commit, after a look at the group's
        committed offsets bounded by COMMIT_TIMEOUT_S: the commit has no
        timeout, and while it waits for a coordinator that does not answer
        (a broker stopped, or a network partition) every other call of the
        consumer waits behind it, close() included. So a cluster that does
        not answer the look raises CommitFailedError, and nothing is
        committed; one that stops answering between the look and the
        commit still holds the commit until it answers or drops the
        connection. KafkaException as librdkafka raises it."""
        ck = self._ck
        probe = offsets if offsets is not None else self._c.assignment()
        if probe:
            try:
                self._c.committed([ck.TopicPartition(t.topic, t.partition) for t in probe],
                                  timeout=COMMIT_TIMEOUT_S)
            except ck.KafkaException as exc:
                if exc.args[0].code() != ck.KafkaError._TIMED_OUT:
                    raise
                raise CommitFailedError(
                    f"commit: the Kafka cluster did not answer in {COMMIT_TIMEOUT_S} s; "
                    "nothing was committed (poll again, and commit what it "
                    "returns)") from None
        if offsets is None:
            self._c.commit(asynchronous=False)
        else:
            self._c.commit(offsets=offsets, asynchronous=False)

    def committed(self, *partitions: Any) -> int | None | dict[TopicPartition, int | None]:
        """The group's committed offset of one partition (None without one
        or without a group), or {TopicPartition: offset or None} given a
        list or several partitions, as a local consumer's."""
        self._check()
        tps, one = committed_partitions(partitions)
        out: dict[TopicPartition, int | None] = dict.fromkeys(tps)
        if self._has_group:
            try:
                got = self._c.committed([self._tp(tp) for tp in tps], timeout=ADMIN_TIMEOUT_S)
            except self._ck.KafkaException as exc:
                raise self._error(exc, "committed") from None
            for t in got:
                out[TopicPartition(t.topic, t.partition)] = t.offset if t.offset >= 0 else None
        return out[tps[0]] if one else out

    def position(self, tp: Any) -> int:
        """The offset of the next record poll() returns for ``tp``."""
        self._check()
        tp = as_tp(tp)
        try:
            pos: int = self._c.position([self._tp(tp)])[0].offset
            if pos >= 0:
                return pos
            committed = self.committed(tp)
            if isinstance(committed, int):
                return committed
            low: int = self._c.get_watermark_offsets(self._tp(tp), timeout=ADMIN_TIMEOUT_S)[0]
        except self._ck.KafkaException as exc:
            raise self._error(exc, f"position {tp}") from None
        return low

    def _assigned_or_raise(self, tp: TopicPartition) -> None:
        if tp not in self.assignment():
            raise InvalidArgument(
                f"seek {tp}: it is not assigned to this consumer" +
                ("; a group assigns partitions in poll(): poll() once first, or "
                 "another member owns it" if self._has_group else
                 "; assign() it or subscribe() to its topic first"))

    def seek(self, partition: Any, offset: int) -> None:
        """Make the next poll() of ``partition`` start at ``offset``, with a
        local consumer's checks: InvalidArgument for a partition not
        assigned or an offset outside [0, 2**63); an offset below the log
        start resumes there (OffsetOutOfRange with
        ``auto_offset_reset="none"``)."""
        self._check()
        tp = as_tp(partition)
        self._assigned_or_raise(tp)
        if isinstance(offset, bool) or not isinstance(offset, int) or \
                not 0 <= offset < 1 << 63:
            raise InvalidArgument(f"offset={offset!r}; expected an int in [0, 2**63)")
        try:
            low = self._c.get_watermark_offsets(self._tp(tp), timeout=ADMIN_TIMEOUT_S)[0]
        except self._ck.KafkaException as exc:
            raise self._error(exc, f"seek {tp}") from None
        if offset < low:
            # Kafka would apply auto_offset_reset ("latest": the end); a
            # local log resumes at the log start: the same on both backends
            if self._reset_none:
                raise OffsetOutOfRange(
                    f"seek {tp.topic}-{tp.partition} to {offset}: the log starts at "
                    f"{low} (older records were deleted) and auto_offset_reset='none'")
            offset = low
        self._seek(tp, offset)

    def _seek(self, tp: TopicPartition, offset: int) -> None:
        self._handed = [m for m in self._handed
                        if (m.topic(), m.partition()) != (tp.topic, tp.partition)]
        try:
            self._c.seek(self._tp(tp, offset))
            return
        except self._ck.KafkaException as exc:
            if exc.args[0].code() != self._ck.KafkaError._STATE:
                raise self._error(exc, f"seek {tp}") from None
        # librdkafka refuses to seek a partition not fetched yet (just
        # assigned): a manual assignment is given again with the target
        # offset and every other partition at its position
        if self._has_group:
            raise InvalidArgument(f"seek {tp}: not fetched yet on Kafka; "
                                  "poll() once after the group assigned it")
        key = (tp.topic, tp.partition)
        current = self._c.assignment()
        self._unfetched_seeks[key] = offset
        where = []
        for t in self._c.position(current):
            k = (t.topic, t.partition)
            # a partition not fetched yet keeps the seek it was given
            off = t.offset if t.offset >= 0 and k != key else \
                self._unfetched_seeks.get(k, t.offset)
            where.append(self._ck.TopicPartition(t.topic, t.partition, off))
        self._c.assign(where)

    def seek_to_beginning(self, *partitions: Any) -> None:
        """Move to the log start of ``partitions`` (varargs or one list),
        or of every assigned partition without any."""
        self._seek_ends(partitions, self._ck.OFFSET_BEGINNING)

    def seek_to_end(self, *partitions: Any) -> None:
        """Move to the end of ``partitions`` (varargs or one list), or of
        every assigned partition without any."""
        self._seek_ends(partitions, self._ck.OFFSET_END)

    def _seek_ends(self, partitions: tuple[Any, ...], where: int) -> None:
        self._check()
        tps = as_tps(partitions) or sorted(self.assignment())
        for tp in tps:
            self._assigned_or_raise(tp)
        for tp in tps:
            self._seek(tp, where)

    def offsets_for_times(self, timestamps: Any) -> dict[TopicPartition, int | None]:
        """{tp: ts_ms} -> {tp: the first offset with a timestamp at or after
        ts_ms, or None when there is none}, as a local consumer's (a plain
        int, not an OffsetAndTimestamp); any partition of the cluster, not
        only assigned ones."""
        self._check()
        asked = {}
        for tp, ts in dict(timestamps).items():
            tp = as_tp(tp)
            if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
                raise InvalidArgument(f"timestamp for {tp} must be a non-negative int ms")
            asked[tp] = ts
        if not asked:
            return {}
        self._known(list(asked), "offsets_for_times")
        # past any timestamp a record can have (librdkafka takes an int64):
        # no such record, as a local consumer answers
        out: dict[TopicPartition, int | None] = {
            tp: None for tp, ts in asked.items() if ts >= 1 << 63}
        asked = {tp: ts for tp, ts in asked.items() if tp not in out}
        if not asked:
            return out
        try:
            got = self._c.offsets_for_times([self._tp(tp, ts) for tp, ts in asked.items()],
                                            timeout=ADMIN_TIMEOUT_S)
        except self._ck.KafkaException as exc:
            raise self._error(exc, "offsets_for_times") from None
        for t in got:
            if t.error is not None:
                raise self._error(t.error, f"offsets_for_times {t.topic}-{t.partition}")
            out[TopicPartition(t.topic, t.partition)] = t.offset if t.offset >= 0 else None
        return out

    def lag(self) -> dict[TopicPartition, int]:
        """{tp: records between the position and the end} for assigned
        partitions."""
        self._check()
        out = {}
        for tp in self.assignment():
            try:
                _, high = self._c.get_watermark_offsets(self._tp(tp), timeout=ADMIN_TIMEOUT_S)
            except self._ck.KafkaException as exc:
                raise self._error(exc, f"lag {tp}") from None
            out[tp] = max(0, high - self.position(tp))
        return out

    def __getattr__(self, name: str) -> Any:
        raise no_attribute(self, name, CONSUMER_INSTEAD)

    def close(self, autocommit: bool = True, timeout: float | None = None) -> None:
        """Leave the group; with auto-commit (and ``autocommit``) first
        commit the finished records. ``timeout`` is accepted and changes
        nothing. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if autocommit and self._auto_commit:
            # the finished records only (stored by the polls after them), as
            # a local consumer's close(): the last poll's may not be done
            try:
                self._commit_sync(None)
            except (self._ck.KafkaException, CommitFailedError):
                pass
        self._c.close()
