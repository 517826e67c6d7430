"""Transactions across failures (issue 17; FORMAT.rst X-6 to X-9): the
LMDB keys and the aborted index, owners killed with SIGKILL or timed out,
forks, a Log closed under a transaction, markers an append failure left
out (the API paths and the bytes: test_transactions.py)."""

import json
import os
import signal
import struct
import time

import childproc
import pytest
from txnlog import T0, committed_reader, kafka_batches, open_txn_log, values

import pylog
from pylog import batch


@pytest.fixture
def log(tmp_path):
    lg = open_txn_log(tmp_path)
    yield lg
    lg.close()


# -- LMDB --------------------------------------------------------------------

def test_metadata_keys(log):
    p = log.producer(transactional_id="tx")
    p.begin_transaction()
    p.send("t", b"a", partition=1)
    p.abort_transaction()
    p.begin_transaction()
    p.send("t", b"b", partition=0)
    with log.meta._txn("read the keys") as txn:
        info = log.meta._info
        doc = json.loads(txn.get(b"txn\0tx", db=info))
        # the arms (X-6): partition 1's moved up to its end by the abort
        # (its ABORT marker came after), partition 0's added by the send
        assert doc["partitions"] == [["t", 1, 1], ["t", 0, 0]]
        assert doc["producer_id"] == p.producer_id and doc["epoch"] == 1
        assert doc["owner"][0] == os.getpid() and doc.get("aborting") is None
        assert struct.unpack(">q", txn.get(b"producer-id", db=info)) == (1,)
        key = (b"aborted\0t\0" + struct.pack(">I", 1)
               + struct.pack(">qq", 0, p.producer_id))
        assert struct.unpack(">h", txn.get(key, db=info)) == (0,)
    p.commit_transaction()


def aborted_entries(log, topic, p):
    """X-8 entries of a partition: [(first offset, producer id, epoch)]."""
    prefix = b"aborted\0" + topic.encode() + b"\0" + struct.pack(">I", p)
    return [(*struct.unpack(">qq", k[len(prefix):]), struct.unpack(">h", v)[0])
            for k, v in log.meta.info_items(prefix, "read X-8")]


def test_collapse_during_a_fetch_never_shows_aborted_records(log, monkeypatch):
    """X-8: delete_records and an abort (which collapses the entries below
    the new log start) land between a read_committed fetch's read of the
    end and its first look at the entries: the fetch still shows no
    aborted record."""
    from pylog import txnview
    p = log.producer(transactional_id="tx")
    for i in range(4):
        p.begin_transaction()
        p.send("t", b"gone%d" % i, partition=0)
        p.abort_transaction()
    with p.transaction():
        p.send("t", b"kept", partition=0)
    orig = txnview.TxnView._load
    fired = []

    def racing(self, topic, partition):
        if not fired:       # another process, after the fetch read the end
            fired.append(1)
            log.delete_records({T0: 5})
            p.begin_transaction()
            p.send("t", b"gone4", partition=0)
            p.abort_transaction()
        return orig(self, topic, partition)

    monkeypatch.setattr(txnview.TxnView, "_load", racing)
    c = log.consumer(auto_offset_reset="earliest", isolation_level="read_committed")
    c.assign([T0])
    c.seek(T0, 0)
    assert [r.value for r in c.poll(timeout=0.5)] == [b"kept"]
    assert fired


