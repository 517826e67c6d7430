#!/usr/bin/env python3
"""Side-by-side benchmark of pylog and its peers, measured in the same run.

    python bench/compare.py                      # everything, ~5-10 minutes
    python bench/compare.py --n 20000 --no-extras
    python bench/compare.py --only raw,sqlite,lmdb,persistqueue,redis
    python bench/compare.py --json results.json

Prints the machine, a markdown table of every figure, and a table of the
performance bars (pylog's ratio to the peer measured in this run and
whether the bar holds).  Exit status: 0 when every measurement ran and every
record read back matched (bars may fail: this is a report), 1 on errors,
2 on a count / checksum mismatch.
"""

import argparse
import atexit
import collections
import functools
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))   # the repository root: pylog/

sys.dont_write_bytecode = True   # no bench/__pycache__ in the work tree
import peers as P   # noqa: E402

TS = struct.Struct("<Q")


class Mismatch(Exception):
    pass


def say(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------

def machine_info(peer_classes, tmpdir):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "?"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    fs = "?"
    try:
        best = ""
        real = os.path.realpath(tmpdir)
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mnt = parts[1]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, fs = mnt, "%s (%s on %s)" % (parts[2], parts[0], mnt)
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.1f GiB" % (int(f.readline().split()[1]) / 1048576)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": "%s (usable %s)" % (os.cpu_count(), usable),
        "memory": mem,
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "python": "%s %s" % (platform.python_implementation(), sys.version.split()[0]),
        "filesystem": fs,
    }
    for cls in peer_classes:
        info[cls.name] = cls.version or "?"
    return info


# --------------------------------------------------------------------------
# measurement helpers
# --------------------------------------------------------------------------

class Bench:
    def __init__(self, args, base):
        self.args = args
        self.base = base
        self.results = {}        # peer -> metric -> value
        self.errors = []         # (peer, scenario, message)
        self.mismatch = False

    def put(self, peer, metric, value):
        self.results.setdefault(peer, {})[metric] = value

    def best(self, peer, metric, value):
        """Keep the best (highest) of the repetitions of a rate."""
        old = self.get(peer, metric)
        if old is None or value > old:
            self.put(peer, metric, value)

    def get(self, peer, metric):
        return self.results.get(peer, {}).get(metric)

    def fresh(self, cls, durable, threads=1):
        d = tempfile.mkdtemp(prefix=cls.name + "-", dir=self.base)
        p = cls()
        try:
            p.setup(d, durable, threads)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        return p, d

    @staticmethod
    def done(p, d):
        try:
            p.close()
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def check(self, peer, what, got, n, crc):
        cnt, gcrc = got
        if cnt != n or (crc is not None and gcrc != crc):
            self.mismatch = True
            raise Mismatch("%s %s: read back %d records crc %08x, expected %d crc %s"
                           % (peer, what, cnt, gcrc, n,
                              "%08x" % crc if crc is not None else "-"))

    def guarded(self, peer, scenario, fn):
        try:
            fn()
        except Mismatch as e:
            say("!! MISMATCH", e)
            self.errors.append((peer, scenario, str(e)))
        except Exception as e:
            say("!! %s / %s failed: %s: %s" % (peer, scenario, type(e).__name__, e))
            if self.args.verbose:
                traceback.print_exc()
            self.errors.append((peer, scenario, "%s: %s" % (type(e).__name__, e)))


def peer_n(cls, n, floor=1000):
    return max(min(n, floor), int(n * cls.scale))


# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------

def sc_batch_nosync(b, cls, items, crcs, rep):
    """send_batch without fsync, then consume (Records / raw values)."""
    n = peer_n(cls, len(items))
    bs = b.args.batch
    batches = [items[i:i + bs] for i in range(0, n, bs)]
    crc = crcs(n)
    p, d = b.fresh(cls, "none")
    try:
        t0 = time.perf_counter()
        for bt in batches:
            p.produce_batch(bt)
        dt = time.perf_counter() - t0
        b.best(cls.name, "batch_produce", n / dt)
        if rep == 0:
            if cls.name == "pylog":
                p.sync()    # materialize indexes before measuring
            b.put(cls.name, "bytes_per_record", p.bytes_on_disk() / n)
            b.put(cls.name, "allocated_per_record", p.bytes_allocated() / n)
            b.put(cls.name, "n_nosync", n)
        p.consume_prepare()
        t0 = time.perf_counter()
        got = p.consume_all(n)
        dt = time.perf_counter() - t0
        b.check(cls.name, "consume", got, n, crc)
        b.best(cls.name, "consume", n / dt)
        if cls.name == "pylog":
            p.consume_prepare()
            t0 = time.perf_counter()
            got = p.consume_values(n)
            dt = time.perf_counter() - t0
            if got is not None:
                b.check(cls.name, "consume values", got, n, crc)
                b.best(cls.name, "consume_values", n / dt)
            elif rep == 0:
                say("   pylog: Consumer.poll_values missing; values figure skipped")
    finally:
        b.done(p, d)


