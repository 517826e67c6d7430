"""Consumer-group membership, assignment and ownership (SPEC §5, FORMAT.rst M-7).

Everything that changes a group happens in one LMDB write transaction on the
group's document::

    {"generation": int, "strategy": str,
     "members": {member_id: {"pid", "start", "host", "topics", "heartbeat_ms",
                             "session_timeout_ms", "client_id", "joined_ms"}},
     "assignment": {member_id: [[topic, partition], ...]},   # the target
     "owners": {"topic/partition": member_id},               # who holds it now
     "partition_counts": {topic: n}}

Ownership is a two-step hand-off, so that a partition is never fetched by two
live members at once (G3): the assignment names the target owner; the old
owner releases (committing its position in the same transaction) the next
time it polls, and only then does the new owner claim it. A member is removed
when it leaves, when its process is gone (checked at once through its pid and
process start time on this host) or when it misses ``session_timeout_ms`` of
heartbeats; its partitions are then free to be claimed.

Thread safety: a GroupMember belongs to one Consumer (not thread-safe);
different members may live in any threads and processes.
"""

from __future__ import annotations

import os
import socket
import time

from .assignors import STRATEGIES, assign
from .errors import GroupNotEmpty, InvalidArgument, OffsetOutOfRange, TopicNotFound
from .records import TopicPartition

GROUP_CHECK_INTERVAL_S = 0.1     # how often a polling member looks at the group
_HOST = socket.gethostname()


def _now_ms() -> int:
    return int(time.time() * 1000)


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), None if unknown;
    used with the pid to tell a live member from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):       # zombie: the process is gone
        return -1
    return int(fields[19])


def member_alive(info: dict, now_ms: int) -> bool:
    """Is the member described by ``info`` still alive?"""
    timeout = info.get("session_timeout_ms", 10000)
    if now_ms - info.get("heartbeat_ms", 0) > timeout:
        return False
    if info.get("host") != _HOST:
        return True                     # other host: only heartbeats tell
    pid = info.get("pid")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (TypeError, OverflowError):
        return False
    start = process_start_time(pid)
    if start == -1:
        return False
    return start is None or info.get("start") in (None, start)


def _tp_key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"       # topic names never contain "/" (M-3)


def _key_tp(key: str) -> TopicPartition:
    topic, _, p = key.rpartition("/")
    return TopicPartition(topic, int(p))


def _rebalance(doc: dict, counts: dict) -> None:
    members = doc.get("members", {})
    subs = {m: set(info.get("topics", [])) for m, info in members.items()}
    usable = {t: n for t, n in counts.items()}
    prev = {m: [tuple(tp) for tp in tps]
            for m, tps in doc.get("assignment", {}).items() if m in members}
    new = assign(doc.get("strategy", "sticky"), subs, usable, prev)
    doc["assignment"] = {m: [list(tp) for tp in tps] for m, tps in new.items()}
    doc["generation"] = doc.get("generation", 0) + 1
    doc["partition_counts"] = dict(counts)
    # owners of partitions that no longer exist are dropped
    valid = {_tp_key(t, p) for t, n in counts.items() for p in range(n)}
    doc["owners"] = {k: v for k, v in doc.get("owners", {}).items()
                     if k in valid and v in members}


def _purge_dead(doc: dict, now_ms: int, keep: str | None = None) -> list:
    members = doc.get("members", {})
    dead = [m for m, info in members.items()
            if m != keep and not member_alive(info, now_ms)]
    for m in dead:
        del members[m]
        doc.get("assignment", {}).pop(m, None)
    if dead:
        doc["owners"] = {k: v for k, v in doc.get("owners", {}).items()
                         if v in members}
    return dead


