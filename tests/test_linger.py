"""The lingering producer (log.producer(linger_ms=, batch_bytes=)): futures
resolved or failed, never left pending; batches by time, size, flush and
close; order per partition; records and headers read back exactly; the
headers= one-call path of the plain producer."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from childproc import expect, start
from reading import read_all

import pylog

LONG = 60_000          # a linger no test waits for: only flush/close/size end it


def wait_done(fut, timeout=10.0):
    end = time.monotonic() + timeout
    while not fut.is_done and time.monotonic() < end:
        time.sleep(0.005)
    return fut.is_done


def test_send_returns_a_future_resolved_once_appended(log):
    log.create_topic("t", partitions=1)
    p = log.producer(linger_ms=LONG)
    futs = [p.send("t", b"v%d" % i) for i in range(20)]
    assert all(isinstance(f, pylog.FutureRecordMetadata) for f in futs)
    assert not any(f.is_done for f in futs), "sent before linger, size or flush"
    assert log.partition("t", 0).state().next_offset == 0
    p.flush()
    assert all(f.is_done and f.succeeded() and not f.failed() for f in futs)
    mds = [f.get() for f in futs]
    assert [m.offset for m in mds] == list(range(20))
    assert all(isinstance(m, pylog.RecordMetadata) and m.topic == "t" for m in mds)
    assert futs[3].value == mds[3] and futs[3].exception is None
    # one RecordBatch, not one per record (a batch header is 61 bytes)
    assert log.partition("t", 0).state().active_position < 2 * 61 + 20 * 20
    assert [r.value for r in read_all(log, "t")] == [b"v%d" % i for i in range(20)]


def test_default_producer_keeps_appending_when_send_returns(log):
    log.create_topic("t")
    p = log.producer()
    md = p.send("t", b"x")
    assert isinstance(md, pylog.RecordMetadata)
    assert log.partition("t", 0).state().next_offset == 1


def test_linger_sends_by_time(log):
    log.create_topic("t")
    p = log.producer(linger_ms=20)
    fut = p.send("t", b"x")
    assert wait_done(fut), "the linger thread did not send the batch"
    assert fut.get(timeout=0).offset == 0


def test_batch_goes_out_when_full(log):
    log.create_topic("t")
    p = log.producer(linger_ms=LONG, batch_bytes=1000)
    futs = [p.send("t", b"x" * 100) for _ in range(30)]
    # nothing waited for linger: the full batches went out during the sends
    assert futs[0].is_done and futs[0].succeeded()
    assert not futs[-1].is_done
    done = sum(f.is_done for f in futs)
    assert 5 <= done < 30
    p.flush()
    assert [f.get().offset for f in futs] == list(range(30))


def test_batch_bytes_alone_sends_without_linger(log):
    log.create_topic("t")
    p = log.producer(batch_bytes=1 << 20)         # linger_ms=0: sent asap
    fut = p.send("t", b"x")
    assert wait_done(fut)


def test_get_timeout_raises_and_the_future_stays_usable(log):
    log.create_topic("t")
    p = log.producer(linger_ms=LONG)
    fut = p.send("t", b"x")
    t0 = time.monotonic()
    with pytest.raises(pylog.SendTimeoutError):
        fut.get(timeout=0.05)
    assert time.monotonic() - t0 >= 0.05
    assert not fut.is_done
    p.flush()
    assert fut.get(timeout=0).offset == 0


def test_get_waits_for_the_linger(log):
    log.create_topic("t")
    p = log.producer(linger_ms=50)
    assert p.send("t", b"x").get(timeout=10).offset == 0


def test_callbacks_and_errbacks_run_once(log):
    log.create_topic("t", max_message_bytes=1000)
    p = log.producer(linger_ms=LONG)
    calls = []

    def note(tag, arg):
        calls.append((tag, arg))

    ok = p.send("t", b"ok")
    assert ok.add_callback(note, "cb-before") is ok
    ok.add_errback(note, "eb-ok")
    p.flush()
    ok.add_callback(note, "cb-after")                 # already done: at once
    p.flush()
    assert calls == [("cb-before", ok.get()), ("cb-after", ok.get())]
    calls.clear()
    bad = p.send("t", b"x" * 2000)
    bad.add_callback(note, "cb-bad").add_errback(note, "eb-bad")
    p.flush()
    bad.add_errback(note, "eb-late")
    p.flush()
    assert [tag for tag, _ in calls] == ["eb-bad", "eb-late"]
    assert all(isinstance(e, pylog.RecordTooLarge) for _, e in calls)


def test_a_raising_callback_does_not_break_the_producer(log):
    log.create_topic("t")
    p = log.producer(linger_ms=LONG)
    f1 = p.send("t", b"a")
    f1.add_callback(lambda md: 1 / 0)
    f2 = p.send("t", b"b")
    p.flush()
    assert f1.succeeded() and f2.get().offset == 1


def test_callbacks_may_send_and_wait_on_futures_of_the_same_drain(log):
    """Callbacks run once the whole drain is appended, outside its locks:
    one may get() another future of the drain, or send to the same
    partition until a batch fills (which drains the partition again)."""
    log.create_topic("t")
    p = log.producer(linger_ms=LONG, batch_bytes=2000)
    first = [p.send("t", b"a" * 50) for _ in range(3)]
    later = [p.send("t", b"b" * 50) for _ in range(10)]
    seen = []

    def chain(md):
        seen.append(later[-1].get(timeout=5).offset)
        seen.extend(p.send("t", b"c" * 100) for _ in range(30))

    first[0].add_callback(chain)
    p.flush()
    assert seen[0] == 12
    assert seen[1].succeeded(), "the callback's sends did not fill and drain a batch"
    p.flush()
    assert [f.get().offset for f in seen[1:]] == list(range(13, 43))


def test_record_too_large_fails_its_future_not_the_batch(log):
    log.create_topic("t", max_message_bytes=1000)
    p = log.producer(linger_ms=LONG)
    good = p.send("t", b"a")
    bad = p.send("t", b"x" * 2000)
    bad_slow = p.send("t", b"y" * 2000, headers=[("h", b"v")])
    for f in (bad, bad_slow):
        p.flush()
        assert f.is_done and f.failed() and not f.succeeded()
        assert isinstance(f.exception, pylog.RecordTooLarge)
        with pytest.raises(pylog.RecordTooLarge):
            f.get()
    assert good.get().offset == 0
    assert [r.value for r in read_all(log, "t")] == [b"a"]


def test_topic_deleted_while_lingering_fails_every_future(log):
    log.create_topic("t", partitions=2)
    p = log.producer(linger_ms=LONG)
    futs = [p.send("t", b"v%d" % i, key=b"k%d" % i) for i in range(10)]
    log.delete_topic("t")
    p.flush()
    assert all(f.is_done and f.failed() for f in futs)
    assert all(isinstance(f.exception, pylog.TopicNotFound) for f in futs)
    with pytest.raises(pylog.TopicNotFound):
        p.send("t", b"again")


def test_close_appends_what_is_pending(log):
    log.create_topic("t", partitions=3)
    p = log.producer(linger_ms=LONG)
    futs = [p.send("t", b"v%d" % i, key=b"%d" % i) for i in range(30)]
    p.close()
    assert all(f.succeeded() for f in futs)
    with pytest.raises(pylog.LogClosed):
        p.send("t", b"late")
    assert sorted(r.value for r in read_all(log, "t")) == sorted(b"v%d" % i for i in range(30))


def test_log_close_appends_what_is_pending(tmp_path):
    lg = pylog.open(tmp_path / "log")
    lg.create_topic("t")
    p = lg.producer(linger_ms=LONG)
    futs = [p.send("t", b"v%d" % i) for i in range(5)]
    lg.close()
    assert [f.get(timeout=0).offset for f in futs] == list(range(5))
    with pylog.open(tmp_path / "log") as lg:
        assert [r.value for r in read_all(lg, "t")] == [b"v%d" % i for i in range(5)]


def test_order_per_partition_from_many_threads(log):
    log.create_topic("t", partitions=4)
    p = log.producer(linger_ms=2, batch_bytes=2000)
    n_threads, per = 8, 500
    futs = {}

    def run(t):
        key = b"thread-%d" % t
        futs[t] = [p.send("t", b"%d:%d" % (t, i), key=key) for i in range(per)]

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    p.flush()
    recs = read_all(log, "t")
    assert len(recs) == n_threads * per
    by_value = {r.value: (r.partition, r.offset) for r in recs}
    for t, fs in futs.items():
        mds = [f.get(timeout=0) for f in fs]
        assert len({m.partition for m in mds}) == 1
        offsets = [m.offset for m in mds]
        assert offsets == sorted(offsets), f"thread {t}: order not kept"
        assert [by_value[b"%d:%d" % (t, i)] for i in range(per)] == \
            [(m.partition, m.offset) for m in mds]


def test_read_back_exact_records_and_headers(log):
    log.create_topic("t", partitions=2)
    p = log.producer(linger_ms=LONG, batch_bytes=700)
    now = int(time.time() * 1000)
    sent = []
    for i in range(60):
        key = None if i % 3 == 0 else b"key-%d" % (i % 7)
        value = None if i % 11 == 5 else bytes([i]) * (i % 40)
        headers = [] if i % 4 else [("h-%d" % i, b"v" * (i % 5)), ("nul", None), ("é", b"\x00")]
        ts = now - 1000 + i if i % 5 == 0 else None
        fut = p.send("t", value, key=key, headers=headers or None, timestamp_ms=ts,
                     partition=(i % 2 if i % 9 == 0 else None))
        sent.append((fut, key, value, tuple(headers), ts))
    p.flush()
    recs = {(r.partition, r.offset): r for r in read_all(log, "t")}
    assert len(recs) == len(sent)
    for fut, key, value, headers, ts in sent:
        md = fut.get(timeout=0)
        r = recs[(md.partition, md.offset)]
        assert (r.key, r.value, r.headers) == (key, value, headers)
        assert r.timestamp_ms == md.timestamp_ms
        if ts is not None:
            assert r.timestamp_ms == ts


def test_send_batch_after_pending_sends_keeps_order(log):
    log.create_topic("t")
    p = log.producer(linger_ms=LONG)
    f = p.send("t", b"first")
    mds = p.send_batch("t", [b"second", b"third"])
    assert f.get(timeout=0).offset == 0 and [m.offset for m in mds] == [1, 2]


def test_bad_linger_arguments(log):
    for kw in ({"linger_ms": -1}, {"linger_ms": "5"}, {"linger_ms": True},
               {"batch_bytes": 0}, {"batch_bytes": 1.5}, {"linger_ms": 10**9}):
        with pytest.raises(pylog.InvalidArgument):
            log.producer(**kw)


def test_sigkill_loses_lingering_records(tmp_path, child_env):
    """Documented (README, sync modes): records still lingering when the
    process dies are lost; those whose future succeeded are stored."""
    path = str(tmp_path / "log")
    with pylog.open(path) as lg:
        lg.create_topic("t")
    script = (
        "import sys, pylog\n"
        "log = pylog.open(sys.argv[1])\n"
        "p = log.producer(linger_ms=600000)\n"
        "f = p.send('t', b'stored')\n"
        "p.flush()\n"
        "assert f.succeeded()\n"
        "for i in range(10):\n"
        "    p.send('t', b'lingering')\n"
        "print('sent', flush=True)\n"
        "sys.stdin.read()\n")
    proc = start(script, path, env=child_env, stdin=subprocess.PIPE)
    try:
        expect(proc, b"sent")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with pylog.open(path) as lg:
        assert [r.value for r in read_all(lg, "t")] == [b"stored"]


def test_interpreter_exit_appends_what_lingers(tmp_path, child_env):
    path = str(tmp_path / "log")
    with pylog.open(path) as lg:
        lg.create_topic("t")
    script = (
        "import sys, pylog\n"
        "log = pylog.open(sys.argv[1])\n"
        "p = log.producer(linger_ms=600000)\n"
        "futs = [p.send('t', b'%d' % i) for i in range(5)]\n"
        "assert not any(f.is_done for f in futs)\n")
    subprocess.run([sys.executable, "-c", script, path], env=child_env, check=True,
                   timeout=60)
    with pylog.open(path) as lg:
        assert [r.value for r in read_all(lg, "t")] == [b"%d" % i for i in range(5)]


def _send_and_return(path, tag):
    log = pylog.open(path)
    p = log.producer(linger_ms=LONG)
    for i in range(5):
        p.send("t", b"%s%d" % (tag.encode(), i))
    # (returns without flush() or close(): a normal end of the process)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_multiprocessing_child_end_appends_what_lingers(tmp_path, method):
    """A multiprocessing child ends with os._exit() after its target
    returns (no atexit there): its lingering records were lost, with exit
    code 0, where a spawn child or a script appended them."""
    import multiprocessing as mp
    path = str(tmp_path / "log")
    with pylog.open(path) as lg:
        lg.create_topic("t")
    child = mp.get_context(method).Process(target=_send_and_return, args=(path, method))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    with pylog.open(path) as lg:
        assert [r.value for r in read_all(lg, "t")] == [b"%s%d" % (method.encode(), i)
                                                        for i in range(5)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_fails_inherited_futures_parent_appends_them(log):
    log.create_topic("t")
    p = log.producer(linger_ms=LONG)
    fut = p.send("t", b"parent")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                      # the child
        code = 1
        try:
            ok = fut.is_done and isinstance(fut.exception, pylog.ForkedLogError)
            again = p.send("t", b"child")             # the child's own send works
            p.flush()
            code = 0 if ok and again.succeeded() else 2
        finally:
            os.write(w, b"%d" % code)
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = os.read(r, 10)
    os.close(r)
    assert got == b"0" and os.WEXITSTATUS(status) == 0
    assert not fut.is_done
    p.flush()
    assert fut.succeeded()
    assert sorted(r.value for r in read_all(log, "t")) == [b"child", b"parent"]


def test_plain_send_with_headers_reads_back_exact(log):
    """send(headers=[(str, bytes)]) takes the one-call native append once
    the route is warm; every shape reads back exactly."""
    log.create_topic("t")
    p = log.producer()
    p.send("t", b"warm")
    shapes = [[("h", b"v")], [("h", b"")], [("é-ü", b"\x00\xff")], [("k", None)],
              [("a", b"1"), ("b", b"2")], (("t", b"tuple"),), {"m": b"map"}, []]
    mds = [p.send("t", b"x%d" % i, key=b"k" if i % 2 else None, headers=h)
           for i, h in enumerate(shapes)]
    recs = read_all(log, "t")[1:]
    assert [r.offset for r in recs] == [m.offset for m in mds]
    want = [tuple(h.items()) if isinstance(h, dict) else tuple(h) for h in shapes]
    assert [r.headers for r in recs] == want
    assert [r.key for r in recs] == [b"k" if i % 2 else None for i in range(len(shapes))]
    # a key UTF-8 cannot store (a lone surrogate) leaked UnicodeEncodeError
    surrogate = [("\ud800", b"v")]
    for bad in ([(b"k", b"v")], [("k", "v")], [("k",)], ["kv"], surrogate,
                [("a", b"1"), ("\udc00", b"2")]):
        with pytest.raises(pylog.InvalidArgument):
            p.send("t", b"x", headers=bad)
    with pytest.raises(pylog.InvalidArgument, match="UTF-8"):
        p.send_batch("t", [(None, b"x", surrogate)])
    assert log.partition("t", 0).state().next_offset == len(shapes) + 1


def test_headers_fast_path_checks_the_size_limit(log):
    log.create_topic("t", max_message_bytes=1000)
    p = log.producer()
    p.send("t", b"warm")
    with pytest.raises(pylog.RecordTooLarge):
        p.send("t", b"x" * 500, headers=[("h", b"y" * 600)])
    p.send("t", b"x" * 400, headers=[("h", b"y" * 400)])


def test_serializers_and_a_compressed_topic(log):
    log.create_topic("z", compression="zstd")
    p = log.producer(linger_ms=LONG, key_serializer=str.encode,
                     value_serializer=lambda v: repr(v).encode())
    futs = [p.send("z", {"n": i}, key="k%d" % i) for i in range(50)]
    p.flush()
    assert [f.get().offset for f in futs] == list(range(50))
    recs = read_all(log, "z")
    assert [(r.key, r.value) for r in recs] == \
        [(b"k%d" % i, repr({"n": i}).encode()) for i in range(50)]


def test_sync_always_batches_resolve_from_many_threads(tmp_path):
    """In sync="always" a batch's append returns after its (group-committed)
    fdatasync; futures of batches drained by the sender and by sending
    threads all resolve."""
    with pylog.open(tmp_path / "log", sync="always") as lg:
        lg.create_topic("t", partitions=2)
        p = lg.producer(linger_ms=5, batch_bytes=500)
        futs = []

        def run(t):
            futs.extend(p.send("t", b"%d-%d" % (t, i), key=b"%d" % t) for i in range(100))

        threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        mds = [f.get(timeout=30) for f in futs]
        assert len({(m.partition, m.offset) for m in mds}) == 400


def test_a_batch_keeps_each_records_timestamp(log):
    """A batch without headers goes through the native columns append with
    one timestamp per record (pl_append_columns_ts): each reads back as
    sent, the batch's max timestamp feeds the time index."""
    log.create_topic("t")
    p = log.producer(linger_ms=LONG)
    now = int(time.time() * 1000)
    stamps = [now - 50_000 + 997 * ((i * 7) % 50) for i in range(50)]   # not sorted
    # (every key set, then every key null: each batch takes the columns path)
    futs = [p.send("t", b"%d" % i, key=b"k", timestamp_ms=ts)
            for i, ts in enumerate(stamps)]
    p.flush()
    futs_keyless = [p.send("t", b"x", timestamp_ms=now) for _ in range(3)]
    p.flush()
    assert [f.get().timestamp_ms for f in futs] == stamps
    recs = read_all(log, "t")
    assert [r.timestamp_ms for r in recs] == stamps + [now] * 3
    assert [r.offset for r in recs] == list(range(53))
    assert all(f.succeeded() for f in futs_keyless)
    part = log.partition("t", 0)
    assert part.offset_for_time(max(stamps)) <= stamps.index(max(stamps))


@pytest.mark.parametrize("headers", [None, [("h", b"")]])
def test_a_lingering_batch_is_sealed_at_the_items_bound(log, monkeypatch, headers):
    # B-7 bounds records plus headers per batch: sends that each fit must
    # go out as several batches, not one the append refuses with every
    # future failed ("split it", which a caller of send cannot do)
    monkeypatch.setattr(pylog._native, "BATCH_ITEMS_MAX", 100)
    log.create_topic("t", partitions=1, max_message_bytes=1 << 20)
    p = log.producer(linger_ms=LONG, batch_bytes=1 << 20)
    futs = [p.send("t", b"x", headers=headers) for _ in range(150)]
    p.flush()
    assert [f.get(timeout=5).offset for f in futs] == list(range(150))
    assert [r[3] for r in log.partition("t", 0).fetch(pylog.partition.Cursor(0), 200)] \
        == [b"x"] * 150
    p.close()
