"""Metrics of a log: :meth:`pylog.Log.metrics` returns a typed
:class:`MetricsSnapshot` of what every process using the log did and where
every reader stands.

- Per partition: start and end offset, bytes and segments on disk, and the
  counters every process adds to in the partition's shared state file
  (FORMAT.rst P-10, P-11): appends (batches, records, bytes), fetches that
  gave a consumer records, fdatasyncs with their total time and a latency
  histogram. A monitor in another process (``pylog metrics LOG --serve``)
  sees the producers' and consumers' numbers: nothing is kept per process.
- Per consumer group and partition: committed offset, lag and owner, the
  lag counting partitions never committed from where the group would start
  them (:func:`pylog.group.lag_from`).
- Per share group (work queue) and partition: records available,
  acquired, delayed and archived (:meth:`pylog.Log.share_groups`).

Rates come from two readings: ``log.metrics(since=earlier)`` computes each
rate as (counter now − counter in ``earlier``) / (the time between the two
readings, on the monotonic clock). A counter that went down (a partition
deleted and created again, counters that went back after a crash of the
machine, P-10) counts from 0. Without ``since``, or for a partition
``earlier`` did not have, rates are None. A Prometheus server computes
rates itself from the counters (``rate()``); ``pylog metrics`` takes two
readings a second apart.

The counters count from the partition's creation and are not durable
(P-10); an fsync's latency is the time around the ``fdatasync`` call.
Fetches of a read-only Log are not counted (it cannot write the shared
file).

Thread safety: a snapshot is immutable; taking one reads only (shared maps
without locks, LMDB read transactions) and is as thread-safe as the Log.
A snapshot taken while others write may mix moments a few microseconds
apart. Durability: none (nothing is written).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import _format
from .errors import InvalidArgument, PylogError, TopicNotFound

#: Upper bounds in seconds of the fsync latency histogram's buckets (P-11):
#: bucket 0 is under 2**16 ns, each next one doubles, the last is unbounded.
FSYNC_BUCKET_BOUNDS_S: tuple[float, ...] = tuple(
    2 ** (_format.FSYNC_BUCKET0_LOG2 + k) / 1e9
    for k in range(_format.FSYNC_BUCKETS - 1)) + (math.inf,)


@dataclass(frozen=True)
class FsyncStats:
    """fdatasyncs of segment files (P-11): how many, their total time, and
    ``buckets[k]``, how many took less than ``FSYNC_BUCKET_BOUNDS_S[k]``
    seconds and not less than the bound before (not cumulative)."""
    count: int = 0
    total_s: float = 0.0
    buckets: tuple[int, ...] = (0,) * _format.FSYNC_BUCKETS

    @property
    def mean_s(self) -> float | None:
        """The mean latency, None without any fsync."""
        return self.total_s / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """An upper bound of the ``q`` quantile (0 < q <= 1) of the latency:
        the bound of the bucket it falls in (math.inf for the last); None
        without any fsync."""
        if not 0 < q <= 1:
            raise ValueError(f"quantile {q!r}: expected 0 < q <= 1")
        total = sum(self.buckets)
        if not total:
            return None
        want, seen = q * total, 0
        for bound, n in zip(FSYNC_BUCKET_BOUNDS_S, self.buckets):
            seen += n
            if seen >= want:
                return bound
        return math.inf

    def __add__(self, other: FsyncStats) -> FsyncStats:
        return FsyncStats(self.count + other.count, self.total_s + other.total_s,
                          tuple(a + b for a, b in zip(self.buckets, other.buckets)))


@dataclass(frozen=True)
class PartitionMetrics:
    """One partition: where it starts and ends, its size, and the counters
    of every process (P-10, P-11). Rates are per second over the
    snapshot's ``interval_s``, None without one."""
    topic: str
    partition: int
    start_offset: int
    end_offset: int
    bytes: int
    segments: int
    append_batches: int
    appended_records: int
    appended_bytes: int
    fetches: int
    fetched_records: int
    fsync: FsyncStats
    append_rate: float | None = None          # records appended per second
    append_bytes_rate: float | None = None    # bytes appended per second
    fetch_rate: float | None = None           # records fetched per second
    fsync_rate: float | None = None           # fdatasyncs per second

    @property
    def records(self) -> int:
        """Records retained: end offset − start offset."""
        return self.end_offset - self.start_offset


@dataclass(frozen=True)
class GroupPartitionMetrics:
    """A consumer group on one partition: ``committed`` is None when the
    group never committed it, and ``lag`` then counts from where the group
    would start (``lag_from``: ``"earliest"``, ``"latest"``, ``"none"``;
    ``"committed"`` otherwise). ``owner``: the live member reading it now
    (None: none; a dead member's partitions go to a live one at its
    next call)."""
    topic: str
    partition: int
    committed: int | None
    end_offset: int
    lag: int
    lag_from: str
    owner: str | None


