"""``pylog demo``, second act: a pool of e-mail workers on one queue.

Three worker processes share one queue (a share group, README "Work
queues") of e-mail jobs on the demo's log. The e-mail provider fails at
random: a failed send is released with a delay that grows with the job's
delivery count. A poison job (a bad address) is rejected and parked in the
dead-letter topic; a job whose provider failed at every one of its
``delivery_limit`` tries is parked there too. One worker hangs in a job
and is SIGKILLed: its job goes to another worker at once (a dead process
loses its locks), not after the 30-second lock. The act then checks that
every job was sent once or parked, and shows the queue's state.

Workers run as ``python -m pylog.demoqueue PATH NAME SEED [--hang]`` and
report on stdout, one line per step: ``ready``, ``start JOB COUNT``,
``sent JOB``, ``failed JOB COUNT``, ``rejected JOB``, where JOB is
``RUN:I`` (``-`` for a job in another format: the act counts only its
run's).

``examples/email_workers.py`` has the same worker loop on purpose: it is
the copy users read and run from a checkout, whole on one page, while
this one is installed with the package (which ships no examples/) and
reports every step for the act to check.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable

TOPIC = "emails"
DLQ = "emails.dlq"
GROUP = "mailers"
LIMIT = 4               # deliveries before a failing job is parked
FAIL_RATE = 0.2         # the provider's
POISON_EVERY = 10       # job i is poison when i % 10 == 7


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def worker_main(path: str, name: str, seed: int, hang: bool) -> int:
    """One e-mail worker: takes jobs until SIGTERM. With ``hang`` it takes
    one job and never finishes it (the provider does not answer)."""
    import pylog
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    rng = random.Random(seed)
    # sync="never": a killed process loses nothing (the page cache keeps
    # it), and acknowledgements cost no fsync
    with pylog.open(path, sync="never") as log, \
            log.share_consumer(TOPIC, group_id=GROUP, auto_offset_reset="earliest",
                               delivery_limit=LIMIT, dead_letter_topic=DLQ) as q:
        _say("ready")
        while not stop.is_set():
            for job in q.poll(timeout_ms=100, max_records=1 if hang else 5):
                value = job.value if isinstance(job.value, bytes) else b""
                # "RUN:I:ADDRESS" from the act; a job of anyone else (the
                # examples' workers share the topic) is done the same way
                parts = value.split(b":")
                jid = b":".join(parts[:2]).decode("ascii", "replace") \
                    if len(parts) == 3 else "-"
                _say(f"start {jid} {job.delivery_count}")
                if hang and jid != "-":
                    time.sleep(3600)                # killed here, mid-job
                time.sleep(0.005)                   # talking to the provider
                if value.endswith(b"bad-address"):
                    q.acknowledge(job, "reject")    # poison: park it
                    _say(f"rejected {jid}")
                elif jid != "-" and rng.random() < FAIL_RATE:   # the provider failed
                    q.acknowledge(job, "release", delay_ms=50 * job.delivery_count)
                    _say(f"failed {jid} {job.delivery_count}")
                else:
                    q.acknowledge(job, "accept")
                    _say(f"sent {jid}")
            q.commit()
    return 0


class _Mailer:
    """A worker process and the lines it reported, with their times."""

    def __init__(self, path: str, name: str, seed: int, hang: bool,
                 lines: list[tuple[float, str, list[str]]], lock: threading.Lock):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        argv = [sys.executable, "-m", "pylog.demoqueue", path, name, str(seed)]
        self.name = name
        # cwd: not the caller's directory, where a source checkout would
        # shadow the installed package (as the order act's workers)
        self.proc = subprocess.Popen(argv + (["--hang"] if hang else []),
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     env=env, close_fds=True, cwd=path, text=True)
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(self.proc.stdout, lines, lock),
                                        daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str], lines: list[tuple[float, str, list[str]]],
              lock: threading.Lock) -> None:
        for line in stream:
            words = line.split()
            if words == ["ready"]:
                self.ready.set()
            elif words:
                with lock:
                    lines.append((time.monotonic(), self.name, words))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._thread.join(timeout=5)


def _row(log: Any) -> dict[str, Any] | None:
    rows = [r for r in log.share_groups() if r["group"] == GROUP and r["topic"] == TOPIC]
    return rows[0] if rows else None


def _parked(log: Any, run_id: str) -> list[tuple[str, str, int]]:
    """(job, reason, deliveries) of this run's jobs in the dead-letter topic."""
    from pylog import TopicPartition
    tp = TopicPartition(DLQ, 0)
    c = log.consumer(enable_auto_commit=False)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    out: list[tuple[str, str, int]] = []
    while c.position(tp) < end:
        recs = c.poll(timeout=0.5, max_records=1000)
        if not recs:
            break
        for r in recs:
            parts = bytes(r.value or b"").decode().split(":")
            if parts[0] != run_id:
                continue
            h = {k: v.decode() for k, v in r.headers}
            out.append((parts[1], h["_dlq.errors.reason"], int(h["_dlq.errors.delivery.count"])))
    c.close()
    return out


