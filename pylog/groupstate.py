"""Consumer-group membership as pure transitions (SPEC §5, FORMAT.rst M-7).

Everything that affects a group's membership lives in this module: the
typed group document (:class:`GroupState`, one per group in the ``groups``
database) and the transitions over it. A transition is a pure function
``(state, ..., now_ms, is_alive) -> new state`` (plus what the caller must
do in the same transaction, e.g. commit positions of released partitions);
it does no I/O. The wall clock reading ``now_ms`` and the liveness probe
``is_alive(member) -> bool`` (process id and start time on this host) are
arguments, so tests run them on a fake clock. ``pylog.group`` is the shell
that reads a state in an LMDB write transaction, applies a transition and
writes the result back in the same transaction.

=============== ====================================================================
transition      effect on the state
=============== ====================================================================
expire          members whose heartbeat is older than their session timeout, or
                whose process is gone, are removed; what they owned becomes free
join            a member absent from ``members`` is added (a rebalance follows)
heartbeat       the member's ``heartbeat_ms`` (and subscribed topics) are renewed
heartbeats      several members' ``heartbeat_ms`` are renewed at once
rebalance       the assignor computes a new target ``assignment``; generation + 1;
                owners of partitions that no longer exist, or of members that
                are gone, are dropped
release         the member gives up what it owns outside its target (the caller
                commits its positions for them in the same transaction)
claim           the member takes the partitions of its target that nobody owns
leave           the member is removed; the rest rebalance
drop_topic      a deleted topic's partitions are owned and assigned by nobody
fence           a commit is refused unless the member is in the group and owns
                every partition it commits
fence_outsider  a non-member's commit is refused where a live member owns
                the partition
sync            one poll of a member: expire, join, heartbeat, rebalance (when
                membership, subscriptions or partition counts changed), release,
                claim
=============== ====================================================================

Ownership is a two-step hand-off, so that a partition is never fetched by
two live members at once (G3): the assignment names the target owner; the
old owner releases (committing its position in the same transaction) the
next time it polls, and only then does the new owner claim it. A member
that stops polling keeps its partitions until it expires, and it fetches
only while its lease holds: half its session timeout after its last
heartbeat, so the lease ends before anyone may expire it.

Thread safety: every value here is immutable and every function pure
(decode remembers recent documents' states behind a lock), so the module
is thread-safe. Durability: none (nothing here touches disk).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from ._locks import free_in_child
from .assignors import assign
from .errors import CommitFailedError, CorruptGroupError
from .records import TopicPartition

DEFAULT_SESSION_TIMEOUT_MS = 10000   # a member document without one (M-7)
DEFAULT_STRATEGY = "sticky"


@dataclass(frozen=True)
class Member:
    """One member of a group: ``members[member_id]`` in M-7."""
    pid: int | None
    start: int | None                # process start time, clock ticks since boot
    host: str | None
    client_id: str = ""
    topics: tuple = ()               # sorted subscribed topic names
    heartbeat_ms: int = 0
    session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS
    joined_ms: int = 0
    # where the member starts a partition the group never committed (M-7;
    # None: a document written before pylog recorded it)
    auto_offset_reset: str | None = None

    def expired(self, now_ms: int) -> bool:
        """Has this member missed its session timeout?"""
        return now_ms - self.heartbeat_ms > self.session_timeout_ms


Probe = Callable[[Member], bool]     # is the member's process still there?


def alive(member: Member, now_ms: int, is_alive: Probe) -> bool:
    """A member is alive while it heartbeats and its process is there."""
    return not member.expired(now_ms) and is_alive(member)


@dataclass(frozen=True)
class GroupState:
    """The group document (M-7). Never mutated: transitions return new
    states built from new dicts. ``assignment`` and ``partition_counts`` are
    None until the first rebalance; ``extra`` keeps keys this version does
    not know, so they survive a rewrite."""
    generation: int = 0
    strategy: str | None = None
    members: Mapping[str, Member] = field(default_factory=dict)
    assignment: Mapping[str, tuple] | None = None   # member -> (TopicPartition, ...)
    owners: Mapping[TopicPartition, str] = field(default_factory=dict)
    partition_counts: Mapping[str, int] | None = None
    retention_resets: Mapping[TopicPartition, tuple] = field(default_factory=dict)
    # the auto_offset_reset of the member that joined last, kept once every
    # member left: where a partition never committed starts (lag counts it)
    auto_offset_reset: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)

    def target(self, member_id: str) -> frozenset:
        """The partitions the assignment gives ``member_id``."""
        return frozenset((self.assignment or {}).get(member_id, ()))

    def owned_by(self, member_id: str) -> frozenset:
        """The partitions ``member_id`` owns now."""
        return frozenset(tp for tp, m in self.owners.items() if m == member_id)


EMPTY = GroupState()


# -- the document (M-7) -------------------------------------------------------

def _tp_key(tp) -> str:
    return f"{tp[0]}/{tp[1]}"           # topic names never contain "/" (M-3)


def _key_tp(key) -> TopicPartition:
    if not isinstance(key, str):
        raise ValueError(f"partition key {key!r} is not a string")
    topic, sep, p = key.rpartition("/")
    if not sep or not topic or not p.isdigit():
        raise ValueError(f"partition key {key!r} is not 'topic/partition'")
    return TopicPartition(topic, int(p))


def _int(v, what, optional=False):
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"{what} is {v!r}, not an integer")
    return v


def _dict(v, what) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"{what} is {type(v).__name__}, not an object")
    return v


def _str(v, what, optional=False):
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise ValueError(f"{what} is {v!r}, not a string")
    return v


def _member(m: str, info) -> Member:
    info = _dict(info, f"member {m!r}")
    topics = info.get("topics", [])
    if not isinstance(topics, list):
        raise ValueError(f"topics of member {m!r} are not a list")
    return Member(
        pid=_int(info.get("pid"), f"pid of member {m!r}", True),
        start=_int(info.get("start"), f"start of member {m!r}", True),
        host=_str(info.get("host"), f"host of member {m!r}", True),
        client_id=_str(info.get("client_id", ""), f"client_id of member {m!r}"),
        topics=tuple(sorted(_str(t, f"a topic of member {m!r}") for t in topics)),
        heartbeat_ms=_int(info.get("heartbeat_ms", 0), f"heartbeat_ms of member {m!r}"),
        session_timeout_ms=_int(info.get("session_timeout_ms", DEFAULT_SESSION_TIMEOUT_MS),
                                f"session_timeout_ms of member {m!r}"),
        joined_ms=_int(info.get("joined_ms", 0), f"joined_ms of member {m!r}"),
        auto_offset_reset=_str(info.get("auto_offset_reset"),
                               f"auto_offset_reset of member {m!r}", True))


def _tp_list(v, what) -> tuple:
    if not isinstance(v, list):
        raise ValueError(f"{what} is not a list")
    out = []
    for tp in v:
        if not isinstance(tp, list) or len(tp) != 2:
            raise ValueError(f"{what} holds {tp!r}, not [topic, partition]")
        out.append(TopicPartition(_str(tp[0], what), _int(tp[1], what)))
    return tuple(out)


_KNOWN = ("generation", "strategy", "members", "assignment", "owners",
          "partition_counts", "retention_resets", "auto_offset_reset")


def from_doc(doc) -> GroupState:
    """The state of a decoded JSON document; ValueError saying what is wrong
    when it does not have the M-7 shape."""
    doc = _dict(doc, "the document")
    members = {_str(m, "a member id"): _member(m, info)
               for m, info in _dict(doc.get("members", {}), "members").items()}
    assignment = doc.get("assignment")
    if assignment is not None:
        assignment = {_str(m, "a member id"): _tp_list(tps, f"assignment of {m!r}")
                      for m, tps in _dict(assignment, "assignment").items()}
    counts = doc.get("partition_counts")
    if counts is not None:
        counts = {_str(t, "a topic"): _int(n, f"partition count of {t!r}")
                  for t, n in _dict(counts, "partition_counts").items()}
        if any(n < 0 for n in counts.values()):
            raise ValueError("a partition count is negative")
    resets = {}
    for k, v in _dict(doc.get("retention_resets", {}), "retention_resets").items():
        if not isinstance(v, list) or len(v) != 2:
            raise ValueError(f"retention_resets of {k!r} is not [count, records]")
        resets[_key_tp(k)] = (_int(v[0], "a retention reset count"),
                              _int(v[1], "a retention reset record count"))
    return GroupState(
        generation=_int(doc.get("generation", 0), "generation"),
        strategy=_str(doc.get("strategy"), "strategy", True),
        members=members, assignment=assignment,
        owners={_key_tp(k): _str(v, f"owner of {k!r}")
                for k, v in _dict(doc.get("owners", {}), "owners").items()},
        partition_counts=counts, retention_resets=resets,
        auto_offset_reset=_str(doc.get("auto_offset_reset"), "auto_offset_reset", True),
        extra={k: v for k, v in doc.items() if k not in _KNOWN})


def to_doc(state: GroupState) -> dict:
    """The M-7 JSON document of ``state``; {} for a group with nothing."""
    if state == EMPTY:
        return {}
    doc = dict(state.extra)
    doc["generation"] = state.generation
    if state.strategy is not None:
        doc["strategy"] = state.strategy
    doc["members"] = {m: _member_doc(i) for m, i in state.members.items()}
    if state.assignment is not None:
        doc["assignment"] = {m: [list(tp) for tp in tps]
                             for m, tps in state.assignment.items()}
    doc["owners"] = {_tp_key(tp): m for tp, m in state.owners.items()}
    if state.partition_counts is not None:
        doc["partition_counts"] = dict(state.partition_counts)
    if state.retention_resets:
        doc["retention_resets"] = {_tp_key(tp): list(v)
                                   for tp, v in state.retention_resets.items()}
    if state.auto_offset_reset is not None:
        doc["auto_offset_reset"] = state.auto_offset_reset
    return doc


def _member_doc(i: Member) -> dict:
    doc = {"pid": i.pid, "start": i.start, "host": i.host, "client_id": i.client_id,
           "topics": list(i.topics), "heartbeat_ms": i.heartbeat_ms,
           "session_timeout_ms": i.session_timeout_ms, "joined_ms": i.joined_ms}
    if i.auto_offset_reset is not None:
        doc["auto_offset_reset"] = i.auto_offset_reset
    return doc


# Every poll of every member reads the document and decodes it again in its
# write transaction; states are immutable, so the states of the last few
# documents seen (read or written) are kept and reused for the same bytes.
_KNOWN_MAX = 64
_known: OrderedDict = OrderedDict()     # document bytes -> GroupState
_known_lock = free_in_child(threading.Lock())


def _remember(raw: bytes, state: GroupState) -> None:
    with _known_lock:
        _known[raw] = state
        if len(_known) > _KNOWN_MAX:
            _known.popitem(last=False)


def decode(group: str, raw: bytes | None, path: str | None = None) -> GroupState:
    """The state stored for ``group`` (EMPTY for None); CorruptGroupError,
    naming the group, when the bytes are not an M-7 document."""
    if raw is None:
        return EMPTY
    with _known_lock:
        state = _known.get(raw)
    if state is None:
        try:
            state = from_doc(json.loads(raw))
        except (ValueError, RecursionError) as exc:     # JSONDecodeError is one
            raise CorruptGroupError(group, str(exc), path) from None
        _remember(raw, state)
    return state


def encode(state: GroupState) -> bytes | None:
    """The bytes to store for ``state``; None: delete the key."""
    doc = to_doc(state)
    if not doc:
        return None
    raw = json.dumps(doc).encode()
    _remember(raw, state)
    return raw


# -- transitions --------------------------------------------------------------

def expire(state: GroupState, now_ms: int, is_alive: Probe,
           keep: str | None = None) -> tuple[GroupState, frozenset]:
    """Remove the members (but ``keep``) that are not alive; returns the new
    state and the ids removed. Their partitions become free to claim.

    A heartbeat further ahead of ``now_ms`` than its session timeout was
    stamped before the wall clock was stepped back (NTP, a VM restored, an
    RTC wrong at boot then put right): it is cut to ``now_ms``, so a member
    that hangs without dying is expired one session timeout from now, not
    as long as the step (years after a wrong RTC) from now."""
    ahead = {m: replace(i, heartbeat_ms=now_ms) for m, i in state.members.items()
             if i.heartbeat_ms - now_ms > i.session_timeout_ms}
    if ahead:
        state = replace(state, members={**state.members, **ahead})
    dead = frozenset(m for m, i in state.members.items()
                     if m != keep and not alive(i, now_ms, is_alive))
    if not dead:
        return state, dead
    return _without(state, dead), dead


def _without(state: GroupState, gone) -> GroupState:
    members = {m: i for m, i in state.members.items() if m not in gone}
    assignment = state.assignment
    if assignment is not None:
        assignment = {m: tps for m, tps in assignment.items() if m not in gone}
    return replace(state, members=members, assignment=assignment,
                   owners={tp: m for tp, m in state.owners.items() if m in members})


def join(state: GroupState, member_id: str, member: Member,
         now_ms: int) -> GroupState:
    """Add ``member`` (not yet in the group), joined and heartbeating now;
    its ``auto_offset_reset`` becomes the group's (M-7)."""
    assert member_id not in state.members, member_id
    member = replace(member, joined_ms=now_ms, heartbeat_ms=now_ms)
    reset = member.auto_offset_reset or state.auto_offset_reset
    return replace(state, members={**state.members, member_id: member},
                   auto_offset_reset=reset)


