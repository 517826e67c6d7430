"""The story of SPEC §1, exactly once, as a program that checks its own
result (examples/order_service.py tells it at least once, on the plain
API, and runs unchanged on a local log and on Kafka).

    python examples/order_exactly_once.py [WORK_DIR]

- The order service writes each order row and its ORDER_PLACED event (an
  outbox row, ``pylog.outbox.add``) in one SQLite transaction of its own
  database, ``shop.db``: no event for an order that rolled back, no order
  without its event.
- The relay (``pylog outbox relay``, a process of its own) publishes the
  outbox rows to topic ``order-events``, keyed by user, each batch in one
  pylog transaction with its position: every row exactly once, in order
  per user. It is killed with SIGKILL midway and restarted.
- Inventory (two processes, one consumer group, ``read_committed``) applies
  every order's stock change to ``inventory.db`` with
  ``pylog.sqliteoffsets``: the change and the consumer's offsets commit in
  one SQLite transaction. One of them is killed with SIGKILL midway and
  restarted. A table keyed by order id would refuse a second application.
- E-mail (one process) sends a confirmation per order, deduplicated by
  event id with ``pylog.dedup.ProcessedIds`` (effectively once: the mail
  is outside any transaction).

At the end: every order is in the log exactly once and in order per user,
the stock equals the expected totals exactly, and every order got its
mail. Exit status 0 when all of that holds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import pylog  # noqa: E402
from pylog import TopicPartition, outbox  # noqa: E402
from pylog.dedup import ProcessedIds  # noqa: E402
from pylog.sqliteoffsets import SQLiteOffsets  # noqa: E402

TOPIC = "order-events"
ORDERS = 600
USERS = 37
SKUS = {f"sku-{i}": 10_000 for i in range(5)}       # initial stock


def order_of(n: int) -> dict:
    return {"eventId": f"order-{n}-placed", "eventType": "ORDER_PLACED", "orderId": n,
            "userId": f"user-{n % USERS}", "sku": f"sku-{n % len(SKUS)}",
            "quantity": 1 + n % 7}


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    return db


# ---------------------------------------------------------------------------
# the services
# ---------------------------------------------------------------------------

def place_orders(work: str, first: int, count: int) -> None:
    """The order service: one SQLite transaction per order, row and event."""
    db = connect(os.path.join(work, "shop.db"))
    for n in range(first, first + count):
        event = order_of(n)
        with db:                                           # BEGIN ... COMMIT
            db.execute("INSERT INTO orders VALUES (?, ?, ?, ?)",
                       (n, event["userId"], event["sku"], event["quantity"]))
            outbox.add(db, TOPIC, json.dumps(event).encode(),
                       key=event["userId"].encode())
        time.sleep(0.002)                       # customers arrive over time
    db.close()


def inventory(work: str, name: str, stop: threading.Event) -> None:
    """Stock changes into inventory.db, exactly once."""
    db = connect(os.path.join(work, "inventory.db"))
    offsets = SQLiteOffsets(db, "inventory")

    def apply(record: pylog.Record, cur: sqlite3.Cursor) -> None:
        event = json.loads(record.value)
        # the primary key refuses a second application of one order
        cur.execute("INSERT INTO applied VALUES (?)", (event["orderId"],))
        cur.execute("UPDATE stock SET qty = qty - ? WHERE sku = ?",
                    (event["quantity"], event["sku"]))

    with pylog.open(os.path.join(work, "log")) as log:
        consumer = log.consumer(group_id="inventory", enable_auto_commit=False,
                                auto_offset_reset="earliest", client_id=name,
                                session_timeout_ms=2000, isolation_level="read_committed")
        offsets.subscribe(consumer, TOPIC)
        offsets.run(consumer, apply, stop=stop, poll_timeout=0.2)
        consumer.close(autocommit=False)


def email(work: str, name: str, stop: threading.Event) -> None:
    """A confirmation mail per order, deduplicated by event id."""
    ids = ProcessedIds(connect(os.path.join(work, "email.db")), "order-emails")
    with pylog.open(os.path.join(work, "log")) as log, \
            open(os.path.join(work, "mails.txt"), "a") as mailbox:
        consumer = log.consumer(TOPIC, group_id="email", enable_auto_commit=False,
                                auto_offset_reset="earliest", client_id=name,
                                isolation_level="read_committed")
        while not stop.is_set():
            for record in consumer.poll(timeout=0.2):
                event = json.loads(record.value)
                with ids.once(event["eventId"]) as first:
                    if first:                                    # "send" it
                        mailbox.write(f"{event['orderId']} {event['userId']}\n")
                        mailbox.flush()
            consumer.commit()              # after the mails: at least once, deduplicated
        consumer.close(autocommit=False)


def run_service(role: str, work: str, name: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    {"inventory": inventory, "email": email}[role](work, name, stop)


# ---------------------------------------------------------------------------
# the orchestra and the proof
# ---------------------------------------------------------------------------

class Process:
    def __init__(self, name: str, argv: list[str], work: str):
        self.name, self.argv, self.work = name, argv, work
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        out = open(os.path.join(self.work, self.name + ".out"), "ab")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.work)
        out.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            with open(os.path.join(self.work, self.name + ".out"), errors="replace") as f:
                tail = f.read()[-2000:]
            raise SystemExit(f"{self.name} exited with {self.proc.returncode}:\n{tail}")


def setup(work: str) -> str:
    shop = connect(os.path.join(work, "shop.db"))
    shop.execute("CREATE TABLE IF NOT EXISTS orders "
                 "(id INTEGER PRIMARY KEY, user_id TEXT, sku TEXT, quantity INT)")
    shop.commit()
    outbox.install(shop)                                  # table pylog_outbox
    shop.close()
    inv = connect(os.path.join(work, "inventory.db"))
    inv.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, qty INT)")
    inv.execute("CREATE TABLE IF NOT EXISTS applied (order_id INTEGER PRIMARY KEY)")
    inv.executemany("INSERT OR IGNORE INTO stock VALUES (?, ?)", SKUS.items())
    inv.commit()
    inv.close()
    log_dir = os.path.join(work, "log")
    with pylog.open(log_dir) as log:
        log.create_topic(TOPIC, partitions=4, exist_ok=True)
    return log_dir


def count(path: str, sql: str) -> int:
    db = sqlite3.connect(path, timeout=30)
    try:
        return int(db.execute(sql).fetchone()[0] or 0)
    finally:
        db.close()


def mails(work: str) -> list[int]:
    try:
        with open(os.path.join(work, "mails.txt")) as f:
            return [int(line.split()[0]) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def read_log(log_dir: str) -> list[dict]:
    with pylog.open(log_dir, readonly=True) as log:
        c = log.consumer(enable_auto_commit=False, isolation_level="read_committed")
        tps = [TopicPartition(TOPIC, p) for p in range(4)]
        c.assign(tps)
        c.seek_to_beginning()
        end = c.end_offsets(tps)
        out: list[dict] = []
        while any(c.position(tp) < end[tp] for tp in tps):
            batch = c.poll(timeout=1.0, max_records=10_000)
            if not batch:
                break
            out.extend(dict(json.loads(r.value), _partition=r.partition) for r in batch)
        c.close()
    return out


def main(work: str) -> int:
    os.makedirs(work, exist_ok=True)
    log_dir = setup(work)
    db_url = "sqlite:///" + os.path.abspath(os.path.join(work, "shop.db"))
    me = [sys.executable, os.path.abspath(__file__), work]
    relay = Process("relay", [sys.executable, "-m", "pylog", "outbox", "relay", db_url,
                              log_dir, "--batch-size", "50"], work)
    services = [Process("inventory-1", me + ["--role", "inventory", "--name", "inventory-1"],
                        work),
                Process("inventory-2", me + ["--role", "inventory", "--name", "inventory-2"],
                        work),
                Process("email-1", me + ["--role", "email", "--name", "email-1"], work)]
    for p in [relay, *services]:
        p.start()
    t0 = time.monotonic()
    third = ORDERS // 3
    place_orders(work, 0, third)
    relay.kill()
    print(f"order service: {third} orders placed; relay SIGKILLed")
    place_orders(work, third, third)                 # piles up in the outbox table
    relay.start()
    print(f"order service: {2 * third} orders placed; relay restarted")
    services[0].kill()
    print("inventory-1 SIGKILLed")
    place_orders(work, 2 * third, ORDERS - 2 * third)
    services[0].start()
    print(f"order service: {ORDERS} orders placed; inventory-1 restarted")

    inv_db = os.path.join(work, "inventory.db")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for p in [relay, *services]:
            p.check_alive()
        if count(inv_db, "SELECT COUNT(*) FROM applied") >= ORDERS \
                and len(set(mails(work))) >= ORDERS:
            break
        time.sleep(0.2)
    took = time.monotonic() - t0
    codes = {p.name: p.stop() for p in [relay, *services]}

    # the proof
    events = read_log(log_dir)
    ids = [e["orderId"] for e in events]
    per_user_ordered = all(
        [e["orderId"] for e in events if e["userId"] == u] ==
        sorted(e["orderId"] for e in events if e["userId"] == u)
        for u in {e["userId"] for e in events})
    one_partition_per_user = all(len({e["_partition"] for e in events if e["userId"] == u}) == 1
                                 for u in {e["userId"] for e in events})
    expected_stock = dict(SKUS)
    for n in range(ORDERS):
        o = order_of(n)
        expected_stock[o["sku"]] -= o["quantity"]
    db = sqlite3.connect(inv_db)
    stock = dict(db.execute("SELECT sku, qty FROM stock"))
    db.close()
    sent = mails(work)
    left = count(os.path.join(work, "shop.db"), "SELECT COUNT(*) FROM pylog_outbox")
    print(f"log: {len(ids)} ORDER_PLACED events for {ORDERS} orders, {len(set(ids))} distinct, "
          f"in order per user: {per_user_ordered}; outbox rows left: {left}")
    print(f"inventory: stock {stock}, expected {expected_stock}")
    print(f"email: {len(set(sent))} orders mailed, {len(sent) - len(set(sent))} duplicates")
    ok = (sorted(ids) == list(range(ORDERS)) and per_user_ordered and one_partition_per_user
          and stock == expected_stock and sorted(set(sent)) == list(range(ORDERS))
          and left == 0 and all(code in (0, -signal.SIGTERM) for code in codes.values()))
    verdict = ("exactly once: every order published once, stock exact, every order mailed"
               if ok else "FAILED")
    print(f"{verdict} ({took:.1f} s; exit codes {codes})")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", nargs="?")
    ap.add_argument("--role", choices=("inventory", "email"), help=argparse.SUPPRESS)
    ap.add_argument("--name", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.work and "://" in a.work:
        # the story keeps SQLite files beside a local log; a kafka:// URL
        # would only make a directory named after it
        ap.error(f"{a.work!r}: this example needs a local directory "
                 "(examples/order_service.py runs on kafka:// too)")
    if a.role:
        run_service(a.role, a.work, a.name)
        sys.exit(0)
    sys.exit(main(a.work or tempfile.mkdtemp(prefix="orders-")))
