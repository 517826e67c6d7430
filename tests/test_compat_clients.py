"""Coming from kafka-python / confluent-kafka (issue 20): the call shapes
their users type, tried against pylog — each works, or raises the error
README "Coming from kafka-python" documents — and the behaviour behind
the names: rebalance listeners (revoke before release, lost on expiry),
max_poll_interval_ms, consumer_timeout_ms, seek past the end, a
misspelled topic, flush(timeout=)."""

import logging
import threading
import time
from typing import NamedTuple

import pytest

import pylog
from pylog import OffsetAndMetadata
from pylog import TopicPartition as TP

T0, T1 = TP("t", 0), TP("t", 1)


class ConfluentTP(NamedTuple):
    """The shape of confluent-kafka's TopicPartition: it carries an offset."""
    topic: str
    partition: int
    offset: int


@pytest.fixture
def log(tmp_path):
    lg = pylog.open(tmp_path, sync="never")
    lg.create_topic("t", partitions=2)
    p = lg.producer()
    for i in range(20):
        p.send("t", b"v%d" % i, partition=i % 2)
    yield lg
    lg.close()


def _group(log):
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    c.poll(timeout=0.5)
    return c


def _manual(log):
    c = log.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
    c.assign([T0, T1])
    return c


# (client, call as typed, what to call it on, the call, expected: a value
# check or the error class)
CALLS = [
    # -- producer ---------------------------------------------------------------------
    ("kafka-python", "producer.flush(timeout=5)", "producer",
     lambda p: p.flush(timeout=5), None),
    ("kafka-python", "producer.flush(5)", "producer", lambda p: p.flush(5), None),
    ("kafka-python", "producer.flush(timeout=-1)", "producer",
     lambda p: p.flush(timeout=-1), pylog.InvalidArgument),
    ("kafka-python", "producer.close(timeout=5)", "producer",
     lambda p: p.close(timeout=5), None),
    ("kafka-python", "producer.partitions_for('t')", "producer",
     lambda p: p.partitions_for("t") == {0, 1}, True),
    ("kafka-python", "producer.partitions_for('nope')", "producer",
     lambda p: p.partitions_for("nope"), pylog.TopicNotFound),
    ("kafka-python", "producer.send(topic, value=, key=, headers=)", "producer",
     lambda p: p.send("t", value=b"x", key=b"k", headers=[("h", b"v")]).offset >= 0, True),
    ("kafka-python", "log.producer(bogus=1)", "log",
     lambda lg: lg.producer(bogus=1), TypeError),
    # -- consumer: polling ---------------------------------------------------------------
    ("kafka-python", "consumer.poll(timeout_ms=100)", "group",
     lambda c: isinstance(c.poll(timeout_ms=100), list), True),
    ("kafka-python", "consumer.poll(timeout_ms=100, max_records=1)", "manual",
     lambda c: len(c.poll(timeout_ms=100, max_records=1)) == 1, True),
    ("pylog", "consumer.poll(timeout=0.1, timeout_ms=100)", "manual",
     lambda c: c.poll(timeout=0.1, timeout_ms=100), pylog.InvalidArgument),
    ("kafka-python", "log.consumer(bogus=1)", "log",
     lambda lg: lg.consumer("t", bogus=1), TypeError),
    ("kafka-python", "consumer_timeout_ms=100", "log",
     lambda lg: list(lg.consumer("t", auto_offset_reset="earliest",
                                 consumer_timeout_ms=100)).__len__() == 20, True),
    ("kafka-python", "max_poll_interval_ms=60000", "log",
     lambda lg: lg.consumer("t", group_id="g2", max_poll_interval_ms=60000).close(), None),
    ("kafka-python", "max_poll_interval_ms=0", "log",
     lambda lg: lg.consumer("t", group_id="g2", max_poll_interval_ms=0), pylog.InvalidArgument),
    # -- consumer: commits ---------------------------------------------------------------
    ("kafka-python", "commit({tp: OffsetAndMetadata(3, '')})", "group",
     lambda c: (c.commit({T0: OffsetAndMetadata(3, "")}), c.committed(T0))[1] == 3, True),
    ("kafka-python", "commit({tp: OffsetAndMetadata(3, None, -1)})", "group",
     lambda c: (c.commit({T0: OffsetAndMetadata(3, None, -1)}), c.committed(T0))[1] == 3,
     True),
    ("kafka-python", "commit({tp: OffsetAndMetadata(3, 'note')})", "group",
     lambda c: c.commit({T0: OffsetAndMetadata(3, "note")}), pylog.InvalidArgument),
    ("aiokafka", "commit({tp: (offset, metadata)})", "group",
     lambda c: (c.commit({T0: (3, "")}), c.committed(T0))[1] == 3, True),
    ("aiokafka", "commit({tp: (offset, 'note')})", "group",
     lambda c: c.commit({T0: (3, "note")}), pylog.InvalidArgument),
    ("confluent-kafka", "commit(offsets=[TopicPartition(t, 0, 4)])", "group",
     lambda c: (c.commit(offsets=[ConfluentTP("t", 0, 4)]), c.committed(T0))[1] == 4, True),
    ("confluent-kafka", "commit(offsets=[TopicPartition(t, 0)]) (no offset)", "group",
     lambda c: c.commit(offsets=[T0]), pylog.InvalidArgument),
    ("confluent-kafka", "commit(message=record)", "manual-group",
     lambda c: (c.commit(message=c.poll(timeout=0.5, max_records=1)[0]),
                c.committed(T0) or c.committed(T1))[1] == 1, True),
    ("confluent-kafka", "commit(asynchronous=False)", "group",
     lambda c: c.commit(asynchronous=False), None),
    ("kafka-python", "committed(tp)", "group",
     lambda c: (c.commit({T0: 5}), c.committed(T0))[1] == 5, True),
    ("confluent-kafka", "committed([tp])", "group",
     lambda c: (c.commit({T0: 5}), c.committed([T0, T1]))[1] == {T0: 5, T1: None}, True),
    ("pylog", "commit() without a group", "manual",
     lambda c: c.commit(), pylog.InvalidArgument),
    # -- consumer: positions -------------------------------------------------------------
    ("kafka-python", "seek_to_beginning(tp0, tp1)", "manual",
     lambda c: (c.seek_to_beginning(T0, T1), c.position(T1))[1] == 0, True),
    ("kafka-python", "seek_to_beginning([tp])", "manual",
     lambda c: (c.seek_to_beginning([T0]), c.position(T0))[1] == 0, True),
    ("kafka-python", "seek_to_end([tp])", "manual",
     lambda c: (c.seek_to_end([T0]), c.position(T0))[1] == 10, True),
    ("kafka-python", "seek(tp, past the end)", "manual",
     lambda c: (c.seek(T0, 1000), c.position(T0))[1] == 1000, True),
    ("kafka-python", "seek(tp, -1)", "manual",
     lambda c: c.seek(T0, -1), pylog.InvalidArgument),
    ("kafka-python", "highwater(tp)", "manual", lambda c: c.highwater(T0) == 10, True),
    ("confluent-kafka", "get_watermark_offsets(tp)", "manual",
     lambda c: c.get_watermark_offsets(T0) == (0, 10), True),
    ("confluent-kafka", "get_watermark_offsets(tp, timeout=1, cached=False)", "manual",
     lambda c: c.get_watermark_offsets(T0, timeout=1, cached=False) == (0, 10), True),
    ("kafka-python", "beginning_offsets([tp]) / end_offsets([tp])", "manual",
     lambda c: (c.beginning_offsets([T0]), c.end_offsets([T0])) == ({T0: 0}, {T0: 10}), True),
    ("kafka-python", "offsets_for_times({tp: 0})", "manual",
     lambda c: c.offsets_for_times({T0: 0}) == {T0: 0}, True),
    ("kafka-python", "partitions_for_topic('t')", "manual",
     lambda c: c.partitions_for_topic("t") == {0, 1}, True),
    ("kafka-python", "partitions_for_topic('nope')", "manual",
     lambda c: c.partitions_for_topic("nope") is None, True),
    ("kafka-python", "topics()", "manual", lambda c: c.topics() == {"t"}, True),
    ("kafka-python", "assignment()", "group", lambda c: c.assignment() == {T0, T1}, True),
    ("kafka-python", "pause(tp) / paused() / resume(tp)", "manual",
     lambda c: (c.pause(T0), c.paused(), c.resume(T0), c.paused())[1::2] == ({T0}, set()),
     True),
    ("kafka-python", "pause([tp0, tp1])", "manual",
     lambda c: (c.pause([T0, T1]), c.paused())[1] == {T0, T1}, True),
    ("kafka-python", "pause(unassigned tp)", "manual",
     lambda c: c.pause(TP("t", 7)), pylog.InvalidArgument),
    ("kafka-python", "position(unassigned tp)", "group",
     lambda c: c.seek(TP("other", 0), 0), pylog.InvalidArgument),
    # -- consumer: subscriptions ---------------------------------------------------------
    ("kafka-python", "subscribe(['t'], listener=ConsumerRebalanceListener())", "log",
     lambda lg: lg.consumer(group_id="g3").subscribe(
         ["t"], listener=pylog.ConsumerRebalanceListener()), None),
    ("kafka-python", "subscribe(topics=['t'], pattern=...)", "log",
     lambda lg: lg.consumer().subscribe(topics=["t"], pattern="t.*"), None),
    ("kafka-python", "subscribe(['t'], listener=object())", "log",
     lambda lg: lg.consumer().subscribe(["t"], listener=object()), pylog.InvalidArgument),
    ("confluent-kafka", "subscribe(['t'], on_assign=f, on_revoke=f, on_lost=f)", "log",
     lambda lg: lg.consumer(group_id="g3").subscribe(
         ["t"], on_assign=print, on_revoke=print, on_lost=print), None),
    ("confluent-kafka", "subscribe(['t'], on_assign='x')", "log",
     lambda lg: lg.consumer().subscribe(["t"], on_assign="x"), pylog.InvalidArgument),
    ("kafka-python", "subscription() / unsubscribe()", "group",
     lambda c: (c.subscription(), c.unsubscribe(), c.subscription())[::2] == ({"t"}, set()),
     True),
    ("kafka-python", "close(autocommit=False)", "group", lambda c: c.close(autocommit=False),
     None),
    ("kafka-python", "close(timeout=5)", "group", lambda c: c.close(timeout=5), None),
]


