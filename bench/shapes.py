"""Argument shapes of send and send_batch, as ratios to the fastest shape
measured in the same run (issue 15's bar: every shape >= 0.9x).

    .venv/bin/python bench/shapes.py [--reps 30]

Best of ``--reps`` timed loops each; a log with sync="never" in a temporary
directory, one partition, 100-byte values.
"""

import argparse
import tempfile
import time

import pylog


def best(fn, reps: int) -> float:
    t_best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, pylog.open(d, sync="never") as log:
        log.create_topic("t", partitions=1)
        p = log.producer()
        vals = [b"x" * 100 for _ in range(1000)]
        batch = {
            "send_batch(list)": lambda: p.send_batch("t", vals),
            "send_batch(tuple)": lambda: p.send_batch("t", tuple(vals)),
            "send_batch(generator)": lambda: p.send_batch("t", (v for v in vals)),
        }

        def sends(**kw):
            def run():
                for v in vals[:200]:
                    p.send("t", v, **kw)
            return run
        one = {
            "send()": sends(),
            "send(partition=0)": sends(partition=0),
            "send(key=)": sends(key=b"k"),
            "send(timestamp_ms=)": sends(timestamp_ms=1_700_000_000_000),
            "send(headers=)": sends(headers=[("h", b"v")]),
        }
        for title, cases, n in (("batches of 1000", batch, 1000), ("one record", one, 200)):
            rates = {name: n / best(fn, args.reps) for name, fn in cases.items()}
            top = max(rates.values())
            print(f"== {title}")
            for name, rate in rates.items():
                print(f"  {name:24s} {rate:12,.0f} rec/s  {rate / top:5.2f}x")


if __name__ == "__main__":
    main()
