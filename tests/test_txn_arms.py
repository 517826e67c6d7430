"""Arms and one-partition commits (issue 17's cost; FORMAT.rst X-4, X-6,
X-9, X-10): a transaction confined to one partition commits with its
COMMIT marker alone, readers decide its batches from the markers after
them, and aborts by others find where an open transaction begins."""

import json
import signal

import childproc
import pytest
from test_transactions import committed_reader, kafka_batches, values

import pylog
from pylog import TopicPartition as TP
from pylog import batch, transactions, txnproducer

T0 = TP("t", 0)


@pytest.fixture
def log(tmp_path):
    lg = pylog.open(tmp_path / "log", sync="always")
    lg.create_topic("t", partitions=2)
    yield lg
    lg.close()


def lmdb_writes(log):
    """The id of LMDB's last write transaction (it grows with every one)."""
    return log.meta.env.info()["last_txnid"]


def doc(log, tid="tx"):
    with log.meta._txn("read") as txn:
        return json.loads(txn.get(b"txn\0" + tid.encode(), db=log.meta._info))


def test_one_partition_commit_writes_no_metadata(log):
    p = log.producer(transactional_id="tx")
    with p.transaction():                      # arms t-0 (one LMDB write)
        p.send("t", b"a", partition=0)
    before = lmdb_writes(log)
    for v in (b"b", b"c", b"d"):
        with p.transaction():
            p.send_batch("t", [v, v + v], partition=0)
    assert lmdb_writes(log) == before          # the marker decides
    rc = committed_reader(log, "t")
    assert [v for _, v in values(rc)] == [b"a", b"b", b"bb", b"c", b"cc", b"d", b"dd"]
    kinds = [(b.is_control_batch, b.is_control_batch and recs[0].type)
             for b, recs in kafka_batches(log, "t", 0)]
    assert kinds == [(False, False), (True, batch.COMMIT)] * 4
    with p.transaction():                      # two partitions: decided in LMDB
        p.send("t", b"e", partition=0)
        p.send("t", b"f", partition=1)
    assert lmdb_writes(log) > before
    assert sorted(values(rc)) == [(0, b"e"), (1, b"f")]


def test_a_reader_holds_at_an_open_batch_until_its_marker(log):
    p = log.producer(transactional_id="tx")
    plain = log.producer()
    with p.transaction():
        p.send("t", b"t0", partition=0)
    plain.send("t", b"p0", partition=0)
    p.begin_transaction()
    p.send("t", b"t1", partition=0)
    plain.send("t", b"p1", partition=0)
    rc = committed_reader(log, "t")
    assert values(rc) == [(0, b"t0"), (0, b"p0")]        # stops at t1
    assert rc.end_offsets([T0])[T0] == 3                  # the LSO: t1's offset
    p.send("t", b"t2", partition=0)
    p.commit_transaction()
    assert values(rc) == [(0, b"t1"), (0, b"p1"), (0, b"t2")]
    p.begin_transaction()
    p.send("t", b"gone", partition=0)
    p.abort_transaction()
    plain.send("t", b"p2", partition=0)
    assert values(rc) == [(0, b"p2")]


def test_a_transaction_across_a_segment_roll_is_decided_by_its_marker(log):
    log.create_topic("small", partitions=1, segment_bytes=65536)
    p = log.producer(transactional_id="tx")
    rc = committed_reader(log, "small")
    p.begin_transaction()
    sent = [b"%04d" % i + b"x" * 5000 for i in range(40)]
    for v in sent:
        p.send("small", v, partition=0)
    assert values(rc) == []
    assert len(log.partition("small", 0).reader._segment_bases(
        log.partition("small", 0).state())) > 2
    p.commit_transaction()
    assert [v for _, v in values(rc, timeout=1)] == sent


