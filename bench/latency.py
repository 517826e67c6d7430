"""End-to-end latency jobs of bench/compare.py: a record carrying
time.perf_counter_ns(), read by a consumer blocked in poll, in the same
process, at the decoding floor, and in another process (the latency child,
run as ``compare.py --_latency-child``).
"""

import functools
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import peers as P
from measure import Mismatch, say

TS = struct.Struct("<Q")
COMPARE_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compare.py")


def pct(vals, q):
    s = sorted(vals)
    if not s:
        return float("nan")
    i = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[i]


def stamped(size, pad):
    v = TS.pack(time.perf_counter_ns())
    return v + pad[: max(0, size - 8)]


def pace(t_next):
    # one record every ~interval: sleep most of it, no busy loop
    now = time.perf_counter()
    if t_next > now:
        time.sleep(t_next - now)


def lat_raw_condition(b, n, warm, size, interval):
    """raw file append woken through threading.Condition (same process)."""
    d = tempfile.mkdtemp(prefix="lat-raw-", dir=b.base)
    path = os.path.join(d, "data.log")
    wfd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    rfd = os.open(path, os.O_RDONLY)
    cond = threading.Condition()
    state = {"end": 0}
    lats = []
    total = n + warm
    key = b"k" * 16
    pad = b"x" * size
    hdr = P._HDR

    def consumer():
        pos = 0
        buf = b""
        cnt = 0
        while cnt < total:
            with cond:
                while state["end"] == pos:
                    if not cond.wait(5.0):
                        return
                e = state["end"]
            data = os.pread(rfd, e - pos, pos)
            now = time.perf_counter_ns()
            pos = e
            buf += data
            off = 0
            while off + 8 <= len(buf):
                kl, vl = hdr.unpack_from(buf, off)
                end = off + 8 + kl + vl
                if end > len(buf):
                    break
                if cnt >= warm:
                    lats.append(now - TS.unpack_from(buf, off + 8 + kl)[0])
                cnt += 1
                off = end
            buf = buf[off:]

    th = threading.Thread(target=consumer)
    th.start()
    try:
        t_next = time.perf_counter()
        for _ in range(total):
            t_next += interval
            pace(t_next)
            v = stamped(size, pad)
            rec = hdr.pack(len(key), len(v)) + key + v
            os.write(wfd, rec)
            with cond:
                state["end"] += len(rec)
                cond.notify()
        th.join(30)
    finally:
        os.close(wfd)
        os.close(rfd)
        shutil.rmtree(d, ignore_errors=True)
    if len(lats) != n:
        raise Mismatch("raw latency: got %d of %d records" % (len(lats), n))
    return lats


def _lat_same_process(b, n, warm, size, interval, open_reader, what):
    """pylog producer in this thread -> a reader thread blocked in
    ``read(timeout)``, where ``open_reader(log)`` returns (read, close)."""
    import pylog
    d = tempfile.mkdtemp(prefix="lat-pylog-", dir=b.base)
    lats = []
    total = n + warm
    key = b"k" * 16
    pad = b"x" * size
    ready = threading.Event()
    err = []
    try:
        with pylog.open(os.path.join(d, "log"), sync="never") as log:
            log.create_topic("lat", partitions=1, exist_ok=True)

            def consumer():
                try:
                    read, close = open_reader(log)
                    ready.set()
                    cnt = 0
                    idle = 0
                    while cnt < total and idle < 10:
                        recs = read(1.0)
                        now = time.perf_counter_ns()
                        if not recs:
                            idle += 1
                            continue
                        idle = 0
                        recs = P._flatten(recs)
                        for r in recs:
                            if cnt >= warm:
                                lats.append(now - TS.unpack_from(r.value, 0)[0])
                            cnt += 1
                    close()
                except BaseException as e:
                    err.append(e)
                    ready.set()

            th = threading.Thread(target=consumer)
            th.start()
            ready.wait(30)
            p = log.producer()
            t_next = time.perf_counter()
            for _ in range(total):
                t_next += interval
                pace(t_next)
                p.send("lat", stamped(size, pad), key=key)
            th.join(60)
            p.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if err:
        raise err[0]
    if len(lats) != n:
        raise Mismatch("%s latency: got %d of %d records" % (what, len(lats), n))
    return lats


