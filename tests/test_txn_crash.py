"""Consume-transform-produce with transactions, SIGKILLed over and over
(issue 17's bar (2); FORMAT.rst X-6, X-9): every input record's output
appears exactly once to a read_committed reader, and records of aborted
transactions never show. The worker sends each transaction's outputs one
``send`` at a time or with ``send_batch`` per key, at random. The short
version runs in the default suite; the long one kills the worker at least
100 times per sync mode."""

import random
import signal
import time

import childproc
import pytest
from longscale import scaled

import pylog

WORKER = r"""
import random, sys
import pylog

path, sync, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
log = pylog.open(path, sync=sync)
c = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                 enable_auto_commit=False)
p = log.producer(transactional_id="ctp")
print("ready", flush=True)
while True:
    recs = c.poll(timeout=0.5, max_records=rng.randint(1, 8))
    if not recs:
        tp = pylog.TopicPartition("in", 0)
        if c.committed(tp) == log.partition("in", 0).state().next_offset:
            break
        continue
    try:
        with p.transaction():
            if rng.random() < 0.5:
                for r in recs:
                    p.send("out", b"out-" + r.value, key=r.key)
            else:
                # one send_batch per key (one partition: the column append)
                by_key = {}
                for r in recs:
                    by_key.setdefault(r.key, []).append((r.key, b"out-" + r.value))
                for items in by_key.values():
                    p.send_batch("out", items)
            p.send_offsets_to_transaction(c)
    except pylog.CommitFailedError:
        # a rebalance took the partition meanwhile (the transaction was
        # aborted): go back to the group's committed offsets
        for tp in c.assignment():
            c.seek(tp, c.committed(tp) or 0)
p.close()
c.close()
log.close()
print("done", flush=True)
"""


def _run(tmp_path, child_env, sync, kills, n):
    path = tmp_path / "log"
    with pylog.open(path, sync=sync) as log:
        log.create_topic("in", partitions=1)
        log.create_topic("out", partitions=3)
        log.producer().send_batch("in", [(b"k%d" % (i % 7), b"%d" % i) for i in range(n)])
    rng = random.Random(17)
    killed = 0
    deadline = time.monotonic() + 150
    while True:
        assert time.monotonic() < deadline, f"no end after {killed} kills"
        proc = childproc.start(WORKER, path, sync, rng.randrange(1 << 30), env=child_env)
        try:
            assert childproc.readline(proc, timeout=60) == b"ready\n"
            if killed < kills:
                time.sleep(rng.uniform(0, 0.12))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                if proc.returncode == -signal.SIGKILL:
                    killed += 1
                    continue
            assert childproc.readline(proc, timeout=120) == b"done\n"
            proc.wait()
            break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    with pylog.open(path, sync=sync) as log:
        rc = log.consumer("out", auto_offset_reset="earliest",
                          isolation_level="read_committed")
        seen = []
        while True:
            got = rc.poll(timeout=0.3)
            if not got:
                break
            seen.extend(r.value for r in got)
        ru = log.consumer("out", auto_offset_reset="earliest")
        raw = 0
        while True:
            got = ru.poll(timeout=0.3)
            if not got:
                break
            raw += len(got)
    expected = sorted(b"out-%d" % i for i in range(n))
    dups = len(seen) - len(set(seen))
    assert dups == 0, f"{dups} outputs appear twice in read_committed"
    assert sorted(seen) == expected, "an input's output is missing"
    return killed, raw - len(seen)


def test_consume_transform_produce_survives_kills(tmp_path, child_env):
    killed, aborted = _run(tmp_path, child_env, "always", kills=4, n=150)
    assert killed == 4


@pytest.mark.long
@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_consume_transform_produce_survives_kills_long(tmp_path, child_env, sync):
    """100 SIGKILLs per sync mode (times PYLOG_LONG_SCALE: tests/longscale.py)."""
    kills = scaled(100)
    # (enough input that the worker is still busy at the last kill)
    killed, aborted = _run(tmp_path, child_env, sync, kills=kills, n=50 * kills)
    assert killed == kills
    # the kills left aborted records in the log: read_committed hid them
    print(f"sync={sync}: {killed} kills, {aborted} aborted records hidden")
    assert aborted > 0
