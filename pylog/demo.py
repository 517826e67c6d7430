"""``pylog demo``: the story of SPEC §1, live in the terminal, exactly once.

An order service takes orders (with a traffic burst): each order row and
its ORDER_PLACED event, keyed by user, are written in one SQLite
transaction of the shop's database (an outbox row, :mod:`pylog.outbox`).
The outbox relay (``pylog outbox relay``, a process of its own) publishes
the events to the log, each batch in one pylog transaction with its
position. Inventory (two processes, one group) applies every order to its
stock in its own SQLite database with its offsets in the same transaction
(:mod:`pylog.sqliteoffsets`); e-mail sends one mail per order, deduplicated
by event id (:mod:`pylog.dedup`); fraud records the ids it checked in a
results topic before committing (at least once). All read with
``isolation_level="read_committed"``.

The relay and one inventory process are killed with SIGKILL and restarted.
At the end the log holds every order exactly once, the stock equals the
expected total exactly, every order got its mail, and fraud saw every
order (duplicates allowed there: at least once).

A second act (:mod:`pylog.demoqueue`) runs an e-mail worker pool on a
work queue of the same log.

The databases and the workers' files live in ``demo-workers/`` inside the
log directory. Workers run as ``python -m pylog.demo --role worker PATH
GROUP NAME MS``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from typing import cast

TOPIC = "order-events"
PARTITIONS = 4
RESULTS_PREFIX = "demo.processed."
WORKER_DIR = "demo-workers"


def results_topic(group: str) -> str:
    return RESULTS_PREFIX + group


# ---------------------------------------------------------------------------
# worker process
# ---------------------------------------------------------------------------

def _db(path: str, name: str) -> sqlite3.Connection:
    db = sqlite3.connect(os.path.join(path, WORKER_DIR, name), timeout=60)
    db.execute("PRAGMA journal_mode=WAL")
    return db


def setup_databases(path: str) -> None:
    """shop.db (orders and the outbox table), inventory.db (stock)."""
    from . import outbox
    shop = _db(path, "shop.db")
    shop.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, user_id TEXT, "
                 "quantity INT)")
    shop.commit()
    outbox.install(shop)
    shop.close()
    inv = _db(path, "inventory.db")
    inv.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, reserved INT)")
    inv.execute("CREATE TABLE IF NOT EXISTS applied (order_id TEXT PRIMARY KEY)")
    inv.commit()
    inv.close()


def worker_main(path: str, group: str, name: str, ms_per_event: float) -> int:
    import pylog
    from pylog import CommitFailedError, TopicPartition
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    status_path = os.path.join(path, WORKER_DIR, name + ".jsonl")

    def status(**kw):
        kw["t"] = time.time()
        with open(status_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(kw) + "\n")

    seen: set = set()

    def first(r) -> None:
        if r.partition not in seen:
            seen.add(r.partition)
            status(event="first", partition=r.partition, offset=r.offset)

    log = pylog.open(path)          # sync="always": results are durable
    consumer = log.consumer(group_id=f"{group}-service", auto_offset_reset="earliest",
                            enable_auto_commit=False, session_timeout_ms=3000,
                            client_id=name, isolation_level="read_committed")
    status(event="start", pid=os.getpid())
    try:
        if group == "inventory":
            # exactly once: the stock change and the offsets in one transaction
            from .sqliteoffsets import SQLiteOffsets
            offsets = SQLiteOffsets(_db(path, "inventory.db"), "inventory-service")

            def apply(r, cur) -> None:
                first(r)
                time.sleep(ms_per_event / 1000.0)       # the "work"
                order = json.loads(cast(bytes, r.value))
                # the primary key refuses a second application of an order
                cur.execute("INSERT INTO applied VALUES (?)", (order["orderId"],))
                cur.execute("UPDATE stock SET reserved = reserved + ? WHERE sku = ?",
                            (order["quantity"], order["sku"]))

            class Resumed:
                def on_partitions_assigned(self, tps) -> None:
                    stored = offsets.stored()     # where the helper seeks them next
                    for tp in sorted(tps):
                        if tp in stored:
                            seen.add(tp.partition)
                            status(event="first", partition=tp.partition, offset=stored[tp])
            offsets.subscribe(consumer, TOPIC, listener=Resumed())
            while not stop.is_set():
                offsets.process(consumer, apply, timeout=0.2, max_records=20)
            return 0
        consumer.subscribe([TOPIC])
        ids = None
        if group == "email":
            from .dedup import ProcessedIds
            ids = ProcessedIds(_db(path, "email.db"), "order-emails")
        producer = log.producer()
        try:
            while not stop.is_set():
                recs = consumer.poll(timeout=0.2, max_records=20)
                if not recs:
                    continue
                for r in recs:
                    first(r)
                time.sleep(len(recs) * ms_per_event / 1000.0)   # the "work"
                done = [json.loads(cast(bytes, r.value))["orderId"] for r in recs]
                if ids is not None:
                    # one mail per event id, whatever is delivered twice
                    with open(os.path.join(path, WORKER_DIR, "mails.txt"), "a") as box:
                        for oid in done:
                            with ids.once(oid) as new:
                                if new:
                                    box.write(oid + "\n")
                                    box.flush()
                else:
                    producer.send_batch(results_topic(group), [d.encode() for d in done],
                                        partition=0)
                nxt = {TopicPartition(r.topic, r.partition): r.offset + 1 for r in recs}
                try:
                    consumer.commit(nxt)
                except CommitFailedError:
                    pass    # a rebalance moved the partition; its new owner redoes it
        finally:
            producer.close()
    finally:
        consumer.close(autocommit=False)
        log.close()
    return 0


# ---------------------------------------------------------------------------
# the show
# ---------------------------------------------------------------------------

class Display:
    """Redraws a status block with ANSI codes on a tty; prints plain
    progressive lines otherwise."""

    def __init__(self, stream):
        self.out = stream
        self.tty = stream.isatty() and os.environ.get("TERM") != "dumb"
        enc = (getattr(stream, "encoding", None) or "").lower()
        self.unicode = "utf" in enc
        self.block_lines = 0
        self.last_plain = 0.0

    def bar(self, frac: float, width: int = 30) -> str:
        frac = min(1.0, max(0.0, frac))
        fill = int(round(frac * width))
        full, empty = ("\u2588", "\u2591") if self.unicode else ("#", ".")
        return full * fill + empty * (width - fill)

    def event(self, text: str) -> None:
        if self.tty:
            self._clear()
        self.out.write(text + "\n")
        self.out.flush()

    def _clear(self) -> None:
        if self.block_lines:
            self.out.write(f"\x1b[{self.block_lines}F\x1b[J")
            self.block_lines = 0

    def status(self, lines, plain_line: str, force: bool = False) -> None:
        if self.tty:
            self._clear()
            self.out.write("\n".join(lines) + "\n")
            self.block_lines = len(lines)
            self.out.flush()
        else:
            now = time.monotonic()
            if force or now - self.last_plain >= 1.0:
                self.last_plain = now
                self.out.write(plain_line + "\n")
                self.out.flush()

    def finish_block(self) -> None:
        self.block_lines = 0


class Worker:
    def __init__(self, path, group, name, ms):
        self.path, self.group, self.name, self.ms = path, group, name, ms
        self.proc = None
        self.status_path = os.path.join(path, WORKER_DIR, name + ".jsonl")
        self.out_path = os.path.join(path, WORKER_DIR, name + ".out")

    def start(self) -> None:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        try:
            os.unlink(self.status_path)
        except FileNotFoundError:
            pass
        if self.group == "relay":
            db_url = "sqlite:///" + os.path.join(self.path, WORKER_DIR, "shop.db")
            argv = [sys.executable, "-m", "pylog", "outbox", "relay", db_url, self.path,
                    "--batch-size", "50"]
        else:
            argv = [sys.executable, "-m", "pylog.demo", "--role", "worker", self.path,
                    self.group, self.name, str(self.ms)]
        out = open(self.out_path, "ab")
        try:
            self.proc = subprocess.Popen(
                argv,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                # not the caller's directory: "-m" puts it first on sys.path,
                # and a source checkout there would shadow the installed
                # package (and its compiled extension)
                env=env, close_fds=True, cwd=self.path)
        finally:
            out.close()

    def events(self) -> list:
        try:
            with open(self.status_path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError):
            return []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_demo(path=None, *, events=None, fast=False, keep=False, out=None) -> int:
    import pylog

    from . import outbox
    out = out or sys.stdout
    disp = Display(out)
    temp = path is None
    if temp:
        path = tempfile.mkdtemp(prefix="pylog-demo-")
    path = os.path.abspath(path)
    if fast:
        steady_rate, pre_s, post_until = 60, 1.0, 3.0
        burst = events if events is not None else 400
        speeds = {"inventory": 0.5, "email": 3.0, "fraud": 1.5}
        kill_at, restart_after = 2.0, 1.0
    else:
        steady_rate, pre_s, post_until = 50, 3.0, 8.0
        burst = events if events is not None else 1500
        speeds = {"inventory": 2.0, "email": 7.0, "fraud": 4.0}
        kill_at, restart_after = 6.0, 1.5
    groups = ["inventory", "email", "fraud"]
    os.makedirs(os.path.join(path, WORKER_DIR), exist_ok=True)
    log = pylog.open(path)
    log.create_topic(TOPIC, partitions=PARTITIONS, exist_ok=True)
    log.create_topic(results_topic("fraud"), partitions=1, exist_ok=True)
    setup_databases(path)
    run_id = os.urandom(3).hex()
    sku = f"widget-{run_id}"
    with _db(path, "inventory.db") as inv:
        inv.execute("INSERT OR IGNORE INTO stock VALUES (?, 0)", (sku,))
    inv.close()

    w = lambda *a: disp.event(" ".join(str(x) for x in a))   # noqa: E731
    w(f"pylog demo: the order story, live, exactly once  (log: {path})")
    w("  the order service writes each order and its event in one SQLite transaction "
      "(outbox);")
    w(f"  the outbox relay publishes the events to {TOPIC!r} ({PARTITIONS} partitions); "
      "inventory-service (2 processes, stock in SQLite, exactly once), email-service "
      "(deduplicated) and fraud-service (at least once) consume them")

    relay = Worker(path, "relay", "outbox-relay", 0)
    workers = {"inventory": [Worker(path, "inventory", "inventory-1", speeds["inventory"]),
                             Worker(path, "inventory", "inventory-2", speeds["inventory"])],
               "email": [Worker(path, "email", "email-1", speeds["email"])],
               "fraud": [Worker(path, "fraud", "fraud-1", speeds["fraud"])]}
    all_workers = [x for ws in workers.values() for x in ws]
    procs = [relay, *all_workers]
    produced_ids: list[str] = []
    quantities: dict[str, int] = {}
    ids_lock = threading.Lock()
    latencies: list[float] = []
    prod_state = {"phase": "starting", "done": False, "error": None,
                  "burst_s": None}
    local = threading.local()
    conns: list[sqlite3.Connection] = []
    counter = [0]

    def take_order() -> None:
        db = getattr(local, "db", None)
        if db is None:
            db = local.db = sqlite3.connect(os.path.join(path, WORKER_DIR, "shop.db"),
                                            timeout=60, check_same_thread=False)
            with ids_lock:
                conns.append(db)
        with ids_lock:
            i = counter[0]
            counter[0] += 1
        oid, user, qty = f"o-{run_id}-{i:06d}", f"user-{(i * 7919) % 97}", 1 + i % 5
        body = {"eventType": "ORDER_PLACED", "orderId": oid, "userId": user, "sku": sku,
                "quantity": qty, "amount": round(5 + (i * 37 % 500) / 3, 2),
                "ts": int(time.time() * 1000)}
        t0 = time.perf_counter()
        with db:                       # the order and its event: one transaction
            db.execute("INSERT INTO orders VALUES (?, ?, ?)", (oid, user, qty))
            outbox.add(db, TOPIC, json.dumps(body).encode(), key=user.encode())
        lat = time.perf_counter() - t0
        with ids_lock:
            produced_ids.append(oid)
            quantities[oid] = qty
            latencies.append(lat)

    def order_service() -> None:
        try:
            t_start = time.monotonic()
            prod_state["phase"] = "steady"
            while time.monotonic() - t_start < pre_s:
                take_order()
                time.sleep(1.0 / steady_rate)
            prod_state["phase"] = "BURST"
            tb = time.monotonic()
            per = [burst // 4 + (1 if k < burst % 4 else 0) for k in range(4)]

            def web_worker(n):
                for _ in range(n):
                    take_order()
            ts = [threading.Thread(target=web_worker, args=(n,)) for n in per]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            prod_state["burst_s"] = time.monotonic() - tb
            prod_state["phase"] = "steady"
            while time.monotonic() - t_start < post_until:
                take_order()
                time.sleep(1.0 / steady_rate)
        except Exception as exc:      # shown at the end
            prod_state["error"] = exc
        finally:
            prod_state["phase"] = "done"
            prod_state["done"] = True

    t0 = time.monotonic()
    for x in procs:
        x.start()
    w(f"  started {len(procs)} processes: " +
      ", ".join(f"{x.name} (pid {x.proc.pid})" for x in procs))
    producer_thread = threading.Thread(target=order_service, daemon=True)
    producer_thread.start()

    victim = workers["inventory"][0]
    killed_at = restarted = None
    committed_at_kill: dict = {}
    resume_reported = False
    burst_reported = False
    deadline = 120.0
    rc = 0

    def stored_offsets() -> dict:
        """inventory-service's offsets, kept in inventory.db with its changes."""
        db = _db(path, "inventory.db")
        try:
            return dict(db.execute(
                "SELECT partition, next_offset FROM pylog_offsets WHERE "
                "group_id = 'inventory-service' AND topic = ?", (TOPIC,)).fetchall())
        except sqlite3.OperationalError:     # no table before the first worker
            return {}
        finally:
            db.close()

    from pylog import TopicPartition
    fraud_tp = TopicPartition(results_topic("fraud"), 0)
    fraud_reader = log.consumer(enable_auto_commit=False)
    fraud_reader.assign([fraud_tp])
    fraud_reader.seek_to_end(fraud_tp)
    fraud_seen: set = set()

    def processed(g) -> int:
        """This run's orders group ``g`` has processed (distinct): its
        effects, not its offsets (transaction markers take offsets too)."""
        if g == "inventory":
            db = _db(path, "inventory.db")
            try:
                return int(db.execute("SELECT COUNT(*) FROM applied WHERE order_id LIKE ?",
                                      (f"o-{run_id}-%",)).fetchone()[0])
            finally:
                db.close()
        if g == "email":
            return len(set(_read_mails(path, run_id)))
        while vals := fraud_reader.poll_values(timeout=0, max_records=10000):
            fraud_seen.update(v for v in vals if v.startswith(f"o-{run_id}-".encode()))
        return len(fraud_seen)

    def outbox_pending() -> int:
        db = _db(path, "shop.db")
        try:
            return int(db.execute("SELECT COUNT(*) FROM pylog_outbox").fetchone()[0])
        finally:
            db.close()

    try:
        while True:
            now = time.monotonic() - t0
            with ids_lock:
                produced = len(produced_ids)
            done_by = {g: processed(g) for g in groups}
            pending = outbox_pending()
            # the crash: once the relay and inventory are at work
            if killed_at is None and now >= kill_at and (
                    done_by["inventory"] > 0 or now >= kill_at + 5):
                for x in (relay, victim):
                    x.proc.send_signal(signal.SIGKILL)
                    x.proc.wait()
                killed_at = now
                committed_at_kill = stored_offsets()
                w(f"  {now:5.1f}s  SIGKILL -> {relay.name} (pid {relay.proc.pid}) with "
                  f"{pending} events still in the outbox, and {victim.name} (pid "
                  f"{victim.proc.pid}); offsets stored in inventory.db " +
                  " ".join(f"p{p}@{o}" for p, o in sorted(committed_at_kill.items())))
            if killed_at is not None and restarted is None and \
                    now >= killed_at + restart_after:
                for x in (relay, victim):
                    x.start()
                restarted = now
                w(f"  {now:5.1f}s  restarted {relay.name} (pid {relay.proc.pid}): it resumes "
                  "from the position committed with its last batch; restarted "
                  f"{victim.name} (pid {victim.proc.pid}): it resumes from the offsets "
                  "stored with its stock changes")
            if restarted is not None and not resume_reported:
                firsts = {e["partition"]: e["offset"] for e in victim.events()
                          if e.get("event") == "first"}
                if firsts and (now > restarted + 1.0 or prod_state["done"] and pending == 0):
                    resume_reported = True
                    same = all(committed_at_kill.get(p) == o for p, o in firsts.items())
                    w(f"  {now:5.1f}s  {victim.name} resumed at " +
                      " ".join(f"p{p}@{o}" for p, o in sorted(firsts.items())) +
                      (" = exactly the offsets stored when it died"
                       if same else " = the offsets stored in inventory.db with the "
                       "stock changes (inventory-2 applied more meanwhile)") +
                      ": nothing skipped, nothing applied twice")
            if prod_state["burst_s"] is not None and not burst_reported:
                burst_reported = True
                lat = sorted(latencies)
                p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0
                w(f"  {now:5.1f}s  traffic burst: {burst} orders taken in "
                  f"{prod_state['burst_s']:.2f} s by 4 web workers; order + event "
                  f"transaction p50 {lat[len(lat) // 2] * 1000:.2f} ms, p99 {p99:.2f} ms "
                  "- the spike piles up in the outbox and the log, not in request latency")
            # status
            lines = [f"  order-service  {produced:6d} orders taken     "
                     f"[{prod_state['phase']}]   t={now:5.1f}s",
                     f"  outbox-relay   {produced - pending:6d} published   "
                     f"{pending:6d} in the outbox" +
                     ("" if relay.alive() else "  (relay down!)")]
            plain = [f"t={now:5.1f}s orders={produced} outbox={pending}"]
            for g in groups:
                done = done_by[g]
                lag = max(0, produced - done)
                frac = done / produced if produced else 0.0
                alive = sum(1 for x in workers[g] if x.alive())
                note = "" if alive == len(workers[g]) else "  (worker down!)"
                lines.append(f"  {g:<10} {disp.bar(frac)} {done:6d} done  "
                             f"lag {lag:6d}  {alive} proc{note}")
                plain.append(f"{g} done={done} lag={lag}")
            # (and the restarted consumer back at work: on a loaded machine the
            # others can drain everything before it has rejoined its group)
            finished = prod_state["done"] and pending == 0 and all(
                done_by[g] >= produced for g in groups) and (
                    resume_reported or restarted is not None and now > restarted + 15)
            disp.status(lines, "  " + " | ".join(plain), force=bool(finished))
            if finished:
                break
            if now > deadline:
                disp.finish_block()
                w("pylog demo: gave up after 120 s: the groups did not drain "
                  f"(see the worker logs in {os.path.join(path, WORKER_DIR)})")
                rc = 1
                break
            dead = [x for x in procs if x.proc.poll() not in (None, -9)
                    and not (x in (relay, victim) and killed_at is not None
                             and restarted is None)]
            if dead:
                disp.finish_block()
                w(f"pylog demo: {dead[0].name} exited with status "
                  f"{dead[0].proc.returncode}; see {dead[0].out_path}")
                rc = 1
                break
            time.sleep(0.2 if disp.tty else 0.25)
        disp.finish_block()
    finally:
        for x in procs:
            x.stop()
        producer_thread.join(timeout=10)
        fraud_reader.close()
        for c in conns:
            c.close()
    elapsed = time.monotonic() - t0
    if prod_state["error"] is not None:
        w(f"pylog demo: the order service failed: {prod_state['error']}")
        rc = 1
    # the proof
    with ids_lock:
        expected = set(produced_ids)
    in_log = _read_order_ids(log, run_id)
    log_dups = len(in_log) - len(set(in_log))
    log_missing = len(expected - set(in_log))
    inv = _db(path, "inventory.db")
    applied = {r[0] for r in inv.execute("SELECT order_id FROM applied WHERE order_id LIKE ?",
                                         (f"o-{run_id}-%",))}
    reserved = inv.execute("SELECT reserved FROM stock WHERE sku = ?", (sku,)).fetchone()[0]
    inv.close()
    want_reserved = sum(quantities[o] for o in expected)
    mails = _read_mails(path, run_id)
    fraud = _read_ids(log, results_topic("fraud"), run_id)
    seen = {"inventory": (applied, 0), "email": (set(mails), len(mails) - len(set(mails))),
            "fraud": (set(fraud), len(fraud) - len(set(fraud)))}
    rows = []
    all_ok = log_dups == 0 and log_missing == 0 and reserved == want_reserved
    for g in groups:
        distinct = seen[g][0] & expected
        missing = len(expected - distinct)
        all_ok = all_ok and missing == 0
        rows.append([f"{g}-service", len(expected), len(distinct), seen[g][1], missing])
    from .table import table
    from .verify import verify_log
    w("")
    w(f"Summary after {elapsed:.1f} s:")
    w(f"  log: {len(in_log)} ORDER_PLACED events for {len(expected)} orders: "
      f"{log_dups} duplicates, {log_missing} missing (the relay was killed: exactly once)")
    w(f"  inventory stock: {reserved} {sku} reserved, expected {want_reserved}"
      f"{': exact' if reserved == want_reserved else ': WRONG'}")
    w("\n".join("  " + line for line in table(
        rows, ["GROUP", "PRODUCED", "PROCESSED", "DUPLICATES", "MISSING"],
        right={1, 2, 3, 4}).splitlines()))
    log.close()
    problems = verify_log(path)
    if all_ok and rc == 0:
        w(f"OK: every one of the {len(expected)} orders reached the log exactly once "
          "and every group: inventory applied each exactly once, e-mail sent one mail "
          "per order (deduplicated by event id), fraud checked each at least once.")
    else:
        w("FAILED: some orders were lost, doubled or not processed by every group.")
        rc = 1
    # act 2: the e-mail worker pool on one queue
    from .demoqueue import run_queue_act
    if run_queue_act(path, w, fast=fast) != 0:
        rc = 1
    w(f"pylog verify: {'log is sound' if not problems else f'{len(problems)} problem(s)'}")
    for p in problems:
        w(f"  {p}")
    if problems:
        rc = 1
    if temp and not keep:
        shutil.rmtree(path, ignore_errors=True)
        w("(temporary log removed; run 'pylog demo --keep' or 'pylog demo PATH' "
          "to explore it afterwards)")
    else:
        w(f"Explore it: pylog info {path}  |  pylog groups {path} describe "
          f"email-service  |  pylog tail {path} {TOPIC} --since 1m  |  "
          f"sqlite3 {os.path.join(path, WORKER_DIR, 'inventory.db')} 'SELECT * FROM stock'")
    return rc