def heartbeat(state: GroupState, member_id: str, topics, now_ms: int | None) -> GroupState:
    """Renew the member's subscribed topics and (unless ``now_ms`` is None)
    its heartbeat."""
    info = state.members[member_id]
    new = replace(info, topics=tuple(sorted(topics)),
                  heartbeat_ms=info.heartbeat_ms if now_ms is None else now_ms)
    if new == info:
        return state
    return replace(state, members={**state.members, member_id: new})


def heartbeats(state: GroupState, renew: Mapping[str, int]) -> GroupState:
    """Renew the heartbeat of each member of ``renew`` (member_id ->
    now_ms) that is in the group, topics kept: :func:`heartbeat` for each,
    in one new state (one copy of the members, not one per member)."""
    members = dict(state.members)
    changed = False
    for member_id, now_ms in renew.items():
        info = members.get(member_id)
        if info is not None and info.heartbeat_ms != now_ms:
            members[member_id] = replace(info, heartbeat_ms=now_ms)
            changed = True
    return replace(state, members=members) if changed else state


def group_counts(state: GroupState, counts: Mapping[str, int]) -> dict:
    """The partition counts of every topic a member subscribes to: from
    ``counts`` (what the caller looked up; 0: the topic does not exist) and,
    for topics it did not look up, as last stored. Without the stored ones,
    members subscribed to different topics would each rebalance the others'
    topics away."""
    stored = state.partition_counts or {}
    out = {}
    for t in sorted({t for m in state.members.values() for t in m.topics}):
        n = counts.get(t, stored.get(t, 0))
        if n > 0:
            out[t] = n
    return out


