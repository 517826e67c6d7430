"""A topic deleted and made again under its name while consumers of it
live in other processes (found by trying it as a user would): the old
topic's positions never land on the new one, and the consumers read the
new topic without being reopened.

Real processes, real files; the member runs in a child that reads its
orders on stdin.
"""

import contextlib
import subprocess
import sys
import textwrap
import time

import pytest
from childproc import expect, start, stderr_tail

import pylog
from pylog import groupstate as gs
from pylog.records import TopicPartition


@contextlib.contextmanager
def _reaped(*children):
    """Kills and waits for those of ``children`` still running when the
    block ends: a failed check must not leave a child holding the log."""
    try:
        yield
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def _go(child):
    """Tells ``child``, waiting on its stdin, to go on."""
    child.stdin.write(b"go\n")
    child.stdin.flush()


def _go_and_close(child):
    """Tells ``child`` to go on; it must then say "closed" and exit 0."""
    _go(child)
    expect(child, b"closed")
    assert child.wait(30) == 0, stderr_tail(child)


TP0 = TopicPartition("t", 0)

# A group member that reads and commits the old topic's 100 records, then
# on "go" does what argv[2] says: "commit" (commit() without polling
# first), "close" (close() only: auto-commit's final commit) or "read"
# (poll until it has 150 records of the new topic).
MEMBER = textwrap.dedent("""
    import sys, pylog
    path, what = sys.argv[1], sys.argv[2]
    log = pylog.open(path)
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=(what == "close"))
    got = []
    while len(got) < 100:
        got += c.poll(timeout=0.5)
    c.commit()
    print("read", flush=True)
    sys.stdin.readline()
    if what == "commit":
        try:
            c.commit()
            print("committed", flush=True)
        except pylog.CommitFailedError:
            print("refused", flush=True)
    elif what == "read":
        new = []
        for _ in range(100):
            new += c.poll(timeout=0.2)
            if len(new) >= 150:
                break
        print(" ".join(r.value.decode() for r in new[:2]), len(new), flush=True)
    c.close()
    log.close()
    print("closed", flush=True)
""")


def _recreate_under(logdir, child_env, what):
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=1)
        log.producer().send_batch("t", [b"old-%d" % i for i in range(100)])
        member = start(MEMBER, logdir, what, env=child_env, stdin=subprocess.PIPE)
        with _reaped(member):
            expect(member, b"read")
            log.delete_topic("t")
            log.create_topic("t", partitions=1)
            log.producer().send_batch("t", [b"new-%d" % i for i in range(150)])
            _go(member)
            said = [expect(member, b"", prefix=True).strip()]
            if what != "close":
                said.append(expect(member, b"closed").strip())
            assert member.wait(30) == 0, stderr_tail(member)
        return log.describe_group("g"), said


@pytest.mark.parametrize("what", ["commit", "close"])
def test_a_deleted_topics_position_never_lands_on_the_new_topic(logdir, child_env, what):
    """The member read 100 records of the old topic; another process deletes
    it and makes it again with 150 new records. Its commit() without a
    poll in between, or its close() with auto-commit, stored offset 100
    on the new topic: the group then skipped the new topic's first 100
    records for good. Now that commit is refused (the group forgot who
    owned the deleted topic's partitions) and close stores nothing."""
    group, said = _recreate_under(logdir, child_env, what)
    if what == "commit":
        assert said[0] == b"refused"
    assert all(p["committed"] is None for p in group["partitions"]), group
    with pylog.open(logdir) as log:
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        assert c.committed(TP0) is None
        got = []
        while len(got) < 150:
            batch = c.poll(timeout=2.0)
            assert batch, f"stopped at {len(got)} records"
            got += batch
        assert [r.offset for r in got] == list(range(150))
        c.close()


def test_a_consumer_reads_a_topic_made_again_under_its_name(logdir, child_env):
    """The member, in its own process, polls on after its topic was deleted
    and made again: it reads the new topic's records from its start (no
    offset committed there: auto_offset_reset) instead of raising
    TopicNotFound at every poll, and its Log reports no tampering."""
    _, said = _recreate_under(logdir, child_env, "read")
    assert said[0] == b"new-0 new-1 150"