@pytest.mark.parametrize("client,shape,target,call,expected", CALLS,
                         ids=[f"{c[0]}: {c[1]}" for c in CALLS])
def test_call_shape(log, client, shape, target, call, expected):
    if target == "producer":
        obj = log.producer()
    elif target == "group":
        obj = _group(log)
    elif target == "manual":
        obj = _manual(log)
    elif target == "manual-group":
        obj = log.consumer(group_id="gm", auto_offset_reset="earliest",
                           enable_auto_commit=False)
        obj.assign([T0, T1])
    else:
        obj = log
    if isinstance(expected, type) and issubclass(expected, BaseException):
        with pytest.raises(expected) as info:
            call(obj)
        if expected is TypeError:
            assert "bogus" in str(info.value)      # the message names the argument
    else:
        assert call(obj) == expected


# -- rebalance listeners --------
class Recorder(pylog.ConsumerRebalanceListener):
    """Records every call; commits the position of revoked partitions."""

    def __init__(self, name):
        self.name = name
        self.consumer = None
        self.calls = []
        self.commit_errors = []

    def on_partitions_revoked(self, revoked):
        self.calls.append(("revoked", self.name, set(revoked)))
        try:
            self.consumer.commit({tp: self.consumer.position(tp) for tp in revoked})
        except pylog.CommitFailedError as exc:
            self.commit_errors.append(exc)

    def on_partitions_assigned(self, assigned):
        self.calls.append(("assigned", self.name, set(assigned)))

    def on_partitions_lost(self, lost):
        self.calls.append(("lost", self.name, set(lost)))
        try:
            self.consumer.commit({tp: 0 for tp in lost})
        except pylog.CommitFailedError as exc:
            self.commit_errors.append(exc)