def rebalance(state: GroupState, counts: Mapping[str, int]) -> GroupState:
    """A new target assignment of ``counts``' partitions to the members
    (``counts`` as made by :func:`group_counts`)."""
    subs = {m: set(i.topics) for m, i in state.members.items()}
    prev = {m: list(tps) for m, tps in (state.assignment or {}).items()
            if m in state.members}
    new = assign(state.strategy or DEFAULT_STRATEGY, subs, dict(counts), prev)
    valid = {TopicPartition(t, p) for t, n in counts.items() for p in range(n)}
    return replace(
        state, generation=state.generation + 1, partition_counts=dict(counts),
        assignment={m: tuple(TopicPartition(*tp) for tp in tps)
                    for m, tps in new.items()},
        owners={tp: m for tp, m in state.owners.items()
                if tp in valid and m in state.members})


def release(state: GroupState, member_id: str) -> tuple[GroupState, frozenset]:
    """Give up what ``member_id`` owns outside its target; returns the new
    state and the partitions released (whose positions the caller commits
    in the same transaction)."""
    target = state.target(member_id)
    gone = frozenset(tp for tp, m in state.owners.items()
                     if m == member_id and tp not in target)
    if not gone:
        return state, gone
    return replace(state, owners={tp: m for tp, m in state.owners.items()
                                  if tp not in gone}), gone


