"""What a transaction costs (issue 17's bar: a transaction of 1,000 records
with ``sync="always"`` at most 1.5x a ``send_batch`` of the same records
with its one fsync).

    python bench/transactions.py [--records 1000] [--rounds 30] [--size 100]
        [--dir DIR] [--pieces]

Each round, on one log with ``sync="always"``, in alternation:

* reference: ``producer.send_batch("t", records)`` (one batch, one fdatasync);
* ``txn batch``: ``begin_transaction(); send_batch(records);
  commit_transaction()``: the registration of the partition (X-6, a
  synced LMDB commit) before the batch, the batch (the one-call column
  append with producer fields), its fdatasync, the commit point (a
  synced LMDB commit), then the COMMIT marker (not synced);
* ``txn sends``: the same transaction with 1,000 ``send`` calls (the
  per-record append after the first);
* ``txn+offsets``: ``txn batch`` plus ``send_offsets_to_transaction``.

Prints the median of each and its ratio to the reference, measured in the
same run on the same disk.

``--pieces`` times instead, in alternating rounds on files in the same
directory, what a commit path is built from: an LMDB write commit with
``sync=True`` and ``metasync=True`` (every metadata commit with
``sync="always"``, M-8) and with ``metasync=False`` (the other modes); a
segment append of ``--size`` x ``--records`` bytes plus fdatasync to a
preallocated file, the same with an 80-byte marker appended before the one
fdatasync, and an 80-byte append plus fdatasync alone.
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
    ap.add_argument("--pieces", action="store_true",
                    help="time the pieces of a commit path instead")
    args = ap.parse_args()
    if args.pieces:
        pieces(args)
        return
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


def pieces(args: argparse.Namespace) -> None:
    """The ``--pieces`` run (see the module docstring)."""
    import lmdb

    base = tempfile.mkdtemp(prefix="txn-pieces-", dir=args.dir)
    batch_bytes = args.size * args.records
    try:
        envs = {ms: lmdb.open(os.path.join(base, f"meta-{ms}"), map_size=1 << 30,
                              subdir=True, sync=True, metasync=ms)
                for ms in (True, False)}
        fd = os.open(os.path.join(base, "segment"), os.O_RDWR | os.O_CREAT, 0o644)
        os.posix_fallocate(fd, 0, (batch_bytes + 4096) * (args.rounds + 2) * 3 + (1 << 20))
        os.fsync(fd)
        pos = [0]

        def commit(env: lmdb.Environment) -> None:
            with env.begin(write=True) as txn:
                txn.put(b"txn\0bench", os.urandom(200))

        def append(*sizes: int) -> None:
            for n in sizes:
                os.pwrite(fd, b"x" * n, pos[0])
                pos[0] += n
            os.fdatasync(fd)

        runs = {"LMDB commit, metasync (sync='always')": lambda: commit(envs[True]),
                "LMDB commit, no metasync (other modes)": lambda: commit(envs[False]),
                f"segment: {batch_bytes} B + fdatasync": lambda: append(batch_bytes),
                f"segment: {batch_bytes} B + 80 B, one fdatasync":
                    lambda: append(batch_bytes, 80),
                "segment: 80 B + fdatasync": lambda: append(80)}
        times: dict[str, list[float]] = {name: [] for name in runs}
        for fn in runs.values():
            fn()
        for _ in range(args.rounds):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        os.close(fd)
        for env in envs.values():
            env.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"pieces, median of {args.rounds} rounds")
    for name, ts in times.items():
        print(f"  {name:44s} {statistics.median(ts) * 1000:7.3f} ms")


if __name__ == "__main__":
    main()
