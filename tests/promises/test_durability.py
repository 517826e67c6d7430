"""README "Guarantees", durability: each sync mode's promise against
crashes and power loss, and recovery of what a crash left, each tried the
way a user would break it."""

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from promisekit import (
    REPO_ROOT,
    Child,
    acked_of,
    lose_power,
    parse_batches,
    read_all,
    run_child,
    segments,
    shim_env,
)

import pylog
from pylog import TopicPartition as TP

# A child that sends records and prints "A partition offset value" after each
# send returned, forever (until killed).
SENDER = r"""
import sys, pylog
path, sync = sys.argv[1], sys.argv[2]
log = pylog.open(path, sync=sync)
log.create_topic("t", partitions=2, exist_ok=True, segment_bytes=65536)
producer = log.producer()
print("ready", flush=True)
i = 0
while True:
    if i % 3 == 2:
        vals = [b"b%d.%d" % (i, j) for j in range(4)]
        mds = producer.send_batch("t", vals, partition=i % 2)
    else:
        vals = [b"s%d" % i + b"." * (i % 500)]
        mds = [producer.send("t", vals[0], key=b"k%d" % i)]
    for md, v in zip(mds, vals):
        print("A", md.partition, md.offset, v.decode(), flush=True)
    i += 1
"""



def check_acked_present(path, acked):
    with pylog.open(path) as log:
        got = {(r.partition, r.offset): r.value for r in read_all(log, "t")}
        lost = [k for k, v in acked.items() if got.get(k) != v]
        assert not lost, f"{len(lost)} acknowledged records lost or changed: {lost[:5]}"
        for p in (0, 1):    # offsets have no holes
            offs = sorted(o for q, o in got if q == p)
            assert offs == list(range(len(offs)))


# -- sync modes ------------------------------------------------------------------

def test_default_sync_is_always(tmp_path):
    """``"always"`` (the default)"""
    with pylog.open(tmp_path / "log") as log:
        assert log.sync == "always"


def _strace_send(tmp_path, child_env, sync, threads=1, sends=3):
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    code = r"""
import os, sys, threading, pylog
path, sync, nthreads, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
log = pylog.open(path, sync=sync)
log.create_topic("t", exist_ok=True)
producer = log.producer()
producer.send("t", b"warm-up")
os.write(1, b"START\n")
def sender(t):
    for i in range(n):
        producer.send("t", b"%d.%d" % (t, i))
        if nthreads == 1:
            os.write(1, b"ACK\n")
ts = [threading.Thread(target=sender, args=(t,)) for t in range(nthreads)]
[t.start() for t in ts]
[t.join() for t in ts]
os.write(1, b"END\n")
log.close()
"""
    trace = tmp_path / "trace.txt"
    subprocess.run([strace, "-f", "-qq", "-e", "trace=fdatasync,fsync,write", "-o", str(trace),
                    sys.executable, "-c", code, str(tmp_path / "log"), sync,
                    str(threads), str(sends)],
                   env=child_env, check=True, timeout=120, capture_output=True)
    events = []
    for ln in trace.read_text().splitlines():
        if re.search(r"\b(fdatasync|fsync)\(", ln) and "= 0" in ln:
            events.append("SYNC")
        else:
            m = re.search(r'write\(1, "(START|ACK|END)\\n"', ln)
            if m:
                events.append(m.group(1))
    return events[events.index("START"):events.index("END") + 1]


@pytest.mark.parametrize("sync", ["always", "never"])
def test_always_send_returns_after_fdatasync(tmp_path, child_env, sync):
    """``send`` returns after ``fdatasync`` of the data

    strace of a real child: between two acknowledgements printed right after
    ``send`` returned there is a successful fdatasync in ``"always"`` mode
    (and, as the control that shows the test can see a difference, none in
    ``"never"`` mode)."""
    events = _strace_send(tmp_path, child_env, sync)
    gaps = "".join("S" if e == "SYNC" else "|" for e in events[1:])
    segments_ = gaps.split("|")[:3]          # before each of the 3 ACKs
    if sync == "always":
        assert all("S" in s for s in segments_), events
    else:
        assert not any("S" in s for s in segments_), events


def test_concurrent_senders_share_one_fsync(tmp_path, child_env):
    """(concurrent senders share one fsync: group commit)

    16 threads of one process send 25 records each through one producer in
    ``"always"`` mode: far fewer fdatasyncs than sends."""
    events = _strace_send(tmp_path, child_env, "always", threads=16, sends=25)
    syncs = events.count("SYNC")
    # (one fsync per send would be 400; strace slows each one down, so
    # fewer senders pile up behind it than without it)
    assert syncs < 0.85 * 16 * 25, f"{syncs} fsyncs for {16 * 25} sends"


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_every_mode_survives_a_process_crash(tmp_path, child_env, sync):
    """Survives a process crash

    (said of all three modes) A child prints each acknowledgement after the
    call returned and is SIGKILLed while sending: every acknowledged record
    is there after reopening, at its offset."""
    path = tmp_path / "log"
    with Child(SENDER, path, sync, env=child_env) as c:
        c.expect("ready")
        for _ in range(60 if sync == "always" else 400):
            c.expect("A ")
        c.send_signal(signal.SIGKILL)
        c.finish()
        acked = acked_of(c.lines)
    check_acked_present(path, acked)


