"""The idempotent and transactional producer and read_committed consumers
(issue 17; FORMAT.rst X-1 to X-9): every API path and misuse, the bytes
on disk (kafka-python parses them; a golden control record), fencing,
duplicates, and transactions of processes killed with SIGKILL."""

import json
import os
import signal
import struct
import time

import childproc
import pytest
from kafka.record.memory_records import MemoryRecords

import pylog
from pylog import TopicPartition as TP
from pylog import batch
from pylog.segment import parse_segment_name

T0, T1 = TP("t", 0), TP("t", 1)


@pytest.fixture
def log(tmp_path):
    lg = pylog.open(tmp_path / "log")
    lg.create_topic("t", partitions=2)
    lg.create_topic("in", partitions=1)
    yield lg
    lg.close()


def kafka_batches(log, topic, p):
    """Every batch of a partition as kafka-python parses its segments."""
    part = log.partition(topic, p)
    st = part.state()
    out = []
    for name in sorted(os.listdir(part.dir)):
        base = parse_segment_name(name)
        if base is None:
            continue
        with open(os.path.join(part.dir, name), "rb") as f:
            data = f.read()
        if base == st.active_base:
            data = data[:st.active_position]
        mr = MemoryRecords(data)
        assert mr.valid_bytes() == len(data)
        while (b := mr.next_batch()) is not None:
            assert b.validate_crc()
            out.append((b, list(b)))
    return out


def values(consumer, timeout=0.3):
    return [(r.partition, r.value) for r in consumer.poll(timeout=timeout)]


def committed_reader(log, *topics, **kw):
    return log.consumer(*topics, auto_offset_reset="earliest",
                        isolation_level="read_committed", **kw)


# -- the bytes --------------------------------------------------------------------

def test_control_record_golden_bytes():
    """X-2: Kafka's EndTransactionMarker, byte for byte."""
    assert batch.control_record(batch.COMMIT) == (b"\x00\x00\x00\x01",
                                                  b"\x00\x00\x00\x00\x00\x00")
    assert batch.control_record(batch.ABORT, 7) == (b"\x00\x00\x00\x00",
                                                    b"\x00\x00\x00\x00\x00\x07")
    assert batch.ABORT == 0 and batch.COMMIT == 1
    assert batch.parse_control_record(b"\x00\x00\x00\x01") == batch.COMMIT
    assert batch.parse_control_record(b"\x00\x01\x00\x01") is None
    with pytest.raises(ValueError):
        batch.control_record(2)
    # the whole control batch: header fields at their B-* offsets
    key, value = batch.control_record(batch.COMMIT)
    raw = batch.encode([(1000, key, value, ())], base_offset=5,
                       producer=batch.ProducerFields(9, 3, -1, 0x30))
    base, length, _ple, magic, _crc, attrs = struct.unpack_from(">qiibIh", raw)
    assert (base, magic, attrs) == (5, 2, 0x30)
    assert struct.unpack_from(">qhi", raw, 43) == (9, 3, -1)
    # one record: length, attributes 0, deltas 0, key 4 bytes, value 6 bytes, 0 headers
    assert raw[61:] == bytes([2 * 16, 0, 0, 0, 8]) + key + bytes([12]) + value + b"\x00"


def test_kafka_python_parses_transactional_and_control_batches(log):
    """X-1, X-2: kafka-python reads every segment of a log with
    transactional batches, both markers and idempotent batches."""
    p = log.producer(transactional_id="tx")
    with p.transaction():
        p.send("t", b"a", partition=0)
        p.send("t", b"a2", partition=0)      # (the per-record path, X-1 all the same)
        p.send_batch("t", [b"b", b"c"], partition=0)
    p.begin_transaction()
    p.send("t", b"d", partition=0)
    p.abort_transaction()
    idem = log.producer(idempotent=True)
    idem.send("t", b"e", partition=0)
    got = kafka_batches(log, "t", 0)
    kinds = [(b.is_transactional, b.is_control_batch) for b, _ in got]
    assert kinds == [(True, False), (True, False), (True, False), (True, True),
                     (True, False), (True, True), (False, False)]
    b0, r0 = got[0]
    assert (b0.producer_id, b0.producer_epoch, b0.base_sequence) == (p.producer_id, 0, 0)
    assert [(b.producer_id, b.producer_epoch, b.base_sequence) for b, _ in got[1:3]] == \
        [(p.producer_id, 0, 1), (p.producer_id, 0, 2)]   # X-1: +records of the one before
    assert [r.value for r in got[2][1]] == [b"b", b"c"]
    commit, abort = got[3][1][0], got[5][1][0]
    assert (commit.type, commit.version, commit.commit) == (1, 0, True)
    assert (abort.type, abort.abort) == (0, True)
    assert got[3][0].producer_epoch == 0 and got[5][0].producer_epoch == 1
    assert got[4][0].producer_epoch == 0
    e = got[6][0]
    assert e.producer_id == idem.producer_id != p.producer_id and e.base_sequence == 0