def claim(state: GroupState, member_id: str) -> GroupState:
    """Take the partitions of ``member_id``'s target that nobody owns."""
    free = [tp for tp in sorted(state.target(member_id)) if tp not in state.owners]
    if not free:
        return state
    return replace(state, owners={**state.owners, **{tp: member_id for tp in free}})


@dataclass(frozen=True)
class Sync:
    """What :func:`sync` did: the new state, whether the member was (re)added,
    and the partitions it released (commit their positions with the state)."""
    state: GroupState
    rejoined: bool
    released: frozenset


def sync(state: GroupState, member_id: str, member: Member, topics,
         counts: Mapping[str, int], now_ms: int, is_alive: Probe,
         strategy: str, beat: bool = True) -> Sync:
    """One poll's look at the group: expire the dead, join (if absent),
    heartbeat (``beat``), rebalance when membership, subscriptions or
    partition counts changed, then release and claim. ``counts``: topic ->
    partitions (0: no such topic) of the topics the caller looked up, at
    least its own (see :func:`group_counts`).

    With ``beat=False`` it tells whether the group needs this member to act
    now (the result's state differs from ``state``) without a heartbeat."""
    if state.strategy is None:
        state = replace(state, strategy=strategy)
    state, dead = expire(state, now_ms, is_alive, keep=member_id)
    changed = bool(dead)
    rejoined = member_id not in state.members
    if rejoined:
        state = join(state, member_id, member, now_ms)
        changed = True
    if state.members[member_id].topics != tuple(sorted(topics)):
        changed = True
    state = heartbeat(state, member_id, topics, now_ms if beat else None)
    counts = group_counts(state, counts)
    if changed or state.partition_counts != counts or state.assignment is None:
        state = rebalance(state, counts)
    state, released = release(state, member_id)
    return Sync(claim(state, member_id), rejoined, released)