def _power_loss_child(tmp_path, shim, child_env, code, *args, until, timeout=30):
    path, shadow = tmp_path / "log", tmp_path / "shadow"
    os.makedirs(shadow)
    with Child(code, path, *args, env=shim_env(child_env, shim, path, shadow)) as c:
        c.expect(until, timeout)
        c.send_signal(signal.SIGKILL)
        c.finish()
        lines = c.lines
    lose_power(path, shadow)
    return path, lines


def test_always_survives_power_loss(tmp_path, shim, child_env):
    """Survives a process crash and a power loss: every acknowledged record.

    (``"always"``) A child under the power-loss shim sends and is SIGKILLed;
    every file is then cut back to what its last fsync stored."""
    # "go" from the sending loop itself: printed from a timer thread it
    # could land inside an ack line and never be seen
    code = SENDER.replace("i = 0\nwhile True:\n",
                          "import time\nt0 = time.monotonic()\ngo = False\n"
                          "i = 0\nwhile True:\n"
                          "    if not go and time.monotonic() - t0 > 0.7:\n"
                          "        print('go', flush=True)\n"
                          "        go = True\n")
    assert code != SENDER
    path, lines = _power_loss_child(tmp_path, shim, child_env, code, "always", until="go")
    acked = acked_of(lines)
    assert len(acked) > 10
    check_acked_present(path, acked)


INTERVAL_CHILD = r"""
import sys, time, pylog
path = sys.argv[1]
log = pylog.open(path, sync="interval", sync_interval_ms=200)
log.create_topic("t", partitions=2, exist_ok=True)
p = log.producer()
for i in range(50):
    md = p.send("t", b"early%d" % i, partition=0)
    print("A", md.partition, md.offset, "early%d" % i, flush=True)
time.sleep(0.8)            # four intervals
print("waited", flush=True)
i = 0
while True:
    p.send("t", b"late%d" % i, partition=1)
    i += 1
"""


def test_interval_power_loss_loses_at_most_the_last_interval(tmp_path, shim, child_env):
    """a background flush runs every ``sync_interval_ms`` (default 1000).
    Survives a process crash; a power loss can lose the last interval.

    Records sent four intervals before the power loss must all be there."""
    path, lines = _power_loss_child(tmp_path, shim, child_env, INTERVAL_CHILD, until="waited")
    acked = acked_of(lines)
    assert len(acked) == 50
    with pylog.open(path) as log:
        got = {(r.partition, r.offset): r.value for r in read_all(log, "t", 0)}
    assert {k: got.get(k) for k in acked} == acked


FLUSH_CHILD = r"""
import sys, time, pylog
path, sync = sys.argv[1], sys.argv[2]
log = pylog.open(path, sync=sync, sync_interval_ms=3_600_000)
log.create_topic("t", partitions=2, exist_ok=True)
p = log.producer()
for i in range(300):
    md = p.send("t", b"v%d" % i, key=b"%d" % i)
    print("A", md.partition, md.offset, "v%d" % i)
p.flush()
print("flushed", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("sync", ["never", "interval"])
def test_producer_flush_makes_everything_durable(tmp_path, shim, child_env, sync):
    """``producer.flush()`` returns when everything that producer sent is on disk,
    in every mode.

    A child sends in a mode that does not sync (interval of an hour), calls
    flush(), and then loses power: everything it sent is there."""
    path, lines = _power_loss_child(tmp_path, shim, child_env, FLUSH_CHILD, sync,
                                    until="flushed")
    acked = acked_of(lines)
    assert len(acked) == 300
    check_acked_present(path, acked)


COMMIT_CHILD = r"""
import sys, time, pylog
path = sys.argv[1]
log = pylog.open(path, sync="never")
log.create_topic("t", exist_ok=True)
p = log.producer()
for i in range(200):
    p.send("t", b"v%d" % i)
c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                 enable_auto_commit=False)
n = 0
while n < 200:
    n += len(c.poll(timeout=1.0))
    c.commit()