def _member(log, name, **kw):
    rec = Recorder(name)
    c = log.consumer(group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=False, **kw)
    rec.consumer = c
    c.subscribe(["t"], listener=rec)
    return c, rec


def _until(cond, *consumers, timeout=10.0):
    deadline = time.monotonic() + timeout
    got = []
    while not cond():
        assert time.monotonic() < deadline, "the group did not settle"
        for c in consumers:
            got.extend(c.poll(timeout=0.05))
    return got


def test_revoke_runs_before_release_and_its_commit_survives(log):
    a, ra = _member(log, "a")
    first = _until(lambda: len(a.assignment()) == 2, a)
    first += _until(lambda: True, a)
    while batch := a.poll(timeout=0.1):
        first.extend(batch)
    assert len(first) == 20 and a.committed(T0) is None   # read, not committed
    assert ("assigned", "a", {T0, T1}) in ra.calls
    b, rb = _member(log, "b")
    got_b = _until(lambda: len(b.assignment()) == 1 and len(a.assignment()) == 1, a, b)
    moved = b.assignment()
    # a was told before it let go, and its commit in the callback succeeded
    assert [c for c in ra.calls if c[0] == "revoked"] == [("revoked", "a", moved)]
    assert ra.commit_errors == []
    (tp,) = moved
    assert b.committed(tp) == 10
    assert ("assigned", "b", moved) in rb.calls
    # b resumes where a's listener committed: nothing read twice
    got_b += _until(lambda: True, b)
    assert got_b == [] and b.position(tp) == 10
    a.close()
    b.close()


