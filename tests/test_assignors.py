"""Tests of pylog.assignors: known examples plus hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pylog.assignors import STRATEGIES, assign, moved
from pylog.errors import InvalidArgument


def tps(spec: str):
    """'t0p0 t1p2' -> [('t0', 0), ('t1', 2)]"""
    out = []
    for item in spec.split():
        topic, p = item.split("p")
        out.append((topic, int(p)))
    return sorted(out)


# ---------------------------------------------------------------------------
# known examples
# ---------------------------------------------------------------------------


def test_range_kafka_docs_example():
    members = {"C0": {"t0", "t1"}, "C1": {"t0", "t1"}}
    got = assign("range", members, {"t0": 3, "t1": 3})
    assert got == {"C0": tps("t0p0 t0p1 t1p0 t1p1"), "C1": tps("t0p2 t1p2")}


def test_range_extra_partitions_go_to_first_members():
    members = {"c": {"t"}, "a": {"t"}, "b": {"t"}}
    got = assign("range", members, {"t": 8})
    assert got == {
        "a": [("t", 0), ("t", 1), ("t", 2)],
        "b": [("t", 3), ("t", 4), ("t", 5)],
        "c": [("t", 6), ("t", 7)],
    }


def test_range_per_topic_subscribers():
    members = {"C0": {"t0"}, "C1": {"t0", "t1"}}
    got = assign("range", members, {"t0": 2, "t1": 3, "t2": 4})
    assert got == {"C0": tps("t0p0"), "C1": tps("t0p1 t1p0 t1p1 t1p2")}


def test_roundrobin_kafka_docs_example():
    members = {"C0": {"t0", "t1"}, "C1": {"t0", "t1"}}
    got = assign("roundrobin", members, {"t0": 3, "t1": 3})
    assert got == {"C0": tps("t0p0 t0p2 t1p1"), "C1": tps("t0p1 t1p0 t1p2")}


def test_roundrobin_skips_unsubscribed_members():
    # Kafka javadoc: C0 -> t0, C1 -> t0,t1, C2 -> t0,t1,t2; t0:1, t1:2, t2:3
    members = {"C0": {"t0"}, "C1": {"t0", "t1"}, "C2": {"t0", "t1", "t2"}}
    got = assign("roundrobin", members, {"t0": 1, "t1": 2, "t2": 3})
    assert got == {
        "C0": tps("t0p0"),
        "C1": tps("t1p0"),
        "C2": tps("t1p1 t2p0 t2p1 t2p2"),
    }


def test_sticky_fresh_is_balanced():
    members = {"C0": {"t0", "t1"}, "C1": {"t0", "t1"}, "C2": {"t0", "t1"}}
    got = assign("sticky", members, {"t0": 4, "t1": 3})
    sizes = sorted(len(v) for v in got.values())
    assert sizes == [2, 2, 3]
    assert sorted(tp for v in got.values() for tp in v) == tps(
        "t0p0 t0p1 t0p2 t0p3 t1p0 t1p1 t1p2"
    )


def test_sticky_member_leaves_only_its_partitions_move():
    # Kafka docs example: C0 [t0p0 t1p1 t3p0], C1 [t0p1 t2p0 t3p1],
    # C2 [t1p0 t2p1]; C1 leaves -> C0 and C2 keep theirs.
    prev = {
        "C0": tps("t0p0 t1p1 t3p0"),
        "C1": tps("t0p1 t2p0 t3p1"),
        "C2": tps("t1p0 t2p1"),
    }
    topics = {"t0", "t1", "t2", "t3"}
    counts = {t: 2 for t in topics}
    got = assign("sticky", {"C0": topics, "C2": topics}, counts, prev)
    assert set(prev["C0"]) <= set(got["C0"])
    assert set(prev["C2"]) <= set(got["C2"])
    assert sorted(len(v) for v in got.values()) == [4, 4]
    assert moved(prev, got) == 3


def test_sticky_member_joins_takes_minimum():
    prev = {"a": tps("tp0 tp1 tp2"), "b": tps("tp3 tp4 tp5")}
    members = {"a": {"t"}, "b": {"t"}, "c": {"t"}}
    got = assign("sticky", members, {"t": 6}, prev)
    assert [len(got[m]) for m in "abc"] == [2, 2, 2]
    assert moved(prev, got) == 2
    assert set(got["a"]) <= set(prev["a"]) and set(got["b"]) <= set(prev["b"])


def test_sticky_keeps_previous_when_already_balanced():
    prev = {"a": tps("tp5 tp1"), "b": tps("tp0 tp3"), "c": tps("tp2 tp4")}
    members = {m: {"t"} for m in "abc"}
    assert assign("sticky", members, {"t": 6}, prev) == {
        m: sorted(v) for m, v in prev.items()
    }


def test_sticky_drops_previous_owner_that_unsubscribed():
    prev = {"a": tps("xp0 xp1"), "b": tps("yp0")}
    members = {"a": {"y"}, "b": {"x", "y"}}
    got = assign("sticky", members, {"x": 2, "y": 1}, prev)
    assert got["b"][:2] == tps("xp0 xp1")
    assert all(t in members[m] for m, v in got.items() for t, _ in v)


def test_sticky_ignores_vanished_partitions_and_duplicates():
    prev = {"a": tps("tp0 tp1 tp7"), "b": tps("tp0 tp2")}
    got = assign("sticky", {"a": {"t"}, "b": {"t"}}, {"t": 3}, prev)
    assert got == {"a": tps("tp0 tp1"), "b": tps("tp2")}


def test_sticky_heterogeneous_balance():
    members = {"a": {"x"}, "b": {"x", "y"}, "c": {"y"}}
    got = assign("sticky", members, {"x": 4, "y": 4})
    assert sorted(len(v) for v in got.values()) == [2, 3, 3]
    assert_balanced_by_eligibility(got, members)


# ---------------------------------------------------------------------------
# edge cases and errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_members(strategy):
    assert assign(strategy, {}, {"t": 3}) == {}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_members_without_subscriptions_and_empty_topics(strategy):
    members = {"a": set(), "b": {"empty"}, "c": {"t", "unknown"}}
    got = assign(strategy, members, {"t": 2, "empty": 0, "other": 5})
    assert got == {"a": [], "b": [], "c": [("t", 0), ("t", 1)]}


def test_unknown_strategy_names_valid_ones():
    with pytest.raises(InvalidArgument) as info:
        assign("cooperative", {"a": {"t"}}, {"t": 1})
    for name in STRATEGIES:
        assert name in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_partition_count(bad):
    with pytest.raises(InvalidArgument):
        assign("range", {"a": {"t"}}, {"t": bad})


def test_bad_members():
    with pytest.raises(InvalidArgument):
        assign("range", {"a": "t"}, {"t": 1})
    with pytest.raises(InvalidArgument):
        assign("range", [("a", {"t"})], {"t": 1})


def test_moved_ignores_previously_unowned_and_vanished():
    prev = {"a": tps("tp0 tp1"), "b": []}
    new = {"a": tps("tp0"), "b": tps("tp2 tp3")}
    assert moved(prev, new) == 0  # tp1 vanished, tp2/tp3 were unowned
    assert moved(prev, {"b": tps("tp0 tp1")}) == 2
    assert moved({}, new) == 0


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------

TOPICS = ["t0", "t1", "t2", "t3"]

member_ids = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
counts_st = st.fixed_dictionaries({t: st.integers(0, 12) for t in TOPICS})
members_st = st.dictionaries(
    member_ids, st.frozensets(st.sampled_from(TOPICS + ["nosuch"])), max_size=7
)


def identical_members(n_members: int, topics):
    return {f"m{i:02d}": set(topics) for i in range(n_members)}


def assert_valid(result, members, counts):
    assert set(result) == set(members)
    seen = []
    for member, parts in result.items():
        assert parts == sorted(parts)
        for topic, p in parts:
            assert topic in members[member]
            assert 0 <= p < counts.get(topic, 0)
        seen.extend(parts)
    subscribed = set().union(*members.values()) if members else set()
    expected = sorted(
        (t, p) for t in subscribed for p in range(counts.get(t, 0))
    )
    assert sorted(seen) == expected  # coverage + exclusivity


def assert_balanced_by_eligibility(result, members):
    size = {m: len(v) for m, v in result.items()}
    for owner, parts in result.items():
        for topic, _ in parts:
            for other, topics in members.items():
                if topic in topics:
                    assert size[owner] - size[other] <= 1, (owner, other, result)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(STRATEGIES), members_st, counts_st)
def test_coverage_exclusivity_and_determinism(strategy, members, counts):
    result = assign(strategy, members, counts)
    assert_valid(result, members, counts)
    # determinism, also independent of dict insertion order
    again = assign(strategy, dict(reversed(list(members.items()))), dict(counts))
    assert again == result


@settings(max_examples=200, deadline=None)
@given(members_st, counts_st, members_st)
def test_sticky_valid_with_arbitrary_previous(members, counts, prev_members):
    prev = assign("roundrobin", prev_members, counts)
    result = assign("sticky", members, counts, prev)
    assert_valid(result, members, counts)
    assert_balanced_by_eligibility(result, members)
    assert assign("sticky", members, counts, prev) == result


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["roundrobin", "sticky"]),
    st.integers(1, 8),
    st.lists(st.sampled_from(TOPICS), min_size=1, unique=True),
    counts_st,
)
def test_balance_with_identical_subscriptions(strategy, n, topics, counts):
    members = identical_members(n, topics)
    result = assign(strategy, members, counts)
    sizes = [len(v) for v in result.values()]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 8),
    st.lists(st.sampled_from(TOPICS), min_size=1, unique=True),
    counts_st,
    st.data(),
)
def test_sticky_member_leaving_moves_only_its_partitions(n, topics, counts, data):
    members = identical_members(n, topics)
    before = assign("sticky", members, counts)
    gone = data.draw(st.sampled_from(sorted(members)))
    del members[gone]
    after = assign("sticky", members, counts, before)
    assert_valid(after, members, counts)
    assert moved(before, after) == len(before[gone])
    for m in members:
        assert set(before[m]) <= set(after[m])
    sizes = [len(v) for v in after.values()]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 8),
    st.lists(st.sampled_from(TOPICS), min_size=1, unique=True),
    counts_st,
    st.randoms(use_true_random=False),
)
def test_sticky_member_joining_moves_minimum(n, topics, counts, rnd):
    members = identical_members(n, topics)
    total = sum(counts[t] for t in topics)
    # a balanced but otherwise arbitrary previous assignment
    parts = sorted((t, p) for t in topics for p in range(counts[t]))
    rnd.shuffle(parts)
    ids = sorted(members)
    rnd.shuffle(ids)
    before = {m: sorted(parts[i :: n]) for i, m in enumerate(ids)}
    members["new"] = set(topics)
    after = assign("sticky", members, counts, before)
    assert_valid(after, members, counts)
    sizes = [len(v) for v in after.values()]
    assert max(sizes) - min(sizes) <= 1
    assert len(after["new"]) == total // (n + 1)
    assert moved(before, after) == len(after["new"])
    for m in ids:
        assert set(after[m]) <= set(before[m])


@settings(max_examples=100, deadline=None)
@given(members_st, counts_st)
def test_sticky_is_idempotent(members, counts):
    first = assign("sticky", members, counts)
    second = assign("sticky", members, counts, first)
    assert second == first
    assert moved(first, second) == 0
