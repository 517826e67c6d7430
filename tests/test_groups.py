"""Consumer groups across threads and processes (SPEC §5, G3)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import childproc
import pytest

import pylog
from pylog import TopicPartition as TP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env():
    return dict(os.environ, PYTHONPATH=ROOT)


def produce(log, topic, n, partitions):
    log.create_topic(topic, partitions=partitions, exist_ok=True)
    p = log.producer()
    p.send_batch(topic, [b"%d" % i for i in range(n)])
    for i in range(n):
        p.send(topic, b"k%d" % i, key=b"%d" % i)


def test_three_groups_each_receive_everything(tmp_path):
    with pylog.open(tmp_path, sync="never") as log:
        produce(log, "orders", 100, 4)
        total = sum(pi.end_offset for pi in log.describe_topic("orders").partition_info)
        for g in ("inventory", "email", "fraud"):
            c = log.consumer("orders", group_id=g, auto_offset_reset="earliest")
            got = []
            while batch := c.poll(timeout=0.2, max_records=1000):
                got.extend(batch)
            assert len(got) == total
            assert len({(r.partition, r.offset) for r in got}) == total
            c.close()


MEMBER = textwrap.dedent("""
    import os, sys, time, pylog
    path, group, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    log = pylog.open(path, sync="never")
    c = log.consumer("t", group_id=group, auto_offset_reset="earliest",
                     enable_auto_commit=False, session_timeout_ms=30000, client_id=tag)
    out = open(os.path.join(path, "seen-" + tag), "a")
    deadline = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < deadline:
        recs = c.poll(timeout=0.1)
        for r in recs:
            out.write(f"{r.partition} {r.offset}\\n")
        out.flush()
        os.fsync(out.fileno())
        if recs:
            c.commit()
        print("owned", sorted(p for _, p in c.assignment()), flush=True)
    c.close()
