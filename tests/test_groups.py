"""Consumer groups across threads and processes (SPEC §5, G3)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import pylog
from pylog import TopicPartition as TP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env():
    return dict(os.environ, PYTHONPATH=ROOT)


def produce(log, topic, n, partitions):
    log.create_topic(topic, partitions=partitions, exist_ok=True)
    p = log.producer()
    p.send_batch(topic, [b"%d" % i for i in range(n)])
    for i in range(n):
        p.send(topic, b"k%d" % i, key=b"%d" % i)


def test_three_groups_each_receive_everything(tmp_path):
    with pylog.open(tmp_path, sync="never") as log:
        produce(log, "orders", 100, 4)
        total = sum(pi.end_offset for pi in log.describe_topic("orders").partition_info)
        for g in ("inventory", "email", "fraud"):
            c = log.consumer("orders", group_id=g, auto_offset_reset="earliest")
            got = []
            while batch := c.poll(timeout=0.2, max_records=1000):
                got.extend(batch)
            assert len(got) == total
            assert len({(r.partition, r.offset) for r in got}) == total
            c.close()


MEMBER = textwrap.dedent("""
    import os, sys, time, pylog
    path, group, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    log = pylog.open(path, sync="never")
    c = log.consumer("t", group_id=group, auto_offset_reset="earliest",
                     enable_auto_commit=False, session_timeout_ms=30000, client_id=tag)
    out = open(os.path.join(path, "seen-" + tag), "a")
    deadline = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < deadline:
        recs = c.poll(timeout=0.1)
        for r in recs:
            out.write(f"{r.partition} {r.offset}\\n")
        out.flush()
        os.fsync(out.fileno())
        if recs:
            c.commit()
        print("owned", sorted(p for _, p in c.assignment()), flush=True)
    c.close()
""")


def read_seen(path):
    seen = []
    for name in os.listdir(path):
        if name.startswith("seen-"):
            with open(os.path.join(path, name)) as f:
                seen += [(name, tuple(map(int, line.split()))) for line in f if line.strip()]
    return seen


def test_threads_and_processes_split_partitions(tmp_path):
    """Four members (two threads + two processes) split eight partitions:
    no overlap, full coverage."""
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=8)
        procs = [subprocess.Popen([sys.executable, "-c", MEMBER, str(tmp_path), "g", f"p{i}", "6"],
                                  stdout=subprocess.PIPE, env=child_env(), text=True)
                 for i in range(2)]
        owned = {}
        stop = threading.Event()

        def thread_member(tag):
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest", client_id=tag,
                             session_timeout_ms=30000)
            while not stop.is_set():
                c.poll(timeout=0.1)
                owned[tag] = {p for _, p in c.assignment()}
            c.close()

        threads = [threading.Thread(target=thread_member, args=(f"t{i}",)) for i in range(2)]
        for t in threads:
            t.start()
        # wait until the group is stable: 4 members, every partition owned once
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            d = log.describe_group("g")
            owners = {}
            for m in d["members"]:
                for tp in m["owned"]:
                    owners.setdefault(tp, []).append(m["member_id"])
            if len(d["members"]) == 4 and len(owners) == 8 and \
                    all(len(v) == 1 for v in owners.values()) and \
                    all(len(m["owned"]) == 2 for m in d["members"]):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"group never stabilised: {d}")
        stop.set()
        for t in threads:
            t.join()
        for p in procs:
            p.wait(timeout=30)


def test_sigkill_member_hands_partitions_to_survivor(tmp_path):
    """A member process SIGKILLed mid-stream: its partitions move to the
    survivor at once (pid check, not the 30 s session timeout), and every
    record is processed at least once with no gap."""
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=4)
        p = log.producer()
        victim = subprocess.Popen([sys.executable, "-c", MEMBER, str(tmp_path), "g", "victim", "60"],
                                  stdout=subprocess.PIPE, env=child_env(), text=True)
        assert victim.stdout.readline().startswith("owned")
        survivor = subprocess.Popen([sys.executable, "-c", MEMBER, str(tmp_path), "g", "survivor", "12"],
                                    stdout=subprocess.PIPE, env=child_env(), text=True)
        assert survivor.stdout.readline().startswith("owned")
        for i in range(400):
            p.send("t", b"%d" % i, partition=i % 4)
            if i == 200:
                time.sleep(0.5)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8:
            line = survivor.stdout.readline()
            if line.strip() == "owned [0, 1, 2, 3]":
                break
        else:
            pytest.fail("survivor never got all partitions")
        assert time.monotonic() - t0 < 8     # far below session_timeout_ms=30000
        survivor.wait(timeout=30)
        seen = {rec for _, rec in read_seen(tmp_path)}
        want = {(i % 4, i // 4) for i in range(400)}
        assert want <= seen, f"missing {sorted(want - seen)[:10]}"


def test_stale_member_commit_is_refused(tmp_path):
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=2)
        log.producer().send_batch("t", [b"x"] * 10, partition=0)
        a = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False, session_timeout_ms=200)
        a.poll(timeout=0.5)
        assert a.assignment() == {TP("t", 0), TP("t", 1)}
        time.sleep(0.5)      # a misses its session timeout
        b = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False, session_timeout_ms=10000)
        b.poll(timeout=0.5)
        with pytest.raises(pylog.CommitFailedError):
            a.commit({TP("t", 0): 5})
        b.close()
        a.close(autocommit=False)


def test_rebalance_handoff_commits_and_never_overlaps(tmp_path):
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=4)
        prod = log.producer()
        for i in range(100):
            prod.send("t", b"%d" % i, partition=i % 4)
        a = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        got_a = a.poll(timeout=0.5, max_records=1000)
        assert len(got_a) == 100
        b = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            b.poll(timeout=0.05)
            a.poll(timeout=0.05)
            if len(a.assignment()) == 2 and len(b.assignment()) == 2:
                break
        assert a.assignment().isdisjoint(b.assignment())
        assert len(a.assignment() | b.assignment()) == 4
        # a committed its positions when it released: b re-reads nothing
        assert b.poll(timeout=0.2) == []
        for i in range(8):
            prod.send("t", b"new", partition=i % 4)
        ga = a.poll(timeout=0.5)
        gb = b.poll(timeout=0.5)
        assert len(ga) == 4 and len(gb) == 4
        a.close()
        b.close()


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "sticky"])
def test_strategies(tmp_path, strategy):
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=6)
        cs = [log.consumer("t", group_id="g", partition_assignment_strategy=strategy)
              for _ in range(3)]
        for _ in range(5):
            for c in cs:
                c.poll(timeout=0.05)
        owned = [c.assignment() for c in cs]
        assert sum(map(len, owned)) == 6 and all(len(o) == 2 for o in owned)
        for c in cs:
            c.close()
    with pylog.open(tmp_path) as log, pytest.raises(pylog.InvalidArgument):
        log.consumer("t", group_id="h", partition_assignment_strategy="magic")
