"""A Consumer's arguments: the options it is created with and the shapes
its calls accept (pylog's own and those of kafka-python and
confluent-kafka), each checked and normalized before anything changes
(G5).

Thread safety: pure functions. Durability: nothing here touches disk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .config import validate_group_id
from .errors import InvalidArgument, OffsetOutOfRange, ReadOnlyLog
from .offsetreset import OFFSET_RESETS
from .records import Record, TopicPartition

if TYPE_CHECKING:
    from .store import LogStore

MAX_POLL_RECORDS_MAX = 1_000_000
MAX_POLL_INTERVAL_MS_MAX = 86_400_000


def as_tp(obj: object) -> TopicPartition:
    """``obj`` as a TopicPartition: one, a ``(topic, partition)`` pair, or
    any object with ``topic`` and ``partition`` attributes (a kafka-python
    or confluent-kafka TopicPartition)."""
    if isinstance(obj, TopicPartition):
        return obj
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) \
            and isinstance(obj[1], int) and not isinstance(obj[1], bool):
        return TopicPartition(obj[0], obj[1])
    topic = getattr(obj, "topic", None)
    partition = getattr(obj, "partition", None)
    if isinstance(topic, str) and isinstance(partition, int) \
            and not isinstance(partition, bool):
        return TopicPartition(topic, partition)
    raise InvalidArgument(f"expected TopicPartition(topic, partition), got {obj!r}")


def as_tps(args: tuple[Any, ...]) -> list[TopicPartition]:
    """The partitions of a call taking them as varargs (kafka-python's
    ``seek_to_beginning(*partitions)``) or as one list, set or tuple of
    them (``seek_to_beginning([tp])``)."""
    if len(args) == 1 and isinstance(args[0], (list, set, frozenset)):
        args = tuple(args[0])
    elif len(args) == 1 and isinstance(args[0], tuple) and args[0] and \
            not isinstance(args[0], TopicPartition) and \
            not isinstance(args[0][0], str):
        args = args[0]          # a tuple of partitions, not one (topic, p) pair
    return [as_tp(tp) for tp in args]


# confluent-kafka's logical offsets a TopicPartition may carry into assign()
_OFFSET_BEGINNING, _OFFSET_END, _OFFSET_STORED, _OFFSET_INVALID = -2, -1, -1000, -1001


def assign_starts(partitions: list[Any]) -> dict[TopicPartition, int | str]:
    """Where confluent-kafka's ``assign([TopicPartition(t, p, offset)])``
    starts each partition: {tp: offset, "beginning" or "end"}; none for a
    partition without an offset (OFFSET_STORED, OFFSET_INVALID, the
    default: the committed offset or ``auto_offset_reset``)."""
    out: dict[TopicPartition, int | str] = {}
    for p in partitions:
        off = getattr(p, "offset", None)
        if isinstance(p, tuple) or not isinstance(off, int) or isinstance(off, bool) \
                or off in (_OFFSET_STORED, _OFFSET_INVALID):
            continue
        tp = as_tp(p)
        if off >= 1 << 63:
            raise InvalidArgument(f"assign {tp}: offset {off}; expected one in [0, 2**63)")
        if off >= 0:
            out[tp] = off
        elif off in (_OFFSET_BEGINNING, _OFFSET_END):
            out[tp] = "beginning" if off == _OFFSET_BEGINNING else "end"
        else:
            raise InvalidArgument(f"assign {tp}: offset {off} (OFFSET_TAIL?) is not "
                                  "supported; seek() after assign() instead")
    return out


def check_start(part: Any, tp: TopicPartition, start: int | str | None,
                policy: str) -> None:
    """assign()'s check of where ``tp`` (``part``) starts, before anything
    changes: OffsetOutOfRange for an offset retention deleted, with the
    ``auto_offset_reset`` ``policy`` "none" (as seek() raises)."""
    if isinstance(start, int) and policy == "none":
        log_start = part.state().log_start_offset
        if start < log_start:
            raise OffsetOutOfRange(
                f"assign {tp.topic}-{tp.partition} at {start}: the log starts at "
                f"{log_start} (older records were deleted) and auto_offset_reset='none'")


def _offset_of(tp: TopicPartition, off: object) -> int:
    """The offset of a commit entry: an int, an OffsetAndMetadata (pylog's,
    kafka-python's: anything with ``offset`` and ``metadata``), or
    aiokafka's ``(offset, metadata)`` pair."""
    metadata = None
    if type(off) is tuple and len(off) == 2:
        off, metadata = off
    elif not isinstance(off, int):
        metadata = getattr(off, "metadata", None)
        off = getattr(off, "offset", off)
    if metadata:
        raise InvalidArgument(
            f"commit of {tp} with metadata {metadata!r}: pylog stores the "
            "committed offset only; pass metadata='' (or None) and keep "
            "the metadata elsewhere")
    if isinstance(off, bool) or not isinstance(off, int) or not 0 <= off < 2**63:
        # (an int64 on disk: a larger one would fail the commit's pack)
        raise InvalidArgument(f"offset for {tp} must be an int in [0, 2**63), got {off!r}")
    return off


def commit_offsets(offsets: object, message: object) -> dict[TopicPartition, int] | None:
    """The {TopicPartition: next offset to read} a ``commit()`` names, None
    for "what was handed". Accepts pylog's and kafka-python's dict
    ({tp: int | OffsetAndMetadata}), confluent-kafka's list of partitions
    carrying an ``offset`` (or ``(topic, partition, offset)`` triples), and
    confluent's ``message=record`` (commits ``record.offset + 1``)."""
    if type(message) is Record and offsets is None:      # the per-record loop's shape
        return {TopicPartition(message.topic, message.partition): message.offset + 1}
    if message is not None:
        if offsets is not None:
            raise InvalidArgument("commit(): pass offsets= or message=, not both")
        off = getattr(message, "offset", None)
        if isinstance(off, bool) or not isinstance(off, int):
            raise InvalidArgument(f"commit(message={message!r}): expected a Record")
        return {as_tp(message): off + 1}
    if offsets is None:
        return None
    if isinstance(offsets, Mapping):
        return {as_tp(tp): _offset_of(as_tp(tp), off) for tp, off in offsets.items()}
    if isinstance(offsets, (list, tuple)):
        out = {}
        for item in offsets:
            if isinstance(item, tuple) and len(item) == 3 and not hasattr(item, "_fields"):
                tp, off = as_tp(item[:2]), item[2]
            elif isinstance(item, TopicPartition) or not hasattr(item, "offset"):
                raise InvalidArgument(
                    f"commit(offsets=[{item!r}, ...]): a list entry needs an "
                    "offset; expected a dict {TopicPartition: next offset to "
                    "read} (or a list of (topic, partition, offset) triples)")
            else:
                tp, off = as_tp(item), getattr(item, "offset")
            out[tp] = _offset_of(tp, off)
        return out
    raise InvalidArgument(
        f"commit(offsets={type(offsets).__name__}): expected a dict "
        "{TopicPartition: next offset to read}")


def poll_timeout(timeout: float | None, timeout_ms: float | None) -> float:
    """Seconds a poll waits: ``timeout`` (pylog, seconds) or ``timeout_ms``
    (kafka-python, milliseconds); 0 when neither is given."""
    if timeout is not None and timeout_ms is not None:
        raise InvalidArgument("poll(): pass timeout= (seconds) or timeout_ms= "
                              "(milliseconds), not both")
    if timeout_ms is not None:
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, (int, float)) \
                or not timeout_ms >= 0:     # (NaN too)
            raise InvalidArgument(f"timeout_ms={timeout_ms!r}; expected milliseconds >= 0")
        return timeout_ms / 1000.0
    if timeout is None:
        return 0.0
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not timeout >= 0:        # (NaN too)
        raise InvalidArgument(f"timeout={timeout!r}; expected seconds >= 0")
    return float(timeout)