""")


def read_seen(path):
    seen = []
    for name in os.listdir(path):
        if name.startswith("seen-"):
            with open(os.path.join(path, name)) as f:
                seen += [(name, tuple(map(int, line.split()))) for line in f if line.strip()]
    return seen


def test_threads_and_processes_split_partitions(tmp_path):
    """Four members (two threads + two processes) split eight partitions:
    no overlap, full coverage."""
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=8)
        procs = [subprocess.Popen([sys.executable, "-c", MEMBER, str(tmp_path), "g", f"p{i}", "6"],
                                  stdout=subprocess.PIPE, env=child_env(), text=True)
                 for i in range(2)]
        owned = {}
        stop = threading.Event()

        def thread_member(tag):
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest", client_id=tag,
                             session_timeout_ms=30000)
            while not stop.is_set():
                c.poll(timeout=0.1)
                owned[tag] = {p for _, p in c.assignment()}
            c.close()

        threads = [threading.Thread(target=thread_member, args=(f"t{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        # wait until the group is stable: 4 members, every partition owned once
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            d = log.describe_group("g")
            owners = {}
            for m in d["members"]:
                for tp in m["owned"]:
                    owners.setdefault(tp, []).append(m["member_id"])
            if len(d["members"]) == 4 and len(owners) == 8 and \
                    all(len(v) == 1 for v in owners.values()) and \
                    all(len(m["owned"]) == 2 for m in d["members"]):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"group never stabilised: {d}")
        stop.set()
        for t in threads:
            t.join()
        for p in procs:
            p.wait(timeout=30)


def test_sigkill_member_hands_partitions_to_survivor(tmp_path):
    """A member process SIGKILLed mid-stream: its partitions move to the
    survivor at once (pid check, not the 30 s session timeout), and every
    record is processed at least once with no gap."""
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=4)
        p = log.producer()
        victim = subprocess.Popen(
            [sys.executable, "-c", MEMBER, str(tmp_path), "g", "victim", "60"],
            stdout=subprocess.PIPE, env=child_env(), text=True)
        childproc.expect(victim, b"owned", prefix=True)
        survivor = subprocess.Popen(
            [sys.executable, "-c", MEMBER, str(tmp_path), "g", "survivor", "12"],
            stdout=subprocess.PIPE, env=child_env(), text=True)
        childproc.expect(survivor, b"owned", prefix=True)
        for i in range(400):
            p.send("t", b"%d" % i, partition=i % 4)
            if i == 200:
                time.sleep(0.5)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8:
            line = survivor.stdout.readline()
            if line.strip() == "owned [0, 1, 2, 3]":
                break
        else:
            pytest.fail("survivor never got all partitions")
        assert time.monotonic() - t0 < 8     # far below session_timeout_ms=30000
        survivor.wait(timeout=30)
        seen = {rec for _, rec in read_seen(tmp_path)}
        want = {(i % 4, i // 4) for i in range(400)}
        assert want <= seen, f"missing {sorted(want - seen)[:10]}"


def test_stale_member_commit_is_refused(tmp_path):
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=2)
        log.producer().send_batch("t", [b"x"] * 10, partition=0)
        # (max_poll_interval_ms: no background heartbeat after 250 ms)
        a = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False, session_timeout_ms=200,
                         max_poll_interval_ms=250)
        a.poll(timeout=0.5)
        assert a.assignment() == {TP("t", 0), TP("t", 1)}
        time.sleep(0.8)      # a misses its session timeout
        b = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False, session_timeout_ms=10000)
        b.poll(timeout=0.5)
        with pytest.raises(pylog.CommitFailedError):
            a.commit({TP("t", 0): 5})
        b.close()
        a.close(autocommit=False)


def test_rebalance_handoff_commits_and_never_overlaps(tmp_path):
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=4)
        prod = log.producer()
        for i in range(100):
            prod.send("t", b"%d" % i, partition=i % 4)
        a = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        got_a = a.poll(timeout=0.5, max_records=1000)
        assert len(got_a) == 100
        b = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            b.poll(timeout=0.05)
            a.poll(timeout=0.05)
            if len(a.assignment()) == 2 and len(b.assignment()) == 2:
                break
        assert a.assignment().isdisjoint(b.assignment())
        assert len(a.assignment() | b.assignment()) == 4
        # a committed its positions when it released: b re-reads nothing
        assert b.poll(timeout=0.2) == []
        for i in range(8):
            prod.send("t", b"new", partition=i % 4)
        ga = a.poll(timeout=0.5)
        gb = b.poll(timeout=0.5)
        assert len(ga) == 4 and len(gb) == 4
        a.close()
        b.close()


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "sticky"])
def test_strategies(tmp_path, strategy):
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=6)
        cs = [log.consumer("t", group_id="g", partition_assignment_strategy=strategy)
              for _ in range(3)]
        for _ in range(5):
            for c in cs:
                c.poll(timeout=0.05)
        owned = [c.assignment() for c in cs]
        assert sum(map(len, owned)) == 6 and all(len(o) == 2 for o in owned)
        for c in cs:
            c.close()
    with pylog.open(tmp_path) as log, pytest.raises(pylog.InvalidArgument):
        log.consumer("t", group_id="h", partition_assignment_strategy="magic")


# -- GroupMember on injected clocks and liveness (no sleeping) --------------------

class FakeClock:
    def __init__(self):
        self.s = 1000.0

    def monotonic(self):
        return self.s

    def wall_ms(self):
        return int(self.s * 1000)


def nothing(tps):
    return {}      # positions to commit when releasing: none read


def fake_member(log, clock, dead, *, timeout_ms=1000, tag="m"):
    from pylog.group import GroupMember
    return GroupMember(log, "g", strategy="sticky", session_timeout_ms=timeout_ms,
                       client_id=tag, wall_ms=clock.wall_ms, monotonic=clock.monotonic,
                       is_alive=lambda m: m.client_id not in dead)


def test_a_silent_member_loses_its_partitions_after_its_session_timeout(tmp_path):
    clock, dead = FakeClock(), set()
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=4)
        a = fake_member(log, clock, dead, tag="a")
        b = fake_member(log, clock, dead, tag="b")
        a.tick({"t"}, nothing, force=True)
        assert len(a.owned) == 4
        b.tick({"t"}, nothing, force=True)
        assert b.owned == set()            # a has not released yet
        a.tick({"t"}, nothing, force=True)    # a releases half ...
        b.tick({"t"}, nothing, force=True)    # ... and only then b claims it
        assert len(a.owned) == len(b.owned) == 2 and a.owned.isdisjoint(b.owned)
        clock.s += 0.6                     # a stops polling; its lease ends
        assert clock.s > a.lease_until
        b.tick({"t"}, nothing, force=True)
        assert len(b.owned) == 2           # within a's session: a keeps its share
        clock.s += 0.5                     # past a's session timeout
        b.tick({"t"}, nothing, force=True)
        assert len(b.owned) == 4
        with pytest.raises(pylog.CommitFailedError, match="was removed"):
            a.commit({("t", 0): 1})
        had = a.owned
        gained, lost = a.tick({"t"}, nothing, force=True)     # a rejoins ...
        assert (gained, lost) == (set(), had)   # ... and waits for b to release
        b.tick({"t"}, nothing, force=True)
        a.tick({"t"}, nothing, force=True)
        assert len(a.owned) == len(b.owned) == 2 and a.owned.isdisjoint(b.owned)


def test_a_dead_member_is_replaced_at_once(tmp_path):
    clock, dead = FakeClock(), set()
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=2)
        a = fake_member(log, clock, dead, timeout_ms=30000, tag="a")
        b = fake_member(log, clock, dead, timeout_ms=30000, tag="b")
        for m in (a, b, a, b):
            m.tick({"t"}, nothing, force=True)
        assert len(a.owned) == len(b.owned) == 1
        dead.add("a")                      # its process is gone
        b.tick({"t"}, nothing, force=True)
        assert b.owned == {TP("t", 0), TP("t", 1)}
        assert [m["member_id"] for m in log.describe_group("g")["members"]] \
            == [b.member_id]


def test_members_of_different_topics_keep_each_others_partitions(tmp_path):
    """Each member counts the partitions of every member's topics: one that
    counted only its own would rebalance the others' topics away."""
    clock, dead = FakeClock(), set()
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("x", partitions=2)
        log.create_topic("y", partitions=3)
        a = fake_member(log, clock, dead, tag="a")
        b = fake_member(log, clock, dead, tag="b")
        a.tick({"x"}, nothing, force=True)
        b.tick({"y"}, nothing, force=True)
        generation = b.generation
        for _ in range(3):
            clock.s += 0.4                 # heartbeats due: both write
            a.tick({"x"}, nothing, force=True)
            b.tick({"y"}, nothing, force=True)
        assert a.owned == {TP("x", 0), TP("x", 1)}
        assert b.owned == {TP("y", p) for p in range(3)}
        assert a.generation == b.generation == generation


