"""Kafka -> pylog: the inbound half of :class:`pylog.mirror.Mirror` (commands
sent to an edge device).

A confluent-kafka consumer in the mirror's Kafka consumer group reads the
topics; each record is appended to the local topic of the same name
(created with the Kafka topic's partition count when missing) with its key,
headers and timestamp. The group's Kafka offsets are committed only after
the local producer's ``flush()`` returned, that is after the records were
fdatasync'd: a mirror killed at any instant, or a commit lost to a broker
outage, re-delivers records not yet committed (at least once, per-partition
order kept), never loses one.

Partitions: the same number when both topics have as many; otherwise a
keyed record goes where Kafka's partitioner (murmur2) puts its key among
the local partitions, a keyless one to its Kafka partition modulo the
local count.

Group membership is static (``group.instance.id``, see
:func:`instance_id`); pass another ``group.instance.id`` in
``kafka_config`` to choose it.

Thread safety: used by the one thread that runs the Mirror.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
from typing import TYPE_CHECKING, Any

from ._native import partition_for_key
from .errors import InvalidArgument, InvalidTimestamp, RecordTooLarge, TopicNotFound
from .mirrorstats import KAFKA_LOGGER, Backoff, MirrorError, MirrorStats, RateLimitedReport, Report

if TYPE_CHECKING:
    from .log import Log

#: Records taken from Kafka, appended and committed as one step.
CONSUME_RECORDS_MAX = 5000
METADATA_TIMEOUT_S = 10.0


def instance_id(path: str, group_id: str) -> str:
    """The mirror's static group membership (KIP-345): the same for every
    run of the mirror of one log directory on one host, so a mirror
    restarted after a crash takes its partitions back at once instead of
    waiting for the dead member's session to expire (some brokers wait
    much longer), and two mirrors of the same log in the same group never
    split the partitions: as in Kafka, the one that joined last replaces
    the other, which gets a fatal error (FENCED_INSTANCE_ID) and stops
    with MirrorError."""
    digest = hashlib.sha256(f"{socket.gethostname()}\0{path}\0{group_id}".encode())
    return f"pylog-mirror-{digest.hexdigest()[:16]}"


def consumer_config(bootstrap_servers: str, group_id: str, instance: str,
                    kafka_config: dict[str, Any], **ours: Any) -> dict[str, Any]:
    """The settings of the mirror's Kafka consumer (``ours``: callbacks;
    the user's ``kafka_config`` last, so that it may override any)."""
    return {"bootstrap.servers": bootstrap_servers, "group.id": group_id,
            "group.instance.id": instance,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "topic.metadata.refresh.interval.ms": 5000,
            "logger": KAFKA_LOGGER, **ours, **kafka_config}


def subscribed_consumer(ck: Any, config: dict[str, Any], pattern: str) -> Any:
    """A Kafka consumer with ``config``, subscribed to ``pattern`` (not
    polled yet: it has joined no group); InvalidArgument for settings or a
    pattern the client refuses."""
    try:
        consumer = ck.Consumer(config)
    except ck.KafkaException as exc:
        raise _refused(pattern, exc) from None
    try:
        # librdkafka treats a subscription starting with ^ as a regex (its
        # own engine: no (?:...)); pylog's pattern is matched against the
        # whole name, so anchor both ends
        consumer.subscribe([f"^({pattern})$"])
    except ck.KafkaException as exc:
        consumer.close()
        raise _refused(pattern, exc) from None
    return consumer


def _refused(pattern: str, exc: Exception) -> InvalidArgument:
    return InvalidArgument(
        f"mirror: the Kafka client refused its settings or the topics "
        f"pattern {pattern!r} (librdkafka's regex: no (?:...), (?i) or \\d): "
        f"{exc.args[0].str() if exc.args else exc}")