def test_drop_topic_forgets_owners_assignment_and_count():
    """groupstate.drop_topic: a pure transition; other topics untouched, and
    a group that never had the topic keeps the very same state."""
    a, b = TopicPartition("a", 0), TopicPartition("t", 1)
    state = gs.GroupState(generation=3, owners={a: "m1", b: "m2"},
                          assignment={"m1": (a,), "m2": (b,)},
                          partition_counts={"a": 1, "t": 2})
    new = gs.drop_topic(state, "t")
    assert new.owners == {a: "m1"} and new.partition_counts == {"a": 1}
    assert new.assignment == {"m1": (a,), "m2": ()} and new.generation == 4
    assert gs.drop_topic(new, "t") is new
    with pytest.raises(pylog.CommitFailedError):
        gs.fence(new, "g", "m2", [b])


def _accept(c, n, rounds=20):
    """Accept what share consumer ``c`` gets, until ``n`` records or
    ``rounds`` polls; their values."""
    got = []
    for _ in range(rounds):
        for r in c.poll(timeout_ms=200):
            got.append(r.value)
            c.acknowledge(r, "accept")
        c.commit()
        if len(got) >= n:
            break
    return got


def _share_round(log, n):
    """Accept what one share consumer of group "w" gets of "jobs"; the values."""
    with log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest") as c:
        return _accept(c, n)


def test_a_share_group_starts_anew_on_a_topic_made_again(logdir):
    """A share group finished offsets 0-49 of "jobs"; the topic is deleted
    and made again with 10 records: the group's old state (start offset
    50) stayed, and it never delivered them. The state now goes with the
    topic, its LMDB key and its file."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("jobs")
        log.producer().send_batch("jobs", [b"old-%d" % i for i in range(50)])
        assert len(_share_round(log, 50)) == 50
        log.delete_topic("jobs")
        log.create_topic("jobs")
        log.producer().send_batch("jobs", [b"new-%d" % i for i in range(10)])
        assert _share_round(log, 10) == [b"new-%d" % i for i in range(10)]


SHARE_HOLDER = textwrap.dedent("""
    import sys, pylog
    log = pylog.open(sys.argv[1])
    c = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest")
    n = 0
    while n < 50:
        for r in c.poll(timeout_ms=200):
            c.acknowledge(r, "accept")
            n += 1
        c.commit()
    print("done", flush=True)
    sys.stdin.readline()
    try:
        c.close()
    finally:
        log.close()
    print("closed", flush=True)
""")


def test_a_live_share_consumers_state_does_not_come_back(logdir, child_env):
    """A share consumer in another process still maps the deleted topic's
    state when the topic is made again; its close (a checkpoint into
    LMDB) must not bring the old state back over the new topic's."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("jobs")
        log.producer().send_batch("jobs", [b"old-%d" % i for i in range(50)])
        holder = start(SHARE_HOLDER, logdir, env=child_env, stdin=subprocess.PIPE)
        with _reaped(holder):
            expect(holder, b"done")
            log.delete_topic("jobs")
            log.create_topic("jobs")
            log.producer().send_batch("jobs", [b"new-%d" % i for i in range(10)])
            _go_and_close(holder)
        assert _share_round(log, 10) == [b"new-%d" % i for i in range(10)]


def test_a_live_share_consumer_goes_on_with_the_topic_made_again(logdir):
    """A share consumer that stays open while another Log deletes its topic
    and makes it again: every poll raised TopicNotFound ("was deleted"),
    for good. Now it drops what it held of the old topic and delivers the
    new topic's records."""
    log = pylog.open(logdir, sync="never")
    other = pylog.open(logdir)
    try:
        log.create_topic("jobs")
        log.producer().send_batch("jobs", [b"old-%d" % i for i in range(20)])
        c = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest")
        assert len(_accept(c, 20)) == 20
        other.delete_topic("jobs")
        other.create_topic("jobs")
        other.producer().send_batch("jobs", [b"new-%d" % i for i in range(10)])
        assert _accept(c, 10, rounds=30) == [b"new-%d" % i for i in range(10)]
        c.close()
    finally:
        other.close()
        log.close()


