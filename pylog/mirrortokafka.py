"""pylog -> Kafka: the outbound half of :class:`pylog.mirror.Mirror`.

A pylog consumer group (the mirror's ``group_id``) reads the topics; a
confluent-kafka producer with ``enable.idempotence`` and no delivery
timeout writes them. While the broker is away librdkafka keeps retrying
what it holds, in order and without duplicates (idempotence). The group's
committed offset of a partition moves only to the end of the records Kafka
acknowledged without a gap, so ``pylog groups`` shows how far behind Kafka
is. A record is in flight from its produce() until that commit covers it;
once ``max_in_flight`` records are, the mirror stops reading the log (the
rest waits there) and only collects acknowledgements and commits them. A
mirror killed at any instant therefore resends at most ``max_in_flight``
records (at least once).

A delivery that fails anyway (a fatal idempotence error, a topic deleted)
rewinds: the producer's queue is purged, every partition is sought back to
its first unacknowledged offset and sent again after a backoff.

Partitions: a record goes to the Kafka partition of the same number when
the Kafka topic has as many partitions as the local one (it is created so
when missing); otherwise a keyed record goes where Kafka's default
partitioner puts its key (murmur2) and a keyless one to its local
partition modulo the Kafka count (which keeps its partition's order).

Transactions: the group reads ``read_committed``, as a Kafka consumer
would: an aborted transaction's records are never sent, and a
transaction's records go once it committed (its partitions wait at their
last stable offset meanwhile). A partition with nothing in flight commits
the consumer's position, past transaction markers and aborted records
that were never sent, so ``pylog groups`` shows lag 0 once caught up.

Retention: records the local log deleted before they were sent are counted
(``MirrorStats.skipped_by_retention``) and reported by partition.

Thread safety: used by the one thread that runs the Mirror.
"""

from __future__ import annotations

import collections
import functools
import re
import time
from typing import TYPE_CHECKING, Any

from ._native import partition_for_key
from .errors import CommitFailedError, InvalidArgument
from .mirrorstats import KAFKA_LOGGER, Backoff, MirrorError, MirrorStats, RateLimitedReport, Report
from .records import TopicPartition

if TYPE_CHECKING:
    from .consumer import Consumer
    from .log import Log

#: How often acknowledged offsets are committed to the local group.
COMMIT_INTERVAL_S = 0.2
#: Records sent to Kafka and not yet acknowledged and committed, by
#: default: what a kill can resend. 10,000 records of 100 bytes are 1 MB,
#: a few round trips of the idempotent producer's 5 requests in flight.
MAX_IN_FLIGHT_DEFAULT = 10_000
MAX_IN_FLIGHT_MAX = 10_000_000
POLL_RECORDS_MAX = 2000
ADMIN_TIMEOUT_S = 10.0
#: A metadata request's wait: short, so stop() is seen while the cluster is away.
METADATA_TIMEOUT_S = 2.0
#: Metadata requests (0.1 s apart) for a topic just created to show up.
CREATED_WAIT_TRIES = 50
#: After a record the client refused (the producer itself is sound), the
#: wait for the records in flight before the rewind drops what is left.
REFUSED_FLUSH_S = 10.0

PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    # 0: never give up on a record while the broker is away; order and
    # no-duplicates then come from idempotence, not from rewinding
    "message.timeout.ms": 0,
    "linger.ms": 5,
    "batch.num.messages": 10_000,
    "queue.buffering.max.kbytes": 65_536,
    "reconnect.backoff.ms": 100,
    "reconnect.backoff.max.ms": 2000,
    "retry.backoff.ms": 100,
    "retry.backoff.max.ms": 2000,
}


class _Acks:
    """The offsets of one local partition sent and not yet acknowledged, in
    the order they were sent (increasing)."""

    __slots__ = ("tp", "same_partitions", "kafka_partitions", "pending", "done",
                 "last_sent", "next_commit")

    def __init__(self, tp: TopicPartition, local_partitions: int,
                 kafka_partitions: int) -> None:
        self.tp = tp
        self.same_partitions = local_partitions == kafka_partitions
        self.kafka_partitions = kafka_partitions
        self.pending: collections.deque[int] = collections.deque()
        self.done: set[int] = set()
        self.last_sent = -1
        self.next_commit: int | None = None   # acknowledged below this, not committed yet

    def sent(self, offset: int) -> None:
        self.pending.append(offset)
        self.last_sent = offset

    def acked(self, offset: int) -> int:
        """Mark ``offset`` acknowledged; return how many offsets it made
        contiguous with the acknowledged prefix (0 while an earlier one is
        still out)."""
        pending = self.pending
        if not pending or pending[0] != offset:
            self.done.add(offset)
            return 0
        pending.popleft()
        n = 1
        while pending and pending[0] in self.done:
            self.done.discard(pending.popleft())
            n += 1
        self.next_commit = pending[0] if pending else self.last_sent + 1
        return n