def _read_order_ids(log, run_id: str) -> list:
    """This run's order ids in TOPIC, as a read_committed consumer sees them."""
    from pylog import TopicPartition
    tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
    c = log.consumer(enable_auto_commit=False, isolation_level="read_committed")
    c.assign(tps)
    c.seek_to_beginning()
    end = c.end_offsets(tps)
    out: list = []
    while any(c.position(tp) < end[tp] for tp in tps):
        recs = c.poll(timeout=0.5, max_records=10000)
        if not recs:
            break
        out.extend(json.loads(cast(bytes, r.value))["orderId"] for r in recs)
    c.close()
    return [o for o in out if o.startswith(f"o-{run_id}-")]


def _read_mails(path: str, run_id: str) -> list:
    try:
        with open(os.path.join(path, WORKER_DIR, "mails.txt"), encoding="utf-8") as f:
            return [line.strip() for line in f if line.startswith(f"o-{run_id}-")]
    except FileNotFoundError:
        return []


def _read_ids(log, topic: str, run_id: str) -> list:
    from pylog import TopicPartition
    tp = TopicPartition(topic, 0)
    c = log.consumer(enable_auto_commit=False)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    prefix = f"o-{run_id}-"
    out: list = []
    while c.position(tp) < end:
        vals = c.poll_values(timeout=0.5, max_records=10000)
        if not vals:
            break
        out.extend(v.decode() for v in vals if v.decode().startswith(prefix))
    c.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pylog.demo")
    p.add_argument("--role", choices=("show", "worker"), default="show")
    p.add_argument("args", nargs="*")
    p.add_argument("--fast", action="store_true")
    p.add_argument("--events", type=int)
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    if a.role == "worker":
        path, group, name, ms = a.args
        return worker_main(path, group, name, float(ms))
    return run_demo(a.args[0] if a.args else None, events=a.events,
                    fast=a.fast, keep=a.keep)


if __name__ == "__main__":
    sys.exit(main())
