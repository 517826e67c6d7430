"""README "Consuming" and its "Commit rules": the calls as printed, the
futex wait, and at-least-once delivery tried with a handler that raises,
Ctrl-C (a real SIGINT to a real process), SystemExit, SIGKILL, a record
the deserializer refuses and retention overtaking a group."""

import json
import logging
import os
import signal
import threading
import time

import pytest
from promisekit import Child, read_all, run_child

import pylog
from pylog import TopicPartition as TP

T0 = TP("t", 0)


def fill(log, n, topic="t", partitions=1):
    log.create_topic(topic, partitions=partitions, exist_ok=True)
    p = log.producer()
    p.send_batch(topic, [b"%d" % i for i in range(n)], partition=0)
    return p


def committed(path, group="g"):
    with pylog.open(path) as log:
        return {(p["topic"], p["partition"]): p["committed"]
                for p in log.describe_group(group)["partitions"]}


def restart_first_offset(path, group="g"):
    """Where a restarted member of ``group`` starts reading t-0."""
    with pylog.open(path) as log:
        with log.consumer("t", group_id=group, auto_offset_reset="earliest") as c:
            recs = c.poll(timeout=2.0)
            assert recs, "a restarted consumer got nothing"
            return recs[0].offset


def test_consumer_calls_as_printed(fastlog):
    """consumer = log.consumer("clicks", group_id="reports",
                            auto_offset_reset="earliest",   # | "latest" | "none"
                            enable_auto_commit=True, auto_commit_interval_ms=5000,
                            session_timeout_ms=10000)
    records = consumer.poll(timeout=1.0, max_records=500)   # list[pylog.Record]
    values = consumer.poll_values(timeout=1.0)              # just the values: faster"""
    fastlog.create_topic("clicks", partitions=2)
    fastlog.producer().send_batch("clicks", [(b"k%d" % i, b"v%d" % i) for i in range(700)])
    consumer = fastlog.consumer("clicks", group_id="reports",
                                auto_offset_reset="earliest",
                                enable_auto_commit=True, auto_commit_interval_ms=5000,
                                session_timeout_ms=10000)
    records = consumer.poll(timeout=1.0, max_records=500)
    assert type(records) is list and len(records) == 500
    assert all(type(r) is pylog.Record for r in records)
    values = consumer.poll_values(timeout=1.0)
    assert len(values) == 200 and all(type(v) is bytes for v in values)
    assert sorted([r.value for r in records] + values) == sorted(b"v%d" % i for i in range(700))
    consumer.close()


def test_for_loop_blocks_and_ends_when_closed(fastlog):
    """for record in consumer:          # blocks; ends when close() is called

    The loop runs in a thread and waits while there is nothing to read;
    close() from another thread ends it."""
    fill(fastlog, 3)
    c = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest")
    got = []
    t = threading.Thread(target=lambda: got.extend(r.offset for r in c), daemon=True)
    t.start()
    time.sleep(0.8)
    assert t.is_alive() and got == [0, 1, 2]
    fastlog.producer().send("t", b"late", partition=0)
    deadline = time.monotonic() + 5
    while got != [0, 1, 2, 3] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [0, 1, 2, 3]
    c.close()
    t.join(timeout=3)
    assert not t.is_alive(), "the for loop did not end on close()"


def test_run_commits_after_the_handler_returns(fastlog):
    """consumer.run(handler)            # handler(record); commits after it returns

    While the handler runs on a record, that record is not committed, the
    ones whose handler returned are (per record here; per batch below)."""
    fill(fastlog, 10)
    c = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest")
    seen = []

    class Enough(Exception):
        pass

    def handler(r):
        if r.offset == 5:
            raise Enough()
        seen.append((r.offset, c.committed(T0)))

    with pytest.raises(Enough):
        c.run(handler, commit_every="record")
    assert seen == [(0, None), (1, 1), (2, 2), (3, 3), (4, 4)]
    assert c.committed(T0) == 5
    c.close()


