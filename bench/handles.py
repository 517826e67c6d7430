"""Bounded descriptors at scale (issue 15): open, create, produce to and
consume 10,000 partitions (100 topics x 100) under a low ``ulimit -n``,
then close and reopen; prints the time of each step and the peak
descriptors and memory maps of the process.

    .venv/bin/python bench/handles.py [--topics 100] [--partitions 100]
        [--nofile 256] [--sync never] [--max-open-maps N]

Bars: peak descriptors <= 200 at ``--nofile 256``, reopen <= 2 s. The
counts are of /proc/self/fd and /proc/self/maps, sampled every 2 ms by a
thread and after every step (Linux only). The run is in this process, with
RLIMIT_NOFILE lowered at its start; one 100-byte record per partition.
"""

import argparse
import os
import resource
import sys
import tempfile
import threading
import time

import pylog


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def maps() -> int:
    with open("/proc/self/maps", "rb") as f:
        return f.read().count(b"\n")


class Peak:
    """The most descriptors and maps seen by a sampling thread."""

    def __init__(self) -> None:
        self.fds = self.maps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        self.fds = max(self.fds, fds())
        self.maps = max(self.maps, maps())

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--nofile", type=int, default=256)
    ap.add_argument("--sync", default="never", choices=("always", "interval", "never"))
    ap.add_argument("--max-open-maps", type=int, default=None,
                    help="the Log's bound of memory maps (default: from vm.max_map_count)")
    args = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    n = args.topics * args.partitions
    topics = [f"t{i:03d}" for i in range(args.topics)]
    value = b"x" * 100
    times = {}
    base_fds, base_maps = fds(), maps()
    peak = Peak()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        log = pylog.open(d, sync=args.sync, max_open_maps=args.max_open_maps)
        times["open (empty)"] = time.perf_counter() - t
        t = time.perf_counter()
        for name in topics:
            log.create_topic(name, partitions=args.partitions)
        times[f"create {n} partitions"] = time.perf_counter() - t
        t = time.perf_counter()
        prod = log.producer()
        for name in topics:
            for p in range(args.partitions):
                prod.send(name, value, partition=p)
        times[f"produce 1 record to each of {n}"] = time.perf_counter() - t
        t = time.perf_counter()
        log.flush()
        times[f"flush (fdatasync of {n} segments)"] = time.perf_counter() - t
        t = time.perf_counter()
        cons = log.consumer(*topics, auto_offset_reset="earliest")
        got = 0
        deadline = time.monotonic() + 600
        while got < n and time.monotonic() < deadline:
            got += len(cons.poll(timeout_ms=200))
        cons.close()
        times[f"consume {got} records"] = time.perf_counter() - t
        t = time.perf_counter()
        log.close()
        times["close"] = time.perf_counter() - t
        t = time.perf_counter()
        log = pylog.open(d, sync=args.sync, max_open_maps=args.max_open_maps)
        times[f"reopen ({n} partitions, first opener)"] = time.perf_counter() - t
        t = time.perf_counter()
        for name in topics:
            log.partitions_for(name)
        cons = log.consumer(*topics, auto_offset_reset="earliest")
        again = 0
        deadline = time.monotonic() + 600
        while again < n and time.monotonic() < deadline:
            again += len(cons.poll(timeout_ms=200))
        cons.close()
        times[f"consume {again} records after reopen"] = time.perf_counter() - t
        cache = log.handles
        log.close()
        peak.stop()
    print(f"pylog {n} partitions ({args.topics} topics), sync={args.sync}, "
          f"ulimit -n {args.nofile}, max_open_files={cache.limit} (default), "
          f"max_open_maps={cache.map_limit}"
          f"{' (default)' if args.max_open_maps is None else ''}")
    for what, secs in times.items():
        print(f"  {what:44s} {secs:8.3f} s")
    print(f"  peak descriptors {peak.fds} (baseline {base_fds}); "
          f"peak maps {peak.maps} (baseline {base_maps}); "
          f"segments and states closed to stay in bounds: {cache.evictions}")
    ok = peak.fds <= 200 and times[f"reopen ({n} partitions, first opener)"] <= 2.0 \
        and got == n and again == n
    print("  bars (peak fds <= 200, reopen <= 2 s, every record read):",
          "met" if ok else "NOT met")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
