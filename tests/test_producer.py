"""Producer: partitioning (G2), batches, headers, serializers, threads."""

import json
import random
import threading
import time

import pytest
from kafka.partitioner.default import murmur2 as kafka_murmur2
from reading import read_all

import pylog
from pylog.partition import Cursor


def test_send_returns_metadata_and_offsets_are_dense(log):
    log.create_topic("t", partitions=1)
    p = log.producer()
    mds = [p.send("t", b"v%d" % i, timestamp_ms=1000 + i) for i in range(50)]
    assert [m.offset for m in mds] == list(range(50))
    assert mds[7] == pylog.RecordMetadata("t", 0, 7, 1007)
    # kafka-python's and aiokafka's names for the same fields
    assert (mds[7].timestamp, mds[7].timestamp_type, mds[7].topic_partition) == \
        (1007, 0, pylog.TopicPartition("t", 0))
    recs = read_all(log, "t")
    assert [(r.offset, r.value, r.timestamp_ms) for r in recs] == \
        [(i, b"v%d" % i, 1000 + i) for i in range(50)]


def test_keyed_partitioning_matches_kafka(log):
    log.create_topic("t", partitions=7)
    p = log.producer()
    rnd = random.Random(1)
    for _ in range(300):
        key = rnd.randbytes(rnd.randint(0, 40))
        md = p.send("t", b"v", key=key)
        assert md.partition == (kafka_murmur2(key) & 0x7fffffff) % 7


def test_keyless_records_spread(log):
    log.create_topic("t", partitions=4)
    p = log.producer()
    parts = {p.send("t", b"v").partition for _ in range(40)}
    assert parts == {0, 1, 2, 3}


def test_send_batch_forms(log):
    log.create_topic("t", partitions=3)
    p = log.producer()
    mds = p.send_batch("t", [b"plain", (b"k1", b"v1"), (b"k2", b"v2", [("h", b"x"), ("n", None)]),
                             (None, None)])
    assert len(mds) == 4
    recs = {(r.partition, r.offset): r for r in read_all(log, "t")}
    got = [recs[(m.partition, m.offset)] for m in mds]
    assert got[0].value == b"plain" and got[0].key is None
    assert (got[1].key, got[1].value) == (b"k1", b"v1")
    assert got[2].headers == (("h", b"x"), ("n", None))
    assert got[3].value is None
    assert p.send_batch("t", []) == []


@pytest.mark.parametrize("shape", [list, tuple, iter, lambda xs: (x for x in xs)])
def test_send_batch_takes_any_iterable_as_a_list(log, shape):
    """A tuple, an iterator or a generator is the same batch as the list:
    the same records, offsets and partitions, one batch per partition."""
    log.create_topic("t", partitions=2)
    p = log.producer()
    items = [b"v%d" % i for i in range(50)] + [(b"k%d" % i, b"kv%d" % i) for i in range(50)]
    mds = p.send_batch("t", shape(items), partition=1)
    assert [m.offset for m in mds] == list(range(100))
    assert [(r.key, r.value) for r in read_all(log, "t")] == \
        [(None, v) if isinstance(v, bytes) else v for v in items]
    assert p.send_batch("t", shape([])) == []


def test_send_batch_explicit_partition_is_one_batch(log):
    log.create_topic("t", partitions=2)
    p = log.producer()
    mds = p.send_batch("t", [(b"k%d" % i, b"v") for i in range(100)], partition=1)
    assert {m.partition for m in mds} == {1}
    assert [m.offset for m in mds] == list(range(100))
    part = log.partition("t", 1)
    assert part.state().next_offset == 100


def test_serializers(log):
    log.create_topic("t")
    p = log.producer(key_serializer=str.encode,
                     value_serializer=lambda v: json.dumps(v).encode())
    p.send("t", {"a": 1}, key="user-1")
    p.send_batch("t", [("user-2", {"b": 2})])
    c = log.consumer("t", auto_offset_reset="earliest", key_deserializer=bytes.decode,
                     value_deserializer=json.loads)
    recs = c.poll(timeout=0.5)
    assert [(r.key, r.value) for r in recs] == [("user-1", {"a": 1}), ("user-2", {"b": 2})]
    with pytest.raises(pylog.InvalidArgument):
        log.producer(value_serializer="json")


def test_zstd_topic_roundtrip(log):
    log.create_topic("z", compression="zstd")
    p = log.producer()
    values = [json.dumps({"eventType": "ORDER_PLACED", "n": i}).encode() for i in range(500)]
    p.send_batch("z", values)
    p.send("z", b"single")
    assert [r.value for r in read_all(log, "z")] == values + [b"single"]
    # compressed: far fewer bytes on disk than the raw values
    assert log.describe_topic("z").partition_info[0].bytes < sum(map(len, values)) / 3