def _consumer_reader(log):
    c = log.consumer("lat", group_id="lat", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    c.poll(timeout=0.05)
    return functools.partial(c.poll, max_records=1000), c.close


def lat_pylog_thread(b, n, warm, size, interval):
    """pylog producer -> consumer thread blocked in poll (same process)."""
    return _lat_same_process(b, n, warm, size, interval, _consumer_reader, "pylog")


def _checked_read_reader(log):
    import pylog
    from pylog import _native
    from pylog.partition import Cursor
    from pylog.store import topic_slot
    part = log.partition("lat", 0)
    slot_p = log.doorbell_pointer() + topic_slot("lat") * _native.DOORBELL_SLOT_SIZE
    cur = Cursor(0)

    def read(timeout):
        seen = _native.doorbell_load_at(slot_p, 0)
        recs = part.fetch(cur, 1000, with_topic=True, row_type=pylog.Record)
        if not recs:
            recs = part.wait_fetch(cur, slot_p, seen, timeout, 1000, with_topic=True,
                                   row_type=pylog.Record)
            if recs == []:      # woken, not decoded in the wait (a roll, ...)
                recs = part.fetch(cur, 1000, with_topic=True, row_type=pylog.Record)
        return recs
    return read, lambda: None


def lat_pylog_floor(b, n, warm, size, interval):
    """Reference for the same-process latency bar: the least a checked read
    costs in Python. No Consumer (no group, no housekeeping, no poll loop):
    the reader waits in Partition.wait_fetch, which decodes in the wait call
    (CRC and offsets checked) and builds the Records, as any consumer must
    before it hands a record over."""
    return _lat_same_process(b, n, warm, size, interval, _checked_read_reader,
                             "pylog floor")


def latency_child(path, total, warm):
    """Run in a subprocess: consumer blocked in poll; reports latencies."""
    import pylog
    lats = []
    with pylog.open(path, sync="never") as log:
        c = log.consumer("lat", group_id="lat-child", auto_offset_reset="earliest",
                         enable_auto_commit=False)
        c.poll(timeout=0.05)
        print("ready", flush=True)
        cnt = 0
        idle = 0
        while cnt < total and idle < 10:
            recs = c.poll(timeout=1.0, max_records=1000)
            now = time.perf_counter_ns()
            if not recs:
                idle += 1
                continue
            idle = 0
            for r in P._flatten(recs):
                if cnt >= warm:
                    lats.append(now - TS.unpack_from(r.value, 0)[0])
                cnt += 1
        c.close()
    print(json.dumps(lats), flush=True)


def lat_pylog_process(b, n, warm, size, interval):
    """pylog producer -> consumer in another process blocked in poll.
    perf_counter_ns is CLOCK_MONOTONIC on Linux: one clock for all processes."""
    import pylog
    d = tempfile.mkdtemp(prefix="lat-proc-", dir=b.base)
    path = os.path.join(d, "log")
    total = n + warm
    key = b"k" * 16
    pad = b"x" * size
    child = None
    try:
        with pylog.open(path, sync="never") as log:
            log.create_topic("lat", partitions=1, exist_ok=True)
            child = subprocess.Popen(
                [sys.executable, COMPARE_PY, "--_latency-child",
                 path, str(total), str(warm)],
                stdout=subprocess.PIPE, text=True)
            line = child.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError("latency child did not start (%r)" % line)
            p = log.producer()
            t_next = time.perf_counter()
            for _ in range(total):
                t_next += interval
                pace(t_next)
                p.send("lat", stamped(size, pad), key=key)
            out, _ = child.communicate(timeout=60)
            p.close()
        if child.returncode != 0:
            raise RuntimeError("latency child exited with %s" % child.returncode)
        lats = json.loads(out.strip().splitlines()[-1])
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(d, ignore_errors=True)
    if len(lats) != n:
        raise Mismatch("pylog cross-process latency: got %d of %d records" % (len(lats), n))
    return lats


def run_latency(b, have_pylog, have_raw):
    a = b.args
    n, warm, size, iv = a.lat_n, 100, a.size, a.lat_interval_ms / 1000.0
    jobs = []
    if have_raw:
        jobs.append(("raw", "lat_same", lat_raw_condition))
    if have_pylog:
        jobs.append(("pylog", "lat_same", lat_pylog_thread))
        jobs.append(("pylog", "lat_floor", lat_pylog_floor))
        jobs.append(("pylog", "lat_proc", lat_pylog_process))
    # The samples are taken in rounds, every job in turn within a round, and
    # pooled: a slow spell of the machine then lands on every job alike. The
    # order rotates from round to round, so no job always runs first (or
    # always right after another).
    rounds = max(1, min(a.lat_rounds, n))
    per_round = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    samples = {}
    failed = set()
    for r, k in enumerate(per_round):
        for peer, metric, fn in jobs[r % len(jobs):] + jobs[:r % len(jobs)]:
            if (peer, metric) in failed:
                continue
            say("== latency %s %s, round %d of %d (%d samples, 1 record / %.1f ms)"
                % (peer, metric, r + 1, rounds, k, iv * 1000))

            def go(peer=peer, metric=metric, fn=fn, k=k):
                samples.setdefault((peer, metric), []).extend(fn(b, k, warm, size, iv))
            errors = len(b.errors)
            b.guarded(peer, metric, go)
            if len(b.errors) > errors:
                failed.add((peer, metric))
    for (peer, metric), lats in samples.items():
        if (peer, metric) not in failed:
            b.put(peer, metric + "_p50_us", pct(lats, 50) / 1000.0)
            b.put(peer, metric + "_p99_us", pct(lats, 99) / 1000.0)
