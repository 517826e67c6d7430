"""The partition append lock across processes (FORMAT.rst P-3).

A child process appends in a loop through the public producer. The parent
catches it *holding* the append lock: it stops the child (SIGSTOP) the
moment the lock word names a token and keeps it stopped only if, once
stopped, the word still names a live token (a stopped child cannot release
it). Then:

- a holder that is alive but stopped keeps the lock: the parent's append
  waits, the lock probe (tests/lockprobe.py, which the crash harness uses
  for its "no lock left held" check) reports the lock held, and the append
  completes promptly once the holder is continued (README: "A process
  stopped in the middle of an append still holds that one partition's
  append lock until it is continued or dies");
- a holder SIGKILLed while holding is taken over (P-3): the parent's append
  succeeds within a bound, every record published before is unchanged, the
  new record lands right after them, and ``verify_log`` of the cleanly
  closed log is clean: the new holder removed what the dead one left past
  the published end (a torn batch, a roll's next segment) before appending.
"""

import os
import signal
import subprocess
import sys
import threading
import time

import childproc
import lockprobe
import pytest

import pylog
from pylog.partition import Cursor
from pylog.verify import verify_log

pytestmark = pytest.mark.skipif(lockprobe.F_OFD_GETLK is None,
                                reason="the P-3 futex lock exists only with OFD locks")

CFG = dict(partitions=1, segment_bytes=65536, retention_ms=-1)
TAKEOVER_BOUND_S = 5.0       # the waiter polls the holder every 20 ms; a loaded host
WAIT_S = 1.0                 # how long a stopped holder must keep the lock
CATCH_S = 60.0               # to catch the child holding the lock

APPENDER = r"""
import os, sys, pylog
path, acks = sys.argv[1], sys.argv[2]
log = pylog.open(path, sync="never")
prod = log.producer()
fd = os.open(acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
print("ready", flush=True)
i = 0
while True:
    # many records per batch: the encode under the lock takes a while, and
    # rolls (every ~64 KiB) hold it across file creation and fdatasync
    vals = [b"c%d.%d:" % (i, j) + b"v" * (j % 300) for j in range(1 + i % 200)]
    mds = prod.send_batch("t", vals, partition=0)
    os.write(fd, b"".join(b"%d %s\n" % (md.offset, v) for md, v in zip(mds, vals)))
    i += 1
"""


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return stat[stat.rfind(b")") + 2:].split()[0] == b"T"


def catch_holding(proc, logdir, state):
    """Stop ``proc`` while it holds the append lock of ``state``; returns
    its token. The child stays stopped."""
    deadline = time.monotonic() + CATCH_S
    tries = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            childproc.fail(proc, "the appender ended")
        if lockprobe.append_lock_word(state) == 0:
            continue
        os.kill(proc.pid, signal.SIGSTOP)
        tries += 1
        t = time.monotonic()
        while not _stopped(proc.pid):
            assert time.monotonic() - t < 10, "SIGSTOP not taken"
            time.sleep(0.0005)
        token = lockprobe.append_lock_holder(logdir, state)
        if token:
            return token
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.002)                      # let it get some work done
    pytest.fail(f"never caught the appender holding the lock ({tries} stops)")


def acked(path):
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[:-1]      # a partial last line is no ack
    return [(int(off), v) for off, v in (ln.split(b" ", 1) for ln in lines)]


@pytest.fixture
def holder(logdir, child_env, tmp_path):
    """(parent Log, partition state path, appender child stopped holding the
    lock, its token, acks file). The parent opened the log and the partition
    for writing first, so it waits for nothing but the append lock."""
    log = pylog.open(logdir, sync="never")
    log.create_topic("t", **CFG)
    prod = log.producer()
    prod.send("t", b"parent-0", partition=0)
    state = os.path.join(logdir, "t-0", lockprobe.STATE_FILE)
    acks = str(tmp_path / "acks")
    proc = subprocess.Popen([sys.executable, "-c", APPENDER, logdir, acks],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env)
    try:
        childproc.expect(proc, b"ready")
        token = catch_holding(proc, logdir, state)
        yield log, prod, state, proc, token, acks
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
        log.close()


def records(log):
    return [(r[0], r[3]) for r in log.partition("t", 0).fetch(Cursor(0), 10**7)]