def test_a_commit_before_the_fence_stays_committed(log, monkeypatch):
    """X-9: the fencer bumped the epoch in LMDB, then the old instance's
    COMMIT lands before the fencer's ABORT: the transaction is committed
    and the fencer's entries start after it."""
    old = log.producer(transactional_id="tx")
    with old.transaction():
        old.send("t", b"first", partition=0)
    old.begin_transaction()
    old.send("t", b"raced", partition=0)
    finish = transactions.finish_aborting

    def racing(lg, tid):
        old.commit_transaction()           # between the bump and the fence
        return finish(lg, tid)
    monkeypatch.setattr(transactions, "finish_aborting", racing)
    new = log.producer(transactional_id="tx")
    monkeypatch.setattr(transactions, "finish_aborting", finish)
    with new.transaction():
        new.send("t", b"next", partition=0)
    assert [v for _, v in values(committed_reader(log, "t"))] == \
        [b"first", b"raced", b"next"]
    with pytest.raises(pylog.ProducerFencedError):
        with old.transaction():
            old.send("t", b"zombie", partition=0)


def test_a_commit_after_the_fence_is_refused(log):
    old = log.producer(transactional_id="tx")
    with old.transaction():
        old.send("t", b"first", partition=0)
    old.begin_transaction()
    old.send("t", b"late", partition=0)
    log.producer(transactional_id="tx")           # fences: ABORT of epoch + 1
    with pytest.raises(pylog.ProducerFencedError):
        old.send("t", b"later", partition=0)      # (the fencer's ABORT moved the end)
    with pytest.raises(pylog.ProducerFencedError):
        old.commit_transaction()
    assert [v for _, v in values(committed_reader(log, "t"))] == [b"first"]


# a two-partition transaction decided in LMDB, then one over the same
# (armed) partitions killed before its commit
NAMED_THEN_KILLED = r"""
import os, signal, sys, pylog
log = pylog.open(sys.argv[1], sync="always")
p = log.producer(transactional_id="tx")
with p.transaction():
    p.send("t", b"one", partition=0)
    p.send("t", b"two", partition=1)
p.begin_transaction()
p.send("t", b"doomed", partition=0)
p.send("t", b"doomed", partition=1)
p.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("aborter", ["reader", "next_instance"])
def test_markers_of_a_decision_are_not_written_after_later_records(
        log, tmp_path, child_env, aborter):
    """X-6: the COMMIT markers of the first transaction are no longer
    named once the second one sends, so the abort of the second (which
    writes the markers still named) cannot put a COMMIT after its
    records."""
    proc = childproc.start(NAMED_THEN_KILLED, tmp_path / "log", env=child_env)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, childproc.stderr_tail(proc)
    rc = committed_reader(log, "t")
    if aborter == "next_instance":
        log.producer(transactional_id="tx")
    else:
        values(rc)                              # finds the owner gone: aborts
        rc.close()
        rc = committed_reader(log, "t")
    log.producer().send("t", b"after", partition=0)
    assert sorted(values(rc, timeout=1)) == [(0, b"after"), (0, b"one"), (1, b"two")]


def test_an_arm_moves_up_after_many_one_partition_commits(log, monkeypatch):
    monkeypatch.setattr(txnproducer, "REARM_OFFSETS", 5)
    p = log.producer(transactional_id="tx")
    arm, moves = 0, 0
    for _ in range(6):
        with p.transaction():
            p.send_batch("t", [b"x"] * 3, partition=0)
        end = log.partition("t", 0).state().next_offset
        if end - arm > 5:                   # (3 records and a marker a time)
            arm, moves = end, moves + 1
        assert doc(log)["partitions"] == [["t", 0, arm]]
    assert moves == 3
    assert len(values(committed_reader(log, "t"))) == 18


def test_last_stable_is_the_first_open_batch_of_any_producer(log):
    """X-4 for end_offsets: one pass over the partition finds the first
    batch no control batch decides, whatever producer or epoch."""
    a = log.producer(transactional_id="a")
    b = log.producer(transactional_id="b")
    plain = log.producer()
    with a.transaction():
        a.send("t", b"a0", partition=0)              # 0, COMMIT at 1
    b.begin_transaction()
    b.send("t", b"b0", partition=0)                  # 2: open
    a.begin_transaction()
    a.send("t", b"a1", partition=0)                  # 3: open
    a.abort_transaction()                            # ABORT of epoch + 1 at 4
    plain.send("t", b"p", partition=0)               # 5
    c = log.consumer(isolation_level="read_committed", auto_offset_reset="latest")
    c.assign([T0])
    assert c.end_offsets([T0])[T0] == 2
    b.commit_transaction()                           # COMMIT at 6
    assert c.end_offsets([T0])[T0] == 7
    a.begin_transaction()
    a.send("t", b"a2", partition=0)                  # 7: open, a's new epoch
    assert c.end_offsets([T0])[T0] == 7
    a.commit_transaction()
    assert c.end_offsets([T0])[T0] == 9
    c.close()


# -- found by review: a fence landing after the commit point --------------------------

def test_a_fence_after_the_marker_leaves_the_commit_standing(log, monkeypatch):
    """The COMMIT marker committed the transaction; the re-arm after it
    finds the producer fenced: the commit returns, the producer is done."""
    monkeypatch.setattr(txnproducer, "REARM_OFFSETS", 5)
    old = log.producer(transactional_id="tx")
    with old.transaction():
        old.send("t", b"first", partition=0)
    old.begin_transaction()
    old.send_batch("t", [b"x%d" % i for i in range(10)], partition=0)
    rearm = transactions.rearm

    def fenced_first(*a):
        log.producer(transactional_id="tx")
        return rearm(*a)
    monkeypatch.setattr(transactions, "rearm", fenced_first)
    old.commit_transaction()
    assert len(values(committed_reader(log, "t"))) == 11
    with pytest.raises(pylog.ProducerFencedError):
        old.begin_transaction()


def test_a_fence_before_the_markers_of_a_decision_leaves_it_standing(log, monkeypatch):
    """Decided in LMDB, then fenced before its own markers: the fencer
    wrote them (X-9), the producer's are refused, the commit stands."""
    old = log.producer(transactional_id="tx")
    old.begin_transaction()
    old.send("t", b"a", partition=0)
    old.send("t", b"b", partition=1)
    end = transactions.end

    def then_fenced(*a, **kw):
        got = end(*a, **kw)
        log.producer(transactional_id="tx")
        return got
    monkeypatch.setattr(transactions, "end", then_fenced)
    old.commit_transaction()
    assert sorted(values(committed_reader(log, "t"))) == [(0, b"a"), (1, b"b")]


