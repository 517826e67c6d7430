"""Throughput scenarios of bench/compare.py: the same workload for pylog and
every peer (batch and single sends, fsync per batch and per record,
threads), each read back and checked, best of the repetitions kept.
"""

import collections
import threading
import time

from measure import peer_n, say


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