def test_aborted_index_collapses_below_the_log_start(log):
    """X-8: once delete_records moved the log start, the next abort keeps
    one entry per producer id below it; what it hid stays hidden (a
    fenced epoch's late record included), committed records show."""
    p = log.producer(transactional_id="tx")
    for i in range(4):
        p.begin_transaction()
        p.send("t", b"gone%d" % i, partition=0)          # offsets 0, 2, 4, 6
        p.abort_transaction()                           # markers 1, 3, 5, 7
    with p.transaction():
        p.send("t", b"kept", partition=0)                # 8 (COMMIT 9)
    pid = p.producer_id
    assert aborted_entries(log, "t", 0) == [(0, pid, 0), (2, pid, 1), (4, pid, 2),
                                            (6, pid, 3)]
    log.delete_records({T0: 5})
    # a zombie of epoch 1 whose record slipped in unchecked
    w = log.partition("t", 0).writer
    zombie = batch.ProducerFields(pid, 1, 9, batch.TRANSACTIONAL_MASK)
    assert w.append_one_producer(1, None, b"zombie", zombie) == 10
    p.begin_transaction()
    p.send("t", b"gone4", partition=0)                   # 11
    p.abort_transaction()
    assert aborted_entries(log, "t", 0) == [(4, pid, 2), (6, pid, 3), (11, pid, 4)]
    log.delete_records({T0: 8})
    p.begin_transaction()
    p.send("t", b"gone5", partition=0)
    p.abort_transaction()
    assert aborted_entries(log, "t", 0) == [(6, pid, 3), (11, pid, 4), (13, pid, 5)]
    with p.transaction():
        p.send("t", b"last", partition=0)
    assert [v for _, v in values(committed_reader(log, "t"))] == [b"kept", b"last"]
    assert aborted_entries(log, "t", 1) == []


# -- dead owners, timeouts -------------------------------------------------------------

CHILD = r"""
import sys, pylog
log = pylog.open(sys.argv[1])
p = log.producer(transactional_id=sys.argv[2])
p.begin_transaction()
p.send("t", b"doomed", partition=0)
p.send("t", b"doomed", partition=1)
print("sent", flush=True)
import time; time.sleep(60)
"""


def test_transaction_of_a_killed_process_is_aborted_by_a_reader(log, tmp_path, child_env):
    """X-9: the owner died inside the transaction: a read_committed poll
    aborts it, its records never show, later transactions do."""
    proc = childproc.start(CHILD, tmp_path / "log", "tx", env=child_env)
    try:
        assert childproc.readline(proc, timeout=30) == b"sent\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    log.producer().send("t", b"plain", partition=1)
    rc = committed_reader(log, "t")
    assert values(rc, 0.5) == [(1, b"plain")]
    p = log.producer(transactional_id="other")
    with p.transaction():
        p.send("t", b"after", partition=0)
    assert values(rc) == [(0, b"after")]


def test_next_instance_aborts_a_killed_owners_transaction(log, tmp_path, child_env):
    proc = childproc.start(CHILD, tmp_path / "log", "tx", env=child_env)
    try:
        assert childproc.readline(proc, timeout=30) == b"sent\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    p = log.producer(transactional_id="tx")
    with p.transaction():
        p.send("t", b"next", partition=0)
    assert values(committed_reader(log, "t")) == [(0, b"next")]
    kinds = [b.is_control_batch and recs[0].type for b, recs in kafka_batches(log, "t", 1)]
    assert kinds == [False, 0]                 # the doomed record, then ABORT


def test_transaction_timeout_aborts_and_fences_a_live_owner(log):
    p = log.producer(transactional_id="slow", transaction_timeout_ms=50)
    p.begin_transaction()
    p.send("t", b"late", partition=0)
    time.sleep(0.1)
    rc = committed_reader(log, "t")
    assert values(rc, 0.1) == []
    log.producer().send("t", b"plain", partition=0)
    assert values(rc) == [(0, b"plain")]       # not held back for good
    with pytest.raises(pylog.ProducerFencedError):
        p.commit_transaction()


def test_compressed_topic_in_transactions(log):
    """X-1 with zstd: the batch is compressed as a whole, the producer fields
    stay in the header; read_committed decodes it or passes over it."""
    log.create_topic("z", partitions=1, compression="zstd")
    p = log.producer(transactional_id="tx")
    with p.transaction():
        p.send_batch("z", [b"a" * 200, b"b" * 200])
        p.send("z", b"c")
    p.begin_transaction()
    p.send("z", b"gone")
    p.abort_transaction()
    rc = committed_reader(log, "z")
    assert [v for _, v in values(rc)] == [b"a" * 200, b"b" * 200, b"c"]
    got = kafka_batches(log, "z", 0)
    assert got[0][0].compression_type == 4 and got[0][0].is_transactional


