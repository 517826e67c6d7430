"""pylog-only extras of bench/compare.py (reported without a bar): zstd,
1000 partitions, the same-process hand-off's cost to a producer, and RSS
while producing and consuming gigabytes.
"""

import json
import os
import shutil
import tempfile
import threading
import time

import peers as P
from latency import pace
from measure import Mismatch


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
