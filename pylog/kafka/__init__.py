"""pylog's API on an Apache Kafka cluster: ``pylog.open("kafka://host:9092")``
returns a :class:`KafkaLog` whose ``create_topic``, ``topics``,
``describe_topic``, ``delete_topic``, ``producer()`` and ``consumer()``
run on the cluster through confluent-kafka (the ``kafka`` extra), so code
written against a local log runs on Kafka when it outgrows one machine.

What maps (tests/test_kafka_conformance.py runs one suite on both backends,
and examples/order_service.py runs unchanged on both): topics with
partitions and ``retention_ms`` / ``retention_bytes`` / ``segment_bytes`` /
``max_message_bytes`` (Kafka's ``retention.ms`` ...); ``send`` (returns
once the broker acknowledged), ``send_batch`` (not atomic on Kafka),
``flush``; consumers with ``group_id``, ``auto_offset_reset``,
``enable_auto_commit`` (pylog's commit rules), ``client_id``,
``isolation_level``, ``consumer_timeout_ms``, ``poll``, ``commit``,
``seek``, ``seek_to_beginning`` / ``seek_to_end``, ``position``,
``committed``, ``offsets_for_times``, ``lag``, ``assign``, ``assignment``,
``subscription``, ``unsubscribe``, iteration; a consumer without a group
reads every partition of its topics (no group is joined); a group's
subscribed topic that does not exist polls empty (a warning is logged once)
and is read within METADATA_REFRESH_MS (5 s) of its creation;
``describe_group`` (committed offsets and lag; no members);
``pylog.open``'s ``sync`` becomes the producers' ``acks`` (``"always"``:
``acks=all`` and idempotence; ``"interval"``/``"never"``: ``acks=1``) and
``readonly=True`` refuses writes (ReadOnlyLog).

What does not map raises :class:`NotSupportedOnKafka` naming the
alternative: pylog.aio (``pylog.aio.open("kafka://...")``), pylog.open's
local options (``sync_interval_ms``, ``max_open_files`` ...), share groups
(work queues need a broker with KIP-932), local-only topic settings
(``compression`` per topic, timestamp windows), producer options
(``linger_ms``, serializers) and consumer options without a Kafka
equivalent (``dead_letter_topic``, listeners, deserializers). A seek in a
group before the partition is fetched raises InvalidArgument (poll once
first). Calls take the same arguments and raise the same pylog errors as on
a local log (pylog.kafka.clients); a method only a local log has
(``groups``, ``highwater``, ``pause``, ``run``, ``poll_values``, a
producer's ``partitions_for`` ...) raises AttributeError naming what to use
instead.

A cluster that does not answer: ``send`` waits up to SEND_TIMEOUT_S
(120 s) for the acknowledgement, then raises SendTimeoutError (a record
not sent by then is dropped; one sent may be stored); ``commit`` raises CommitFailedError after
COMMIT_TIMEOUT_S (10 s), nothing committed; admin calls raise PylogError
after ADMIN_TIMEOUT_S (10 s); ``close()`` of a consumer with
``enable_auto_commit`` waits for librdkafka's final commit, as long as the
cluster does not answer (a known limit).

Thread safety: a KafkaLog and its producers are thread-safe (librdkafka's
are); a consumer is used by one thread at a time, as a local one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import re
import threading
import weakref
from typing import Any, TypeVar

from ..config import PARTITIONS_MAX, validate_group_id, validate_topic_name
from ..consumerargs import check_options
from ..errors import (
    InvalidArgument,
    LogClosed,
    PylogError,
    ReadOnlyLog,
    TopicExists,
    TopicNotFound,
)
from ..records import PartitionInfo, TopicInfo
from .clients import (
    ADMIN_TIMEOUT_S,
    LOG_INSTEAD,
    KafkaConsumer,
    KafkaProducer,
    kafka_errors,
    kafka_module,
    no_attribute,
)

__all__ = ["KafkaLog", "NotSupportedOnKafka", "open_kafka", "KafkaProducer", "KafkaConsumer"]

_C = TypeVar("_C", KafkaProducer, KafkaConsumer)

#: How often a consumer looks for topics created since (ms).
METADATA_REFRESH_MS = 5000

#: pylog topic settings and the Kafka topic configs they become.
TOPIC_CONFIGS = {"retention_ms": "retention.ms", "retention_bytes": "retention.bytes",
                 "segment_bytes": "segment.bytes", "max_message_bytes": "max.message.bytes"}


class NotSupportedOnKafka(PylogError, NotImplementedError):
    """A pylog feature with no equivalent on a Kafka cluster (the message
    says what to use instead)."""


class KafkaLog:
    """The Log API on the Kafka cluster at ``bootstrap_servers``; made by
    ``pylog.open("kafka://host:port[,host:port]")``. Thread-safe."""

    def __init__(self, bootstrap_servers: str, *, acks: str = "all",
                 readonly: bool = False) -> None:
        ck = kafka_module()
        self._ck = ck
        self.bootstrap_servers = bootstrap_servers
        self.acks = acks
        self.readonly = readonly
        self._admin = ck.admin.AdminClient({"bootstrap.servers": bootstrap_servers})
        # the producers and consumers made here, closed by close() as a
        # local Log's are
        self._clients: weakref.WeakSet[KafkaProducer | KafkaConsumer] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def path(self) -> str:
        """The ``kafka://`` URL this log was opened with (a local Log's
        ``path`` is its directory)."""
        return f"kafka://{self.bootstrap_servers}"

    def _open(self) -> None:
        if self._closed:
            raise LogClosed(f"Kafka log {self.bootstrap_servers} is closed")

    def _made(self, client: _C) -> _C:
        with self._lock:
            if self._closed:
                client.close()
                self._open()
            self._clients.add(client)
        return client

    # -- topics ---------------------------------------------------------------
    def create_topic(self, name: str, partitions: int = 1, *, exist_ok: bool = False,
                     **config: Any) -> TopicInfo:
        """Create a Kafka topic (replication: the cluster's default)."""
        self._open()
        validate_topic_name(name)
        self._writable(f"create_topic({name!r})")
        # a local log's check: librdkafka would take -1 (or True) as "the
        # cluster's default count" and a str as a TypeError
        if isinstance(partitions, bool) or not isinstance(partitions, int) \
                or not 1 <= partitions <= PARTITIONS_MAX:
            raise InvalidArgument(
                f"partitions={partitions!r}; expected int in [1, {PARTITIONS_MAX}]")
        unknown = sorted(set(config) - set(TOPIC_CONFIGS))
        if unknown:
            raise NotSupportedOnKafka(f"create_topic({name!r}): {', '.join(unknown)} "
                                      "has no Kafka topic config; set it on the cluster")
        ck = self._ck
        new = ck.admin.NewTopic(name, num_partitions=partitions, replication_factor=-1,
                                config={TOPIC_CONFIGS[k]: str(v) for k, v in config.items()})
        try:
            with self._errors(f"create_topic({name!r})"):
                future = self._admin.create_topics([new])[name]
            future.result(ADMIN_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            raise PylogError(f"create_topic({name!r}): the Kafka cluster "
                             f"{self.bootstrap_servers} did not answer in "
                             f"{ADMIN_TIMEOUT_S} s") from None
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

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """The block's confluent-kafka errors as pylog's (clients.kafka_errors)."""
        return kafka_errors(self._ck, what, self.bootstrap_servers)

    def topics(self) -> list[str]:
        """Names of the cluster's topics, internal ones (``__...``) left out."""
        self._open()
        with self._errors("topics()"):
            md = self._admin.list_topics(timeout=ADMIN_TIMEOUT_S)
        return sorted(t for t in md.topics if not t.startswith("__"))

    def describe_topic(self, name: str) -> TopicInfo:
        """Partitions and their start / end offsets (``bytes`` and
        ``segments`` are 0: Kafka does not say them to clients)."""
        self._open()
        validate_topic_name(name)
        with self._errors(f"describe_topic({name!r})"):
            t = self._admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics.get(name)
        if t is None or t.error is not None or not t.partitions:
            raise TopicNotFound(f"topic {name!r} does not exist on the Kafka cluster "
                                f"{self.bootstrap_servers}")
        ck = self._ck
        c = ck.Consumer({"bootstrap.servers": self.bootstrap_servers,
                         "group.id": "pylog-describe"})
        try:
            infos = []
            with self._errors(f"describe_topic({name!r})"):
                for p in sorted(t.partitions):
                    low, high = c.get_watermark_offsets(ck.TopicPartition(name, p),
                                                        timeout=ADMIN_TIMEOUT_S)
                    infos.append(PartitionInfo(p, low, high, 0, 0))
        finally:
            c.close()
        return TopicInfo(name, len(infos), {}, infos)

    def _writable(self, what: str) -> None:
        if self.readonly:
            raise ReadOnlyLog(f"{what}: the Kafka log {self.bootstrap_servers} was "
                              "opened readonly=True")

    def delete_topic(self, name: str) -> None:
        self._open()
        validate_topic_name(name)
        self._writable(f"delete_topic({name!r})")
        if name not in self.topics():
            raise TopicNotFound(f"topic {name!r} does not exist on the Kafka cluster "
                                f"{self.bootstrap_servers}")
        with self._errors(f"delete_topic({name!r})"):
            self._admin.delete_topics([name])[name].result(ADMIN_TIMEOUT_S)

    # -- clients --------------------------------------------------------------
    def producer(self, **options: Any) -> KafkaProducer:
        """An idempotent Kafka producer with pylog's Producer methods."""
        self._open()
        if options:
            raise NotSupportedOnKafka(f"producer({', '.join(sorted(options))}=...): "
                                      "not supported on Kafka; use confluent-kafka's "
                                      "Producer settings directly")
        self._writable("producer()")
        return self._made(KafkaProducer(self._ck, self.bootstrap_servers, self.acks))

    def consumer(self, *topics: str, group_id: str | None = None,
                 auto_offset_reset: str = "latest", enable_auto_commit: bool = True,
                 auto_commit_interval_ms: int = 5000, session_timeout_ms: int = 10000,
                 max_poll_records: int = 500, pattern: str | None = None,
                 client_id: str | None = None, isolation_level: str = "read_uncommitted",
                 consumer_timeout_ms: float | None = None,
                 **options: Any) -> KafkaConsumer:
        """A Kafka consumer with pylog's Consumer methods (options as
        Log.consumer; the ones without a Kafka equivalent raise)."""
        self._open()
        if options:
            raise NotSupportedOnKafka(f"consumer({', '.join(sorted(options))}=...): "
                                      "no Kafka equivalent")
        # a local consumer's checks (librdkafka would take group_id="" as
        # no group, max_poll_records=0 or enable_auto_commit="yes" as given,
        # and raise its own KafkaException for a value out of its range)
        check_options(self, group_id, auto_offset_reset, enable_auto_commit,  # type: ignore[arg-type]
                      auto_commit_interval_ms, session_timeout_ms, max_poll_records,
                      300_000, consumer_timeout_ms, None, None)
        if isolation_level not in ("read_uncommitted", "read_committed"):
            raise InvalidArgument(f"isolation_level={isolation_level!r}; expected "
                                  "'read_uncommitted' or 'read_committed'")
        config = {
            "bootstrap.servers": self.bootstrap_servers,
            # no group: pylog's consumer then reads every partition itself
            # (manual assignment below); librdkafka wants a group.id anyway
            "group.id": group_id or "pylog-no-group",
            "auto.offset.reset": "error" if auto_offset_reset == "none" else auto_offset_reset,
            "enable.auto.commit": enable_auto_commit and group_id is not None,
            "auto.commit.interval.ms": auto_commit_interval_ms,
            "session.timeout.ms": session_timeout_ms,
            "enable.auto.offset.store": False,
            # pylog's default, and Kafka's Java client's (librdkafka's is
            # read_committed)
            "isolation.level": isolation_level,
            # a subscribed topic created later (or one a pattern now
            # matches) is found within this, as a local consumer finds it
            # at its next poll (librdkafka's default: 5 minutes)
            "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS}
        if client_id is not None:
            config["client.id"] = client_id
        c = self._made(KafkaConsumer(self._ck, config, max_poll_records, group_id is not None,
                                     consumer_timeout_ms))
        if group_id is not None and (topics or pattern):
            try:
                c.subscribe(list(topics), pattern=pattern)
            except PylogError:
                c.close()
                raise
        elif topics or pattern:
            names = set(topics)
            if pattern is not None:
                names |= {t for t in self.topics() if re.fullmatch(pattern, t)}
            try:
                with self._errors("consumer()"):
                    md = self._admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
            except PylogError:
                c.close()
                raise
            c.assign([(t, p) for t in sorted(names) if t in md for p in md[t].partitions])
            c._subscription = set(topics)
        return c

    def describe_group(self, group: str) -> dict[str, Any]:
        """Committed offsets, end offsets and lag of ``group`` per
        partition (``members`` is not filled on Kafka: use the cluster's
        tools)."""
        self._open()
        validate_group_id(group)
        ck = self._ck
        req = ck.ConsumerGroupTopicPartitions(group)
        with self._errors(f"describe_group({group!r})"):
            res = self._admin.list_consumer_group_offsets([req])[group].result(ADMIN_TIMEOUT_S)
        c = ck.Consumer({"bootstrap.servers": self.bootstrap_servers,
                         "group.id": "pylog-describe"})
        parts = []
        try:
            for tp in res.topic_partitions or []:
                if tp.offset < 0:
                    continue
                with self._errors(f"describe_group({group!r})"):
                    _, end = c.get_watermark_offsets(ck.TopicPartition(tp.topic, tp.partition),
                                                 timeout=ADMIN_TIMEOUT_S)
                parts.append({"topic": tp.topic, "partition": tp.partition,
                              "committed": tp.offset, "end_offset": end,
                              "lag": max(0, end - tp.offset)})
        finally:
            c.close()
        return {"group": group, "members": [], "partitions": parts,
                "lag": sum(p["lag"] for p in parts)}

    def share_consumer(self, *args: Any, **kwargs: Any) -> Any:
        raise NotSupportedOnKafka("share groups (work queues) need a broker with KIP-932 "
                                  "and are not mapped by pylog.kafka; use a consumer group")

    def __getattr__(self, name: str) -> Any:
        # (only names not found the normal way land here)
        raise no_attribute(self, name, LOG_INSTEAD)

    def close(self) -> None:
        """Close the producers (they flush first) and the consumers (they
        commit what they finished, with auto-commit) made here, as a local
        Log's close does; later calls raise LogClosed. Idempotent; the first
        error of a client's close is raised once all are closed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            clients = sorted(self._clients, key=lambda c: isinstance(c, KafkaConsumer))
        error: PylogError | None = None
        for client in clients:
            try:
                client.close()
            except PylogError as exc:
                error = error or exc
        if error is not None:
            raise error

    def __enter__(self) -> KafkaLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_URL = re.compile(r"kafka://([^\s,:/]+:\d{1,5}(?:,[^\s,:/]+:\d{1,5})*)/?\Z")

#: pylog.open's sync modes and the producer acks they become on Kafka.
SYNC_ACKS = {"always": "all", "interval": "1", "never": "1"}


def open_kafka(url: str, *, sync: str = "always", readonly: bool = False,
               local_only: list[str] | None = None) -> KafkaLog:
    """The KafkaLog for ``kafka://host:port[,host:port]``. ``sync``
    becomes the producers' ``acks`` (SYNC_ACKS); ``local_only`` names
    pylog.open options set to something else than their default, which
    have no meaning on Kafka: NotSupportedOnKafka."""
    m = _URL.match(url)
    if m is None:
        raise InvalidArgument(f"open {url!r}: expected kafka://host:port[,host:port...]")
    if sync not in SYNC_ACKS:
        raise InvalidArgument(f"open {url!r}: sync={sync!r}; expected one of "
                              f"{', '.join(SYNC_ACKS)}")
    if local_only:
        raise NotSupportedOnKafka(
            f"open {url!r}: {', '.join(sorted(local_only))} has no meaning on Kafka "
            "(durability there is acks and the cluster's replication)")
    return KafkaLog(m.group(1), acks=SYNC_ACKS[sync], readonly=readonly)
