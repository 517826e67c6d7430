"""ShareConsumer.wakeup(): from another thread it ends a blocked poll at
once with no records, as Consumer.wakeup() does; a wakeup while no poll
runs is not kept for the next one."""

import threading
import time

import pytest


@pytest.mark.parametrize("topics", [("t",), ("t", "u")])
def test_wakeup_ends_a_blocked_share_poll(log, topics):
    """One topic: the poll waits on the topic's doorbell slot; several:
    on slot 0 (L-3). Either way the wakeup's ring reaches it."""
    for t in topics:
        log.create_topic(t)
    c = log.share_consumer(*topics, group_id="g")
    assert c.poll(timeout_ms=0) == []
    got = {}

    def poller():
        got["recs"] = c.poll(timeout_ms=20_000)
        got["t"] = time.monotonic()
    th = threading.Thread(target=poller)
    th.start()
    time.sleep(0.3)
    woke = time.monotonic()
    c.wakeup()
    th.join(10)
    assert not th.is_alive() and got["recs"] == [] and got["t"] - woke < 0.5
    # records sent later are still acquired by the next poll
    log.producer().send(topics[0], b"x")
    assert [r.value for r in c.poll(timeout_ms=2000)] == [b"x"]
    c.close()


def test_wakeup_without_a_poll_is_not_kept(log):
    log.create_topic("t")
    c = log.share_consumer("t", group_id="g")
    c.wakeup()
    t0 = time.monotonic()
    assert c.poll(timeout_ms=300) == []
    assert time.monotonic() - t0 >= 0.28
    c.close()

