"""What background heartbeats cost (pylog.heartbeat): the CPU of one
process whose ``--members`` group members (one group, one partition each)
all sit between polls for ``--seconds``, so the log's heartbeat thread
renews every one of them (session_timeout_ms=10000: a beat per member
about every 4 s, each a metadata transaction that rewrites the group's
document). Checks that every member is still in the group at the end.

    .venv/bin/python bench/heartbeats.py [--members 10 100] [--seconds 20]

Prints one line per member count; a log with sync="never" in a temporary
directory. Single-threaded harness (the heartbeat thread is pylog's).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pylog  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def between_polls(n: int, seconds: float) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, members alive at the end)."""
    d = tempfile.mkdtemp(prefix="pylog-hb-")
    try:
        with pylog.open(os.path.join(d, "log"), sync="never") as log:
            log.create_topic("t", partitions=n)
            cs = [log.consumer("t", group_id="g", session_timeout_ms=10000)
                  for _ in range(n)]
            for _ in range(3):          # every member joined and owns its partition
                for c in cs:
                    c.poll(timeout=0)
            c0, t0 = cpu_s(), time.monotonic()
            time.sleep(seconds)
            cpu, wall = cpu_s() - c0, time.monotonic() - t0
            alive = len(log.describe_group("g")["members"])
            for c in cs:
                c.close()
        return cpu, wall, alive
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    for n in args.members:
        cpu, wall, alive = between_polls(n, args.seconds)
        print(f"{n} members between polls for {wall:.1f} s: {cpu:.3f} CPU-s, "
              f"{100 * cpu / wall:.2f}% of a CPU; {alive}/{n} still members")


if __name__ == "__main__":
    main()