def producer_config(bootstrap_servers: str, max_in_flight: int,
                    kafka_config: dict[str, Any], **ours: Any) -> dict[str, Any]:
    """The settings of the mirror's Kafka producer (``ours``: callbacks;
    the user's ``kafka_config`` last, so that it may override any)."""
    # librdkafka's own queue never holds more than the mirror lets out
    return {"bootstrap.servers": bootstrap_servers, **PRODUCER_CONFIG,
            "queue.buffering.max.messages": max_in_flight, "logger": KAFKA_LOGGER,
            **ours, **kafka_config}


def admin_config(bootstrap_servers: str, kafka_config: dict[str, Any]) -> dict[str, Any]:
    """The settings of the admin client that creates topics: the
    connection's only."""
    return {"bootstrap.servers": bootstrap_servers, "logger": KAFKA_LOGGER,
            **{k: v for k, v in kafka_config.items()
               if k.startswith(("security.", "sasl.", "ssl."))}}


def _client(ck: Any, make: Any, config: dict[str, Any]) -> Any:
    """``make(config)``; InvalidArgument for settings the client refuses."""
    try:
        return make(config)
    except ck.KafkaException as exc:
        raise InvalidArgument(f"mirror: the Kafka client refused its settings: "
                              f"{exc.args[0].str() if exc.args else exc}") from None


def check_settings(ck: Any, bootstrap_servers: str, kafka_config: dict[str, Any],
                   max_in_flight: int) -> None:
    """InvalidArgument for settings the Kafka clients refuse, checked with
    probe clients dropped at once (they send nothing) before the mirror
    opens its log: a refused mirror creates nothing on disk."""
    _client(ck, ck.Producer, producer_config(bootstrap_servers, max_in_flight,
                                              kafka_config))
    _client(ck, ck.admin.AdminClient, admin_config(bootstrap_servers, kafka_config))


