"""Cluster-style administration of a log with kafka-python's names
(KafkaAdminClient): list topics and consumer groups, delete a group,
delete records (truncate a partition's start).

:class:`LogAdmin` is a base of :class:`pylog.store.LogStore` and works on
its state (``path``, ``meta``, ``metadata_timeout``, ``partition()``...),
as :class:`pylog.topicadmin.TopicAdmin` does.

Names of KafkaAdminClient that pylog does not offer raise AttributeError
saying what to use instead (``create_topics`` -> ``create_topic``).

Thread safety: every method is thread-safe, and safe against other
processes using the log: a group delete is one LMDB write transaction
(checked and applied together), a record delete holds the partition's
append lock (P-3) while it moves the log start. Durability: see each
method.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Callable, Protocol

from . import groupstate as gs
from .config import validate_group_id
from .errors import (
    GroupNotEmpty,
    GroupNotFound,
    InvalidArgument,
    MetadataBusyError,
    OffsetOutOfRange,
    PylogError,
    kafka_name_error,
)
from .groupstate import GroupState, Member
from .liveness import process_alive
from .records import TopicPartition
from .retention import delete_records_locked

# kafka-python's answer for a consumer group (every pylog group is one)
CONSUMER_PROTOCOL_TYPE = "consumer"
# how long delete_records sleeps between tries while another process holds
# the metadata writer lock (it never waits for it holding the append lock)
_BUSY_RETRY_S = 0.01

# KafkaAdminClient names without a pylog method of the same name: what to
# use instead (raised as AttributeError by LogAdmin.__getattr__).
KAFKA_ADMIN_INSTEAD: dict[str, str] = {
    "create_topics": "create_topic(name, partitions, **config), one topic "
                     "per call (no NewTopic objects, no replication factor)",
    "delete_topics": "delete_topic(name), one topic per call",
    "describe_topics": "describe_topic(name), one topic per call",
    "describe_configs": "describe_topic(name).config",
    "alter_configs": "alter_topic(name, **config)",
    "describe_consumer_groups": "describe_group(group_id), one group per call",
    "list_consumer_group_offsets": "describe_group(group_id)['partitions'] "
                                   "(each with its 'committed' offset)",
    "delete_consumer_group_offsets": "reset_group(group_id, to=...) or "
                                     "delete_group(group_id)",
    "describe_cluster": "nothing: a log is one directory, there is no cluster",
    "describe_acls": "file permissions: a log has no ACLs",
    "create_acls": "file permissions: a log has no ACLs",
    "delete_acls": "file permissions: a log has no ACLs",
    "perform_leader_election": "nothing: a log has no replicas or leaders",
    "alter_partition_reassignments": "nothing: a log has no replicas",
    "list_partition_reassignments": "nothing: a log has no replicas",
    # kafka-python 3's names of the group calls
    "list_groups": "list_consumer_groups()",
    "describe_groups": "describe_group(group_id), one group per call",
    "delete_groups": "delete_consumer_groups(group_ids)",
    "list_group_offsets": "describe_group(group_id)['partitions'] (each with its "
                          "'committed' offset)",
    "reset_group_offsets": "reset_group(group_id, to=...)",
    "alter_group_offsets": "reset_group(group_id, to='offset', value=..., topic=...)",
    "delete_group_offsets": "reset_group(group_id, to=...) or delete_group(group_id)",
}


class _Store(Protocol):
    """What LogAdmin uses of the LogStore it is a base of."""
    path: str
    meta: Any
    metadata_timeout: float

    def _check(self) -> None: ...
    def _writable(self, what: str) -> None: ...
    def topics(self) -> list[str]: ...
    def partition(self, topic: str, p: int) -> Any: ...
    def delete_group(self, group: str) -> None: ...


def _refuse_live(action: str, group: str, now_ms: Callable[[], int],
                 is_alive: Callable[[Member], bool]) -> Callable[[GroupState], None]:
    def check(state: GroupState) -> None:
        alive = gs.live(state, now_ms(), is_alive)
        if alive:
            raise GroupNotEmpty(
                f"{action} of group {group!r} refused: it has {len(alive)} live "
                f"member(s) ({', '.join(sorted(alive))}); close their consumers "
                "first (a crashed member counts until its session times out)")
    return check


def _now_ms() -> int:
    return int(time.time() * 1000)


class LogAdmin:
    """KafkaAdminClient-style administration; see the module docstring."""

    def list_topics(self: _Store) -> list[str]:
        """Names of the topics, sorted (kafka-python's
        ``KafkaAdminClient.list_topics``; the same as :meth:`topics`).
        Thread-safe; reads committed metadata only."""
        return self.topics()

    def list_consumer_groups(self: _Store) -> list[tuple[str, str]]:
        """``[(group_id, "consumer"), ...]`` sorted by group id, as
        kafka-python's ``KafkaAdminClient.list_consumer_groups`` returns
        (group id, protocol type): every pylog group is a consumer group.
        Lists groups with members or committed offsets (the names of
        ``Log.groups()``). Thread-safe; reads committed metadata only."""
        self._check()
        return [(g, CONSUMER_PROTOCOL_TYPE)
                for g in sorted(self.meta.groups_with_offsets())]

    def delete_group(self: _Store, group: str) -> None:
        """Delete consumer group ``group``: its committed offsets and its
        membership document, in one LMDB write transaction (M-6, M-7).

        Refused with GroupNotEmpty while the group has a live member (checked
        in that same transaction, so a consumer joining meanwhile either
        blocks the delete or joins the empty group after it); GroupNotFound
        when the group has neither. A consumer that joins the group later
        starts without committed offsets (``auto_offset_reset``).

        Thread-safe. Durability: an LMDB commit, durable as the log's sync
        mode makes commits (FORMAT.rst M-8; ``Log.flush()`` forces it).
        Waits at most ``metadata_timeout`` for another process's metadata
        transaction (MetadataBusyError)."""
        validate_group_id(group)
        self._writable(f"delete group {group!r}")
        check = _refuse_live("delete", group, _now_ms, process_alive)
        if not self.meta.delete_group(group, check):
            raise GroupNotFound(f"delete group {group!r} in {self.path}: there is "
                                "no such group (no members, no committed offsets)")

    def delete_consumer_groups(self: _Store, group_ids: Iterable[str]
                               ) -> list[tuple[str, PylogError | None]]:
        """kafka-python's ``KafkaAdminClient.delete_consumer_groups``:
        :meth:`delete_group` for each of ``group_ids``, in order; returns
        ``[(group_id, None)]`` for a deleted group and ``(group_id, error)``
        for one refused (GroupNotEmpty, GroupNotFound) — kafka-python's
        error class is pylog's exception instance here, its NoError is
        None. Other errors (a closed or read-only log) are raised.
        Thread-safe; each delete is atomic on its own, durable as
        :meth:`delete_group` says."""
        if isinstance(group_ids, str):
            raise InvalidArgument(
                f"delete_consumer_groups({group_ids!r}): pass a list of group ids "
                "(or use delete_group(group_id) for one)")
        out: list[tuple[str, PylogError | None]] = []
        for group in group_ids:
            try:
                self.delete_group(group)
            except (GroupNotEmpty, GroupNotFound) as exc:
                out.append((group, exc))
            else:
                out.append((group, None))
        return out

    def delete_records(self: _Store, records_to_delete: Mapping[Any, int]
                       ) -> dict[TopicPartition, dict[str, int]]:
        """Delete the records below an offset of each partition, as
        kafka-python's ``KafkaAdminClient.delete_records`` (Kafka's
        DeleteRecords): ``{TopicPartition(topic, p): before_offset}``; -1
        means the end offset (everything appended so far). The partition's
        log start offset moves up to ``before_offset`` (never down: a lower
        one leaves it), the segments wholly below it are deleted as
        retention deletes them, and reads below it raise OffsetOutOfRange:
        a consumer positioned there, in any process, resumes at the new
        start (``auto_offset_reset="none"`` raises, as when retention
        overtakes it).

        Returns ``{TopicPartition: {"partition_index": p, "low_watermark":
        log start offset now, "error_code": 0}}`` (kafka-python's shape).
        Every partition and offset is checked before anything changes:
        TopicNotFound, PartitionNotFound, InvalidArgument (not an int),
        OffsetOutOfRange (past the end offset, or below -1).

        Thread-safe; appends to the partition wait for the move (it holds
        the append lock, P-3). Durable when it returns: the records below
        the new start and the new start itself (LMDB, fsynced) are on disk
        before any file is deleted (FORMAT.rst P-6). Waits at most
        ``metadata_timeout`` for another process's metadata transaction,
        then raises MetadataBusyError (partitions done before stay done)."""
        self._writable("delete records")
        if not isinstance(records_to_delete, Mapping):
            raise InvalidArgument(
                "delete_records: pass {TopicPartition(topic, partition): "
                f"before_offset}}, got {type(records_to_delete).__name__}")
        plan: list[tuple[TopicPartition, Any, int]] = []
        for key, before in records_to_delete.items():
            tp = _topic_partition(key)
            if isinstance(before, bool) or not isinstance(before, int):
                raise InvalidArgument(
                    f"delete_records: the offset of {tp.topic}-{tp.partition} is "
                    f"{before!r}; expected an int (-1: the end offset)")
            part = self.partition(tp.topic, tp.partition)
            st = part.state()
            if before < -1 or before > st.next_offset:
                raise OffsetOutOfRange(
                    f"delete records of {tp.topic}-{tp.partition} before offset "
                    f"{before}: valid offsets are [{st.log_start_offset}, "
                    f"{st.next_offset}] (or -1 for the end offset); nothing "
                    "was deleted")
            plan.append((tp, part, before))
        out: dict[TopicPartition, dict[str, int]] = {}
        for tp, part, before in plan:
            start = _delete_records_in(part, before, self.metadata_timeout,
                                       f"delete records of {tp.topic}-{tp.partition}")
            out[tp] = {"partition_index": tp.partition, "low_watermark": start,
                       "error_code": 0}
        return out

    if not TYPE_CHECKING:   # (to mypy a misspelt name stays an error)
        def __getattr__(self, name: str) -> Any:
            # only names not found the normal way land here: no cost elsewhere
            raise kafka_name_error(self, name, KAFKA_ADMIN_INSTEAD,
                                   "kafka-python's KafkaAdminClient")


def _delete_records_in(part: Any, before: int, timeout_s: float, what: str) -> int:
    """delete_records_locked under ``part``'s locks, tried again (locks
    released in between, L-7) while the metadata writer lock is busy."""
    deadline = time.monotonic() + timeout_s
    while True:
        part.check()
        with part.shared.wlock:
            part.shared.lock()
            try:
                target = part.state().next_offset if before == -1 else before
                start = delete_records_locked(part, target)
            finally:
                part.shared.unlock()
        if start is not None:
            return int(start)
        if time.monotonic() >= deadline:
            raise MetadataBusyError(
                f"{what}: the metadata writer lock stayed busy for "
                f"{timeout_s:g} s (another process's commit or group change); "
                "nothing was deleted; retry", holder_pid=None)
        time.sleep(_BUSY_RETRY_S)


def _topic_partition(key: Any) -> TopicPartition:
    if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str) \
            and isinstance(key[1], int) and not isinstance(key[1], bool):
        return TopicPartition(key[0], key[1])
    raise InvalidArgument(f"delete_records: key {key!r} is not a "
                          "TopicPartition(topic, partition)")
