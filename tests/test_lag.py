"""Lag that counts every partition of a group's subscribed topics (issue
18): a partition the group never committed counts from where the group
would start it (its ``auto_offset_reset``, recorded in the group document,
FORMAT.rst M-7), and says so, in describe_group, Consumer.lag(),
``pylog info`` and ``pylog groups``."""

import json
import os
import subprocess
import sys

import pytest

import pylog
from pylog import TopicPartition
from pylog.group import lag_from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "pylog.cli", *map(str, args)],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode()


def _orders(path, reset="earliest"):
    """The issue's example: 600 records over 3 partitions (200 each), a
    group that read 200 of them from two partitions and committed."""
    log = pylog.open(str(path), sync="never")
    log.create_topic("orders", partitions=3)
    p = log.producer()
    for i in range(600):
        p.send("orders", b"v%d" % i, partition=i % 3)
    p.flush()
    c = log.consumer("orders", group_id="billing", auto_offset_reset=reset,
                     enable_auto_commit=False)
    while c.assignment() != {TopicPartition("orders", p) for p in range(3)}:
        c.poll(timeout=0.05, max_records=1)
    c.commit({TopicPartition("orders", 0): 120, TopicPartition("orders", 1): 80})
    return log, c


def test_issue_example_lag_is_400_everywhere(tmp_path):
    log, c = _orders(tmp_path / "log")
    c.close(autocommit=False)
    # a consumer of the group: every partition it owns, from where it reads
    c = log.consumer("orders", group_id="billing", auto_offset_reset="earliest")
    assert c.lag() == {TopicPartition("orders", 0): 80, TopicPartition("orders", 1): 120,
                       TopicPartition("orders", 2): 200}
    c.close(autocommit=False)
    d = log.describe_group("billing")
    assert d["lag"] == 400
    parts = {p["partition"]: p for p in d["partitions"]}
    assert (parts[0]["committed"], parts[0]["lag"], parts[0]["lag_from"]) == \
        (120, 80, "committed")
    assert (parts[1]["committed"], parts[1]["lag"]) == (80, 120)
    assert (parts[2]["committed"], parts[2]["lag"], parts[2]["lag_from"]) == \
        (None, 200, "earliest")
    assert d["uncommitted_partitions"] == 1 and d["auto_offset_reset"] == "earliest"
    log.close()
    info = json.loads(cli("info", tmp_path / "log", "--json"))
    assert info["groups"][0]["lag"] == 400
    text = cli("info", tmp_path / "log")
    assert "not committed, from earliest" in text
    groups = json.loads(cli("groups", tmp_path / "log", "--json"))
    assert groups[0]["lag"] == 400
    assert "1 (from earliest)" in cli("groups", tmp_path / "log")
    described = cli("groups", tmp_path / "log", "describe", "billing")
    assert "total lag: 400" in described and "not committed, from earliest" in described


def test_latest_group_counts_nothing_for_uncommitted(tmp_path):
    log, c = _orders(tmp_path / "log", reset="latest")
    c.close(autocommit=False)
    d = log.describe_group("billing")
    p2 = [p for p in d["partitions"] if p["partition"] == 2][0]
    assert (p2["committed"], p2["lag"], p2["lag_from"]) == (None, 0, "latest")
    assert d["lag"] == 80 + 120
    log.close()


def test_reset_policy_is_in_the_group_document_after_members_leave(tmp_path):
    """M-7: the member's and the group's auto_offset_reset are stored; the
    group's stays once every member left (the lag of an Empty group still
    knows where it would start)."""
    log, c = _orders(tmp_path / "log")
    with log.meta.env.begin() as txn:           # the raw bytes, as stored
        doc = json.loads(txn.get(b"billing", db=log.meta._groups))
    assert doc["auto_offset_reset"] == "earliest"
    assert [m["auto_offset_reset"] for m in doc["members"].values()] == ["earliest"]
    c.close(autocommit=False)
    assert log.meta.group_state("billing").auto_offset_reset == "earliest"
    assert log.meta.group_state("billing").members == {}
    log.close()


