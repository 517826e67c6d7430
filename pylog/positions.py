"""Where a Consumer reads: positions, seeks, watermarks, pausing and lag
(the position half of :class:`pylog.consumer.Consumer`, a mixin of it).

A position is the next offset ``poll()`` returns for a partition. It
starts at the group's committed offset (or where ``auto_offset_reset``
says) and moves with ``poll``/``seek``. A seek past the end is accepted and
the reset policy applies at the next fetch, as Kafka; a seek below the log
start resumes at the log start (those records are gone), or raises
OffsetOutOfRange with ``auto_offset_reset="none"``.

Thread safety: as the Consumer (one thread at a time). Durability: nothing
here writes; positions live in memory until a commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, overload

from .consumerargs import as_tp, as_tps
from .delivery import Delivery
from .errors import InvalidArgument, OffsetOutOfRange, PartitionNotFound, TopicNotFound
from .offsetreset import OffsetReset
from .partition import Cursor
from .records import TopicPartition

if TYPE_CHECKING:
    from .group import GroupMember
    from .store import LogStore


def committed_partitions(partitions: tuple[Any, ...]) -> tuple[list[TopicPartition], bool]:
    """The partitions of a ``committed(*partitions)`` call and whether it
    named one partition (it returns that one's offset, not a dict): the
    local and the Kafka consumer take the same arguments."""
    one = False
    if len(partitions) == 1 and not isinstance(partitions[0], (list, set, frozenset)):
        try:
            as_tp(partitions[0])
            one = True
        except InvalidArgument:
            pass            # a tuple of partitions
    tps = as_tps(partitions)
    if not tps and not one:
        raise InvalidArgument("committed() needs a partition or a list of them")
    return tps, one


class Positions:
    """Positions, seeks and watermarks of a Consumer (see the module doc)."""

    _log: LogStore
    group_id: str | None
    _cursors: dict[TopicPartition, Cursor]
    _committed_pos: dict[TopicPartition, int]
    _resets: OffsetReset
    _delivery: Delivery
    _member: GroupMember | None
    _manual: list[TopicPartition] | None
    _paused: set[TopicPartition]

    if TYPE_CHECKING:
        def _check(self) -> None: ...
        def _sync_group(self, force: bool = False) -> None: ...
        def _owned(self) -> list[TopicPartition]: ...

    # -- where reading starts ------------------------------------------------------
    def _cursor(self, tp: TopicPartition) -> Cursor:
        c = self._cursors.get(tp)
        if c is not None:
            return c
        part = self._log.partition(tp.topic, tp.partition)
        committed = None
        if self.group_id is not None:
            committed = self._log.meta.committed(self.group_id, tp.topic, tp.partition)
        st = part.state()
        if committed is None:
            off = self._resets.no_commit(tp, part)
        elif not st.log_start_offset <= committed <= st.next_offset:
            off = self._resets.out_of_range(tp, part, committed)
        else:
            off = committed
            self._committed_pos[tp] = committed
        c = self._cursors[tp] = Cursor(off, part.topic_id)
        return c

    def position(self, tp: TopicPartition) -> int:
        """The offset of the next record poll() will return for ``tp``
        (inside a ``for record in consumer`` loop or a run() handler: the
        next one the loop hands out, as kafka-python's iterator says)."""
        self._check()
        tp = as_tp(tp)
        return self._delivery.position(tp, int(self._cursor(tp).offset))

    # (the overloads tell a type checker which of the two shapes a call gets)
    @overload
    def committed(self, partition: TopicPartition, /) -> int | None: ...

    @overload
    def committed(self, partitions: list[TopicPartition] | tuple[TopicPartition, ...]
                  | set[TopicPartition] | frozenset[TopicPartition], /,
                  ) -> dict[TopicPartition, int | None]: ...

    @overload
    def committed(self, *partitions: Any) -> int | None | dict[TopicPartition, int | None]: ...

    def committed(self, *partitions: Any) -> int | None | dict[TopicPartition, int | None]:
        """The group's committed offset (next offset to read) of one
        partition, None without one or without a group. Given a list
        (confluent-kafka's ``committed([tp, ...])``) or several partitions,
        returns {TopicPartition: offset or None}. Reads the metadata
        (LMDB); never blocks on writers."""
        self._check()
        tps, one = committed_partitions(partitions)
        gid = self.group_id
        out = {tp: None if gid is None else
               self._log.meta.committed(gid, tp.topic, tp.partition) for tp in tps}
        return out[tps[0]] if one else out

    def _owned_or_raise(self, tp: object, what: str = "seek") -> TopicPartition:
        tp = as_tp(tp)
        grouped = self._member is not None and self._manual is None
        if grouped and tp not in set(self._owned()):
            self._sync_group(force=True)      # a new member joins here
        if tp not in set(self._owned()):
            raise InvalidArgument(
                f"{what} {tp}: it is not assigned to this consumer" + (grouped and (
                    f" (group {self.group_id!r} gave it {sorted(self._owned())}); "
                    "another member owns it, or the topic is not subscribed") or
                    "; assign() it or subscribe() to its topic first"))
        return tp

    def _live(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """``positions`` (of the cursors) less those taken in an incarnation
        of their topic that was deleted since (L-4): such an offset means
        nothing in a topic made again under the name, and committed there
        it would skip that topic's records. Reads mapped partition states,
        no metadata (a delete landing after this look is not seen)."""
        out = {}
        for tp, off in positions.items():
            cur = self._cursors.get(tp)
            if cur is not None and cur.topic_id is not None:
                try:
                    part = self._log.open_partitions().get(tp) or \
                        self._log.partition(tp.topic, tp.partition)
                    if part.topic_id != cur.topic_id:
                        continue
                    part.state()            # (TopicNotFound: deleted)
                except (TopicNotFound, PartitionNotFound):
                    continue        # (made again with fewer partitions)
            out[tp] = off
        return out

    def _set_position(self, tp: TopicPartition, offset: int,
                      topic_id: str | None = None) -> None:
        """Move ``tp`` to ``offset``, an offset of the topic's incarnation
        ``topic_id`` (L-4; None: of the one its next fetch reads)."""
        self._cursors[tp] = Cursor(offset, topic_id)
        self._delivery.forget(tp)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Make the next poll() of ``partition`` start at ``offset``; a new
        group member joins its group first (seek right after
        log.consumer()). An offset past the end is accepted: the next fetch
        applies ``auto_offset_reset`` (earliest: the log start; latest: the
        end; none: OffsetOutOfRange from poll). An offset below the log
        start resumes at the log start (OffsetOutOfRange with
        ``auto_offset_reset="none"``)."""
        self._set_position(*self._seek_target(partition, offset))

    def _seek_target(self, partition: TopicPartition, offset: int
                     ) -> tuple[TopicPartition, int, str | None]:
        """seek()'s checks, moving nothing: (tp, the offset it moves to,
        the incarnation of the topic it was checked against)."""
        self._check()
        # (the offset first: a bad one must not make a new member join)
        if isinstance(offset, bool) or not isinstance(offset, int) or \
                not 0 <= offset < 1 << 63:
            raise InvalidArgument(f"offset={offset!r}; expected an int in [0, 2**63)")
        tp = self._owned_or_raise(partition)
        part = self._log.partition(tp.topic, tp.partition)
        st = part.state()
        if offset < st.log_start_offset:
            if self._resets.policy == "none":
                raise OffsetOutOfRange(
                    f"seek {tp.topic}-{tp.partition} to {offset}: the log starts at "
                    f"{st.log_start_offset} (older records were deleted) and "
                    "auto_offset_reset='none'")
            offset = st.log_start_offset
        return tp, offset, part.topic_id

    def seek_to_beginning(self, *partitions: Any) -> None:
        """Move to the log start of ``partitions`` (varargs as kafka-python,
        or one list), or of every owned partition without any."""
        self._seek_ends(partitions, "log_start_offset")

    def seek_to_end(self, *partitions: Any) -> None:
        """Move to the end (the next offset to be written; read_committed:
        the last stable offset, as Kafka) of ``partitions`` (varargs or one
        list), or of every owned partition without any."""
        self._seek_ends(partitions, "next_offset")

    def _seek_ends(self, partitions: tuple[Any, ...], end: str) -> None:
        self._check()
        self._sync_group(force=True)
        for tp in (as_tps(partitions) or self._owned()):
            tp = self._owned_or_raise(tp)
            part = self._log.partition(tp.topic, tp.partition)
            if end == "next_offset":
                self._set_position(tp, self._resets.end(part), part.topic_id)
            else:
                self._set_position(tp, int(getattr(part.state(), end)), part.topic_id)

    # -- offsets of the log ---------------------------------------------------------
    def offsets_for_times(self, timestamps: Mapping[TopicPartition, int]
                          ) -> dict[TopicPartition, int | None]:
        """{tp: ts_ms} -> {tp: first offset with timestamp >= ts_ms, or None};
        read_committed, None too when that offset is at or past the last
        stable offset (a transaction still open), as Kafka answers."""
        self._check()
        out = {}
        for tp, ts in timestamps.items():
            tp = as_tp(tp)
            if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
                raise InvalidArgument(f"timestamp for {tp} must be a non-negative int ms")
            found = self._log.partition(tp.topic, tp.partition).offset_for_time(ts)
            if found is not None and self._resets.read_committed and found >= self._end(tp):
                found = None
            out[tp] = found
        return out

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """{tp: log start offset} of ``partitions``."""
        self._check()
        return {tp: self._log.partition(tp.topic, tp.partition).state().log_start_offset
                for tp in map(as_tp, partitions)}

    def _end(self, tp: TopicPartition) -> int:
        """The end of ``tp`` this consumer can read to: the end offset, or
        read_committed, the last stable offset (X-4), as Kafka's consumer
        reports ends and lag to a read_committed one."""
        return self._resets.end(self._log.partition(tp.topic, tp.partition))

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """{tp: end offset (the next offset to be written)} of ``partitions``;
        with ``isolation_level="read_committed"``, the last stable offset."""
        self._check()
        return {tp: self._end(tp) for tp in map(as_tp, partitions)}

    def highwater(self, partition: TopicPartition) -> int:
        """The end offset of ``partition`` now (kafka-python's high water
        mark: the offset the next record will get; read_committed, the last
        stable offset). Every appended record is readable, so it is never
        stale, unlike a broker's cached one."""
        self._check()
        return self._end(as_tp(partition))

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float | None = None,
                              cached: bool = False) -> tuple[int, int]:
        """(low, high) of ``partition``: log start and end offset
        (read_committed: the last stable offset), confluent-kafka's name;
        ``timeout`` and ``cached`` are accepted and change nothing: the
        answer is read locally, at once."""
        self._check()
        tp = as_tp(partition)
        high = self._end(tp)      # (first: the start never passes the end)
        start = self._log.partition(tp.topic, tp.partition).state().log_start_offset
        return int(start), high

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """Partition numbers of ``topic``; None when it does not exist (as
        kafka-python)."""
        self._check()
        try:
            n = self._log.partitions_for(topic)
        except TopicNotFound:
            return None
        return set(range(n))

    def topics(self) -> set[str]:
        """Names of every topic of the log (kafka-python's ``topics()``)."""
        self._check()
        return set(self._log.topics())

    # -- pausing and lag -------------------------------------------------------------
    def pause(self, *partitions: Any) -> None:
        """Stop fetching ``partitions`` (varargs or one list) until resume(),
        also inside a ``for record in consumer`` loop or a run() handler
        (the loop hands out no more of their records); each must be
        assigned (InvalidArgument otherwise, as kafka-python's
        IllegalStateError)."""
        self._check()
        tps = [self._owned_or_raise(tp, "pause") for tp in as_tps(partitions)]
        self._paused.update(tps)
        for tp in tps:      # (inside a loop: it hands out no more of them)
            self._delivery.hold_back(tp)

    def resume(self, *partitions: Any) -> None:
        """Fetch ``partitions`` (varargs or one list) again; each must be
        assigned (InvalidArgument otherwise, as pause() and kafka-python's
        IllegalStateError)."""
        self._check()
        tps = [self._owned_or_raise(tp, "resume") for tp in as_tps(partitions)]
        self._paused.difference_update(tps)

    def paused(self) -> set[TopicPartition]:
        """The partitions pause() stopped."""
        return set(self._paused)

    def lag(self) -> dict[TopicPartition, int]:
        """{tp: records between the position and the end} for owned
        partitions (read_committed: the last stable offset, as Kafka's
        records-lag)."""
        self._check()
        self._sync_group()
        out = {}
        for tp in self._owned():
            out[tp] = max(0, self._end(tp) - self._cursor(tp).offset)
        return out
