"""pylog's API on an Apache Kafka cluster: ``pylog.open("kafka://host:9092")``
returns a :class:`KafkaLog` whose ``create_topic``, ``topics``,
``describe_topic``, ``delete_topic``, ``producer()`` and ``consumer()``
run on the cluster through confluent-kafka (the ``kafka`` extra), so code
written against a local log runs on Kafka when it outgrows one machine.

What maps (tests/test_kafka_conformance.py runs one suite on both
backends): topics with partitions and ``retention_ms`` /
``retention_bytes`` / ``segment_bytes`` / ``max_message_bytes``
(Kafka's ``retention.ms`` ...); ``send`` (returns once the broker
acknowledged: ``acks=all``, idempotent producer), ``send_batch``,
``flush``; consumers with ``group_id``, ``auto_offset_reset``,
``enable_auto_commit``, ``poll``, ``commit``, ``seek``,
``seek_to_beginning`` / ``seek_to_end``, ``position``, ``committed``,
``lag``, ``assign``, ``assignment``, iteration.

What does not map raises :class:`NotSupportedOnKafka` naming the Kafka
alternative: ``sync`` modes other than the default (durability on Kafka is
``acks`` and replication, set on the cluster), ``readonly``, share groups
(work queues need a broker with KIP-932), local-only topic settings
(``compression`` per topic, timestamp windows), consumer options without a
Kafka equivalent (``dead_letter_topic``, listeners), ``describe_group``.

Thread safety: a KafkaLog and its producers are thread-safe (librdkafka's
are); a consumer is used by one thread at a time, as a local one.
"""

from __future__ import annotations

import re
from typing import Any

from ..config import validate_topic_name
from ..errors import PylogError, TopicExists, TopicNotFound
from ..records import PartitionInfo, TopicInfo
from .clients import ADMIN_TIMEOUT_S, KafkaConsumer, KafkaProducer, kafka_module

__all__ = ["KafkaLog", "NotSupportedOnKafka", "open_kafka", "KafkaProducer", "KafkaConsumer"]

#: pylog topic settings and the Kafka topic configs they become.
TOPIC_CONFIGS = {"retention_ms": "retention.ms", "retention_bytes": "retention.bytes",
                 "segment_bytes": "segment.bytes", "max_message_bytes": "max.message.bytes"}


class NotSupportedOnKafka(PylogError, NotImplementedError):
    """A pylog feature with no equivalent on a Kafka cluster (the message
    says what to use instead)."""


