"""A group member that stalls while it polls, or leaves while its poll
runs, found by trying it as a user would (README "Consumer groups": a
second processing only for a member that stalls after poll returned).
Real threads, a real log; the stall is a slow deserializer, as a slow
schema lookup or a swapped-out process makes one."""

import threading
import time

import pylog
from pylog import TopicPartition

TP0 = TopicPartition("t", 0)


def test_records_a_member_stalled_over_are_not_returned_after_a_takeover(logdir):
    """A stalls inside poll (its deserializer) longer than its session
    timeout; B takes the partition, processes 5-9, commits 10 and leaves;
    A's poll then regains the partition and used to return 5-9 fetched
    before the stall, records already processed and committed by B. Now it
    returns none of them, and nothing commits below 10."""
    stall = threading.Event()

    def slow(v):
        if stall.is_set() and v == b"5":
            time.sleep(4.0)
        return v

    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t")
        p = log.producer()
        for i in range(10):
            p.send("t", b"%d" % i)
        a = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False, session_timeout_ms=2000,
                         max_poll_records=5, value_deserializer=slow)
        assert [r.offset for r in a.poll(timeout=1)] == [0, 1, 2, 3, 4]
        a.commit()
        stall.set()
        b_got: list[int] = []
        b_done = []

        def member_b():
            time.sleep(0.5)
            b = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=2000)
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and len(b_got) < 5:
                b_got.extend(r.offset for r in b.poll(timeout=0.2))
            b.commit()
            b_done.append(time.monotonic())
            b.close()
        th = threading.Thread(target=member_b)
        th.start()
        second = a.poll(timeout=1)
        returned = time.monotonic()
        th.join()
        assert b_got == [5, 6, 7, 8, 9] and b_done and b_done[0] < returned
        assert not {r.offset for r in second} & set(b_got), [r.offset for r in second]
        a.commit()
        assert a.committed(TP0) == 10
        a.close()


def test_close_inside_a_revoke_listener_leaves_the_group(logdir):
    """close() called from on_partitions_revoked during a rebalance: the
    rebalance went on and joined the closed consumer again, which then
    owned partitions until its session timeout (its assigned listener even
    ran on the closed consumer). Now it is gone at once and the other
    member gets every partition in its next polls."""
    events = []

    class Closer(pylog.ConsumerRebalanceListener):
        def on_partitions_revoked(self, tps):
            events.append("revoked")
            a.close()

        def on_partitions_assigned(self, tps):
            events.append("assigned")

    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", partitions=4)
        a = log.consumer(group_id="g", auto_offset_reset="earliest",
                         session_timeout_ms=30000, enable_auto_commit=False)
        a.subscribe(["t"], listener=Closer())
        a.poll(timeout=0.5)
        b = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         session_timeout_ms=30000, enable_auto_commit=False)
        b.poll(timeout=0.1)
        a.poll(timeout=0.1)         # its rebalance: revoked, close() inside
        assert events == ["assigned", "revoked"]
        members = log.describe_group("g")["members"]
        assert [m["member_id"] for m in members] == [b._member.member_id]
        deadline = time.monotonic() + 5
        while len(b.assignment()) < 4 and time.monotonic() < deadline:
            b.poll(timeout=0.1)
        assert len(b.assignment()) == 4
        b.close()


def test_close_from_another_thread_during_poll_leaves_the_group(logdir):
    """close() from another thread while the consumer's own thread polls
    (documented: callable from any thread): a look at the group that
    began before the close could join it again afterwards, leaving a
    closed consumer owning partitions (about 1 in 30 rounds). Rounds for
    about 4 s; it can miss the race, never invent one."""
    import random
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", partitions=4)
        end = time.monotonic() + 4.0
        n = 0
        while time.monotonic() < end:
            g = f"g{n}"
            c = log.consumer("t", group_id=g, session_timeout_ms=60000)
            other = log.consumer("t", group_id=g, session_timeout_ms=60000)
            stop = threading.Event()

            def loop(consumer):
                while not stop.is_set():
                    try:
                        consumer.poll(timeout=0.01)
                    except pylog.LogClosed:
                        return
            threads = [threading.Thread(target=loop, args=(x,)) for x in (c, other)]
            for th in threads:
                th.start()
            time.sleep(random.uniform(0.02, 0.1))
            c.close()
            threads[0].join()
            members = {m["member_id"] for m in log.describe_group(g)["members"]}
            stop.set()
            threads[1].join()
            other.close()
            assert c._member.member_id not in members, f"round {n}"
            n += 1
