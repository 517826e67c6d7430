"""Consumer without and with a single member: poll, commit, seek, time,
pause, lag, retention, wake-ups, run()."""

import threading
import time

import pytest

import pylog
from pylog import TopicPartition as TP


@pytest.fixture
def log(tmp_path):
    lg = pylog.open(tmp_path, sync="never")
    yield lg
    lg.close()


def drain(c, timeout=0.05):
    out = []
    while batch := c.poll(timeout=timeout, max_records=10_000):
        out.extend(batch)
    return out


def fill(log, topic="t", n=100, partitions=1, **kw):
    log.create_topic(topic, partitions=partitions, **kw)
    p = log.producer()
    for i in range(n):
        p.send(topic, b"v%d" % i, partition=i % partitions, timestamp_ms=10_000 + i * 10)
    return p


def test_auto_offset_reset(log):
    fill(log)
    assert len(drain(log.consumer("t", auto_offset_reset="earliest"))) == 100
    assert drain(log.consumer("t", auto_offset_reset="latest")) == []
    c = log.consumer("t", group_id="g", auto_offset_reset="none")
    with pytest.raises(pylog.OffsetOutOfRange):
        c.poll(timeout=0.1)


def test_committed_offset_survives_restart(tmp_path):
    with pylog.open(tmp_path) as log:
        fill(log)
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False)
        first = c.poll(timeout=0.5, max_records=30)
        assert [r.offset for r in first] == list(range(30))
        c.commit()
        assert c.committed(TP("t", 0)) == 30
        c.poll(timeout=0.1, max_records=10)      # read but not committed
        c.close()
    with pylog.open(tmp_path) as log:
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        assert c.poll(timeout=0.5, max_records=1)[0].offset == 30
        c.close()


def test_auto_commit_and_close_commit_only_finished_records(log):
    fill(log)
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=True, auto_commit_interval_ms=1)
    c.poll(timeout=0.5, max_records=10)
    time.sleep(0.01)
    c.poll(timeout=0, max_records=15)     # auto-commit of the first 10 happens here
    assert c.committed(TP("t", 0)) == 10
    c.close()                             # 10-24 were handed, never moved past
    c2 = log.consumer("t", group_id="g")
    assert c2.position(TP("t", 0)) == 10
    c2.poll(timeout=0.5, max_records=5)
    c2.commit()                           # an explicit commit counts what poll returned
    c2.close()
    c3 = log.consumer("t", group_id="g")
    assert c3.position(TP("t", 0)) == 15
    c3.close()


def test_manual_assign_seek_and_positions(log):
    fill(log, partitions=2)
    c = log.consumer(enable_auto_commit=False)
    tp = TP("t", 1)
    c.assign([tp])
    assert c.assignment() == {tp}
    c.seek(tp, 20)
    recs = c.poll(timeout=0.5, max_records=5)
    assert [r.offset for r in recs] == [20, 21, 22, 23, 24]
    assert all(r.partition == 1 for r in recs)
    assert c.position(tp) == 25
    c.seek_to_end()
    assert c.position(tp) == 50 and c.lag() == {tp: 0}
    c.seek_to_beginning(tp)
    assert c.lag() == {tp: 50}
    c.seek(tp, 51)                    # past the end: accepted, as Kafka;
    assert c.position(tp) == 51
    assert c.poll(timeout=0.1) == []  # the reset policy ("latest") applies
    assert c.position(tp) == 50
    with pytest.raises(pylog.InvalidArgument):
        c.seek(TP("t", 0), 0)         # not assigned
    with pytest.raises(pylog.InvalidArgument):
        c.commit()                    # no group


def test_offsets_for_times(log):
    fill(log, n=200)   # timestamps 10000, 10010, ...
    c = log.consumer(enable_auto_commit=False)
    tp = TP("t", 0)
    c.assign([tp])
    got = c.offsets_for_times({tp: 10_000 + 1234})
    assert got == {tp: 124}           # first record at or after the time
    assert c.offsets_for_times({tp: 0}) == {tp: 0}
    assert c.offsets_for_times({tp: 10**12}) == {tp: None}
    c.seek(tp, got[tp])
    assert c.poll(timeout=0.5, max_records=1)[0].timestamp_ms == 11_240


def test_offsets_for_times_across_segments(log):
    log.create_topic("t", segment_bytes=64 * 1024, retention_ms=-1)
    p = log.producer()
    for i in range(3000):
        p.send("t", b"x" * 100, timestamp_ms=1_000_000 + i)
    assert log.describe_topic("t").partition_info[0].segments > 3
    c = log.consumer(enable_auto_commit=False)
    tp = TP("t", 0)
    c.assign([tp])
    for target in (1_000_000, 1_000_001, 1_001_500, 1_002_999):
        assert c.offsets_for_times({tp: target})[tp] == target - 1_000_000


