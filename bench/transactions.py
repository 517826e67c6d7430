"""What a transaction costs (issue 17's bar: a transaction of 1,000 records
with ``sync="always"`` at most 1.5x a ``send_batch`` of the same records
with its one fsync).

    python bench/transactions.py [--records 1000] [--rounds 30] [--dir DIR]

Each round, on one log with ``sync="always"``, in alternation:

* reference: ``producer.send_batch("t", records)`` (one batch, one fdatasync);
* ``txn batch``: ``begin_transaction(); send_batch(records);
  commit_transaction()`` (the registration and the commit point are LMDB
  commits, the batch is fdatasync'd once before the commit point, the
  COMMIT marker is not synced);
* ``txn sends``: the same transaction with 1,000 ``send`` calls;
* ``txn+offsets``: ``txn batch`` plus ``send_offsets_to_transaction``.

Prints the median of each and its ratio to the reference, measured in the
same run on the same disk.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import pylog  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--size", type=int, default=100, help="value bytes")
    ap.add_argument("--dir", default=None, help="where the log goes (default: a temp dir)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="txn-bench-", dir=args.dir)
    records = [b"x" * args.size] * args.records
    times: dict[str, list[float]] = {"send_batch": [], "txn batch": [], "txn sends": [],
                                     "txn+offsets": []}
    try:
        with pylog.open(os.path.join(base, "log"), sync="always") as log:
            log.create_topic("t", partitions=1)
            log.create_topic("in", partitions=1)
            plain = log.producer()
            plain.send("in", b"input")
            tx = log.producer(transactional_id="bench")

            def txn_batch() -> None:
                tx.begin_transaction()
                tx.send_batch("t", records, partition=0)
                tx.commit_transaction()

            def txn_sends() -> None:
                tx.begin_transaction()
                for v in records:
                    tx.send("t", v, partition=0)
                tx.commit_transaction()

            def txn_offsets() -> None:
                tx.begin_transaction()
                tx.send_batch("t", records, partition=0)
                tx.send_offsets_to_transaction({pylog.TopicPartition("in", 0): 1}, "g")
                tx.commit_transaction()

            runs = {"send_batch": lambda: plain.send_batch("t", records, partition=0),
                    "txn batch": txn_batch, "txn sends": txn_sends,
                    "txn+offsets": txn_offsets}
            for fn in runs.values():       # warm up: files, maps, LMDB pages
                fn()
            for _ in range(args.rounds):
                for name, fn in runs.items():
                    t0 = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ref = statistics.median(times["send_batch"])
    print(f"{args.records} records of {args.size} bytes, sync='always', "
          f"median of {args.rounds} rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:12s} {med * 1000:8.2f} ms   {med / ref:5.2f}x")


if __name__ == "__main__":
    main()