def check_options(log: LogStore, group_id: str | None, auto_offset_reset: str,
                  enable_auto_commit: bool, auto_commit_interval_ms: int,
                  session_timeout_ms: int, max_poll_records: int,
                  max_poll_interval_ms: int, consumer_timeout_ms: float | None,
                  key_deserializer: Callable[..., object] | None,
                  value_deserializer: Callable[..., object] | None) -> None:
    """Consumer's arguments, checked before anything is created (G5)."""
    if auto_offset_reset not in OFFSET_RESETS:
        raise InvalidArgument(
            f"auto_offset_reset={auto_offset_reset!r}; expected one of {OFFSET_RESETS}")
    if group_id is not None:
        validate_group_id(group_id, "group_id")
    for name, v, lo, hi in (("auto_commit_interval_ms", auto_commit_interval_ms, 1, 86_400_000),
                            ("session_timeout_ms", session_timeout_ms, 100, 86_400_000),
                            ("max_poll_records", max_poll_records, 1, MAX_POLL_RECORDS_MAX),
                            ("max_poll_interval_ms", max_poll_interval_ms, 1,
                             MAX_POLL_INTERVAL_MS_MAX)):
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise InvalidArgument(f"{name}={v!r}; expected int in [{lo}, {hi}]")
    if consumer_timeout_ms is not None and (
            isinstance(consumer_timeout_ms, bool)
            or not isinstance(consumer_timeout_ms, (int, float)) or consumer_timeout_ms < 0):
        raise InvalidArgument(f"consumer_timeout_ms={consumer_timeout_ms!r}; expected "
                              "milliseconds >= 0, or None (iterate until close())")
    if not isinstance(enable_auto_commit, bool):
        raise InvalidArgument(f"enable_auto_commit={enable_auto_commit!r}; "
                              "expected True or False")
    for name, fn in (("key_deserializer", key_deserializer),
                     ("value_deserializer", value_deserializer)):
        if fn is not None and not callable(fn):
            raise InvalidArgument(f"{name} must be callable")
    if group_id is not None and log.readonly:
        raise ReadOnlyLog(
            f"consumer group {group_id!r} on {log.path}: the log is open "
            "read-only, and a group member writes its membership and its "
            "commits; open the log writable, or read without a group "
            "(log.consumer(enable_auto_commit=False) and assign())")