# -- duplicates --------------------------------------------------------------------

def test_retried_batch_is_stored_once_and_returns_its_offsets(log, tmp_path):
    """X-3, surviving a restart: the state is read back from the segment."""
    p = log.producer(idempotent=True)
    part = log.partition("t", 0)
    log.producer().send("t", b"before", partition=0)
    recs = [(1, b"k", b"v1", ()), (2, None, b"v2", ())]
    fields = batch.ProducerFields(p.producer_id, 0, 0, 0)
    first = part.writer.append_producer(recs, fields)
    assert part.writer.append_producer(recs, fields) == first == 1
    other = log.producer()
    other.send("t", b"between", partition=0)
    # a batch among the last 5 is recognised; a new sequence appends
    for i in range(4):
        part.writer.append_producer([(3, None, b"x", ())],
                                    batch.ProducerFields(p.producer_id, 0, 2 + i, 0))
    assert part.writer.append_producer(recs, fields) == first
    log.close()
    log2 = pylog.open(tmp_path / "log")
    part2 = log2.partition("t", 0)
    end = part2.state().next_offset
    assert part2.writer.append_producer(recs, fields) == first
    assert part2.state().next_offset == end
    # the 6th batch back is forgotten: appended again
    part2.writer.append_producer([(3, None, b"y", ())],
                                 batch.ProducerFields(p.producer_id, 0, 6, 0))
    assert part2.writer.append_producer(recs, fields) == end + 1
    c = log2.consumer("t", auto_offset_reset="earliest")
    vals = [r.value for r in c.poll(timeout=0.5) if r.partition == 0]
    assert vals.count(b"v1") == 2 and vals[:4] == [b"before", b"v1", b"v2", b"between"]
    log2.close()


def test_idempotent_producer_sends_and_numbers_batches(log):
    p = log.producer(idempotent=True)
    assert p.send("t", b"a", partition=1).offset == 0
    assert [m.offset for m in p.send_batch("t", [b"b", b"c"], partition=1)] == [1, 2]
    assert p.send("t", b"d", partition=1).offset == 3     # (the one-call append)
    seqs = [(b.producer_id, b.base_sequence) for b, _ in kafka_batches(log, "t", 1)]
    assert seqs == [(p.producer_id, 0), (p.producer_id, 1), (p.producer_id, 3)]
    with pytest.raises(pylog.TransactionError):
        p.begin_transaction()                  # not transactional
    q = log.producer(idempotent=True)
    assert q.producer_id == p.producer_id + 1  # never reused


def test_column_append_checks_retries_and_fencing(log):
    """X-3, X-5 on send_batch's one-call column path: a batch of the same
    producer id, epoch and sequences is not stored again (its base offset
    comes back), and an epoch below one the partition saw is refused."""
    from pylog import _native
    part = log.partition("t", 0)
    log.producer().send("t", b"before", partition=0)
    cols = _native.columns(None, [b"c1", b"c2", b"c3"])
    fields = batch.ProducerFields(7, 3, 0, 0)
    w = part.writer
    assert w.append_columns_producer(1, cols, fields, check=True) == 1
    end = part.state().next_offset
    assert w.append_columns_producer(1, cols, fields, check=True) == 1
    assert part.state().next_offset == end == 4
    w.append_producer([(1, None, b"newer", ())], batch.ProducerFields(7, 4, 0, 0))
    with pytest.raises(pylog.ProducerFencedError):
        w.append_columns_producer(1, cols, batch.ProducerFields(7, 3, 3, 0), check=True)
    assert part.state().next_offset == 5
    got = kafka_batches(log, "t", 0)
    assert [(b.producer_id, b.producer_epoch, b.base_sequence) for b, _ in got] == \
        [(-1, -1, -1), (7, 3, 0), (7, 4, 0)]


