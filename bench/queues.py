"""Work queues: accept per record, pylog share consumers against peers in
the same run.

    python bench/queues.py --n 200000

pylog: a topic of ``n`` 100-byte records; share consumers ``poll`` (500 at a
time), ``acknowledge`` every record, ``commit()`` after every poll.

- one worker, ``sync="never"`` and ``"interval"``;
- 1 and 4 worker processes on 4 partitions, ``sync="never"``, with no job
  (CPU bound: on a machine of fewer than 4 free cores the ratio is capped by
  the cores) and with a 200 µs job per record (``time.sleep``: I/O-bound
  workers, the case work queues are for).

Peers, when reachable (skipped with a printed reason otherwise): Redis
Streams (``XREADGROUP`` COUNT 500, one ``XACK`` per record) on
127.0.0.1:6379; RabbitMQ (quorum queue, prefetch 300, ``basic_ack`` per
message) on 127.0.0.1:5672 as guest/guest.
"""

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import pylog  # noqa: E402

PAYLOAD = b"x" * 100


def _fill(path, n, partitions, sync):
    with pylog.open(path, sync=sync) as log:
        log.create_topic("jobs", partitions=partitions)
        prod = log.producer()
        for p in range(partitions):
            share = n // partitions
            for i in range(0, share, 1000):
                prod.send_batch("jobs", [PAYLOAD] * min(1000, share - i), partition=p)
        prod.flush()


def _work(path, sync, job_s, start, counter, stop_at):
    with pylog.open(path, sync=sync) as log:
        c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest")
        start.wait()
        idle = 0
        while idle < 20:
            recs = c.poll(timeout_ms=10, max_records=500)
            if not recs:
                idle += 1
                with counter.get_lock():
                    if counter.value >= stop_at:
                        break
                continue
            idle = 0
            for r in recs:
                if job_s:
                    time.sleep(job_s)
                c.acknowledge(r)
            c.commit()
            with counter.get_lock():
                counter.value += len(recs)
        c.close()


def pylog_workers(base, n, workers, sync="never", partitions=4, job_s=0.0):
    d = tempfile.mkdtemp(prefix="queues-", dir=base)
    try:
        path = os.path.join(d, "log")
        _fill(path, n, partitions, sync)
        total = n // partitions * partitions
        start = mp.Event()
        counter = mp.Value("q", 0)
        procs = [mp.Process(target=_work, args=(path, sync, job_s, start, counter, total))
                 for _ in range(workers)]
        for p in procs:
            p.start()
        time.sleep(0.5)                 # every worker opened its log
        t0 = time.perf_counter()
        start.set()
        for p in procs:
            p.join()
        dt = time.perf_counter() - t0
        if counter.value != total:
            raise RuntimeError(f"processed {counter.value} of {total}")
        return total / dt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def pylog_one(base, n, sync):
    d = tempfile.mkdtemp(prefix="queues-", dir=base)
    try:
        path = os.path.join(d, "log")
        _fill(path, n, 1, sync)
        with pylog.open(path, sync=sync) as log:
            c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest")
            done = 0
            t0 = time.perf_counter()
            while done < n:
                recs = c.poll(timeout_ms=1000, max_records=500)
                if not recs:
                    raise RuntimeError("poll returned nothing before the end")
                for r in recs:
                    c.acknowledge(r)
                c.commit()
                done += len(recs)
            dt = time.perf_counter() - t0
            c.close()
        return n / dt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def redis_streams(n):
    try:
        import redis
        r = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1)
        r.ping()
    except Exception as exc:        # any failure: skipped, with the reason
        return None, f"Redis not reachable on 127.0.0.1:6379 ({type(exc).__name__})"
    key = f"pylog-bench-queues-{os.getpid()}"
    r.delete(key)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(key, {"v": PAYLOAD})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    r.xgroup_create(key, "g", id="0")
    done = 0
    t0 = time.perf_counter()
    while done < n:
        got = r.xreadgroup("g", "c1", {key: ">"}, count=500)
        if not got:
            break
        for _stream, entries in got:
            for eid, _fields in entries:
                r.xack(key, "g", eid)
                done += 1
    dt = time.perf_counter() - t0
    r.delete(key)
    return done / dt, None


def rabbitmq(n):
    try:
        import pika
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", 5672, credentials=pika.PlainCredentials("guest", "guest"),
            socket_timeout=2, blocked_connection_timeout=5))
    except Exception as exc:        # any failure: skipped, with the reason
        return None, f"RabbitMQ not reachable on 127.0.0.1:5672 ({type(exc).__name__})"
    ch = conn.channel()
    q = f"pylog-bench-queues-{os.getpid()}"
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    for _ in range(n):
        ch.basic_publish("", q, PAYLOAD)
    ch.basic_qos(prefetch_count=300)
    done = 0
    t0 = time.perf_counter()
    for method, _props, _body in ch.consume(q, inactivity_timeout=5):
        if method is None:
            break
        ch.basic_ack(method.delivery_tag)
        done += 1
        if done >= n:
            break
    dt = time.perf_counter() - t0
    ch.cancel()
    ch.queue_delete(q)
    conn.close()
    return done / dt, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--peer-n", type=int, default=50_000)
    ap.add_argument("--job-n", type=int, default=8_000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    base = args.dir or tempfile.gettempdir()
    rows = []
    rows.append(("pylog, 1 worker, sync=never", pylog_one(base, args.n, "never")))
    rows.append(("pylog, 1 worker, sync=interval", pylog_one(base, args.n, "interval")))
    one = pylog_workers(base, args.n, 1)
    four = pylog_workers(base, args.n, 4)
    rows.append(("pylog, 1 process, 4 partitions, no job", one))
    rows.append(("pylog, 4 processes, 4 partitions, no job", four))
    job_one = pylog_workers(base, args.job_n, 1, job_s=0.0002)
    job_four = pylog_workers(base, args.job_n, 4, job_s=0.0002)
    rows.append(("pylog, 1 process, 200 us job", job_one))
    rows.append(("pylog, 4 processes, 200 us job", job_four))
    notes = []
    for name, fn in (("Redis Streams XREADGROUP/XACK, 1 worker", redis_streams),
                     ("RabbitMQ quorum queue, basic_ack, 1 worker", rabbitmq)):
        rate, why = fn(args.peer_n)
        if rate is None:
            notes.append(f"skipped {name}: {why}")
        else:
            rows.append((name, rate))
    print(f"{'case':50} {'records/s':>12}")
    for name, rate in rows:
        print(f"{name:50} {rate:12,.0f}")
    print(f"4 processes / 1, no job: {four / one:.2f}x (cores: {os.cpu_count()})")
    print(f"4 processes / 1, 200 us job: {job_four / job_one:.2f}x")
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
