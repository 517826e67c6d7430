"""What a transaction costs (issue 17's bar: a transaction of 1,000 records
with ``sync="always"`` at most 1.5x a ``send_batch`` of the same records
with its one fsync).

    python bench/transactions.py [--records 1000] [--rounds 30] [--size 100]
        [--dir DIR] [--pieces]

Each round, on one log with ``sync="always"``, in alternation (each
transaction kind with its own transactional producer, so that each runs
in its own steady state):

* reference: ``producer.send_batch("t", records)`` (one batch, one fdatasync);
* ``txn batch``: ``begin_transaction(); send_batch(records);
  commit_transaction()``: one partition, no offsets, so the commit is the
  COMMIT marker (FORMAT.rst X-10) and one fdatasync; the partition was
  armed (X-6) by the warm-up;
* ``txn sends``: the same transaction with 1,000 ``send`` calls (the
  per-record append after the first);
* ``txn+offsets``: ``txn batch`` plus ``send_offsets_to_transaction``:
  decided in LMDB (X-6), whose named markers the next transaction drops
  (a second LMDB write).

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
from collections.abc import Callable

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
    try:
        with pylog.open(os.path.join(base, "log"), sync="always") as log:
            log.create_topic("t", partitions=1)
            log.create_topic("in", partitions=1)
            plain = log.producer()
            plain.send("in", b"input")
            tx_batch, tx_sends, tx_offsets = (
                log.producer(transactional_id=f"bench-{kind}")
                for kind in ("batch", "sends", "offsets"))

            def txn_batch() -> None:
                tx_batch.begin_transaction()
                tx_batch.send_batch("t", records, partition=0)
                tx_batch.commit_transaction()

            def txn_sends() -> None:
                tx_sends.begin_transaction()
                for v in records:
                    tx_sends.send("t", v, partition=0)
                tx_sends.commit_transaction()

            def txn_offsets() -> None:
                tx_offsets.begin_transaction()
                tx_offsets.send_batch("t", records, partition=0)
                tx_offsets.send_offsets_to_transaction(
                    {pylog.TopicPartition("in", 0): 1}, "g")
                tx_offsets.commit_transaction()

            times = alternate({"send_batch": lambda: plain.send_batch(
                                   "t", records, partition=0),
                               "txn batch": txn_batch, "txn sends": txn_sends,
                               "txn+offsets": txn_offsets}, args.rounds)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    ref = statistics.median(times["send_batch"])
    print(f"{args.records} records of {args.size} bytes, sync='always', "
          f"median of {args.rounds} rounds")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:12s} {med * 1000:8.2f} ms   {med / ref:5.2f}x")


def alternate(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Each of ``runs`` once to warm up (files, maps, LMDB pages), then
    ``rounds`` rounds of each in turn: {name: [seconds]}."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


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
        times = alternate(runs, args.rounds)
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
