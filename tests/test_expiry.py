"""Expiry of the offsets of groups nobody uses (FORMAT.rst M-12, issue 15;
Kafka's offsets.retention.minutes)."""

import os
import signal
import subprocess
import sys
import time

import childproc
import pytest

import pylog
from pylog.expiry import DEFAULT_OFFSETS_RETENTION_MS, expire_groups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def now_ms():
    return int(time.time() * 1000)


def wait_for(cond, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "7d", True, None, 2**70])
def test_a_bad_retention_is_refused_before_anything_is_made(tmp_path, bad):
    path = tmp_path / "log"
    with pytest.raises(pylog.InvalidArgument, match="offsets_retention_ms"):
        pylog.open(path, offsets_retention_ms=bad)
    assert not path.exists()


def test_the_default_is_kafkas_seven_days(tmp_path):
    assert DEFAULT_OFFSETS_RETENTION_MS == 7 * 24 * 3600 * 1000
    with pylog.open(tmp_path) as log:
        assert log.offsets_retention_ms == DEFAULT_OFFSETS_RETENTION_MS


def make_groups(log, names):
    for g in names:
        log.meta.commit(g, {("t", 0): 1})


def test_idle_groups_expire_after_the_retention_and_recent_ones_stay(tmp_path):
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=1)
        make_groups(log, ["old-a", "old-b"])
        time.sleep(0.3)
        t = now_ms()
        make_groups(log, ["new"])
        assert expire_groups(log.meta, 60_000, now_ms=t + 1000) == []
        assert expire_groups(log.meta, -1, now_ms=t + 10**12) == []
        gone = expire_groups(log.meta, 60_000, now_ms=t + 60_000 - 100)
        assert gone == ["old-a", "old-b"] and log.groups() == ["new"]


def test_a_group_with_a_live_member_never_expires(tmp_path):
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=1)
        log.producer().send("t", b"x")
        c = log.consumer("t", group_id="live", auto_offset_reset="earliest",
                         enable_auto_commit=False)
        assert c.poll(timeout=5)
        c.commit()
        # everything it did is older than a 1 ms retention 5 s from now;
        # its session (10 s) holds and its process is this one
        assert expire_groups(log.meta, 1, now_ms=now_ms() + 5000) == []
        assert "live" in log.groups()
        c.close()
        assert expire_groups(log.meta, 1, now_ms=now_ms() + 5000) == ["live"]
        assert log.groups() == [] and log.meta.group_offsets("live") == {}


def test_the_delete_re_checks_liveness_in_its_own_transaction(tmp_path):
    """A member that turns up alive between the scan and the delete (here:
    the probe says dead to the scan, alive inside the transaction) keeps
    the group."""
    answers = iter([False])

    def probe(member):
        return next(answers, True)

    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=1)
        c = log.consumer("t", group_id="g", enable_auto_commit=False)
        c.poll(0)
        assert expire_groups(log.meta, 1, now_ms=now_ms() + 2000, is_alive=probe) == []
        assert "g" in log.groups()
        c.close()


VICTIM = """
import sys, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.consumer("t", group_id="victim", auto_offset_reset="earliest",
                 enable_auto_commit=False)
while not c.poll(timeout=1):
    pass
c.commit()
print("committed", flush=True)
sys.stdin.read()
"""


def test_the_group_of_a_sigkilled_member_expires_after_the_retention(tmp_path):
    with pylog.open(tmp_path, sync="never") as log:
        log.create_topic("t", partitions=1)
        log.producer().send("t", b"x")
        child = childproc.start(VICTIM, tmp_path, stdin=subprocess.PIPE,
                                env=dict(os.environ, PYTHONPATH=ROOT))
        try:
            childproc.expect(child, b"committed")
            # alive (its process is there, its session holds): kept however
            # short the retention
            assert expire_groups(log.meta, 1, now_ms=now_ms() + 2000) == []
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        t = now_ms()
        members = log.describe_group("victim")["members"]
        assert [m["alive"] for m in members] == [False]
        assert expire_groups(log.meta, 60_000, now_ms=t) == []    # not yet
        assert expire_groups(log.meta, 60_000, now_ms=t + 61_000) == ["victim"]
        assert "victim" not in log.groups()


def test_a_damaged_group_document_is_left_alone(tmp_path):
    from test_groups import put_group_doc
    with pylog.open(tmp_path, sync="never") as log:
        log.meta.commit("bad", {("t", 0): 1})
    put_group_doc(str(tmp_path), "bad", b"{not json")
    with pylog.open(tmp_path, sync="never", offsets_retention_ms=-1) as log:
        assert expire_groups(log.meta, 1, now_ms=now_ms() + 10**9) == []
        assert "bad" in log.groups()


def test_short_lived_groups_are_no_longer_listed_after_expiry(tmp_path):
    """The expiry thread of a Log expires at open: 200 groups (5,000 in the
    long variant) of one commit each, and one kept by a fresh commit."""
    expire_many(tmp_path, 200)


@pytest.mark.long
def test_five_thousand_short_lived_groups_expire(tmp_path):
    expire_many(tmp_path, 5000)


def expire_many(path, n):
    with pylog.open(path, sync="never", offsets_retention_ms=-1) as log:
        log.create_topic("t", partitions=1)
        make_groups(log, [f"job-{i}" for i in range(n)])
        assert len(log.groups()) == n
    time.sleep(1.1)
    with pylog.open(path, sync="never", offsets_retention_ms=-1) as log:
        make_groups(log, ["fresh"])
    with pylog.open(path, sync="never", offsets_retention_ms=1000) as log:
        wait_for(lambda: log.groups() == ["fresh"], timeout=60 + n / 50)
    time.sleep(1.1)
    with pylog.open(path, sync="never", offsets_retention_ms=1000) as log:
        wait_for(lambda: log.groups() == [])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_a_group_that_never_committed_goes_once_its_last_member_left(tmp_path):
    """README: a group that never committed keeps nothing once its last
    member has left cleanly, so it goes at the next check (a writable
    open here), as Kafka drops an empty group without offsets; one that
    committed stays for the retention (7 days by default)."""
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t")
        log.producer().send("t", b"x")
        for group, commit in (("never", False), ("once", True)):
            c = log.consumer("t", group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False)
            assert c.poll(5)
            if commit:
                c.commit()
            c.close()
        assert set(log.groups()) >= {"never", "once"}
    with pylog.open(path) as log:
        wait_for(lambda: "never" not in log.groups(), timeout=30)
        assert "once" in log.groups()