def check_settings(ck: Any, bootstrap_servers: str, pattern: str, group_id: str,
                   kafka_config: dict[str, Any]) -> None:
    """InvalidArgument for settings or a pattern the Kafka client refuses,
    checked with a probe consumer closed at once (it never polls, so it
    joins no group) before the mirror opens its log: a refused mirror
    creates nothing on disk."""
    subscribed_consumer(ck, consumer_config(bootstrap_servers, group_id,
                                            "pylog-mirror-probe", kafka_config),
                        pattern).close()


class FromKafka:
    """The inbound loop; see the module docstring."""

    def __init__(self, ck: Any, log: Log, bootstrap_servers: str, pattern: str,
                 group_id: str, kafka_config: dict[str, Any], stats: MirrorStats,
                 report: Report) -> None:
        self._ck = ck
        self._log = log
        self._stats = stats
        self._report = report
        self._limited = RateLimitedReport(report)
        self._consumer = subscribed_consumer(ck, consumer_config(
            bootstrap_servers, group_id, instance_id(log.path, group_id), kafka_config,
            error_cb=self._on_error), pattern)
        self._pattern = re.compile(pattern)
        self._producer = log.producer()
        self._routes: dict[str, tuple[int, int]] = {}    # topic -> (kafka, local)
        self._uncommitted: dict[tuple[str, int], int] = {}
        self._backoff = Backoff()
        self._broken: str | None = None
        # a fatal error reported by error_cb: the consumer is dead for good
        # (fenced by a newer mirror of the same log, ...); a later step
        # raises it rather than loop on a consumer that returns nothing
        self._fatal: Any = None

    def _on_error(self, err: Any) -> None:
        self._stats.errors += 1
        if err.fatal():
            self._fatal = err
            return
        self._limited(f"kafka: {err.str()} (retrying)", time.monotonic())

    def _fatal_error(self, err: Any) -> MirrorError:
        text = f"mirror: the Kafka consumer stopped: {err.str()}"
        if err.code() == getattr(self._ck.KafkaError, "FENCED_INSTANCE_ID", None) \
                or "fenced" in err.str():
            text += ("; another mirror of this log joined the Kafka group with the "
                     "same group.instance.id and took its partitions over (run one "
                     "mirror per log and group)")
        return MirrorError(text)

    def step(self, timeout: float) -> bool:
        """Move records for up to about ``timeout`` seconds; True when every
        assigned Kafka partition is read to its end and committed."""
        if self._broken is not None:
            raise MirrorError(f"mirror: a step failed ({self._broken}) and its records "
                              "could not be put back; close the mirror and start it again")
        if self._fatal is not None:
            raise self._fatal_error(self._fatal)
        msgs = self._consumer.consume(num_messages=CONSUME_RECORDS_MAX, timeout=timeout)
        n = 0
        i = 0
        try:
            for i, m in enumerate(msgs):
                if self._move(m):
                    n += 1
        except BaseException:
            # the consumer's position is past every record of msgs: put it
            # back on the first one not written, or the next step would skip
            # them and a commit pass them (lost for good)
            self._rewind(msgs[i:])
            raise
        if n:
            self._producer.flush()       # durable before Kafka hears of it
            self._stats.records += n
        if self._uncommitted and not self._commit():
            return False
        return not msgs and self._at_end()

    def _move(self, m: Any) -> bool:
        """Append one Kafka message to the local log; False for an error
        message that is only reported."""
        err = m.error()
        if err is not None:
            # after a fatal error librdkafka returns messages of code _FATAL
            # whose fatal() is False: the consumer is dead all the same
            if err.fatal() or err.code() == self._ck.KafkaError._FATAL:
                raise self._fatal_error(self._fatal or err)
            self._limited(f"kafka: {err.str()}", time.monotonic())
            return False
        topic, kp = m.topic(), m.partition()
        local = self._local_partition(topic, kp, m.key())
        ts_type, ts = m.timestamp()
        try:
            self._producer.send(
                topic, m.value(), m.key(), headers=m.headers() or None, partition=local,
                timestamp_ms=ts if ts_type != self._ck.TIMESTAMP_NOT_AVAILABLE else None)
        except (RecordTooLarge, InvalidTimestamp) as exc:
            raise MirrorError(
                f"mirror: {topic}-{kp} offset {m.offset()} cannot be written to the "
                f"local topic: {exc}; alter the local topic ({topic!r}: "
                "max_message_bytes, message_timestamp_after_max_ms) and run the "
                "mirror again, which goes on from this record") from exc
        self._uncommitted[(topic, kp)] = m.offset() + 1
        return True

    def _rewind(self, rest: list[Any]) -> None:
        """Seek each partition of the unwritten messages ``rest`` back to
        its first; when that fails, no later step may run."""
        first: dict[tuple[str, int], int] = {}
        for m in rest:
            if m.error() is None:
                first.setdefault((m.topic(), m.partition()), m.offset())
        try:
            for (t, p), off in first.items():
                self._consumer.seek(self._ck.TopicPartition(t, p, off))
        except Exception as exc:        # (KafkaException: not assigned any more, ...)
            self._broken = repr(exc)

    def _commit(self) -> bool:
        tps = [self._ck.TopicPartition(t, p, o) for (t, p), o in self._uncommitted.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
        except self._ck.KafkaException as exc:
            # kept in _uncommitted and tried again: the records are in the
            # local log already, a mirror killed meanwhile receives them twice
            wait = self._backoff.next_s()
            self._limited(f"kafka: commit failed: {exc.args[0].str()}; retrying",
                          time.monotonic())
            time.sleep(wait)
            return False
        self._uncommitted.clear()
        self._backoff.reset()
        return True

    def _at_end(self) -> bool:
        """Whether every assigned partition was read to its end: the
        position, or before the first record since joining (position not
        known yet) the committed offset, is at the high watermark."""
        assignment = self._consumer.assignment()
        if not assignment:
            # caught up when no Kafka topic matches at all (not yet
            # assigned otherwise)
            try:
                md = self._consumer.list_topics(timeout=METADATA_TIMEOUT_S)
            except self._ck.KafkaException:
                return False
            return not any(self._pattern.fullmatch(t) for t in md.topics)
        try:
            positions = self._consumer.position(assignment)
            unknown = [tp for tp in positions if tp.offset < 0]
            committed = {(tp.topic, tp.partition): tp.offset for tp in
                         (self._consumer.committed(unknown, timeout=METADATA_TIMEOUT_S)
                          if unknown else [])}
            for tp in positions:
                at = tp.offset if tp.offset >= 0 else committed.get((tp.topic, tp.partition), -1)
                low, high = self._consumer.get_watermark_offsets(
                    tp, timeout=METADATA_TIMEOUT_S)
                if high > low and at < high:
                    return False
        except self._ck.KafkaException:
            return False
        return True

    def _local_partition(self, topic: str, kafka_partition: int, key: bytes | None) -> int:
        route = self._routes.get(topic)
        if route is None:
            route = self._routes[topic] = self._ensure_topic(topic)
        kafka_n, local_n = route
        if kafka_partition >= kafka_n:     # the Kafka topic grew: look again
            route = self._routes[topic] = self._ensure_topic(topic)
            kafka_n, local_n = route
        if kafka_n == local_n:
            return kafka_partition
        if key is not None:
            return partition_for_key(key, local_n)
        return kafka_partition % local_n

    def _ensure_topic(self, topic: str) -> tuple[int, int]:
        md = self._consumer.list_topics(timeout=METADATA_TIMEOUT_S)
        kafka_n = len(md.topics[topic].partitions)
        try:
            local_n = self._log.describe_topic(topic).partitions
        except TopicNotFound:
            self._log.create_topic(topic, partitions=kafka_n, exist_ok=True)
            local_n = self._log.describe_topic(topic).partitions
            self._report(f"created local topic {topic!r} with {local_n} partitions")
        return kafka_n, local_n

    def close(self, timeout: float) -> None:
        """Flush and commit what was appended, then leave the Kafka group."""
        try:
            self._producer.flush()
            if self._uncommitted:
                self._commit()
        finally:
            self._consumer.close()
