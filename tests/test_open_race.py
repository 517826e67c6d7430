"""Opening a partition while another process appends to it (FORMAT.rst
P-4, S-3): only the first opener of a log recovers published partitions.

Recovery truncates the active segment to its valid end, dropping the
preallocated tail (S-3). Run by a process that is not alone, that cut lands
under a live writer, which keeps appending through its map into the page
past the new end of file: the data is published but not in the file, and
every reader that maps the segment afresh fails with "segment is N bytes
but its data should reach M". A writable opener that is not first therefore
only initialises a partition whose state was never published, and decides
so under the append lock (P-3), where no append is half-done.
"""

import mmap
import os
import random
import signal
import sys
import time

import childproc
import pytest

import pylog
from pylog.partition import Cursor
from pylog.verify import verify_log

OPENER = r"""
import sys, pylog
log = pylog.open(sys.argv[1], sync="never")
log.partition("t", 0)
print("opened", flush=True)
log.close()
"""

SEQ = 8          # P-2: the seqlock word of partition.state


def _segment_size(logdir):
    return os.path.getsize(os.path.join(logdir, "t-0", "00000000000000000000.log"))


def test_opener_does_not_recover_a_state_left_mid_publish(logdir, child_env):
    """A writer SIGKILLed while publishing leaves the seqlock odd, which a
    reader without the lock cannot tell from an uninitialised state. A
    second process opening the partition then must not recover it: the
    first process keeps appending to the segment it preallocated."""
    log = pylog.open(logdir, sync="never")
    try:
        log.create_topic("t", partitions=1, retention_ms=-1)
        prod = log.producer()
        for i in range(3):
            prod.send("t", b"before-%d" % i, partition=0)
        end = log.partition("t", 0).state().active_position
        assert _segment_size(logdir) > end          # preallocated (S-3)
        # what a writer killed between the two seqlock stores leaves
        with open(os.path.join(logdir, "t-0", "partition.state"), "r+b") as f:
            m = mmap.mmap(f.fileno(), 4096)
            seq = int.from_bytes(m[SEQ:SEQ + 8], sys.byteorder)
            m[SEQ:SEQ + 8] = (seq + 1).to_bytes(8, sys.byteorder)
            m.close()
        proc = childproc.start(OPENER, logdir, env=child_env)
        try:
            childproc.expect(proc, b"opened", timeout=60)
            assert proc.wait(60) == 0, childproc.stderr_tail(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert _segment_size(logdir) > end, \
            "the second opener truncated the active segment of a live writer"
        for i in range(20):                # through the writer's map
            prod.send("t", b"after-%d" % i, partition=0)
        st = log.partition("t", 0).state()
        assert _segment_size(logdir) >= st.active_position
    finally:
        log.close()
    with pylog.open(logdir, sync="never") as again:
        recs = again.partition("t", 0).fetch(Cursor(0), 10**6)
        assert [r[3] for r in recs] == [b"before-%d" % i for i in range(3)] + \
            [b"after-%d" % i for i in range(20)]
    assert not verify_log(logdir)


# -- the stress reproducer: many processes start on a fresh log at once --

STRESS_CHILD = r"""
import os, random, sys, time, pylog
path, role, go, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rng = random.Random(seed)
while not os.path.exists(go):
    time.sleep(0.001)
time.sleep(rng.uniform(0, 0.05))
log = pylog.open(path, sync=rng.choice(["always", "never"]))
log.create_topic("t", partitions=2, segment_bytes=65536, retention_ms=-1,
                 exist_ok=True)
print("ready", flush=True)
if role == "producer":
    prod = log.producer()
    i = 0
    while True:
        prod.send("t", b"%d.%d:" % (seed, i) + b"p" * rng.randrange(300),
                  partition=i % log.partitions_for("t"))
        i += 1
elif role == "consumer":
    c = log.consumer(enable_auto_commit=False)
    seen = {}
    while True:
        n = log.partitions_for("t", max_age_s=0)
        c.assign([pylog.TopicPartition("t", p) for p in range(n)])
        for p in range(n):
            tp = pylog.TopicPartition("t", p)
            c.seek(tp, seen.get(p, 0))
        for r in c.poll(timeout=0.01):
            seen[r.partition] = r.offset + 1
elif role == "admin":
    while True:
        n = log.partitions_for("t", max_age_s=0)
        if n < 6:
            try:
                log.create_partitions("t", n + 1)
            except pylog.errors.InvalidArgument:
                pass        # another admin grew it meanwhile
        log.create_topic("t", partitions=2, exist_ok=True)
        time.sleep(0.01)
"""

STRESS_ROLES = ["producer", "producer", "consumer", "consumer", "admin", "admin"]


def _stress_round(root, rng, env):
    path = os.path.join(root, "log%d" % rng.randrange(1 << 30))
    go = path + ".go"
    procs = [childproc.start(STRESS_CHILD, path, role, go, rng.randrange(1 << 30),
                             env=env) for role in STRESS_ROLES]
    try:
        time.sleep(0.3)
        open(go, "w").close()
        for pr in procs:
            childproc.expect(pr, b"ready", timeout=120)
        time.sleep(rng.uniform(0.2, 0.8))
        for pr in rng.sample(procs, len(procs)):
            if pr.poll() is not None:
                raise AssertionError("a child ended before the kill:\n"
                                     + childproc.stderr_tail(pr))
            pr.send_signal(signal.SIGKILL)
            time.sleep(rng.uniform(0, 0.05))
    finally:
        for pr in procs:
            if pr.poll() is None:
                pr.kill()
            pr.wait()
    with pylog.open(path, sync="never") as log:
        for p in range(log.partitions_for("t", max_age_s=0)):
            recs = log.partition("t", p).fetch(Cursor(0), 10**7)
            assert [r[0] for r in recs] == list(range(len(recs)))
    problems = verify_log(path)
    assert not problems, [str(x) for x in problems]


@pytest.mark.long
def test_processes_starting_together_never_truncate_a_live_segment(tmp_path, child_env):
    """Six processes open a fresh log at the same instant, create the same
    topic with exist_ok, grow it and append and consume, then are
    SIGKILLed; no child may fail (a consumer mapping a segment shorter than
    its published end raises CorruptLogError), and the log verifies."""
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (replay with PYLOG_SEED={seed})")
    rng = random.Random(seed)
    t_end = time.monotonic() + float(os.environ.get("PYLOG_RACE_BUDGET_S", "60"))
    rounds = 0
    while time.monotonic() < t_end:
        _stress_round(str(tmp_path), rng, child_env)
        rounds += 1
    print(f"{rounds} rounds")
    assert rounds > 0