class GroupMember:
    """This consumer's membership in a group; see the module docstring."""

    def __init__(self, log, group_id: str, *, strategy: str,
                 session_timeout_ms: int, client_id: str | None):
        if strategy not in STRATEGIES:
            raise InvalidArgument(
                f"partition_assignment_strategy={strategy!r}; expected one of "
                f"{STRATEGIES}")
        self.log = log
        self.group_id = group_id
        self.strategy = strategy
        self.session_timeout_ms = session_timeout_ms
        self.member_id = (f"{client_id or 'consumer'}-{_HOST}-{os.getpid()}-"
                          f"{os.urandom(4).hex()}")
        self.generation = -1
        self.owned: set[TopicPartition] = set()
        self.joined = False
        self.next_check = 0.0
        # monotonic time until which no other member can take this one's
        # partitions: others expire it session_timeout_ms after its last
        # heartbeat; half of that leaves room for clock steps (G3)
        self.lease_until = 0.0
        self._next_heartbeat = 0.0
        self._info = {"pid": os.getpid(), "start": process_start_time(os.getpid()),
                      "host": _HOST, "client_id": client_id or "",
                      "session_timeout_ms": session_timeout_ms}

    def _counts(self, topics) -> dict:
        counts = {}
        for t in sorted(topics):
            try:
                counts[t] = self.log.partitions_for(t, max_age_s=0)
            except TopicNotFound:
                pass
        return counts

    def tick(self, topics: set, positions_to_commit, force: bool = False):
        """Look at the group (rate-limited) and act: join, purge dead members,
        rebalance, release what is no longer ours (committing
        ``positions_to_commit()`` for it) and claim what is.

        Returns (gained, lost): sets of TopicPartition."""
        now = time.monotonic()
        if not force and now < self.next_check:
            return set(), set()
        self.next_check = now + GROUP_CHECK_INTERVAL_S
        meta = self.log.meta
        me = self.member_id
        now_ms = _now_ms()
        counts = self._counts(topics)
        doc = meta.get_group(self.group_id)
        members = doc.get("members", {})
        mine = members.get(me)
        target = {tuple(tp) for tp in doc.get("assignment", {}).get(me, [])}
        owners = doc.get("owners", {})
        need = (mine is None or sorted(mine.get("topics", [])) != sorted(topics)
                or doc.get("partition_counts") != counts
                or now >= self._next_heartbeat
                or any(not member_alive(i, now_ms) for m, i in members.items() if m != me)
                or any(owners.get(_tp_key(*tp)) is None for tp in target)
                or any(v == me and _key_tp(k) not in target for k, v in owners.items()))
        if not need:
            return set(), set()
        self._next_heartbeat = now + self.session_timeout_ms / 3000.0
        lease_until = now + self.session_timeout_ms / 2000.0
        before = set(self.owned)

        def update(doc, commit):
            members = doc.setdefault("members", {})
            doc.setdefault("strategy", self.strategy)
            rebalance = False
            if _purge_dead(doc, now_ms, keep=me):
                rebalance = True
            info = members.get(me)
            if info is None:
                info = dict(self._info, joined_ms=now_ms)
                members[me] = info
                rebalance = True
                rejoined.append(True)
            if sorted(info.get("topics", [])) != sorted(topics):
                info["topics"] = sorted(topics)
                rebalance = True
            info["heartbeat_ms"] = now_ms
            if doc.get("partition_counts") != counts or "assignment" not in doc:
                rebalance = True
            if rebalance:
                _rebalance(doc, counts)
            owners = doc.setdefault("owners", {})
            target = {tuple(tp) for tp in doc["assignment"].get(me, [])}
            release = [k for k, v in owners.items()
                       if v == me and _key_tp(k) not in target]
            if release:
                commit(positions_to_commit({_key_tp(k) for k in release}))
                for k in release:
                    del owners[k]
            for tp in target:
                k = _tp_key(*tp)
                if owners.get(k) is None:
                    owners[k] = me
            return doc["generation"], {_key_tp(k) for k, v in owners.items() if v == me}

        rejoined: list = []
        self.generation, owned = self.log.meta.update_group(self.group_id, update)
        self.joined = True
        self.owned = owned
        self.lease_until = lease_until
        if rejoined:
            # removed from the group meanwhile (it looked dead): what it
            # owns now is owned anew, and others may have read on from
            # where it was: every position is stale
            return set(owned), before
        return owned - before, before - owned

    def count_retention_reset(self, tp: TopicPartition, skipped: int) -> None:
        """Record in the group that retention overtook it on ``tp``
        (describe_group's ``retention_resets``)."""
        def update(doc, commit):
            resets = doc.setdefault("retention_resets", {})
            count, total = resets.get(_tp_key(*tp), (0, 0))
            resets[_tp_key(*tp)] = [count + 1, total + skipped]
        self.log.meta.update_group(self.group_id, update)

    def commit(self, offsets: dict) -> None:
        self.log.meta.commit(self.group_id, offsets, member_id=self.member_id)

    def leave(self, final_offsets: dict | None) -> None:
        """Leave the group, releasing partitions (and committing
        ``final_offsets`` for owned ones in the same transaction)."""
        if not self.joined:
            return
        me = self.member_id
        topics = set()
        for info in self.log.meta.get_group(self.group_id).get("members", {}).values():
            topics.update(info.get("topics", []))
        counts = self._counts(topics)

        def update(doc, commit):
            owners = doc.get("owners", {})
            if final_offsets:
                mine = {tp: o for tp, o in final_offsets.items()
                        if owners.get(_tp_key(*tp)) == me}
                commit(mine)
            members = doc.get("members", {})
            if me in members:
                del members[me]
                doc.get("assignment", {}).pop(me, None)
                doc["owners"] = {k: v for k, v in owners.items() if v != me}
                _purge_dead(doc, _now_ms())
                if members:
                    _rebalance(doc, counts)
                else:
                    doc.pop("assignment", None)
                    doc["owners"] = {}
                    doc["members"] = {}
                    doc["generation"] = doc.get("generation", 0) + 1
        self.log.meta.update_group(self.group_id, update)
        self.joined = False
        self.owned = set()
        self.lease_until = 0.0


