"""Crash-loop harness (issue 6): producers, consumer-group members and an
admin (creating topics, adding partitions) run together on one log and are
SIGKILLed at random instants. After each kill round the parent checks:

* no lock is left held by a live process (pylog.lock, meta.lock and every
  partition's append lock, asked as FORMAT.rst L-2, L-7 and P-3 define
  them: see tests/lockprobe.py);
* reopening (first opener: recovery) gives, per partition, offsets 0..n-1
  with every acknowledged record exactly once, at its offset, unchanged;
* every group's committed offset is at or after its last acknowledged
  commit and never after the largest offset a member attempted to commit
  (a commit in flight at the kill may land or not);
* topics and partition counts acknowledged by the admin exist;
* ``pylog.verify.verify_log`` is clean; appends continue at the right offset.

Replay a failure: ``python tests/crash/harness.py --seed N --rounds R``.
Child roles run as ``python harness.py child ROLE LOGDIR SYNC SEED``.
"""

import os
import random
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(HERE))      # tests/: lockprobe, childproc
import childproc  # noqa: E402
import lockprobe  # noqa: E402

# ----------------------------------------------------------------- children --

def _emit(s):
    sys.stdout.write(s + "\n")
    sys.stdout.flush()


def child(role, path, sync, seed):
    import pylog
    rng = random.Random(seed)
    log = pylog.open(path, sync=sync)
    log.create_topic("t", partitions=2, segment_bytes=65536, max_message_bytes=60000,
                     retention_ms=-1, exist_ok=True)
    _emit("ready")
    if role == "producer":
        prod = log.producer()
        i = 0
        while True:
            key = b"k%d" % rng.randrange(50)
            v = b"%d.%d:" % (seed, i) + b"p" * rng.randrange(0, 1500)
            if i % 5 == 4:
                vals = [v + b"/%d" % j for j in range(rng.randint(1, 8))]
                mds = prod.send_batch("t", [(key, x) for x in vals])
            else:
                vals = [v]
                mds = [prod.send("t", v, key=key)]
            _emit("\n".join("A t %d %d %s" % (md.partition, md.offset, x.decode())
                            for md, x in zip(mds, vals)))
            if i % 37 == 36:
                prod.flush()
            i += 1
    elif role == "member":
        c = log.consumer("t", group_id="g", enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=2000)
        while True:
            c.poll(timeout=0.05, max_records=rng.randint(1, 40))
            pos = {}
            for tp in c.assignment():
                try:
                    pos[tp] = c.position(tp)
                except pylog.PylogError:
                    pass
            for tp, off in pos.items():
                _emit("T %s %d %d" % (tp.topic, tp.partition, off))
            try:
                c.commit({tp: off for tp, off in pos.items()} if pos else None)
            except pylog.CommitFailedError:
                continue
            for tp, off in pos.items():
                _emit("C %s %d %d" % (tp.topic, tp.partition, off))
    elif role == "admin":
        n = 0
        while True:
            time.sleep(rng.uniform(0.01, 0.1))
            if rng.random() < 0.3:
                cur = log.partitions_for("t", max_age_s=0)
                if cur < 6:
                    log.create_partitions("t", cur + 1)
                    _emit("P t %d" % (cur + 1))
            else:
                name = "x%d-%d" % (seed, n)
                log.create_topic(name, partitions=rng.randint(1, 3))
                _emit("N %s" % name)
                n += 1
    raise SystemExit("unknown role " + role)


# ------------------------------------------------------------------- parent --

class State:
    def __init__(self):
        self.acked = {}        # (topic, p) -> {offset: value}
        self.commit_acked = {}  # (topic, p) -> max acknowledged commit
        self.commit_tried = {}  # (topic, p) -> max attempted commit
        self.partitions = 2
        self.topics = set()
        self.kills = 0
        self.records = 0
        self.ready = False     # a child created topic t (it says so after)

    def absorb(self, out):
        for ln in out.split(b"\n")[:-1]:      # a last partial line is no ack
            parts = ln.split(b" ", 4)
            kind = parts[0]
            if kind == b"A":
                tp = (parts[1].decode(), int(parts[2]))
                self.acked.setdefault(tp, {})[int(parts[3])] = parts[4]
                self.records += 1
            elif kind in (b"C", b"T"):
                tp = (parts[1].decode(), int(parts[2]))
                d = self.commit_acked if kind == b"C" else self.commit_tried
                d[tp] = max(d.get(tp, 0), int(parts[3]))
            elif kind == b"P":
                self.partitions = max(self.partitions, int(parts[2]))
            elif kind == b"N":
                self.topics.add(parts[1].decode())
            elif kind == b"ready":
                self.ready = True


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("LD_PRELOAD", None)
    return env