def test_a_log_that_wrote_a_topic_another_deleted_flushes_and_closes(logdir):
    """A Log whose producer wrote to a topic that another Log then deleted
    raised FileVanishedError ("reopen the log") from flush() and close():
    an ordinary delete is not damage, and those records are gone anyway."""
    a = pylog.open(logdir, sync="never")
    a.create_topic("jobs")
    a.producer().send_batch("jobs", [b"old-%d" % i for i in range(20)])
    with pylog.open(logdir) as b:
        b.delete_topic("jobs")
        b.create_topic("jobs")
    a.flush()
    a.producer().send("jobs", b"new")
    a.close()
    with pylog.open(logdir) as log:
        c = log.consumer("jobs", auto_offset_reset="earliest")
        assert [r.value for r in c.poll(timeout=1)] == [b"new"]


OVERLAP_MEMBER = textwrap.dedent("""
    import os, sys, json, time, pylog
    path, cid, out, stop = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    log = pylog.open(path)
    c = log.consumer("t", group_id="g", client_id=cid, auto_offset_reset="earliest",
                     enable_auto_commit=False, session_timeout_ms=30000)
    print("up", flush=True)
    with open(out, "w") as f:
        end = time.time() + 90
        while time.time() < end and not os.path.exists(stop):
            recs = c.poll(timeout=0.05)
            for r in recs:
                f.write(json.dumps([r.partition, r.offset, r.value.decode()]) + "\\n")
            f.flush()
            if recs:
                try:
                    c.commit()
                except pylog.CommitFailedError:
                    pass
    c.close()
    log.close()
""")


def test_two_members_never_read_one_partition_of_a_topic_made_again(logdir, child_env,
                                                                     tmp_path):
    """Two members (processes) read a 2-partition topic and commit after
    every poll; another process deletes it and makes it again with 600
    records. A member that found its partition deleted read the new one at
    once, while the group (which had forgotten the old owners) gave it to
    the other member too: 18-72 records reached both (found by review).
    Now a member fetches no partition of the new topic before the group
    gives it one."""
    import json
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=2)
        for p in range(2):
            log.producer().send_batch("t", [b"old-%d" % i for i in range(50)], partition=p)
    outs = {cid: str(tmp_path / f"{cid}.jsonl") for cid in ("a", "b")}
    stop = str(tmp_path / "stop")
    members = [start(OVERLAP_MEMBER, logdir, cid, outs[cid], stop, env=child_env)
               for cid in ("a", "b")]
    with _reaped(*members):
        for m in members:
            expect(m, b"up")
        time.sleep(2)
        with pylog.open(logdir) as log:
            log.delete_topic("t")
            log.create_topic("t", partitions=2)
            pr = log.producer()
            for i in range(600):
                pr.send("t", b"new-%d" % i, partition=i % 2)
        # the members run until the group committed every new record (a
        # fixed run time left a loaded machine's member short of its
        # partition: the test measured the machine, not the hand-off)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with pylog.open(logdir, readonly=True) as log:
                done = [p["committed"] for p in log.describe_group("g")["partitions"]]
            if done == [300, 300]:
                break
            time.sleep(0.2)
        open(stop, "w").close()
        for m in members:
            assert m.wait(60) == 0, stderr_tail(m)
        assert done == [300, 300], f"the group committed {done} of the new topic in 60 s"
    seen: dict = {}
    for cid, path in outs.items():
        with open(path) as f:
            for line in f:
                part, off, value = json.loads(line)
                if value.startswith("new"):
                    seen.setdefault((part, off), []).append(cid)
    assert len(seen) == 600
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    assert not twice, f"{len(twice)} records delivered twice, e.g. {sorted(twice.items())[:3]}"


STALE_SHARE = textwrap.dedent("""
    import sys, pylog
    log = pylog.open(sys.argv[1], sync="always")
    c = log.share_consumer("t", group_id="sg", auto_offset_reset="earliest")
    n = 0
    while n < 50:
        for r in c.poll(timeout_ms=500, max_records=50 - n):
            c.acknowledge(r)
            n += 1
    c.commit()
    more = []
    while len(more) < 30:
        more += c.poll(timeout_ms=500, max_records=30 - len(more))
    for r in more:
        c.acknowledge(r)
    c.poll(timeout_ms=0, max_records=1)     # (applies them: seq moves on)
    print("ready", flush=True)
    sys.stdin.readline()
    c.close()
    log.close()
    print("closed", flush=True)
""")