def send_in_thread(prod, value):
    """Start ``prod.send`` in a thread; returns (thread, result dict)."""
    res = {}

    def run():
        try:
            res["md"] = prod.send("t", value, partition=0)
        except BaseException as e:      # reported by the test
            res["error"] = e
        res["t"] = time.monotonic()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, res


def check_after(logdir, log, before, probe_md, probe, acks):
    """Records published before the takeover are unchanged, the probe
    follows them, acknowledged records are in place; the cleanly closed
    log verifies as it is (P-3: the taker cleaned up the dead holder's
    half-done work, S-3), and after a reopen (the first opener's recovery,
    P-4) the records are the same."""
    after = records(log)
    assert after[:len(before)] == before, "records published before changed"
    assert [o for o, _ in after] == list(range(len(after))), "offsets not dense"
    assert (probe_md.offset, probe) in after
    got = dict(after)
    for off, v in acked(acks):
        assert got.get(off) == v, f"acknowledged record {off} lost or changed"
    log.close()
    problems = verify_log(logdir)
    assert not problems, [str(p) for p in problems]
    with pylog.open(logdir, sync="never") as again:
        assert records(again) == after


def test_probe_reports_an_append_lock_held_by_a_live_process(holder, logdir):
    """The crash harness's "no lock left held" check can fail: it names the
    append lock a live (stopped) child holds."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash"))
    import harness
    log, prod, state, proc, token, acks = holder
    held = harness.locks_held(logdir)
    assert any(f"t-0/{lockprobe.STATE_FILE} append lock" in h and str(token) in h
               for h in held), held
    with pytest.raises(AssertionError, match="append lock"):
        harness.check(logdir, harness.State())
    assert lockprobe.append_lock_word(state) == token


def test_stopped_holder_keeps_the_lock_until_continued(holder, logdir):
    log, prod, state, proc, token, acks = holder
    th, res = send_in_thread(prod, b"parent-waits")
    th.join(WAIT_S)
    assert th.is_alive(), f"the append did not wait for the stopped holder: {res}"
    assert lockprobe.append_lock_holder(logdir, state) == token, "lock stolen"
    before = records(log)
    t = time.monotonic()
    os.kill(proc.pid, signal.SIGCONT)
    th.join(TAKEOVER_BOUND_S)
    assert not th.is_alive(), "the append still waits after the holder continued"
    assert "error" not in res, res.get("error")
    assert res["t"] - t < TAKEOVER_BOUND_S
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    check_after(logdir, log, before, res["md"], b"parent-waits", acks)


def test_dead_holder_is_taken_over(holder, logdir):
    log, prod, state, proc, token, acks = holder
    before = records(log)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    # the dead child's token is still in the word: the parent must take over
    assert lockprobe.append_lock_word(state) == token
    assert lockprobe.append_lock_holder(logdir, state) == 0
    assert not any("append lock" in h for h in lockprobe.held_locks(logdir))
    t = time.monotonic()
    md = prod.send("t", b"after-takeover", partition=0)
    took = time.monotonic() - t
    assert took < TAKEOVER_BOUND_S, f"takeover took {took:.2f} s"
    assert md.offset == len(before)
    assert lockprobe.append_lock_word(state) == 0       # released after the append
    md2 = prod.send("t", b"and-on", partition=0)
    assert md2.offset == md.offset + 1
    check_after(logdir, log, before, md, b"after-takeover", acks)


def test_waiter_takes_over_when_the_stopped_holder_dies(holder, logdir):
    """An append already waiting for a stopped holder takes over once the
    holder is killed (without it being continued)."""
    log, prod, state, proc, token, acks = holder
    before = records(log)
    th, res = send_in_thread(prod, b"waited")
    th.join(WAIT_S)
    assert th.is_alive(), f"the append did not wait for the stopped holder: {res}"
    t = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    th.join(TAKEOVER_BOUND_S)
    assert not th.is_alive(), "the waiting append did not take the lock over"
    assert "error" not in res, res.get("error")
    assert res["t"] - t < TAKEOVER_BOUND_S
    assert res["md"].offset == len(before)
    check_after(logdir, log, before, res["md"], b"waited", acks)


# -- a dead holder's leftovers, made deterministically --

DEAD_HOLDER = r"""
import os, sys, pylog
from pylog.segment import Segment
path, mode = sys.argv[1], sys.argv[2]
log = pylog.open(path, sync="never")
part = log.partition("t", 0)
part.shared.wlock.acquire()
part.shared.lock()
st = part.state()
pos, nxt = st.active_position, st.next_offset
seg = Segment(part.dir, st.active_base, writable=True)
if mode == "torn":
    # the slow path's index entry for a batch of 10 records, then the
    # batch's records written but not yet its header (written last)
    seg.append_index_entry(nxt + 9, pos, 1)
    part.shared.set_index_position(pos)
    os.pwrite(seg.fd, bytes(61) + b"\xab" * 30000, pos)
