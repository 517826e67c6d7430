"""Transactions as a user trial exercised them: consume-transform-produce
across a rebalance, a fenced producer's sends, bad arguments, and Ctrl-C
at the instants that matter (README "Exactly once with transactions")."""

from __future__ import annotations

import collections
import subprocess
import sys
import time

import pytest

import pylog
from pylog import TopicPartition as TP


@pytest.fixture
def log(tmp_path):
    lg = pylog.open(tmp_path / "log")
    yield lg
    lg.close()


def _committed_values(log, *tps):
    r = log.consumer(enable_auto_commit=False, isolation_level="read_committed")
    r.assign(list(tps))
    r.seek_to_beginning()
    got = []
    while True:
        batch = r.poll(timeout=0.2)
        if not batch:
            break
        got += [x.value for x in batch]
    r.close()
    return got


def _ctp_worker(log, name):
    c = log.consumer("in", group_id="g", enable_auto_commit=False,
                     auto_offset_reset="earliest", isolation_level="read_committed")
    return c, log.producer(transactional_id="ctp-" + name)


def _transform_until_done(workers, rounds):
    """Each (consumer, transactional producer) of ``workers`` in turn, for
    ``rounds`` rounds: what a poll returns goes to "out" in a transaction
    with its offsets."""
    for _ in range(rounds):
        for c, p in workers:
            got = c.poll(timeout=0.1)
            if got:
                with p.transaction():
                    for r in got:
                        p.send("out", b"out-" + r.value)
                    p.send_offsets_to_transaction(c)


def _second_member_joins(log):
    """Topics "in" (two partitions, two records each) and "out"; worker 1
    polled all four records, then worker 2 joined the group (it wants a
    partition): (c1, p1, c2, p2, records)."""
    log.create_topic("in", partitions=2)
    log.create_topic("out", partitions=1)
    log.producer().send_batch("in", [b"a0", b"a1"], partition=0)
    log.producer().send_batch("in", [b"b0", b"b1"], partition=1)
    c1, p1 = _ctp_worker(log, "1")
    recs = c1.poll(timeout=1.0)
    assert len(recs) == 4
    c2, p2 = _ctp_worker(log, "2")
    c2.poll(timeout=0.2)
    return c1, p1, c2, p2, recs


def _short_session_worker(log):
    """Topics "in" (two partitions, a record each) and "out"; a worker
    whose member times out 200 ms after it stopped heartbeating, which it
    does 250 ms after its last poll (max_poll_interval_ms), having polled
    both records: (consumer, transactional producer, records)."""
    log.create_topic("in", partitions=2)
    log.create_topic("out", partitions=1)
    log.producer().send_batch("in", [b"a0"], partition=0)
    log.producer().send_batch("in", [b"b0"], partition=1)
    c1 = log.consumer("in", group_id="g", enable_auto_commit=False,
                      auto_offset_reset="earliest", isolation_level="read_committed",
                      session_timeout_ms=200, max_poll_interval_ms=250)
    p1 = log.producer(transactional_id="ctp-1")
    return c1, p1, c1.poll(timeout=1.0)


def test_send_offsets_keeps_partitions_a_joining_member_wants(log):
    """A member joins while the first one transforms the records its poll
    returned: send_offsets_to_transaction(consumer) names every partition
    those records came from (it does not run a rebalance that drops some),
    so each input has exactly one committed output."""
    c1, p1, c2, p2, recs = _second_member_joins(log)
    with p1.transaction():
        for r in recs:
            p1.send("out", b"out-" + r.value)
        p1.send_offsets_to_transaction(c1)
    assert {p: c1.committed(TP("in", p)) for p in (0, 1)} == {0: 2, 1: 2}
    _transform_until_done(((c1, p1), (c2, p2)), rounds=5)
    counts = collections.Counter(_committed_values(log, TP("out", 0)))
    assert counts == {b"out-a0": 1, b"out-a1": 1, b"out-b0": 1, b"out-b1": 1}
    for x in (c1, c2, p1, p2):
        x.close()


