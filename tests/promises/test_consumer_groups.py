"""README "Consumer groups": ownership across threads and processes, members
that close, die or stall, the two-step hand-off, fenced commits, the
assignment strategies, group administration, manual assignment and pattern
subscription.

(Named test_consumer_groups.py: tests/test_groups.py exists, and two test
modules of one basename cannot be collected together without packages.)"""

import signal
import threading
import time

import pytest
from promisekit import Child, run_child, wait_until

import pylog
from pylog import TopicPartition as TP

MEMBER = r"""
import os, sys, time, pylog
path, group, session, run_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
log = pylog.open(path, sync="never")
c = log.consumer("t", group_id=group, auto_offset_reset="earliest",
                 session_timeout_ms=session)
deadline = time.monotonic() + run_s
last = None
while time.monotonic() < deadline:
    recs = c.poll(timeout=0.1)
    for r in recs:
        print("R", r.partition, r.offset, flush=True)
    owned = sorted(tp.partition for tp in c.assignment())
    if not recs:
        print("idle", owned, flush=True)
    elif owned != last:
        print("owned", owned, flush=True)
    last = owned
c.close()
print("closed", flush=True)
"""


def records_of(lines):
    return [tuple(map(int, ln.split()[1:])) for ln in lines if ln.startswith("R ")]


def owned_of(line):
    return set(int(x) for x in line.split(" ", 1)[1].strip("[]").split(",") if x.strip())


def test_each_partition_has_one_owner_threads_and_processes(tmp_path, child_env):
    """Instances of one service share a ``group_id``; each partition is owned by
    exactly one live member, and groups are independent. Members may be threads
    or processes.

    Two member processes and two member threads share six partitions: while
    they consume, no two members ever return records of one partition at
    overlapping times, no record comes twice, every record comes; a second
    group gets everything again on its own."""
    path = tmp_path / "log"
    n = 1200
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=6)
        p = log.producer()
        kids = [Child(MEMBER, path, "g", 10000, 6.0, env=child_env) for _ in range(2)]
        got_threads = {0: [], 1: []}
        stop = threading.Event()

        def member(i):
            with pylog.open(path, sync="never") as lg:
                c = lg.consumer("t", group_id="g", auto_offset_reset="earliest")
                while not stop.is_set():
                    got_threads[i].extend((r.partition, r.offset) for r in c.poll(timeout=0.1))
                c.close()

        threads = [threading.Thread(target=member, args=(i,)) for i in range(2)]
        [t.start() for t in threads]
        # produce only once all four have joined, so the work can be shared
        deadline = time.monotonic() + 30
        while len(log.describe_group("g")["members"]) < 4:
            assert time.monotonic() < deadline, "the four members never joined"
            time.sleep(0.05)
        for i in range(n):                      # produced while they consume
            p.send("t", b"%d" % i, key=b"%d" % i)
            if i % 100 == 0:
                time.sleep(0.05)
        got = {f"p{i}": records_of(k.ok(30)) for i, k in enumerate(kids)}
        for k in kids:
            k.__exit__(None, None, None)
        stop.set()
        [t.join(timeout=20) for t in threads]
        got.update({f"t{i}": v for i, v in got_threads.items()})
        everything = [rec for v in got.values() for rec in v]
        assert len(everything) == len(set(everything)) == n, \
            f"{len(everything)} deliveries of {len(set(everything))} records, {n} sent"
        assert sum(1 for v in got.values() if v) >= 3, "the members did not share the work"
        other = log.consumer("t", group_id="other", auto_offset_reset="earliest")
        again = []
        while batch := other.poll(timeout=0.3, max_records=10_000):
            again.extend(batch)
        assert len(again) == n
        other.close()