def test_transactional_send_batch_across_segment_rolls(log):
    """Batches of the column path that roll the segment: sequences stay
    contiguous, committed transactions whole, the aborted one hidden."""
    log.create_topic("small", partitions=1, segment_bytes=65536)
    p = log.producer(transactional_id="tx")
    sent = []
    for i in range(6):
        with p.transaction():
            vals = [b"%d-%d" % (i, j) + b"." * 3000 for j in range(8)]
            p.send_batch("small", vals, partition=0)
            sent += vals
    p.begin_transaction()
    p.send_batch("small", [b"gone" * 1000] * 8, partition=0)
    p.abort_transaction()
    assert [v for _, v in values(committed_reader(log, "small"))] == sent
    assert len(os.listdir(log.partition("small", 0).dir)) > 2
    seqs = [b.base_sequence for b, _ in kafka_batches(log, "small", 0)
            if not b.is_control_batch]
    assert seqs == [8 * i for i in range(7)]


# -- transactions -------------------------------------------------------------------------

def test_commit_is_visible_abort_never(log):
    p = log.producer(transactional_id="tx")
    rc = committed_reader(log, "t")
    ru = log.consumer("t", auto_offset_reset="earliest")
    p.begin_transaction()
    p.send("t", b"c0", partition=0)
    p.send("t", b"c1", partition=1)
    assert values(rc, 0.1) == []               # open, held back
    assert sorted(values(ru)) == [(0, b"c0"), (1, b"c1")]   # read_uncommitted: at once
    p.commit_transaction()
    assert sorted(values(rc)) == [(0, b"c0"), (1, b"c1")]
    p.begin_transaction()
    p.send("t", b"a0", partition=0)
    p.send("t", b"a1", partition=1)
    p.abort_transaction()
    with p.transaction():
        p.send("t", b"c2", partition=0)
    assert values(rc) == [(0, b"c2")]
    assert sorted(values(ru)) == [(0, b"a0"), (0, b"c2"), (1, b"a1")]
    # markers were never returned; their offsets were passed over
    assert rc.position(T0) == log.partition("t", 0).state().next_offset


def test_open_transaction_holds_back_later_records(log):
    """X-4: read_committed stops at the last stable offset, even before
    records sent outside the transaction."""
    p = log.producer(transactional_id="tx")
    plain = log.producer()
    plain.send("t", b"p0", partition=0)
    p.begin_transaction()
    p.send("t", b"t0", partition=0)
    plain.send("t", b"p1", partition=0)
    rc = committed_reader(log, "t")
    assert values(rc, 0.1) == [(0, b"p0")]
    p.commit_transaction()
    assert values(rc) == [(0, b"t0"), (0, b"p1")]


def test_offsets_for_times_read_committed_stops_at_the_last_stable_offset(log):
    """As Kafka's ListOffsets for a read_committed consumer: a timestamp
    whose first record is at or past the last stable offset (an open
    transaction's, or a record after it) has no offset; read_uncommitted
    and, once committed, read_committed find them."""
    p = log.producer(transactional_id="tx")
    plain = log.producer()
    plain.send("t", b"p0", partition=0, timestamp_ms=1000)
    p.begin_transaction()
    p.send("t", b"t0", partition=0, timestamp_ms=2000)
    plain.send("t", b"p1", partition=0, timestamp_ms=3000)
    rc = log.consumer("t", isolation_level="read_committed")
    ru = log.consumer("t")
    tp = TP("t", 0)
    asks = {ts: {tp: ts} for ts in (500, 2000, 2500, 4000)}
    assert [rc.offsets_for_times(a)[tp] for a in asks.values()] == [0, None, None, None]
    assert [ru.offsets_for_times(a)[tp] for a in asks.values()] == [0, 1, 2, None]
    p.commit_transaction()
    assert [rc.offsets_for_times(a)[tp] for a in asks.values()] == [0, 1, 2, None]


def test_transaction_context_manager_aborts_on_exception(log):
    p = log.producer(transactional_id="tx")
    with pytest.raises(KeyError):
        with p.transaction():
            p.send("t", b"no", partition=0)
            raise KeyError("boom")
    with p.transaction() as same:
        assert same is p
        p.send("t", b"yes", partition=0)
    assert values(committed_reader(log, "t")) == [(0, b"yes")]