def test_confluent_callables_get_the_consumer_and_a_list(log):
    seen = []
    c = log.consumer(group_id="g", auto_offset_reset="earliest")
    c.subscribe(["t"], on_assign=lambda cons, parts: seen.append(("assign", cons, parts)),
                on_revoke=lambda cons, parts: seen.append(("revoke", cons, parts)))
    c.poll(timeout=0.5)
    assert seen == [("assign", c, [T0, T1])]
    c.close()
    assert seen[-1] == ("revoke", c, [T0, T1])      # close() revokes first


def test_lost_when_the_membership_expired(log):
    a, ra = _member(log, "a", session_timeout_ms=200, max_poll_interval_ms=250)
    _until(lambda: len(a.assignment()) == 2, a)
    b, rb = _member(log, "b", session_timeout_ms=200)
    b.poll(timeout=0.05)
    # a stops polling, so its background heartbeats stop after 250 ms:
    # b expires it
    time.sleep(0.8)
    _until(lambda: len(b.assignment()) == 2, b)
    a.poll(timeout=0.05)                   # a learns it was removed
    lost = [c for c in ra.calls if c[0] == "lost"]
    assert lost == [("lost", "a", {T0, T1})]
    assert not [c for c in ra.calls if c[0] == "revoked"]
    assert len(ra.commit_errors) == 1      # a lost partition cannot be committed
    assert b.committed(T0) is None
    a.close()
    b.close()


def test_max_poll_interval_leaves_the_group(log):
    a, ra = _member(log, "a", max_poll_interval_ms=200)
    got = _until(lambda: len(a.assignment()) == 2, a)
    got += _until(lambda: True, a)
    while batch := a.poll(timeout=0.1):
        got.extend(batch)
    assert len(got) == 20
    time.sleep(0.4)                        # the application is stuck
    with pytest.raises(pylog.CommitFailedError, match="max_poll_interval_ms"):
        a.commit()
    assert ("lost", "a", {T0, T1}) in ra.calls
    again = _until(lambda: len(a.assignment()) == 2, a)   # rejoins ...
    while batch := a.poll(timeout=0.1):
        again.extend(batch)
    assert len(again) == 20                # ... and what it read is delivered again
    a.close()


def test_poll_inside_a_listener_is_refused(log):
    errors = []

    class PollsInside(pylog.ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned):
            try:
                c.poll()
            except pylog.InvalidArgument as exc:
                errors.append(exc)

    c = log.consumer(group_id="g")
    c.subscribe(["t"], listener=PollsInside())
    c.poll(timeout=0.2)
    assert len(errors) == 1
    c.close()


def test_seek_in_on_assigned_sets_the_start(log):
    class FromOffset5(pylog.ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned):
            for tp in assigned:
                c.seek(tp, 5)

    c = log.consumer(group_id="g", auto_offset_reset="earliest")
    c.subscribe(["t"], listener=FromOffset5())
    recs = _until(lambda: len(c.assignment()) == 2, c)
    while batch := c.poll(timeout=0.1):
        recs.extend(batch)
    assert sorted((r.partition, r.offset) for r in recs) == \
        [(p, o) for p in (0, 1) for o in range(5, 10)]
    c.close()