def test_send_offsets_refused_when_a_handed_partition_moved(log):
    """The member's handed partitions went to another member before the
    commit point (it missed session_timeout_ms): the commit raises
    CommitFailedError, nothing is committed; never the outputs without
    their offsets."""
    c1, p1, recs = _short_session_worker(log)
    assert len(recs) == 2
    p1.begin_transaction()
    for r in recs:
        p1.send("out", b"out-" + r.value)
    p1.send_offsets_to_transaction(c1)
    time.sleep(0.8)
    c2, p2 = _ctp_worker(log, "2")
    assert len(c2.poll(timeout=1.0)) == 2          # c1 is out of the group
    with pytest.raises(pylog.CommitFailedError):
        p1.commit_transaction()
    p1.abort_transaction()
    assert _committed_values(log, TP("out", 0)) == []
    assert {p: c2.committed(TP("in", p)) for p in (0, 1)} == {0: None, 1: None}
    for x in (c1, c2, p1, p2):
        x.close()


@pytest.mark.parametrize("group", ["bad\0group", "x" * 300, "", 7])
def test_send_offsets_refuses_a_bad_group_id(log, group):
    """A group id log.consumer() refuses is refused here too, before
    anything is written (it is part of an LMDB key, M-6)."""
    log.create_topic("t", partitions=1)
    log.producer().send_batch("t", [b"a", b"b", b"c"])
    p = log.producer(transactional_id="x")
    p.begin_transaction()
    with pytest.raises(pylog.InvalidArgument):
        p.send_offsets_to_transaction({TP("t", 0): 3}, group)
    p.commit_transaction()
    assert log.groups() == []
    p.close()


def _fence_in_child(path, tid):
    """Make a producer of ``tid`` in another process (it fences ours)."""
    code = ("import sys, pylog\n"
            "with pylog.open(sys.argv[1]) as lg:\n"
            "    lg.producer(transactional_id=sys.argv[2]).close()\n")
    subprocess.run([sys.executable, "-c", code, str(path), tid], check=True, timeout=60)


@pytest.mark.parametrize("where", ["this log", "another process"])
@pytest.mark.parametrize("call", [
    lambda p: p.send("t", b"zombie", partition=0),
    lambda p: p.send_batch("t", [b"zombie-1", b"zombie-2"], partition=0),
], ids=["send", "send_batch"])
def test_fenced_producer_cannot_send_to_a_partition_it_wrote(log, tmp_path, call, where):
    """README: making a producer with a transactional_id fences the older
    one, whose next call raises ProducerFencedError; also a send to a
    partition the old one already wrote in its open transaction, and
    nothing of it reaches the log."""
    log.create_topic("t", partitions=1)
    old = log.producer(transactional_id="w")
    old.begin_transaction()
    old.send("t", b"first", partition=0)
    old.send("t", b"second", partition=0)
    if where == "this log":
        log.producer(transactional_id="w").close()
    else:
        _fence_in_child(tmp_path / "log", "w")
    with pytest.raises(pylog.ProducerFencedError):
        call(old)
    with pytest.raises(pylog.ProducerFencedError):
        old.commit_transaction()
    old.close()
    c = log.consumer(enable_auto_commit=False)
    c.assign([TP("t", 0)])
    c.seek_to_beginning()
    assert sorted(r.value for r in c.poll(timeout=0.5)) == [b"first", b"second"]
    c.close()


def _interrupt_on_return(name):
    """A trace function raising KeyboardInterrupt as function ``name``
    returns: where a Ctrl-C lands when its signal arrives right then."""
    fired = []

    def trace(frame, event, arg):
        if frame.f_code.co_name != name or fired:
            return None

        def local(frame, event, arg):
            if event == "return" and not fired and arg is not None:
                fired.append(arg)
                raise KeyboardInterrupt
            return local
        return local
    return trace, fired


