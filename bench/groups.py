"""Consumer-group costs that must not grow with the square of the members
(issue 15): ``poll(0)`` latency of one member of an 8-member group against
one of a 128-member group, as a ratio (bar: <= 5x), and the CPU seconds 48
idle members burn in 10 s (bar: near nothing).

    .venv/bin/python bench/groups.py [--seconds 5] [--procs 4]
        [--idle-members 48] [--idle-procs 12] [--idle-seconds 10]

Members are Consumers of one group in worker processes (``--procs``, threads
in each), polling with a 0.5 s timeout on an idle topic (one partition per
member, so every member owns one partition whatever the group's size and
only the group's cost differs). Two measured members are in this process,
one of them the group's leader (the member that reads the group document at
every look; the others read it only when the group moved). Once every
partition is owned, the other calls ``poll(0)`` back to back for
``--seconds`` (most of those polls find no look at the group due), then
each calls ``poll(0)`` every 110 ms for as long (each poll is due a look at
the group); the mean, median and 99th percentile latency of each.
Idle CPU: user + system seconds of the worker processes over
``--idle-seconds`` once the group is stable. A log with sync="never" in a
temporary directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import pylog

GROUP = "g"
TOPIC = "t"


def worker(path: str, members: int) -> None:
    """Run ``members`` idle group members (threads sharing one Log) until
    stdin closes; print this process's CPU seconds at each "cpu" line."""
    stop = threading.Event()
    joined = threading.Barrier(members + 1)

    log = pylog.open(path, sync="never")

    def member() -> None:
        c = log.consumer(TOPIC, group_id=GROUP)
        c.poll(0)
        joined.wait()
        while not stop.is_set():
            c.poll(timeout=0.5)
        c.close()

    threads = [threading.Thread(target=member) for _ in range(members)]
    for t in threads:
        t.start()
    joined.wait()
    print("ready", flush=True)
    line = sys.stdin.readline()         # "cpu": report; EOF: stop
    while line.strip() == "cpu":
        t = os.times()
        print(f"{t.user + t.system:.6f}", flush=True)
        line = sys.stdin.readline()
    stop.set()
    for t in threads:
        t.join()
    log.close()


class Members:
    """Worker processes holding ``n`` members of the group in ``path``."""

    def __init__(self, path: str, n: int, procs: int) -> None:
        procs = max(1, min(procs, n))
        counts = [n // procs + (i < n % procs) for i in range(procs)]
        self.procs = [subprocess.Popen(
            [sys.executable, __file__, "--worker", path, str(k)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for k in counts if k]
        for p in self.procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker did not start")

    def cpu(self) -> float:
        """CPU seconds the workers have used so far."""
        total = 0.0
        for p in self.procs:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("cpu\n")
            p.stdin.flush()
            total += float(p.stdout.readline())
        return total

    def stop(self) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in self.procs:
            p.wait(60)


def settle(consumers, partitions: int, timeout: float = 120.0) -> None:
    """Poll until the group's every partition is owned (the group is stable)."""
    log = consumers[0]._log
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in consumers:
            c.poll(0.05)
        owners = log.meta.group_state(GROUP).owners
        if len(owners) == partitions:
            return
    raise RuntimeError(f"the group did not settle in {timeout} s")


def poll_latency(n: int, seconds: float, procs: int) -> dict[str, list[float]]:
    """poll(0) latencies (s) in an ``n``-member group of a member and of the
    group's leader (the member with the smallest id, which reads the group
    document at every look): back to back (most polls find no group look
    due), and 110 ms apart (every poll is due a look at the group:
    GROUP_CHECK_INTERVAL_S is 0.1 s)."""
    with tempfile.TemporaryDirectory() as d:
        with pylog.open(d, sync="never") as log:
            log.create_topic(TOPIC, partitions=n)
            others = Members(d, n - 2, procs)
            try:
                # member ids begin with the client id: "0..." sorts first
                lead = log.consumer(TOPIC, group_id=GROUP, client_id="0-leader")
                member = log.consumer(TOPIC, group_id=GROUP, client_id="member")
                settle([lead, member], n)
                out: dict[str, list[float]] = {"member": [], "member, 110 ms apart": [],
                                               "leader, 110 ms apart": []}
                end = time.perf_counter() + seconds
                next_lead = 0.0
                while True:
                    t0 = time.perf_counter()
                    member.poll(0)
                    t1 = time.perf_counter()
                    out["member"].append(t1 - t0)
                    if t1 > next_lead:      # (keep the leader in the group)
                        lead.poll(0)
                        next_lead = time.perf_counter() + 0.1
                    if t1 > end:
                        break
                for _ in range(int(seconds / 0.11)):
                    for name, c in (("member", member), ("leader", lead)):
                        time.sleep(0.11)
                        t0 = time.perf_counter()
                        c.poll(0)
                        out[f"{name}, 110 ms apart"].append(time.perf_counter() - t0)
                member.close()
                lead.close()
            finally:
                others.stop()
    return out


def row(what: str, lat: list[float]) -> float:
    mean = statistics.fmean(lat)
    q = statistics.quantiles(lat, n=100)
    print(f"  {what:36s} mean {mean * 1e6:9.1f} us  median "
          f"{statistics.median(lat) * 1e6:8.1f} us  p99 {q[98] * 1e6:9.1f} us  "
          f"({len(lat):,} polls)")
    return mean


def idle_cpu(n: int, seconds: float, procs: int) -> float:
    """CPU seconds ``n`` idle members use in ``seconds``."""
    with tempfile.TemporaryDirectory() as d:
        with pylog.open(d, sync="never") as log:
            log.create_topic(TOPIC, partitions=n)
            members = Members(d, n, procs)
            try:
                c = log.consumer(TOPIC, group_id=GROUP)
                settle([c], n)
                c.close()       # (the group rebalances without it)
                time.sleep(2.0)
                before = members.cpu()
                time.sleep(seconds)
                return members.cpu() - before
            finally:
                members.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--idle-members", type=int, default=48)
    ap.add_argument("--idle-procs", type=int, default=12)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    print(f"== poll(0) latency of one member ({args.procs} other processes)")
    means: dict[int, dict[str, float]] = {}
    for n in (8, 128):
        lat = poll_latency(n, args.seconds, args.procs)
        means[n] = {what: row(f"{n:3d} members: {what}", v) for what, v in lat.items()}
    for what in means[8]:
        print(f"  ratio 128/8 (mean), {what + ':':24s} "
              f"{means[128][what] / means[8][what]:6.2f}x  (bar: <= 5x)")
    cpu = idle_cpu(args.idle_members, args.idle_seconds, args.idle_procs)
    print(f"== idle members: {args.idle_members} in {args.idle_procs} processes "
          f"used {cpu:.2f} CPU-s in {args.idle_seconds:.0f} s "
          f"({cpu / args.idle_seconds * 100:.1f}% of one core)")


if __name__ == "__main__":
    main()