def run_queue_act(path: str, w: Callable[[str], None], *, fast: bool) -> int:
    """The act on the log at ``path``; ``w`` prints a line. 0 when every
    job was sent once or parked as expected, 1 otherwise."""
    import pylog
    n = 30 if fast else 60
    run_id = os.urandom(3).hex()
    poison = {str(i) for i in range(n) if i % POISON_EVERY == 7}
    w("")
    w(f"Act 2: a work queue. {n} e-mail jobs in {TOPIC!r} ({len(poison)} poison: bad "
      f"addresses), 3 worker processes in share group {GROUP!r} take any next job; the "
      f"provider fails {FAIL_RATE:.0%} of sends: released with a delay and retried, "
      f"parked in {DLQ!r} after {LIMIT} tries")
    lines: list[tuple[float, str, list[str]]] = []
    lock = threading.Lock()
    mailers: list[_Mailer] = []
    ours = run_id + ":"

    def ours_of(words: list[str]) -> str | None:
        """The job number of a worker's line about this run's job."""
        return words[1][len(ours):] if words[1].startswith(ours) else None
    rc = 0
    t0 = time.monotonic()
    with pylog.open(path, sync="never") as log:
        log.create_topic(TOPIC, partitions=1, exist_ok=True)
        log.create_topic(DLQ, partitions=1, exist_ok=True)
        before = _row(log)
        archived_before = (before or {}).get("archived_total") or 0
        log.producer().send_batch(TOPIC, [
            f"{run_id}:{i}:{'bad-address' if str(i) in poison else f'user{i}@example.com'}"
            .encode() for i in range(n)])
        try:
            # the victim first, so that it surely holds a job when killed
            victim = _Mailer(path, "mailer-1", 1, True, lines, lock)
            mailers.append(victim)
            victim_job = _wait(lambda: next((ours_of(x[2]) for x in lines if x[1] == victim.name
                                             and x[2][0] == "start" and ours_of(x[2])), None),
                               victim)
            w(f"  {victim.name} (pid {victim.proc.pid}) took job {victim_job} and hangs: "
              "the provider does not answer")
            mailers += [_Mailer(path, f"mailer-{k}", k, False, lines, lock) for k in (2, 3)]
            _wait(lambda: sum(1 for x in lines if x[2][0] == "sent" and ours_of(x[2])) >= 3
                  or None, victim)
            os.kill(victim.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            victim.proc.wait()
            w(f"  SIGKILL -> {victim.name} (pid {victim.proc.pid}) in the middle of job "
              f"{victim_job} (its lock: 30 s)")
            taken = _wait(lambda: next(((t, who) for t, who, x in lines if t >= killed
                                        and x[0] == "start" and ours_of(x) == victim_job),
                                       None), None)
            w(f"  job {victim_job} taken by {taken[1]} within "
              f"{(taken[0] - killed) * 1000:.0f} ms of the kill: a dead process's "
              "jobs go back at once")
            row = _wait(lambda: (r if (r := _row(log)) and r["spso"] >= r["end_offset"]
                                 and not r["acquired"] and not r["delayed"] else None), None)
        except TimeoutError as exc:
            w(f"pylog demo: the work queue did not drain: {exc}")
            return 1
        finally:
            for m in mailers:
                m.stop()
        parked = _parked(log, run_id)
    elapsed = time.monotonic() - t0
    with lock:
        sent = [j for x in lines if x[2][0] == "sent" and (j := ours_of(x[2]))]
        failed = sum(1 for x in lines if x[2][0] == "failed" and ours_of(x[2]))
    by_limit = sorted((p for p in parked if p[1] == "delivery_limit"), key=lambda p: int(p[0]))
    for job, reason, count in sorted(parked, key=lambda p: int(p[0])):
        w(f"  parked in {DLQ}: job {job} ({reason}, at delivery {count})")
    archived = (row.get("archived_total") or 0) - archived_before
    w(f"  queue {GROUP}/{TOPIC}: available {row['available']}, acquired "
      f"{row['acquired']}, delayed {row['delayed']}, archived {archived}   "
      f"(pylog queues {path})")
    parked_ids = [p[0] for p in parked]
    rejected = {p[0] for p in parked if p[1] == "rejected"}
    every = {str(i) for i in range(n)}
    ok = (rejected == poison and len(sent) == len(set(sent))
          and len(parked_ids) == len(set(parked_ids)) and not set(sent) & set(parked_ids)
          and set(sent) | set(parked_ids) == every and archived == len(parked)
          and not set(p[0] for p in by_limit) & poison)
    if ok:
        w(f"OK: all {n} jobs in {elapsed:.1f} s: {len(sent)} sent once each, "
          f"{len(parked)} parked ({len(poison)} poison, {len(by_limit)} failed at every "
          f"try), {failed} provider failures released with a delay; the killed worker's "
          "job redone at once.")
    else:
        w(f"FAILED: the work queue lost, doubled or misplaced jobs: {len(sent)} sent "
          f"({len(sent) - len(set(sent))} twice), {len(parked)} parked, "
          f"{len(every - set(sent) - set(parked_ids))} missing, poison parked "
          f"{sorted(rejected)} (expected {sorted(poison)}), archived {archived}.")
        rc = 1
    return rc


def _wait(probe: Callable[[], Any], victim: _Mailer | None, timeout: float = 60.0) -> Any:
    """``probe()`` once it is not None; TimeoutError after ``timeout`` or
    when ``victim`` (still expected alive) exits."""
    end = time.monotonic() + timeout
    while True:
        got = probe()
        if got is not None:
            return got
        if victim is not None and victim.proc.poll() is not None:
            raise TimeoutError(f"{victim.name} exited with status {victim.proc.returncode}")
        if time.monotonic() > end:
            raise TimeoutError(f"nothing after {timeout:.0f} s")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    hang = "--hang" in args
    path, name, seed = [a for a in args if a != "--hang"]
    return worker_main(path, name, int(seed), hang)


if __name__ == "__main__":
    sys.exit(main())
