"""The idempotent and transactional producer and read_committed consumers
(issue 17; FORMAT.rst X-1 to X-9): every API path and misuse, the bytes
on disk (kafka-python parses them; a golden control record), fencing,
duplicates (failures, kills and forks: test_txn_failures.py)."""

import json
import os
import struct

import pytest
from txnlog import T0, committed_reader, kafka_batches, open_txn_log, values

import pylog
from pylog import TopicPartition as TP
from pylog import batch


@pytest.fixture
def log(tmp_path):
    lg = open_txn_log(tmp_path)
    yield lg
    lg.close()


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