@pytest.mark.parametrize("how", ["close", "sigkill"])
def test_member_that_closes_or_dies_loses_its_partitions_at_once(tmp_path, child_env, how):
    """A member that closes, whose process dies (detected at once from
    its pid) or that misses ``session_timeout_ms`` of heartbeats loses its
    partitions to the others.

    (closes / dies) A member process owns half of four partitions with a
    session timeout of a minute; it closes, or is SIGKILLed. The member in
    this process owns all four within two seconds and reads on from the
    group's committed offsets."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=4)
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         session_timeout_ms=60_000)
        with Child(MEMBER, path, "g", 60_000, 1.0 if how == "close" else 60,
                   env=child_env) as kid:
            wait_until(lambda: (c.poll(timeout=0.05) is not None and
                                len(c.assignment()) == 2), 10, what="a 2/2 split")
            if how == "sigkill":
                kid.send_signal(signal.SIGKILL)
                t0 = time.monotonic()
            else:
                kid.expect("closed", timeout=10)
                t0 = time.monotonic()
            wait_until(lambda: (c.poll(timeout=0.05) is not None and
                                len(c.assignment()) == 4), 10, what="all four owned")
            took = time.monotonic() - t0
        assert took < 2.0, f"took {took:.1f} s to take over from a {how}d member"
        prod = log.producer()
        for i in range(8):
            prod.send("t", b"x", partition=i % 4)
        recs = []
        wait_until(lambda: recs.extend(c.poll(timeout=0.1)) or len(recs) >= 8, 5)
        assert {r.partition for r in recs} == {0, 1, 2, 3}
        c.close()


SLOW_HANDLER = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                 session_timeout_ms=1000, enable_auto_commit=False)
recs = []
while len(recs) < 10:
    recs += c.poll(timeout=0.2)
print("handling", flush=True)
time.sleep(float(sys.argv[2]))          # the handler: longer than the session
try:
    c.commit()
    print("committed", flush=True)
except pylog.CommitFailedError:
    print("refused", flush=True)
c.close()
"""


def test_a_batch_handled_past_the_session_timeout_keeps_its_partitions(tmp_path, child_env):
    """Between polls, while the application handles what ``poll``
    returned, a thread of the log renews the heartbeats of its members (as
    Kafka's heartbeat thread): a batch handled for longer than the session
    timeout keeps its partitions

    A member process polls ten records and handles them for 3.5 s, three
    and a half times its 1 s session timeout, while a member in this process
    polls flat out: this one gets none of them, and the slow member's
    commit is accepted."""
    path = tmp_path / "log"
    handle_s = 3.5
    with pylog.open(path, sync="never") as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"%d" % i for i in range(10)])
        with Child(SLOW_HANDLER, path, handle_s, env=child_env) as kid:
            kid.expect("handling", timeout=15)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             session_timeout_ms=1000)
            got = []
            deadline = time.monotonic() + handle_s
            while time.monotonic() < deadline:
                got += c.poll(timeout=0.05)
            assert kid.expect(("committed", "refused"), timeout=15) == "committed"
            assert got == [], "another member handled the slow member's batch"
            c.close()
        assert log.consumer(group_id="g").committed(TP("t", 0)) == 10


STALL = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                 session_timeout_ms=1000)
while True:
    recs = c.poll(timeout=0.2)
    for r in recs:
        print("R", r.partition, r.offset, time.time(), flush=True)
    print("idle", sorted(tp.partition for tp in c.assignment()), flush=True)
"""


def test_stopped_member_loses_partitions_and_returns_none_of_them(tmp_path, child_env):
    """A member
    returns records only while its heartbeat is younger than half its session
    timeout; past that (the process was stopped, swapped out or starved) it
    checks the group again before returning anything, and drops the records of
    partitions another member took over meanwhile. So no poll returns records
    of a partition another live member owns

    A member process (session timeout 1 s) is SIGSTOPped while it waits in
    poll; records arrive; the member in this process takes its partition over
    after the timeout and reads them. After SIGCONT the stopped member's
    waiting poll must not return any of them."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=2)
        with Child(STALL, path, env=child_env) as kid:
            kid.expect("idle [0, 1]")
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             session_timeout_ms=10_000)
            wait_until(lambda: c.poll(timeout=0.05) is not None and len(c.assignment()) == 1,
                       10, what="a 1/1 split")
            kid.expect("idle [", timeout=5)
            mine_before = {tp.partition for tp in c.assignment()}
            theirs = ({0, 1} - mine_before).pop()
            while not kid.expect("idle").endswith(f"[{theirs}]"):
                pass
            kid.send_signal(signal.SIGSTOP)
            stopped = time.time()
            log.producer().send_batch("t", [b"%d" % i for i in range(20)], partition=theirs)
            mine = []
            wait_until(lambda: mine.extend(c.poll(timeout=0.1)) or
                       sum(r.partition == theirs for r in mine) == 20, 15,
                       what="taking over the stopped member's partition")
            # (its last heartbeat was up to a third of the timeout old)
            assert time.time() - stopped >= 0.6
            kid.send_signal(signal.SIGCONT)
            end = time.monotonic() + 2.0
            while time.monotonic() < end:       # keep polling: the hand-back is two-step
                mine.extend(c.poll(timeout=0.1))
            kid.send_signal(signal.SIGKILL)
            kid.finish()
            theirs_after = {(p, o) for p, o, _ in
                            (tuple(map(float, ln.split()[1:])) for ln in kid.lines
                             if ln.startswith("R "))}
            both = theirs_after & {(float(r.partition), float(r.offset)) for r in mine}
            assert not both, f"the resumed member returned {len(both)} records " \
                             "the member that took its partition over had read"
        c.close()