def test_close_from_another_thread_during_run_commits_only_finished(fastlog):
    """the commit made when a rebalance moves a
    partition away, and ``close()`` commit finished records only.

    A shutdown path a user writes: run(handler, commit_every="record") in
    one thread, close() from another while the handler is busy with record
    2 of a batch of 10. Records 3..9 were never handled: close() must not
    commit them."""
    fill(fastlog, 10)
    c = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest")
    handled = []
    closed = []

    def handler(r):
        if r.offset == 2:
            closer = threading.Thread(target=c.close)
            closer.start()
            closer.join(timeout=5)
            closed.append(True)
        handled.append(r.offset)
        if closed:
            raise SystemExit        # the application stops with its consumer

    t = threading.Thread(target=lambda: _quietly(c.run, handler, commit_every="record"))
    t.start()
    t.join(timeout=10)
    assert handled == [0, 1, 2]
    with fastlog.consumer("t", group_id="g") as c2:
        assert c2.committed(T0) <= 3, \
            f"committed {c2.committed(T0)} after handling only {handled}"


def _quietly(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except (SystemExit, pylog.LogClosed):
        pass


IDLE = r"""
import os, sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
kw = dict(group_id="g") if sys.argv[2] == "group" else {}
c = log.consumer("t", auto_offset_reset="latest", **kw)
c.poll(timeout=0.2)
print("waiting", flush=True)
recs = c.poll(timeout=30)
print("woke", time.time(), [r.value.decode() for r in recs], flush=True)
"""


def _cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("kind", ["plain", "group"])
def test_blocked_poll_uses_no_cpu_and_wakes_at_once(tmp_path, child_env, kind):
    """A consumer blocked in ``poll`` sleeps on a futex in a shared file and wakes as
    soon as any process appends: idle consumers use no CPU.

    A consumer process blocked in poll(timeout=30) for 1 s: under 5% of a
    CPU (a group member still heartbeats). Then another process appends: the
    poll returns within half a second, with the record."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        log.create_topic("t")
    with Child(IDLE, path, kind, env=child_env) as c:
        c.expect("waiting")
        time.sleep(0.2)
        cpu0 = _cpu_s(c.pid)
        time.sleep(1.0)
        idle = _cpu_s(c.pid) - cpu0
        assert idle < 0.05, f"an idle consumer used {idle:.3f} s of CPU in 1 s"
        sent = time.time()
        run_child("""
            import sys, pylog
            with pylog.open(sys.argv[1], sync="never") as log:
                log.producer().send("t", b"ding")
        """, path, env=child_env)
        line = c.expect("woke", timeout=10)
        woke = float(line.split()[1])
        assert line.endswith("['ding']")
        # (the appending process's own start-up is not counted: sent is
        # taken before it, so this bound is generous)
        assert woke - sent < 2.0
        assert c.finish() == 0


# -- commit rules -----------------------------------------------------------------

LOOP = r"""
import os, sys, time, pylog
path, mode, how = sys.argv[1], sys.argv[2], sys.argv[3]
log = pylog.open(path, sync="never")
def work(r):
    print("R", r.offset, flush=True)
    if r.offset == 24:
        if how == "exception":
            raise RuntimeError("the handler failed")
        if how == "exit":
            sys.exit(3)
        time.sleep(30)            # SIGINT / SIGKILL land here
with log.consumer("t", group_id="g", auto_offset_reset="earliest",
                  auto_commit_interval_ms=1, max_poll_records=10) as c:
    if mode == "for":
        for r in c:
            work(r)
    elif mode == "run":
        c.run(work)
    else:
        while True:
            for r in c.poll(timeout=0.5):
                work(r)
"""

# record 24 of the third batch (20..29) is being processed when the process
# is interrupted: what each loop style counts as finished (README)
UNFINISHED = {"for": 24, "run": 24, "poll": 20}


@pytest.mark.parametrize("how", ["sigint", "exception", "exit", "sigkill"])
@pytest.mark.parametrize("mode", ["poll", "for", "run"])
def test_interrupted_consumer_redelivers_what_it_had_not_finished(tmp_path, child_env,
                                                                 mode, how):
    """Delivery is at least once: a record is committed only after the
    application is done with it, so a crash, Ctrl-C or an exception redelivers
    it rather than losing it.

    A consumer process in each loop style (plain poll(), ``for record in
    consumer``, ``run(handler)``) is stopped while it handles record 24 (of
    the batch 20..29): by Ctrl-C (a real SIGINT), by an exception or
    sys.exit() out of its ``with`` block, or by SIGKILL. The group's
    committed offset then never passes record 24, nor (but for a crash,
    which cannot commit at all) stops short of what the loop had finished,
    and a restarted consumer starts there: nothing lost."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        fill(log, 40)
    with Child(LOOP, path, mode, how, env=child_env) as c:
        c.expect("R 24")
        if how == "sigint":
            time.sleep(0.1)
            c.send_signal(signal.SIGINT)
        elif how == "sigkill":
            c.send_signal(signal.SIGKILL)
        rc = c.finish()
        assert rc != 0
        if how == "sigint":
            assert "KeyboardInterrupt" in c.stderr()
    got = committed(path).get(("t", 0))
    if how == "sigkill":
        # the last auto-commit, if its interval had passed at one of the
        # polls before (or run's commit after the batch 10..19): never past
        # the batch being handled
        assert got is None or got <= 20 if mode != "run" else got == 20, got
    else:
        assert got == UNFINISHED[mode], f"committed {got}, expected {UNFINISHED[mode]}"
    assert restart_first_offset(path) == (got or 0)


def test_auto_commit_commits_finished_records_every_interval(fastlog):
    """**Auto-commit** (``enable_auto_commit=True``, every
    ``auto_commit_interval_ms``)

    With an interval of 200 ms the group's offset advances by itself, to
    the end of what the application finished (the batches before the last
    poll), never to what the last poll only handed over."""
    fill(fastlog, 100)
    c = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest",
                         auto_commit_interval_ms=200, max_poll_records=10)
    c.poll()                                          # 0..9
    assert c.committed(T0) is None
    time.sleep(0.25)
    c.poll()                                          # 10..19; 0..9 finished
    assert c.committed(T0) == 10
    c.poll()                                          # 20..29, within the interval
    assert c.committed(T0) == 10
    time.sleep(0.25)
    c.poll(timeout=0)                                 # 30..39
    assert c.committed(T0) == 30
    c.close()                                         # 30..39 were only handed
    with fastlog.consumer("t", group_id="g") as c2:
        assert c2.committed(T0) == 30


