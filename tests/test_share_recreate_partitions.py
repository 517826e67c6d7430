"""A share consumer whose topic another Log deletes and makes again finds
out through one partition (a TopicNotFound, or a partition of the new
incarnation handed out by its Log) while it holds the share state of the
others too. It used to drop only that partition's state and go on with
the deleted topic's state of the others — its start offset and its
window over the new topic's records — so that it skipped the new
records below the old start offset, and delivered those past it a second
time alongside the consumers that use the new state (found with three
worker processes and five re-creations: every job of the last
incarnation delivered two or three times, each with delivery_count 1)."""

import time

import pylog


def _take(c, want, rounds=40):
    """Values of the records ``c`` polls (each accepted) until it has
    ``want`` or ``rounds`` polls went by."""
    got = []
    for _ in range(rounds):
        for r in c.poll(timeout_ms=50):
            got.append(r.value)
            c.acknowledge(r)
        c.commit()
        if len(got) >= want:
            break
    return got


def test_every_partitions_old_state_goes_when_the_topic_is_made_again(logdir):
    log = pylog.open(logdir, sync="never")
    other = pylog.open(logdir, sync="never")
    try:
        log.create_topic("jobs", partitions=2)
        p = log.producer()
        for i in range(20):
            p.send("jobs", b"old-%d" % i, partition=i % 2)
        p.flush()
        c = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest")
        assert len(_take(c, 20)) == 20
        other.delete_topic("jobs")
        other.create_topic("jobs", partitions=2)
        p = other.producer()
        new = [b"new-%d" % i for i in range(8)]
        for i, v in enumerate(new):
            p.send("jobs", v, partition=i % 2)
        p.flush()
        got = _take(c, 8)
        assert sorted(got) == new           # each once, none below the old start
        # and the new topic's state is the one every other consumer uses
        with other.share_consumer("jobs", group_id="w") as c2:
            assert c2.poll(timeout_ms=100) == []
        c.close()
    finally:
        other.close()
        log.close()


def test_a_consumer_that_never_saw_the_delete_drops_the_old_state(logdir):
    """Another consumer of the same Log met the deletion first (its Log
    then hands out the new topic's partitions), so this one never gets a
    TopicNotFound: the partitions' incarnation tells it."""
    log = pylog.open(logdir, sync="never")
    other = pylog.open(logdir, sync="never")
    try:
        log.create_topic("jobs", partitions=1)
        log.producer().send_batch("jobs", [b"old-%d" % i for i in range(10)])
        a = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest")
        b = log.share_consumer("jobs", group_id="w", auto_offset_reset="earliest")
        assert len(_take(a, 10)) == 10
        assert _take(b, 1, rounds=2) == []          # b has the old state open too
        other.delete_topic("jobs")
        other.create_topic("jobs", partitions=1)
        new = [b"new-%d" % i for i in range(6)]
        other.producer().send_batch("jobs", new)
        time.sleep(0.05)
        assert sorted(_take(a, 6)) == new            # a meets the deletion
        # (past the old topic's end: 10)
        more = [b"more-%d" % i for i in range(8)]
        other.producer().send_batch("jobs", more)
        time.sleep(0.05)
        # b takes some, a the rest; none is delivered to both
        got = _take(b, 8, rounds=3) + _take(a, 8, rounds=3)
        assert sorted(got) == more
        a.close()
        b.close()
    finally:
        other.close()
        log.close()
