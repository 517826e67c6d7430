"""What the outbox relay costs over the transaction it publishes in.

    python bench/outbox.py [--rows 500] [--rounds 20] [--pg postgresql://...] [--dir DIR]

Each round, on one log with ``sync="always"``, in alternation:

* reference: one transaction of ``--rows`` ``send`` calls (what a
  hand-written relay would publish with, without a database);
* ``relay sqlite``: ``OutboxRelay.step()`` publishing ``--rows`` outbox rows
  from SQLite (WAL): read the rows, one transaction of their records (a
  ``send_batch`` per topic) and the position record, delete the published
  rows;
* ``relay postgresql`` (with ``--pg``): the same from PostgreSQL (a schema
  of its own, dropped at the end).

The rows are added before each timed step (not timed). Prints the median
of each, rows per second and the ratio to the reference, measured in the
same run on the same disk.
"""

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import pylog  # noqa: E402
from pylog import outbox  # noqa: E402
from pylog.outboxrelay import OutboxRelay  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--size", type=int, default=100, help="value bytes")
    ap.add_argument("--pg", default=None, help="a PostgreSQL URL to measure too")
    ap.add_argument("--dir", default=None, help="where the log goes (default: a temp dir)")
    args = ap.parse_args()
    base = tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir)
    value = b"x" * args.size
    rows = [(b"key-%d" % (i % 50), value) for i in range(args.rows)]
    dbs = {"relay sqlite": sqlite3.connect(os.path.join(base, "app.db"))}
    dbs["relay sqlite"].execute("PRAGMA journal_mode=WAL")
    urls = {"relay sqlite": "sqlite:///" + os.path.join(base, "app.db")}
    tables = {"relay sqlite": "pylog_outbox"}
    schema = None
    if args.pg:
        import psycopg
        schema = "bench_" + uuid.uuid4().hex[:8]
        pg = psycopg.connect(args.pg)
        pg.execute(f"CREATE SCHEMA {schema}")
        pg.commit()
        dbs["relay postgresql"], urls["relay postgresql"] = pg, args.pg
        tables["relay postgresql"] = f"{schema}.pylog_outbox"
    times: dict[str, list[float]] = {"txn sends": [], **{k: [] for k in dbs}}
    try:
        with pylog.open(os.path.join(base, "log"), sync="always") as log:
            log.create_topic("t", partitions=4)
            tx = log.producer(transactional_id="bench")
            relays = {}
            for name, conn in dbs.items():
                outbox.install(conn, tables[name])
                relays[name] = OutboxRelay(urls[name], log, name=name.replace(" ", "-"),
                                           table=tables[name], batch_size=args.rows)

            def reference() -> None:
                with tx.transaction():
                    for k, v in rows:
                        tx.send("t", v, key=k)

            for _ in range(args.rounds):
                t0 = time.perf_counter()
                reference()
                times["txn sends"].append(time.perf_counter() - t0)
                for name, conn in dbs.items():
                    for k, v in rows:
                        outbox.add(conn, "t", v, key=k, table=tables[name])
                    conn.commit()
                    t0 = time.perf_counter()
                    assert relays[name].step() == args.rows
                    times[name].append(time.perf_counter() - t0)
            for r in relays.values():
                r.close()
            tx.close()
    finally:
        if schema is not None:
            import psycopg
            with psycopg.connect(args.pg, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")
        shutil.rmtree(base, ignore_errors=True)
    ref = statistics.median(times["txn sends"])
    print(f"{args.rows} rows of {args.size} bytes per step, {args.rounds} rounds, "
          "sync='always'; median:")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:18s} {m * 1000:8.2f} ms  {args.rows / m:10.0f} rows/s  "
              f"{m / ref:5.2f}x")


if __name__ == "__main__":
    main()
