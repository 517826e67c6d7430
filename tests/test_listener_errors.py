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


OTHER_MEMBER = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.consumer(group_id="g", auto_offset_reset="earliest", enable_auto_commit=False,
                 session_timeout_ms=3000)
c.subscribe(["t"])
deadline = time.monotonic() + 8
while time.monotonic() < deadline and not c.assignment():
    c.poll(0.2)
print("joined", flush=True)
while time.monotonic() < deadline:
    c.poll(0.2)
c.close()
log.close()
"""


def test_an_aio_member_hands_out_no_buffered_record_of_a_partition_it_lost(tmp_path):
    """Review of the above: an aio member's revoke listener raised once the
    partition had moved, and the records of it fetched into the
    consumer's buffer (by a getone) were handed out by its next getmany
    while the new owner read them too."""
    import asyncio

    import pylog.aio
    path = str(tmp_path / "log")
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=2)
        p = log.producer()
        for part in (0, 1):
            p.send_batch("t", [b"%d" % i for i in range(10)], partition=part)

    class Boom:
        def on_partitions_revoked(self, revoked):
            raise RuntimeError("revoke listener failed")

        def on_partitions_assigned(self, assigned):
            pass

    async def main():
        async with pylog.aio.open(path, sync="never") as alog:
            c = alog.consumer(group_id="g", auto_offset_reset="earliest",
                              enable_auto_commit=False, session_timeout_ms=3000)
            c.subscribe(["t"], listener=Boom())
            first = await c.getone()        # (the rest of its batch: buffered)
            other = TP("t", 1 - first.partition)
            b = childproc.start(OTHER_MEMBER, path)
            try:
                raised = False
                deadline = time.monotonic() + 8
                while not raised and time.monotonic() < deadline:
                    try:
                        await c.getmany(other, timeout_ms=100)
                    except RuntimeError:
                        raised = True
                assert raised
                owned = c.assignment()
                later = await c.getmany(timeout_ms=500)
                handed = {tp for tp, rs in later.items() if rs}
                assert handed <= owned, (handed, owned)
            finally:
                b.kill()
                b.wait()
            try:
                await c.close()
            except RuntimeError:
                pass        # (close calls the raising revoke listener again)

    asyncio.run(main())
