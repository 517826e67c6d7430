"""Crash tests (G1, G2): a child appends and prints every acknowledged
record; the parent SIGKILLs it at a random instant, reopens the log (running
recovery) and checks that every acknowledged record is there, in order,
exactly once, and that appends continue at the right offset."""

import os
import random

import childproc
import pytest
from longscale import scaled

import pylog
from pylog.partition import Cursor

WRITER = r"""
import sys, pylog
path, sync, run = sys.argv[1], sys.argv[2], sys.argv[3]
log = pylog.open(path, sync=sync)
log.create_topic("t", partitions=2, segment_bytes=65536, max_message_bytes=60000,
                 retention_ms=-1, exist_ok=True)
prod = log.producer()
out = sys.stdout
out.write("ready\n"); out.flush()
i = 0
while True:
    p = i % 2
    if i % 3 == 0:
        vals = [b"%s-%d-%d-" % (run.encode(), i, j) + b"x" * (i % 500) for j in range(1 + i % 17)]
        mds = prod.send_batch("t", vals, partition=p)
    else:
        vals = [b"%s-%d-0-" % (run.encode(), i) + b"y" * (i % 700)]
        mds = [prod.send("t", vals[0], key=b"k%d" % i, partition=p)]
    out.write("".join("%d %d %s\n" % (md.partition, md.offset, v.decode())
                      for md, v in zip(mds, vals)))
    out.flush()
    i += 1
"""


def run_and_kill(logdir, sync, run, rng, env):
    proc = childproc.start(WRITER, logdir, sync, run, env=env)
    out = childproc.killed_after_ready(proc, rng.uniform(0.020, 0.300))
    acked = []
    for line in out.split(b"\n")[:-1]:          # a last partial line is not an ack
        p, off, val = line.split(b" ", 2)
        acked.append((int(p), int(off), val))
    return acked


def check_log(logdir, acked_all, probe):
    with pylog.open(logdir, sync="never") as log:
        for p in (0, 1):
            part = log.partition("t", p)
            recs = part.fetch(Cursor(0), 10**7)
            offs = [r[0] for r in recs]
            assert offs == list(range(len(recs)))                  # dense, in order
            vals = [r[3] for r in recs]
            assert len(set(vals)) == len(vals), "a record appears twice"
            for q, off, val in acked_all:
                if q == p:
                    assert off < len(vals) and vals[off] == val, \
                        f"acknowledged record {p}/{off} lost or changed"
            assert part.state().next_offset == len(recs)
        # appends continue at the right offset
        md = log.producer().send("t", probe, partition=0)
        assert md.offset == len(log.partition("t", 0).fetch(Cursor(0), 10**7)) - 1
        return md


def crash_loop(logdir, sync, kills, env):
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(2**32)))
    print(f"crash test seed: {seed} (PYLOG_SEED={seed} to repeat)")
    rng = random.Random(seed)
    acked_all = []
    for k in range(kills):
        acked = run_and_kill(logdir, sync, f"r{k}", rng, env)
        acked_all += acked
        probe = b"probe-%d" % k
        md = check_log(logdir, acked_all, probe)
        acked_all.append((0, md.offset, probe))
    assert len(acked_all) > 3 * kills        # the children did get work done


@pytest.mark.parametrize("sync", ["never", "always"])
def test_sigkill_writer(logdir, sync, child_env):
    crash_loop(logdir, sync, 5, child_env)


@pytest.mark.long
@pytest.mark.parametrize("sync", ["never", "always", "interval"])
def test_sigkill_writer_long(logdir, sync, child_env):
    """100 SIGKILLs per sync mode (times PYLOG_LONG_SCALE: tests/longscale.py)."""
    crash_loop(logdir, sync, scaled(100), child_env)


def test_roll_interrupted_by_a_crash(logdir):
    """A writer killed inside a roll leaves an empty next segment that the
    state never published; other writers keep appending to the old segment
    past its base. Recovery drops it instead of failing the partition."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", segment_bytes=65536, max_message_bytes=60000,
                         retention_ms=-1)
        prod = log.producer()
        for i in range(10):
            prod.send("t", b"%d" % i, partition=0)
        d = log.partition("t", 0).dir
        stem = os.path.join(d, f"{10:020d}")
        with open(stem + ".log", "wb") as f:        # what the dead roller made
            f.truncate(65536)
        for suffix in (".index", ".timeindex"):
            open(stem + suffix, "wb").close()
        for i in range(10, 60):                     # a live writer carries on
            assert prod.send("t", b"%d" % i, partition=0).offset == i
    # the roller's crash: its session did not end cleanly, so the next
    # opener recovers (P-9; a clean close would vouch for the state)
    os.unlink(os.path.join(logdir, "clean-shutdown"))
    with pylog.open(logdir, sync="never") as log:
        part = log.partition("t", 0)
        assert part.failed is None
        assert [r[3] for r in part.fetch(Cursor(0), 1000)] == [b"%d" % i for i in range(60)]
        assert log.producer().send("t", b"60", partition=0).offset == 60
    assert not os.path.exists(stem + ".log")