def test_threads_share_a_producer(tmp_path):
    with pylog.open(tmp_path, sync="always") as log:
        log.create_topic("t", partitions=2)
        p = log.producer()
        errors = []

        def work(n):
            try:
                for i in range(100):
                    p.send("t", b"%d-%d" % (n, i), key=b"%d" % n)
            except Exception as exc:   # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        p.flush()
        recs = read_all(log, "t")
        assert len(recs) == 800 and len({r.value for r in recs}) == 800
        for part in (0, 1):
            offs = [r.offset for r in recs if r.partition == part]
            assert offs == list(range(len(offs)))
        # per key, order is preserved
        for n in range(8):
            vals = [r.value for r in recs if r.key == b"%d" % n]
            assert vals == [b"%d-%d" % (n, i) for i in range(100)]


def test_flush_and_close(log):
    log.create_topic("t")
    p = log.producer()
    p.send("t", b"x")
    p.flush()
    p.close()
    p.close()
    with pytest.raises(pylog.LogClosed):
        p.send("t", b"y")


@pytest.mark.parametrize("shape", ["equal", "ragged", "keyless", "bytes-like"])
def test_send_batch_column_shapes(log, shape):
    """The column-wise send_batch path (one length per column when all are
    equal, a length array otherwise), read back record by record; a segment
    small enough that batches also grow and roll it."""
    log.create_topic("t", partitions=1, segment_bytes=64 * 1024)
    p = log.producer()
    rng = random.Random(shape)
    sent = []
    for b in range(30):
        n = rng.randint(1, 300)
        if shape == "keyless":
            items = [rng.randbytes(rng.randint(0, 200)) for _ in range(n)]
            want = [(None, v) for v in items]
        else:
            klen = 16 if shape == "equal" else None
            items = [(rng.randbytes(klen if klen else rng.randint(0, 30)),
                      rng.randbytes(100 if klen else rng.randint(0, 200)))
                     for _ in range(n)]
            want = [(bytes(k), bytes(v)) for k, v in items]
            if shape == "bytes-like":
                items = [(bytearray(k), memoryview(v)) for k, v in items]
        mds = p.send_batch("t", items, partition=0)
        assert [m.offset for m in mds] == list(range(len(sent), len(sent) + n))
        sent.extend(want)
    assert [(r.key, r.value) for r in read_all(log, "t")] == sent


def test_send_batch_refuses_what_columns_cannot_hold(log):
    """Items the column path declines reach the item-by-item path, which
    raises and writes nothing (G5)."""
    import array
    log.create_topic("t", partitions=1)
    p = log.producer()
    for items in ([b"a", "text"], [(b"k", b"v"), (b"k", 5)], [(b"k", b"v", [], 1)]):
        with pytest.raises(pylog.InvalidArgument):
            p.send_batch("t", items)
    assert read_all(log, "t") == []
    # len() of this view counts 2 items, not its 16 bytes: the column path
    # must decline it, and the item path stores all 16 bytes
    wide = memoryview(array.array("q", [1, 2]))
    p.send_batch("t", [(b"k", wide), (b"k2", b"v")])
    assert [r.value for r in read_all(log, "t")] == [wide.tobytes(), b"v"]


def test_send_fast_path_falls_back_cleanly(log):
    """send()'s per-record fast path must not change behaviour: a topic
    deleted and re-created under a warm producer, a record over
    max_message_bytes, a closed producer."""
    log.create_topic("t", partitions=3, max_message_bytes=2000)
    p = log.producer()
    for i in range(10):
        p.send("t", b"v", key=b"k%d" % i)
    with pytest.raises(pylog.RecordTooLarge):
        p.send("t", b"x" * 3000, key=b"k")
    log.delete_topic("t")
    log.create_topic("t", partitions=1)
    md = p.send("t", b"again", key=b"k")
    assert (md.partition, md.offset) == (0, 0)
    p.close()
    with pytest.raises(pylog.LogClosed):
        p.send("t", b"late")


def close_once_under_way(lg, work, n_threads, done, at_least):
    """Run ``work(i)`` in ``n_threads`` threads; once ``done`` holds
    ``at_least`` items, close ``lg`` and join them."""
    ths = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n_threads)]
    for t in ths:
        t.start()
    deadline = time.monotonic() + 30
    while len(done) < at_least and time.monotonic() < deadline:
        threading.Event().wait(0.005)
    lg.close()
    for t in ths:
        t.join(10)


def test_durable_senders_racing_close_get_log_closed(tmp_path):
    """Threads in durable sends while the log closes: each send either
    completes or raises LogClosed, never an I/O error or a crash, and the
    log reopens with every completed send."""
    lg = pylog.open(tmp_path, sync="always")
    lg.create_topic("t", partitions=1)
    p = lg.producer()
    done, errors = [], []

    def work(i):
        try:
            for j in range(10_000):
                done.append(p.send("t", b"%d-%d" % (i, j)).offset)
        except Exception as exc:             # checked below
            errors.append(exc)
    close_once_under_way(lg, work, 4, done, 50)
    assert errors and all(isinstance(e, pylog.LogClosed) for e in errors), errors
    with pylog.open(tmp_path) as again:
        assert again.partition("t", 0).state().next_offset >= len(done)