class ToKafka:
    """The outbound loop; see the module docstring."""

    def __init__(self, ck: Any, log: Log, bootstrap_servers: str, pattern: str,
                 group_id: str, kafka_config: dict[str, Any], stats: MirrorStats,
                 report: Report, max_in_flight: int = MAX_IN_FLIGHT_DEFAULT) -> None:
        self._ck = ck
        self._log = log
        self._stats = stats
        self._report = report
        self._limited = RateLimitedReport(report)
        self._max_in_flight = max_in_flight
        # acknowledged (contiguously) and not committed yet: part of
        # stats.in_flight, which a commit lowers by this much
        self._acked_uncommitted = 0
        self._config = producer_config(bootstrap_servers, max_in_flight, kafka_config,
                                       error_cb=self._on_error)
        self._admin = _client(ck, ck.admin.AdminClient,
                              admin_config(bootstrap_servers, kafka_config))
        self._consumer: Consumer = log.consumer(
            group_id=group_id, pattern=pattern, auto_offset_reset="earliest",
            enable_auto_commit=False, client_id="pylog-mirror",
            max_poll_records=POLL_RECORDS_MAX,
            # an aborted (or not yet committed) transaction's records must
            # not reach Kafka, where every consumer would take them as real
            isolation_level="read_committed")
        self._group_id = group_id
        self._pattern = re.compile(pattern)
        # the offsets this mirror last committed, so an idle partition's
        # position is committed once, not every COMMIT_INTERVAL_S
        self._committed: dict[TopicPartition, int] = {}
        # False once a poll's records were not all handed to the producer
        # (a produce raised or stopped midway), until the rewind seeks back:
        # the consumer's positions are past records never sent, and must
        # not be committed (a later poll's records going out changes that)
        self._sent_all = True
        self._producer = _client(ck, ck.Producer, self._config)
        self._generation = 0
        self._acks: dict[TopicPartition, _Acks] = {}
        self._by_place: dict[tuple[str, int], _Acks] = {}    # the same, by (topic, partition)
        self._failure: str | None = None
        # the failure is a record the client refused, not the producer's:
        # what is in flight is still delivered before a rewind, until then
        self._refusal = False
        self._refused_until = 0.0
        self._routes: dict[str, tuple[int, int]] = {}   # topic -> (local, kafka) partitions
        self._committed_at = time.monotonic()
        self._skipped_seen = self._skipped_now()
        self._backoff = Backoff()
        if not any(self._pattern.fullmatch(t) for t in log.topics()):
            # a mistyped pattern would otherwise only show as 0 records
            report(f"no local topic matches {pattern!r} yet (topics created later "
                   "that match are mirrored)")

    # -- callbacks (called from producer.poll/flush in this thread) -------------
    def _on_error(self, err: Any) -> None:
        self._stats.errors += 1
        if err.fatal():
            self._failure = f"kafka producer: fatal error: {err.str()}"
        else:
            self._limited(f"kafka: {err.str()} (retrying)", time.monotonic())

    def _delivered(self, generation: int, acks: _Acks, offset: int,
                   err: Any, msg: Any) -> None:
        if generation != self._generation:
            return      # purged by a rewind: it will be sent again
        if err is not None:
            if self._failure is None:
                self._failure = (f"delivery of {acks.tp.topic}-{acks.tp.partition}@{offset} "
                                 f"failed: {err.str()}")
            return
        n = acks.acked(offset)
        self._stats.records += n
        self._acked_uncommitted += n

    # -- the loop --------------------------------------------------------------
    def step(self, timeout: float) -> bool:
        """Move records for up to about ``timeout`` seconds; True when every
        record of every mirrored partition is acknowledged (caught up)."""
        if self._failure is not None:
            if self._refusal and len(self._producer) and \
                    time.monotonic() < self._refused_until:
                # a step at a time, so that run()'s timeout and stop() hold
                self._producer.flush(timeout)
                return False
            self._rewind()
            return False
        if not self._routes_ready():
            return False
        room = self._max_in_flight - self._stats.in_flight
        if room <= 0:
            return self._wait_for_room(timeout)
        records = self._consumer.poll(timeout=timeout,
                                      max_records=min(room, POLL_RECORDS_MAX))
        try:
            if not self._send(records):
                return False
            self._producer.poll(0)
            now = time.monotonic()
            caught_up = not records and self._all_acked()
        except self._ck.KafkaException as exc:
            self._producer_failed(exc)
            return False
        if caught_up or now - self._committed_at >= COMMIT_INTERVAL_S \
                or 2 * self._acked_uncommitted >= self._max_in_flight:
            self._commit()
            self._committed_at = now
            caught_up = caught_up and self._at_end()
        return caught_up

    def _wait_for_room(self, timeout: float) -> bool:
        """With max_in_flight records in flight: read nothing, wait up to
        ``timeout`` for acknowledgements and commit those (which makes
        room). Returns False (not caught up)."""
        try:
            self._producer.poll(timeout)
        except self._ck.KafkaException as exc:
            self._producer_failed(exc)
            return False
        if self._acked_uncommitted:
            self._commit()
            self._committed_at = time.monotonic()
        return False

    def _producer_failed(self, exc: Exception) -> None:
        """librdkafka raises a fatal idempotence error (the broker lost its
        producer state, ...) from produce/poll: rewind; anything else is
        MirrorError."""
        err = exc.args[0]
        if not err.fatal():
            # (a run() after this one rewinds first: the poll's records
            # after the failed one were never sent)
            self._refused(f"produce to Kafka: {err.str()}")
            raise MirrorError(f"produce to Kafka: {err.str()}") from None
        self._failure = f"kafka producer: fatal error: {err.str()}"

    def _send(self, records: list[Any]) -> bool:
        """Hand ``records`` to the producer; False when a failure stopped
        it midway (the rewind sends the rest)."""
        handed = 0
        try:
            handed = self._hand(records)
        finally:
            if handed < len(records):
                self._sent_all = False      # (until the rewind)
                if self._failure is None:   # (an error raised out: the next step rewinds)
                    self._failure = f"a send stopped after {handed} of {len(records)} records"
        return handed == len(records)

    def _hand(self, records: list[Any]) -> int:
        """_send's loop: how many of ``records`` went to the producer
        (raises MirrorError, or a fatal KafkaException, midway)."""
        produce = self._producer.produce
        poll = self._producer.poll
        by_place = self._by_place
        delivered = self._delivered
        generation = self._generation
        for i, r in enumerate(records):
            acks = by_place.get((r.topic, r.partition))
            if acks is None:
                acks = self._track(r.topic, r.partition)
                if acks is None:
                    return i
            if acks.same_partitions:
                kp = r.partition
            elif r.key is not None:
                kp = partition_for_key(r.key, acks.kafka_partitions)
            else:
                kp = r.partition % acks.kafka_partitions
            acks.sent(r.offset)
            self._stats.in_flight += 1
            cb = functools.partial(delivered, generation, acks, r.offset)
            while True:
                try:
                    produce(r.topic, r.value, r.key, partition=kp,
                            headers=list(r.headers) if r.headers else None,
                            timestamp=r.timestamp_ms, on_delivery=cb)
                    break
                except BufferError:
                    # the queue is full (the broker is slow or away): wait
                    # for deliveries; the rest stays in the local log
                    poll(0.1)
                    if self._failure is not None:
                        return i
                except self._ck.KafkaException as exc:
                    self._refused_record(exc, r)
        return len(records)

    def _refused(self, why: str) -> None:
        """A record was refused (the producer is sound): the next steps
        wait up to REFUSED_FLUSH_S for what is in flight, then rewind."""
        self._failure, self._refusal = why, True
        self._refused_until = time.monotonic() + REFUSED_FLUSH_S

    def _refused_record(self, exc: Any, r: Any) -> None:
        """produce() refused record ``r``: a fatal error is raised on (the
        step rewinds); anything else stops the mirror with MirrorError
        naming the record and what to change. It was not sent, so the
        group's offset stays before it and the next run starts there."""
        err = exc.args[0]
        if err.fatal():
            raise exc
        # a run() after this one rewinds first (to this record): the poll's
        # records after it were never sent either
        self._refused(f"{r.topic}-{r.partition} offset {r.offset} refused: {err.str()}")
        hint = ""
        if err.code() == self._ck.KafkaError.MSG_SIZE_TOO_LARGE:
            hint = ("; raise the Kafka client's limit (-X message.max.bytes=N, "
                    "kafka_config) and the Kafka topic's max.message.bytes, and run "
                    "the mirror again, which goes on from this record")
        raise MirrorError(f"mirror: {r.topic}-{r.partition} offset {r.offset} "
                          f"({len(r.value or b'')} bytes) cannot be produced to Kafka: "
                          f"{err.str()}{hint}") from None

    def _all_acked(self) -> bool:
        self._producer.poll(0)
        return len(self._producer) == 0 and all(not a.pending for a in self._acks.values())

    def _at_end(self) -> bool:
        lag = self._consumer.lag()
        if not lag:
            # nothing assigned: caught up when no local topic matches (as
            # from Kafka), else the group has not assigned them yet
            return not any(self._pattern.fullmatch(t) for t in self._log.topics())
        return not any(lag.values())

    def _track(self, topic: str, partition: int) -> _Acks | None:
        """The _Acks of a local partition seen for the first time, or None
        when its Kafka topic cannot be made sure of now (failure set)."""
        route = self._route(topic)
        if route is None:
            self._failure = f"kafka: no metadata for topic {topic!r}"
            return None
        tp = TopicPartition(topic, partition)
        acks = self._acks[tp] = self._by_place[(topic, partition)] = _Acks(tp, *route)
        return acks

    def _routes_ready(self) -> bool:
        """Whether every assigned topic's Kafka topic is known (made sure
        of before reading, so an outage at start or a new topic waits
        here, with the records in the local log)."""
        return all(self._route(t) is not None
                   for t in {tp.topic for tp in self._consumer.assignment()})

    def _route(self, topic: str) -> tuple[int, int] | None:
        route = self._routes.get(topic)
        if route is None:
            route = self._ensure_topic(topic)
            if route is not None:
                self._routes[topic] = route
                self._backoff.reset()
            else:
                time.sleep(self._backoff.next_s())
        return route

    def _ensure_topic(self, topic: str) -> tuple[int, int] | None:
        """(local, Kafka) partition counts of ``topic``, creating the Kafka
        topic with the local count when it is missing; None (reported)
        when the cluster does not answer."""
        local_n = self._log.describe_topic(topic).partitions
        try:
            kafka_n = self._kafka_partitions(topic)
            if kafka_n:
                return local_n, kafka_n
            fut = self._admin.create_topics(
                [self._ck.admin.NewTopic(topic, num_partitions=local_n,
                                         replication_factor=-1)])[topic]
            try:
                fut.result(ADMIN_TIMEOUT_S)
            except self._ck.KafkaException as exc:
                code = exc.args[0].code()
                if code in (self._ck.KafkaError.INVALID_REPLICATION_FACTOR,
                            self._ck.KafkaError.POLICY_VIOLATION,
                            self._ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
                            self._ck.KafkaError.INVALID_PARTITIONS):
                    raise MirrorError(f"create Kafka topic {topic!r}: "
                                      f"{exc.args[0].str()}; create it by hand") from None
                if code != self._ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
            else:
                self._report(f"created Kafka topic {topic!r} with {local_n} partitions")
            for _ in range(CREATED_WAIT_TRIES):     # until the metadata shows it
                kafka_n = self._kafka_partitions(topic)
                if kafka_n:
                    return local_n, kafka_n
                time.sleep(0.1)
            return None
        except self._ck.KafkaException as exc:
            self._limited(f"kafka: metadata of {topic!r}: {exc.args[0].str()}; retrying",
                          time.monotonic())
            return None

    def _kafka_partitions(self, topic: str) -> int:
        """Partitions of the Kafka topic (0: none such). Asks for all
        topics: a metadata request naming the topic would make a broker
        with auto.create.topics.enable create it (with num.partitions, not
        the local count)."""
        t = self._admin.list_topics(timeout=METADATA_TIMEOUT_S).topics.get(topic)
        return len(t.partitions) if t is not None and t.error is None else 0

    def _commit(self) -> None:
        """Commit each partition's acknowledged offset to the local group,
        and report what retention deleted before it was read."""
        offsets = {tp: a.next_commit for tp, a in self._acks.items()
                   if a.next_commit is not None}
        if self._failure is None and self._sent_all:
            offsets.update(self._idle_positions())
        if offsets:
            try:
                self._consumer.commit(offsets)
            except CommitFailedError as exc:
                # the group gave partitions to another member (this one was
                # stopped past its session timeout, or a second mirror
                # joined): read again from the committed offsets
                if self._failure is None:
                    self._failure = f"commit to local group {self._group_id!r} refused: {exc}"
                return
            self._backoff.reset()      # deliveries go through again
            self._committed.update(offsets)
            self._stats.in_flight -= self._acked_uncommitted
            self._acked_uncommitted = 0
            for a in self._acks.values():
                a.next_commit = None
        skipped = self._skipped_now()
        for tp, n in skipped.items():
            before = self._skipped_seen.get(tp, 0)
            if n > before:
                self._stats.skipped_by_retention += n - before
                self._report(f"retention deleted {n - before} records of "
                             f"{tp.topic}-{tp.partition} before they were sent to Kafka")
        self._skipped_seen = skipped

    def _idle_positions(self) -> dict[TopicPartition, int]:
        """The consumer's position of each assigned partition with nothing
        in flight, where it moved since the last commit: every offset below
        it was sent and acknowledged, or is a transaction marker or an
        aborted record (read_committed skips them), so the group's lag
        reaches 0 instead of stopping at the last record sent. Only called
        when every polled record was handed to the producer."""
        out = {}
        for tp in self._consumer.assignment():
            acks = self._acks.get(tp)
            if acks is not None and acks.pending:
                continue
            pos = self._consumer.position(tp)
            if self._committed.get(tp) != pos:
                out[tp] = pos
        return out

    def _skipped_now(self) -> dict[TopicPartition, int]:
        desc = self._log.describe_group(self._group_id) \
            if self._group_id in self._log.groups() else {"partitions": []}
        return {TopicPartition(p["topic"], p["partition"]): p["records_skipped_by_retention"]
                for p in desc["partitions"]}

    def _rewind(self) -> None:
        """After a failed delivery: drop what the producer holds, commit
        what was acknowledged, and read every partition again from its
        committed offset (a step may have stopped midway through a poll's
        records, so partitions with nothing in flight are sought too).
        After a refused record the steps before waited for what was in
        flight (step)."""
        why = self._failure
        self._stats.rewinds += 1
        self._refusal = False
        self._generation += 1
        self._producer.purge()
        self._producer.flush(0)
        self._producer = self._ck.Producer(self._config)
        self._commit()
        self._acks.clear()
        self._by_place.clear()
        self._stats.in_flight = self._acked_uncommitted = 0    # read again below
        self._sent_all = True       # the seeks below drop what was not sent
        for tp in self._consumer.assignment():
            committed = self._consumer.committed(tp)
            if not isinstance(committed, int):
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
        self._failure = None
        wait = self._backoff.next_s()
        self._report(f"{why}; resending from the last acknowledged offsets in {wait:.1f}s")
        time.sleep(wait)

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for what is in flight, commit
        what was acknowledged, close both clients."""
        try:
            if self._failure is None or self._refusal:
                waiting = len(self._producer)
                if waiting:
                    # (a silent wait of up to `timeout` looks like a hang)
                    self._report(f"waiting up to {timeout:g} s for {waiting} records "
                                 "in flight to Kafka (the rest are sent at the next run)")
                try:
                    self._producer.flush(timeout)
                except self._ck.KafkaException:
                    pass        # a fatal error: what was not acknowledged is resent
            self._commit()
        finally:
            self._consumer.close(autocommit=False)