def test_blocked_poll_passes_over_markers(log):
    """X-2 on the wake-up path: a read_uncommitted poll blocked on one
    partition wakes for the COMMIT marker and returns nothing for it."""
    c = log.consumer(auto_offset_reset="earliest")
    c.assign([T0])
    assert c.poll(timeout=0.05) == []
    p = log.producer(transactional_id="tx")
    with p.transaction():
        p.send("t", b"v", partition=0)
    assert [r.value for r in c.poll(timeout=0.5)] == [b"v"]
    assert c.poll(timeout=0.1) == []
    assert c.position(T0) == 2


CRASH_AFTER_COMMIT_POINT = r"""
import os, signal, sys, pylog
from pylog import transactions
log = pylog.open(sys.argv[1])
p = log.producer(transactional_id="tx")
p.begin_transaction()
p.send("t", b"kept", partition=0)
p.flush()
transactions.end(log, "tx", p.producer_id, p.epoch, True,          # the commit point
                 [("t", 0)], {}, {})
os.kill(os.getpid(), signal.SIGKILL)                              # before the markers
"""


def test_killed_after_the_commit_point(log, tmp_path, child_env):
    """X-6: the decision is the LMDB commit; the COMMIT marker a kill left
    out is written by the next instance."""
    proc = childproc.start(CRASH_AFTER_COMMIT_POINT, tmp_path / "log", env=child_env)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, childproc.stderr_tail(proc)
    assert values(committed_reader(log, "t")) == [(0, b"kept")]
    assert [b.is_control_batch for b, _ in kafka_batches(log, "t", 0)] == [False]
    log.producer(transactional_id="tx")
    got = kafka_batches(log, "t", 0)
    # the COMMIT, then the next instance's fence (X-9: an ABORT of the
    # next epoch in every partition the old one armed)
    assert [b.is_control_batch for b, _ in got] == [False, True, True]
    assert [got[1][1][0].type, got[2][1][0].type] == [batch.COMMIT, batch.ABORT]


def test_offsets_of_a_member_that_lost_its_partition_are_refused(log):
    """X-6 with Kafka's group check: a consumer that lost the partition to a
    rebalance cannot commit its offsets through a transaction."""
    log.producer().send_batch("in", [b"0", b"1"])
    c = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    assert len(c.poll(timeout=0.5)) == 2
    p = log.producer(transactional_id="tx")
    p.begin_transaction()
    p.send("t", b"out", partition=0)
    p.send_offsets_to_transaction(c)
    # the group moves on without c (another member now owns the partition)
    log.meta.update_group("g", lambda doc, commit: doc.update(
        generation=doc["generation"] + 1, members={}, assignment={}, owners={}))
    with pytest.raises(pylog.CommitFailedError):
        p.commit_transaction()
    p.abort_transaction()
    assert log.meta.committed("g", "in", 0) is None
    assert values(committed_reader(log, "t"), 0.1) == []


def test_producer_state_read_from_the_segment_tail(log, tmp_path):
    """X-3 at a process's first use reads only the active segment's last
    4 MiB (from an index entry): a batch beyond that is appended again,
    one within it is recognised."""
    from pylog import producerstate
    log.create_topic("big", partitions=1, segment_bytes=64 << 20)
    part = log.partition("big", 0)
    pid = log.producer(idempotent=True).producer_id
    old = [(1, None, b"old", ())]
    fields = batch.ProducerFields(pid, 0, 0, 0)
    first = part.writer.append_producer(old, fields)
    filler = log.producer()
    for _ in range(8):
        filler.send_batch("big", [b"f" * 1000] * 1000)      # 8 MB after it
    recent = [(2, None, b"recent", ())]
    recent_fields = batch.ProducerFields(pid, 0, 1, 0)
    recent_at = part.writer.append_producer(recent, recent_fields)
    log.close()
    lg = pylog.open(tmp_path / "log")
    part = lg.partition("big", 0)
    end = part.state().next_offset
    assert part.writer.append_producer(recent, recent_fields) == recent_at
    assert part.writer.append_producer(old, fields) == end != first
    assert producerstate.SCAN_BYTES == 4 << 20
    lg.close()


