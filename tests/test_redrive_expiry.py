"""Log.redrive sends each dead letter back once, however long after the
last redrive the next one runs: its progress is not a consumer group that
group expiry (offsets_retention_ms) deletes, nor one Log.groups() lists
(FORMAT.rst Q-8)."""

import time

import pylog
from pylog.expiry import expire_groups

WEEK_MS = 7 * 24 * 3600 * 1000


def dead_letter(log, values, *, topic="jobs", dlq="jobs.dlq"):
    """Send ``values`` to ``topic`` and have share group "g" reject each
    into ``dlq``."""
    log.producer().send_batch(topic, values)
    with log.share_consumer(topic, group_id="g", auto_offset_reset="earliest",
                            dead_letter_topic=dlq) as c:
        n = 0
        deadline = time.monotonic() + 60
        while n < len(values):
            assert time.monotonic() < deadline, "the share consumer got no records"
            for r in c.poll(timeout_ms=500):
                c.acknowledge(r, "reject")
                n += 1
        c.commit()


def jobs_end(log):
    return sum(p.end_offset for p in log.describe_topic("jobs").partition_info)


def test_a_redrive_after_the_offsets_retention_redrives_nothing_again(tmp_path):
    path = str(tmp_path / "log")
    with pylog.open(path, sync="never", offsets_retention_ms=1000) as log:
        log.create_topic("jobs", partitions=2)
        dead_letter(log, [b"bad-%d" % i for i in range(5)])
        assert len(log.redrive("g", "jobs.dlq")) == 5              # dry run
        assert len(log.redrive("g", "jobs.dlq", execute=True)) == 5
        assert log.redrive("g", "jobs.dlq", execute=True) == []
        # the redrive's bookkeeping is no group of the user's
        assert not any(g.endswith(".redrive") for g in log.groups())
        end = jobs_end(log)
        # a week later every idle group has expired
        expire_groups(log.meta, 1000, now_ms=int(time.time() * 1000) + WEEK_MS)
    with pylog.open(path, sync="never", offsets_retention_ms=1000) as log:
        assert log.redrive("g", "jobs.dlq") == []
        assert log.redrive("g", "jobs.dlq", execute=True) == []
        assert jobs_end(log) == end                     # nothing sent twice
        # a new dead letter is redriven, once
        log.create_topic("more", partitions=1)
        dead_letter(log, [b"later"], topic="more")
        (new,) = log.redrive("g", "jobs.dlq", execute=True)
        assert (new["topic"], new["reason"]) == ("more", "rejected")
        assert log.redrive("g", "jobs.dlq", execute=True) == []


def test_a_users_group_named_like_the_old_bookkeeping_is_not_the_progress(tmp_path):
    with pylog.open(tmp_path / "log", sync="never") as log:
        log.create_topic("jobs", partitions=1)
        log.create_topic("more", partitions=1)
        dead_letter(log, [b"a", b"b"])
        assert len(log.redrive("g", "jobs.dlq", execute=True)) == 2
        # a consumer group of the user's, called "g.redrive", reads the DLQ
        # from its start and commits there
        with log.consumer("jobs.dlq", group_id="g.redrive",
                          auto_offset_reset="earliest") as c:
            deadline = time.monotonic() + 60
            while not c.poll(timeout_ms=200):
                assert time.monotonic() < deadline
            c.commit({pylog.TopicPartition("jobs.dlq", 0): 0})
        dead_letter(log, [b"c"], topic="more")
        assert [p["topic"] for p in log.redrive("g", "jobs.dlq", execute=True)] == ["more"]
        assert log.groups() == ["g.redrive"]        # only the user's own


def test_a_re_created_dead_letter_topic_is_redriven_from_its_beginning(tmp_path):
    with pylog.open(tmp_path / "log", sync="never") as log:
        log.create_topic("jobs", partitions=1)
        dead_letter(log, [b"a", b"b", b"c"])
        assert len(log.redrive("g", "jobs.dlq", execute=True)) == 3
        log.delete_topic("jobs.dlq")
        log.create_topic("jobs.dlq", partitions=1)
        log.create_topic("more", partitions=1)
        dead_letter(log, [b"d", b"e"], topic="more")
        # offsets 0 and 1 of the new topic, below the old one's progress (3)
        plan = log.redrive("g", "jobs.dlq", execute=True)
        assert [(p["topic"], p["dlq_offset"]) for p in plan] == [("more", 0), ("more", 1)]


def test_progress_kept_by_an_older_version_is_honoured(tmp_path):
    from pylog.redrive import progress_key
    with pylog.open(tmp_path / "log", sync="never") as log:
        log.create_topic("jobs", partitions=1)
        dead_letter(log, [b"a", b"b"])
        # an older version kept the progress as group "g.redrive"'s offsets
        log.meta.commit("g.redrive", {("jobs.dlq", 0): 2})
        assert log.redrive("g", "jobs.dlq", execute=True) == []
        assert log.meta.info_get(progress_key("g", "jobs.dlq"), "test") is not None
        dead_letter(log, [b"c"])
        assert [p["offset"] for p in log.redrive("g", "jobs.dlq", execute=True)] == [2]