elif mode == "roll":
    # S-4 up to the publish: the next segment made, the active one sealed
    new = Segment(part.dir, nxt, create=True, writable=True)
    new.write_indexes([], [])
    new.preallocate(65536)
    os.pwrite(new.fd, b"\xcd" * 100, 0)       # a leftover of an earlier roll
    seg.sync()
    seg.truncate(pos)
    seg.append_timeindex(st.active_max_timestamp, nxt - 1 - st.active_base)
    part.shared.set_index_position(0)
    # and a stray segment further on
    Segment(part.dir, nxt + 7, create=True, writable=True).close()
print("held", flush=True)
import time
time.sleep(600)
"""


@pytest.mark.parametrize("mode", ["torn", "roll"])
def test_taker_cleans_up_what_the_dead_holder_left(logdir, child_env, mode):
    """P-3: a holder killed mid-append leaves a torn batch (and the slow
    path's index entry for it) past the published end; one killed mid-roll
    leaves the next segment begun and the active one already sealed
    (truncated to its end) under this process's map. The next appender
    cleans up (zeroes the tail, cuts the index, finishes the roll), appends
    where the published state says, and the closed log verifies as is."""
    log = pylog.open(logdir, sync="never")
    try:
        log.create_topic("t", **CFG)
        prod = log.producer()
        for i in range(5):
            prod.send("t", b"before-%d" % i, partition=0)
        before = records(log)
        st0 = log.partition("t", 0).state()
        proc = childproc.start(DEAD_HOLDER, logdir, mode, env=child_env)
        try:
            childproc.expect(proc, b"held", timeout=60)
        finally:
            proc.kill()
            proc.wait()
        md = prod.send("t", b"after-takeover", partition=0)
        assert md.offset == len(before)
        st = log.partition("t", 0).state()
        if mode == "roll":
            assert st.active_base == st0.next_offset, "the roll was not finished"
            assert not os.path.exists(os.path.join(
                logdir, "t-0", "%020d.log" % (st0.next_offset + 7)))
        # enough to run past the page the published end was in: a map
        # longer than its file would lose these (or SIGBUS)
        for i in range(30):
            prod.send("t", b"after-%d-" % i + b"x" * 400, partition=0)
        after = records(log)
        assert after[:len(before)] == before
        assert [o for o, _ in after] == list(range(len(after)))
        assert after[len(before)] == (md.offset, b"after-takeover")
    finally:
        log.close()
    problems = verify_log(logdir)
    assert not problems, [str(p) for p in problems]
    with pylog.open(logdir, sync="never") as again:
        assert records(again) == after


@pytest.mark.parametrize("mode", ["torn", "roll"])
def test_closing_writer_cleans_up_after_a_dead_holder(logdir, child_env, mode):
    """P-3: a writer that closes after another died holding the lock takes
    the dead lock over and cleans up, so the closed log verifies as is."""
    log = pylog.open(logdir, sync="never")
    try:
        log.create_topic("t", **CFG)
        prod = log.producer()
        for i in range(5):
            prod.send("t", b"before-%d" % i, partition=0)
        before = records(log)
        proc = childproc.start(DEAD_HOLDER, logdir, mode, env=child_env)
        try:
            childproc.expect(proc, b"held", timeout=60)
        finally:
            proc.kill()
            proc.wait()
    finally:
        log.close()
    problems = verify_log(logdir)
    assert not problems, [str(p) for p in problems]
    with pylog.open(logdir, sync="never") as again:
        assert records(again) == before
