"""Concurrency stress: producer threads in two processes, group members as
threads of this process and of another process, committing and
rebalancing (members join and leave) all at once. Checked: no loss (every
acknowledged record delivered to the group), no record changed, duplicates only around rebalances
(at-least-once), and no deadlock (everything joins within a timeout).
Counts are printed. The long variant runs longer with more members."""

import os
import random
import subprocess
import sys
import threading
import time

import pytest

import pylog

PRODUCER = r"""
import faulthandler, sys, threading, pylog
faulthandler.dump_traceback_later(150, exit=True)   # a stuck producer shows where
path, tag, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
log = pylog.open(path)
prod = log.producer()
out, lock = [], threading.Lock()
def run(t):
    for i in range(n):
        v = b"%s.%d.%d" % (tag.encode(), t, i)
        md = prod.send("t", v, key=b"k%d" % (i % 13))
        with lock:
            out.append("%d %d %s" % (md.partition, md.offset, v.decode()))
ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
log.close()
print("\n".join(out))
"""

MEMBER = r"""
import sys, time, pylog
path, secs = sys.argv[1], float(sys.argv[2])
log = pylog.open(path)
c = log.consumer("t", group_id="g", enable_auto_commit=False,
                 auto_offset_reset="earliest", session_timeout_ms=3000)
end = time.time() + secs
while time.time() < end:
    for r in c.poll(timeout=0.05, max_records=50):
        print("%d %d %s" % (r.partition, r.offset, r.value.decode()))
    try:
        c.commit()
    except pylog.CommitFailedError:
        pass
c.close()
log.close()
"""


def stress(logdir, env, rng, secs, n_per_thread, members):
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=4, segment_bytes=65536)
    producers = [subprocess.Popen([sys.executable, "-c", PRODUCER, logdir, f"P{i}",
                                   str(n_per_thread), "3"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for i in range(2)]
    ext = subprocess.Popen([sys.executable, "-c", MEMBER, logdir, str(secs)], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    delivered = []          # (member, partition, offset, value)
    errors = []
    lock = threading.Lock()
    log = pylog.open(logdir)

    def member(mid, life):
        try:
            c = log.consumer("t", group_id="g", enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=3000)
            end = time.monotonic() + life
            while time.monotonic() < end:
                recs = c.poll(timeout=0.05, max_records=rng.randint(1, 60))
                with lock:
                    delivered.extend((mid, r.partition, r.offset, r.value) for r in recs)
                try:
                    c.commit()
                except pylog.CommitFailedError:
                    pass
            c.close()
        except BaseException as exc:        # noqa: BLE001
            errors.append(repr(exc))

    threads = []
    for m in range(members):                 # staggered joins and leaves: rebalances
        life = rng.uniform(secs / 3, secs)
        t = threading.Thread(target=member, args=(f"t{m}", life), daemon=True)
        threads.append(t)
        t.start()
        time.sleep(rng.uniform(0, secs / (2 * members)))
    acked = {}
    for p in producers:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, "producer stuck or failed:\n" + err.decode()[-6000:]
        for ln in out.decode().splitlines():
            part, off, v = ln.split(" ", 2)
            key = (int(part), int(off))
            assert key not in acked, f"offset {key} acknowledged twice"
            acked[key] = v.encode()
    for t in threads:
        t.join(timeout=secs + 60)
        assert not t.is_alive(), "a member thread deadlocked"
    out, err = ext.communicate(timeout=secs + 60)
    assert ext.returncode == 0, err.decode()[-2000:]
    for ln in out.decode().splitlines():
        part, off, v = ln.split(" ", 2)
        delivered.append(("ext", int(part), int(off), v.encode()))
    assert not errors, errors
    # a final member drains what the others left (resumes from the commits)
    c = log.consumer("t", group_id="g", enable_auto_commit=False, auto_offset_reset="earliest")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        recs = c.poll(timeout=0.3, max_records=5000)
        if not recs and len({(p, o) for _, p, o, _ in delivered} & acked.keys()) == len(acked):
            break
        delivered.extend(("drain", r.partition, r.offset, r.value) for r in recs)
    c.commit()
    c.close()
    log.close()
    seen = {}
    dups = 0
    for mid, p, off, v in delivered:
        assert acked.get((p, off)) == v, f"t-{p}@{off} delivered with other data"
        if (p, off) in seen:
            dups += 1
        seen[(p, off)] = v
    missing = set(acked) - set(seen)
    assert not missing, \
        f"{len(missing)} acknowledged records never delivered: {sorted(missing)[:5]}"
    return len(acked), len(delivered), dups


def test_stress(logdir, child_env):
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(1 << 30)))
    print(f"seed {seed}")
    n, d, dups = stress(logdir, child_env, random.Random(seed), secs=3.0,
                        n_per_thread=150, members=3)
    print(f"stress: {n} records produced, {d} deliveries, {dups} redeliveries "
          f"(at-least-once around rebalances), seed {seed}")
    assert dups <= n, "more redeliveries than records: not at-least-once but loops"


@pytest.mark.long
def test_stress_long(logdir, child_env):
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(1 << 30)))
    print(f"seed {seed}")
    n, d, dups = stress(logdir, child_env, random.Random(seed), secs=20.0,
                        n_per_thread=500, members=6)
    print(f"stress: {n} records produced, {d} deliveries, {dups} redeliveries, seed {seed}")
    assert dups <= n