# -- damaged group documents (M-7) -----------------------------------------------

def put_group_doc(path, group, raw):
    import lmdb
    env = lmdb.open(os.path.join(path, "meta"), max_dbs=8)
    try:
        db = env.open_db(b"groups")
        with env.begin(write=True) as txn:
            txn.put(group.encode(), raw, db=db)
    finally:
        env.close()


def read_meta(path):
    """Every key and value of the groups and offsets databases."""
    import lmdb
    env = lmdb.open(os.path.join(path, "meta"), max_dbs=8, readonly=True)
    try:
        out = {}
        for name in (b"groups", b"offsets"):
            db = env.open_db(name, create=False)
            with env.begin() as txn:
                out[name] = list(txn.cursor(db=db))
        return out
    finally:
        env.close()


@pytest.mark.parametrize("raw", [b'{"members": {"m": ', b"\xff", b"[1]",
                                 b'{"owners": {"t/0": ["m"]}}'])
def test_a_damaged_group_document_is_a_clear_error_and_changes_nothing(tmp_path, raw):
    from pylog.errors import CorruptGroupError
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=2)
        log.producer().send_batch("t", [b"x"] * 4, partition=0)
        c = log.consumer("t", group_id="orders", auto_offset_reset="earliest")
        assert len(c.poll(timeout=0.5)) == 4
        c.commit()
        c.close()
    put_group_doc(tmp_path, "orders", raw)
    before = read_meta(tmp_path)
    with pylog.open(tmp_path, sync="never") as log:
        attempts = [
            lambda: log.consumer("t", group_id="orders").poll(timeout=0.1),
            lambda: log.describe_group("orders"),
            lambda: log.reset_group("orders", to="earliest"),
        ]
        for attempt in attempts:
            with pytest.raises(CorruptGroupError) as ei:
                attempt()
            assert isinstance(ei.value, pylog.CorruptLogError)
            text = str(ei.value)
            assert "'orders'" in text and "damaged" in text and "restore" in text
            assert ei.value.path.endswith("data.mdb")
        # the other groups and the offsets of this one still work
        assert log.meta.committed("orders", "t", 0) == 4
        other = log.consumer("t", group_id="other", auto_offset_reset="earliest")
        assert len(other.poll(timeout=0.5)) == 4
        other.close()
    after = read_meta(tmp_path)
    assert [kv for kv in after[b"groups"] if kv[0] == b"orders"] == [(b"orders", raw)]
    assert [kv for kv in after[b"offsets"] if kv[0].startswith(b"orders\0")] == \
        [kv for kv in before[b"offsets"] if kv[0].startswith(b"orders\0")]