@pytest.mark.parametrize("name, call", [
    ("append_producer", lambda p: p.send("out", b"ABORTED", partition=1)),
    ("append_columns_producer", lambda p: p.send_batch("out", [b"ABORTED"] * 2, partition=1)),
])
def test_ctrl_c_right_after_an_append_is_aborted(log, name, call):
    """Ctrl-C lands just after a send's append returns, before the producer
    notes it: the `with` block's abort still covers that batch, so
    read_committed readers never see it."""
    log.create_topic("out", partitions=2)
    p = log.producer(transactional_id="w")
    with p.transaction():              # both partitions armed and checked
        p.send("out", b"warm-0", partition=0)
        p.send("out", b"warm-1", partition=1)
    trace, fired = _interrupt_on_return(name)
    with pytest.raises(KeyboardInterrupt):
        with p.transaction():
            p.send("out", b"kept-0", partition=0)
            sys.settrace(trace)
            try:
                call(p)
            finally:
                sys.settrace(None)
    assert fired
    assert sorted(_committed_values(log, TP("out", 0), TP("out", 1))) == \
        [b"warm-0", b"warm-1"]
    p.close()


@pytest.mark.parametrize("then", ["close", "abort_transaction", "commit_transaction"])
@pytest.mark.parametrize("partitions, point", [
    (2, "end"),                  # the commit point is the LMDB decision
    (1, "write_markers"),        # the commit point is the COMMIT control batch
])
def test_ctrl_c_past_the_commit_point_keeps_the_commit(log, partitions, point, then):
    """Ctrl-C lands in commit_transaction just after the commit point,
    before the producer notes the transaction closed: the abort that
    follows (close(), or an explicit one) does not undo it, and a retried
    commit finds it committed; the outputs stay committed with their
    inputs' offsets, and the producer goes on."""
    log.create_topic("in", partitions=1)
    log.create_topic("out", partitions=2)
    log.producer().send_batch("in", [b"1", b"2", b"3"])
    c = log.consumer("in", group_id="g", enable_auto_commit=False,
                     auto_offset_reset="earliest", isolation_level="read_committed")
    p = log.producer(transactional_id="ctp")
    recs = c.poll(timeout=1.0)
    fired = []

    def trace(frame, event, arg):
        if frame.f_code.co_name != point or frame.f_globals.get("__name__") != \
                "pylog.transactions" or fired:
            return None

        def local(frame, event, arg):
            if event == "return" and not fired:
                fired.append(point)
                raise KeyboardInterrupt
            return local
        return local

    with pytest.raises(KeyboardInterrupt):
        with p.transaction():
            for r in recs:
                p.send("out", b"out-" + r.value, partition=int(r.value) % partitions)
            if partitions > 1:
                p.send_offsets_to_transaction(c)
            sys.settrace(trace)
        sys.settrace(None)
    sys.settrace(None)
    assert fired
    if then == "close":
        p.close()
        p = log.producer(transactional_id="ctp")
    else:
        getattr(p, then)()
    assert sorted(_committed_values(log, TP("out", 0), TP("out", 1))) == \
        [b"out-1", b"out-2", b"out-3"]
    if partitions > 1:
        assert c.committed(TP("in", 0)) == 3
    with p.transaction():
        p.send("out", b"next", partition=0)
    assert b"next" in _committed_values(log, TP("out", 0))
    p.close()
    c.close()


def test_a_fence_between_the_end_check_and_the_append_lets_one_send_at_most(log):
    """The fenced producer's one-call path reads where the partition ends,
    then appends: a fencer's ABORT landing between the two let that send
    in (X-5 allows this one racing append), and the producer then took
    the new end as checked, so every later send got in too (20 of 20,
    found by review). Now the next send after it raises."""
    from pylog import txnproducer
    log.create_topic("t", partitions=1)
    old = log.producer(transactional_id="w")
    old.begin_transaction()
    old.send("t", b"first", partition=0)
    real = txnproducer.IdempotentProducer._unchanged
    fencer = []

    def unchanged_then_fence(self, part, key):
        got = real(self, part, key)
        if got and not fencer:
            fencer.append(log.producer(transactional_id="w"))   # ABORT to t-0
        return got
    sent = 0
    txnproducer.IdempotentProducer._unchanged = unchanged_then_fence
    try:
        with pytest.raises(pylog.ProducerFencedError):
            for i in range(20):
                old.send("t", b"zombie-%d" % i, partition=0)
                sent += 1
    finally:
        txnproducer.IdempotentProducer._unchanged = real
    assert fencer and sent <= 1
    with pytest.raises(pylog.ProducerFencedError):
        old.commit_transaction()
    assert _committed_values(log, TP("t", 0)) == []
    fencer[0].close()
    old.close()