def test_pause_resume(log):
    fill(log, partitions=2, n=20)
    c = log.consumer("t", auto_offset_reset="earliest")
    c.pause(TP("t", 0))
    assert {r.partition for r in drain(c)} == {1}
    c.resume(TP("t", 0))
    assert {r.partition for r in drain(c)} == {0}
    assert c.paused() == set()


def test_poll_values(log):
    fill(log, n=10)
    c = log.consumer("t", auto_offset_reset="earliest")
    assert c.poll_values(timeout=0.5) == [b"v%d" % i for i in range(10)]


def test_poll_wakes_on_append_from_another_thread(log):
    log.create_topic("t")
    c = log.consumer("t", auto_offset_reset="latest")
    assert c.poll(timeout=0) == []
    p = log.producer()
    t = threading.Timer(0.2, lambda: p.send("t", b"late"))
    t.start()
    t0 = time.monotonic()
    recs = c.poll(timeout=5.0)
    waited = time.monotonic() - t0
    assert [r.value for r in recs] == [b"late"]
    assert waited < 4.0          # woken by the append, not by the timeout
    t.join()


def test_idle_poll_uses_little_cpu(log):
    log.create_topic("t")
    c = log.consumer("t")
    cpu0 = time.process_time()
    assert c.poll(timeout=1.0) == []
    assert time.process_time() - cpu0 < 0.3   # a busy loop would burn ~1 s


def test_retention_moves_group_per_auto_offset_reset(log):
    log.create_topic("t", segment_bytes=64 * 1024, retention_bytes=64 * 1024)
    p = log.producer()
    for i in range(200):
        p.send("t", b"x" * 100)
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    c.poll(timeout=0.5, max_records=5)
    c.commit()
    c.close()
    for i in range(3000):
        p.send("t", b"y" * 100)
    log.enforce_retention()
    start = log.describe_topic("t").partition_info[0].start_offset
    assert start > 5
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    assert c.poll(timeout=0.5, max_records=1)[0].offset == start
    c.close()
    c = log.consumer("t", group_id="g", auto_offset_reset="none")
    with pytest.raises(pylog.OffsetOutOfRange):
        c.poll(timeout=0.2)
    c.close(autocommit=False)


def test_run_handler_at_least_once(tmp_path):
    with pylog.open(tmp_path) as log:
        fill(log, n=20)
        seen = []

        def handler(rec):
            if rec.offset == 12:
                raise RuntimeError("boom")
            seen.append(rec.offset)

        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        with pytest.raises(RuntimeError):
            c.run(handler)
        assert c.committed(TP("t", 0)) == 12      # the failed record is not committed
        c.close(autocommit=False)
        stop = threading.Event()
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")

        def handler2(rec):
            seen.append(rec.offset)
            if rec.offset == 19:
                stop.set()

        c.run(handler2, stop=stop, commit_every="record")
        assert seen == list(range(12)) + list(range(12, 20))
        assert c.committed(TP("t", 0)) == 20
        c.close()


def test_iteration_ends_on_close(log):
    fill(log, n=5)
    c = log.consumer("t", auto_offset_reset="earliest")
    threading.Timer(0.5, c.close).start()
    assert [r.offset for r in c] == [0, 1, 2, 3, 4]


def test_subscribe_pattern_picks_up_new_topic(log):
    fill(log, topic="orders.eu", n=3)
    c = log.consumer(pattern=r"orders\..*", group_id="audit", auto_offset_reset="earliest")
    assert {r.topic for r in drain(c)} == {"orders.eu"}
    fill(log, topic="orders.us", n=4)
    fill(log, topic="other", n=4)
    deadline = time.monotonic() + 5
    topics = set()
    while time.monotonic() < deadline and "orders.us" not in topics:
        topics |= {r.topic for r in c.poll(timeout=0.2)}
    assert topics == {"orders.us"}
    c.close()


def poll_until(c, n, timeout=4.0):
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < n:
        got += c.poll(timeout=0.2)
    return got


@pytest.mark.parametrize("group_id", ["g", None])
def test_latest_reads_topic_created_after_first_poll(log, group_id):
    # a worker subscribed before the topic exists (it boots before the
    # producer that creates it): every record of the topic was sent after
    # its first poll, so 'latest' must not skip those sent before it
    # noticed the topic
    c = log.consumer("new", group_id=group_id) if group_id else log.consumer()
    if group_id is None:
        c.subscribe(["new"])
    assert c.poll(timeout=0.05) == []
    fill(log, topic="new", n=5, partitions=2)
    assert sorted(r.value for r in poll_until(c, 5)) == [b"v%d" % i for i in range(5)]
    # partitions added after the first poll: the same
    log.create_partitions("new", 3)
    log.producer().send("new", b"late", partition=2)
    assert [r.value for r in poll_until(c, 1)] == [b"late"]
    c.close()