def locks_held(path):
    """Every lock of the log at ``path`` a live process still holds
    (tests/lockprobe.py: pylog.lock L-2, meta.lock L-7 and each partition's
    append lock P-3); an append lock left by a dead holder is free (P-3)."""
    return lockprobe.held_locks(path)


def check(path, st):
    import pylog
    from pylog.partition import Cursor
    held = locks_held(path)
    assert not held, f"locks still held after every process died: {held}"
    with pylog.open(path, sync="never") as log:
        topics = set(log.topics())
        missing = st.topics - topics
        assert not missing, f"acknowledged topics lost: {sorted(missing)}"
        if "t" not in topics:
            # every child died before its create_topic returned (a loaded
            # host can take longer to start one than the round lasts)
            assert not st.ready, "topic t lost after a child created it"
            n = 0
        else:
            n = log.partitions_for("t", max_age_s=0)
        assert n >= st.partitions or not st.ready, \
            f"t has {n} partitions, {st.partitions} acknowledged"
        for p in range(n):
            part = log.partition("t", p)
            assert part.failed is None, f"t-{p} FAILED: {part.failed}"
            recs = part.fetch(Cursor(0), 10**7)
            assert [r[0] for r in recs] == list(range(len(recs))), f"t-{p} not dense"
            vals = [r[3] for r in recs]
            acked = st.acked.get(("t", p), {})
            for off, v in acked.items():
                assert off < len(vals) and vals[off] == v, \
                    f"acknowledged record t-{p}@{off} lost or changed"
            ackset = set(acked.values())
            seen = [v for v in vals if v in ackset]
            assert len(seen) == len(set(seen)), f"t-{p}: an acknowledged record twice"
            got = log.meta.committed("g", "t", p)
            lo = st.commit_acked.get(("t", p))
            hi = st.commit_tried.get(("t", p))
            if lo is not None:
                assert got is not None and got >= lo, \
                    f"group g t-{p}: committed {got} is before acknowledged {lo}"
            if got is not None and hi is not None:
                assert got <= hi, f"group g t-{p}: committed {got} after any attempt {hi}"
            if got is not None:
                assert got <= len(recs), f"group g t-{p}: committed past the end"
    problems = __import__("pylog.verify").verify.verify_log(path)
    assert not problems, [str(x) for x in problems]


ROLES = ["producer", "producer", "member", "member", "admin"]


def crash_round(path, st, rng, sync):
    env = child_env()
    procs = []
    for i, role in enumerate(ROLES):
        seed = rng.randrange(1 << 30)
        procs.append((role, subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "child", role, path, sync,
             str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)))
    # The round's clock starts once the first producer is ready: on a loaded
    # host starting five interpreters can outlast the whole round, and a
    # round that kills only starting processes tests nothing. The others
    # still die at random instants, some of them mid-startup.
    try:
        childproc.expect(procs[0][1], b"ready", timeout=120)
    except BaseException:
        for _, pr in procs:
            pr.kill()
            pr.wait()
        raise
    st.ready = True
    t_end = time.monotonic() + rng.uniform(0.3, 1.2)
    # kill each at its own random instant (some mid-startup, most mid-work)
    order = sorted(((rng.uniform(0.0, 1.0), i) for i in range(len(procs))))
    for frac, i in order:
        now = time.monotonic()
        delay = max(0.0, (t_end - now) * frac)
        time.sleep(min(delay, 0.4))
        role, pr = procs[i]
        if pr.poll() is None:
            pr.send_signal(signal.SIGKILL)
            st.kills += 1
    for role, pr in procs:
        out, err = pr.communicate(timeout=60)
        st.absorb(out)
        if pr.returncode != -signal.SIGKILL:
            raise AssertionError(f"{role} exited {pr.returncode} before the kill:\n"
                                 + err.decode()[-3000:])


def run(path, seed, rounds=None, kills=None, budget_s=None, modes=("always", "interval", "never")):
    rng = random.Random(seed)
    st = State()
    t0 = time.monotonic()
    r = 0
    while True:
        if rounds is not None and r >= rounds:
            break
        if kills is not None and st.kills >= kills:
            break
        if budget_s is not None and time.monotonic() - t0 > budget_s:
            break
        sync = modes[r % len(modes)]
        try:
            crash_round(path, st, rng, sync)
            check(path, st)
        except BaseException:
            print(f"crash loop FAILED in round {r} (sync={sync}); replay: "
                  f"python tests/crash/harness.py --seed {seed} --rounds {r + 1}")
            raise
        r += 1
    return r, st


def main(argv):
    if argv and argv[0] == "child":
        role, path, sync, seed = argv[1], argv[2], argv[3], int(argv[4])
        return child(role, path, sync, seed)
    import argparse
    import tempfile
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        rounds, st = run(os.path.join(d, "log"), a.seed, rounds=a.rounds)
    print(f"seed {a.seed}: {rounds} rounds, {st.kills} kills, {st.records} acked records ok")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main(sys.argv[1:])