def _per_record(b, cls, items, crcs, n, durable, what, metric, rep):
    """produce_one per record, then (first repetition) a checked consume."""
    p, d = b.fresh(cls, durable)
    try:
        one = p.produce_one
        sub = items[:n]
        t0 = time.perf_counter()
        for k, v in sub:
            one(k, v)
        dt = time.perf_counter() - t0
        b.best(cls.name, metric, n / dt)
        if rep == 0:
            p.consume_prepare()
            b.check(cls.name, "consume after " + what, p.consume_all(n), n, crcs(n))
    finally:
        b.done(p, d)


def sc_one_nosync(b, cls, items, crcs, rep):
    """per-record produce without fsync."""
    _per_record(b, cls, items, crcs, peer_n(cls, len(items)), "none", "produce_one",
                "one_produce", rep)


def sc_fsync_batch(b, cls, items, crcs, rep):
    """one fsync per `batch` records (produce_batch + sync)."""
    n = peer_n(cls, b.args.n_fsync1000, floor=2 * b.args.batch)
    bs = b.args.batch
    batches = [items[i:i + bs] for i in range(0, n, bs)]
    p, d = b.fresh(cls, "batch")
    try:
        t0 = time.perf_counter()
        for bt in batches:
            p.produce_batch(bt)
            p.sync()
        dt = time.perf_counter() - t0
        b.best(cls.name, "fsync1000_produce", n / dt)
        if rep == 0:
            b.put(cls.name, "n_fsync1000", n)
            p.consume_prepare()
            b.check(cls.name, "consume after fsync/batch", p.consume_all(n), n, crcs(n))
    finally:
        b.done(p, d)


def sc_fsync_record(b, cls, items, crcs, rep):
    """one fsync per record, one thread."""
    _per_record(b, cls, items, crcs, b.args.n_fsync_record, "record", "fsync/record",
                "fsync1_produce", rep)


def sc_threads(b, cls, items, crcs, rep):
    """per-record durable produce from 1, 4, 16 threads (total n records)."""
    n = b.args.n_threads
    for T in b.args.threads:
        p, d = b.fresh(cls, "record", threads=T)
        try:
            chunks = [items[i:n:T] for i in range(T)]
            barrier = threading.Barrier(T + 1)
            errs = []

            def work(chunk):
                one = p.produce_one
                try:
                    barrier.wait()
                    for k, v in chunk:
                        one(k, v)
                except BaseException as e:   # reported below
                    errs.append(e)

            ths = [threading.Thread(target=work, args=(c,)) for c in chunks]
            for t in ths:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in ths:
                t.join()
            dt = time.perf_counter() - t0
            if errs:
                raise errs[0]
            b.best(cls.name, "threads%d_produce" % T, n / dt)
            if rep == 0:
                p.consume_prepare()
                # interleaving across threads is not defined: count only
                b.check(cls.name, "consume after %d threads" % T,
                        (p.consume_all(n)[0], 0), n, None)
        finally:
            b.done(p, d)


def wake_ceiling(threads, n):
    """The most durable sends per second any Python-thread design could
    reach here: ``threads`` threads each "send" (append to a queue) and
    block on their own lock until a coordinator thread, standing in for a
    group commit whose fdatasync costs nothing, releases every waiter it
    found. One thread blocking and waking per record is the least a durable
    send must cost (it returns only once its record is on disk); the rest is
    the interpreter's thread hand-off, which no library can take out."""
    q = collections.deque()
    kick = threading.Lock()
    kick.acquire()
    state = {"stop": False}
    per = n // threads

    def coordinator():
        while True:
            kick.acquire()
            if state["stop"] and not q:
                return
            while q:
                q.popleft().release()

    def worker():
        mine = threading.Lock()
        mine.acquire()
        for _ in range(per):
            q.append(mine)
            if kick.locked():
                try:
                    kick.release()
                except RuntimeError:     # released by another worker meanwhile
                    pass
            mine.acquire()

    co = threading.Thread(target=coordinator)
    co.start()
    ws = [threading.Thread(target=worker) for _ in range(threads)]
    t0 = time.perf_counter()
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    dt = time.perf_counter() - t0
    state["stop"] = True
    if kick.locked():
        kick.release()
    co.join()
    return per * threads / dt


