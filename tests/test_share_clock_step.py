"""Share-group deadlines (Q-2) are wall-clock times that every process of
the log shares. A deadline set before the clock was stepped back (an NTP
step, a VM restored, an RTC wrong at boot then put right) lies further
ahead than any lock or delay could reach: it is cut to that bound, not
waited out for as long as the step. The step is played by a holder process
whose clock reads ahead (its deadlines are then as far ahead of the
others' clock as after a step back): it stays alive, so only the deadline
can free what it holds."""

import os
import time

from childproc import expect, start

import pylog
from pylog import sharestate as ss

HOLDER = r"""
import sys, time
_real = time.time
time.time = lambda: _real() + float(sys.argv[2])     # this process's clock
import pylog
log = pylog.open(sys.argv[1])
c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                       record_lock_ms=1000)
recs = []
while not recs:
    recs = c.poll(timeout_ms=200, max_records=1)
if sys.argv[3] == "release":
    c.acknowledge(recs[0], "release", delay_ms=1000)
    c.commit()
print("holding", recs[0].offset, flush=True)
sys.stdin.readline()
"""


def _setup(logdir):
    with pylog.open(logdir) as log:
        log.create_topic("jobs", partitions=1)
        log.producer().send_batch("jobs", [b"job"], partition=0)


def _held_ahead_then_polled(logdir, child_env, mode, state):
    """The holder, its clock 30 days ahead, takes the record (``mode``:
    "hold" it, or "release" it with a delay); then a consumer of this
    process polls and finds it still ``state``. Returns the record's
    deadline after that poll and the time (ms) before it."""
    _setup(logdir)
    ahead_ms = 30 * 86_400_000
    holder = start(HOLDER, logdir, ahead_ms / 1000, mode, env=child_env, stdin=-1)
    try:
        expect(holder, b"holding 0")
        now = int(time.time() * 1000)
        assert _deadline(logdir, state) > now + ahead_ms - 60_000   # as the holder set it
        with pylog.open(logdir) as log:
            c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                                   record_lock_ms=1000)
            assert c.poll(timeout_ms=100) == []          # (still held or delayed)
            c.close()
        return _deadline(logdir, state), now
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_set_before_a_clock_step_back_is_cut_to_the_longest_lock(logdir, child_env):
    until_ms, now = _held_ahead_then_polled(logdir, child_env, "hold", "acquired")
    # the lock ends at most the longest record_lock_ms (and a minute)
    # from now, not the 30 days the holder's clock was ahead: not twice
    # this consumer's lock, which another consumer's may exceed
    assert until_ms <= now + 3_600_000 + 61_000


def _deadline(logdir, state="delayed"):
    """The deadline of the record at the share-partition's start, from a
    snapshot of its share file (as ``pylog queues`` reads it)."""
    with pylog.open(logdir) as log:
        ((key, _raw),) = log.meta.info_items(ss.KEY_PREFIX, "read the share state")
    snap = ss.snapshot(os.path.join(logdir, "meta", "share", ss.file_name(key)), key)
    assert snap is not None and snap[state] == 1, snap
    return snap["first"]["until_ms"]


def test_a_delay_set_before_a_clock_step_back_is_cut_to_the_longest_delay(
        logdir, child_env):
    until_ms, now = _held_ahead_then_polled(logdir, child_env, "release", "delayed")
    # the delay ends at most the longest delay (and a minute) from now,
    # not the 30 days the holder's clock was ahead
    assert until_ms <= now + 7 * 86_400_000 + 61_000   # (the longest delay_ms)


def test_a_lock_of_a_raised_record_lock_ms_is_not_cut_by_a_consumer_made_before(logdir):
    """A consumer made before ``alter_share_group`` raised record_lock_ms
    (allowed: it held nothing yet) keeps the old value. Its acquisitions
    must not take the others' longer locks for ones set before a clock
    step back: the holder's record would be delivered again while it is
    still held, and its acknowledgement refused."""
    _setup(logdir)
    with pylog.open(logdir) as log_a, pylog.open(logdir) as log_b:
        a = log_a.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                                 record_lock_ms=1000)
        log_b.alter_share_group("g", record_lock_ms=60_000)
        b = log_b.share_consumer("jobs", group_id="g", auto_offset_reset="earliest")
        assert (a.record_lock_ms, b.record_lock_ms) == (1000, 60_000)
        held = b.poll(timeout_ms=1000, max_records=1)
        assert [r.offset for r in held] == [0]
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.5:       # past twice a's lock
            # (before: a's poll cut b's lock to 2 s, then took the record)
            assert a.poll(timeout_ms=200) == [], "a held record was taken"
        b.acknowledge(held[0], "accept")
        b.commit()
        a.close()
        b.close()