def test_a_stale_share_file_is_never_checkpointed_over_the_new_topic(logdir, child_env):
    """A process still maps a deleted topic's share file (start offset 80)
    when the topic is made again and a consumer there registers and
    commits a new state (start offset 5). The stale process's checkpoint
    at close won, its sequence number being higher, and a reboot would
    have served the new topic from offset 80 (found by review)."""
    from pylog import sharestate as ss
    with pylog.open(logdir) as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"old-%d" % i for i in range(100)])
    old = start(STALE_SHARE, logdir, env=child_env, stdin=subprocess.PIPE)
    with _reaped(old):
        expect(old, b"ready")
        with pylog.open(logdir, sync="always") as log:
            log.delete_topic("t")
            log.create_topic("t")
            log.producer().send_batch("t", [b"new-%d" % i for i in range(100)])
            c = log.share_consumer("t", group_id="sg", auto_offset_reset="earliest")
            n = 0
            while n < 5:
                for r in c.poll(timeout_ms=500, max_records=5 - n):
                    c.acknowledge(r)
                    n += 1
            c.commit()
            c.close()
        _go_and_close(old)
    with pylog.open(logdir) as log:
        raw = log.meta.info_get(ss.share_key("sg", "t", 0), "read")
        assert ss.decode_state(raw, "t")[1] == 5


RECREATE_30 = textwrap.dedent("""
    import sys, pylog
    with pylog.open(sys.argv[1]) as log:
        log.delete_topic("t")
        log.create_topic("t", partitions=1)
        p = log.producer()
        for i in range(30):
            p.send("t", b"new-%02d" % i)
""")


def _old_topic_read_by(log, readers):
    """Makes topic "t" with 10 records and has each of ``readers`` (new
    consumers of ``log``) assigned its partition and read all 10."""
    log.create_topic("t")
    p = log.producer()
    for i in range(10):
        p.send("t", b"old-%02d" % i)
    for c in readers:
        c.assign([TP0])
        got = []
        while len(got) < 10:
            got += c.poll(timeout=0.5)


def _recreate_30(logdir, child_env):
    """Another process deletes "t" and makes it again with 30 records."""
    subprocess.run([sys.executable, "-c", RECREATE_30, logdir], env=child_env,
                   check=True, timeout=60)


def _reads_the_new_topic(c):
    """``c`` polls the 30 records of the topic made again, from its start."""
    new = []
    for _ in range(20):
        new += c.poll(timeout=0.3)
        if len(new) >= 30:
            break
    assert [r.value for r in new] == [b"new-%02d" % i for i in range(30)]


@pytest.mark.parametrize("look", ["metrics", "topics", "partitions_for"])
def test_a_monitor_in_the_consumers_process_leaves_its_position_alone(logdir, child_env,
                                                                      look):
    """Review of a change made and taken back this session: a monitor
    that dropped the Log's partitions of a topic another process made
    again (to show the new topic) let a consumer of the same Log carry
    its old position onto the new topic (10 of its records skipped, or
    CorruptLogError): the consumer learns of the delete from the old
    partition. Whatever a monitor thread of its process reads, the
    consumer reads the new topic from its start; and ``metrics()`` shows
    the new topic (it showed nothing for it, only an error, until the
    consumer had met the delete)."""
    import threading

    log = pylog.open(logdir)
    try:
        c = log.consumer(auto_offset_reset="earliest")
        _old_topic_read_by(log, [c])
        _recreate_30(logdir, child_env)
        time.sleep(1.1)         # (past the topic cache's second)
        seen = []
        t = threading.Thread(target=lambda: seen.append(getattr(log, look)(
            *(("t",) if look == "partitions_for" else ()))))
        t.start()
        t.join()
        if look == "metrics":   # the new topic's figures, not an error
            assert [(m.topic, m.end_offset) for m in seen[0].partitions] == [("t", 30)]
            assert seen[0].errors == ()
        _reads_the_new_topic(c)
        c.close()
    finally:
        log.close()


def test_a_second_reader_of_the_log_never_carries_its_position_over(logdir, child_env):
    """Left over from the twelfth session's review: two readers of one Log
    read the old topic; another process deletes it and makes it again.
    The first reader to meet the delete dropped the Log's partitions of
    the name, so the second reader's next fetch opened the new topic's
    partition and read it from its old position (the new topic's first
    10 records skipped). A position belongs to the incarnation of the
    topic it was taken in (L-4): the second reader, too, reads the new
    topic from its start."""
    log = pylog.open(logdir)
    try:
        readers = [log.consumer(auto_offset_reset="earliest") for _ in range(2)]
        _old_topic_read_by(log, readers)
        _recreate_30(logdir, child_env)
        for c in readers:
            _reads_the_new_topic(c)
            c.close()
    finally:
        log.close()


