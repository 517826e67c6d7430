"""The public entry point: :func:`open` and the :class:`Log` it returns.

``Log`` is the storage-level :class:`~pylog.store.LogStore` plus what is built
on it — producers, consumers and consumer-group administration — so that
imports keep pointing one way (storage never imports its clients).

Thread safety: a Log is thread-safe; see Producer and Consumer for theirs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, overload

from . import _native, shareconfig
from .accumulator import LingerProducer, check_linger, close_lingering
from .config import validate_group_id, validate_topic_name
from .consumer import Consumer
from .errors import GroupNotEmpty, InvalidArgument, not_transferable
from .expiry import DEFAULT_OFFSETS_RETENTION_MS
from .group import describe_group, reset_group
from .metrics import MetricsSnapshot
from .metrics import take as take_metrics
from .producer import Producer
from .records import TopicPartition
from .redrive import redrive
from .shareconsumer import ShareConsumer, validate_settings
from .shareops import ShareFiles, describe_share_groups, remove_files, share_group_live
from .store import DOORBELL_SLOTS, LogStore
from .transactions import DEFAULT_TRANSACTION_TIMEOUT_MS
from .txnproducer import IdempotentProducer, check_producer_args, close_transactional


class Unset:
    """The type of :data:`UNSET`."""


#: "not given", where None is a value (``alter_share_group``)
UNSET = Unset()
Serializer = Callable[[Any], bytes]
Deserializer = Callable[[bytes], Any]


class Log(LogStore):
    """An open log. Create with :func:`pylog.open`; use as a context manager."""

    _shares: ShareFiles | None = None

    # -- share groups (work queues) -----------------------------------------------
    def share_files(self) -> ShareFiles:
        """The share-partition state files this Log opened (pylog.shareops)."""
        with self._lock:
            if self._shares is not None and self._shares.pid != os.getpid():
                # forked: the parent's maps, locks and owner token stay its own
                self._shares = None
            if self._shares is None:
                self._shares = ShareFiles(self)
            return self._shares

    def _share_states_deleted(self, keys: list[bytes]) -> None:
        """A deleted topic's share states (TopicAdmin.delete_topic, under
        the Log's lock): their files go too (ShareFiles.forget)."""
        shares = self._shares
        if shares is not None and shares.pid == os.getpid():
            shares.forget(keys)
        else:
            remove_files(os.path.join(self.path, "meta", "share"), keys)

    def share_groups(self) -> list[dict[str, Any]]:
        """Every share-partition of every share group: SPSO, SPEO, records
        available / acquired (owner, lock end) / delayed / archived / lost to
        retention, the oldest unacknowledged record's age. A snapshot taken
        without locks (for monitoring: ``pylog queues``)."""
        self._check()
        return describe_share_groups(self)

    def metrics(self, since: MetricsSnapshot | None = None) -> MetricsSnapshot:
        """A snapshot of the log's metrics (:mod:`pylog.metrics`): per
        partition offsets, size, and the append, fetch and fsync counters
        of every process (FORMAT.rst P-10, P-11); per consumer group and
        partition committed offset, lag (partitions never committed counted
        from the group's ``auto_offset_reset``) and owner; per share group
        records available, acquired, delayed and archived.

        Rates (records appended and fetched, bytes appended, fsyncs per
        second) are computed against ``since``, an earlier snapshot of this
        log: the counters' difference over the monotonic time between the
        two; None without it. Thread-safe; reads only, without locks."""
        self._check()
        return take_metrics(self, since)

    def redrive(self, group: str, dead_letter_topic: str, *,
                execute: bool = False) -> list[dict[str, Any]]:
        """Dead letters of share group ``group`` in ``dead_letter_topic`` back
        to their topics (pylog.redrive): the plan, carried out only with
        ``execute=True``; each record is redriven once."""
        validate_group_id(group)
        validate_topic_name(dead_letter_topic)
        self._check()
        if execute:
            self._writable(f"redrive dead letters of {group!r}")
        return redrive(self, group, dead_letter_topic, execute=execute)

    def alter_share_group(self, group: str, *, record_lock_ms: int | None = None,
                          delivery_limit: int | None = None,
                          max_in_flight: int | None = None,
                          dead_letter_topic: str | None | Unset = UNSET) -> dict[str, Any]:
        """Change share group ``group``'s settings (FORMAT.rst Q-7; see
        :meth:`share_consumer`); None (``UNSET`` for ``dead_letter_topic``,
        where None removes it) keeps a setting. Refused with GroupNotEmpty
        while a consumer of the group holds a partition's records in a live
        process. Returns the new settings. Thread-safe; durable as the
        metadata's sync mode."""
        validate_group_id(group)
        validate_settings(record_lock_ms, delivery_limit, max_in_flight,
                          None if isinstance(dead_letter_topic, Unset) else dead_letter_topic)
        self._check()
        self._writable(f"alter share group {group!r}")
        live = share_group_live(self, group)
        if live:
            raise GroupNotEmpty(f"share group {group!r} has {live} live consumers; "
                                "close them first")
        changes: dict[str, Any] = {k: v for k, v in (
            ("record_lock_ms", record_lock_ms), ("delivery_limit", delivery_limit),
            ("max_in_flight", max_in_flight)) if v is not None}
        if not isinstance(dead_letter_topic, Unset):
            changes["dead_letter_topic"] = dead_letter_topic
        return shareconfig.alter(self.meta, group, changes)

    def checkpoint_commits(self) -> int:
        """C-5 and Q-3: committed offsets and share-partition state changed
        since the last checkpoint go to LMDB."""
        n = super().checkpoint_commits()
        shares = self._shares
        if shares is not None and shares.pid == os.getpid():   # (fork: the parent's)
            n += shares.checkpoint()
        return n

    def share_consumer(self, *topics: str, group_id: str, record_lock_ms: int | None = None,
                       delivery_limit: int | None = None, max_in_flight: int | None = None,
                       acknowledgement_mode: str = "explicit",
                       dead_letter_topic: str | None = None,
                       auto_offset_reset: str = "latest") -> ShareConsumer:
        """A member of share group ``group_id`` on ``topics``: a work queue
        (Kafka's share groups, KIP-932). Every share consumer of the group,
        in any thread or process, takes records from the same partitions;
        each record is held by one consumer at a time. Used by one thread
        at a time.

        The group's settings (FORMAT.rst Q-7; None: the group's, or the
        default for a new group; a value other than the group's raises
        ShareGroupConfigError; :meth:`alter_share_group` changes them):

        - ``record_lock_ms`` (30000): how long an acquired record stays
          with its consumer before it is Available again (renew extends it).
          A consumer whose process dies loses its records at once.
        - ``delivery_limit`` (5): a record delivered this many times and
          not accepted is Archived (dead-lettered).
        - ``max_in_flight`` (2000): the most records of a partition
          Available-for-redelivery or Acquired at once (delayed retries do
          not count).
        - ``dead_letter_topic`` (None): where Archived records are copied,
          exactly once, with ``_dlq.errors.*`` headers (origin, group,
          delivery count, reason).

        The consumer's own:

        - ``acknowledgement_mode`` ("explicit"): every record of a poll
          must be acknowledged before the next poll; "implicit": the next
          poll accepts what was not.
        - ``auto_offset_reset`` ("latest"): where a new share group starts:
          "latest" (new records only) or "earliest".

        Raises InvalidArgument for a bad value, ShareGroupConfigError,
        TopicNotFound, ReadOnlyLog on a read-only log."""
        self._check()
        return ShareConsumer(self, topics, group_id=group_id,
                             record_lock_ms=record_lock_ms,
                             delivery_limit=delivery_limit, max_in_flight=max_in_flight,
                             acknowledgement_mode=acknowledgement_mode,
                             dead_letter_topic=dead_letter_topic,
                             auto_offset_reset=auto_offset_reset)

    # -- groups ------------------------------------------------------------------
    def groups(self) -> list[str]:
        """Names of groups with members or committed offsets."""
        self._check()
        return sorted(self.meta.groups_with_offsets())

    def describe_group(self, group: str) -> dict[str, Any]:
        """Members, assignment, committed offsets and lag of ``group``."""
        validate_group_id(group)
        self._check()
        return describe_group(self, group)

    def reset_group(self, group: str, *, to: str, value: int | None = None,
                    topic: str | None = None,
                    execute: bool = True) -> dict[TopicPartition, int]:
        """Reset a group's committed offsets: ``to`` in earliest | latest |
        offset | datetime (value = offset or timestamp ms), on ``topic``'s
        partitions, else on those the group committed or subscribes to
        (pylog.group.plan_reset). Refused with GroupNotEmpty while the
        group has live members. Returns the plan {TopicPartition: new
        offset}; with ``execute=False`` nothing changes."""
        validate_group_id(group)
        if topic is not None:
            validate_topic_name(topic)
        self._check()
        if execute:
            self._writable(f"reset group {group!r}")
        return reset_group(self, group, to=to, value=value, topic=topic,
                           execute=execute)

    def __reduce__(self) -> Any:
        raise not_transferable(self)

    def __enter__(self) -> Log:
        # (LogStore's says LogStore: `with pylog.open(p) as log` is a Log to mypy)
        return self

    # -- clients ------------------------------------------------------------------
    # The overloads give a type checker the class each form returns (the
    # implementation's Producer is their common base).
    @overload
    def producer(self, *, key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None, transactional_id: str,
                 idempotent: bool = False,
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
                 ) -> IdempotentProducer: ...

    @overload
    def producer(self, *, key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None,
                 transactional_id: None = None, idempotent: Literal[True],
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
                 ) -> IdempotentProducer: ...

    @overload
    def producer(self, *, key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None, linger_ms: float = 0,
                 batch_bytes: int) -> LingerProducer: ...

    @overload
    def producer(self, *, key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None,
                 linger_ms: Literal[0]) -> Producer: ...

    @overload
    def producer(self, *, key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None,
                 linger_ms: float) -> LingerProducer: ...

    @overload
    def producer(self, *, key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None, linger_ms: float = 0,
                 batch_bytes: int | None = None, transactional_id: str | None = None,
                 idempotent: bool = False,
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
                 ) -> Producer: ...

    def producer(self, *, key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None, linger_ms: float = 0,
                 batch_bytes: int | None = None, transactional_id: str | None = None,
                 idempotent: bool = False,
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS) -> Producer:
        """A thread-safe producer (see :class:`pylog.producer.Producer`).

        ``key_serializer`` / ``value_serializer`` (default None: keys and
        values must be bytes or None): called on every non-None key / value
        before it is written; each must return bytes.

        ``linger_ms`` (0) / ``batch_bytes`` (None): with either set, the
        producer batches (Kafka's ``linger.ms`` / ``batch.size``, see
        :class:`pylog.accumulator.LingerProducer`): ``send`` returns a
        :class:`~pylog.FutureRecordMetadata` and the records of a partition
        go out as one batch when it reaches ``batch_bytes`` (default 16384
        with ``linger_ms``), ``linger_ms`` after its first record, on
        ``flush()`` or ``close()``. Records still lingering when the
        process dies are lost. Without them, ``send`` appends before it
        returns. (Type checkers see a ``linger_ms`` other than the literal
        0 as a LingerProducer: a variable that is 0 at run time gives a
        plain Producer, so narrow with ``isinstance`` there.)

        ``transactional_id`` (None) / ``idempotent`` (False): an
        :class:`~pylog.txnproducer.IdempotentProducer` (Kafka's
        ``transactional.id`` / ``enable.idempotence``): batches carry a
        producer id, epoch and sequence and a retried batch is stored once;
        with a ``transactional_id`` it has begin/commit/abort_transaction,
        ``transaction()`` and ``send_offsets_to_transaction``, and fences
        every older producer of the id (ProducerFencedError). A transaction
        open longer than ``transaction_timeout_ms`` (60000) is aborted by
        others. Not combined with ``linger_ms`` / ``batch_bytes``."""
        self._check()
        check_producer_args(transactional_id, idempotent, transaction_timeout_ms)
        linger_s, nbytes = check_linger(linger_ms, batch_bytes)
        if transactional_id is not None or idempotent:
            if nbytes is not None:
                raise InvalidArgument("an idempotent or transactional producer does "
                                      "not linger: drop linger_ms / batch_bytes")
            self._writable("producer")
            return IdempotentProducer(self, transactional_id=transactional_id,
                                      transaction_timeout_ms=transaction_timeout_ms,
                                      key_serializer=key_serializer,
                                      value_serializer=value_serializer)
        if nbytes is not None:
            return LingerProducer(self, linger_s=linger_s, batch_bytes=nbytes,
                                  key_serializer=key_serializer,
                                  value_serializer=value_serializer)
        return Producer(self, key_serializer=key_serializer,
                        value_serializer=value_serializer)

    def close(self) -> None:
        """Close the lingering producers of this Log (appending what they
        have pending) and its transactional ones (aborting their open
        transactions), then as LogStore.close (which checkpoints commits
        and share state), then the share-partition files. Idempotent.

        Last it rings every doorbell slot (L-3): consumers of this Log
        blocked in poll() in other threads look again and raise LogClosed
        at once, not when their timeout ends (a share consumer's poll has
        no other wake-up). Other processes' waiters look once more. A
        read-only Log changes no file, its doorbell's included: its
        consumers notice within a second (TOPIC_REFRESH_S)."""
        error = None
        bell = None
        if not self._closed:
            error = close_transactional(self)
            error = close_lingering(self) or error
            if os.getpid() == self._pid and not self.readonly:
                bell = self.doorbell()      # (closing drops the Log's reference)
        try:
            super().close()
        finally:
            # (in a fork child they are the parent's: its threads may hold
            # their locks, which nobody there releases; left to the exit)
            if self._shares is not None and self._shares.pid == os.getpid():
                self._shares.close()
            if bell is not None:
                for slot in range(DOORBELL_SLOTS):
                    _native.doorbell_ring(bell, slot)
        if error is not None:
            raise error

    def consumer(self, *topics: str, group_id: str | None = None,
                 pattern: str | None = None, auto_offset_reset: str = "latest",
                 enable_auto_commit: bool = True, auto_commit_interval_ms: int = 5000,
                 session_timeout_ms: int = 10000, max_poll_records: int = 500,
                 max_poll_interval_ms: int = 300_000,
                 consumer_timeout_ms: float | None = None,
                 partition_assignment_strategy: str = "sticky",
                 key_deserializer: Deserializer | None = None,
                 value_deserializer: Deserializer | None = None,
                 client_id: str | None = None, dead_letter_topic: str | None = None,
                 listener: object | None = None,
                 isolation_level: str = "read_uncommitted") -> Consumer:
        """A consumer subscribed to ``topics`` (or none, for assign() or a
        later subscribe()); used by one thread at a time.

        - ``group_id`` (None): join this consumer group, which shares the
          partitions among its members and stores committed offsets.
        - ``pattern`` (None): also subscribe to topics whose name matches
          this regex, including ones created later.
        - ``auto_offset_reset`` ("latest"): where to start without a
          committed offset, or after a position left the log: "earliest"
          (log start), "latest" (end: only records sent after the first
          poll; a topic or partition made after it is read from its start)
          or "none" (raise OffsetOutOfRange).
        - ``enable_auto_commit`` (True) and ``auto_commit_interval_ms``
          (5000): commit what the application finished every interval,
          on a rebalance and on close (pylog.delivery).
        - ``session_timeout_ms`` (10000, in [100, 86400000]): a member not
          heard from for this long is removed from its group (a thread of
          the log heartbeats for its members between their calls, as
          Kafka's heartbeat thread, until ``max_poll_interval_ms`` without
          a poll: pylog.heartbeat).
        - ``max_poll_records`` (500): the most records one poll returns.
        - ``max_poll_interval_ms`` (300000, as Kafka): a group member whose
          application does not call poll() for this long leaves its group
          at its next call (its partitions go to the others, its commits
          raise CommitFailedError, the listener's lost callback runs) and
          rejoins; the time a poll blocks does not count.
        - ``consumer_timeout_ms`` (None): ``for record in consumer`` ends
          after this many milliseconds without a record; None: never
          (until close()).
        - ``partition_assignment_strategy`` ("sticky"): "sticky", "range"
          or "roundrobin".
        - ``key_deserializer`` / ``value_deserializer`` (None): called on
          every non-None stored key / value.
        - ``client_id`` (None): shown in describe_group.
        - ``dead_letter_topic`` (None): where records a deserializer
          refuses go instead of raising DeserializationError.
        - ``listener`` (None): a rebalance listener for the subscription
          (see Consumer.subscribe).
        - ``isolation_level`` ("read_uncommitted", Kafka's default):
          "read_committed" returns only records of committed transactions
          (and records sent outside transactions), stopping at the last
          stable offset (the first offset of a transaction still open);
          "read_uncommitted" returns every record as soon as it is in the
          log, aborted transactions' included. COMMIT/ABORT markers are
          never returned (their offsets are skipped, as in Kafka).

        Raises InvalidArgument for a value out of range, ReadOnlyLog for a
        group on a read-only log; TypeError names an unknown argument."""
        self._check()
        return Consumer(self, *topics, group_id=group_id, pattern=pattern,
                        auto_offset_reset=auto_offset_reset,
                        enable_auto_commit=enable_auto_commit,
                        auto_commit_interval_ms=auto_commit_interval_ms,
                        session_timeout_ms=session_timeout_ms,
                        max_poll_records=max_poll_records,
                        max_poll_interval_ms=max_poll_interval_ms,
                        consumer_timeout_ms=consumer_timeout_ms,
                        partition_assignment_strategy=partition_assignment_strategy,
                        key_deserializer=key_deserializer,
                        value_deserializer=value_deserializer,
                        client_id=client_id, dead_letter_topic=dead_letter_topic,
                        listener=listener, isolation_level=isolation_level)


