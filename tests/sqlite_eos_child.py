"""Child of tests/test_sqliteoffsets.py: applies the stock changes of topic
``stock`` (values ``b"sku,delta"``) into the SQLite table ``stock`` and
exits 0 ("done" on stdout) once every record is applied.

    python sqlite_eos_child.py LOG DB MODE HOW KILL_AFTER_BATCH SEED [SETTINGS]

MODE: ``helper`` (pylog.sqliteoffsets: offsets in the same SQLite
transaction) or ``naive`` (SQLite commit, then a pylog commit of the
offsets: the hand-written version that doubles under a crash between the
two). HOW: ``assign`` or ``subscribe`` (a group member). KILL_AFTER_BATCH:
SIGKILL itself right after the database commit of that batch (-1: never);
the parent's random SIGKILLs land anywhere else. SETTINGS:
``JOURNAL,SYNCHRONOUS,PYLOG_SYNC`` (default ``WAL,FULL,always``): SQLite's
journal mode and synchronous pragma, and the log's sync mode.
"""

import os
import random
import signal
import sqlite3
import sys

import pylog
from pylog.sqliteoffsets import SQLiteOffsets

TOPIC = "stock"


def apply_change(record, cur):
    sku, delta = record.value.decode().split(",")
    cur.execute("INSERT INTO stock (sku, qty) VALUES (?, ?) ON CONFLICT (sku) "
                "DO UPDATE SET qty = qty + excluded.qty", (sku, int(delta)))


def main():
    log_dir, db_path, mode, how, kill_after, seed = sys.argv[1:7]
    journal, synchronous, sync = (sys.argv[7:] or ["WAL,FULL,always"])[0].split(",")
    kill_after = int(kill_after)
    rng = random.Random(int(seed))
    conn = sqlite3.connect(db_path, timeout=30)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, qty INTEGER)")
    conn.commit()
    with pylog.open(log_dir, sync=sync) as log:
        tps = [pylog.TopicPartition(TOPIC, p) for p in range(log.partitions_for(TOPIC))]
        # small polls: many transactions, so random kills land in all phases
        consumer = log.consumer(group_id="inventory", enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=300,
                                max_poll_records=rng.randint(1, 40))
        offsets = SQLiteOffsets(conn, "inventory")
        if mode == "helper":
            if how == "assign":
                offsets.assign(consumer, tps)
            else:
                offsets.subscribe(consumer, TOPIC)
        elif how == "assign":
            consumer.assign(tps)
        else:
            consumer.subscribe(TOPIC)
        ends = consumer.end_offsets(tps)
        batch = 0
        print("ready", flush=True)
        while True:
            if mode == "helper":
                stored = offsets.stored()
                if all(stored.get(tp, 0) >= ends[tp] for tp in tps):
                    break
                if not offsets.process(consumer, apply_change, timeout=0.2,
                                       commit_every=rng.choice(["batch", "record"])):
                    continue
            else:
                committed = consumer.committed(tps)
                if all((committed[tp] or 0) >= ends[tp] for tp in tps):
                    break
                records = consumer.poll(0.2)
                if not records:
                    continue
                for r in records:
                    apply_change(r, conn.cursor())
                conn.commit()
                if batch == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
                consumer.commit()
            if mode == "helper" and batch == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            batch += 1
        consumer.close()
    print("done", flush=True)


if __name__ == "__main__":
    main()