def test_a_second_share_group_of_the_log_never_carries_its_state_over(logdir, child_env):
    """As above, for share consumers of two groups in one Log: the second
    acquired the topic made again from its old share state (its first 10
    records skipped). A share state belongs to its incarnation too."""
    log = pylog.open(logdir)
    try:
        log.create_topic("t")
        p = log.producer()
        for i in range(10):
            p.send("t", b"old-%02d" % i)
        readers = [log.share_consumer("t", group_id=g, auto_offset_reset="earliest")
                   for g in ("a", "b")]
        assert [len(_accept(c, 10)) for c in readers] == [10, 10]
        _recreate_30(logdir, child_env)
        for c in readers:
            assert sorted(_accept(c, 30)) == [b"new-%02d" % i for i in range(30)]
            c.close()
    finally:
        log.close()


def test_a_second_async_reader_never_carries_its_position_over(logdir, child_env):
    """As above, for pylog.aio consumers, whose fetch of a single
    partition takes a path of its own (PollDriver._fetch_one)."""
    import asyncio

    import pylog.aio

    async def main():
        async with pylog.aio.open(logdir) as log:
            await log.create_topic("t")
            p = log.producer()
            for i in range(10):
                await p.send("t", b"old-%02d" % i)
            readers = []
            for _ in range(2):
                c = log.consumer(auto_offset_reset="earliest")
                c.assign([TP0])
                readers.append(c)
            for c in readers:
                got = []
                while len(got) < 10:
                    got += (await c.getmany(timeout_ms=500)).get(TP0, [])
            await asyncio.to_thread(_recreate_30, logdir, child_env)
            for c in readers:
                new = []
                for _ in range(20):
                    new += (await c.getmany(timeout_ms=300)).get(TP0, [])
                    if len(new) >= 30:
                        break
                assert [r.value for r in new] == [b"new-%02d" % i for i in range(30)]
                await c.close()

    asyncio.run(main())


@pytest.mark.parametrize("seek", ["seek_to_end", "seek"])
def test_a_seek_made_before_the_delete_is_not_an_offset_of_the_new_topic(
        logdir, child_env, seek):
    """Review of the above: a seek in the old topic (to its end, 10, or to
    7) made a cursor bound at its first fetch, which read the topic made
    again from there (20 or 23 of its 30 records) once another reader of
    the Log had met the delete. A seek is an offset of the incarnation
    it was checked against."""
    log = pylog.open(logdir)
    try:
        first, other = readers = [log.consumer(auto_offset_reset="earliest")
                                  for _ in range(2)]
        _old_topic_read_by(log, readers)
        if seek == "seek":
            other.seek(TP0, 7)
        else:
            other.seek_to_end(TP0)
        _recreate_30(logdir, child_env)
        for _ in range(3):
            first.poll(timeout=0.3)     # (meets the delete)
        _reads_the_new_topic(other)
    finally:
        log.close()


@pytest.mark.parametrize("how", ["commit", "close"])
def test_an_assigned_consumers_commit_skips_a_deleted_topics_position(
        logdir, child_env, how):
    """Review of the above, older than it: a consumer with a group that
    assign()ed the partition (not a member, so no group drops it) read
    10 records; the topic is deleted and made again with 30; its
    commit() or close() (auto-commit) stored offset 10 for the new topic,
    and the group then read 20 of its 30 records. A position of a
    deleted incarnation is not committed."""
    log = pylog.open(logdir)
    try:
        c = log.consumer(group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=(how == "close"))
        _old_topic_read_by(log, [c])
        c.poll(timeout=0.1)             # (the 10 are finished)
        _recreate_30(logdir, child_env)
        if how == "commit":
            c.commit()
        else:
            c.close()
        n = log.consumer(group_id="g", auto_offset_reset="earliest")
        assert n.committed(TP0) is None
        n.assign([TP0])
        _reads_the_new_topic(n)
    finally:
        log.close()