def test_log_close_aborts_open_transactions(log, tmp_path):
    p = log.producer(transactional_id="tx")
    p.begin_transaction()
    p.send("t", b"never", partition=0)
    log.close()
    with pylog.open(tmp_path / "log") as again:
        rc = committed_reader(again, "t")
        again.producer().send("t", b"after", partition=0)
        assert values(rc) == [(0, b"after")]
        with again.meta._txn("read") as txn:
            doc = json.loads(txn.get(b"txn\0tx", db=again.meta._info))
        assert doc["state"] == "ready"             # aborted by the close, not later


@pytest.mark.parametrize("start", ["latest", "seek_to_end"])
def test_read_committed_end_is_the_last_stable_offset(log, start):
    # a read_committed consumer starting at the end starts at the
    # last stable offset; at the end offset it would skip for good the
    # records of a transaction open then and committed after
    log.producer().send("t", b"before", partition=0)
    p = log.producer(transactional_id="tx")
    p.begin_transaction()
    p.send("t", b"in-txn", partition=0)
    c = log.consumer(isolation_level="read_committed", auto_offset_reset="latest")
    c.assign([T0])
    if start == "seek_to_end":
        c.seek_to_end(T0)
    assert c.position(T0) == 1
    assert values(c) == []
    p.commit_transaction()
    assert values(c, timeout=1) == [(0, b"in-txn")]
    c.close()


def _in_child(fn):
    """Run ``fn`` in a fork() child; its exit status: 0 when it returned."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = fn()
        finally:
            os._exit(code or 0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_idempotent_producer_used_across_fork_keeps_both_sides(log):
    # the child's batches must not take the parent's sequences: the
    # parent's next batch would be dropped as a retry of the child's
    p = log.producer(idempotent=True)
    p.send("t", b"parent-1", partition=0)
    assert _in_child(lambda: p.send("t", b"child-1", partition=0) and 0) == 0
    p.send("t", b"parent-2", partition=0, headers=[("h", b"1")])   # (the checked path)
    c = log.consumer("t", auto_offset_reset="earliest")
    got = sorted(r.value for r in c.poll(timeout=0.5))
    assert got == [b"child-1", b"parent-1", b"parent-2"]
    c.close()


def test_transactional_producer_refused_in_a_fork_child(log):
    p = log.producer(transactional_id="tx")
    p.begin_transaction()
    p.send("t", b"parent", partition=0)

    def child():
        for call in (lambda: p.send("t", b"child", partition=0), p.commit_transaction):
            try:
                call()
                return 2
            except pylog.ForkedLogError:
                pass
        return 0
    assert _in_child(child) == 0
    assert _in_child(p.close) == 0        # leaves the parent's transaction alone
    c = committed_reader(log, "t")
    assert values(c) == []
    p.commit_transaction()
    assert values(c, timeout=1) == [(0, b"parent")]
    c.close()


MARKERS_OUT_OF_MAPS = r"""
import errno, os, signal, sys, pylog
from pylog import handles
log = pylog.open(sys.argv[1], sync="never")
p = log.producer(transactional_id="tx")
p.begin_transaction()
p.send("t", b"one", partition=0)
p.send("t", b"one-b", partition=1)      # (two partitions: decided in LMDB, X-6)
p.flush()
assert log.handles.shrink(maps=True) > 0       # partition t-0 mapped no more
fd = os.open(os.path.join(sys.argv[1], "hog"), os.O_RDWR | os.O_CREAT)
os.ftruncate(fd, 4096)
hog = []
try:
    while True:
        hog.append(handles.map_file(fd, 4096, writable=False))
except OSError as exc:
    assert exc.errno == errno.ENOMEM, exc
os.close(fd)
import logging
warned = []
class Catch(logging.Handler):
    def emit(self, record):
        warned.append(record.getMessage())
logging.getLogger("pylog").addHandler(Catch())
p.commit_transaction()      # decided, then the COMMIT marker fails: logged, not raised
print("markers failed" if any("not written yet" in m for m in warned)
      else "markers written", flush=True)
del hog
if sys.argv[2] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[2] == "close":
    p.close()
    print("done", flush=True)
    sys.exit(0)
with p.transaction():
    p.send("t", b"two", partition=1)
