"""Producer: validate, partition and append records (SPEC §4, G2, G5).

Partitioning (G2): a record with a key goes to
``(murmur2(key) & 0x7fffffff) % partitions``, exactly as Kafka's default
partitioner; records without a key are spread round-robin.

Thread safety: a Producer may be shared by any number of threads. With
``sync="always"`` concurrent sends share fdatasyncs (group commit).
Durability: ``send`` returns when the record is durable as the log's sync
mode promises; ``flush()`` returns when everything this producer sent is on
disk, in any mode.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat as _repeat
from operator import itemgetter
from time import monotonic as _monotonic
from time import time_ns as _time_ns
from typing import TYPE_CHECKING, Any, TypeVar

from . import _native
from .config import validate_topic_name
from .errors import (
    FlushTimeoutError,
    InvalidArgument,
    LogClosed,
    PartitionNotFound,
    PylogError,
    RecordTooLarge,
    TopicNotFound,
    kafka_name_error,
    not_transferable,
)
from .gcpause import paused as _gc_paused
from .records import RecordMetadata
from .store import FORKS

if TYPE_CHECKING:
    from .partition import Partition
    from .store import LogStore

Serializer = Callable[[Any], bytes]
Headers = Iterable[tuple[str, Any]] | Mapping[str, Any] | None
# (timestamp ms, key, value, headers): a record as Partition.append takes it
RawRecord = tuple[int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]
# (expires monotonic, partition count, [Partition] for the fast path or None)
Route = tuple[float, int, list["Partition"] | None]

_murmur2 = _native.murmur2_bytes
_first, _second = itemgetter(0), itemgetter(1)

_tuple_new = tuple.__new__

# R-*: upper bound of a record's framing bytes (varints at their longest).
_RECORD_OVERHEAD_MAX = 1 + 5 + 1 + 10 + 5 + 5 + 5 + 5
# A record without headers whose key + value stay max_message_bytes minus
# this fits whatever its framing: the 61-byte batch header and the varints.
_FRAMING_BYTES_MAX = 61 + _RECORD_OVERHEAD_MAX
_HEADER_OVERHEAD_MAX = 10
# How long a producer trusts its cached partition count of a topic (another
# process may add partitions).
_ROUTE_TTL_S = 1.0


# Client names pylog does not offer, and what to use instead (raised as
# AttributeError by Producer.__getattr__; docs/kafka.rst lists them).
PRODUCER_INSTEAD: dict[str, str] = {
    "produce": "send(topic, value, key=..., headers=...), which returns the "
               "RecordMetadata once the record is stored",
    "poll": "nothing: send() returns when the record is stored (durable per "
            "the log's sync mode); a producer made with linger_ms returns a "
            "future whose add_callback runs once the record is stored",
    "list_topics": "partitions_for(topic), or Log.topics()",
    "send_and_wait": "send(...): it already returns when the record is stored",
    "init_transactions": "nothing: log.producer(transactional_id=...) did it (it "
                         "fences older producers of the id and aborts what they "
                         "left open)",
    "begin_transaction": "a producer made with log.producer(transactional_id=...)",
    "commit_transaction": "a producer made with log.producer(transactional_id=...)",
    "abort_transaction": "a producer made with log.producer(transactional_id=...)",
    "send_offsets_to_transaction": "a producer made with "
                                   "log.producer(transactional_id=...)",
    "metrics": "Log.metrics(), the figures of every client of the log",
}


def raw_record(value: object, key: object, headers: Headers,
               timestamp_ms: int | None) -> RawRecord:
    """(timestamp, key, value, headers) of a record checked as send checks
    it (keys and values serialized already), for
    :meth:`Producer._send_built`; ``timestamp_ms`` None: now."""
    return (Producer._timestamp(timestamp_ms), Producer._bytes("key", key, None),
            Producer._bytes("value", value, None),
            Producer._headers(headers) if headers else ())


def close_producers_of(log: LogStore, producers: Iterable[Producer]) -> PylogError | None:
    """Close those of ``producers`` that write to ``log``; returns the first
    error, after closing them all (Log.close() goes on with its own)."""
    first = None
    for producer in list(producers):
        if producer._log is log:
            try:
                producer.close()
            except PylogError as exc:
                first = first or exc
    return first


def refuse_mapping(items: object) -> None:
    """Raise InvalidArgument for a mapping given as send_batch's items:
    iterating it would send its keys as values and drop its values."""
    if isinstance(items, Mapping):
        raise InvalidArgument("items must be a list of records, not a mapping; "
                              "for keys and values pass list(items.items())")


_P = TypeVar("_P", bound="Producer")   # with-block: the subclass made


class Producer:
    """Create with :meth:`Log.producer`."""

    def __init__(self, log: LogStore, *, key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None) -> None:
        for name, fn in (("key_serializer", key_serializer),
                         ("value_serializer", value_serializer)):
            if fn is not None and not callable(fn):
                raise InvalidArgument(f"{name} must be callable")
        self._log = log
        self._key_ser = key_serializer
        self._value_ser = value_serializer
        self._rr = itertools.count()
        self._closed = False
        self._touched: set[Partition] = set()
        # topic -> (expires_monotonic, partition count, [Partition] or None);
        # the list enables send()'s per-record fast path, never set while it
        # must not be used (serializers, read-only log, closed producer)
        self._routes: dict[str, Route] = {}
        self._fast_ok = key_serializer is None and value_serializer is None \
            and not log.readonly
        # send_batch's column path (pylog.txnproducer keeps it, not send's)
        self._columns_ok = self._fast_ok

    # -- validation ------------------------------------------------------------
    def _check(self) -> None:
        if self._closed:
            raise LogClosed("producer is closed")
        self._log._writable("send")

    @staticmethod
    def _bytes(what: str, v: object, ser: Serializer | None) -> bytes | None:
        if ser is not None and v is not None:
            v = ser(v)
        if v is None or type(v) is bytes:
            return v
        if isinstance(v, (bytearray, memoryview)):
            return bytes(v)
        raise InvalidArgument(
            f"{what} must be bytes or None, got {type(v).__name__}"
            + ("" if ser else f"; configure {what}_serializer to send "
               f"{type(v).__name__}"))

    @staticmethod
    def _headers(headers: Headers) -> tuple[tuple[str, bytes | None], ...]:
        if not headers:
            return ()
        pairs: Iterable[Any] = list(headers.items()) if isinstance(headers, Mapping) \
            else headers
        out = []
        try:
            for k, v in pairs:
                if not isinstance(k, str):
                    raise InvalidArgument(f"header key must be str, got {type(k).__name__}")
                if not k.isascii():
                    try:
                        k.encode()          # (stored as UTF-8)
                    except UnicodeEncodeError as exc:
                        raise InvalidArgument(f"header key {k!r} cannot be stored as "
                                              f"UTF-8: {exc.reason}") from None
                if v is not None and type(v) is not bytes:
                    if isinstance(v, (bytearray, memoryview)):
                        v = bytes(v)
                    else:
                        raise InvalidArgument(
                            f"header {k!r} value must be bytes or None, got "
                            f"{type(v).__name__}")
                out.append((k, v))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise InvalidArgument(
                "headers must be a list of (str, bytes) pairs") from None
        return tuple(out)

    @staticmethod
    def _timestamp(ts: int | None) -> int:
        if ts is None:
            return time.time_ns() // 1_000_000
        if isinstance(ts, bool) or not isinstance(ts, int) or not 0 <= ts < 2**62:
            raise InvalidArgument(f"timestamp_ms={ts!r}; expected an int in "
                                  f"[0, 2**62) (milliseconds since the epoch)")
        return ts

    def _partition(self, topic: str, key: bytes | None, partition: int | None,
                   n: int) -> int:
        if partition is not None:
            if isinstance(partition, bool) or not isinstance(partition, int) \
                    or not 0 <= partition < n:
                raise PartitionNotFound(
                    f"topic {topic!r} has {n} partitions; there is no "
                    f"partition {partition!r}" + ("" if isinstance(partition, int) else
                                                  " (a partition is a number: an int)"))
            return partition
        if key is not None:
            return _native.partition_for_key(key, n)
        return next(self._rr) % n

    @staticmethod
    def _size_bound(records: Iterable[RawRecord]) -> int:
        total = 61
        for ts, k, v, h in records:
            total += _RECORD_OVERHEAD_MAX + (len(k) if k else 0) + (len(v) if v else 0)
            for hk, hv in h:
                total += _HEADER_OVERHEAD_MAX + len(hk.encode()) + (len(hv) if hv else 0)
        return total

    def _check_size(self, topic: str, part: Partition,
                    records: Sequence[RawRecord]) -> None:
        limit: int = part.config.max_message_bytes  # type: ignore[assignment]  # (set on load)
        items = len(records) + sum(len(r[3]) for r in records)
        if items > _native.BATCH_ITEMS_MAX:
            # (B-7: new batches stay cheap to decode)
            raise RecordTooLarge(
                f"send to {topic}: batch of {len(records)} record(s) holds {items} "
                f"records and headers, over the {_native.BATCH_ITEMS_MAX:,} a batch "
                "may hold; split it")
        if self._size_bound(records) <= limit:
            return
        size = _native.encoded_size(records)
        if size > limit:
            raise RecordTooLarge(
                f"send to {topic}: batch of {len(records)} record(s) encodes to "
                f"{size} bytes, over max_message_bytes={limit}; split it or "
                "raise the topic's max_message_bytes")

    # -- sending -------------------------------------------------------------------
    def send(self, topic: str, value: object = None, key: object = None, *,
             headers: Headers = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> RecordMetadata:
        """Append one record; return where it went.

        Raises TopicNotFound, PartitionNotFound, InvalidArgument (types),
        InvalidTimestamp (``timestamp_ms`` outside the topic's
        message_timestamp_after/before_max_ms window),
        RecordTooLarge, ReadOnlyLog, LogClosed, LogFailedError (I/O). Nothing
        is written when it raises before the append (G5)."""
        # The hot path — bytes key (or none) and value, the default or an
        # in-range partition, the default timestamp, a topic sent to in the
        # last second — is a few type tests,
        # one dict lookup and one native call. Anything else, and anything
        # the fast path declines (closed or failed partition, a segment that
        # must grow or roll, a fork), takes _send, which checks everything.
        route = self._routes.get(topic)
        rr_pick = None
        hkey = hval = None
        if headers is not None and type(headers) is list:
            # a list of one (str, bytes) header, the commonest shape, takes
            # the fast path too (unpacked in two steps: the cheapest check);
            # any other shape goes to _send, which checks it
            try:
                (hkey, hval), = headers
            except (TypeError, ValueError):
                hkey = headers
        if route is not None and route[2] is not None and type(value) is bytes \
                and (headers is None or type(hkey) is str and type(hval) is bytes
                     and hkey.isascii()) \
                and (timestamp_ms is None or type(timestamp_ms) is int) \
                and (key is None or type(key) is bytes) and route[0] > _monotonic() \
                and (partition is None or
                     type(partition) is int and 0 <= partition < len(route[2])):
            parts = route[2]
            if partition is not None:
                p = partition
                size = len(value) if key is None else len(key) + len(value)
            elif key is None:
                p = rr_pick = next(self._rr) % len(parts) if len(parts) > 1 else 0
                size = len(value)
            else:
                p = (_murmur2(key, len(key)) & 0x7FFFFFFF) % len(parts) \
                    if len(parts) > 1 else 0
                size = len(key) + len(value)
            if hkey is not None:
                hkey = hkey.encode()
                size += len(hkey) + len(hval) + 10  # type: ignore[arg-type]  # _HEADER_OVERHEAD_MAX
            part = parts[p]
            config = part.config         # (alter_topic replaces it: read each time)
            if config.compression is None and \
                    size <= config.max_message_bytes - _FRAMING_BYTES_MAX:  # type: ignore[operator]
                ts = _time_ns() // 1_000_000
                if timestamp_ms is not None:
                    # out of range or of the topic's bounds: _send says why
                    ts = timestamp_ms if config.timestamp_ok(timestamp_ms, ts) else -1
                offset = None
                if ts >= 0:
                    try:
                        offset = part.append_one(ts, key, value, hkey, hval)
                    except TopicNotFound:        # deleted: _send re-resolves it
                        self._forget(topic)
                if offset is not None:
                    return _tuple_new(RecordMetadata, (topic, p, offset, ts))
        return self._send(topic, value, key, headers, partition, timestamp_ms, rr_pick)

    def _send(self, topic: str, value: object, key: object, headers: Headers,
              partition: int | None, timestamp_ms: int | None,
              rr_pick: int | None = None) -> RecordMetadata:
        rec = self._record(value, key, headers, timestamp_ms)
        key, value, ts = rec[1], rec[2], rec[0]
        for attempt in (0, 1):
            route, p = self._target(topic, key, partition, rr_pick)
            try:
                part = self._partition_of(topic, p, ts, timestamp_ms)
                limit: int = part.config.max_message_bytes  # type: ignore[assignment]
                if (len(key) if key else 0) + (len(value) if value else 0) + \
                        _FRAMING_BYTES_MAX > limit or rec[3]:
                    self._check_size(topic, part, (rec,))
                offset = self._append_records(part, (rec,))
                break
            except (TopicNotFound, PartitionNotFound):
                # deleted, or re-created with fewer partitions than the
                # cached route says: resolve the topic again, once
                self._forget(topic)
                if attempt:
                    raise
        if part not in self._touched:
            self._touched.add(part)
        if self._fast_ok and route[2] is None and not self._closed:
            self._install_fast(topic, route)
        return RecordMetadata(topic, p, offset, ts)

    def _append_records(self, part: Partition, records: Sequence[RawRecord]) -> int:
        """Append ``records`` (checked) to ``part`` as one batch; return its
        base offset. The idempotent producer (pylog.txnproducer) adds its
        producer fields here."""
        base: int = part.append(records, compression=part.config.compression)[0]
        return base

    def _append_column_batch(self, part: Partition, ts: int, cols: Any,
                             keys: list[bytes] | None, values: list[bytes]) -> int:
        """send_batch's column path: append ``cols`` (of ``keys`` and
        ``values``, sharing ``ts``) to ``part`` as one batch; return its base
        offset. The idempotent producer adds its producer fields here."""
        base = part.append_columns(ts, cols)
        if base is None:             # segment must grow or roll
            recs = list(zip(_repeat(ts, len(values)), keys if keys else _repeat(None),
                            values, _repeat(())))
            base, _ = part.append(recs)
        return int(base)

    def _record(self, value: object, key: object, headers: Headers,
                timestamp_ms: int | None) -> RawRecord:
        """The checked (timestamp, key, value, headers) of a send, after
        checking that this producer and its log may send."""
        if self._closed or self._log._closed or self._log._forks != FORKS[0]:
            self._check()
        if self._log.readonly:
            self._check()
        if type(key) is not bytes and key is not None or self._key_ser is not None:
            key = self._bytes("key", key, self._key_ser)
        if type(value) is not bytes and value is not None or self._value_ser is not None:
            value = self._bytes("value", value, self._value_ser)
        return (self._timestamp(timestamp_ms), key, value,
                self._headers(headers) if headers else ())

    def _target(self, topic: str, key: bytes | None, partition: int | None,
                rr_pick: int | None) -> tuple[Route, int]:
        """(route, partition number) a record goes to. Raises TopicNotFound,
        or PartitionNotFound for a ``partition`` the topic does not have."""
        log = self._log
        route = self._routes.get(topic)
        if route is None or route[0] < _monotonic() or \
                (type(partition) is int and partition >= route[1]):
            if type(topic) is not str:
                raise InvalidArgument(f"topic must be str, got {type(topic).__name__}")
            validate_topic_name(topic)
            route = self._routes[topic] = (_monotonic() + _ROUTE_TTL_S,
                                           log.partitions_for(topic, 0), None)
        n = route[1]
        if partition is None and key is not None:
            p = _native.partition_for_key(key, n)
        elif partition is None and rr_pick is not None and rr_pick < n:
            # the fast path's round-robin pick, kept so every partition
            # gets its first (slow-path) append
            p = rr_pick
        else:
            p = self._partition(topic, key, partition, n)
        return route, p

    def _partition_of(self, topic: str, p: int, ts: int,
                      timestamp_ms: int | None) -> Partition:
        """The Partition ``p`` of ``topic``; checks a producer-supplied
        timestamp against the topic's bounds. TopicNotFound or
        PartitionNotFound here mean the cached route is stale (the topic
        was deleted or re-created): the caller resolves it again."""
        log = self._log
        part = log.open_partitions().get((topic, p)) or log.partition(topic, p)
        if timestamp_ms is not None:
            part.config.check_timestamp(topic, ts, _time_ns() // 1_000_000)
        return part

    def _forget(self, topic: str) -> None:
        """Drop what is cached of a topic that turned out deleted."""
        self._routes.pop(topic, None)
        self._log.forget_topic(topic)

    def _install_fast(self, topic: str, route: Route) -> None:
        """Enable send()'s fast path for ``topic`` until the route expires
        (send checks each partition's current config: the native append
        does not compress, and the size bound follows alter_topic)."""
        log = self._log
        parts = [log.partition(topic, p) for p in range(route[1])]
        self._touched.update(parts)
        self._routes[topic] = (route[0], route[1], parts)

    def send_batch(self, topic: str, items: Iterable[Any], *, partition: int | None = None,
                   timestamp_ms: int | None = None) -> list[RecordMetadata]:
        """Append many records; items are ``value`` | ``(key, value)`` |
        ``(key, value, headers)``.

        All items are validated before anything is written: one bad item
        writes none. Items bound for one partition are appended as one batch,
        atomically; items spread over several partitions are one batch per
        partition (atomic per partition; across partitions use a
        transaction). When one partition's append fails after others'
        were made, the error's ``published`` holds the RecordMetadata of
        the items that were: retry only the rest."""
        self._check()
        log = self._log
        if not isinstance(topic, str):
            raise InvalidArgument(f"topic must be str, got {type(topic).__name__}")
        validate_topic_name(topic)
        if isinstance(items, (bytes, str)):
            raise InvalidArgument("items must be a list of records, not a single value")
        refuse_mapping(items)
        if not hasattr(items, "__iter__"):
            raise InvalidArgument(f"items must be an iterable of records (a list), "
                                  f"got {type(items).__name__}")
        ts = self._timestamp(timestamp_ms)
        if timestamp_ms is not None:
            # the topic's bounds (the same for every partition), before
            # anything is written
            log.partition(topic, 0).config.check_timestamp(
                topic, ts, _time_ns() // 1_000_000)
        if type(items) is not list:
            # a tuple or a generator takes the list's one-call columns path
            items = list(items)
        if self._columns_ok:
            done = self._send_batch_columns(topic, items, partition, ts)
            if done is not None:
                return done
        kser, vser = self._key_ser, self._value_ser
        n = log.partitions_for(topic)
        groups: dict[int, list[RawRecord]] = {}
        order = []
        sticky = None
        for item in items:
            if type(item) is tuple:
                h: tuple[tuple[str, bytes | None], ...]
                if len(item) == 2:
                    k, v = item
                    h = ()
                elif len(item) == 3:
                    k, v, h = item
                    h = self._headers(h)
                else:
                    raise InvalidArgument(
                        f"a batch item must be value, (key, value) or (key, value, "
                        f"headers); got a {len(item)}-tuple")
            else:
                k, v, h = None, item, ()
            if k is not None and (kser is not None or type(k) is not bytes):
                k = self._bytes("key", k, kser)
            if vser is not None or (v is not None and type(v) is not bytes):
                v = self._bytes("value", v, vser)
            if partition is not None or k is not None:
                p = self._partition(topic, k, partition, n)
            else:
                # keyless records of one call stick to one partition (as
                # Kafka's sticky partitioner): one batch, one append
                if sticky is None:
                    sticky = next(self._rr) % n
                p = sticky
            lst = groups.get(p)
            if lst is None:
                lst = groups[p] = []
            order.append((p, len(lst)))
            lst.append((ts, k, v, h))
        if not order:
            return []
        parts = {}
        for p, recs in groups.items():
            part = log.partition(topic, p)
            self._check_size(topic, part, recs)
            parts[p] = part
        bases: dict[int, int] = {}
        try:
            for p, recs in groups.items():
                part = parts[p]
                bases[p] = self._append_records(part, recs)
                self._touched.add(part)
        except PylogError as exc:
            if bases:       # (the partitions before the one that failed stand)
                exc.published = [RecordMetadata(topic, p, bases[p] + i, ts)
                                 for p, i in order if p in bases]
            raise
        return [RecordMetadata(topic, p, bases[p] + i, ts) for p, i in order]

    def _send_built(self, topic: str, partition: int | None, records: list[RawRecord],
                    given: tuple[int, int] | None) -> list[RecordMetadata]:
        """Append ``records`` (checked by :func:`raw_record`, each with its
        own timestamp) to ``partition`` of ``topic`` (None: the next one
        round-robin) as one batch: pylog.aio's BatchBuilder (aiokafka's
        ``create_batch``). ``given``: the lowest and highest timestamp the
        application set, checked against the topic's bounds. Raises as
        send_batch, before anything is written."""
        self._check()
        for attempt in (0, 1):
            _, p = self._target(topic, None, partition, None)
            if not records:
                return []       # (nothing to append; the topic and partition exist)
            try:
                part = self._partition_of(topic, p, 0, None)
                if given is not None:
                    now = _time_ns() // 1_000_000
                    for ts in given:
                        part.config.check_timestamp(topic, ts, now)
                self._check_size(topic, part, records)
                base = self._append_records(part, records)
                break
            except (TopicNotFound, PartitionNotFound):
                self._forget(topic)     # (deleted or re-created: resolved again, once)
                if attempt:
                    raise
        self._touched.add(part)
        return [RecordMetadata(topic, p, base + i, r[0]) for i, r in enumerate(records)]

    def _send_batch_columns(self, topic: str, items: list[Any], partition: int | None,
                            ts: int) -> list[RecordMetadata] | None:
        """send_batch for the common shape — a list of bytes values, or of
        (key, value) pairs of bytes, bound for one partition, uncompressed —
        handled column-wise with no Python loop per record. Returns None to
        hand anything else to the general path, which validates item by
        item and raises the precise error."""
        n = len(items)
        if not n or n > 1_000_000:
            return None
        first = type(items[0])
        if first is tuple:
            if set(map(type, items)) != {tuple} or set(map(len, items)) != {2}:
                return None
            # (not zip(*items): it allocates an iterator per item, and the
            # collector then runs over them)
            keys, values = list(map(_first, items)), list(map(_second, items))
        elif first is bytes:
            keys, values = None, items      # columns() checks every value
        else:
            return None
        cols = _native.columns(keys, values)  # type: ignore[no-untyped-call]
        if cols is None:
            return None
        log = self._log
        nparts = log.partitions_for(topic)
        if partition is not None:
            if isinstance(partition, bool) or not isinstance(partition, int) \
                    or not 0 <= partition < nparts:
                return None
            p = partition
        elif keys is None:
            p = next(self._rr) % nparts
        else:
            parts = _native.partitions_for_keys(keys, nparts)
            p = parts[0]
            if nparts > 1 and parts.count(p) != n:
                return None          # spread over partitions: general path
        part = log.open_partitions().get((topic, p)) or log.partition(topic, p)
        if part.config.compression is not None:
            return None
        if 61 + 36 * n + cols.size > part.config.max_message_bytes:
            return None              # the general path measures it exactly
        base = self._append_column_batch(part, ts, cols, keys, values)
        self._touched.add(part)
        with _gc_paused():            # see pylog.gcpause: tuple subclasses
            return list(map(_tuple_new, _repeat(RecordMetadata),
                            zip(_repeat(topic, n), _repeat(p, n), range(base, base + n),
                                _repeat(ts, n))))

    def partitions_for(self, topic: str) -> set[int]:
        """The partition numbers of ``topic`` (kafka-python's
        ``partitions_for``); raises TopicNotFound when it does not exist.
        Read from the log now (cached at most a second)."""
        if not isinstance(topic, str):
            raise InvalidArgument(f"topic must be str, got {type(topic).__name__}")
        validate_topic_name(topic)
        if self._closed:
            raise LogClosed("producer is closed")
        self._log._check()
        return set(range(self._log.partitions_for(topic)))

    def _flush_all(self) -> None:
        if self._log._forks != FORKS[0]:
            self._log._check()      # (a fork child: reopens the Log first)
        current = self._log.open_partitions()
        for part in list(self._touched):
            if part.closed or current.get((part.topic, part.index)) is not part:
                # its topic was deleted or re-created, or it is the parent's
                # (this is a fork child: the parent syncs what it appended;
                # its files are not open here): nothing to sync there
                self._touched.discard(part)
                continue
            part.flush()

    def flush(self, timeout: float | None = None) -> None:
        """Return when every record this producer sent is on disk
        (fdatasync), in any sync mode.

        ``timeout`` (seconds; default None: wait as long as it takes)
        bounds the whole wait: the fdatasyncs and the recovery-checkpoint
        write that may follow (which can wait for another process's
        metadata transaction). When it expires, FlushTimeoutError is raised;
        the syncs go on in a background thread and a later flush() waits
        for them. The sync runs in a new thread even when nothing is
        pending, so a timeout shorter than a thread start (about a
        millisecond; ``timeout=0``) can expire with nothing left to sync.
        Thread-safe."""
        if self._closed:
            raise LogClosed("producer is closed")
        if self._log._closed:
            raise LogClosed(f"log {self._log.path} is closed")
        if timeout is None:
            self._flush_all()
            return
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise InvalidArgument(f"timeout={timeout!r}; expected seconds >= 0, or None")
        done = threading.Event()
        failed: list[BaseException] = []

        def sync() -> None:
            try:
                self._flush_all()
            except BaseException as exc:      # handed to the caller below
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=sync, name="pylog-flush", daemon=True).start()
        if not done.wait(timeout):
            raise FlushTimeoutError(
                f"flush of {self._log.path}: the fdatasync of this producer's "
                f"records did not finish within {timeout} s; they are in the log "
                "(safe from a process crash) and the sync goes on in the "
                "background; flush() again to wait for it")
        if failed:
            raise failed[0]

    if not TYPE_CHECKING:   # (to mypy a misspelt name stays an error)
        def __getattr__(self, name: str) -> Any:
            # only names not found the normal way land here: no cost elsewhere
            raise kafka_name_error(self, name, PRODUCER_INSTEAD,
                                   "a Kafka client's Producer")

    def close(self, timeout: float | None = None) -> None:
        """Flush (waiting up to ``timeout`` seconds, default None: as long as
        it takes; see flush) and close. The producer is closed even when
        the flush raises (FlushTimeoutError, an I/O error), which is then
        raised. Idempotent; thread-safe."""
        if self._closed:
            return
        self._fast_ok = False
        self._routes.clear()
        try:
            if not self._log._closed:
                self.flush(timeout)
        finally:
            self._closed = True

    def __reduce__(self) -> Any:
        raise not_transferable(self)

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