@pytest.mark.parametrize("end", ["commit", "close", "commit-always"])
def test_a_share_consumer_ends_cleanly_after_another_reader_met_the_delete(
        logdir, child_env, end):
    """Review of the share side of the above: once another reader of the
    Log (here ``metrics()``) had opened the topic made again, a share
    consumer that held or acknowledged old records raised from commit()
    (KeyError; with sync="always" a set changed while iterated) or close()
    (a dict changed while iterated, after which it freed the new topic's
    owner slot of another consumer). They end cleanly, and the group
    reads the new topic whole."""
    log = pylog.open(logdir, sync="always" if end == "commit-always" else "never")
    try:
        log.create_topic("t")
        p = log.producer()
        for i in range(10):
            p.send("t", b"old-%02d" % i)
        c = log.share_consumer("t", group_id="g", auto_offset_reset="earliest")
        got = []
        for _ in range(20):
            got += c.poll(timeout_ms=200)
            if len(got) >= 10:
                break
        if end != "close":
            for r in got:
                c.acknowledge(r, "accept")
            if end == "commit-always":
                c.commit()
        _recreate_30(logdir, child_env)
        assert [(m.topic, m.end_offset) for m in log.metrics().partitions] == [("t", 30)]
        if end == "close":
            c.close()
        else:
            c.commit()
            c.close()
        again = log.share_consumer("t", group_id="g", auto_offset_reset="earliest")
        assert sorted(_accept(again, 30)) == [b"new-%02d" % i for i in range(30)]
        again.close()
    finally:
        log.close()


def test_a_new_share_group_reads_a_topic_made_again_at_its_first_poll(logdir, child_env):
    """Review: a share group new to the Log, whose Log still had the deleted
    topic's partition open, raised TopicNotFound from every poll (its
    place in the group was looked up on the deleted partition)."""
    log = pylog.open(logdir)
    try:
        log.create_topic("t")
        log.producer().send("t", b"old")
        first = log.share_consumer("t", group_id="g", auto_offset_reset="earliest")
        assert len(first.poll(timeout_ms=500)) == 1
        _recreate_30(logdir, child_env)
        other = log.share_consumer("t", group_id="other", auto_offset_reset="earliest")
        assert sorted(_accept(other, 30)) == [b"new-%02d" % i for i in range(30)]
    finally:
        log.close()


def test_a_deleted_topics_share_files_are_closed_with_the_log(logdir, child_env):
    """Review: the share files of a deleted incarnation, dropped from the
    Log's cache, were never closed: two descriptors and a map per delete
    stayed for as long as the process ran, the Log closed or not."""
    import os

    def share_fds():
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if logdir in target and "/meta/share/" in target:
                out.append(target)
        return out

    log = pylog.open(logdir)
    log.create_topic("t")
    log.producer().send("t", b"x")
    c = log.share_consumer("t", group_id="g", auto_offset_reset="earliest")
    assert len(_accept(c, 1)) == 1
    for _ in range(3):
        _recreate_30(logdir, child_env)
        assert len(_accept(c, 30)) == 30
    c.close()
    log.close()
    assert share_fds() == []


@pytest.mark.parametrize("other", ["metrics", "consumer"])
def test_a_fetch_whose_partition_another_thread_drops_gives_nothing(
        logdir, child_env, other, monkeypatch):
    """Review: a consumer thread had the deleted incarnation's partition in
    hand when another thread (``metrics()``, or a consumer meeting the
    delete) dropped and closed it: poll() raised LogClosed on an open Log.
    The fetch gives nothing instead, and the next one reads the topic made
    again. The interleaving is forced: the fetch waits, between taking
    the partition and reading it, for the other thread to be done."""
    import threading

    from pylog.delivery import Delivery

    log = pylog.open(logdir)
    try:
        c, second = readers = [log.consumer(auto_offset_reset="earliest") for _ in range(2)]
        _old_topic_read_by(log, readers)
        _recreate_30(logdir, child_env)
        in_fetch, go = threading.Event(), threading.Event()
        handing = Delivery.handing

        def held_up(self, tp, first):
            if self is c._delivery and not go.is_set():
                in_fetch.set()
                go.wait(10)
            return handing(self, tp, first)
        monkeypatch.setattr(Delivery, "handing", held_up)
        result = []
        t = threading.Thread(target=lambda: result.append(c.poll(timeout=0)))
        t.start()
        assert in_fetch.wait(10)
        if other == "metrics":
            log.metrics()
        else:
            _reads_the_new_topic(second)
        go.set()
        t.join(10)
        assert result == [[]]
        _reads_the_new_topic(c)
    finally:
        log.close()


