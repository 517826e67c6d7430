"""Log.redrive when a dead letter cannot go back as it came: its topic was
deleted since, or its topic's timestamp window
(``message_timestamp_before_max_ms``) no longer accepts its original
timestamp. Either used to raise in the middle of the redrive, every time
it was run again, so that no dead letter of that dead-letter topic could
ever be redriven (and those copied before the error were copied again by
the next try)."""

import time

from test_redrive_expiry import dead_letter


def test_a_dead_letter_of_a_deleted_topic_is_skipped_not_blocking(tmp_path):
    import pylog
    with pylog.open(str(tmp_path / "log"), sync="never") as log:
        log.create_topic("gone")
        log.create_topic("jobs")
        log.create_topic("jobs.dlq")
        dead_letter(log, [b"g1"], topic="gone")
        dead_letter(log, [b"j1", b"j2"], topic="jobs")
        log.delete_topic("gone")
        plan = log.redrive("g", "jobs.dlq")                     # dry run
        assert [(p["topic"], "skipped" in p) for p in plan] == [
            ("gone", True), ("jobs", False), ("jobs", False)]
        assert "no longer exists" in plan[0]["skipped"]
        done = log.redrive("g", "jobs.dlq", execute=True)
        assert [p["topic"] for p in done if "skipped" not in p] == ["jobs", "jobs"]
        assert log.describe_topic("jobs").partition_info[0].end_offset == 4
        assert log.redrive("g", "jobs.dlq", execute=True) == []    # each once


def test_a_dead_letter_older_than_its_topics_timestamp_window_is_redriven(tmp_path):
    import pylog
    with pylog.open(str(tmp_path / "log"), sync="never") as log:
        log.create_topic("jobs", message_timestamp_before_max_ms=200)
        log.create_topic("jobs.dlq")
        dead_letter(log, [b"j1"])
        time.sleep(0.5)             # the original timestamp leaves the window
        (done,) = log.redrive("g", "jobs.dlq", execute=True)
        assert "skipped" not in done
        with log.share_consumer("jobs", group_id="g") as c:
            (back,) = c.poll(timeout_ms=2000)
            assert back.value == b"j1" and back.offset == 1
            assert back.timestamp_ms >= time.time() * 1000 - 5000    # re-stamped
            c.acknowledge(back)


def test_the_cli_counts_and_names_the_skipped_dead_letters(tmp_path, capsys):
    import pylog
    from pylog.cli import main
    path = str(tmp_path / "log")
    with pylog.open(path, sync="never") as log:
        log.create_topic("gone")
        log.create_topic("jobs")
        log.create_topic("jobs.dlq")
        dead_letter(log, [b"g1"], topic="gone")
        dead_letter(log, [b"j1"], topic="jobs")
        log.delete_topic("gone")
    assert main(["queues", path, "g", "redrive", "jobs.dlq", "--execute"]) == 0
    out = capsys.readouterr().out
    assert "redrove 1 records of 'g' from jobs.dlq; 1 skipped" in out
    assert "gone-0 offset 0 (rejected, 1 deliveries) skipped: topic 'gone' no longer" in out


def test_a_dead_letter_its_topic_refuses_as_too_large_is_skipped(tmp_path):
    """Review: a dead letter larger than its topic's max_message_bytes now
    (lowered by alter_topic) raised RecordTooLarge midway at every run,
    after copying the dead letters before it again: small-3 was never
    redriven and small-1 was copied three times in three runs."""
    import pylog
    with pylog.open(str(tmp_path / "log"), sync="never") as log:
        log.create_topic("jobs")
        log.create_topic("jobs.dlq")
        dead_letter(log, [b"small-1", b"x" * 5000, b"small-3"])
        log.alter_topic("jobs", max_message_bytes=1000)
        end0 = log.describe_topic("jobs").partition_info[0].end_offset
        done = log.redrive("g", "jobs.dlq", execute=True)
        assert ["skipped" in p for p in done] == [False, True, False]
        assert "max_message_bytes" in done[1]["skipped"] or "large" in done[1]["skipped"]
        assert log.redrive("g", "jobs.dlq", execute=True) == []
        with log.consumer(auto_offset_reset="earliest") as c:
            tp = pylog.TopicPartition("jobs", 0)
            c.assign([tp])
            c.seek(tp, end0)
            assert [r.value for r in c.poll(timeout=0.5)] == [b"small-1", b"small-3"]
