"""Group membership transitions (pylog.groupstate) on a fake clock.

Members are simulated the way pylog.group.GroupMember drives the
transitions: each poll is one atomic step on the shared state (one LMDB
write transaction in the real thing), the member fetches a partition only
while the partition is in its view and its lease holds, and a dead member's
process is gone (the injected liveness probe says so). Properties (G3):

- never two fetchers: at any time a partition is fetchable by at most one
  member, and that member is its owner in the state;
- release before claim: a partition changes owner only when its old owner
  released it itself (poll or leave) or was no longer alive (its session
  timed out or its process died);
- the document round-trips: from_doc(to_doc(state)) == state;
- with the clock stopped, polling converges: every partition of a
  subscribed topic is owned by the member the assignment names.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pylog import CommitFailedError, CorruptLogError
from pylog import groupstate as gs
from pylog.errors import CorruptGroupError
from pylog.records import TopicPartition as TP

SLOTS = 4
TIMEOUTS_MS = (300, 1000, 3000, 1000)
TOPIC_SETS = (("a",), ("b",), ("a", "b"))


class Slot:
    """One consumer process: its incarnations get new member ids and pids."""

    def __init__(self, i):
        self.i = i
        self.incarnation = 0
        self.dead = False
        self.joined = False
        self.topics = TOPIC_SETS[i % len(TOPIC_SETS)]
        self.timeout_ms = TIMEOUTS_MS[i]
        self.view = frozenset()
        self.lease_until = 0
        self.next_heartbeat = 0

    @property
    def member_id(self):
        return f"m{self.i}-{self.incarnation}"

    @property
    def pid(self):
        return 100 * self.incarnation + self.i

    def template(self):
        return gs.Member(pid=self.pid, start=1, host="h",
                         session_timeout_ms=self.timeout_ms)


class GroupMachine(RuleBasedStateMachine):
    strategy = "sticky"

    def __init__(self):
        super().__init__()
        self.now = 1_000_000
        self.state = gs.EMPTY
        self.counts = {"a": 2, "b": 3}
        self.slots = [Slot(i) for i in range(SLOTS)]
        self.dead_pids = set()

    def is_alive(self, member):
        return member.pid not in self.dead_pids

    def counts_for(self, topics):
        return {t: self.counts[t] for t in sorted(topics)}

    def step(self, actor, new):
        """Apply one transaction by ``actor``; check release before claim."""
        old = self.state
        for tp, owner in old.owners.items():
            if new.owners.get(tp) != owner and owner != actor:
                assert not gs.alive(old.members[owner], self.now, self.is_alive), \
                    f"{tp} taken from live {owner} by {actor}"
        self.state = new

    def poll(self, s):
        """GroupMember.tick, forced (no rate limit)."""
        counts = self.counts_for(s.topics)
        sync = lambda beat: gs.sync(self.state, s.member_id, s.template(), s.topics,  # noqa: E731
                                    counts, self.now, self.is_alive, self.strategy,
                                    beat=beat)
        if self.now < s.next_heartbeat and sync(False).state == self.state:
            return
        s.next_heartbeat = self.now + s.timeout_ms // 3
        done = sync(True)
        assert done.released <= s.view | self.state.owned_by(s.member_id)
        self.step(s.member_id, done.state)
        s.view = done.state.owned_by(s.member_id)
        s.lease_until = self.now + s.timeout_ms // 2
        s.joined = True

    @rule(i=st.integers(0, SLOTS - 1))
    def tick(self, i):
        s = self.slots[i]
        if s.dead:      # restarted: a new process and member
            s.dead, s.joined, s.view = False, False, frozenset()
            s.incarnation += 1
        self.poll(s)

    @rule(i=st.integers(0, SLOTS - 1))
    def leave(self, i):
        s = self.slots[i]
        if s.dead or not s.joined:
            return
        topics = set()
        for m in self.state.members.values():
            topics.update(m.topics)
        self.step(s.member_id, gs.leave(self.state, s.member_id, self.counts_for(topics),
                                        self.now, self.is_alive))
        assert s.member_id not in self.state.members
        s.joined, s.view, s.lease_until = False, frozenset(), 0

    @rule(i=st.integers(0, SLOTS - 1))
    def die(self, i):
        s = self.slots[i]
        s.dead = True
        self.dead_pids.add(s.pid)

    # steps that land on the edges of leases and session timeouts
    EDGES = sorted({t * k // 2 + d for t in TIMEOUTS_MS for k in (1, 2) for d in (-1, 0, 1)})

    @rule(dt=st.integers(0, 4000) | st.sampled_from(EDGES))
    def advance(self, dt):
        self.now += dt

    @rule(i=st.integers(0, SLOTS - 1), topics=st.sampled_from(TOPIC_SETS))
    def subscribe(self, i, topics):
        self.slots[i].topics = topics

    @rule(topic=st.sampled_from(("a", "b")))
    def add_partition(self, topic):
        self.counts[topic] += 1

    @invariant()
    def never_two_fetchers(self):
        fetchers = {}
        for s in self.slots:
            if s.dead or self.now > s.lease_until:
                continue
            for tp in s.view:
                assert tp not in fetchers, f"{tp} fetched by {fetchers[tp]} and {s.member_id}"
                fetchers[tp] = s.member_id
                assert self.state.owners.get(tp) == s.member_id

    @invariant()
    def owners_are_members_of_real_partitions(self):
        for tp, m in self.state.owners.items():
            assert m in self.state.members
            assert tp.partition < self.counts[tp.topic]

    @invariant()
    def document_round_trips(self):
        raw = gs.encode(self.state)
        assert (gs.from_doc(json.loads(raw)) if raw else gs.EMPTY) == self.state

    def teardown(self):
        # the clock stopped, every live member polls until nothing changes
        for _ in range(8):
            before = self.state
            for s in self.slots:
                if not s.dead:
                    s.next_heartbeat = self.now + 1     # only act on changes
                    self.poll(s)
            if self.state == before:
                break
        else:
            raise AssertionError("polling never converged")
        live = [s for s in self.slots if not s.dead]
        if not live:
            return
        want = {TP(t, p) for s in live for t in s.topics for p in range(self.counts[t])}
        assert set(self.state.owners) == want
        for tp, m in self.state.owners.items():
            assert tp in self.state.target(m)


RUN = settings(max_examples=150, stateful_step_count=40, deadline=None,
               suppress_health_check=[HealthCheck.too_slow])
TestSticky = GroupMachine.TestCase
TestSticky.settings = RUN


class RangeMachine(GroupMachine):
    strategy = "range"


class RoundRobinMachine(GroupMachine):
    strategy = "roundrobin"


TestRange = RangeMachine.TestCase
TestRange.settings = RUN
TestRoundRobin = RoundRobinMachine.TestCase
TestRoundRobin.settings = RUN


# -- single transitions ---------------------------------------------------------

def member(pid=1, timeout_ms=1000):
    return gs.Member(pid=pid, start=1, host="h", session_timeout_ms=timeout_ms)


def joined(*ids, now=0, counts=None):
    state = gs.EMPTY
    for i, m in enumerate(ids):
        state = gs.sync(state, m, member(pid=i), ["t"], counts or {"t": 4}, now,
                        lambda _: True, "sticky").state
    return state


def test_a_new_owner_waits_for_the_old_one_to_release():
    state = joined("a")
    assert state.owned_by("a") == {TP("t", p) for p in range(4)}
    b = gs.sync(state, "b", member(pid=2), ["t"], {"t": 4}, 0, lambda _: True, "sticky")
    assert b.rejoined and b.state.owned_by("b") == set()     # a still owns all
    a = gs.sync(b.state, "a", member(pid=1), ["t"], {"t": 4}, 0, lambda _: True, "sticky")
    assert a.released == b.state.target("b") and len(a.released) == 2
    b2 = gs.sync(a.state, "b", member(pid=2), ["t"], {"t": 4}, 0, lambda _: True, "sticky")
    assert b2.state.owned_by("b") == a.released


def test_a_dead_member_is_expired_at_once_and_a_silent_one_after_its_timeout():
    state = joined("a", "b")
    alive = lambda m: m.pid != 0     # noqa: E731  ("a" has pid 0)
    after, dead = gs.expire(state, 0, alive)
    assert dead == {"a"} and "a" not in after.members
    assert all(m == "b" for m in after.owners.values())
    assert gs.expire(state, 1000, lambda _: True)[1] == frozenset()
    assert gs.expire(state, 1001, lambda _: True)[1] == {"a", "b"}


def test_fence_refuses_a_removed_member_and_a_moved_partition():
    state = joined("a")
    gs.fence(state, "g", "a", [("t", 0)])
    with pytest.raises(CommitFailedError, match="was removed"):
        gs.fence(state, "g", "x", [("t", 0)])
    moved = gs.GroupState(members=state.members, owners={TP("t", 0): "b"})
    with pytest.raises(CommitFailedError, match=r"no longer owns \[\('t', 0\)\]"):
        gs.fence(moved, "g", "a", [("t", 0)])


def test_heartbeats_renews_several_members_as_heartbeat_does_each():
    state = joined("a", "b", "c")
    renewed = gs.heartbeats(state, {"a": 500, "c": 700, "gone": 900})
    one_by_one = gs.heartbeat(gs.heartbeat(state, "a", ("t",), 500), "c", ("t",), 700)
    assert renewed == one_by_one
    assert {m: i.heartbeat_ms for m, i in renewed.members.items()} == \
        {"a": 500, "b": 0, "c": 700}
    assert gs.heartbeats(state, {"b": 0, "gone": 900}) is state     # nothing to write


def test_the_last_member_leaving_empties_the_group():
    state = gs.leave(joined("a"), "a", {"t": 4}, 0, lambda _: True)
    assert state.members == {} and state.owners == {} and state.assignment is None
    assert gs.leave(state, "a", {"t": 4}, 0, lambda _: True) is state


def test_retention_resets_are_counted():
    state = gs.count_retention_reset(gs.EMPTY, ("t", 1), 5)
    state = gs.count_retention_reset(state, TP("t", 1), 2)
    assert state.retention_resets == {TP("t", 1): (2, 7)}
    assert gs.to_doc(state)["retention_resets"] == {"t/1": [2, 7]}


def test_unknown_keys_survive_a_rewrite():
    raw = json.dumps({"generation": 3, "future": {"x": 1}}).encode()
    assert json.loads(gs.encode(gs.decode("g", raw)))["future"] == {"x": 1}


DAMAGED = [
    b"{not json",
    b"\xff\xfe",
    b"[]",
    b'{"members": 5}',
    b'{"members": {"m": {"pid": "x"}}}',
    b'{"members": {"m": {"topics": "t"}}}',
    b'{"owners": {"t0": "m"}}',
    b'{"owners": {"t/0": 7}}',
    b'{"assignment": {"m": [["t"]]}}',
    b'{"generation": "1"}',
    b'{"partition_counts": {"t": null}}',
    b'{"retention_resets": {"t/0": 3}}',
    b"[" * 100000,
]


@pytest.mark.parametrize("raw", DAMAGED)
def test_a_damaged_document_names_the_group(raw):
    with pytest.raises(CorruptGroupError) as ei:
        gs.decode("orders", raw, "/x/meta/data.mdb")
    assert isinstance(ei.value, CorruptLogError) and ei.value.group == "orders"
    text = str(ei.value)
    assert "'orders'" in text and "/x/meta/data.mdb" in text and "restore" in text


@given(st.dictionaries(st.sampled_from(gs._KNOWN + ("x",)),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                                    lambda c: st.lists(c, max_size=3)
                                    | st.dictionaries(st.text(max_size=4), c, max_size=3),
                                    max_leaves=8)))
@settings(max_examples=300, deadline=None)
def test_any_json_decodes_or_is_refused_as_damage(doc):
    """No shape of JSON escapes as anything but CorruptGroupError."""
    try:
        state = gs.decode("g", json.dumps(doc).encode())
    except CorruptGroupError:
        return
    assert gs.from_doc(json.loads(gs.encode(state) or b"{}")) == state
