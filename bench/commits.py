"""Commit per record: the at-least-once loop (poll, process, commit) with a
commit after every record, pylog against its peers in the same run.

    python bench/commits.py --n 50000            # standalone, prints a table
    (bench/compare.py runs it as its "commits" section)

pylog: ``for r in consumer.poll(): consumer.commit(message=r)`` over a
topic of ``n`` 100-byte records, ``sync="never"`` and ``"interval"``; the
same loop with ``poll(max_records=1)``; ``Log.meta.commit`` of one offset
from 1 and from 16 threads with ``sync="always"`` (group commit). Peers do
only the acknowledgement per record (no read of their own: they are
favoured): sqlite3 (``synchronous=OFF``, WAL, one UPDATE + commit per
record), lmdb (one put per record in its own write transaction, ``sync=False``),
Redis Streams (``XREADGROUP`` COUNT 100, one ``XACK`` per record) when a
server answers on 127.0.0.1:6379.
"""

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import pylog  # noqa: E402


def _pylog_loop(base, n, sync, one_at_a_time=False):
    d = tempfile.mkdtemp(prefix="commits-", dir=base)
    try:
        with pylog.open(os.path.join(d, "log"), sync=sync) as log:
            log.create_topic("t", partitions=1)
            prod = log.producer()
            for i in range(0, n, 1000):
                prod.send_batch("t", [b"x" * 100] * min(1000, n - i))
            c = log.consumer("t", group_id="g", enable_auto_commit=False,
                             auto_offset_reset="earliest")
            done = 0
            t0 = time.perf_counter()
            while done < n:
                recs = c.poll(timeout_ms=1000, max_records=1 if one_at_a_time else 500)
                if not recs:
                    raise RuntimeError("poll returned nothing before the end")
                for r in recs:
                    c.commit(message=r)
                done += len(recs)
            dt = time.perf_counter() - t0
            if log.meta.committed("g", "t", 0) != n:
                raise RuntimeError("the last commit is not what was committed")
            c.close()
        return n / dt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _pylog_threads(base, per_thread, threads):
    d = tempfile.mkdtemp(prefix="commits-", dir=base)
    try:
        with pylog.open(os.path.join(d, "log"), sync="always") as log:
            log.create_topic("t", partitions=threads)
            for p in range(threads):
                log.meta.commit("g", {("t", p): 0})

            def work(p):
                for i in range(1, per_thread + 1):
                    log.meta.commit("g", {("t", p): i})
            ts = [threading.Thread(target=work, args=(p,)) for p in range(threads)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            dt = time.perf_counter() - t0
            if any(log.meta.committed("g", "t", p) != per_thread for p in range(threads)):
                raise RuntimeError("a thread's last commit is missing")
        return threads * per_thread / dt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _sqlite(base, n):
    d = tempfile.mkdtemp(prefix="commits-", dir=base)
    try:
        db = sqlite3.connect(os.path.join(d, "c.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE offsets (k TEXT PRIMARY KEY, off INTEGER)")
        db.execute("INSERT INTO offsets VALUES ('g/t/0', 0)")
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            db.execute("BEGIN")
            db.execute("UPDATE offsets SET off = ? WHERE k = 'g/t/0'", (i,))
            db.execute("COMMIT")
        dt = time.perf_counter() - t0
        db.close()
        return n / dt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _lmdb(base, n):
    import lmdb
    d = tempfile.mkdtemp(prefix="commits-", dir=base)
    try:
        env = lmdb.open(os.path.join(d, "c"), sync=False, metasync=False, map_size=1 << 26)
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            with env.begin(write=True) as txn:
                txn.put(b"g/t/0", i.to_bytes(8, "big"))
        dt = time.perf_counter() - t0
        env.close()
        return n / dt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _redis(n):
    """XACK per record, or (None, why)."""
    try:
        import redis
    except ImportError:
        return None, "the redis package is not installed (pip install -e '.[bench]')"
    r = redis.Redis(host="127.0.0.1", port=6379)
    try:
        r.ping()
    except redis.exceptions.ConnectionError as exc:
        return None, f"no Redis server on 127.0.0.1:6379 ({exc})"
    stream = "pylog-bench-commits-%d" % os.getpid()
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(stream, {"v": b"x" * 100})
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        r.xgroup_create(stream, "g", id="0")
        done = 0
        t0 = time.perf_counter()
        while done < n:
            got = r.xreadgroup("g", "c", {stream: ">"}, count=100)
            for _, entries in got:
                for eid, _ in entries:
                    r.xack(stream, "g", eid)
                    done += 1
        dt = time.perf_counter() - t0
        return n / dt, None
    finally:
        r.delete(stream)


def run_commits(base, n, reps=3, say=print):
    """{figure: value} (best of ``reps``); Redis is absent when it cannot run."""
    out = {}

    def best(name, fn):
        out[name] = max(fn() for _ in range(reps))
        say("  %-40s %12.0f /s" % (name, out[name]))
    say("== commit per record (n=%d, best of %d)" % (n, reps))
    best("pylog never: poll, commit each", lambda: _pylog_loop(base, n, "never"))
    best("pylog interval: poll, commit each", lambda: _pylog_loop(base, n, "interval"))
    best("pylog never: poll(max_records=1), commit",
         lambda: _pylog_loop(base, min(n, 20000), "never", one_at_a_time=True))
    best("pylog always: 1 thread", lambda: _pylog_threads(base, max(200, n // 100), 1))
    best("pylog always: 16 threads", lambda: _pylog_threads(base, max(100, n // 400), 16))
    best("sqlite3 synchronous=OFF: UPDATE each", lambda: _sqlite(base, n))
    best("lmdb sync=False: put each", lambda: _lmdb(base, n))
    got, why = _redis(min(n, 20000))
    if got is None:
        say("  -- skipping Redis XACK: %s" % why)
    else:
        best("redis: XACK each", lambda: _redis(min(n, 20000))[0])
    return out


def bars(out):
    """(bar, value, reference, ratio, required, holds)."""
    rows = []

    def ratio(text, a, b, req):
        va, vb = out.get(a), out.get(b)
        r = va / vb if va and vb else None
        rows.append((text, va, b, vb, r, "≥ %.1fx" % req,
                     "n/a" if r is None else ("yes" if r >= req else "no")))
    v = out.get("pylog never: poll, commit each")
    rows.append(("commit per record, never: ≥ 100,000/s", v, "absolute", 100000.0,
                 None, "≥ 100000/s", "n/a" if v is None else ("yes" if v >= 100000 else "no")))
    ratio("commit per record, never, vs sqlite3", "pylog never: poll, commit each",
          "sqlite3 synchronous=OFF: UPDATE each", 1.0)
    ratio("commits, always, 16 threads vs 1", "pylog always: 16 threads",
          "pylog always: 1 thread", 5.0)
    return rows


def commit_report(out):
    """Markdown: every figure, then the bars."""
    lines = ["## Commit per record\n", "| figure | per second |", "|---|---|"]
    lines += ["| %s | %.0f |" % kv for kv in out.items()]
    lines += ["", "| bar | pylog | reference | value | ratio | required | holds |",
              "|---|---|---|---|---|---|---|"]
    for text, va, ref, vb, r, req, holds in bars(out):
        lines.append("| %s | %.0f | %s | %.0f | %s | %s | %s |" % (
            text, va or 0, ref, vb or 0, "%.2fx" % r if r else "-", req, holds))
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    base = tempfile.mkdtemp(prefix="pylog-commits-")
    try:
        out = run_commits(base, a.n, a.reps)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(commit_report(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
