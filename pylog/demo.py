"""``pylog demo``: the story of SPEC §1, live in the terminal.

An order service records ORDER_PLACED events keyed by user (with a traffic
burst that piles up in the log, not in request latency); inventory, e-mail
and fraud services consume them in their own consumer groups, each in its own
process(es), at their own pace. One consumer process is killed with SIGKILL
and restarted: it resumes from its committed offset. At the end every group's
processed order ids are counted against the produced ones.

Each worker process records the order ids it processed in a results topic of
the same log (``demo.processed.<group>``, written with ``sync="always"``)
*before* committing its consumer offsets: at-least-once, so a crash can only
cause duplicates, never a gap. The final check counts distinct ids (must
equal the produced ones) and duplicates separately.

Workers run as ``python -m pylog.demo --role worker PATH GROUP NAME MS``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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

    log = pylog.open(path)          # sync="always": results are durable
    consumer = log.consumer(TOPIC, group_id=f"{group}-service",
                            auto_offset_reset="earliest",
                            enable_auto_commit=False, session_timeout_ms=3000,
                            client_id=name)
    producer = log.producer()
    status(event="start", pid=os.getpid())
    seen = set()
    try:
        while not stop.is_set():
            recs = consumer.poll(timeout=0.2, max_records=20)
            if not recs:
                continue
            for r in recs:
                if r.partition not in seen:
                    seen.add(r.partition)
                    status(event="first", partition=r.partition, offset=r.offset)
            time.sleep(len(recs) * ms_per_event / 1000.0)   # the "work"
            # the demo's values are the JSON bytes the order service sent
            ids = [json.loads(cast(bytes, r.value))["orderId"].encode() for r in recs]
            producer.send_batch(results_topic(group), ids, partition=0)
            offsets = {}
            for r in recs:
                offsets[TopicPartition(r.topic, r.partition)] = r.offset + 1
            try:
                consumer.commit(offsets)
            except CommitFailedError:
                pass    # a rebalance moved the partition; its new owner redoes it
    finally:
        consumer.close(autocommit=False)
        producer.close()
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
        out = open(self.out_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pylog.demo", "--role", "worker", self.path,
                 self.group, self.name, str(self.ms)],
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
    for g in groups:
        log.create_topic(results_topic(g), partitions=1, exist_ok=True)
    start_ends = {p.partition: p.end_offset
                  for p in log.describe_topic(TOPIC).partition_info}
    run_id = os.urandom(3).hex()

    w = lambda *a: disp.event(" ".join(str(x) for x in a))   # noqa: E731
    w(f"pylog demo: the order story, live  (log: {path})")
    w(f"  topic {TOPIC!r}, {PARTITIONS} partitions; groups inventory-service "
      f"(2 processes), email-service and fraud-service (1 process each)")

    workers = {"inventory": [Worker(path, "inventory", "inventory-1", speeds["inventory"]),
                             Worker(path, "inventory", "inventory-2", speeds["inventory"])],
               "email": [Worker(path, "email", "email-1", speeds["email"])],
               "fraud": [Worker(path, "fraud", "fraud-1", speeds["fraud"])]}
    all_workers = [x for ws in workers.values() for x in ws]
    produced_ids: list[str] = []
    ids_lock = threading.Lock()
    latencies: list[float] = []
    prod_state = {"phase": "starting", "done": False, "error": None,
                  "burst_s": None}

    def order(i: int, user: int) -> tuple[bytes, bytes]:
        oid = f"o-{run_id}-{i:06d}"
        body = {"eventType": "ORDER_PLACED", "orderId": oid,
                "userId": f"user-{user}", "amount": round(5 + (i * 37 % 500) / 3, 2),
                "ts": int(time.time() * 1000)}
        return f"user-{user}".encode(), json.dumps(body).encode()

    counter = [0]

    def take_order(producer) -> None:
        with ids_lock:
            i = counter[0]
            counter[0] += 1
        key, value = order(i, (i * 7919) % 97)
        t0 = time.perf_counter()
        producer.send(TOPIC, value, key=key)
        lat = time.perf_counter() - t0
        with ids_lock:
            produced_ids.append(f"o-{run_id}-{i:06d}")
            latencies.append(lat)

    def order_service() -> None:
        try:
            producer = log.producer()
            t_start = time.monotonic()
            prod_state["phase"] = "steady"
            while time.monotonic() - t_start < pre_s:
                take_order(producer)
                time.sleep(1.0 / steady_rate)
            prod_state["phase"] = "BURST"
            tb = time.monotonic()
            per = [burst // 4 + (1 if k < burst % 4 else 0) for k in range(4)]

            def web_worker(n):
                for _ in range(n):
                    take_order(producer)
            ts = [threading.Thread(target=web_worker, args=(n,)) for n in per]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            prod_state["burst_s"] = time.monotonic() - tb
            prod_state["phase"] = "steady"
            while time.monotonic() - t_start < post_until:
                take_order(producer)
                time.sleep(1.0 / steady_rate)
            producer.close()
        except Exception as exc:      # shown at the end
            prod_state["error"] = exc
        finally:
            prod_state["phase"] = "done"
            prod_state["done"] = True

    t0 = time.monotonic()
    for x in all_workers:
        x.start()
    w(f"  started {len(all_workers)} consumer processes: " +
      ", ".join(f"{x.name} (pid {x.proc.pid})" for x in all_workers))
    producer_thread = threading.Thread(target=order_service, daemon=True)
    producer_thread.start()

    victim = workers["email"][0]
    killed_at = restarted = None
    committed_at_kill: dict = {}
    resume_reported = False
    burst_reported = False
    deadline = 120.0
    rc = 0

    def group_progress(g):
        d = log.describe_group(f"{g}-service")
        committed = {p["partition"]: p["committed"] for p in d["partitions"]
                     if p["topic"] == TOPIC and p["committed"] is not None}
        done = sum(committed.get(p, start_ends.get(p, 0)) - start_ends.get(p, 0)
                   for p in range(PARTITIONS))
        return max(0, done), committed

    try:
        while True:
            now = time.monotonic() - t0
            with ids_lock:
                produced = len(produced_ids)
            progress = {g: group_progress(g) for g in groups}
            # the crash
            if killed_at is None and now >= kill_at:
                victim.proc.send_signal(signal.SIGKILL)
                victim.proc.wait()
                killed_at = now
                committed_at_kill = group_progress("email")[1]
                w(f"  {now:5.1f}s  SIGKILL -> {victim.name} (pid {victim.proc.pid}); "
                  f"it had processed {progress['email'][0]} events; committed "
                  "offsets " + " ".join(f"p{p}@{o}" for p, o in
                                        sorted(committed_at_kill.items())))
            if killed_at is not None and restarted is None and \
                    now >= killed_at + restart_after:
                victim.start()
                restarted = now
                w(f"  {now:5.1f}s  restarted {victim.name} (pid {victim.proc.pid}); "
                  "it resumes from the group's committed offsets")
            if restarted is not None and not resume_reported:
                firsts = {e["partition"]: e["offset"] for e in victim.events()
                          if e.get("event") == "first"}
                want = {p for p in range(PARTITIONS)
                        if committed_at_kill.get(p, 0) < start_ends.get(p, 0) + produced}
                if firsts and (set(firsts) >= want or now > restarted + 2.0):
                    resume_reported = True
                    same = all(committed_at_kill.get(p) == o for p, o in firsts.items())
                    w(f"  {now:5.1f}s  {victim.name} resumed at " +
                      " ".join(f"p{p}@{o}" for p, o in sorted(firsts.items())) +
                      (" = exactly the committed offsets: nothing skipped"
                       if same else " (committed offsets, possibly after a rebalance)"))
            if prod_state["burst_s"] is not None and not burst_reported:
                burst_reported = True
                lat = sorted(latencies)
                p99 = lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0.0
                w(f"  {now:5.1f}s  traffic burst: {burst} orders taken in "
                  f"{prod_state['burst_s']:.2f} s by 4 web workers; send latency "
                  f"p50 {lat[len(lat) // 2] * 1000:.2f} ms, p99 {p99:.2f} ms "
                  "- the spike piles up in the log, not in request latency")
            # status
            lines = [f"  order-service  {produced:6d} events produced   "
                     f"[{prod_state['phase']}]   t={now:5.1f}s"]
            plain = [f"t={now:5.1f}s produced={produced}"]
            for g in groups:
                done, _ = progress[g]
                lag = max(0, produced - done)
                frac = done / produced if produced else 0.0
                alive = sum(1 for x in workers[g] if x.alive())
                note = "" if alive == len(workers[g]) else "  (worker down!)"
                lines.append(f"  {g:<10} {disp.bar(frac)} {done:6d} done  "
                             f"lag {lag:6d}  {alive} proc{note}")
                plain.append(f"{g} done={done} lag={lag}")
            finished = prod_state["done"] and all(
                progress[g][0] >= produced for g in groups)
            disp.status(lines, "  " + " | ".join(plain), force=bool(finished))
            if finished:
                break
            if now > deadline:
                disp.finish_block()
                w("pylog demo: gave up after 120 s: the groups did not drain "
                  f"(see the worker logs in {os.path.join(path, WORKER_DIR)})")
                rc = 1
                break
            dead = [x for x in all_workers if x.proc.poll() not in (None, -9)
                    and not (x is victim and killed_at is not None and restarted is None)]
            if dead:
                disp.finish_block()
                w(f"pylog demo: worker {dead[0].name} exited with status "
                  f"{dead[0].proc.returncode}; see {dead[0].out_path}")
                rc = 1
                break
            time.sleep(0.2 if disp.tty else 0.25)
        disp.finish_block()
    finally:
        for x in all_workers:
            x.stop()
        producer_thread.join(timeout=10)
    elapsed = time.monotonic() - t0
    if prod_state["error"] is not None:
        w(f"pylog demo: the order service failed: {prod_state['error']}")
        rc = 1
    # the proof
    with ids_lock:
        expected = set(produced_ids)
    rows = []
    all_ok = True
    for g in groups:
        seen = _read_ids(log, results_topic(g), run_id)
        distinct = set(seen) & expected
        missing = len(expected - distinct)
        dups = len(seen) - len(set(seen))
        all_ok = all_ok and missing == 0
        rows.append([f"{g}-service", len(expected), len(distinct), dups, missing])
    from .table import table
    from .verify import verify_log
    w("")
    w(f"Summary after {elapsed:.1f} s:")
    w("\n".join("  " + line for line in table(
        rows, ["GROUP", "PRODUCED", "PROCESSED", "DUPLICATES", "MISSING"],
        right={1, 2, 3, 4}).splitlines()))
    log.close()
    problems = verify_log(path)
    if all_ok and rc == 0:
        w(f"OK: every one of the {len(expected)} events was processed by every "
          "group; nothing lost (duplicates are allowed: at-least-once "
          "delivery around the crash).")
    else:
        w("FAILED: some events were not processed by every group.")
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
          f"email-service  |  pylog tail {path} {TOPIC} --since 1m")
    return rc


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