def test_plain_poll_loop_last_batch_comes_again_unless_committed(fastlog):
    """So the last batch a plain ``poll()`` loop got is delivered again after a
    restart unless you ``commit()`` it before ``close()``."""
    fill(fastlog, 30)
    with fastlog.consumer("t", group_id="a", auto_offset_reset="earliest",
                          max_poll_records=10) as c:
        c.poll()
        c.poll()                     # 10..19 handed, never finished
    with fastlog.consumer("t", group_id="a", auto_offset_reset="earliest") as c:
        assert c.poll(timeout=1)[0].offset == 10
    with fastlog.consumer("t", group_id="b", auto_offset_reset="earliest",
                          max_poll_records=10) as c:
        c.poll()
        c.poll()
        c.commit()
    with fastlog.consumer("t", group_id="b", auto_offset_reset="earliest") as c:
        assert c.poll(timeout=1)[0].offset == 20


def test_commit_without_arguments_and_with_offsets(fastlog):
    """``commit()`` without arguments commits everything ``poll()`` returned (in
    a ``for`` loop: up to the current record); ``commit({tp: offset})``
    commits exactly that (the next offset to read)."""
    fill(fastlog, 50, partitions=2)
    p = fastlog.producer()
    p.send_batch("t", [b"p1-%d" % i for i in range(20)], partition=1)
    c = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False)
    got = c.poll(timeout=1, max_records=1000)
    assert len(got) == 70
    c.commit()
    assert (c.committed(T0), c.committed(TP("t", 1))) == (50, 20)
    c.commit({T0: 7})
    assert (c.committed(T0), c.committed(TP("t", 1))) == (7, 20)
    c.close()
    with fastlog.consumer("t", group_id="g", auto_offset_reset="earliest") as c:
        assert c.poll(timeout=1)[0].offset == 7
    # in a for loop: up to the current record
    with fastlog.consumer("t", group_id="f", auto_offset_reset="earliest",
                          enable_auto_commit=False) as c:
        for r in c:
            if r.partition == 0 and r.offset == 12:
                c.commit()
                break
        assert c.committed(T0) == 13