def topic_list(topics: str | Iterable[str]) -> list[str]:
    """``subscribe``'s topics: one name or an iterable of names."""
    if isinstance(topics, str):
        return [topics]
    try:
        return list(topics)
    except TypeError:       # (an int, None ...: say which argument)
        raise InvalidArgument(f"topics={topics!r}: expected a topic name or a list "
                              "of them") from None


# Client names pylog does not offer, and what to use instead (raised as
# AttributeError by Consumer.__getattr__; docs/kafka.rst lists them).
CONSUMER_INSTEAD: dict[str, str] = {
    "consume": "poll(timeout=..., max_records=...), which returns a list of Records",
    "list_topics": "topics() for the names, or Log.describe_topic(name)",
    "store_offsets": "commit({TopicPartition: offset}): a commit is a local "
                     "transaction, there is nothing to store first",
    "incremental_assign": "assign([...]) with the whole new assignment",
    "incremental_unassign": "assign([...]) with what is left",
    "offsets_for_times_ms": "offsets_for_times({tp: timestamp_ms})",
    "commit_async": "commit(...): a commit is a local transaction, done when it "
                    "returns (there is no callback to wait for)",
    "unassign": "assign([]) or unsubscribe()",
    "metrics": "Log.metrics(), the figures of every client of the log",
    "group_metadata": "group_id, or pass the consumer itself: "
                      "send_offsets_to_transaction(consumer)",
    "consumer_group_metadata": "group_id, or pass the consumer itself: "
                               "send_offsets_to_transaction(consumer)",
}

