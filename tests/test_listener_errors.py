"""A rebalance listener that raises (as Kafka's clients: the exception
reaches the application from poll(), and the rebalance still completes).

Found by a user trial: a member whose ``on_partitions_revoked`` raised kept
every partition for good (its heartbeats went on), so the members that
joined after it stayed idle however long they waited (or, a member
waiting inside poll() most of the time, it missed its heartbeats, lost
every partition and rejoined, once a session timeout).
"""

import os
import time

import childproc

import pylog
from pylog import TopicPartition as TP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RAISING_MEMBER = r"""
import sys, time, pylog
path = sys.argv[1]

class Boom(pylog.ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        raise RuntimeError("revoke listener failed")
    def on_partitions_assigned(self, assigned):
        pass

log = pylog.open(path)
c = log.consumer(group_id="g", auto_offset_reset="earliest",
                 enable_auto_commit=False, session_timeout_ms=2000)
c.subscribe(["t"], listener=Boom())
c.poll(1.0)
print("owns", len(c.assignment()), flush=True)
raised = 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.05)    # handling records: the heartbeat thread renews it
    try:
        c.poll(0)
        owned = c.assignment()      # (looks at the group too: may raise)
    except RuntimeError as exc:
        assert str(exc) == "revoke listener failed", exc
        if not raised:
            print("raised", flush=True)
        raised += 1
        continue
    if raised and len(owned) < 12:
        print("released", sorted(tp.partition for tp in owned), flush=True)
        break
sys.stdin.read()        # stay alive (a live member) until the test is done
"""


def test_a_revoke_listener_that_raises_still_hands_its_partitions_over(tmp_path):
    with pylog.open(tmp_path) as log:
        log.create_topic("t", partitions=12)
        log.producer().send_batch("t", [b"%d" % i for i in range(120)])
    child = childproc.start(RAISING_MEMBER, tmp_path, stdin=-1,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        childproc.expect(child, b"owns 12")
        with pylog.open(tmp_path) as log:
            b = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=2000)
            got: set[int] = set()
            deadline = time.monotonic() + 8   # (4 of the child's session timeouts)
            while time.monotonic() < deadline and len(got) < 6:
                b.poll(0.1)
                got = {tp.partition for tp in b.assignment()}
            if len(got) != 6:
                child.kill()
                child.wait()
                raise AssertionError(f"the joining member got {sorted(got)}; the "
                                     f"child's stderr: {childproc.stderr_tail(child)}")
            childproc.expect(child, b"raised")
            line = childproc.readline(child).decode()
            assert line.startswith("released"), line
            kept = set(eval(line.split(" ", 1)[1]))
            assert len(kept) == 6 and not kept & got, (kept, got)
            b.commit({TP("t", p): 1 for p in got})      # B owns them
            b.close()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


class RaisingRevoke(pylog.ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked):
        raise RuntimeError("revoke listener failed")


def test_unsubscribe_leaves_the_group_when_the_revoke_listener_raises(tmp_path):
    with pylog.open(tmp_path) as log:
        log.create_topic("t", partitions=4)
        c = log.consumer(group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False)
        c.subscribe(["t"], listener=RaisingRevoke())
        assert len(c.assignment()) == 4
        try:
            c.unsubscribe()
        except RuntimeError as exc:
            assert str(exc) == "revoke listener failed"
        else:
            raise AssertionError("the listener's exception was swallowed")
        assert c.subscription() == set()
        assert log.describe_group("g")["members"] == []
        other = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        assert len(other.assignment()) == 4       # at once: nobody holds them
        other.close()
        c.close()