# -- iteration, seeks, topics --------
def test_consumer_timeout_ms_ends_iteration_after_idle_time(log):
    c = log.consumer("t", auto_offset_reset="earliest", consumer_timeout_ms=300)
    t0 = time.monotonic()
    assert len(list(c)) == 20
    assert 0.25 < time.monotonic() - t0 < 5
    # idle time counts from the last record: a slow trickle is all read
    p = log.producer()

    def trickle():
        for i in range(4):
            time.sleep(0.1)
            p.send("t", b"late%d" % i, partition=0)

    th = threading.Thread(target=trickle)
    th.start()
    late = [r.value for r in c]
    th.join()
    assert late == [b"late%d" % i for i in range(4)]
    c.close()


@pytest.mark.parametrize("reset,first", [("earliest", 0), ("latest", None)])
def test_seek_past_the_end_applies_the_reset_policy_at_the_next_fetch(log, reset, first):
    c = log.consumer(auto_offset_reset=reset, enable_auto_commit=False)
    c.assign([T0])
    c.seek(T0, 500)
    assert c.position(T0) == 500
    recs = c.poll(timeout=0.2)
    if first is None:
        assert recs == [] and c.position(T0) == 10
    else:
        assert recs[0].offset == first


def test_seek_past_the_end_with_reset_none_raises_at_poll(log):
    c = log.consumer(auto_offset_reset="none", enable_auto_commit=False)
    c.assign([T0])
    c.seek(T0, 500)                         # accepted ...
    with pytest.raises(pylog.OffsetOutOfRange, match="past the end"):
        c.poll(timeout=0.1)                 # ... refused where it is read


def test_misspelled_topic_warns_once_and_is_listed(log, caplog):
    caplog.set_level(logging.WARNING, logger="pylog")
    c = log.consumer("tt", group_id="g", auto_offset_reset="earliest")
    for _ in range(3):
        assert c.poll(timeout=0.05) == []
    warnings = [r for r in caplog.records if "'tt' does not exist" in r.getMessage()]
    assert len(warnings) == 1 and "did you mean 't'" in warnings[0].getMessage()
    assert c.missing_topics() == {"tt"}
    log.create_topic("tt")                  # created later: read from then on
    log.producer().send("tt", b"x")
    deadline = time.monotonic() + 5
    recs = []
    while not recs and time.monotonic() < deadline:
        recs = c.poll(timeout=0.2)
    assert [r.value for r in recs] == [b"x"] and c.missing_topics() == set()
    c.close()


# -- producer --------
def test_flush_timeout_expires_while_a_sync_cannot_start(log):
    p = log.producer()
    p.send("t", b"x", partition=0)
    part = log.partition("t", 0)
    with part.shared.wlock:                 # an append of another thread holds the writer
        t0 = time.monotonic()
        with pytest.raises(pylog.FlushTimeoutError, match="did not finish within 0.2 s"):
            p.flush(timeout=0.2)
        assert time.monotonic() - t0 < 2
    p.flush(timeout=5)                      # the sync finishes once the writer is free
    with part.shared.wlock:
        with pytest.raises(pylog.FlushTimeoutError):
            p.close(timeout=0.1)
    with pytest.raises(pylog.LogClosed):    # closed even so
        p.send("t", b"y")


def test_listener_at_creation_and_revoke_on_unsubscribe(log):
    calls = []

    class Record_(pylog.ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned):
            calls.append(("assigned", assigned))

        def on_partitions_revoked(self, revoked):
            calls.append(("revoked", revoked))

    c = log.consumer("t", group_id="g", listener=Record_())
    c.poll(timeout=0.2)
    c.unsubscribe()
    assert calls == [("assigned", {T0, T1}), ("revoked", {T0, T1})]
    with pytest.raises(pylog.InvalidArgument, match="listener= needs topics"):
        log.consumer(group_id="g", listener=Record_())
    c.close()


