"""share_groups() and ``pylog queues`` for a share group whose backlog
retention deleted while no consumer was polling (workers down: when an
operator looks). The records retention deleted before any delivery are
counted lost by the next acquisition (FORMAT.rst Q-4); until then the
view counted them as available, and lost 0."""

from sharejobs import jobs_log, jobs_share

import pylog


def _row(log):
    (row,) = log.share_groups()
    return row["available"], row["lost_to_retention"]


def test_the_view_counts_a_deleted_backlog_lost_before_a_consumer_looks(logdir):
    with jobs_log(logdir, n=1) as log:
        with jobs_share(log) as c:
            for r in c.poll(timeout_ms=500):
                c.acknowledge(r)
            c.commit()
        log.producer().send_batch("jobs", [b"w%d" % i for i in range(20)])
        log.delete_records({pylog.TopicPartition("jobs", 0): 15})
        assert _row(log) == (6, 14)          # 15..20 left; 1..14 deleted undelivered
        with jobs_share(log) as c:
            got = c.poll(timeout_ms=500)
            assert [r.offset for r in got] == list(range(15, 21))
            assert c.lost == [("jobs", 0, 1, 14)]
            for r in got:
                c.acknowledge(r)
            c.commit()
        assert _row(log) == (0, 14)