def test_an_arm_an_abort_could_not_move_keeps_committed_ones(log, monkeypatch):
    """An abort that bumped the epoch left an arm where it was (its end
    could not be read): the next fence begins after the abort's marker,
    not at the arm, and the commits of the epoch before stay committed."""
    p = log.producer(transactional_id="tx")
    for v in (b"c1", b"c2"):
        with p.transaction():
            p.send("t", v, partition=0)
    p.begin_transaction()
    p.send("t", b"x", partition=1)
    p.send("t", b"y", partition=0)
    ends = transactions._ends

    def missing_t0(lg, tid):
        got = ends(lg, tid)
        got.pop(("t", 0), None)          # as a TooManyMapsError leaves it out
        return got
    monkeypatch.setattr(transactions, "_ends", missing_t0)
    p.abort_transaction()
    monkeypatch.setattr(transactions, "_ends", ends)
    p.begin_transaction()
    p.send("t", b"z", partition=1)
    log.producer(transactional_id="tx")            # fences
    assert values(committed_reader(log, "t")) == [(0, b"c1"), (0, b"c2")]


@pytest.mark.parametrize("end", ["commit", "abort"])
def test_a_topic_made_again_inside_a_transaction_joins_afresh(log, end):
    plain = log.producer()
    plain.send_batch("t", [b"old"] * 20, partition=0)
    p = log.producer(transactional_id="tx")
    p.begin_transaction()
    p.send("t", b"pre", partition=0)
    log.delete_topic("t")
    log.create_topic("t", partitions=2)
    p.send("t", b"new-1", partition=0)
    p.send("t", b"new-2", partition=0)
    rc = committed_reader(log, "t")
    assert values(rc) == []                        # open in the new topic too
    getattr(p, f"{end}_transaction")()
    assert values(rc) == ([(0, b"new-1"), (0, b"new-2")] if end == "commit" else [])