@pytest.mark.parametrize("partitions, point", [(2, "_moved_arms"), (1, "_closed_txn")])
def test_no_send_between_an_interrupted_commit_and_its_end(log, partitions, point):
    """A Ctrl-C past the commit point, caught: a send before the caller
    aborted was accepted, and the commit's markers (or, for one
    partition, the transaction closed as committed) showed it to
    read_committed readers, or left it open holding later records back
    (found by review). Now such a send raises TransactionError until
    commit_transaction() or abort_transaction() ends the transaction."""
    from pylog import txnproducer
    log.create_topic("out", partitions=2)
    p = log.producer(transactional_id="x")
    real = getattr(txnproducer.IdempotentProducer, point)
    armed = []

    def interrupted(self, *args):
        if armed:
            armed.clear()
            raise KeyboardInterrupt
        return real(self, *args)
    p.begin_transaction()
    for i in range(partitions):
        p.send("out", b"committed-%d" % i, partition=i)
    armed.append(True)
    setattr(txnproducer.IdempotentProducer, point, interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            p.commit_transaction()
    finally:
        setattr(txnproducer.IdempotentProducer, point, real)
    with pytest.raises(pylog.TransactionError, match="commit_transaction"):
        p.send("out", b"after-the-interrupt", partition=0)
    p.abort_transaction()
    with p.transaction():
        p.send("out", b"next", partition=1)
    log.producer().send("out", b"plain", partition=0)
    assert sorted(_committed_values(log, TP("out", 0), TP("out", 1))) == \
        sorted([b"committed-%d" % i for i in range(partitions)] + [b"next", b"plain"])
    p.close()


def test_a_commit_refused_in_a_with_block_aborts_the_transaction(log):
    """commit_transaction() raising CommitFailedError (a rebalance moved an
    input away) at the end of ``with producer.transaction()`` left the
    transaction open: it held read_committed readers back, and the loop's
    next ``with`` raised 'already open' (found by review)."""
    c1, p1, recs = _short_session_worker(log)
    with pytest.raises(pylog.CommitFailedError):
        with p1.transaction():
            for r in recs:
                p1.send("out", b"out-" + r.value)
            p1.send_offsets_to_transaction(c1)
            time.sleep(0.8)
            c2, p2 = _ctp_worker(log, "2")
            assert len(c2.poll(timeout=1.0)) == 2       # c1 is out of the group
    log.producer().send("out", b"plain")
    assert _committed_values(log, TP("out", 0)) == [b"plain"]
    with p1.transaction():
        p1.send("out", b"next")
    assert _committed_values(log, TP("out", 0)) == [b"plain", b"next"]
    for x in (c1, c2, p1, p2):
        x.close()


def test_send_offsets_refused_after_assignment_took_a_handed_partition(log):
    """The application looks at its assignment between poll() and
    send_offsets_to_transaction (a log line): assignment() looks at the
    group, and a member that joined meanwhile takes a partition whose
    records the transaction just transformed. Its offset was dropped from
    the transaction silently, and the new owner transformed those records
    again (duplicates). Now send_offsets_to_transaction raises
    CommitFailedError, the block aborts, and every output appears once."""
    c1, p1, c2, p2, recs = _second_member_joins(log)
    with pytest.raises(pylog.CommitFailedError, match="rebalance took"):
        with p1.transaction():
            for r in recs:
                p1.send("out", b"out-" + r.value)
            assert len(c1.assignment()) == 1          # gave one up
            p1.send_offsets_to_transaction(c1)
    for tp in c1.assignment():            # as after any abort: back to the commit
        c1.seek(tp, c1.committed(tp) or 0)
    _transform_until_done(((c1, p1), (c2, p2)), rounds=20)
    outs = _committed_values(log, TP("out", 0))
    assert sorted(outs) == [b"out-a0", b"out-a1", b"out-b0", b"out-b1"], outs
    for x in (c1, c2, p1, p2):
        x.close()