def sc_wake_ceiling(b, cls, items, crcs, rep):
    """Reference for the group-commit bar (see wake_ceiling), measured in
    turn with the peers' thread runs."""
    n = b.args.n_threads
    for T in b.args.threads:
        b.best("cpython", "wake%d" % T, wake_ceiling(T, n))


class CeilingRow:
    """The group-commit ceiling (sc_wake_ceiling), run in the thread
    scenario's turns like a peer."""
    name = "cpython"
    threads_ok = True


def run_throughput(b, peers_run, items, crcs):
    """Every scenario, repetitions interleaved across the peers: repetition
    r of every peer runs before repetition r + 1 of any, and the best of
    each peer's repetitions is kept. A slow spell of this shared machine
    (its speed swings by up to 1.6x within minutes) then lands on every
    peer's turn alike instead of on one peer's whole turn."""
    for title, fn in SCENARIOS:
        runners = []
        for cls in peers_run:
            if fn is sc_threads and not cls.threads_ok:
                say("-- %s: not thread-safe for concurrent durable puts; skipped" % cls.name)
            else:
                runners.append((cls, fn))
        if fn is sc_threads and any(cls.name == "pylog" for cls in peers_run):
            runners.append((CeilingRow, sc_wake_ceiling))
        failed = set()
        for rep in range(b.args.reps):
            for cls, run in runners:
                if cls.name in failed:
                    continue
                say("== %s: %s (repetition %d of %d)" % (title, cls.name, rep + 1, b.args.reps))
                t0 = time.time()
                errors = len(b.errors)
                b.guarded(cls.name, title, lambda: run(b, cls, items, crcs, rep))
                if len(b.errors) > errors:
                    failed.add(cls.name)
                say("   %.1f s  %s" % (time.time() - t0, {
                    k: round(v, 2) for k, v in b.results.get(cls.name, {}).items()}))


SCENARIOS = [
    ("send_batch, no fsync + consume", sc_batch_nosync),
    ("per-record, no fsync", sc_one_nosync),
    ("fsync per batch", sc_fsync_batch),
    ("fsync per record", sc_fsync_record),
    ("threads, fsync per record", sc_threads),
]


