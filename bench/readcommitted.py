"""What a read_committed consumer's fetch costs on an event loop
(pylog.aio), with many transactional ids or open transactions in the log:
the wall time of each PollDriver.fetch (the part of a getmany that runs
on the loop) over 100 getmany calls of one consumer, after its first.

Each scenario writes a fresh log (sync="never", a temporary directory):
``--ids`` transactional producers each send one record to partition 0 of
topic ``t`` in a transaction left open ("open") or committed
("committed"), then ``--tail`` plain records follow one by one (one batch
each). An open transaction holds the consumer back at its first batch,
so every fetch decides it again; committed ones are read through. With
``--txn-tail`` each tail record is a committed transaction of its own
(one more producer's), so the walk past an open transaction passes a
control batch per record.

    .venv/bin/python bench/readcommitted.py [--ids 20 200 1000] [--tail 1000 20000]
        [--txn-tail]

Prints per scenario: fetches timed, p50/p99/max in µs, how many took
over 1 ms, and the records received. Single-threaded harness (the log's
own threads run beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pylog  # noqa: E402
import pylog.aio  # noqa: E402
from pylog.polldriver import PollDriver  # noqa: E402


def scenario(ids: int, state: str, tail: int, txn_tail: bool = False) -> str:
    d = tempfile.mkdtemp(prefix="pylog-rc-")
    path = os.path.join(d, "log")
    times: list[float] = []
    real = PollDriver.fetch

    def timed(self, *args, **kw):
        t0 = time.perf_counter()
        try:
            return real(self, *args, **kw)
        finally:
            times.append(time.perf_counter() - t0)
    try:
        with pylog.open(path, sync="never") as log:
            log.create_topic("t", partitions=1)
            producers = []
            for i in range(ids):
                p = log.producer(transactional_id=f"tx{i}")
                p.begin_transaction()
                p.send("t", b"x", partition=0)
                if state == "committed":
                    p.commit_transaction()
                producers.append(p)
            plain = log.producer(transactional_id="tail") if txn_tail else log.producer()
            for i in range(tail):
                if txn_tail:
                    plain.begin_transaction()
                plain.send("t", b"v%d" % i, partition=0)
                if txn_tail:
                    plain.commit_transaction()
            plain.flush()
            got = 0

            async def consume() -> None:
                nonlocal got
                async with pylog.aio.open(path, sync="never") as alog:
                    c = alog.consumer("t", group_id="g", auto_offset_reset="earliest",
                                      isolation_level="read_committed")
                    await c.start()
                    await c.getmany(timeout_ms=1000, max_records=5)
                    PollDriver.fetch = timed        # type: ignore[method-assign]
                    try:
                        for _ in range(100):
                            got += sum(map(len, (await c.getmany(
                                timeout_ms=5, max_records=5)).values()))
                    finally:
                        PollDriver.fetch = real     # type: ignore[method-assign]
                    await c.close()
            asyncio.run(consume())
            for p in producers:
                p.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    times.sort()
    n = len(times)
    return (f"ids {ids:5d} {state:9s} tail {tail:6d}: {n:4d} fetches, p50 "
            f"{times[n // 2] * 1e6:7.0f} us, p99 {times[int(n * 0.99)] * 1e6:7.0f} us, "
            f"max {times[-1] * 1e6:7.0f} us, over 1 ms {sum(t > 1e-3 for t in times):3d}; "
            f"{got} records")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, nargs="+", default=[20, 200, 1000])
    ap.add_argument("--tail", type=int, nargs="+", default=[1000, 20000])
    ap.add_argument("--txn-tail", action="store_true",
                    help="each tail record in a committed transaction of its own")
    a = ap.parse_args()
    for ids in a.ids:
        for tail in a.tail:
            for state in ("open", "committed"):
                print(scenario(ids, state, tail, a.txn_tail), flush=True)


if __name__ == "__main__":
    main()
