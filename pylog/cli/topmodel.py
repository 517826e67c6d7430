"""The view model of ``pylog top``: snapshots of a log and the rows shown.

:func:`take_snapshot` reads a log through its public admin API only
(``topics``, ``describe_topic``, ``groups``, ``describe_group``,
``share_groups``, whose records are counted as the metrics count them:
:func:`pylog.metrics.share_counts`); :func:`build_view` is a pure function
of two snapshots that turns offset deltas into rates. Rates are records
per second over the time between the snapshots: produce rate from
end-offset deltas, consume rate from committed-offset deltas (consumer
groups) plus share-partition start deltas (work queues), for a topic and
for each queue. A partition seen in only one of the snapshots (a topic
created or deleted meanwhile, or deleted and made again: the snapshots
name each topic's incarnation) adds nothing to a rate, and an offset that
went back (a group reset) counts as no progress.

Thread safety: snapshots and views are immutable values; take_snapshot
reads the log as any reader does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

TP = tuple[str, int]


@dataclass(frozen=True)
class GroupSnap:
    """One consumer group at snapshot time."""
    name: str
    state: str
    members_alive: int
    committed: dict[TP, int]
    lag: int
    # every partition describe_group reports, committed or not (a lag may
    # count partitions the group never committed)
    partitions: tuple[TP, ...] = ()


@dataclass(frozen=True)
class QueueSnap:
    """One share-partition (work queue) at snapshot time."""
    group: str
    topic: str
    partition: int
    spso: int
    available: int
    acquired: int
    delayed: int
    archived: int | None          # None: unknown (state read from LMDB)
    oldest_age_ms: int | None


@dataclass(frozen=True)
class Snapshot:
    """What ``pylog top`` reads from a log at one moment (``at``: seconds of
    a monotonic clock)."""
    at: float
    path: str
    ends: dict[TP, int] = field(default_factory=dict)
    starts: dict[TP, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)      # bytes per topic
    groups: list[GroupSnap] = field(default_factory=list)
    queues: list[QueueSnap] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # topic -> its incarnation's id: the offsets of a topic deleted and made
    # again between two snapshots are not compared with the old topic's
    ids: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicRow:
    name: str
    partitions: int
    end: int                      # sum of the partitions' end offsets
    records: int                  # records kept (end - start)
    size: int
    produce_rate: float | None    # None on the first refresh
    consume_rate: float | None


@dataclass(frozen=True)
class GroupRow:
    name: str
    state: str
    members: int
    lag: int
    lag_fraction: float           # lag / records kept in its partitions
    consume_rate: float | None


@dataclass(frozen=True)
class QueueRow:
    group: str
    topic: str
    partitions: int
    available: int
    in_flight: int
    delayed: int
    dead: int | None              # archived (dead-lettered) records, ever
    oldest_age_ms: int | None
    done_rate: float | None       # records completed per second


@dataclass(frozen=True)
class View:
    path: str
    interval: float
    topics: list[TopicRow]
    groups: list[GroupRow]
    queues: list[QueueRow]
    errors: list[str]


def take_snapshot(log: Any, at: float) -> Snapshot:
    """The topics, groups and share groups of an open ``log`` now. A
    partition, topic or group that vanishes or cannot be read while it is
    read is left out and named in ``errors`` (the partitions as the
    metrics read them: :func:`pylog.metrics.describe_partitions`)."""
    from ..errors import PylogError
    from ..metrics import describe_partitions, share_counts
    snap = Snapshot(at=at, path=log.path)
    for name, p, part, info in describe_partitions(log, snap.errors):
        snap.ids[name] = part.topic_id
        snap.ends[(name, p)] = info["end_offset"]
        snap.starts[(name, p)] = info["start_offset"]
        snap.sizes[name] = snap.sizes.get(name, 0) + info["bytes"]
    for g in log.groups():
        try:
            d = log.describe_group(g)
        except (PylogError, OSError) as exc:
            snap.errors.append(f"group {g}: {exc}")
            continue
        committed = {(p["topic"], p["partition"]): p["committed"]
                     for p in d["partitions"] if isinstance(p.get("committed"), int)}
        snap.groups.append(GroupSnap(
            g, d["state"], sum(1 for m in d["members"] if m["alive"]),
            committed, int(d["lag"]),
            tuple((p["topic"], p["partition"]) for p in d["partitions"])))
    try:
        rows = log.share_groups()
    except (PylogError, OSError) as exc:
        snap.errors.append(f"share groups: {exc}")
        rows = []
    for r in rows:
        available, acquired = share_counts(r)          # as log.metrics() counts
        snap.queues.append(QueueSnap(
            r["group"], r["topic"], r["partition"], r["spso"], available,
            acquired, r["delayed"], r["archived_total"],
            r["oldest_unacknowledged_age_ms"]))
    return snap


def _progress(before: dict[TP, int], after: dict[TP, int], keys) -> int:
    """Records the offsets of ``keys`` moved forward between two maps."""
    return sum(max(0, after[k] - before[k]) for k in keys if k in before and k in after)


def _rate(n: int, dt: float) -> float:
    return n / dt if dt > 0 else 0.0


def build_view(prev: Snapshot | None, cur: Snapshot, interval: float) -> View:
    """The rows of ``pylog top`` for snapshot ``cur``, with rates computed
    against ``prev`` (None: no rates yet). Pure: reads only its arguments."""
    dt = cur.at - prev.at if prev is not None else 0.0
    if prev is not None:
        prev = _same_topics(prev, cur)
    by_topic: dict[str, list[TP]] = {}
    for tp in cur.ends:
        by_topic.setdefault(tp[0], []).append(tp)
    prev_groups = {g.name: g for g in prev.groups} if prev is not None else {}
    prev_spso = {(q.group, q.topic, q.partition): q.spso for q in prev.queues} \
        if prev is not None else {}
    topics = []
    for name in sorted(by_topic):
        tps = by_topic[name]
        produce = consume = None
        if prev is not None:
            produce = _rate(_progress(prev.ends, cur.ends, tps), dt)
            moved = 0
            for g in cur.groups:
                old = prev_groups.get(g.name)
                if old is not None:
                    moved += _progress(old.committed, g.committed, tps)
            for q in cur.queues:        # work queues consume too
                before = prev_spso.get((q.group, q.topic, q.partition))
                if q.topic == name and before is not None:
                    moved += max(0, q.spso - before)
            consume = _rate(moved, dt)
        topics.append(TopicRow(
            name, len(tps), sum(cur.ends[tp] for tp in tps),
            sum(cur.ends[tp] - cur.starts.get(tp, 0) for tp in tps),
            cur.sizes.get(name, 0), produce, consume))
    groups = []
    for g in sorted(cur.groups, key=lambda g: g.name):
        kept = sum(max(0, cur.ends[tp] - cur.starts.get(tp, 0))
                   for tp in set(g.partitions) | set(g.committed) if tp in cur.ends)
        old = prev_groups.get(g.name)
        rate = None
        if prev is not None:
            rate = _rate(_progress(old.committed, g.committed, g.committed)
                         if old is not None else 0, dt)
        frac = min(1.0, g.lag / kept) if kept else (1.0 if g.lag else 0.0)
        groups.append(GroupRow(g.name, g.state, g.members_alive, g.lag, frac, rate))
    return View(cur.path, interval, topics, groups, _queues(prev, cur, dt), list(cur.errors))


def _same_topics(prev: Snapshot, cur: Snapshot) -> Snapshot:
    """``prev`` without the offsets of topics that ``cur`` has in another
    incarnation (deleted and made again in between): a new topic's
    offsets start again from 0, so against the old ones they would show
    no progress until they passed the old ones."""
    gone = {t for t, i in prev.ids.items() if t in cur.ids and cur.ids[t] != i}
    if not gone:
        return prev
    return replace(
        prev, ends={tp: v for tp, v in prev.ends.items() if tp[0] not in gone},
        groups=[replace(g, committed={tp: v for tp, v in g.committed.items()
                                      if tp[0] not in gone}) for g in prev.groups],
        queues=[q for q in prev.queues if q.topic not in gone])


def _queues(prev: Snapshot | None, cur: Snapshot, dt: float) -> list[QueueRow]:
    """One row per (share group, topic), its partitions summed."""
    before = {(q.group, q.topic, q.partition): q.spso for q in prev.queues} \
        if prev is not None else {}
    acc: dict[tuple[str, str], list[QueueSnap]] = {}
    for q in cur.queues:
        acc.setdefault((q.group, q.topic), []).append(q)
    rows = []
    for (group, topic), qs in sorted(acc.items()):
        dead = None if any(q.archived is None for q in qs) else \
            sum(q.archived or 0 for q in qs)
        ages = [q.oldest_age_ms for q in qs if q.oldest_age_ms is not None]
        rate = None
        if prev is not None:
            done = sum(max(0, q.spso - before[(group, topic, q.partition)])
                       for q in qs if (group, topic, q.partition) in before)
            rate = _rate(done, dt)
        rows.append(QueueRow(group, topic, len(qs), sum(q.available for q in qs),
                             sum(q.acquired for q in qs), sum(q.delayed for q in qs),
                             dead, max(ages) if ages else None, rate))
    return rows
