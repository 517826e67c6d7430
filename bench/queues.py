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

Peers, when installed or reachable (skipped with a printed reason
otherwise): persist-queue ``SQLiteAckQueue`` (``get`` + ``ack`` per item,
its default auto-commit) and litequeue (``pop`` + ``done`` per message), in
the same temporary directory — both commit (fsync) every acknowledgement,
so compare them with pylog's ``sync="always"`` row, a commit per record;
Redis
Streams (``XREADGROUP`` COUNT 500, one ``XACK`` per record) on
127.0.0.1:6379; RabbitMQ (quorum queue, prefetch 300, ``basic_ack`` per
message) on 127.0.0.1:5672 as guest/guest.
"""

import argparse
import multiprocessing as mp
import os
import resource
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


# CPU seconds per record of every worker process together, by worker count
# (no job): what the wall-clock ratio would be on idle cores, whatever else
# the machine runs
CPU_PER_RECORD = {}


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


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
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        start.set()
        for p in procs:
            p.join()
        dt = time.perf_counter() - t0
        if counter.value != total:
            raise RuntimeError(f"processed {counter.value} of {total}")
        if not job_s:
            CPU_PER_RECORD[workers] = (_children_cpu() - cpu0) / total
        return total / dt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def pylog_one(base, n, sync, commit_each=False):
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
                    if commit_each:
                        c.commit()
                c.commit()
                done += len(recs)
            dt = time.perf_counter() - t0
            c.close()
        return n / dt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def persist_queue(base, n):
    try:
        import persistqueue
    except ImportError as exc:
        return None, f"persist-queue is not installed ({exc})"
    d = tempfile.mkdtemp(prefix="queues-pq-", dir=base)
    try:
        q = persistqueue.SQLiteAckQueue(d, multithreading=False)
        for _ in range(n):
            q.put(PAYLOAD)
        t0 = time.perf_counter()
        for _ in range(n):
            item = q.get(raw=True)
            q.ack(id=item["pqid"])
        dt = time.perf_counter() - t0
        return n / dt, None
    finally:
        shutil.rmtree(d, ignore_errors=True)


def lite_queue(base, n):
    try:
        import litequeue
    except ImportError as exc:
        return None, f"litequeue is not installed ({exc})"
    d = tempfile.mkdtemp(prefix="queues-lq-", dir=base)
    try:
        q = litequeue.LiteQueue(os.path.join(d, "q.sqlite3"))
        for _ in range(n):
            q.put(PAYLOAD.decode())
        t0 = time.perf_counter()
        for _ in range(n):
            m = q.pop()
            q.done(m.message_id)
        dt = time.perf_counter() - t0
        q.close()
        return n / dt, None
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


def run_queues(base, n, peer_n, job_n, say=print):
    """{figure: records/s} and [skip notes]: every case of the module docstring."""
    out = {}
    notes = []

    def put(name, value):
        out[name] = value
        say("  %-50s %12.0f /s" % (name, value))
    say("== work queues: accept per record (n=%d, peers n=%d)" % (n, peer_n))
    put("pylog, 1 worker, sync=never", pylog_one(base, n, "never"))
    put("pylog, 1 worker, sync=interval", pylog_one(base, n, "interval"))
    put("pylog, 1 worker, sync=always, commit per record",
        pylog_one(base, max(200, peer_n // 20), "always", commit_each=True))
    put("pylog, 1 process, 4 partitions, no job", pylog_workers(base, n, 1))
    put("pylog, 4 processes, 4 partitions, no job", pylog_workers(base, n, 4))
    put("pylog, 1 process, 200 us job", pylog_workers(base, job_n, 1, job_s=0.0002))
    put("pylog, 4 processes, 200 us job", pylog_workers(base, job_n, 4, job_s=0.0002))
    # the SQLite queues commit (fsync) every acknowledgement: fewer records
    slow_n = max(200, peer_n // 20)
    for name, fn in (("persist-queue SQLiteAckQueue get/ack (fsync each), 1 worker",
                      lambda: persist_queue(base, slow_n)),
                     ("litequeue pop/done (fsync each), 1 worker",
                      lambda: lite_queue(base, slow_n)),
                     ("Redis Streams XREADGROUP/XACK, 1 worker", lambda: redis_streams(peer_n)),
                     ("RabbitMQ quorum queue, basic_ack, 1 worker",
                      lambda: rabbitmq(peer_n))):
        rate, why = fn()
        if rate is None:
            notes.append(f"skipped {name}: {why}")
            say("  " + notes[-1])
        else:
            put(name, rate)
    return out, notes


def queue_report(out, notes):
    """Markdown: every figure, the ratios, the skipped peers."""
    lines = ["## Work queues: accept per record\n", "| figure | records/s |", "|---|---|"]
    lines += ["| %s | %.0f |" % kv for kv in out.items()]
    one = out["pylog, 1 worker, sync=never"]
    peers = {k: v for k, v in out.items() if not k.startswith("pylog")}
    lines.append("")
    for k, v in peers.items():
        lines.append("- pylog 1 worker (never) / %s: %.1fx" % (k, one / v))
    lines.append("- 4 processes / 1, no job: %.2fx (cores: %s)" % (
        out["pylog, 4 processes, 4 partitions, no job"]
        / out["pylog, 1 process, 4 partitions, no job"], os.cpu_count()))
    if 1 in CPU_PER_RECORD and 4 in CPU_PER_RECORD:
        one_cpu, four_cpu = CPU_PER_RECORD[1], CPU_PER_RECORD[4]
        cores = os.cpu_count() or 1
        lines.append(
            "- CPU per record, no job (all workers, from their start to their "
            "exit): 1 process %.2f us, 4 processes %.2f us; on %d idle cores "
            "4 processes / 1 would be at most %.2fx" % (
                one_cpu * 1e6, four_cpu * 1e6, cores,
                min(4, cores) * one_cpu / four_cpu))
    lines.append("- 4 processes / 1, 200 us job: %.2fx" % (
        out["pylog, 4 processes, 200 us job"] / out["pylog, 1 process, 200 us job"]))
    lines += ["- " + n for n in notes]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--peer-n", type=int, default=50_000)
    ap.add_argument("--job-n", type=int, default=8_000)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    base = args.dir or tempfile.gettempdir()
    out, notes = run_queues(base, args.n, args.peer_n, args.job_n)
    print(queue_report(out, notes))


if __name__ == "__main__":
    main()