# -- reset_group: the check and the commit are one transaction ------------------------

def test_reset_is_refused_when_a_member_joins_after_the_plan(tmp_path):
    from pylog.group import apply_reset, plan_reset
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=1)
        log.producer().send_batch("t", [b"x"] * 10, partition=0)
        log.meta.commit("g", {("t", 0): 7})
        plan = plan_reset(log, "g", to="earliest")
        assert plan == {TP("t", 0): 0}
        c = log.consumer("t", group_id="g", enable_auto_commit=False)
        c.poll(timeout=0)                  # joins between the plan and the commit
        with pytest.raises(pylog.GroupNotEmpty):
            apply_reset(log, "g", plan)
        assert log.meta.committed("g", "t", 0) == 7
        c.close()
        apply_reset(log, "g", plan)
        assert log.meta.committed("g", "t", 0) == 0


def test_reset_races_a_committing_consumer(tmp_path):
    """While a member is in the group, its commits are never overwritten by
    a reset: reset either is refused or commits while nobody is a member."""
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=1)
        log.producer().send_batch("t", [b"x"] * 10, partition=0)
        stop = threading.Event()
        resets = {"done": 0, "refused": 0}
        errors = []

        def resetter():
            try:
                while not stop.is_set():
                    try:
                        log.reset_group("g", to="offset", value=0, topic="t")
                        resets["done"] += 1
                    except pylog.GroupNotEmpty:
                        resets["refused"] += 1
            except BaseException as exc:       # noqa: BLE001 - reported below
                errors.append(exc)

        t = threading.Thread(target=resetter)
        t.start()
        try:
            for _ in range(25):
                c = log.consumer("t", group_id="g", enable_auto_commit=False)
                c.poll(timeout=0)
                c.commit({TP("t", 0): 5})
                time.sleep(0.002)
                assert log.meta.committed("g", "t", 0) == 5    # still a member
                c.close(autocommit=False)
        finally:
            stop.set()
            t.join()
        assert not errors, errors
        assert resets["done"] + resets["refused"], resets


@pytest.mark.parametrize("pid", [None, 0, -1, 2**70])
def test_a_member_with_an_impossible_pid_on_this_host_is_dead(pid):
    from pylog.group import _HOST, process_alive
    from pylog.groupstate import Member
    assert not process_alive(Member(pid=pid, start=None, host=_HOST))
    assert process_alive(Member(pid=pid, start=None, host=_HOST + "-elsewhere"))
    assert process_alive(Member(pid=os.getpid(), start=None, host=_HOST))


# -- what a look costs (issue 15) ------------------------------------------------

