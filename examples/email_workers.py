"""A pool of e-mail workers sharing one queue (share consumers, README
"Work queues").

    python examples/email_workers.py [LOG_DIR] [--jobs 60]

Three worker processes take jobs from the same topic partition. The e-mail
provider fails at random: a failed job is released with a delay that grows
with its delivery count (retry with backoff). A poison job (a bad address)
is rejected and parked in the dead-letter topic; one that keeps failing
reaches the delivery limit and is parked too. Midway, one worker is
SIGKILLed in the middle of a job: its job goes to another worker at once,
not after the 30-second lock. At the end: the queue as ``pylog queues``
shows it, and the redrive plan of the parked jobs (``pylog queues LOG
mailers redrive emails.dlq``, a dry run).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import pylog  # noqa: E402


def worker(path: str, seed: int) -> None:
    rng = random.Random(seed)
    with pylog.open(path, sync="never") as log, \
            log.share_consumer("emails", group_id="mailers", auto_offset_reset="earliest",
                               delivery_limit=4, dead_letter_topic="emails.dlq") as q:
        print("ready", flush=True)
        while True:
            for job in q.poll(timeout_ms=200, max_records=5):
                print(f"start {job.offset} {job.delivery_count}", flush=True)
                time.sleep(0.02)                        # talking to the provider
                if job.value.startswith(b"bad"):
                    q.acknowledge(job, "reject")        # poison: park it
                elif rng.random() < 0.2:                # the provider failed
                    q.acknowledge(job, "release", delay_ms=50 * job.delivery_count)
                else:
                    q.acknowledge(job, "accept")
                    print(f"sent {job.offset}", flush=True)
            q.commit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("path", nargs="?")
    ap.add_argument("--jobs", type=int, default=60)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    path = args.path or os.path.join(tempfile.mkdtemp(prefix="email-workers-"), "log")
    if args.worker is not None:
        worker(path, args.worker)
        return 0
    with pylog.open(path, sync="never") as log:
        log.create_topic("emails", partitions=1, exist_ok=True)
        jobs = [b"bad-address" if i % 20 == 7 else b"user%d@example.com" % i
                for i in range(args.jobs)]
        log.producer().send_batch("emails", jobs)
        end = len(jobs)
    procs = [subprocess.Popen([sys.executable, __file__, path, "--worker", str(i)],
                              stdout=subprocess.PIPE, text=True) for i in range(3)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    victim = procs[0]
    assert victim.stdout is not None
    while True:                              # kill the first worker mid-job
        line = victim.stdout.readline().split()
        if line and line[0] == "start":
            victim_job = int(line[1])
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            victim.wait()
            print(f"SIGKILLed worker {victim.pid} in the middle of job {victim_job}")
            break
    taken_again = None
    with pylog.open(path, sync="never") as log:
        while True:
            (row,) = [r for r in log.share_groups() if r["group"] == "mailers"]
            again = any(h["offset"] == victim_job and h["delivery_count"] >= 2
                        for h in row["held"]) or row["spso"] > victim_job
            if taken_again is None and again:
                taken_again = time.monotonic() - killed_at
            if row["spso"] >= end:
                break
            time.sleep(0.05)
        dlq = log.consumer("emails.dlq", auto_offset_reset="earliest")
        parked = []
        while recs := dlq.poll(timeout_ms=200):
            parked.extend(recs)
        dlq.close()
        (row,) = [r for r in log.share_groups() if r["group"] == "mailers"]
        plan = log.redrive("mailers", "emails.dlq")             # a dry run
    for p in procs[1:]:
        p.kill()
        p.wait()
    print(f"job {victim_job} taken by another worker within {taken_again * 1000:.0f} ms "
          "of the kill (its lock: 30 s)")
    for r in parked:
        h = dict(r.headers)
        print(f"parked: {r.value.decode()} (offset {h['_dlq.errors.offset'].decode()}, "
              f"{h['_dlq.errors.reason'].decode()}, "
              f"{h['_dlq.errors.delivery.count'].decode()} deliveries)")
    print(f"queue: start {row['spso']}, end {row['end_offset']}, available "
          f"{row['available']}, acquired {row['acquired']}, delayed {row['delayed']}, "
          f"archived {row['archived_total']}   (pylog queues {path})")
    print(f"redrive plan: {len(plan)} parked jobs would go back to emails   "
          f"(pylog queues {path} mailers redrive emails.dlq --execute)")
    print(f"done: {end} jobs, {len(parked)} parked in emails.dlq")
    return 0


if __name__ == "__main__":
    sys.exit(main())
