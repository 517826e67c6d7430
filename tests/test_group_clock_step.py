"""Group heartbeats (M-7) are wall-clock stamps every process of the log
compares with its own clock. A stamp made before the clock was stepped
back (an NTP step, a VM restored, an RTC wrong at boot then put right)
lies ahead of every other member's clock: it is cut to now, so a member
that hangs without dying is expired one session timeout later, not after
as long as the step. The step is played by a member whose clock reads an
hour ahead, then stopped (SIGSTOP): alive, so only its session can end."""

import os
import signal
import time

from childproc import expect, start

import pylog

MEMBER = r"""
import sys, time
_real = time.time
time.time = lambda: _real() + 3600                   # this process's clock
import pylog
log = pylog.open(sys.argv[1])
c = log.consumer("t", group_id="g", session_timeout_ms=1000)
while not c.assignment():
    c.poll(timeout_ms=100)
print("assigned", flush=True)
while True:
    c.poll(timeout_ms=100)
"""


def test_a_heartbeat_stamped_before_a_clock_step_back_does_not_pin_a_hung_member(
        logdir, child_env):
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=1)
    member = start(MEMBER, logdir, env=child_env)
    try:
        expect(member, b"assigned")
        os.kill(member.pid, signal.SIGSTOP)              # hung, not dead
        with pylog.open(logdir) as log:
            c = log.consumer("t", group_id="g", session_timeout_ms=1000)
            t0 = time.monotonic()
            while not c.assignment() and time.monotonic() - t0 < 5.0:
                c.poll(timeout_ms=100)
            # (before: the hung member kept the partition for the hour)
            assert c.assignment() == {pylog.TopicPartition("t", 0)}
            c.close()
    finally:
        member.kill()
        member.wait()