def test_committed_below_log_start_counts_from_the_start(tmp_path):
    log, c = _orders(tmp_path / "log")
    c.close(autocommit=False)
    log.delete_records({TopicPartition("orders", 1): 150})
    p1 = [p for p in log.describe_group("billing")["partitions"] if p["partition"] == 1][0]
    # committed 80, but records below 150 are gone: 50 wait, not 120
    assert (p1["committed"], p1["start_offset"], p1["lag"]) == (80, 150, 50)
    log.close()


def test_group_without_document_counts_committed_partitions_only(tmp_path):
    """A group that only ever committed (no member subscribed: assign())
    has no subscription to count: its committed partitions are its lag."""
    with pylog.open(str(tmp_path / "log"), sync="never") as log:
        log.create_topic("t", partitions=2)
        p = log.producer()
        for i in range(10):
            p.send("t", b"x", partition=i % 2)
        p.flush()
        c = log.consumer(group_id="manual", enable_auto_commit=False)
        c.assign([TopicPartition("t", 0)])
        c.commit({TopicPartition("t", 0): 2})
        c.close(autocommit=False)
        d = log.describe_group("manual")
        assert [(p["partition"], p["lag"]) for p in d["partitions"]] == [(0, 3)]


@pytest.mark.parametrize("committed,policy,expect", [
    (5, "latest", ("committed", 5)),
    (2, "earliest", ("committed", 7)),      # below the start (3): from the start
    (None, "earliest", ("earliest", 7)),
    (None, "none", ("none", 7)),
    (None, "latest", ("latest", 0)),
    (12, "earliest", ("committed", 0)),     # past the end: nothing waits
])
def test_lag_from(committed, policy, expect):
    assert lag_from(committed, policy, 3, 10) == expect


def test_group_document_round_trip_keeps_the_policy():
    """M-7: the policy of the group and of each member survive encode and
    decode; a document without them (an older pylog's) decodes to None."""
    from pylog import groupstate as gs
    m = gs.Member(pid=1, start=2, host="h", topics=("t",), auto_offset_reset="none")
    state = gs.join(gs.EMPTY, "m1", m, 1000)
    assert state.auto_offset_reset == "none"
    back = gs.decode("g", gs.encode(state))
    assert back.auto_offset_reset == "none" and back.members["m1"].auto_offset_reset == "none"
    old = gs.decode("g", b'{"generation": 1, "members": {"m": {"pid": 1}}}')
    assert old.auto_offset_reset is None and old.members["m"].auto_offset_reset is None


def test_group_with_reset_none_shows_it(tmp_path):
    """A group that would raise on a partition never committed
    (auto_offset_reset="none") counts its records as waiting and says why."""
    log, c = _orders(tmp_path / "log", reset="none")
    c.close(autocommit=False)
    p2 = [p for p in log.describe_group("billing")["partitions"] if p["partition"] == 2][0]
    assert (p2["committed"], p2["lag"], p2["lag_from"]) == (None, 200, "none")
    log.close()
    assert "not committed, auto_offset_reset=none" in cli("info", tmp_path / "log")


def test_a_group_whose_only_member_was_killed_is_empty(tmp_path):
    # the member's process is gone (SIGKILL: no leave): the group document
    # still lists it, but nobody reads; describe_group, the metrics and
    # ``pylog groups`` said "Stable" with 0 live members
    path = tmp_path / "log"
    log = pylog.open(str(path), sync="never")
    log.create_topic("orders", partitions=2)
    log.producer().send_batch("orders", [b"a", b"b", b"c"], partition=0)
    code = ("import sys, os, signal, pylog\n"
            "log = pylog.open(sys.argv[1], sync='never')\n"
            "c = log.consumer('orders', group_id='billing', auto_offset_reset='earliest')\n"
            "c.poll(timeout=1.0)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code, str(path)],
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert r.returncode == -9
    d = log.describe_group("billing")
    assert [m["alive"] for m in d["members"]] == [False]
    assert d["state"] == "Empty" and d["lag"] == 3
    g = log.metrics().group("billing")
    assert (g.state, g.members, g.lag) == ("Empty", 0, 3)
    log.close()
    row = [ln.split() for ln in cli("groups", path).splitlines() if ln.startswith("billing")]
    assert row[0][:3] == ["billing", "Empty", "0"]