log.close()
print("done", flush=True)
"""


@pytest.mark.parametrize("then", ["next_transaction", "close", "kill"])
def test_markers_an_append_failure_left_out_are_written(log, tmp_path, child_env, then):
    """X-6: a COMMIT marker whose append failed after the commit point (out
    of maps here) is written before the producer's next transaction
    (which used to clear it unwritten) or at its close, or by the next
    instance after a kill: every partition of a decided transaction ends with its marker."""
    proc = childproc.start(MARKERS_OUT_OF_MAPS, tmp_path / "log", then, env=child_env)
    assert childproc.readline(proc, timeout=120) == b"markers failed\n"
    proc.wait(timeout=60)
    if then == "kill":
        assert proc.returncode == -signal.SIGKILL, childproc.stderr_tail(proc)
        log.producer(transactional_id="tx")
    else:
        assert proc.returncode == 0, childproc.stderr_tail(proc)
    assert sorted(values(committed_reader(log, "t"), timeout=1))[0] == (0, b"one")
    got = [(b.is_control_batch, b.is_control_batch and recs[0].type)
           for b, recs in kafka_batches(log, "t", 0)]
    # (after a kill, the next instance's fence follows: an ABORT, X-9)
    assert got == [(False, False), (True, batch.COMMIT)] + \
        ([(True, batch.ABORT)] if then == "kill" else [])


def test_read_committed_ends_and_lag_are_the_last_stable_offset(log):
    """X-4: a read_committed consumer's end_offsets, highwater,
    get_watermark_offsets and lag() stop at the last stable offset, as
    Kafka's (a read_uncommitted one's at the end offset)."""
    plain = log.producer()
    plain.send("t", b"before", partition=0)
    p = log.producer(transactional_id="tx")
    p.begin_transaction()
    p.send("t", b"in-txn", partition=0)
    plain.send("t", b"after", partition=0)
    ends = {}
    for level in ("read_committed", "read_uncommitted"):
        c = log.consumer(isolation_level=level, auto_offset_reset="earliest")
        c.assign([T0])
        ends[level] = (c.end_offsets([T0])[T0], c.highwater(T0),
                       c.get_watermark_offsets(T0), c.lag()[T0])
        c.close()
    assert ends == {"read_committed": (1, 1, (0, 1), 1),
                    "read_uncommitted": (3, 3, (0, 3), 3)}
    p.commit_transaction()                # (the COMMIT marker is offset 3)
    c = log.consumer(isolation_level="read_committed", auto_offset_reset="earliest")
    c.assign([T0])
    assert (c.end_offsets([T0])[T0], c.highwater(T0), c.lag()[T0]) == (4, 4, 4)
    c.close()


def test_a_transaction_loop_whose_producer_another_thread_closes_gets_log_closed(
        tmp_path):
    """A thread running transactions on a producer that another thread
    closes (shutdown) ends with LogClosed: close() aborted the open
    transaction and released the producer's lock before marking it
    closed, so the loop's next send raised TransactionError ("call
    begin_transaction() first"), or its commit "no transaction open".
    Nothing of an unfinished transaction is visible to read_committed."""
    import threading
    ended = []
    for rnd in range(20):
        lg = pylog.open(tmp_path / str(rnd), sync="never")
        lg.create_topic("t", partitions=2)
        p = lg.producer(transactional_id="tx")
        done = []

        def work():
            try:
                for n in range(1_000_000):
                    with p.transaction():
                        for k in range(3):
                            p.send("t", b"%d-%d" % (n, k))
                    done.append(n)
            except Exception as exc:          # checked below
                ended.append(exc)
        t = threading.Thread(target=work)
        t.start()
        while len(done) < 5 + rnd:
            threading.Event().wait(0.001)
        (p if rnd % 2 else lg).close()
        t.join(10)
        lg.close()
        with pylog.open(tmp_path / str(rnd)) as again:
            c = again.consumer("t", auto_offset_reset="earliest",
                               isolation_level="read_committed")
            seen = set()
            while batch := c.poll(timeout=0.05):
                seen.update(r.value for r in batch)
            c.close()
        assert {v.rsplit(b"-", 1)[0] for v in seen} >= {b"%d" % n for n in done}
        assert len(seen) % 3 == 0
    assert len(ended) == 20
    assert all(type(e) is pylog.LogClosed for e in ended), \
        sorted({repr(e)[:120] for e in ended if type(e) is not pylog.LogClosed})