def open(path: str | os.PathLike[str], *, sync: str = "always", readonly: bool = False,
         sync_interval_ms: int = 1000, allow_network_filesystem: bool = False,
         metadata_timeout: float = 10.0, max_open_files: int | None = None,
         offsets_retention_ms: int = DEFAULT_OFFSETS_RETENTION_MS,
         max_open_maps: int | None = None) -> Log:
    """Open (creating if missing, unless ``readonly``) the log at ``path``.

    ``sync``: ``"always"`` (default) — send() returns after fdatasync of the
    data; survives process crash and power loss. ``"interval"`` — a
    background flush every ``sync_interval_ms``; survives a process crash,
    a power loss may lose the last interval. ``"never"`` — the OS writes back
    when it likes; survives a process crash only. ``sync_interval_ms``
    (1000, in [1, 3600000]): the period of ``"interval"``'s flush and, in
    every mode, of the copy of committed offsets into LMDB.

    ``readonly`` (False): open an existing log for reading only (LogNotFound
    when there is none); writes raise ReadOnlyLog. LMDB still needs write
    access to ``meta/lock.mdb``. ``allow_network_filesystem`` (False): a log
    on NFS or SMB is refused (their locks and mmap are not what pylog needs)
    unless this is True.

    ``metadata_timeout``: how long (seconds) a metadata write — a commit, a
    group change, topic administration — waits for another process's
    metadata transaction before it raises MetadataBusyError naming that
    process (FORMAT.rst L-7). Appends and fetches never wait for one.

    ``max_open_files``: the most file descriptors the Log keeps open for
    segments, however many topics, partitions and segments it has (like
    RocksDB's option of that name); the least recently used idle segment is
    closed past it and reopened on its next use. Default (None): half the
    process's ``ulimit -n`` less 32, at least 64 and at most 4096 (96 at
    ``ulimit -n 256``). At least 8. A partition holds no descriptor while
    none of its segments is open.
    ``offsets_retention_ms``: how long (default 7 days, Kafka's
    ``offsets.retention.minutes``) a consumer group with no live member
    keeps its committed offsets after its last commit and its last
    member's last heartbeat; then a writable Log deletes them and the
    group (FORMAT.rst M-12), checking at open and once a minute. -1 keeps
    them forever.

    ``max_open_maps``: the most memory maps the Log keeps (one per open
    segment, one per partition state it has open), however many partitions
    it has: the least recently used idle one is unmapped past it and mapped
    again on its next use. Default (None): a quarter of the system's
    ``vm.max_map_count`` (a process may hold that many maps, 65,530 by
    default), at least 64 and at most 16,384. At least 8.

    ``path`` ``"kafka://host:port[,host:port]"``: a :class:`pylog.kafka.KafkaLog`,
    the same topic, producer and consumer methods on that Kafka cluster;
    ``sync`` becomes the producers' ``acks`` and ``readonly`` refuses
    writes, the other options have no meaning there and raise.
    """
    if isinstance(path, str) and path.startswith("kafka://"):
        from .kafka import open_kafka
        local_only = [name for name, value, default in (
            ("sync_interval_ms", sync_interval_ms, 1000),
            ("allow_network_filesystem", allow_network_filesystem, False),
            ("metadata_timeout", metadata_timeout, 10.0),
            ("max_open_files", max_open_files, None),
            ("max_open_maps", max_open_maps, None),
            ("offsets_retention_ms", offsets_retention_ms, DEFAULT_OFFSETS_RETENTION_MS))
            if value != default]
        return open_kafka(path, sync=sync, readonly=readonly,  # type: ignore[return-value]
                          local_only=local_only)
    return Log(path, sync=sync, readonly=readonly,
               sync_interval_ms=sync_interval_ms,
               allow_network_filesystem=allow_network_filesystem,
               metadata_timeout=metadata_timeout, max_open_files=max_open_files,
               offsets_retention_ms=offsets_retention_ms,
               max_open_maps=max_open_maps)