print("committed", c.committed(pylog.TopicPartition("t", 0)), flush=True)
time.sleep(60)
"""


def test_committed_offset_never_outlives_its_records(tmp_path, shim, child_env):
    """a consumer's committed offset is made durable only after the records it points
    past (FORMAT.rst M-8, M-10).

    ``"never"`` mode: records sent without any flush, consumed and committed;
    then a power loss. The commit may be undone, but it must never point
    past records that were lost, and the metadata must open."""
    path, lines = _power_loss_child(tmp_path, shim, child_env, COMMIT_CHILD, until="committed")
    assert lines[-1] == "committed 200"
    with pylog.open(path) as log:
        assert "t" in log.topics(), "the topic itself was lost"
        end = log.partition("t", 0).state().next_offset
        committed = log.describe_group("g")["partitions"]
        for p in committed:
            # (None: never committed, or the commit was undone)
            assert p["committed"] is None or p["committed"] <= end, \
                f"commit {p['committed']} survived, records only up to {end}"
        assert len(read_all(log, "t")) == end


def test_metadata_power_loss_reference():
    """The metadata (LMDB) never runs without flushing its data pages, so a power
    loss can undo at most its last commit, never corrupt it

    A power loss that keeps only synced bytes is simulated by the tests
    above (every test of them reopens the metadata after it). The random
    torn-page version of it needs the LD_PRELOAD shim and many rounds: it
    is tests/test_powerloss.py::test_never_mode_power_loss_keeps_metadata_openable
    and test_power_loss_other_modes_open_clean; this checks they are there."""
    sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
    try:
        import test_powerloss
    finally:
        sys.path.pop(0)
    assert callable(test_powerloss.test_never_mode_power_loss_keeps_metadata_openable)
    assert callable(test_powerloss.test_power_loss_other_modes_open_clean)
    assert callable(test_powerloss.test_power_loss_always_keeps_every_ack)


# -- recovery --------------------------------------------------------------------

DIE = r"""
import os, sys, pylog
log = pylog.open(sys.argv[1], sync=sys.argv[2])
log.create_topic("t", exist_ok=True, segment_bytes=1 << 20, retention_ms=-1)
p = log.producer()
for i in range(int(sys.argv[3])):
    p.send_batch("t", [b"%d.%d:" % (i, j) + b"x" * 300 for j in range(5)], partition=0)
os._exit(0)          # a crash: no close, no flush
"""


def test_recovery_truncates_a_torn_tail(tmp_path, child_env):
    """After a crash, recovery truncates a torn tail back to the last
    whole batch.

    A writer dies without closing; its last batch is then torn (cut in the
    middle, as an unfinished write-back leaves it). Reopened: every whole
    batch is there, the torn one is gone, and appends continue right after."""
    path = tmp_path / "log"
    run_child(DIE, path, "never", 20, env=child_env)
    seg = segments(path)[-1]
    with open(seg, "rb") as f:
        data = f.read()
    batches = parse_batches(data)
    assert len(batches) == 20
    pos, last = batches[-1]
    with open(seg, "r+b") as f:          # the tail's second half never landed
        f.seek(pos + last["size"] // 2)
        f.write(bytes(last["size"] - last["size"] // 2))
    with pylog.open(path) as log:
        recs = read_all(log, "t")
        assert [r.offset for r in recs] == list(range(95))
        assert recs[-1].value == b"18.4:" + b"x" * 300
        md = log.producer().send("t", b"after", partition=0)
        assert md.offset == 95
    with pylog.open(path) as log:
        assert read_all(log, "t")[-1].value == b"after"


@pytest.mark.parametrize("sync", ["interval", "never"])
def test_hole_followed_by_a_batch_fails_the_partition(tmp_path, child_env, sync):
    """if a power loss wrote back the unsynced tail of a segment out of order (a hole
    of zeros followed by a whole batch), recovery cannot tell a hole from damage
    and, rather than silently dropping records, fails that partition with
    ``CorruptLogError`` naming the position (``pylog verify`` lists it).

    A writer dies without a flush; one batch of its unsynced tail is then
    zeroed while the batches after it stay whole."""
    path = tmp_path / "log"
    run_child(DIE.replace('sync=sys.argv[2]', 'sync=sys.argv[2], sync_interval_ms=3600000'),
              path, sync, 10, env=child_env)
    seg = segments(path)[-1]
    with open(seg, "rb") as f:
        batches = parse_batches(f.read())
    pos, hole = batches[7]
    with open(seg, "r+b") as f:
        f.seek(pos)
        f.write(bytes(hole["size"]))
    with pylog.open(path) as log:
        c = log.consumer(enable_auto_commit=False)
        c.assign([TP("t", 0)])
        c.seek_to_beginning()
        got = []
        with pytest.raises(pylog.PylogError) as ei:
            for _ in range(100):
                got.extend(c.poll(timeout=0.05))
        err = ei.value
        cause = err if isinstance(err, pylog.CorruptLogError) else err.__cause__
        assert isinstance(err, pylog.CorruptLogError) or \
            isinstance(cause, pylog.CorruptLogError) or "corrupt" in str(err).lower(), err
        assert str(pos) in str(err), f"position {pos} not named: {err}"
        with pytest.raises(pylog.PylogError):
            log.producer().send("t", b"x", partition=0)
        assert os.path.getsize(seg) >= pos + hole["size"]
    out = subprocess.run([sys.executable, "-m", "pylog.cli", "verify", str(path)],
                         env=child_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert str(pos) in out.stdout + out.stderr and "t-0" in out.stdout + out.stderr
