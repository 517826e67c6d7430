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


def test_released_records_retention_deleted_are_counted_lost(tmp_path):
    """Review of the above: records released back into the window (so
    below the window's end) that retention then deleted still counted as
    available, not lost: (15 available, 5 lost) where the next
    acquisition found 5 and 15."""
    with pylog.open(str(tmp_path / "q"), sync="never") as log:
        log.create_topic("jobs", partitions=1)
        p = log.producer()
        p.send_batch("jobs", [b"v%d" % i for i in range(10)])
        with log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest") as c:
            got = c.poll(timeout_ms=500)
            assert len(got) == 10
            for r in got:
                c.acknowledge(r, "release")
            c.commit()
        p.send_batch("jobs", [b"w%d" % i for i in range(10)])
        log.delete_records({pylog.TopicPartition("jobs", 0): 15})
        (row,) = log.share_groups()
        assert (row["available"], row["lost_to_retention"]) == (5, 15)
        with log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest") as c:
            assert [r.offset for r in c.poll(timeout_ms=500)] == list(range(15, 20))
            assert c.lost == [("jobs", 0, 0, 14)]
