"""A consumer that assign()s partitions with a group_id commits into the
group without being a member of it. As Kafka's coordinator, pylog refuses
such a commit (CommitFailedError) of a partition a live member of the
group owns, whether the commit takes the commit table's fast path or a
metadata transaction; with no live member owning it, the commit is stored
as before (the documented use: reading with assign() and keeping the
position in a group)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from childproc import readline, start

import pylog
from pylog import TopicPartition
from pylog.errors import CommitFailedError

TP = TopicPartition("t", 0)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def log(tmp_path):
    with pylog.open(str(tmp_path / "log")) as lg:
        lg.create_topic("t", partitions=2)
        lg.producer().send_batch("t", [b"%d" % i for i in range(100)], partition=0)
        yield lg


def member(log):
    """A member of group "g" that owns both partitions and committed 10."""
    b = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=False, max_poll_records=10)
    assert [r.offset for r in b.poll(timeout=5)] == list(range(10))
    b.commit()
    assert b.committed(TP) == 10
    return b


def standalone(log, **kw):
    c = log.consumer(group_id="g", **{"enable_auto_commit": False, **kw})
    c.assign([TP])
    return c


def test_commit_into_a_partition_a_live_member_owns_is_refused(log):
    b = member(log)
    c = standalone(log)
    with pytest.raises(CommitFailedError, match="not a member of group 'g'.*live member"):
        c.commit({TP: 90})
    assert b.committed(TP) == 10
    b.commit()                                  # the member's own commits go on
    assert [r.offset for r in b.poll(timeout=1)] == list(range(10, 20))
    b.close()


def test_refused_on_the_fast_path_too(log):
    """The slot exists and was last stored unfenced: a member that takes
    the partition afterwards fences it, and the next unfenced commit is
    refused, not stored into the slot."""
    c = standalone(log)
    c.commit({TP: 5})
    c.commit({TP: 6})                           # (the table's fast path)
    assert c.committed(TP) == 6
    b = log.consumer("t", group_id="g", enable_auto_commit=False, max_poll_records=10)
    assert [r.offset for r in b.poll(timeout=5)] == list(range(6, 16))
    b.commit()                                  # (the member's fast path)
    with pytest.raises(CommitFailedError):
        c.commit({TP: 90})
    with pytest.raises(CommitFailedError):
        c.commit({TP: 91})
    assert c.committed(TP) == 16
    b.close()
    c.commit({TP: 50})                          # no member left: accepted again
    assert c.committed(TP) == 50


def test_refused_from_another_process(log, tmp_path):
    b = member(log)
    r = subprocess.run([sys.executable, "-c", f"""
import pylog
from pylog import TopicPartition
from pylog.errors import CommitFailedError
log = pylog.open({str(tmp_path / "log")!r})
c = log.consumer(group_id="g", enable_auto_commit=False)
c.assign([TopicPartition("t", 0)])
for off in (90, 91):
    try:
        c.commit({{TopicPartition("t", 0): off}})
        print("stored", off)
    except CommitFailedError:
        print("refused", off)
c.close()
log.close()
"""], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["refused", "90", "refused", "91"]
    assert b.committed(TP) == 10
    b.close()


def test_a_group_without_live_members_takes_the_commit(log):
    c = standalone(log)
    c.commit({TP: 3})                           # a group nobody joined
    assert c.committed(TP) == 3
    b = log.consumer("t", group_id="g", enable_auto_commit=False, max_poll_records=10)
    assert len(b.poll(timeout=5)) == 10
    b.close()                                   # the member left
    c.commit({TP: 40})
    assert c.committed(TP) == 40
    c.close()


def test_a_dead_members_partition_takes_the_commit(log, tmp_path):
    proc = start(f"""
import pylog
log = pylog.open({str(tmp_path / "log")!r})
b = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                 enable_auto_commit=False, max_poll_records=10)
assert len(b.poll(timeout=5)) == 10
b.commit()
print("owned", flush=True)
import time
time.sleep(600)
""", cwd=REPO)
    try:
        assert readline(proc, timeout=30) == b"owned\n"
        c = standalone(log)
        with pytest.raises(CommitFailedError):
            c.commit({TP: 90})
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    c.commit({TP: 90})                          # its owner's process is gone
    assert c.committed(TP) == 90


def test_partitions_no_live_member_owns_and_other_groups_take_commits(log):
    log.create_topic("u", partitions=1)
    m = log.consumer("u", group_id="g", enable_auto_commit=False)
    m.poll(timeout=2)
    assert m.assignment() == {TopicPartition("u", 0)}
    c = standalone(log)
    c.commit({TP: 7})                           # the live member does not own t-0
    assert c.committed(TP) == 7
    with pytest.raises(CommitFailedError):
        c.commit({TopicPartition("u", 0): 0})
    other = log.consumer(group_id="other", enable_auto_commit=False)
    other.assign([TopicPartition("u", 0)])
    other.commit({TopicPartition("u", 0): 0})   # a group of its own
    assert other.committed(TopicPartition("u", 0)) == 0
    m.close()


def test_refused_auto_commits_do_not_raise(log):
    b = member(log)
    c = standalone(log, enable_auto_commit=True, auto_commit_interval_ms=1,
                   auto_offset_reset="earliest", max_poll_records=10)
    for _ in range(5):                          # each poll auto-commits the last
        assert len(c.poll(timeout=2)) == 10
        time.sleep(0.01)
    c.close()
    assert b.committed(TP) == 10
    b.close()


def test_close_of_an_assigned_consumer_commits_what_it_finished(logdir):
    """assign() with a group_id and auto-commit: close() commits the
    records it finished, as a member's close does (it committed nothing:
    the final commit was left to a group leave, which a consumer that is
    not a member never makes). The last poll's records are not finished."""
    with pylog.open(logdir) as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"x"] * 10)
        c = log.consumer(group_id="g", auto_offset_reset="earliest",
                         auto_commit_interval_ms=60000)
        c.assign([TopicPartition("t", 0)])
        assert len(c.poll(timeout=1, max_records=6)) == 6
        assert len(c.poll(timeout=1)) == 4
        c.close()
        assert log.consumer(group_id="g").committed(TopicPartition("t", 0)) == 6