def test_latest_still_skips_what_came_before_first_poll(log):
    fill(log, topic="old", n=5, partitions=2)
    c = log.consumer("old", group_id="g")
    assert c.poll(timeout=0.3) == []
    log.producer().send("old", b"new", partition=0)
    assert [r.value for r in poll_until(c, 1)] == [b"new"]
    c.close()


def test_lag_and_describe_group(log):
    fill(log, n=50, partitions=2)
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
    c.poll(timeout=0.5, max_records=10)
    lag = c.lag()
    assert sum(lag.values()) == 40
    c.commit()
    d = log.describe_group("g")
    assert d["lag"] == 40 and len(d["members"]) == 1
    assert d["members"][0]["alive"]
    c.close()
    assert log.describe_group("g")["members"] == []
    assert "g" in log.groups()


def test_reset_group(log):
    fill(log, n=30)
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
    drain(c)
    c.commit()
    with pytest.raises(pylog.GroupNotEmpty):
        log.reset_group("g", to="earliest")
    plan = log.reset_group("g", to="earliest", execute=False)
    assert plan == {TP("t", 0): 0}
    c.close()
    assert log.describe_group("g")["partitions"][0]["committed"] == 30
    log.reset_group("g", to="offset", value=7)
    assert log.describe_group("g")["partitions"][0]["committed"] == 7
    log.reset_group("g", to="datetime", value=10_000 + 150)
    assert log.describe_group("g")["partitions"][0]["committed"] == 15
    log.reset_group("g", to="latest")
    assert log.describe_group("g")["partitions"][0]["committed"] == 30


def test_close_is_idempotent_and_final(log):
    fill(log, n=1)
    c = log.consumer("t")
    c.close()
    c.close()
    with pytest.raises(pylog.LogClosed):
        c.poll()


@pytest.fixture
def wait_fetch_calls(monkeypatch):
    """What each _native.wait_fetch call returned (the one-call wait of a
    blocked poll of one positioned partition)."""
    from pylog import _native
    calls = []
    real = _native.wait_fetch

    def counting(*a):
        r = real(*a)
        calls.append(r)
        return r
    monkeypatch.setattr(_native, "wait_fetch", counting)
    return calls


@pytest.mark.parametrize("positioned", [False, True])
@pytest.mark.parametrize("group", [None, "g"])
def test_wakeup_ends_a_blocked_poll(log, group, positioned, wait_fetch_calls):
    """wakeup() rings the doorbell slot the poll waits on (its topic's own,
    L-3): the poll returns at once, not when its wait slice (1 s without a
    group) ends. Positioned on a record, the poll waits in the one-call wait
    (Partition.wait_fetch), which returns woken with nothing decoded."""
    log.create_topic("t")
    c = log.consumer("t", group_id=group, auto_offset_reset="earliest")
    if positioned:
        log.producer().send("t", b"x")
        assert len(c.poll(timeout=1)) == 1      # positions the cursor
    else:
        c.poll(timeout=0)
    got = {}

    def poller():
        got["recs"] = c.poll(timeout=20)
        got["t"] = time.monotonic()
    th = threading.Thread(target=poller)
    th.start()
    time.sleep(0.2)
    woke = time.monotonic()
    c.wakeup()
    th.join(10)
    # (unwoken, the poll would sleep to the end of its wait slice: >= 0.8 s)
    assert not th.is_alive() and got["recs"] == [] and got["t"] - woke < 0.5
    if positioned:
        assert wait_fetch_calls and wait_fetch_calls[-1] == ()
    c.close()


def test_log_closed_under_a_blocked_poll(tmp_path):
    """The poll waits on the doorbell through a pointer without the GIL; a
    close() from another thread must not unmap it under the waiter."""
    lg = pylog.open(tmp_path, sync="never")
    lg.create_topic("t")
    c = lg.consumer("t", group_id="g")
    c.poll(timeout=0)
    out = {}

    def poller():
        try:
            out["recs"] = c.poll(timeout=0.5)
        except pylog.PylogError as exc:
            out["err"] = exc
    th = threading.Thread(target=poller)
    th.start()
    time.sleep(0.1)
    lg.close()
    th.join(10)
    assert not th.is_alive()
    assert out.get("recs") == [] or isinstance(out.get("err"), pylog.LogClosed)


def test_subscriber_sees_added_partitions_at_once(log):
    log.create_topic("t", partitions=1)
    c = log.consumer("t", auto_offset_reset="earliest")
    assert c.poll(timeout=0) == []
    log.create_partitions("t", 3)
    log.producer().send("t", b"new", partition=2)
    c.seek(TP("t", 2), 0)
    assert [r.value for r in c.poll(timeout=0)] == [b"new"]
    c.close()