def test_a_reject_pending_across_a_delete_dead_letters_nothing_new(logdir):
    """Review: a reject acknowledged before its topic was deleted and made
    again, applied by the next commit(), copied the new topic's record at
    that offset to the dead-letter topic (which the next poll delivered
    too). The deleted topic's acknowledgements go with it (L-4)."""
    with pylog.open(logdir) as log:
        log.create_topic("jobs")
        log.create_topic("jobs.dlq")
        log.producer().send_batch("jobs", [b"old-%d" % i for i in range(5)])
        c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                               dead_letter_topic="jobs.dlq")
        got = c.poll(timeout_ms=1000)
        assert len(got) == 5
        for r in got:
            c.acknowledge(r, "reject" if r.offset == 2 else "accept")
        log.delete_topic("jobs")
        log.create_topic("jobs")
        log.producer().send_batch("jobs", [b"new-%d" % i for i in range(5)])
        c.commit()
        with log.consumer(auto_offset_reset="earliest") as r:
            r.assign([TopicPartition("jobs.dlq", 0)])
            assert r.poll(timeout=0.5) == []
        assert sorted(_accept(c, 5)) == [b"new-%d" % i for i in range(5)]
        c.close()


@pytest.mark.parametrize("group", [None, "g"], ids=["no group", "group"])
def test_a_topic_made_again_with_fewer_partitions_is_read(logdir, group):
    """A subscribed consumer's partition count (cached a second) still
    named partitions the topic made again lacks: its poll raised
    PartitionNotFound ("there is no partition 2") instead of reading."""
    a = pylog.open(logdir, sync="never")
    reader = pylog.open(logdir, sync="never")
    try:
        a.create_topic("o", partitions=4)
        c = reader.consumer("o", group_id=group, enable_auto_commit=False,
                            auto_offset_reset="earliest")
        a.producer().send_batch("o", [b"x"], partition=3)
        got = []
        while not got:
            got = c.poll(timeout=1)
        a.delete_topic("o")
        a.create_topic("o", partitions=1)
        a.producer().send_batch("o", [b"again"], partition=0)
        values = []
        deadline = time.monotonic() + 10
        while not values and time.monotonic() < deadline:
            values = [r.value for r in c.poll(timeout=0.2)]
        assert values == [b"again"]
        c.close()
    finally:
        reader.close()
        a.close()
def test_a_topic_made_again_with_fewer_partitions_is_read_without_errors(logdir):
    """A group member's topic deleted and made again with fewer partitions
    (by another thread or process): its poll() raised PartitionNotFound for
    each partition of the old topic the new one lacks (4 polls in a row),
    its commit() and close() too. Now the poll reads the new topic, a
    commit of the old positions is refused as any of a rebalanced
    member's (CommitFailedError), and close() leaves cleanly."""
    with pylog.open(logdir) as log:
        log.create_topic("x", partitions=4)
        p = log.producer()
        for i in range(8):
            p.send("x", b"a%d" % i, partition=i % 4)
        c = log.consumer("x", group_id="g", auto_offset_reset="earliest")
        assert len(c.poll(timeout_ms=2000)) == 8
        log.delete_topic("x")
        log.create_topic("x", partitions=1)
        p.send("x", b"new")
        with pytest.raises(pylog.CommitFailedError):
            c.commit()
        assert [r.value for r in c.poll(timeout_ms=2000)] == [b"new"]
        assert c.assignment() == {TopicPartition("x", 0)}
        c.commit()
        assert c.committed(TopicPartition("x", 0)) == 1
        c.close()
        log.create_topic("y", partitions=3)
        for i in range(3):
            p.send("y", b"b", partition=i)
        d = log.consumer("y", group_id="g2", auto_offset_reset="earliest")
        assert len(d.poll(timeout_ms=2000)) == 3
        log.delete_topic("y")
        log.create_topic("y", partitions=1)
        d.close()             # (its positions of the old topic are not committed)
        assert log.consumer(group_id="g2").committed(TopicPartition("y", 0)) is None