def test_hand_off_commits_finished_records_before_the_new_owner_claims(fastlog):
    """The hand-off is two-step: the old owner releases (committing its finished
    records) before the new one claims.

    Member A has read both partitions; member B joins. B gets nothing until
    A polls again (A's records are then finished and committed as it
    releases); B then starts exactly where A finished: nothing twice,
    nothing skipped."""
    fastlog.create_topic("t", partitions=2)
    p = fastlog.producer()
    for i in range(40):
        p.send("t", b"%d" % i, partition=i % 2)
    a = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest",
                         auto_commit_interval_ms=60_000)
    first = a.poll(timeout=1, max_records=1000)
    assert len(first) == 40
    b = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest")
    for _ in range(5):
        assert b.poll(timeout=0.05) == []       # A has not released anything yet
    assert b.assignment() == set()
    for i in range(40, 60):
        p.send("t", b"%d" % i, partition=i % 2)
    got_a = a.poll(timeout=0.5, max_records=1000)   # releases one partition
    moved = {TP("t", 0), TP("t", 1)} - a.assignment()
    assert len(moved) == 1
    (tp,) = moved
    assert fastlog.describe_group("g")["partitions"][tp.partition]["committed"] == 20
    got_b = []
    wait_until(lambda: got_b.extend(b.poll(timeout=0.1)) or len(got_b) >= 10, 5)
    assert [r.offset for r in got_b] == list(range(20, 30))
    assert all(r.partition != tp.partition for r in got_a)
    a.close()
    b.close()


def test_commit_from_a_member_that_lost_the_partition_fails(fastlog):
    """Commits from a member that no longer
    owns the partition raise ``CommitFailedError``.

    A member stops heartbeating (its thread is busy past its 400 ms poll
    interval, so its background heartbeats stop too, and then past its
    300 ms session timeout); another takes its partition; its commit,
    explicit or not, is refused and changes nothing."""
    fastlog.create_topic("t")
    fastlog.producer().send_batch("t", [b"x"] * 10)
    a = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest",
                         session_timeout_ms=300, max_poll_interval_ms=400,
                         enable_auto_commit=False)
    assert len(a.poll(timeout=1)) == 10
    time.sleep(1.0)                                   # busy: no heartbeat
    b = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest")
    got_b = []
    wait_until(lambda: got_b.extend(b.poll(timeout=0.05)) or b.assignment(), 5)
    with pytest.raises(pylog.CommitFailedError):
        a.commit({TP("t", 0): 10})
    with pytest.raises(pylog.CommitFailedError):
        a.commit()
    assert b.committed(TP("t", 0)) is None
    wait_until(lambda: got_b.extend(b.poll(timeout=0.1)) or len(got_b) >= 10, 5)
    assert len(got_b) == 10
    a.close(autocommit=False)
    b.close()


def _assignment(log, strategy, members, partitions=6):
    log.create_topic(f"s-{strategy}", partitions=partitions, exist_ok=True)
    kw = {} if strategy is None else dict(partition_assignment_strategy=strategy)
    cs = [log.consumer(f"s-{strategy}", group_id=f"g-{strategy}", client_id=f"m{i}", **kw)
          for i in range(members)]

    def settled():
        for c in cs:
            c.poll(timeout=0)
        owned = [frozenset(tp.partition for tp in c.assignment()) for c in cs]
        return owned if sum(map(len, owned)) == partitions else None

    return cs, wait_until(settled, 10, step=0, what="a settled assignment")


