"""Partition assignment strategies for consumer groups.

Three strategies are provided, with the semantics of Apache Kafka's
assignors of the same names:

``range``
    Per topic, the members subscribed to it (sorted by member id) each get a
    contiguous range of partitions; the first ``n % m`` members get one extra.

``roundrobin``
    All ``(topic, partition)`` pairs, sorted, are dealt round-robin over the
    sorted members, skipping members not subscribed to the pair's topic.

``sticky``
    A balanced assignment that keeps as many partitions as possible with
    their previous owner.  Balanced means: no partition is owned by a member
    that has two or more partitions more than some other member which is
    also subscribed to that partition's topic (with identical subscriptions:
    ``max(count) - min(count) <= 1``).  When a member leaves, only its
    partitions move; when a member joins, only the partitions it needs to be
    balanced move to it.

Everything here is a pure function of its arguments: no I/O, no shared
mutable state, so the module is thread-safe.  Results are deterministic and
every list in an :data:`Assignment` is sorted.

Conventions shared by all strategies:

* every member of ``members`` appears in the result, possibly with ``[]``;
* every partition of every topic with at least one subscriber is assigned to
  exactly one subscribed member; topics nobody subscribes to are left out;
* a subscribed topic missing from ``partition_counts`` is treated as having
  no partitions (like Kafka ignoring unknown topics).
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Set, Tuple

from .errors import InvalidArgument

__all__ = ["Assignment", "STRATEGIES", "assign", "moved"]

TopicPartition = Tuple[str, int]
Assignment = Dict[str, List[TopicPartition]]
"""member_id -> sorted list of (topic, partition)."""

STRATEGIES = ("range", "roundrobin", "sticky")


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


def assign(
    strategy: str,
    members: Mapping[str, Set[str]],
    partition_counts: Mapping[str, int],
    previous: Optional[Assignment] = None,
) -> Assignment:
    """Assign the partitions of the subscribed topics to ``members``.

    :param strategy: ``"range"``, ``"roundrobin"`` or ``"sticky"``.
    :param members: member_id -> set of subscribed topic names.
    :param partition_counts: topic -> number of partitions.
    :param previous: the previous assignment; only ``"sticky"`` uses it.
    :returns: member_id -> sorted list of ``(topic, partition)``.
    :raises InvalidArgument: unknown strategy or malformed arguments.
    """
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise InvalidArgument(
            f"assign partitions: unknown strategy {strategy!r}; "
            f"valid strategies are {', '.join(STRATEGIES)}"
        )
    subs = _check_members(members)
    counts = _check_counts(partition_counts)
    if previous is not None and not isinstance(previous, Mapping):
        raise InvalidArgument(
            f"assign partitions: previous must be a dict or None, "
            f"not {type(previous).__name__}"
        )
    if not subs:
        return {}
    if strategy == "range":
        result = _range(subs, counts)
    elif strategy == "roundrobin":
        result = _roundrobin(subs, counts)
    else:
        result = _sticky(subs, counts, previous or {})
    return {m: sorted(result[m]) for m in sorted(result)}


def moved(previous: Assignment, new: Assignment) -> int:
    """Number of partitions whose owner differs between two assignments.

    Only partitions that had an owner in ``previous`` *and* have one in
    ``new`` are compared: partitions that were unowned before, or that no
    longer exist / are no longer assigned, do not count.  If ``previous``
    lists a partition under several members, the smallest member id is
    taken as its owner.
    """
    before = _owners(previous)
    after = _owners(new)
    return sum(1 for tp, owner in before.items() if tp in after and after[tp] != owner)


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _check_members(members: Mapping[str, Set[str]]) -> Dict[str, frozenset]:
    if not isinstance(members, Mapping):
        raise InvalidArgument(
            f"assign partitions: members must be a dict of member_id -> topics, "
            f"not {type(members).__name__}"
        )
    out: Dict[str, frozenset] = {}
    for member, topics in members.items():
        if not isinstance(member, str):
            raise InvalidArgument(
                f"assign partitions: member id {member!r} is not a string"
            )
        if isinstance(topics, (str, bytes)) or not hasattr(topics, "__iter__"):
            raise InvalidArgument(
                f"assign partitions: subscriptions of member {member!r} must be "
                f"a set of topic names, not {type(topics).__name__}"
            )
        out[member] = frozenset(topics)
    return out


def _check_counts(partition_counts: Mapping[str, int]) -> Dict[str, int]:
    if not isinstance(partition_counts, Mapping):
        raise InvalidArgument(
            f"assign partitions: partition_counts must be a dict of topic -> int, "
            f"not {type(partition_counts).__name__}"
        )
    out: Dict[str, int] = {}
    for topic, n in partition_counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidArgument(
                f"assign partitions: partition count of topic {topic!r} must be "
                f"an int >= 0, got {n!r}"
            )
        out[topic] = n
    return out


def _owners(assignment: Optional[Mapping[str, List[TopicPartition]]]) -> Dict[TopicPartition, str]:
    owners: Dict[TopicPartition, str] = {}
    if not assignment:
        return owners
    for member in sorted(assignment):
        for tp in assignment[member] or ():
            tp = (tp[0], tp[1])
            owners.setdefault(tp, member)
    return owners


def _subscribers(subs: Mapping[str, frozenset]) -> Dict[str, List[str]]:
    """topic -> sorted list of members subscribed to it."""
    by_topic: Dict[str, List[str]] = {}
    for member in sorted(subs):
        for topic in subs[member]:
            by_topic.setdefault(topic, []).append(member)
    return by_topic


def _all_partitions(by_topic: Mapping[str, List[str]],
                    counts: Mapping[str, int]) -> List[TopicPartition]:
    return [
        (topic, p)
        for topic in sorted(by_topic)
        for p in range(counts.get(topic, 0))
    ]


# ---------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------


def _range(subs: Mapping[str, frozenset], counts: Mapping[str, int]) -> Assignment:
    result: Assignment = {m: [] for m in subs}
    for topic, consumers in sorted(_subscribers(subs).items()):
        n = counts.get(topic, 0)
        m = len(consumers)
        per, extra = divmod(n, m)
        for i, member in enumerate(consumers):
            start = per * i + min(i, extra)
            length = per + (1 if i < extra else 0)
            result[member].extend((topic, p) for p in range(start, start + length))
    return result


def _roundrobin(subs: Mapping[str, frozenset], counts: Mapping[str, int]) -> Assignment:
    result: Assignment = {m: [] for m in subs}
    order = sorted(subs)
    by_topic = _subscribers(subs)
    i = 0
    for topic, p in _all_partitions(by_topic, counts):
        # the topic has at least one subscriber, so this loop terminates
        while topic not in subs[order[i]]:
            i = (i + 1) % len(order)
        result[order[i]].append((topic, p))
        i = (i + 1) % len(order)
    return result


def _sticky(
    subs: Mapping[str, frozenset],
    counts: Mapping[str, int],
    previous: Mapping[str, List[TopicPartition]],
) -> Assignment:
    by_topic = _subscribers(subs)
    partitions = _all_partitions(by_topic, counts)
    prev_owner = _owners(previous)

    owner: Dict[TopicPartition, str] = {}
    count: Dict[str, int] = {m: 0 for m in subs}

    # 1. keep every partition whose previous owner is still a subscribed member
    unassigned: List[TopicPartition] = []
    for tp in partitions:
        o = prev_owner.get(tp)
        if o is not None and o in subs and tp[0] in subs[o]:
            owner[tp] = o
            count[o] += 1
        else:
            unassigned.append(tp)

    # 2. hand out the rest, most constrained first, to the least loaded member
    unassigned.sort(key=lambda tp: (len(by_topic[tp[0]]), tp))
    for tp in unassigned:
        target = min(by_topic[tp[0]], key=lambda m: (count[m], m))
        owner[tp] = target
        count[target] += 1

    # 3. rebalance: move a partition from a member to an eligible member with
    #    at least two fewer partitions until no such move exists.  Each move
    #    lowers sum(count**2), so this terminates.  Sources are tried most
    #    loaded first; partitions that did not stay put anyway are moved
    #    before sticky ones.
    owned: Dict[str, List[TopicPartition]] = {m: [] for m in subs}
    for tp in partitions:
        owned[owner[tp]].append(tp)

    while True:
        move = _find_move(owned, count, by_topic, prev_owner)
        if move is None:
            break
        tp, src, dst = move
        owned[src].remove(tp)
        owned[dst].append(tp)
        owner[tp] = dst
        count[src] -= 1
        count[dst] += 1

    return {m: list(owned[m]) for m in subs}


def _find_move(
    owned: Mapping[str, List[TopicPartition]],
    count: Mapping[str, int],
    by_topic: Mapping[str, List[str]],
    prev_owner: Mapping[TopicPartition, str],
) -> Optional[Tuple[TopicPartition, str, str]]:
    # least loaded eligible member of each topic, computed once per move
    dst_of = {t: min(ms, key=lambda m: (count[m], m)) for t, ms in by_topic.items()}
    for src in sorted(owned, key=lambda m: (-count[m], m)):
        best: Optional[Tuple[TopicPartition, str, str]] = None
        best_key = None
        for tp in owned[src]:
            dst = dst_of[tp[0]]
            if count[dst] + 1 < count[src]:
                # non-sticky partitions (not previously owned by src) first
                key = (prev_owner.get(tp) == src, count[dst], dst, tp)
                if best_key is None or key < best_key:
                    best, best_key = (tp, src, dst), key
        if best is not None:
            return best
    return None