def test_subscriber_follows_a_topic_recreated_with_more_partitions(log):
    """Without a group a consumer reads every partition of its topics; the
    partition list it keeps between polls is refreshed with the topics."""
    log.create_topic("t", partitions=1)
    c = log.consumer("t", auto_offset_reset="earliest")
    assert c.poll(timeout=0) == []
    log.delete_topic("t")
    log.create_topic("t", partitions=3)
    log.producer().send("t", b"late", partition=2)
    got = []
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        got = c.poll(timeout=0.5)
    assert [(r.partition, r.value) for r in got] == [(2, b"late")]
    assert c.assignment() == {TP("t", 0), TP("t", 1), TP("t", 2)}


@pytest.mark.parametrize("kind", ["records", "values", "deserialized"])
def test_blocked_poll_of_one_partition_decodes_in_the_wait(log, wait_fetch_calls, kind):
    """A poll blocked on one positioned partition gets its records from the
    wait call itself (Partition.wait_fetch); what it returns is what the
    usual fetch would have built."""
    log.create_topic("t")
    kw = {"value_deserializer": bytes.upper} if kind == "deserialized" else {}
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest", **kw)
    p = log.producer()
    p.send("t", b"v0", key=b"k")
    assert len(c.poll(timeout=1)) == 1       # positions the cursor
    got = []

    def poller():
        while len(got) < 20:
            got.extend(c.poll_values(timeout=5) if kind == "values" else c.poll(timeout=5))
    th = threading.Thread(target=poller)
    th.start()
    for i in range(1, 21):
        time.sleep(0.005)
        p.send("t", b"v%d" % i, key=b"k", headers=[("n", b"%d" % i)])
    th.join(30)
    assert not th.is_alive()
    assert any(r and r[0] for r in wait_fetch_calls)   # decoded in the wait
    if kind == "values":
        assert got == [b"v%d" % i for i in range(1, 21)]
    else:
        assert all(type(r) is pylog.Record for r in got)
        assert [r.offset for r in got] == list(range(1, 21))
        assert [r.headers for r in got] == [(("n", b"%d" % i),) for i in range(1, 21)]
        want = [b"v%d" % i for i in range(1, 21)]
        assert [r.value for r in got] == ([v.upper() for v in want]
                                          if kind == "deserialized" else want)
    c.close()


def test_send_returns_after_the_woken_consumer_of_its_process_took_over(log):
    """The hand-off (pylog._native.Handoff): a blocked poll of this process
    counts itself waiting, and the send that wakes it returns only once the
    poll holds the GIL, so the consumer never queues behind the producer."""
    log.create_topic("t")
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
    p = log.producer()
    p.send("t", b"v0")
    assert len(c.poll(timeout=1)) == 1
    part = log.partition("t", 0)
    part._appender.hold_max_ns = 20 * 10**9     # not bounded by time here
    part._appender.hold_gap_ns = 0              # (the last send was just now)
    handoff = part._handoff
    got = []
    th = threading.Thread(target=lambda: got.extend(c.poll(timeout=10)))
    th.start()
    deadline = time.monotonic() + 10
    while not handoff.counts[1] and time.monotonic() < deadline:
        time.sleep(0.01)                        # until the poll waits
    h0 = handoff.counts[0]
    p.send("t", b"v1")
    assert handoff.counts[0] != h0              # the poll had the GIL first
    th.join(10)
    assert [r.value for r in got] == [b"v1"]
    assert handoff.counts[1] == 0               # no longer counted as waiting
    c.close()


def test_bad_strategy_without_a_group_and_bad_seek_offset_change_nothing(tmp_path):
    """A user trial: partition_assignment_strategy was checked only with a
    group_id (a typo without one was ignored), and seek() made a new
    member join its group (an LMDB write) before refusing a bad offset."""
    with pylog.open(tmp_path) as log:
        log.create_topic("t", partitions=2)
        with pytest.raises(pylog.InvalidArgument, match="partition_assignment_strategy"):
            log.consumer("t", partition_assignment_strategy="cooperative-sticky")
        c = log.consumer("t", group_id="g")
        for bad in (-1, "1", 1.5, True):
            with pytest.raises(pylog.InvalidArgument, match="offset="):
                c.seek(pylog.TopicPartition("t", 0), bad)
        assert log.describe_group("g")["members"] == []
        c.close()


def test_subscribe_to_a_non_list_names_the_argument(tmp_path):
    """A user trial: subscribe(5) raised a bare "'int' object is not
    iterable" TypeError from inside pylog."""
    with pylog.open(tmp_path) as log:
        c = log.consumer(group_id="g")
        for bad in (5, None, 1.5):
            with pytest.raises(pylog.InvalidArgument, match="topics="):
                c.subscribe(bad)
        assert c.subscription() == set()
        c.close()
