"""README "Producing": the calls as printed, a producer shared by threads,
send_batch's all-or-nothing validation and its atomic batches."""

import json
import signal
import threading
import time

import pytest
from promisekit import Child, read_all

import pylog


def test_producer_calls_as_printed(log):
    """producer = log.producer(value_serializer=lambda v: json.dumps(v).encode())
    producer.send("clicks", {"page": "/"}, key=b"user-1")
    producer.send("clicks", {"page": "/a"}, partition=3, timestamp_ms=1_700_000_000_000)
    producer.send_batch("clicks", [(b"user-1", {"page": "/b"}),
                                   (b"user-2", {"page": "/c"}, [("h", b"v")])])
    producer.flush()

    Every record is stored as those calls say: serialized, keyed, in the
    given partition with the given timestamp, with its headers."""
    log.create_topic("clicks", partitions=4)
    producer = log.producer(value_serializer=lambda v: json.dumps(v).encode())
    a = producer.send("clicks", {"page": "/"}, key=b"user-1")
    b = producer.send("clicks", {"page": "/a"}, partition=3, timestamp_ms=1_700_000_000_000)
    c, d = producer.send_batch("clicks", [(b"user-1", {"page": "/b"}),
                                          (b"user-2", {"page": "/c"}, [("h", b"v")])])
    producer.flush()
    assert c.partition == a.partition           # same key, same partition
    assert b.partition == 3 and b.timestamp_ms == 1_700_000_000_000
    recs = {(r.partition, r.offset): r for r in read_all(log, "clicks")}
    ra, rb, rc, rd = (recs[(m.partition, m.offset)] for m in (a, b, c, d))
    assert (ra.key, json.loads(ra.value)) == (b"user-1", {"page": "/"})
    assert rb.timestamp_ms == 1_700_000_000_000 and json.loads(rb.value) == {"page": "/a"}
    assert (rc.key, json.loads(rc.value), rc.headers) == (b"user-1", {"page": "/b"}, ())
    assert (rd.key, json.loads(rd.value), rd.headers) == (b"user-2", {"page": "/c"},
                                                          (("h", b"v"),))


def test_a_producer_is_thread_safe(fastlog):
    """A producer is thread-safe.

    Eight threads share one producer, mixing send and send_batch over three
    partitions: every returned offset is unique, the partitions have no
    holes, and each offset holds the value that was sent for it."""
    fastlog.create_topic("t", partitions=3)
    producer = fastlog.producer()
    acked, errors = {}, []
    lock = threading.Lock()

    def run(t):
        try:
            for i in range(150):
                if i % 10 == 0:
                    vals = [b"%d.%d.%d" % (t, i, j) for j in range(5)]
                    mds = producer.send_batch("t", vals, partition=i % 3)
                else:
                    vals = [b"%d.%d" % (t, i)]
                    mds = [producer.send("t", vals[0], key=vals[0])]
                with lock:
                    for md, v in zip(mds, vals):
                        assert (md.partition, md.offset) not in acked
                        acked[(md.partition, md.offset)] = v
        except BaseException as exc:       # (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors
    assert len(acked) == 8 * (135 + 15 * 5)
    got = {(r.partition, r.offset): r.value for r in read_all(fastlog, "t")}
    assert got == acked


BAD_LAST_ITEMS = {
    "a str value": "not bytes",
    "a 4-tuple": (b"k", b"v", [], "extra"),
    "a header that is not bytes": (b"k", b"v", [("h", 42)]),
    "a record over max_message_bytes": (b"k", b"x" * 70_000),
    "an int key": (42, b"v"),
}


@pytest.mark.parametrize("bad", list(BAD_LAST_ITEMS), ids=list(BAD_LAST_ITEMS))
def test_send_batch_validates_every_item_before_writing(fastlog, bad):
    """``send_batch`` validates every item before it writes any

    The bad item comes last, after good items bound for every partition:
    the call raises a PylogError and no partition holds anything new."""
    fastlog.create_topic("t", partitions=3, max_message_bytes=65536, segment_bytes=65536)
    p = fastlog.producer()
    p.send_batch("t", [(b"k%d" % i, b"before") for i in range(10)])
    before = [(x.end_offset, x.bytes) for x in fastlog.describe_topic("t").partition_info]
    good = [(b"key-%d" % i, b"good") for i in range(30)]
    good += [b"keyless %d" % i for i in range(5)]
    with pytest.raises(pylog.PylogError):
        p.send_batch("t", good + [BAD_LAST_ITEMS[bad]])
    after = [(x.end_offset, x.bytes) for x in fastlog.describe_topic("t").partition_info]
    assert after == before
    assert p.send("t", b"still fine", partition=0).offset == before[0][0]


def test_send_batch_validates_with_a_serializer_that_raises(fastlog):
    """``send_batch`` validates every item before it writes any

    The value serializer raises on the last item only: nothing is written."""
    fastlog.create_topic("t", partitions=2)

    def ser(v):
        if v == "bad":
            raise ValueError("cannot serialize")
        return v.encode()

    p = fastlog.producer(value_serializer=ser)
    with pytest.raises(ValueError):
        p.send_batch("t", ["a", "b", "c", (None, "d"), "bad"])
    assert [x.end_offset for x in fastlog.describe_topic("t").partition_info] == [0, 0]


BATCHER = r"""
import sys, pylog
log = pylog.open(sys.argv[1], sync=sys.argv[2])
p = log.producer()
print("go", flush=True)
i = int(sys.argv[3]) * 1_000_000
while True:
    # keys k0..k11 spread over the 3 partitions the same way every call
    p.send_batch("t", [(b"k%d" % j, b"%d/%d|" % (i, j) + b"v" * 2000) for j in range(12)])
    i += 1
"""


@pytest.mark.parametrize("sync", ["always", "never"])
def test_items_for_one_partition_are_one_atomic_batch(tmp_path, child_env, sync):
    """items bound for one partition are one atomic batch.

    A child calls send_batch with the same twelve keys (spread over three
    partitions) again and again and is SIGKILLed: after reopening, each
    partition holds every call's share for that partition whole, or none
    of it."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=3, segment_bytes=65536)
        share = {}
        for j in range(12):
            share.setdefault(pylog._native.partition_for_key(b"k%d" % j, 3), []).append(j)
    for run in range(3):
        with Child(BATCHER, path, sync, run, env=child_env) as c:
            c.expect("go")
            time.sleep(0.3)
            c.send_signal(signal.SIGKILL)
            c.finish()
    with pylog.open(path) as log:
        recs = read_all(log, "t")
    assert recs
    for p, js in share.items():
        calls = {}
        for r in recs:
            if r.partition == p:
                i, j = map(int, r.value.split(b"|")[0].split(b"/"))
                calls.setdefault(i, []).append(j)
        for i, got in calls.items():
            assert got == js, f"partition {p} holds part of call {i}: {got} of {js}"