def test_offsets_commit_with_the_transaction(log):
    """X-6: offsets sent with the transaction are stored by its commit point
    — Consumer.committed() and the group's next consumer see them — and
    never by an abort."""
    src = log.producer()
    for i in range(6):
        src.send("in", b"%d" % i)
    c = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    got = c.poll(timeout=0.5, max_records=3)
    assert [r.value for r in got] == [b"0", b"1", b"2"]
    p = log.producer(transactional_id="ctp")
    p.begin_transaction()
    p.send("t", b"out", partition=0)
    p.send_offsets_to_transaction(c)
    assert c.committed(TP("in", 0)) is None
    p.abort_transaction()
    assert c.committed(TP("in", 0)) is None
    p.begin_transaction()
    p.send_offsets_to_transaction({TP("in", 0): 3}, "g")
    p.commit_transaction()
    assert c.committed(TP("in", 0)) == 3
    c.close()
    nxt = log.consumer("in", group_id="g", auto_offset_reset="earliest")
    assert [r.value for r in nxt.poll(timeout=0.5)] == [b"3", b"4", b"5"]
    nxt.close()


def test_offsets_only_transaction_and_offset_and_metadata(log):
    p = log.producer(transactional_id="tx")
    with p.transaction():
        p.send_offsets_to_transaction({TP("in", 0): pylog.OffsetAndMetadata(0, "")}, "g2")
    assert log.consumer(group_id="g2").committed(TP("in", 0)) == 0


@pytest.mark.parametrize("call, error", [
    (lambda p: p.send("t", b"x"), pylog.TransactionError),
    (lambda p: p.send_batch("t", [b"x"]), pylog.TransactionError),
    (lambda p: p.commit_transaction(), pylog.TransactionError),
    (lambda p: p.abort_transaction(), pylog.TransactionError),
    (lambda p: p.send_offsets_to_transaction({T0: 1}, "g"), pylog.TransactionError),
    (lambda p: (p.begin_transaction(), p.begin_transaction()), pylog.TransactionError),
    (lambda p: (p.begin_transaction(), p.send_offsets_to_transaction({T0: 1})),
     pylog.InvalidArgument),
    (lambda p: (p.begin_transaction(), p.send_offsets_to_transaction({T0: -1}, "g")),
     pylog.InvalidArgument),
    (lambda p: (p.begin_transaction(), p.send_offsets_to_transaction({T0: 2**63}, "g")),
     pylog.InvalidArgument),
    (lambda p: (p.begin_transaction(), p.send_offsets_to_transaction({TP("no", 0): 1}, "g")),
     pylog.TopicNotFound),
    (lambda p: (p.begin_transaction(), p.send_offsets_to_transaction(42, "g")),
     pylog.InvalidArgument),
    (lambda p: (p.begin_transaction(), p.send("nope", b"x")), pylog.TopicNotFound),
])
def test_misuse_raises_and_writes_nothing(log, call, error):
    p = log.producer(transactional_id="tx")
    with pytest.raises(error):
        call(p)
    assert log.partition("t", 0).state().next_offset == 0
    assert log.partition("t", 1).state().next_offset == 0


def test_offset_past_int64_refused_where_given(log):
    # an offset LMDB cannot store is refused where it is given, not as a
    # struct.error at the commit point (the transaction then commits)
    c = log.consumer("t", group_id="g")
    with pytest.raises(pylog.InvalidArgument):
        c.commit({T0: 2**63})
    p = log.producer(transactional_id="tx")
    p.begin_transaction()
    with pytest.raises(pylog.InvalidArgument):
        p.send_offsets_to_transaction({T0: 2**70}, "g")
    p.send("t", b"x", partition=0)
    p.commit_transaction()
    assert c.committed(T0) is None
    c.close()


@pytest.mark.parametrize("kw", [
    dict(transactional_id=""), dict(transactional_id=3), dict(transactional_id="a\0b"),
    dict(transactional_id="\U0001D11E" * 249), dict(transactional_id="\ud800"),
    dict(idempotent="yes"), dict(transactional_id="x", transaction_timeout_ms=0),
    dict(transactional_id="x", linger_ms=5), dict(idempotent=True, batch_bytes=100),
])
def test_bad_producer_arguments(log, kw):
    with pytest.raises(pylog.InvalidArgument):
        log.producer(**kw)