def test_the_probe_cache_remembers_the_living_for_its_ttl_and_the_dead_for_good():
    from pylog.group import _HOST
    from pylog.groupstate import Member
    from pylog.liveness import ProbeCache, process_alive, process_start_time
    clock, probes = FakeClock(), []

    def counted(member):
        probes.append(member.pid)
        return process_alive(member)

    cache = ProbeCache(counted, ttl_s=0.5, monotonic=clock.monotonic)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        m = Member(pid=child.pid, start=process_start_time(child.pid), host=_HOST)
        assert cache(m) and cache(m) and len(probes) == 1
        child.kill()
        child.wait()
        assert cache(m)                     # believed alive for the ttl ...
        clock.s += 0.6
        assert not cache(m) and len(probes) == 2    # ... then probed: dead
        clock.s += 60
        assert not cache(m) and len(probes) == 2    # dead for good, unprobed
        # a pid without a known start time may be reused: never remembered dead
        gone = Member(pid=child.pid, start=None, host=_HOST)
        assert not cache(gone) and not cache(gone) and len(probes) == 4
    finally:
        child.kill()
        child.wait()


def group_seq(log, group):
    from pylog import _native
    from pylog.group import group_slot
    return _native.doorbell_load(log.doorbell(), group_slot(group))


def test_moves_ring_the_group_slot_and_heartbeats_do_not(tmp_path):
    """L-3: a write that changes members, assignment or owners rings the
    group's doorbell slot, then the slots the members' polls wait on (their
    topics' and slot 0); a heartbeat rewrites the document silently."""
    from pylog import _native
    from pylog.store import topic_slot
    clock, dead = FakeClock(), set()

    def seqs():
        bell = log.doorbell()
        return (group_seq(log, "g"), _native.doorbell_load(bell, topic_slot("t")),
                _native.doorbell_load(bell, 0))

    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=2)
        a = fake_member(log, clock, dead, tag="a")
        before = seqs()
        a.tick({"t"}, nothing, force=True)          # joins, claims
        after = seqs()
        assert all(x != y for x, y in zip(before, after))
        b = fake_member(log, clock, dead, tag="b")
        b.tick({"t"}, nothing, force=True)          # joins: a must release
        a.tick({"t"}, nothing, force=True)
        b.tick({"t"}, nothing, force=True)
        after = seqs()
        clock.s += 0.4                               # heartbeats are due
        a.tick({"t"}, nothing, force=True)
        b.tick({"t"}, nothing, force=True)
        assert seqs() == after
        b.leave(None)                                # wakes a
        assert all(x != y for x, y in zip(after, seqs()))


def test_a_quiet_member_skips_the_document_until_the_group_rings(tmp_path):
    """A look of a member that is not the leader reads the group document
    only when the group's slot rang (or its heartbeat is due, ...): a change
    that rings is acted on at its next look, one that does not (written
    behind the members' backs) only at its next heartbeat."""
    clock, dead = FakeClock(), set()
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=2)
        m1 = fake_member(log, clock, dead, timeout_ms=30000, tag="a")
        m2 = fake_member(log, clock, dead, timeout_ms=30000, tag="b")
        for m in (m1, m2, m1, m2):
            m.tick({"t"}, nothing, force=True)
        leader, other = sorted((m1, m2), key=lambda m: m.member_id)
        assert len(other.owned) == 1

        def take_all(doc, commit):          # not a member's write: no ring
            doc["owners"] = {"t/0": leader.member_id, "t/1": leader.member_id}
        log.meta.update_group("g", take_all)
        clock.s += 0.2
        other.tick({"t"}, nothing)
        assert len(other.owned) == 1         # quiet look: the document unread
        clock.s += 10.0                      # its heartbeat is due: it looks
        other.tick({"t"}, nothing)
        assert other.owned == set()
        (mine,) = log.meta.group_state("g").target(other.member_id)
        log.meta.update_group("g", lambda doc, commit: doc["owners"].pop(
            f"t/{mine.partition}"))
        from pylog import _native
        from pylog.group import group_slot
        _native.doorbell_ring(log.doorbell(), group_slot("g"))
        clock.s += 0.2
        other.tick({"t"}, nothing)           # rang: it looks, claims its own
        assert other.owned == {mine}