# --------------------------------------------------------------------------
# end-to-end latency
# --------------------------------------------------------------------------

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
    from pylog.store import topic_slot
    from pylog.partition import Cursor
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
                [sys.executable, os.path.abspath(__file__), "--_latency-child",
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


# --------------------------------------------------------------------------
# pylog-only extras (reported without a bar)
# --------------------------------------------------------------------------

def json_records(n, seed=42):
    import random
    rng = random.Random(seed)
    kinds = ["ORDER_PLACED", "ORDER_PAID", "ORDER_SHIPPED", "ORDER_CANCELLED"]
    out = []
    for i in range(n):
        doc = {
            "eventType": rng.choice(kinds),
            "orderId": "ord-%08d" % rng.randrange(10 ** 8),
            "userId": "user-%d" % rng.randrange(100000),
            "amount": round(rng.uniform(1, 500), 2),
            "currency": "EUR",
            "ts": 1700000000000 + i * 17,
            "items": [{"sku": "SKU-%05d" % rng.randrange(100000),
                       "qty": rng.randrange(1, 5)} for _ in range(rng.randrange(1, 4))],
        }
        out.append((("user-%d" % rng.randrange(1000)).encode(),
                    json.dumps(doc, separators=(",", ":")).encode()))
    return out


def extra_zstd(b, ex):
    import pylog
    n = b.args.n_zstd
    items = json_records(n)
    raw_bytes = sum(len(k) + len(v) for k, v in items)
    bs = b.args.batch
    batches = [items[i:i + bs] for i in range(0, n, bs)]
    crc = P.checksum(v for _, v in items)
    for comp in (None, "zstd"):
        d = tempfile.mkdtemp(prefix="zstd-", dir=b.base)
        try:
            best_p = best_c = 0
            size = None
            for rep in range(b.args.reps):
                path = os.path.join(d, "log%d" % rep)
                with pylog.open(path, sync="never") as log:
                    kw = {"compression": comp} if comp else {}
                    log.create_topic("j", partitions=1, exist_ok=True, **kw)
                    p = log.producer()
                    t0 = time.perf_counter()
                    for bt in batches:
                        p.send_batch("j", bt, partition=0)
                    best_p = max(best_p, n / (time.perf_counter() - t0))
                    p.flush()
                    if size is None:
                        size = P.pylog_topic_bytes(log, "j", path)
                    c = log.consumer("j", group_id="z", auto_offset_reset="earliest",
                                     enable_auto_commit=False)
                    t0 = time.perf_counter()
                    cnt = cr = 0
                    idle = 0
                    while cnt < n and idle < 3:
                        recs = P._flatten(c.poll(timeout=0.5, max_records=10000))
                        if not recs:
                            idle += 1
                            continue
                        for r in recs:
                            cr = P.crc32(r.value, cr)
                        cnt += len(recs)
                    best_c = max(best_c, n / (time.perf_counter() - t0))
                    b.check("pylog", "zstd consume", (cnt, cr), n, crc)
                    c.close()
                    p.close()
            tag = comp or "none"
            ex["json_%s_produce" % tag] = best_p
            ex["json_%s_consume" % tag] = best_c
            ex["json_%s_bytes_per_record" % tag] = size / n
        finally:
            shutil.rmtree(d, ignore_errors=True)
    ex["json_record_bytes"] = raw_bytes / n
    ex["zstd_ratio"] = ex["json_none_bytes_per_record"] / ex["json_zstd_bytes_per_record"]
    ex["zstd_ratio_vs_payload"] = ex["json_record_bytes"] / ex["json_zstd_bytes_per_record"]


def extra_partitions(b, ex):
    import pylog
    d = tempfile.mkdtemp(prefix="parts-", dir=b.base)
    path = os.path.join(d, "log")
    try:
        t0 = time.perf_counter()
        with pylog.open(path, sync="never") as log:
            log.create_topic("many", partitions=1000, exist_ok=True)
        ex["create_1000_partitions_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        log = pylog.open(path, sync="never")
        ex["open_1000_partitions_s"] = time.perf_counter() - t0
        try:
            p = log.producer()
            t0 = time.perf_counter()
            for i in range(1000):
                p.send("many", b"x" * 100, key=b"k" * 16, partition=i)
            ex["send_1_to_each_of_1000_s"] = time.perf_counter() - t0
            p.close()
        finally:
            log.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _handoff_run(b, hold, n, gap_s):
    """Producer rate (sends/s) with a consumer thread of the same process
    polling: one send every ``gap_s`` (0: back to back). ``hold`` False
    turns the hand-off off (pl_appender.hold_max_ns = 0)."""
    import pylog
    d = tempfile.mkdtemp(prefix="handoff-", dir=b.base)
    try:
        with pylog.open(os.path.join(d, "log"), sync="never") as log:
            log.create_topic("h", partitions=1, exist_ok=True)
            c = log.consumer("h", group_id="h", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            p = log.producer()
            p.send("h", b"x")
            c.poll(timeout=1)
            if not hold:
                log.partition("h", 0)._appender.hold_max_ns = 0
            got = [0]

            def consume():
                idle = 0
                while got[0] < n and idle < 10:
                    k = len(c.poll(timeout=1.0, max_records=10000))
                    got[0] += k
                    idle = 0 if k else idle + 1
            th = threading.Thread(target=consume)
            th.start()
            key, v = b"k" * 16, b"v" * b.args.size
            cpu0 = time.thread_time()
            t0 = t_next = time.perf_counter()
            for _ in range(n):
                if gap_s:
                    t_next += gap_s
                    pace(t_next)
                p.send("h", v, key=key)
            wall = time.perf_counter() - t0
            cpu = time.thread_time() - cpu0
            th.join(60)
            if got[0] != n:
                raise Mismatch("hand-off run: consumed %d of %d" % (got[0], n))
            c.close()
            p.close()
        return n / wall, cpu / n
    finally:
        shutil.rmtree(d, ignore_errors=True)


def extra_handoff(b, ex):
    """What the same-process hand-off (pylog._native.Readers) costs a
    producer whose consumer shares the process, on and off in turn: the
    send rate back to back (never held: its appends are closer than
    HOLD_GAP_NS), and the producer's CPU per send at one send per ms (each
    one held until the woken consumer has the GIL)."""
    for rep in range(b.args.reps):
        for hold in (True, False):
            tag = "on" if hold else "off"
            rate, _ = _handoff_run(b, hold, b.args.n_handoff, 0)
            key = "handoff_%s_back_to_back_sends_per_s" % tag
            ex[key] = max(ex.get(key, 0), rate)
            _, cpu = _handoff_run(b, hold, 1000, 0.001)
            key = "handoff_%s_sparse_cpu_us_per_send" % tag
            ex[key] = min(ex.get(key, float("inf")), cpu * 1e6)


def rss_bytes():
    """(total RSS, anonymous RSS) in bytes; total includes mapped file pages."""
    tot = anon = 0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                tot = int(line.split()[1]) * 1024
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
    return tot, anon


def _rss_summary(ex, phase, samples, MB):
    ex["rss_%s_first_mb" % phase] = samples[0][0] / MB
    ex["rss_%s_max_mb" % phase] = max(x[0] for x in samples) / MB
    ex["rss_%s_end_mb" % phase] = samples[-1][0] / MB
    ex["rss_anon_%s_first_mb" % phase] = samples[0][1] / MB
    ex["rss_anon_%s_max_mb" % phase] = max(x[1] for x in samples) / MB


def extra_rss(b, ex):
    import pylog
    total = int(b.args.rss_gb * (1 << 30))
    vsize = 4096
    per_batch = 128          # ~512 KiB batches, under the 1 MiB max_message_bytes
    value = bytes(range(256)) * (vsize // 256)
    batch = [(b"k%015d" % i, value) for i in range(per_batch)]
    nb = max(1, total // (vsize * per_batch))
    limit = b.args.rss_time_limit
    d = tempfile.mkdtemp(prefix="rss-", dir=b.base)
    MB = 1 << 20
    try:
        with pylog.open(os.path.join(d, "log"), sync="never") as log:
            log.create_topic("big", partitions=1, exist_ok=True)
            p = log.producer()
            samples = []
            r0 = rss_bytes()
            t0 = time.perf_counter()
            done = 0
            for i in range(nb):
                p.send_batch("big", batch, partition=0)
                done += 1
                if i % 64 == 0:
                    samples.append(rss_bytes())
                    if time.perf_counter() - t0 > limit:
                        break
            p.flush()
            dt = time.perf_counter() - t0
            samples.append(rss_bytes())
            n = done * per_batch
            ex["rss_data_gb"] = n * vsize / (1 << 30)
            ex["rss_produce_mb_per_s"] = n * vsize / MB / dt
            ex["rss_before_mb"] = r0[0] / MB
            _rss_summary(ex, "produce", samples, MB)
            p.close()
            c = log.consumer("big", group_id="rss", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            get = getattr(c, "poll_values", None)
            samples = []
            cnt = 0
            idle = 0
            i = 0
            t0 = time.perf_counter()
            while cnt < n and idle < 3 and time.perf_counter() - t0 < limit:
                if get is not None:
                    got = get(timeout=0.5, max_records=per_batch)
                else:
                    got = P._flatten(c.poll(timeout=0.5, max_records=per_batch))
                if not got:
                    idle += 1
                    continue
                cnt += len(got)
                i += 1
                if i % 64 == 0:
                    samples.append(rss_bytes())
            dt = time.perf_counter() - t0
            samples.append(rss_bytes())
            c.close()
            if cnt != n and time.perf_counter() - t0 < limit:
                b.mismatch = True
                raise Mismatch("rss consume: %d of %d records" % (cnt, n))
            ex["rss_consumed_gb"] = cnt * vsize / (1 << 30)
            ex["rss_consume_mb_per_s"] = cnt * vsize / MB / dt
            _rss_summary(ex, "consume", samples, MB)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

FIGURES = [
    # metric, label, unit, higher is better
    ("batch_produce", "produce, batches of {batch}, no fsync", "rec/s", True),
    ("one_produce", "produce, one record per call, no fsync", "rec/s", True),
    ("consume", "consume as objects/rows, checked", "rec/s", True),
    ("consume_values", "consume raw values (pylog poll_values)", "rec/s", True),
    ("fsync1000_produce", "produce, one fsync per {batch}", "rec/s", True),
    ("fsync1_produce", "produce, one fsync per record", "rec/s", True),
    ("threads1_produce", "durable per record, 1 thread", "rec/s", True),
    ("threads4_produce", "durable per record, 4 threads", "rec/s", True),
    ("threads16_produce", "durable per record, 16 threads", "rec/s", True),
    ("lat_same_p50_us", "latency p50, same process", "us", False),
    ("lat_same_p99_us", "latency p99, same process", "us", False),
    ("lat_floor_p50_us", "latency p50, same process, checked read without Consumer", "us", False),
    ("lat_proc_p50_us", "latency p50, across processes", "us", False),
    ("lat_proc_p99_us", "latency p99, across processes", "us", False),
    ("bytes_per_record", "bytes on disk per record (batches)", "B", False),
    ("allocated_per_record", "allocated blocks per record, preallocation incl.", "B", False),
]


def fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if unit == "rec/s" or (abs(v) >= 1000 and unit != "B"):
        return "{:,.0f}".format(v)
    if abs(v) >= 100:
        return "%.0f" % v
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def bars(b):
    """(bar, pylog value, peer label, peer value, ratio, required, holds)."""
    g = b.get
    rows = []

    def ratio_bar(text, metric, peer, req, higher=True, peer_metric=None, stretch=False):
        pv = g("pylog", metric)
        qv = g(peer, peer_metric or metric)
        ratio = pv / qv if pv and qv else None
        if ratio is None:
            holds = "n/a"
        elif higher:
            holds = "yes" if ratio >= req else "no"
        else:
            holds = "yes" if ratio <= req else "no"
        rows.append((text + (" (stretch)" if stretch else ""), pv,
                     "%s %s" % (peer, peer_metric or metric), qv, ratio,
                     ("≥ %.1fx" if higher else "≤ %.1fx") % req, holds))

    ratio_bar("send_batch, no fsync", "batch_produce", "lmdb", 1.0)
    ratio_bar("send_batch, no fsync", "batch_produce", "sqlite", 3.0)
    ratio_bar("send_batch, no fsync", "batch_produce", "raw", 0.5, stretch=True)
    ratio_bar("send, no fsync", "one_produce", "raw", 0.5)
    ratio_bar("send, no fsync", "one_produce", "raw", 1.0, stretch=True)
    ratio_bar("consume Records", "consume", "sqlite", 1.0)
    ratio_bar("consume raw values", "consume_values", "sqlite", 1.5, peer_metric="consume")
    ratio_bar("fsync per 1000 records", "fsync1000_produce", "sqlite", 2.0)
    ratio_bar("fsync per 1000 records", "fsync1000_produce", "lmdb", 1.0)
    ratio_bar("fsync per record, 1 thread", "fsync1_produce", "raw", 0.8)
    ratio_bar("group commit, 16 threads vs 1", "threads16_produce", "pylog", 10.0,
              peer_metric="threads1_produce")
    # what the bar could be at most here: CPython's block-and-wake ceiling
    # for 16 threads over the same one-thread figure (wake_ceiling)
    cv, one = g("cpython", "wake16"), g("pylog", "threads1_produce")
    if cv and one:
        rows.append(("(ceiling: 16 CPython threads, sync free, vs 1)", cv,
                     "pylog threads1_produce", one, cv / one, "reference",
                     "bar reachable" if cv / one >= 10.0 else "bar unreachable"))
    ratio_bar("latency p50, same process", "lat_same_p50_us", "raw", 1.0, higher=False)
    # a checked read with no consumer around it (lat_pylog_floor) against
    # the same raw figure: what the Consumer adds (one run's p50 says
    # nothing of reachability: both sides swing with the machine)
    fv, rv = g("pylog", "lat_floor_p50_us"), g("raw", "lat_same_p50_us")
    if fv and rv:
        rows.append(("(floor: checked Partition.wait_fetch, no Consumer)", fv,
                     "raw lat_same_p50_us", rv, fv / rv, "reference",
                     "floor at or under raw" if fv / rv <= 1.0 else "floor above raw"))
    pv = g("pylog", "lat_proc_p50_us")
    rows.append(("latency p50, across processes", pv, "absolute", 100.0,
                 None, "< 100 us", "n/a" if pv is None else ("yes" if pv < 100 else "no")))
    ratio_bar("bytes on disk per record", "bytes_per_record", "raw", 1.1, higher=False)
    return rows


def report(b, peers_run, machine, extras, started):
    a = b.args
    out = []
    w = out.append
    w("## Machine\n")
    for k, v in machine.items():
        w("- **%s**: %s" % (k, v))
    w("")
    w("## Figures\n")
    w("Payload: %d-byte values, 16-byte keys, fixed seed 42, identical for every peer. "
      "Throughput: best of %d repetitions, each on a fresh directory, the "
      "repetitions interleaved across the peers; latency: p50/p99 of %d samples "
      "taken in %d rounds (every job in turn within a round, the order "
      "rotating), one record every %.1f ms, %d warm-up records dropped per round. "
      "Every consume is checked (count + CRC32 chained over the values in order; "
      "thread runs: count). Bytes on disk: sum over the peer's files of "
      "min(size, allocated blocks) after producing, while open; for pylog the "
      "valid segment bytes (describe_topic) plus index/state files, without "
      "the segment's preallocation, which the 'allocated' row includes."
      % (a.size, a.reps, a.lat_n, a.lat_rounds, a.lat_interval_ms, 100))
    slow = ", ".join("%s %d%%" % (c.name, round(c.scale * 100))
                     for c in peers_run if c.scale != 1.0)
    w("Records per run: no fsync %d, fsync per batch %d (slow peers use a fraction: %s), "
      "fsync per record %d, threads %d in total.\n"
      % (a.n, a.n_fsync1000, slow or "none", a.n_fsync_record, a.n_threads))
    names = [c.name for c in peers_run]
    w("| figure | unit | " + " | ".join(names) + " |")
    w("|---|---|" + "---|" * len(names))
    for metric, label, unit, _hib in FIGURES:
        vals = [b.get(nm, metric) for nm in names]
        if all(v is None for v in vals):
            continue
        w("| %s | %s | %s |" % (label.format(batch=a.batch), unit,
                                " | ".join(fmt(v, unit) for v in vals)))
    w("")
    if "pylog" in names:
        w("### pylog ratio to each peer (pylog / peer; throughput: >1 is pylog faster, "
          "latency and bytes: <1 is pylog better)\n")
        others = [nm for nm in names if nm != "pylog"]
        w("| figure | " + " | ".join(others) + " |")
        w("|---|" + "---|" * len(others))
        for metric, label, unit, _hib in FIGURES:
            pv = b.get("pylog", metric)
            if pv is None:
                continue
            cells = []
            for nm in others:
                qv = b.get(nm, metric)
                if metric == "consume_values":
                    qv = b.get(nm, "consume")
                cells.append("%.2fx" % (pv / qv) if qv else "-")
            if all(c == "-" for c in cells):
                continue
            w("| %s | %s |" % (label.format(batch=a.batch), " | ".join(cells)))
        w("")
    w("## Bars\n")
    w("| bar | pylog | peer | peer value | ratio | required | holds |")
    w("|---|---|---|---|---|---|---|")
    brow = bars(b)
    for text, pv, peer, qv, ratio, req, holds in brow:
        w("| %s | %s | %s | %s | %s | %s | %s |" % (
            text, fmt(pv), peer, fmt(qv), "%.2fx" % ratio if ratio else "-", req, holds))
    w("")
    if extras:
        w("## Extras (pylog, no bar yet)\n")
        w("| figure | value |")
        w("|---|---|")
        for k, v in extras.items():
            w("| %s | %s |" % (k, fmt(v) if not isinstance(v, float) or abs(v) >= 0.01
                               else "%.4f" % v))
        w("")
    if b.errors:
        w("## Errors\n")
        for peer, sc, msg in b.errors:
            w("- %s / %s: %s" % (peer, sc, msg))
        w("")
    w("Total time: %.0f s" % (time.time() - started))
    return "\n".join(out), brow


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="pylog vs raw file, sqlite3, lmdb, persist-queue, Redis Streams")
    ap.add_argument("--size", type=int, default=100, help="value bytes (default 100)")
    ap.add_argument("--n", type=int, default=200_000,
                    help="records per no-fsync run (default 200000); the durable "
                         "runs default to n/10 and n/100")
    ap.add_argument("--n-fsync1000", type=int, default=None,
                    help="records per fsync-per-batch run (default n/10)")
    ap.add_argument("--n-fsync-record", type=int, default=None,
                    help="records per fsync-per-record run (default n/100, at least 500)")
    ap.add_argument("--n-threads", type=int, default=None,
                    help="records per threaded durable run (default 2 x n-fsync-record)")
    ap.add_argument("--threads", default="1,4,16", help="thread counts (default 1,4,16)")
    ap.add_argument("--batch", type=int, default=1000, help="records per batch (default 1000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, best kept (default 3)")
    ap.add_argument("--only", default=None,
                    help="comma list of peers: pylog,raw,sqlite,lmdb,persistqueue,redis")
    ap.add_argument("--skip", default="",
                    help="comma list of sections to skip: throughput,latency,extras")
    ap.add_argument("--lat-n", type=int, default=2000, help="latency samples (default 2000)")
    ap.add_argument("--lat-rounds", type=int, default=4,
                    help="rounds the latency samples are split into, every latency "
                         "job in turn within a round (default 4)")
    ap.add_argument("--lat-interval-ms", type=float, default=1.0,
                    help="gap between latency records (default 1 ms)")
    ap.add_argument("--n-zstd", type=int, default=50_000,
                    help="JSON-like records for the zstd extra (default 50000)")
    ap.add_argument("--n-handoff", type=int, default=100_000,
                    help="back-to-back sends per run of the hand-off extra (default 100000)")
    ap.add_argument("--rss-gb", type=float, default=2.0,
                    help="GiB produced and consumed for the RSS extra (default 2; 0 skips)")
    ap.add_argument("--rss-time-limit", type=float, default=90.0,
                    help="stop producing / consuming for the RSS extra after this "
                         "many seconds each (default 90)")
    ap.add_argument("--no-extras", action="store_true", help="same as --skip extras")
    ap.add_argument("--no-install", action="store_true",
                    help="do not apt-get install redis-server when it is missing")
    ap.add_argument("--tmpdir", default=None, help="where the temporary directories go")
    ap.add_argument("--json", default=None, metavar="PATH", help="write all numbers as JSON")
    ap.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    a = ap.parse_args(argv)
    if a.n_fsync1000 is None:
        a.n_fsync1000 = max(a.batch, a.n // 10)
    if a.n_fsync_record is None:
        a.n_fsync_record = max(500, a.n // 100)
    if a.n_threads is None:
        a.n_threads = 2 * a.n_fsync_record
    a.threads = [int(x) for x in a.threads.split(",") if x.strip()]
    a.skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    if a.no_extras:
        a.skip.add("extras")
    return a


PEER_PACKAGES = {"redis": "redis", "persistqueue": "persist-queue"}


def ensure_peer_packages():
    """pip-install the peers' Python packages that are missing (a fresh
    clone's venv has only pylog's test extras); a failure leaves the peer
    to be skipped with its reason."""
    import importlib.util
    missing = [dist for mod, dist in PEER_PACKAGES.items()
               if importlib.util.find_spec(mod) is None]
    if missing:
        say("-- installing peer packages: %s" % " ".join(missing))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q"] + missing,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        importlib.invalidate_caches()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_latency-child"]:
        latency_child(argv[1], int(argv[2]), int(argv[3]))
        return 0
    a = parse_args(argv)
    started = time.time()

    wanted = P.ALL_PEERS
    if a.only:
        names = [x.strip() for x in a.only.split(",") if x.strip()]
        bad = [x for x in names if x not in P.PEERS_BY_NAME]
        if bad:
            say("unknown peer(s): %s (known: %s)" % (", ".join(bad), ", ".join(P.PEERS_BY_NAME)))
            return 1
        wanted = [P.PEERS_BY_NAME[x] for x in names]
    P.RedisPeer.install = not a.no_install
    if not a.no_install:
        ensure_peer_packages()

    peers_run = []
    skipped = {}
    for cls in wanted:
        ok, why = cls.available()
        if ok:
            peers_run.append(cls)
        else:
            skipped[cls.name] = why
            say("-- skipping %s: %s" % (cls.name, why))

    base = tempfile.mkdtemp(prefix="pylog-compare-", dir=a.tmpdir)
    atexit.register(shutil.rmtree, base, True)
    machine = machine_info(peers_run, base)
    for nm, why in skipped.items():
        machine[nm] = "skipped: " + why
    say("## machine: " + "; ".join("%s=%s" % kv for kv in machine.items()))

    b = Bench(a, base)
    extras = {}
    try:
        n_items = max(a.n, a.n_fsync1000, a.n_fsync_record, a.n_threads)
        say("generating %d records (%d-byte values, 16-byte keys, seed 42)" % (n_items, a.size))
        items = P.make_items(n_items, a.size)
        crc_cache = {}

        def crcs(n):
            if n not in crc_cache:
                crc_cache[n] = P.checksum(v for _, v in items[:n])
            return crc_cache[n]

        if "throughput" not in a.skip:
            run_throughput(b, peers_run, items, crcs)
        del items
        names = [c.name for c in peers_run]
        if "latency" not in a.skip:
            run_latency(b, "pylog" in names, "raw" in names)
        if "extras" not in a.skip and "pylog" in names:
            jobs = [("zstd", extra_zstd), ("1000 partitions", extra_partitions),
                    ("same-process hand-off", extra_handoff)]
            if a.rss_gb > 0:
                jobs.append(("rss", extra_rss))
            for title, fn in jobs:
                say("== extra: %s" % title)
                b.guarded("pylog", "extra " + title, lambda fn=fn: fn(b, extras))
    finally:
        P._kill_redis_procs()

    text, brow = report(b, peers_run, machine, extras, started)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "args": {k: (sorted(v) if isinstance(v, set) else v)
                                                   for k, v in vars(a).items()},
                       "results": b.results, "extras": extras,
                       "bars": [dict(zip(("bar", "pylog", "peer", "peer_value", "ratio",
                                          "required", "holds"), r)) for r in brow],
                       "skipped": skipped, "errors": b.errors}, f, indent=2)
    if b.mismatch:
        return 2
    return 1 if b.errors else 0


if __name__ == "__main__":
    sys.exit(main())
