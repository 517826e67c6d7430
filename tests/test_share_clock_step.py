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


def test_a_lock_set_before_a_clock_step_back_ends_within_two_locks(logdir, child_env):
    _setup(logdir)
    holder = start(HOLDER, logdir, 3600, "hold", env=child_env, stdin=-1)
    try:
        expect(holder, b"holding 0")
        with pylog.open(logdir) as log:
            c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                                   record_lock_ms=1000)
            t0 = time.monotonic()
            got = []
            while not got and time.monotonic() - t0 < 4.0:
                got = c.poll(timeout_ms=200)
            # (before: held for the hour the holder's clock is ahead)
            assert [r.offset for r in got] == [0], "the lock was waited out"
            assert got[0].delivery_count == 2
            c.close()
    finally:
        holder.kill()
        holder.wait()


def _delay_end(logdir):
    """The deadline of the record at the share-partition's start, from a
    snapshot of its share file (as ``pylog queues`` reads it)."""
    with pylog.open(logdir) as log:
        ((key, _raw),) = log.meta.info_items(ss.KEY_PREFIX, "read the share state")
    snap = ss.snapshot(os.path.join(logdir, "meta", "share", ss.file_name(key)), key)
    assert snap is not None and snap["delayed"] == 1, snap
    return snap["first"]["until_ms"]


def test_a_delay_set_before_a_clock_step_back_is_cut_to_the_longest_delay(
        logdir, child_env):
    _setup(logdir)
    ahead_ms = 30 * 86_400_000
    holder = start(HOLDER, logdir, ahead_ms / 1000, "release", env=child_env, stdin=-1)
    try:
        expect(holder, b"holding 0")
        now = int(time.time() * 1000)
        assert _delay_end(logdir) > now + ahead_ms - 60_000      # as the holder set it
        with pylog.open(logdir) as log:
            c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                                   record_lock_ms=1000)
            assert c.poll(timeout_ms=100) == []          # (still delayed)
            c.close()
        # the delay ends at most the longest delay (and a minute) from now,
        # not the 30 days the holder's clock was ahead
        assert _delay_end(logdir) <= now + 7 * 86_400_000 + 61_000   # (the longest delay_ms)
    finally:
        holder.kill()
        holder.wait()