class KafkaLog:
    """The Log API on the Kafka cluster at ``bootstrap_servers``; made by
    ``pylog.open("kafka://host:port[,host:port]")``. Thread-safe."""

    def __init__(self, bootstrap_servers: str) -> None:
        ck = kafka_module()
        self._ck = ck
        self.bootstrap_servers = bootstrap_servers
        self._admin = ck.admin.AdminClient({"bootstrap.servers": bootstrap_servers})
        self._closed = False

    # -- topics ---------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1, *, exist_ok: bool = False,
                     **config: Any) -> TopicInfo:
        """Create a Kafka topic (replication: the cluster's default)."""
        validate_topic_name(name)
        unknown = sorted(set(config) - set(TOPIC_CONFIGS))
        if unknown:
            raise NotSupportedOnKafka(f"create_topic({name!r}): {', '.join(unknown)} "
                                      "has no Kafka topic config; set it on the cluster")
        ck = self._ck
        new = ck.admin.NewTopic(name, num_partitions=partitions, replication_factor=-1,
                                config={TOPIC_CONFIGS[k]: str(v) for k, v in config.items()})
        try:
            self._admin.create_topics([new])[name].result(ADMIN_TIMEOUT_S)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise PylogError(f"create Kafka topic {name!r}: {exc.args[0].str()}") from None
            if not exist_ok:
                raise TopicExists(f"topic {name!r} already exists on the Kafka cluster "
                                  f"{self.bootstrap_servers}") from None
        return self._wait_described(name)

    def _wait_described(self, name: str) -> TopicInfo:
        import time
        deadline = time.monotonic() + ADMIN_TIMEOUT_S
        while True:
            try:
                return self.describe_topic(name)
            except TopicNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def topics(self) -> list[str]:
        """Names of the cluster's topics, internal ones (``__...``) left out."""
        md = self._admin.list_topics(timeout=ADMIN_TIMEOUT_S)
        return sorted(t for t in md.topics if not t.startswith("__"))

    def describe_topic(self, name: str) -> TopicInfo:
        """Partitions and their start / end offsets (``bytes`` and
        ``segments`` are 0: Kafka does not say them to clients)."""
        validate_topic_name(name)
        t = self._admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics.get(name)
        if t is None or t.error is not None or not t.partitions:
            raise TopicNotFound(f"topic {name!r} does not exist on the Kafka cluster "
                                f"{self.bootstrap_servers}")
        ck = self._ck
        c = ck.Consumer({"bootstrap.servers": self.bootstrap_servers,
                         "group.id": "pylog-describe"})
        try:
            infos = []
            for p in sorted(t.partitions):
                low, high = c.get_watermark_offsets(ck.TopicPartition(name, p),
                                                    timeout=ADMIN_TIMEOUT_S)
                infos.append(PartitionInfo(p, low, high, 0, 0))
        finally:
            c.close()
        return TopicInfo(name, len(infos), {}, infos)

    def delete_topic(self, name: str) -> None:
        validate_topic_name(name)
        if name not in self.topics():
            raise TopicNotFound(f"topic {name!r} does not exist on the Kafka cluster "
                                f"{self.bootstrap_servers}")
        self._admin.delete_topics([name])[name].result(ADMIN_TIMEOUT_S)

    # -- clients --------------------------------------------------------------
    def producer(self, **options: Any) -> KafkaProducer:
        """An idempotent Kafka producer with pylog's Producer methods."""
        if options:
            raise NotSupportedOnKafka(f"producer({', '.join(sorted(options))}=...): "
                                      "not supported on Kafka; use confluent-kafka's "
                                      "Producer settings directly")
        return KafkaProducer(self._ck, self.bootstrap_servers)

    def consumer(self, *topics: str, group_id: str | None = None,
                 auto_offset_reset: str = "latest", enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000, session_timeout_ms: int = 10000,
                 max_poll_records: int = 500, pattern: str | None = None,
                 **options: Any) -> KafkaConsumer:
        """A Kafka consumer with pylog's Consumer methods (options as
        Log.consumer; the ones without a Kafka equivalent raise)."""
        if options:
            raise NotSupportedOnKafka(f"consumer({', '.join(sorted(options))}=...): "
                                      "no Kafka equivalent")
        if auto_offset_reset not in ("earliest", "latest", "none"):
            from ..errors import InvalidArgument
            raise InvalidArgument(f"auto_offset_reset={auto_offset_reset!r}")
        c = KafkaConsumer(self._ck, {
            "bootstrap.servers": self.bootstrap_servers,
            "group.id": group_id or "pylog-no-group",
            "auto.offset.reset": "error" if auto_offset_reset == "none" else auto_offset_reset,
            "enable.auto.commit": enable_auto_commit and group_id is not None,
            "auto.commit.interval.ms": auto_commit_interval_ms,
            "session.timeout.ms": session_timeout_ms,
            "enable.auto.offset.store": False}, max_poll_records, group_id is not None)
        if topics or pattern:
            c.subscribe(list(topics), pattern=pattern)
        return c

    def describe_group(self, group: str) -> Any:
        raise NotSupportedOnKafka(f"describe_group({group!r}) is not mapped on Kafka; "
                                  "use kafka-consumer-groups.sh --describe or the "
                                  "consumer's lag()")

    def share_consumer(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupportedOnKafka("share groups (work queues) need a broker with KIP-932 "
                                  "and are not mapped by pylog.kafka; use a consumer group")

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> KafkaLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_URL = re.compile(r"kafka://([^\s,:/]+:\d{1,5}(?:,[^\s,:/]+:\d{1,5})*)/?\Z")


def open_kafka(url: str, **options: Any) -> KafkaLog:
    """The KafkaLog for ``kafka://host:port[,host:port]``; pylog.open's
    local options have no Kafka meaning and raise NotSupportedOnKafka."""
    m = _URL.match(url)
    if m is None:
        from ..errors import InvalidArgument
        raise InvalidArgument(f"open {url!r}: expected kafka://host:port[,host:port...]")
    set_options = {k for k, v in options.items() if v != _DEFAULTS.get(k, object())}
    if set_options:
        raise NotSupportedOnKafka(
            f"open {url!r}: {', '.join(sorted(set_options))} has no meaning on Kafka "
            "(durability there is acks=all and the cluster's replication)")
    return KafkaLog(m.group(1))


# pylog.open's keyword defaults: passing one of these unchanged is accepted
_DEFAULTS: dict[str, Any] = {"sync": "always", "readonly": False}