def live_members(log, group: str) -> dict:
    now_ms = _now_ms()
    doc = log.meta.get_group(group)
    return {m: i for m, i in doc.get("members", {}).items()
            if member_alive(i, now_ms)}


def describe_group(log, group: str) -> dict:
    """Members, assignment, committed offsets and lag of ``group``."""
    doc = log.meta.get_group(group)
    now_ms = _now_ms()
    offsets = log.meta.group_offsets(group)
    owners = doc.get("owners", {})
    members = []
    for m, info in sorted(doc.get("members", {}).items()):
        members.append({
            "member_id": m, "client_id": info.get("client_id", ""),
            "host": info.get("host"), "pid": info.get("pid"),
            "topics": info.get("topics", []),
            "alive": member_alive(info, now_ms),
            "assignment": [TopicPartition(*tp) for tp in
                           doc.get("assignment", {}).get(m, [])],
            "owned": sorted(_key_tp(k) for k, v in owners.items() if v == m)})
    partitions = []
    resets = doc.get("retention_resets", {})
    for (topic, p), committed in sorted(offsets.items()):
        try:
            end = log.partition(topic, p).state().next_offset
        except TopicNotFound:
            continue
        owner = owners.get(_tp_key(topic, p))
        count, skipped = resets.get(_tp_key(topic, p), (0, 0))
        partitions.append({"topic": topic, "partition": p,
                           "committed": committed, "end_offset": end,
                           "lag": max(0, end - committed), "owner": owner,
                           "retention_resets": count,
                           "records_skipped_by_retention": skipped})
    return {"group": group, "generation": doc.get("generation", 0),
            "strategy": doc.get("strategy"),
            "state": "Stable" if members else "Empty",
            "members": members, "partitions": partitions,
            "lag": sum(p["lag"] for p in partitions),
            # times retention deleted records before this group read them
            # (the consumer then resumed at the log start), all partitions
            "retention_resets": sum(c for c, _ in resets.values()),
            "records_skipped_by_retention": sum(n for _, n in resets.values())}


RESET_TARGETS = ("earliest", "latest", "offset", "datetime")


def reset_group(log, group: str, *, to: str, value=None, topic=None,
                execute: bool = True) -> dict:
    """Plan (and with ``execute`` apply) new committed offsets for ``group``."""
    if to not in RESET_TARGETS:
        raise InvalidArgument(f"to={to!r}; expected one of {RESET_TARGETS}")
    if to in ("offset", "datetime") and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidArgument(f"reset to {to} needs an int value, got {value!r}")
    alive = live_members(log, group)
    if alive and execute:
        raise GroupNotEmpty(
            f"reset of group {group!r} refused: it has {len(alive)} live "
            f"member(s) ({', '.join(sorted(alive))}); stop them first")
    current = log.meta.group_offsets(group)
    tps = set(current)
    if topic is not None:
        n = log.partitions_for(topic, max_age_s=0)
        tps = {tp for tp in tps if tp[0] == topic} | {(topic, p) for p in range(n)}
    plan = {}
    for t, p in sorted(tps):
        try:
            part = log.partition(t, p)
        except TopicNotFound:
            continue
        st = part.state()
        if to == "earliest":
            new = st.log_start_offset
        elif to == "latest":
            new = st.next_offset
        elif to == "offset":
            if not st.log_start_offset <= value <= st.next_offset:
                raise OffsetOutOfRange(
                    f"reset group {group!r} on {t}-{p} to offset {value}: valid "
                    f"offsets are [{st.log_start_offset}, {st.next_offset}]; "
                    "use to='earliest' or to='latest' for the ends")
            new = value
        else:
            found = part.offset_for_time(value)
            new = st.next_offset if found is None else found
        plan[TopicPartition(t, p)] = new
    if execute and plan:
        log.meta.commit(group, {(tp.topic, tp.partition): o for tp, o in plan.items()})
    return plan
