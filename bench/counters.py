"""What the metrics counters (FORMAT.rst P-10, P-11) cost the hot paths:
per-record sends (sync="never": the append path alone, where counting is
three plain stores under the append lock), single-record polls (one
atomic add pair per fetch that returns records), and durable sends
(sync="always": two clock reads and three atomic adds per fdatasync).

Measured as a ratio against a reference checkout in the same run: build
another commit in place and name it with ``--reference``::

    git archive <commit> | tar -x -C /tmp/base
    (cd /tmp/base && ../path/.venv/bin/python setup.py build_ext --inplace -q)
    .venv/bin/python bench/counters.py --reference /tmp/base

Each figure runs in a fresh interpreter with ``PYTHONPATH`` set to one
checkout, the two alternating, best of ``--reps``; the figures that never
wait are timed in CPU time (``time.process_time``), the durable one in
wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import sys, time, tempfile, os, pylog
what, n = sys.argv[1], int(sys.argv[2])
d = tempfile.mkdtemp(dir=sys.argv[3])
log = pylog.open(os.path.join(d, "log"), sync="always" if what == "durable" else "never")
log.create_topic("t", partitions=1)
p = log.producer()
v = b"x" * 100
# CPU time for the figures that never wait (this machine is shared: wall
# time measures the neighbours); wall time for fsyncs, which wait
clock = time.perf_counter if what == "durable" else time.process_time
if what in ("send", "durable"):
    t0 = clock()
    for _ in range(n):
        p.send("t", v)
    dt = clock() - t0
else:
    for _ in range(n):
        p.send("t", v)
    p.flush()
    c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=False)
    c.poll(timeout=1, max_records=1)
    got = 1
    t0 = clock()
    while got < n:
        got += len(c.poll(timeout=1, max_records=1))
    dt = clock() - t0
    c.close(autocommit=False)
log.close()
print(n / dt)
"""

FIGURES = {"send": 200_000, "poll1": 100_000, "durable": 3_000}


def one(root: str, what: str, n: int, tmp: str) -> float:
    env = dict(os.environ, PYTHONPATH=root)
    r = subprocess.run([sys.executable, "-c", CHILD, what, str(n), tmp], env=env,
                       capture_output=True, text=True, check=True)
    return float(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, help="a built checkout to compare with")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply record counts")
    ap.add_argument("--only", choices=sorted(FIGURES), action="append",
                    help="run only this figure (repeatable)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'figure':<10} {'reference/s':>14} {'this/s':>14} {'this/ref':>9}")
        for what, n in FIGURES.items():
            if args.only and what not in args.only:
                continue
            n = max(100, int(n * args.scale))
            ref, this = 0.0, 0.0
            for rep in range(args.reps):
                # alternating which goes first: neither always runs on a
                # machine the other just warmed (or heated)
                for root in ((args.reference, HERE) if rep % 2 == 0 else
                             (HERE, args.reference)):
                    x = one(root, what, n, tmp)
                    if root == HERE:
                        this = max(this, x)
                    else:
                        ref = max(ref, x)
            print(f"{what:<10} {ref:>14,.0f} {this:>14,.0f} {this / ref:>9.3f}")


if __name__ == "__main__":
    main()
