"""Work queues: accept per record, pylog share consumers against peers in
the same run.

    python bench/queues.py --n 200000

pylog: a topic of ``n`` 100-byte records; share consumers ``poll`` (500 at a
time), ``acknowledge`` every record, ``commit()`` after every poll.

- one worker, ``sync="never"`` and ``"interval"``;
- 1 and 4 worker processes on 4 partitions, ``sync="never"``, with no job
  (CPU bound: on a machine of fewer than 4 free cores the ratio is capped by
  the cores) and with a 50 µs and a 200 µs job per record (``time.sleep``:
  I/O-bound workers, the case work queues are for). Each case runs
  ``--reps`` times, the 1- and 4-process runs back to back; the report
  gives the median ratio with its range, the cores, and the CPU per record
  of the workers' loops (time.process_time, so other load on the machine
  does not count), plus, without a job, 4 processes each with a log of its
  own: the CPU cost of 4 processes taking turns on fewer cores, with
  nothing shared.
- ``--idle N``: the CPU that N ``pylog.aio`` share consumers use while
  they wait on an empty queue (bar: 1,000 under 1% of a CPU).

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
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from measure import idle_cpu_share  # noqa: E402

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


def _work(path, sync, job_s, start, counter, stop_at, done, cpu_out):
    with pylog.open(path, sync=sync) as log:
        c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest")
        start.wait()
        cpu0 = time.process_time()
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
                if counter.value >= stop_at:
                    done.set()
        cpu_out.put(time.process_time() - cpu0)
        c.close()


# 4 vs 1 worker processes, per case ("no job", "50 us job", ...): a list of
# (1-process rate, 4-process rate, 1-process CPU us/record, 4-process CPU
# us/record) per repetition, the pair measured back to back
SCALING: dict[str, list[tuple[float, float, float, float]]] = {}
# no job, 4 processes with a log each: CPU us/record per repetition
UNSHARED: list[float] = []


def pylog_workers(base, n, workers, sync="never", partitions=4, job_s=0.0,
                  unshared=False):
    """(records/s, CPU seconds per record of the workers' loops together):
    ``workers`` processes share one queue of ``n`` records on
    ``partitions`` partitions, from the start signal to the commit that
    makes the last record done (opening the log before and closing it
    after are not timed); CPU from each worker's start to its exit from
    the loop (time.process_time: whatever else the machine runs).
    ``unshared``: each worker has a log of its own with its share of the
    records (a reference: the same work with nothing shared)."""
    d = tempfile.mkdtemp(prefix="queues-", dir=base)
    try:
        paths = [os.path.join(d, "log%d" % i) for i in range(workers if unshared else 1)]
        for path in paths:
            _fill(path, n // len(paths), partitions, sync)
        total = n // len(paths) // partitions * partitions * len(paths)
        start, done = mp.Event(), mp.Event()
        counter = mp.Value("q", 0)
        cpu_out = mp.Queue()
        procs = [mp.Process(target=_work, args=(paths[i % len(paths)], sync, job_s, start,
                                                counter, total, done, cpu_out))
                 for i in range(workers)]
        for p in procs:
            p.start()
        time.sleep(0.5)                 # every worker opened its log
        t0 = time.perf_counter()
        start.set()
        done.wait()
        dt = time.perf_counter() - t0
        cpu = sum(cpu_out.get() for _ in procs)
        for p in procs:
            p.join()
        if counter.value != total:
            raise RuntimeError(f"processed {counter.value} of {total}")
        return total / dt, cpu / total
    finally:
        shutil.rmtree(d, ignore_errors=True)


def scaling(base, n, job_s, reps, say=print):
    """SCALING's rows for one case (module docstring): ``reps`` pairs of a
    1-process and a 4-process run."""
    name = "no job" if not job_s else "%d us job" % round(job_s * 1e6)
    rows = SCALING.setdefault(name, [])
    for _ in range(reps):
        one, one_cpu = pylog_workers(base, n, 1, job_s=job_s)
        four, four_cpu = pylog_workers(base, n, 4, job_s=job_s)
        rows.append((one, four, one_cpu * 1e6, four_cpu * 1e6))
        # cores the 4 workers kept busy: CPU seconds / wall seconds
        say("  %-12s 1 process %10.0f /s, 4 processes %10.0f /s: %.2fx; CPU per "
            "record %.2f / %.2f us; cores busy %.2f / %.2f" % (
                name, one, four, four / one, one_cpu * 1e6, four_cpu * 1e6,
                one * one_cpu, four * four_cpu))
        if not job_s:
            UNSHARED.append(pylog_workers(base, n, 4, unshared=True)[1] * 1e6)
            say("  %-12s 4 processes, a log each (nothing shared): CPU per record "
                "%.2f us" % (name, UNSHARED[-1]))
    return rows


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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


def run_queues(base, n, peer_n, job_n, say=print, reps=5):
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
    say("  (cores: %d; load average at start: %.2f)" % (_cores(), os.getloadavg()[0]))
    for job_s, count in ((0.0, n), (0.00005, job_n), (0.0002, job_n)):
        rows = scaling(base, count, job_s, reps, say)
        name = "no job" if not job_s else "%d us job" % round(job_s * 1e6)
        put("pylog, 1 process, 4 partitions, %s (median)" % name,
            statistics.median(r[0] for r in rows))
        put("pylog, 4 processes, 4 partitions, %s (median)" % name,
            statistics.median(r[1] for r in rows))
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
    cores = _cores()
    lines.append("- cores: %d; 4 processes vs 1 on 4 partitions, %d repetitions "
                 "(ratio of each back-to-back pair):" % (
                     cores, max((len(r) for r in SCALING.values()), default=0)))
    for name, rows in SCALING.items():
        ratios = sorted(r[1] / r[0] for r in rows)
        one_cpu = statistics.median(r[2] for r in rows)
        four_cpu = statistics.median(r[3] for r in rows)
        lines.append(
            "  - %s: median %.2fx (min %.2fx, max %.2fx); CPU per record "
            "(workers' loops) 1 process %.2f us, 4 processes %.2f us; cores the "
            "4 processes kept busy (CPU / wall time): median %.2f (min %.2f)" % (
                name, statistics.median(ratios), ratios[0], ratios[-1], one_cpu,
                four_cpu, statistics.median(r[1] * r[3] / 1e6 for r in rows),
                min(r[1] * r[3] / 1e6 for r in rows)))
        if name == "no job":
            if UNSHARED:
                lines.append(
                    "    (4 processes with a log each, nothing shared: %.2f us per "
                    "record: the cost of 4 processes taking turns on the cores)"
                    % statistics.median(UNSHARED))
            lines.append(
                "    (CPU bound: on %d idle cores 4 processes / 1 is at most "
                "min(4, cores) x %.2f / %.2f = %.2fx)" % (
                    cores, one_cpu, four_cpu, min(4, cores) * one_cpu / four_cpu))
    lines += ["- " + n for n in notes]
    return "\n".join(lines) + "\n"


def idle_share_consumers(base, n, seconds=5.0):
    """Share of a CPU that ``n`` pylog.aio share consumers use while they
    wait for records of an empty queue, each in a getmany (one event
    loop, this process's CPU time over ``seconds``)."""
    import asyncio

    import pylog.aio

    async def run(path):
        async with pylog.aio.open(path, sync="never") as log:
            await log.create_topic("t")
            cs = [log.share_consumer("t", group_id="g") for _ in range(n)]
            # (2 s: every consumer opened its share file)
            return await idle_cpu_share(cs, 2.0, seconds)
    d = tempfile.mkdtemp(prefix="queues-idle-", dir=base)
    try:
        return asyncio.run(run(os.path.join(d, "log")))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--peer-n", type=int, default=50_000)
    ap.add_argument("--job-n", type=int, default=8_000)
    ap.add_argument("--reps", type=int, default=5,
                    help="repetitions of each 4-vs-1 case (medians reported)")
    ap.add_argument("--idle", type=int, default=0, metavar="N",
                    help="also: CPU of N idle pylog.aio share consumers (bar: 1,000 "
                         "under 1%%)")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    base = args.dir or tempfile.gettempdir()
    out, notes = run_queues(base, args.n, args.peer_n, args.job_n, reps=args.reps)
    print(queue_report(out, notes))
    if args.idle:
        print("- %d idle pylog.aio share consumers: %.2f%% of a CPU" % (
            args.idle, 100 * idle_share_consumers(base, args.idle)))


if __name__ == "__main__":
    main()