def _kill_self_at(offset):
    return f"""
import os, sys, signal, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.consumer("t", group_id="g", auto_offset_reset="earliest", max_poll_records=10)
def handler(r):
    if r.offset == {offset}:
        os.kill(os.getpid(), signal.SIGKILL)     # the process dies in the handler
c.run(handler, commit_every=sys.argv[2])
"""


@pytest.mark.parametrize("every,want", [("batch", 20), ("record", 24)])
def test_run_commits_after_every_batch_or_every_record(tmp_path, child_env, every, want):
    """``run(handler)`` commits what its handler finished (after every batch, or
    every record with ``commit_every="record"``).

    The process is SIGKILLed inside the handler of record 24: the commit
    made before is the end of the last whole batch (20), or, per record,
    the record before (24), and a restart goes on from there."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        fill(log, 40)
    with Child(_kill_self_at(24), path, every, env=child_env) as c:
        assert c.finish() == -signal.SIGKILL
    assert committed(path)[("t", 0)] == want
    assert restart_first_offset(path) == want


def test_handler_that_raises_is_redelivered(fastlog):
    """A handler that raises ends
    ``run`` with its exception: the records before it are committed, its own
    record is not, and it is delivered again (the same consumer's next poll
    starts there, as does a restart)."""
    fill(fastlog, 30)
    calls = []

    def handler(r):
        calls.append(r.offset)
        if r.offset == 13 and calls.count(13) == 1:
            raise ValueError("transient failure")

    c = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest",
                         max_poll_records=10)
    with pytest.raises(ValueError, match="transient"):
        c.run(handler)
    assert calls[-1] == 13 and c.committed(T0) == 13
    assert c.poll(timeout=1)[0].offset == 13            # the same consumer
    c.close(autocommit=False)
    with fastlog.consumer("t", group_id="g") as c2:     # a restart
        assert c2.poll(timeout=1)[0].offset == 13


@pytest.mark.parametrize("leave", ["break", "exception"])
def test_for_loop_left_puts_the_position_back(fastlog, leave):
    """A ``for`` loop left by ``break`` or an exception puts the position back
    on the record it was on"""
    fill(fastlog, 30)
    c = fastlog.consumer("t", group_id="g", auto_offset_reset="earliest",
                         max_poll_records=10)
    with pytest.raises(KeyError) if leave == "exception" else _nothing():
        for r in c:
            if r.offset == 14:
                if leave == "break":
                    break
                raise KeyError("in the loop body")
    assert c.position(T0) == 14
    assert c.poll(timeout=1)[0].offset == 14
    c.close()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


POLL_SIGINT = r"""
import os, sys, traceback, pylog
log = pylog.open(sys.argv[1], sync="never")
tp = pylog.TopicPartition("t", 0)
c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                 enable_auto_commit=False)
batches = []
try:
    print("go", flush=True)       # (inside the try: a SIGINT right after it is caught)
    while True:
        batches.append(c.poll(timeout=1.0, max_records=2000))
        if not batches[-1]:
            print("drained", flush=True)
            break