def test_assignment_strategies(fastlog):
    """Assignment strategies:
    ``partition_assignment_strategy="sticky"`` (default: balanced, moves as few
    partitions as possible), ``"range"``, ``"roundrobin"``.

    Six partitions, three members: two each under every strategy, ranges
    contiguous under "range", strided under "roundrobin". With the default,
    a fourth member joining moves exactly one partition (the fewest that
    balance 2/2/1/1), and every other one stays where it was."""
    for strategy in ("range", "roundrobin", None):
        cs, owned = _assignment(fastlog, strategy, 3)
        assert sorted(map(len, owned)) == [2, 2, 2], (strategy, owned)
        if strategy == "range":
            assert all(max(o) - min(o) == 1 for o in owned), owned
        if strategy == "roundrobin":
            assert all(max(o) - min(o) == 3 for o in owned), owned
        if strategy is None:
            before = owned
            cs.append(fastlog.consumer("s-None", group_id="g-None", client_id="m3"))

            def settled():
                for c in cs:
                    c.poll(timeout=0)
                o = [frozenset(tp.partition for tp in c.assignment()) for c in cs]
                return o if sorted(map(len, o)) == [1, 1, 2, 2] else None
            after = wait_until(settled, 10, step=0, what="the fourth member's share")
            assert sorted(map(len, after)) == [1, 1, 2, 2]
            moved = sum(len(b - a) for b, a in zip(before, after))
            assert moved == 1, (before, after)
        for c in cs:
            c.close()


def test_group_administration(tmp_path, child_env):
    """log.groups()                          # ['reports', ...]
    log.describe_group("reports")         # members, owners, committed, lag
    log.reset_group("reports", to="earliest")   # refused while members live

    A member in another process makes the reset fail with GroupNotEmpty
    (and change nothing); once that process is SIGKILLed the reset works."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        log.create_topic("clicks", partitions=2)
        log.producer().send_batch("clicks", [b"x"] * 10, partition=0)
        with log.consumer("clicks", group_id="reports", auto_offset_reset="earliest",
                          enable_auto_commit=False) as c:
            c.poll(timeout=1)
            c.commit()
        assert log.groups() == ["reports"]
        code = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.consumer("clicks", group_id="reports", client_id="far-away")
c.poll(timeout=0.2)
print("member", flush=True)
while True:
    c.poll(timeout=0.2)
"""
        log.producer().send_batch("clicks", [b"y"] * 5, partition=0)
        with Child(code, path, env=child_env) as kid:
            kid.expect("member")
            d = log.describe_group("reports")
            (m,) = d["members"]
            assert m["client_id"] == "far-away" and m["pid"] == kid.pid and m["alive"]
            assert sorted(tp.partition for tp in m["owned"]) == [0, 1]
            (p0,) = [p for p in d["partitions"] if p["partition"] == 0]
            assert (p0["committed"], p0["end_offset"], p0["lag"]) == (10, 15, 5)
            assert p0["owner"] == m["member_id"]
            with pytest.raises(pylog.GroupNotEmpty):
                log.reset_group("reports", to="earliest")
            assert log.describe_group("reports")["partitions"][0]["committed"] == 10
            kid.send_signal(signal.SIGKILL)
            kid.finish()
        plan = log.reset_group("reports", to="earliest")
        assert plan[TP("clicks", 0)] == 0
        assert log.describe_group("reports")["partitions"][0]["committed"] == 0


def test_manual_assignment_without_a_group(fastlog):
    """Manual assignment without a group::

    c = log.consumer(enable_auto_commit=False)
    c.assign([pylog.TopicPartition("clicks", 0)])

    It reads that partition only, joins no group and commits nothing."""
    fastlog.create_topic("clicks", partitions=3)
    fastlog.producer().send_batch("clicks", [(b"k%d" % i, b"v") for i in range(60)])
    c = fastlog.consumer(enable_auto_commit=False)
    c.assign([pylog.TopicPartition("clicks", 0)])
    c.seek_to_beginning()
    recs = c.poll(timeout=1, max_records=1000)
    assert recs and {r.partition for r in recs} == {0}
    assert len(recs) == fastlog.describe_topic("clicks").partition_info[0].end_offset
    c.close()
    assert fastlog.groups() == []


def test_pattern_subscription_picks_up_new_topics(tmp_path, child_env):
    """Pattern subscription picks up topics created later::

    A topic matching the pattern is created, and written to, by another
    process while the consumer polls: its records arrive; a topic that does
    not match is never read."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        log.create_topic("orders.us")
        c = log.consumer(pattern=r"orders\..*", group_id="audit", auto_offset_reset="earliest")
        assert c.poll(timeout=0.2) == []
        run_child(r"""
import sys, pylog
with pylog.open(sys.argv[1], sync="never") as log:
    for t in ("orders.eu", "ordersXeu", "returns.eu"):
        log.create_topic(t)
        log.producer().send(t, t.encode())
""", path, env=child_env)
        got = []
        wait_until(lambda: got.extend(c.poll(timeout=0.2)) or len(got) >= 1, 10,
                   what="a record of the new topic")
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            got.extend(c.poll(timeout=0.1))
        assert [(r.topic, r.value) for r in got] == [("orders.eu", b"orders.eu")]
        c.close()