def test_bad_isolation_level(log):
    with pytest.raises(pylog.InvalidArgument):
        log.consumer("t", isolation_level="committed")


def test_read_only_log_refuses_a_transactional_producer(log, tmp_path):
    ro = pylog.open(tmp_path / "log", readonly=True)
    try:
        with pytest.raises(pylog.ReadOnlyLog):
            ro.producer(transactional_id="tx")
    finally:
        ro.close()


def test_close_aborts_the_open_transaction(log):
    p = log.producer(transactional_id="tx")
    p.begin_transaction()
    p.send("t", b"x", partition=0)
    p.close()
    rc = committed_reader(log, "t")
    assert values(rc, 0.1) == []
    assert rc.position(T0) == 2                # past the record and the ABORT marker


# -- fencing ---------------------------------------------------------------------------

def test_newer_instance_fences_and_aborts_the_older(log):
    old = log.producer(transactional_id="tx")
    old.begin_transaction()
    old.send("t", b"zombie", partition=0)
    new = log.producer(transactional_id="tx")
    assert new.epoch == old.epoch + 1     # one bump fences it and aborts its transaction
    with pytest.raises(pylog.ProducerFencedError):
        old.commit_transaction()
    for call in (old.begin_transaction, lambda: old.send("t", b"x")):
        with pytest.raises(pylog.ProducerFencedError):
            call()
    with new.transaction():
        new.send("t", b"new", partition=0)
    assert values(committed_reader(log, "t")) == [(0, b"new")]
    assert isinstance(pylog.ProducerFencedError("x"), pylog.PylogError)


def test_fenced_append_is_refused_by_the_partition(log):
    """X-5 under the append lock: an append with an epoch below one the
    partition saw (an ABORT marker of the fencer) is refused, and a
    zombie's append that slipped in is hidden by X-8."""
    old = log.producer(transactional_id="tx")
    old.begin_transaction()
    old.send("t", b"z1", partition=0)
    log.producer(transactional_id="tx")        # fences, aborts, writes ABORT (epoch+1)
    part = log.partition("t", 0)
    with pytest.raises(pylog.ProducerFencedError):
        part.writer.append_producer([(1, None, b"z2", ())],
                                    batch.ProducerFields(old.producer_id, old.epoch, 1, 0x10))
    assert values(committed_reader(log, "t"), 0.1) == []


def test_epoch_exhaustion_takes_a_new_producer_id(log):
    from pylog import transactions
    p = log.producer(transactional_id="tx")
    with log.meta._txn("test", write=True) as txn:
        doc = json.loads(txn.get(b"txn\0tx", db=log.meta._info))
        doc["epoch"] = transactions.EPOCH_MAX - 1
        txn.put(b"txn\0tx", json.dumps(doc).encode(), db=log.meta._info)
    q = log.producer(transactional_id="tx")
    assert q.producer_id != p.producer_id and q.epoch == 0
    with q.transaction():
        q.send("t", b"ok", partition=0)
    assert values(committed_reader(log, "t")) == [(0, b"ok")]


def test_epoch_exhausted_by_an_abort_takes_a_new_producer_id(log):
    from pylog import transactions
    p = log.producer(transactional_id="tx")
    with log.meta._txn("test", write=True) as txn:
        doc = json.loads(txn.get(b"txn\0tx", db=log.meta._info))
        doc["epoch"] = transactions.EPOCH_MAX - 1
        txn.put(b"txn\0tx", json.dumps(doc).encode(), db=log.meta._info)
    p.epoch = transactions.EPOCH_MAX - 1        # (as if it had aborted that often)
    old_id = p.producer_id
    p.begin_transaction()
    p.send("t", b"gone", partition=0)
    p.abort_transaction()
    assert p.producer_id != old_id and p.epoch == 0
    with p.transaction():
        p.send("t", b"kept", partition=0)
    assert values(committed_reader(log, "t")) == [(0, b"kept")]
    abort = [b for b, _ in kafka_batches(log, "t", 0) if b.is_control_batch][0]
    assert (abort.producer_id, abort.producer_epoch) == (old_id, transactions.EPOCH_MAX)


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
