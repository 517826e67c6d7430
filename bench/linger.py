"""Lingering sends (``log.producer(linger_ms=...)``) against raw
one-``os.write``-per-record, as ratios measured in the same run (issue 15's
bars: >= 1.0x raw throughput, <= 1.1x raw bytes on disk per record).

    .venv/bin/python bench/linger.py [--n 200000] [--reps 3] [--linger-ms 5]
                                     [--batch-bytes 16384,65536]

Records are bench/compare.py's: 16-byte keys, 100-byte values (seed 42).
Raw is compare.py's raw peer: one file, ``[u32 klen][u32 vlen][key][value]``
appended with one os.write per record, then one fdatasync. pylog:
sync="never", one partition; the time runs from the first send to the
return of flush(), so every record is appended and fdatasynced in it.
Bytes are compare.py's: the raw file; pylog's valid segment bytes plus the
other files of the partition directory. Best of ``--reps`` runs each.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402

import pylog  # noqa: E402


def run_raw(items):
    with tempfile.TemporaryDirectory() as d:
        peer = peers.RawPeer()
        peer.setup(d, "none")
        produce = peer.produce_one
        t = time.perf_counter()
        for k, v in items:
            produce(k, v)
        peer.sync()
        elapsed = time.perf_counter() - t
        size = peer.bytes_on_disk()
        peer.close()
    return elapsed, size


def run_pylog(items, **producer_args):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "log")
        with pylog.open(path, sync="never") as log:
            log.create_topic("t", partitions=1)
            p = log.producer(**producer_args)
            send = p.send
            t = time.perf_counter()
            for k, v in items:
                send("t", v, key=k)
            p.flush()
            elapsed = time.perf_counter() - t
            size = peers.pylog_topic_bytes(log, "t", path)
            p.close()
    return elapsed, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--linger-ms", type=float, default=5)
    ap.add_argument("--batch-bytes", default="16384,65536",
                    help="comma list: one pylog row each (16384 is the default)")
    args = ap.parse_args()
    items = peers.make_items(args.n, 100)
    cases = {"raw os.write per record": lambda: run_raw(items)}
    for bb in map(int, args.batch_bytes.split(",")):
        cases[f"pylog linger_ms={args.linger_ms:g} batch_bytes={bb}"] = \
            lambda bb=bb: run_pylog(items, linger_ms=args.linger_ms, batch_bytes=bb)
    cases["pylog send (no linger)"] = lambda: run_pylog(items)
    results = {}
    for _ in range(args.reps):
        for name, fn in cases.items():
            elapsed, size = fn()
            best = results.get(name)
            if best is None or elapsed < best[0]:
                results[name] = (elapsed, size)
    raw_t, raw_b = results["raw os.write per record"]
    print(f"== {args.n:,} records, 16-byte keys, 100-byte values, best of {args.reps}")
    print(f"  {'':40s} {'rec/s':>12s} {'x raw':>6s} {'B/rec':>7s} {'x raw':>6s}")
    for name, (elapsed, size) in results.items():
        print(f"  {name:40s} {args.n / elapsed:12,.0f} {raw_t / elapsed:6.2f} "
              f"{size / args.n:7.1f} {size / raw_b:6.2f}")


if __name__ == "__main__":
    main()
