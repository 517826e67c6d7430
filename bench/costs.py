"""Costs that must not grow with the wrong thing (issue 15), as ratios in
one run:

* roll cost with 2,000 segments against 10 (bar: <= 1.2x), and the same
  with 100,000 stray files in the partition directory;
* the first open after a SIGKILL of a ``sync="always"`` writer of 1 GB
  (bar: <= 0.1 s, page cache warm).

    .venv/bin/python bench/costs.py [--segments 2000] [--strays 100000]
        [--rolls 200] [--mb 1024]

Quick run: ``--segments 200 --strays 10000 --rolls 60 --mb 64``.

Rolls: a topic of 64 KiB segments, one 40 KB record per segment (every
send rolls), ``retention_bytes`` keeping the segment count steady (each
roll also deletes the oldest segment: the steady state of a retained log),
``sync="never"`` (a roll still fdatasyncs the sealed segment and the
directory). The median send time over ``--rolls`` rolls is the roll cost.

Open after SIGKILL: a child appends ``--mb`` MiB in batches of 1,000
records of 1,000 bytes with ``sync="always"`` into one segment (its
``segment_bytes`` holds it all), prints, and is SIGKILLed; the parent then
times ``pylog.open`` of the log (recovery runs there, P-4).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import pylog

SEGMENT_BYTES = 65536
VALUE = b"v" * 40_000


def prepare(root: str, segments: int, strays: int):
    """A log whose topic keeps ``segments`` segments (and ``strays`` other
    files in the partition directory); returns (log, producer)."""
    log = pylog.open(root, sync="never")
    # a segment holds one record: batch + value, about 40,080 bytes
    log.create_topic("t", partitions=1, segment_bytes=SEGMENT_BYTES,
                     retention_bytes=segments * 40_080)
    prod = log.producer()
    for _ in range(segments):
        prod.send("t", VALUE)
    pdir = os.path.join(root, "t-0")
    for i in range(strays):
        with open(os.path.join(pdir, f"stray-{i}.tmp"), "wb"):
            pass
    return log, prod


def roll_costs(logs: dict, rolls: int) -> dict:
    """Median seconds per roll of each log, the logs taking turns so that
    the disk's moods (fdatasync dominates a roll) fall on all alike."""
    times: dict = {name: [] for name in logs}
    for _ in range(rolls):
        for name, (_, prod) in logs.items():
            t = time.perf_counter()
            prod.send("t", VALUE)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


CHILD = r"""
import sys, pylog
path, mb = sys.argv[1], int(sys.argv[2])
log = pylog.open(path, sync="always")
log.create_topic("t", partitions=1, segment_bytes=2**31 - 1,
                 max_message_bytes=2**20)
prod = log.producer()
vals = [b"x" * 1000] * 1000
for _ in range(mb * 2**20 // (len(vals) * 1000) + 1):
    prod.send_batch("t", vals)
sys.stdout.write("done\n"); sys.stdout.flush()
sys.stdin.read()
"""


def open_after_kill(root: str, mb: int) -> float:
    """Seconds for the first open after SIGKILL of an always-writer."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, root, str(mb)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = proc.stdout.readline() if proc.stdout else b""
        if line != b"done\n":
            raise SystemExit(f"writer failed: {line!r}")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    t = time.perf_counter()
    log = pylog.open(root)
    took = time.perf_counter() - t
    log.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=2000)
    ap.add_argument("--strays", type=int, default=100_000)
    ap.add_argument("--rolls", type=int, default=200)
    ap.add_argument("--mb", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as d:
        shapes = {"10": (10, 0), "big": (args.segments, 0),
                  "10+strays": (10, args.strays), "big+strays": (args.segments, args.strays)}
        logs = {name: prepare(os.path.join(d, name), n, strays)
                for name, (n, strays) in shapes.items()}
        try:
            for name, (log, _) in logs.items():
                n = log.partition("t", 0).describe()["segments"]
                if abs(n - shapes[name][0]) > 2:
                    raise SystemExit(f"{name}: expected {shapes[name][0]} segments, found {n}")
            cost = roll_costs(logs, args.rolls)
        finally:
            for log, _ in logs.values():
                log.close()
        small = cost["10"]
        rows = [("10 segments", cost["10"], ""),
                (f"{args.segments} segments", cost["big"], "  (bar <= 1.2x)"),
                (f"10 segments, {args.strays} stray files", cost["10+strays"], ""),
                (f"{args.segments} segments, {args.strays} stray files",
                 cost["big+strays"], "  (bar <= 1.2x)")]
        print(f"roll cost (median of {args.rolls}), as a ratio to 10 segments:")
        for name, t, bar in rows:
            print(f"  {name:40s} {t * 1e3:7.3f} ms  {t / small:5.2f}x{bar}")
        took = open_after_kill(os.path.join(d, "kill"), args.mb)
        print(f"first open after SIGKILL of a sync=\"always\" writer of "
              f"{args.mb} MiB: {took:.3f} s  (bar <= 0.1 s at 1024 MiB)")


if __name__ == "__main__":
    main()