except KeyboardInterrupt as exc:
    frames = [f.filename for f in traceback.extract_tb(exc.__traceback__)]
    inside = any("pylog" in f for f in frames[1:])
    seen = sum(len(b) for b in batches)
    print("interrupted", "inside" if inside else "outside", seen, c.position(tp),
          c.committed(tp), flush=True)
"""


def test_poll_interrupted_by_ctrl_c_returns_nothing_and_moves_nothing(tmp_path, child_env):
    """a ``poll()`` interrupted by Ctrl-C returns nothing and moves nothing.

    A consumer process polls big batches of a long partition and gets a
    real SIGINT at a random moment. When the KeyboardInterrupt came out of
    poll (its traceback goes into pylog), the position is exactly after the
    records the application got; the interrupted poll moved nothing. Tried
    until it lands inside poll five times (or 40 tries)."""
    path = tmp_path / "log"
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", segment_bytes=1 << 20)
        p = log.producer()
        for i in range(100):
            p.send_batch("t", [b"%d.%d" % (i, j) + b"." * 200 for j in range(2000)],
                         partition=0)
    import random
    rng = random.Random(12)
    inside = 0
    for attempt in range(40):
        with Child(POLL_SIGINT, path, env=child_env) as c:
            c.expect("go")
            time.sleep(rng.uniform(0.02, 0.3))
            c.send_signal(signal.SIGINT)
            rc = c.finish()
            line = [ln for ln in c.lines if ln.startswith(("interrupted", "drained"))]
            assert rc == 0 and line, c.stderr()
        if line[0] == "drained":
            continue
        _, where, seen, pos, com = line[0].split()
        assert com == "None"
        if where == "inside":
            inside += 1
            assert int(pos) == int(seen), \
                f"the interrupted poll moved the position: {pos} after {seen} records returned"
            if inside == 5:
                break
    assert inside >= 3, "SIGINT never landed inside poll"


# -- deserializers ------------------------------------------------------------------

def _json_topic(log):
    log.create_topic("clicks", exist_ok=True)
    p = log.producer()
    for i in range(10):
        p.send("clicks", b"not json {" if i == 6 else json.dumps({"n": i}).encode(),
               key=b"k%d" % i, headers=[("src", b"web")])


def test_refused_record_stops_its_partition(fastlog):
    """A record the ``value_deserializer`` or ``key_deserializer`` raises on stops
    its partition there: ``poll`` first returns the good records before it,
    then raises ``DeserializationError`` (a ``PylogError``) with ``.topic``,
    ``.partition``, ``.offset`` and the raw ``.record``; the position stays on
    the record. Skip it with ``consumer.seek(tp, err.offset + 1)``"""
    _json_topic(fastlog)
    c = fastlog.consumer("clicks", group_id="reports", auto_offset_reset="earliest",
                         value_deserializer=json.loads)
    tp = TP("clicks", 0)
    good = c.poll(timeout=1)
    assert [r.value for r in good] == [{"n": i} for i in range(6)]
    for _ in range(2):                      # it stays there
        with pytest.raises(pylog.DeserializationError) as ei:
            c.poll(timeout=1)
        err = ei.value
        assert isinstance(err, pylog.PylogError) and isinstance(err, ValueError)
        assert (err.topic, err.partition, err.offset) == ("clicks", 0, 6)
        assert err.record.value == b"not json {" and err.record.key == b"k6"
        assert err.record.headers == (("src", b"web"),)
        assert c.position(tp) == 6
    c.close()
    with fastlog.consumer("clicks", group_id="reports",          # a restart: the same
                          value_deserializer=json.loads) as c:
        with pytest.raises(pylog.DeserializationError):
            c.poll(timeout=1)
        c.seek(tp, err.offset + 1)
        assert [r.value for r in c.poll(timeout=1)] == [{"n": i} for i in range(7, 10)]
    with fastlog.consumer("clicks", group_id="keys", auto_offset_reset="earliest",
                          key_deserializer=lambda k: int(k[1:]) if k != b"k3" else 1 / 0) as c:
        assert [r.key for r in c.poll(timeout=1)] == [0, 1, 2]
        with pytest.raises(pylog.DeserializationError) as ei:
            c.poll(timeout=1)
        assert ei.value.offset == 3


def test_dead_letter_topic_takes_refused_records(tmp_path):
    """or route
    such records to a dead-letter topic, with headers saying where they came
    from and why, and go on::

    The refused record lands in the dead-letter topic as stored (key, value,
    headers), plus where it came from and why; the group goes on past it,
    and after a restart neither it nor any other record comes again."""
    path = tmp_path / "log"
    with pylog.open(path) as log:
        _json_topic(log)
        consumer = log.consumer("clicks", group_id="reports", auto_offset_reset="earliest",
                                value_deserializer=json.loads,
                                dead_letter_topic="clicks.dlq")
        got = []
        while batch := consumer.poll(timeout=0.5):
            got.extend(batch)
        assert [r.value["n"] for r in got] == [0, 1, 2, 3, 4, 5, 7, 8, 9]
        consumer.close()
    with pylog.open(path) as log:
        (dead,) = read_all(log, "clicks.dlq")
        assert (dead.key, dead.value) == (b"k6", b"not json {")
        h = dict(dead.headers)
        assert h["src"] == b"web"
        assert b"clicks" in b" ".join(v for k, v in dead.headers if k != "src")
        where = {k: v for k, v in dead.headers if k != "src"}
        assert b"6" in where.values() and b"0" in where.values(), where
        assert any(b"JSONDecodeError" in v or b"Expecting" in v for v in where.values())
        with log.consumer("clicks", group_id="reports", value_deserializer=json.loads,
                          dead_letter_topic="clicks.dlq") as c:
            assert c.poll(timeout=0.5) == []


def test_retention_overtaking_a_group_resumes_at_first_retained(fastlog, caplog):
    """If retention deletes records before a group reads them, the group resumes
    at the first retained record (whatever ``auto_offset_reset`` says, except
    ``"none"``, which raises ``OffsetOutOfRange``), logs a warning through the
    ``logging`` module (logger ``"pylog"``) and counts it:
    ``describe_group(g)["retention_resets"]`` and
    ``["records_skipped_by_retention"]``."""
    fastlog.create_topic("t", segment_bytes=65536, retention_ms=-1)
    p = fastlog.producer()
    for i in range(3000):
        p.send("t", b"x" * 200)
    for g in ("latest", "earliest", "none"):
        with fastlog.consumer("t", group_id=g, auto_offset_reset="earliest") as c:
            c.poll(timeout=1, max_records=10)
            c.commit()
    fastlog.alter_topic("t", retention_bytes=100_000)
    fastlog.enforce_retention()
    start = fastlog.describe_topic("t").partition_info[0].start_offset
    assert start > 10
    for policy in ("latest", "earliest"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pylog"):
            with fastlog.consumer("t", group_id=policy, auto_offset_reset=policy) as c:
                assert c.poll(timeout=1)[0].offset == start
        assert any(r.name == "pylog" and r.levelno == logging.WARNING
                   for r in caplog.records), "no warning on logger 'pylog'"
        d = fastlog.describe_group(policy)
        assert d["retention_resets"] == 1
        assert d["records_skipped_by_retention"] == start - 10
    with fastlog.consumer("t", group_id="none", auto_offset_reset="none") as c:
        with pytest.raises(pylog.OffsetOutOfRange):
            c.poll(timeout=1)


def test_commit_before_the_first_poll(fastlog):
    """``commit({tp: offset})``
    commits exactly that (the next offset to read).

    The first thing a new group consumer does is commit an offset (to
    start a group somewhere, as ``seek`` works right away): it is stored,
    and a restart of the group begins there."""
    fill(fastlog, 30)
    with fastlog.consumer("t", group_id="g", enable_auto_commit=False) as c:
        c.commit({T0: 17})
        assert c.committed(T0) == 17
    with fastlog.consumer("t", group_id="g") as c:
        assert c.poll(timeout=1)[0].offset == 17
