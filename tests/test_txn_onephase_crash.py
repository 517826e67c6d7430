"""One-partition transactions (FORMAT.rst X-10: the COMMIT marker is the
commit point, no LMDB write) SIGKILLed over and over, with the open
transaction of each killed worker aborted by a read_committed reader or by
the next worker (X-9): every transaction a worker saw committed is read
whole, exactly once; one it aborted never shows; one it did not finish
shows whole or not at all. The short version runs in the default suite;
the long one kills the worker at least 100 times per sync mode."""

import random
import signal
import time
from collections import defaultdict

import childproc
import pytest
from longscale import scaled

import pylog

WORKER = r"""
import random, sys
import pylog

path, sync, seed, k = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
log = pylog.open(path, sync=sync)
p = log.producer(transactional_id="one")
print("ready", flush=True)
while True:
    n = rng.randint(1, 6)
    part = rng.randrange(2)
    recs = [b"%d:%d:%d" % (k, i, n) for i in range(n)]
    p.begin_transaction()
    if rng.random() < 0.5:
        p.send_batch("out", recs, partition=part)
    else:
        for r in recs:
            p.send("out", r, partition=part)
    if rng.random() < 0.1:
        p.abort_transaction()
        print("aborted", k, flush=True)
    else:
        p.commit_transaction()
        print("committed", k, flush=True)
    k += 1
"""


def read_all(path):
    with pylog.open(path) as log:
        c = log.consumer("out", auto_offset_reset="earliest",
                         isolation_level="read_committed")
        got = []
        while recs := c.poll(timeout=0.5):
            got.extend(r.value for r in recs)
        c.close()
    return got


def crash_loop(path, sync, kills, seed, env, life_s=0.2):
    """``kills`` workers killed at random; a read_committed consumer reads
    along (while they run and after each kill, when it may abort the dead
    one's transaction). Checks what it read, and then a fresh read."""
    rng = random.Random(seed)
    committed, aborted = set(), set()
    with pylog.open(path, sync=sync) as log:
        log.create_topic("out", partitions=2, exist_ok=True)
        along = log.consumer("out", auto_offset_reset="earliest",
                             isolation_level="read_committed")
        seen = []
        for run in range(kills):
            proc = childproc.start(WORKER, path, sync, str(rng.randrange(1 << 30)),
                                   str(run * 1_000_000), env=env)
            try:
                assert childproc.readline(proc, timeout=60) == b"ready\n", \
                    childproc.stderr_tail(proc)
                # the worker's life (a poll that long would return, and the
                # worker be killed, at its first commit)
                time.sleep(rng.uniform(0.0, life_s))
                seen.extend(r.value for r in along.poll(timeout=0))
            finally:
                proc.send_signal(signal.SIGKILL)
                out, _ = proc.communicate(timeout=60)
            assert proc.returncode == -signal.SIGKILL, childproc.stderr_tail(proc)
            for line in out.decode().split("\n")[:-1]:      # (whole lines only)
                word, _, k = line.partition(" ")
                if word == "committed":
                    committed.add(int(k))
                elif word == "aborted":
                    aborted.add(int(k))
            if rng.random() < 0.5:
                # this reader finds the killed owner's transaction open and
                # aborts it; else the next worker does
                seen.extend(r.value for r in along.poll(timeout=0.1))
        while recs := along.poll(timeout=0.5):
            seen.extend(r.value for r in recs)
        along.close()
    got = read_all(path)
    assert sorted(seen) == sorted(got), "what was read along is not what is read after"
    assert len(got) == len(set(got)), "a record was read twice"
    whole = defaultdict(set)
    for v in got:
        k, i, n = map(int, v.split(b":"))
        whole[(k, n)].add(i)
    for (k, n), idx in whole.items():
        assert idx == set(range(n)), f"transaction {k} is read in part: {sorted(idx)}/{n}"
    shown = {k for k, _ in whole}
    assert committed <= shown, f"committed and lost: {sorted(committed - shown)[:10]}"
    assert not aborted & shown, f"aborted and shown: {sorted(aborted & shown)[:10]}"
    return len(committed), len(aborted), len(shown)


def test_killed_one_partition_transactions(tmp_path, child_env):
    done, _, shown = crash_loop(str(tmp_path / "log"), "always", kills=8, seed=5,
                                env=child_env)
    assert done > 0 and shown >= done


@pytest.mark.long
@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_killed_one_partition_transactions_repeatedly(tmp_path, child_env, sync):
    """100 SIGKILLs per sync mode (times PYLOG_LONG_SCALE: tests/longscale.py)."""
    done, aborted, _ = crash_loop(str(tmp_path / "log"), sync, kills=scaled(100), seed=11,
                                  env=child_env, life_s=0.05)
    assert done > 0 and aborted > 0