def test_durable_send_that_raised_log_closed_is_not_in_the_log(tmp_path):
    """A durable send racing Log.close() from another thread either returns
    (its record is in the log) or raises LogClosed with its record not
    there: a record that went in while its sender was told LogClosed would
    be stored twice when the sender retries. (The writer's close used to
    release the active segment under senders waiting for their group
    commit, which then failed although their records were appended.)"""
    for rnd in range(15):
        path = tmp_path / str(rnd)
        lg = pylog.open(path, sync="always")
        lg.create_topic("t", partitions=2)
        p = lg.producer()
        done, failed, lock = set(), set(), threading.Lock()

        def work(i):
            for j in range(100_000):
                v = b"%d-%d" % (i, j)
                try:
                    p.send("t", v, partition=j % 2)
                except pylog.LogClosed:
                    with lock:
                        failed.add(v)
                    return
                with lock:
                    done.add(v)
        close_once_under_way(lg, work, 12, done, 200)
        with pylog.open(path) as again:
            values = {r.value for r in read_all(again, "t")}
        assert len(failed) == 12
        assert values & failed == set(), (rnd, sorted(values & failed))
        assert values == done


def test_group_commit_threads_all_durable(tmp_path):
    """16 threads of durable sends through one producer: every send returns
    its own offset exactly once, and all of them are in the log after a
    reopen (the syncer wakes each waiter only once its offsets are synced)."""
    lg = pylog.open(tmp_path, sync="always")
    lg.create_topic("t", partitions=1)
    p = lg.producer()
    got, lock = [], threading.Lock()

    def work(i):
        mine = [p.send("t", b"%d-%d" % (i, j)).offset for j in range(40)]
        with lock:
            got.extend(mine)
    ths = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    lg.close()
    assert sorted(got) == list(range(16 * 40))
    with pylog.open(tmp_path) as again:
        values = [r.value for r in read_all(again, "t")]
    assert sorted(values) == sorted(b"%d-%d" % (i, j) for i in range(16) for j in range(40))


def test_send_with_partition_after_the_route_is_warm(log):
    """send(partition=p) on a topic already sent to takes the one-call path:
    each record lands in the partition asked for; a partition out of range
    or of the wrong type still raises the clear error."""
    log.create_topic("t", partitions=3)
    p = log.producer()
    p.send("t", b"warm")                     # installs the topic's route
    mds = [p.send("t", b"%d" % i, partition=i % 3, key=b"k" if i % 2 else None)
           for i in range(30)]
    assert [m.partition for m in mds] == [i % 3 for i in range(30)]
    for m, i in zip(mds, range(30)):
        rec = log.partition("t", m.partition).fetch(Cursor(m.offset), 1)[0]
        assert rec[3] == b"%d" % i
    with pytest.raises(pylog.PartitionNotFound):
        p.send("t", b"x", partition=3)
    for bad in (True, -1, 1.0):
        with pytest.raises((pylog.InvalidArgument, pylog.PartitionNotFound)):
            p.send("t", b"x", partition=bad)


def test_send_with_timestamp_after_the_route_is_warm(log):
    """send(timestamp_ms=) on a warm route takes the one-call path: the
    record keeps the given timestamp, time lookups find it, and a timestamp
    outside the topic's window or of the wrong type is still refused with
    nothing written."""
    log.create_topic("t", message_timestamp_before_max_ms=86_400_000)
    p = log.producer()
    now = int(time.time() * 1000)
    stamps = [now - 60_000 + 1000 * i for i in range(10)]
    p.send("t", b"warm", timestamp_ms=stamps[0] - 1000)   # installs the route
    mds = [p.send("t", b"%d" % i, timestamp_ms=ts) for i, ts in enumerate(stamps)]
    assert [m.timestamp_ms for m in mds] == stamps
    part = log.partition("t", 0)
    assert [r[1] for r in part.fetch(Cursor(1), 10)] == stamps
    assert part.offset_for_time(stamps[5]) == mds[5].offset
    end = part.state().next_offset
    for bad in (now - 2 * 86_400_000, now + 2 * 3_600_000):
        with pytest.raises(pylog.InvalidTimestamp):
            p.send("t", b"x", timestamp_ms=bad)
    for bad in (-1, 2**62, True, 1.5):
        with pytest.raises(pylog.InvalidArgument):
            p.send("t", b"x", timestamp_ms=bad)
    assert part.state().next_offset == end, "a refused send wrote something"


def test_send_batch_refuses_a_dict_of_keys_and_values(log):
    # iterating a dict yields its keys: each key was stored as a value and
    # the values were dropped
    log.create_topic("d", partitions=1)
    producer = log.producer()
    with pytest.raises(pylog.InvalidArgument, match="items.items"):
        producer.send_batch("d", {b"k1": b"v1", b"k2": b"v2"})
    assert log.describe_topic("d").partition_info[0].end_offset == 0
    producer.send_batch("d", list({b"k1": b"v1"}.items()))
    c = log.consumer("d", auto_offset_reset="earliest")
    assert [(r.key, r.value) for r in c.poll(2.0)] == [(b"k1", b"v1")]