def leave(state: GroupState, member_id: str, counts: Mapping[str, int],
          now_ms: int, is_alive: Probe) -> GroupState:
    """Remove ``member_id``; the dead go too, and the rest rebalance. The
    caller commits the member's final positions (only of what it owned:
    ``state.owned_by``) in the same transaction."""
    if member_id not in state.members:
        return state
    state, _ = expire(_without(state, {member_id}), now_ms, is_alive)
    if state.members:
        return rebalance(state, group_counts(state, counts))
    return replace(state, assignment=None, owners={}, members={},
                   generation=state.generation + 1)


def drop_topic(state: GroupState, topic: str) -> GroupState:
    """``topic`` was deleted: nobody owns or is assigned its partitions any
    more, and the next look of each member rebalances (its count is
    forgotten). A member that still thinks it owns one finds it gone
    (pylog.group) and is refused a commit of it (:func:`fence`), so no
    offset of the deleted topic lands on a topic made again under the
    name. The same state when the group never had the topic."""
    counts = state.partition_counts or {}
    if topic not in counts and not any(tp.topic == topic for tp in state.owners):
        return state
    return replace(
        state, generation=state.generation + 1,
        owners={tp: m for tp, m in state.owners.items() if tp.topic != topic},
        assignment=None if state.assignment is None else {
            m: tuple(tp for tp in tps if tp.topic != topic)
            for m, tps in state.assignment.items()},
        partition_counts={t: n for t, n in counts.items() if t != topic})


def moved(old: GroupState, new: GroupState) -> bool:
    """Whether ``new`` differs from ``old`` in what other members act on:
    members, assignment or owners (anything but heartbeats and counters)."""
    return (old.generation != new.generation or old.owners != new.owners
            or old.members.keys() != new.members.keys()
            or old.assignment != new.assignment)


def fence(state: GroupState, group: str, member_id: str, tps) -> None:
    """Refuse (CommitFailedError) a commit by ``member_id`` of ``tps``
    unless it is in the group and owns every one of them (SPEC §5)."""
    if member_id not in state.members:
        raise CommitFailedError(
            f"commit for group {group!r} refused: member {member_id} was "
            "removed from the group (it missed session_timeout_ms or its "
            "process looked dead); poll again to rejoin")
    lost = sorted(tuple(tp) for tp in tps
                  if state.owners.get(TopicPartition(*tp)) != member_id)
    if lost:
        raise CommitFailedError(
            f"commit for group {group!r} refused: member {member_id} no longer "
            f"owns {lost} (the group rebalanced to generation {state.generation})")


def fence_outsider(state: GroupState, group: str, tps, now_ms: int,
                   is_alive: Probe) -> None:
    """Refuse (CommitFailedError) a commit of ``tps`` by a consumer that is
    not a member (it assign()ed its partitions) where a live member owns
    one of them, as Kafka's coordinator refuses a non-member's commit."""
    owned = {}
    for tp in tps:
        m = state.owners.get(TopicPartition(*tp))
        info = state.members.get(m) if m is not None else None
        if info is not None and alive(info, now_ms, is_alive):
            owned[f"{tp[0]}-{tp[1]}"] = m
    if owned:
        raise CommitFailedError(
            f"commit refused: this consumer is not a member of group {group!r} "
            f"(it assign()ed its partitions), and live members of the group own "
            f"{', '.join(f'{tp} ({m})' for tp, m in sorted(owned.items()))}; "
            "commit from the member that owns the partition, give an assign()ed "
            "consumer a group_id of its own, or stop the group's members first "
            "(Kafka's coordinator refuses such a commit too)")


def count_retention_reset(state: GroupState, tp, skipped: int) -> GroupState:
    """Record that retention overtook the group on ``tp``, skipping
    ``skipped`` records (describe_group's ``retention_resets``)."""
    tp = TopicPartition(*tp)
    count, total = state.retention_resets.get(tp, (0, 0))
    return replace(state, retention_resets={**state.retention_resets,
                                            tp: (count + 1, total + skipped)})


def live(state: GroupState, now_ms: int, is_alive: Probe) -> dict:
    """The members that are alive: member_id -> Member."""
    return {m: i for m, i in state.members.items() if alive(i, now_ms, is_alive)}