@pytest.mark.parametrize("client,name,hint", [
    ("producer", "produce", "use send("),
    ("producer", "poll", "add_callback runs once"),
    ("producer", "send_and_wait", "already returns"),
    ("consumer", "consume", "use poll("),
    ("consumer", "store_offsets", "commit("),
    ("consumer", "list_topics", "topics()"),
    # names every kafka-python / confluent-kafka port types (a user trial)
    ("producer", "init_transactions", "transactional_id="),
    ("producer", "begin_transaction", "transactional_id="),
    ("producer", "metrics", "Log.metrics()"),
    ("txn", "init_transactions", "did it"),
    ("consumer", "commit_async", "commit("),
    ("consumer", "unassign", "assign([])"),
    ("consumer", "metrics", "Log.metrics()"),
    ("consumer", "group_metadata", "send_offsets_to_transaction(consumer)"),
    ("consumer", "consumer_group_metadata", "group_id"),
])
def test_kafka_names_pylog_lacks_say_what_to_use(log, client, name, hint):
    """A client name pylog does not offer raises AttributeError naming the
    pylog call to use; any other missing name is a plain AttributeError."""
    obj = log.producer() if client == "producer" else \
        log.producer(transactional_id="x") if client == "txn" else log.consumer("t")
    with pytest.raises(AttributeError) as ei:
        getattr(obj, name)
    assert hint in str(ei.value) and name in str(ei.value)
    assert not hasattr(obj, "no_such_thing")
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        obj.no_such_thing


def test_pause_and_resume_of_an_unassigned_partition_raise(log):
    """As kafka-python's IllegalStateError: a partition this consumer does
    not own can be neither paused nor resumed."""
    log.create_topic("u", partitions=2)
    c = log.consumer()
    c.assign([TP("u", 0)])
    for call in (c.pause, c.resume):
        with pytest.raises(pylog.InvalidArgument, match="not assigned|assign"):
            call(TP("u", 1))
    c.pause(TP("u", 0))
    c.resume([TP("u", 0)])
    assert c.paused() == set()


def test_confluent_assign_starts_at_the_offset_its_partitions_carry(tmp_path):
    """A user trial: confluent-kafka's assign([TopicPartition(t, p, 5)])
    started at auto_offset_reset, not at 5 (with "latest", records 5..9
    were skipped); OFFSET_END / OFFSET_BEGINNING were ignored too."""
    ck = pytest.importorskip("confluent_kafka")
    with pylog.open(tmp_path) as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"%d" % i for i in range(10)])
        tp = pylog.TopicPartition("t", 0)
        c = log.consumer()                          # auto_offset_reset="latest"
        c.assign([ck.TopicPartition("t", 0, 5)])
        assert [r.offset for r in c.poll(timeout=1)] == [5, 6, 7, 8, 9]
        c.assign([ck.TopicPartition("t", 0, ck.OFFSET_BEGINNING)])
        assert c.position(tp) == 0
        c.assign([ck.TopicPartition("t", 0, ck.OFFSET_END)])
        assert c.position(tp) == 10
        c = log.consumer(auto_offset_reset="earliest")
        c.assign([ck.TopicPartition("t", 0)])      # OFFSET_INVALID: the reset policy
        assert c.position(tp) == 0
        with pytest.raises(pylog.InvalidArgument, match="OFFSET_TAIL"):
            c.assign([ck.TopicPartition("t", 0, ck.OFFSET_END - 2000 - 3)])
        assert c.assignment() == {tp}


def test_a_refused_assign_changes_nothing(tmp_path):
    """assign() checked a partition's start offset only when it sought
    there, after the assignment (and the seeks of the partitions before)
    had changed: an offset past 2**63, or one retention deleted with
    auto_offset_reset="none", raised but left the new assignment."""
    class Carrying:         # (confluent-kafka's TopicPartition's shape)
        def __init__(self, topic, partition, offset):
            self.topic, self.partition, self.offset = topic, partition, offset

    with pylog.open(tmp_path) as log:
        log.create_topic("t", partitions=2)
        log.producer().send_batch("t", [b"x"] * 5, partition=0)
        log.delete_records({pylog.TopicPartition("t", 0): 3})
        t0, t1 = pylog.TopicPartition("t", 0), pylog.TopicPartition("t", 1)
        c = log.consumer(auto_offset_reset="none")
        c.assign([Carrying("t", 0, 4)])
        with pytest.raises(pylog.InvalidArgument, match="2\\*\\*63"):
            c.assign([Carrying("t", 0, 3), Carrying("t", 1, 1 << 63)])
        with pytest.raises(pylog.OffsetOutOfRange):
            c.assign([Carrying("t", 1, 0), Carrying("t", 0, 1)])
        assert c.assignment() == {t0}
        assert c.position(t0) == 4
        assert t1 not in c.assignment()