@dataclass(frozen=True)
class GroupMetrics:
    """A consumer group: its state (``"Stable"``, ``"Empty"``), live
    members, total lag, and its partitions."""
    group: str
    state: str
    members: int
    lag: int
    partitions: tuple[GroupPartitionMetrics, ...]


@dataclass(frozen=True)
class SharePartitionMetrics:
    """A share group (work queue) on one partition: records available
    (never delivered included, and those a dead consumer held: the next
    poll of any member takes them), acquired (in flight with a live
    consumer), delayed (waiting
    for a retry), archived (rejected or past the delivery limit, since the
    share state began; None when read from LMDB after a reboot, Q-1) and
    lost to retention (None likewise)."""
    group: str
    topic: str
    partition: int
    available: int
    acquired: int
    delayed: int
    archived: int | None
    lost: int | None


@dataclass(frozen=True)
class ShareGroupMetrics:
    """A share group: the sums of its partitions (``archived`` None when a
    partition does not know it)."""
    group: str
    available: int
    acquired: int
    delayed: int
    archived: int | None
    partitions: tuple[SharePartitionMetrics, ...]


@dataclass(frozen=True)
class MetricsSnapshot:
    """What :meth:`pylog.Log.metrics` returns; see the module docstring.
    ``time`` is the wall clock of the reading (seconds since the epoch),
    ``monotonic`` the monotonic one (rates are computed on it);
    ``interval_s`` the span the rates cover (None: no rates). ``errors``
    names what could not be read (a failed partition); the rest is whole."""
    path: str
    time: float
    monotonic: float
    interval_s: float | None
    partitions: tuple[PartitionMetrics, ...]
    fsync: FsyncStats
    groups: tuple[GroupMetrics, ...]
    share_groups: tuple[ShareGroupMetrics, ...]
    errors: tuple[str, ...] = ()

    def partition(self, topic: str, partition: int) -> PartitionMetrics | None:
        """The metrics of ``topic``-``partition``, None when absent."""
        for p in self.partitions:
            if p.topic == topic and p.partition == partition:
                return p
        return None

    def group(self, group: str) -> GroupMetrics | None:
        """The metrics of consumer group ``group``, None when absent."""
        return next((g for g in self.groups if g.group == group), None)

    def share_group(self, group: str) -> ShareGroupMetrics | None:
        """The metrics of share group ``group``, None when absent."""
        return next((g for g in self.share_groups if g.group == group), None)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as JSON-ready data (``pylog metrics --json``): the
        fields by name, each histogram as ``[{"le": bound or "+Inf",
        "count": n}, ...]``, not cumulative."""
        def conv(obj: Any) -> Any:
            if isinstance(obj, FsyncStats):
                return {"count": obj.count, "total_s": obj.total_s,
                        "mean_s": obj.mean_s,
                        "buckets": [{"le": "+Inf" if math.isinf(b) else b, "count": n}
                                    for b, n in zip(FSYNC_BUCKET_BOUNDS_S, obj.buckets)]}
            if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
                out = {f.name: conv(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
                if isinstance(obj, PartitionMetrics):
                    out["records"] = obj.records
                return out
            if isinstance(obj, tuple):
                return [conv(x) for x in obj]
            return obj
        result: dict[str, Any] = conv(self)
        return result


_Key = tuple[str, int]


def _fsync(words: tuple[int, ...] | None) -> FsyncStats:
    if words is None:
        return FsyncStats()
    return FsyncStats(words[5], words[6] / 1e9, tuple(words[7:]))


def _rate(now: int, before: int | None, interval: float | None) -> float | None:
    if before is None or interval is None:
        return None
    delta = now - before if now >= before else now     # went down: from 0 (P-10)
    return delta / interval


def describe_partitions(log: Any, errors: list[str]
                        ) -> Iterator[tuple[str, int, Any, dict[str, Any]]]:
    """(topic, partition, its Partition, ``Partition.describe()``) of every
    partition of ``log`` that can be read. One that cannot is named in
    ``errors`` ("partition t-0: why") and the others are still yielded; a
    topic whose partition count cannot be read is named as "topic t: why".
    Reads only; as thread-safe as the Log."""
    for name in log.topics():
        try:
            count = log.partitions_for(name, max_age_s=0)
        except (PylogError, OSError) as exc:
            errors.append(f"topic {name}: {exc}")
            continue
        for p in range(count):
            try:
                part = log.partition(name, p)
                try:
                    info = part.describe()
                except TopicNotFound:
                    # open in this Log since before another process deleted
                    # the topic and made it again (listed above): the new one
                    log.forget_topic(name)
                    part = log.partition(name, p)
                    info = part.describe()
            except (PylogError, OSError) as exc:
                errors.append(f"partition {name}-{p}: {exc}")
                continue
            yield name, p, part, info


def _partitions(log: Any, since: MetricsSnapshot | None, interval: float | None,
                errors: list[str]) -> list[PartitionMetrics]:
    before: dict[_Key, PartitionMetrics] = {
        (p.topic, p.partition): p for p in since.partitions} if since else {}
    out = []
    for name, p, part, pi in describe_partitions(log, errors):
        try:
            words = part.shared.counters()
        except (PylogError, OSError) as exc:
            errors.append(f"partition {name}-{p}: {exc}")
            continue
        w = words or (0,) * _format.COUNTER_WORDS
        prev = before.get((name, p))
        fs = _fsync(words)
        was = (prev.appended_records, prev.appended_bytes, prev.fetched_records,
               prev.fsync.count) if prev is not None else (None, None, None, None)
        out.append(PartitionMetrics(
            topic=name, partition=p, start_offset=pi["start_offset"],
            end_offset=pi["end_offset"], bytes=pi["bytes"], segments=pi["segments"],
            append_batches=w[0], appended_records=w[1], appended_bytes=w[2],
            fetches=w[3], fetched_records=w[4], fsync=fs,
            append_rate=_rate(w[1], was[0], interval),
            append_bytes_rate=_rate(w[2], was[1], interval),
            fetch_rate=_rate(w[4], was[2], interval),
            fsync_rate=_rate(fs.count, was[3], interval)))
    return out


def _groups(log: Any, errors: list[str]) -> list[GroupMetrics]:
    out = []
    for g in log.groups():
        try:
            d = log.describe_group(g)
        except (PylogError, OSError) as exc:
            errors.append(f"group {g}: {exc}")
            continue
        alive = {m["member_id"] for m in d["members"] if m["alive"]}
        parts = tuple(GroupPartitionMetrics(
            topic=p["topic"], partition=p["partition"], committed=p["committed"],
            end_offset=p["end_offset"], lag=p["lag"], lag_from=p["lag_from"],
            owner=p["owner"] if p["owner"] in alive else None) for p in d["partitions"])
        out.append(GroupMetrics(group=g, state=d["state"], members=len(alive),
                                lag=d["lag"], partitions=parts))
    return out


def share_counts(row: dict[str, Any]) -> tuple[int, int]:
    """(available, acquired) of a share-partition ``row`` of
    :meth:`pylog.Log.share_groups`, the records a dead consumer holds
    counted available (the next poll of any member takes them), not
    acquired: what the metrics and ``pylog top`` show. Pure."""
    dead = sum(1 for h in row["held"] if h.get("owner_alive") is False)
    return row["available"] + dead, row["acquired"] - dead


def _share_groups(log: Any, errors: list[str]) -> list[ShareGroupMetrics]:
    try:
        rows = log.share_groups()
    except (PylogError, OSError) as exc:
        errors.append(f"share groups: {exc}")
        return []
    by_group: dict[str, list[SharePartitionMetrics]] = {}
    for r in rows:
        available, acquired = share_counts(r)
        by_group.setdefault(r["group"], []).append(SharePartitionMetrics(
            group=r["group"], topic=r["topic"], partition=r["partition"],
            available=available, acquired=acquired, delayed=r["delayed"],
            archived=r["archived_total"], lost=r["lost_to_retention"]))
    out = []
    for g, parts in sorted(by_group.items()):
        archived = [p.archived for p in parts]
        out.append(ShareGroupMetrics(
            group=g, available=sum(p.available for p in parts),
            acquired=sum(p.acquired for p in parts), delayed=sum(p.delayed for p in parts),
            archived=None if None in archived else sum(a for a in archived if a is not None),
            partitions=tuple(parts)))
    return out


def take(log: Any, since: MetricsSnapshot | None = None) -> MetricsSnapshot:
    """A snapshot of ``log`` (an open :class:`pylog.Log`), with rates over
    the time since ``since`` when given (see the module docstring)."""
    now = time.monotonic()
    interval = None
    if since is not None:
        if not isinstance(since, MetricsSnapshot):
            raise InvalidArgument(f"since={since!r}: pass an earlier MetricsSnapshot")
        if now > since.monotonic:
            interval = now - since.monotonic
    errors: list[str] = []
    partitions = _partitions(log, since, interval, errors)
    total = FsyncStats()
    for p in partitions:
        total = total + p.fsync
    return MetricsSnapshot(
        path=log.path, time=time.time(), monotonic=now, interval_s=interval,
        partitions=tuple(partitions), fsync=total, groups=tuple(_groups(log, errors)),
        share_groups=tuple(_share_groups(log, errors)), errors=tuple(errors))


__all__ = ["FSYNC_BUCKET_BOUNDS_S", "FsyncStats", "PartitionMetrics", "GroupPartitionMetrics",
           "GroupMetrics", "SharePartitionMetrics", "ShareGroupMetrics", "MetricsSnapshot",
           "describe_partitions", "share_counts", "take"]
