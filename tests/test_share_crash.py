"""Share consumers under SIGKILL: worker processes on 4 partitions are
killed at random and restarted while they work. Every record ends
Acknowledged (none lost), and a record is delivered again only because its
holder died (Q-2): its deliveries carry distinct counts, and the records
delivered more than once are at most what the killed workers held."""

import collections
import os
import random
import signal
import time

import pytest
from childproc import expect, start
from longscale import scaled

import pylog
from pylog import sharestate as ss

N = 2000
PARTS = 4
BATCH = 10

WORKER = r"""
import os, sys, time, pylog
log = pylog.open(sys.argv[1], sync=sys.argv[2])
fd = os.open(sys.argv[3], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                       record_lock_ms=600_000)
print("ready", flush=True)
while True:
    recs = c.poll(timeout_ms=50, max_records=%d)
    for r in recs:
        time.sleep(0.002)                  # the job
        os.write(fd, b"%%d %%d %%d %%d\n" %% (os.getpid(), r.partition, r.offset,
                                             r.delivery_count))
        c.acknowledge(r)
    c.commit()
""" % BATCH


def _run(logdir, child_env, tmp_path, sync, kills, n=N):
    with pylog.open(logdir, sync=sync) as log:
        log.create_topic("jobs", partitions=PARTS)
        prod = log.producer()
        for p in range(PARTS):
            prod.send_batch("jobs", [b"job"] * (n // PARTS), partition=p)
        prod.flush()
    out = str(tmp_path / "done")
    rng = random.Random(16)
    workers = [start(WORKER, logdir, sync, out, env=child_env) for _ in range(4)]
    for w in workers:
        expect(w, b"ready")
    killed = 0
    while killed < kills:
        time.sleep(rng.uniform(0.005, 0.03))
        i = rng.randrange(len(workers))
        os.kill(workers[i].pid, signal.SIGKILL)
        workers[i].wait()
        killed += 1
        workers[i] = start(WORKER, logdir, sync, out, env=child_env)
        expect(workers[i], b"ready")
    deadline = time.monotonic() + 300
    with pylog.open(logdir, sync="never") as log:
        files = [log.share_files().get("g", "jobs", p, 8000, lambda: 0)
                 for p in range(PARTS)]
        while time.monotonic() < deadline:
            if all(f.head[ss.SPSO] == n // PARTS for f in files):
                break
            time.sleep(0.05)
        spsos = [f.head[ss.SPSO] for f in files]
    for w in workers:
        os.kill(w.pid, signal.SIGKILL)
        w.wait()
    assert spsos == [n // PARTS] * PARTS          # every record done
    deliveries = collections.defaultdict(list)
    with open(out) as f:
        for line in f:
            _pid, p, off, count = map(int, line.split())
            deliveries[(p, off)].append(count)
    assert set(deliveries) == {(p, o) for p in range(PARTS) for o in range(n // PARTS)}
    again = {k: v for k, v in deliveries.items() if len(v) > 1}
    for counts in deliveries.values():
        assert len(set(counts)) == len(counts), counts    # never two holders at once
    # only records a killed worker held (acquired, not yet committed) come back
    assert len(again) <= kills * BATCH * PARTS
    print(f"sync={sync}: {kills} SIGKILLs, {len(again)} records delivered again "
          f"(holder died), {sum(len(v) for v in deliveries.values())} deliveries")


@pytest.mark.parametrize("sync", ["never", "interval", "always"])
def test_workers_sigkilled(logdir, child_env, tmp_path, sync):
    _run(logdir, child_env, tmp_path, sync, kills=12)


@pytest.mark.long
@pytest.mark.parametrize("sync", ["never", "interval", "always"])
def test_workers_sigkilled_repeatedly(logdir, child_env, tmp_path, sync):
    """200 SIGKILLs per sync mode (times PYLOG_LONG_SCALE: tests/longscale.py)."""
    kills = scaled(200)
    _run(logdir, child_env, tmp_path, sync, kills=kills, n=200 * kills)
