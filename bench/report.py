"""The markdown report of bench/compare.py: every figure, pylog's ratio to
each peer, and the bars (required ratios) with whether each holds.
"""

import time

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
