"""Resurrected records (issue 13, FORMAT.rst L-4): a ``delete_topic`` cut
short after its metadata commit — the process SIGKILLed, or the rename of
the partition directory refused (EACCES from the LD_PRELOAD shim, as a 0555
log directory refuses it) — must never let a new topic of the same name
adopt the old directories: ``create_topic`` works, the new topic starts
empty at offset 0, and stays so after a reopen (first-opener recovery)."""

import json
import os
import subprocess
import sys

import pytest

import pylog
from pylog.partition import Cursor

EACCES = 13

# The child: a topic "t" of 2 partitions with 50 records each, then either a
# delete whose directory renames the shim refuses (mode "refused"), or only
# the delete's metadata commit followed by SIGKILL of itself (mode "killed":
# the process dies at the worst instant, before any directory is touched).
CHILD = r"""
import json, os, signal, sys, pylog
path, mode, gate = sys.argv[1], sys.argv[2], sys.argv[3]
log = pylog.open(path)
log.create_topic("t", partitions=2, segment_bytes=65536, retention_ms=-1)
prod = log.producer()
for i in range(100):
    prod.send("t", b"old-%d" % i + b"x" * 1500, partition=i % 2)
prod.flush()
if mode == "killed":
    log.meta.delete_topic("t")        # the first step of LogStore.delete_topic
    os.kill(os.getpid(), signal.SIGKILL)
open(gate, "w").close()               # renames fail from here on
try:
    log.delete_topic("t")
    print(json.dumps({"ok": True}), flush=True)
except Exception as exc:
    print(json.dumps({"err": type(exc).__name__, "pylog": isinstance(exc, pylog.PylogError),
                      "msg": str(exc)}), flush=True)
os.unlink(gate)
log.close()
"""


def run_child(logdir, mode, env, gate):
    return subprocess.run([sys.executable, "-c", CHILD, logdir, mode, gate],
                          env=env, capture_output=True, timeout=60)


def all_records(log, topic, partitions):
    return [r for p in range(partitions)
            for r in log.partition(topic, p).fetch(Cursor(0), 10**6)]


def check_no_resurrection(logdir):
    with pylog.open(logdir) as log:
        assert "t" not in log.topics()
        info = log.create_topic("t", partitions=2, retention_ms=-1)
        assert [p.end_offset for p in info.partition_info] == [0, 0]
        assert all_records(log, "t", 2) == []
        md = log.producer().send("t", b"new", partition=0)
        assert md.offset == 0
    # a reopen is a first opener: it recovers every partition from its files
    with pylog.open(logdir) as log:
        recs = all_records(log, "t", 2)
        assert [(r[0], r[3]) for r in recs] == [(0, b"new")], \
            f"records of the deleted topic came back: {len(recs)} records"
    leftovers = [n for n in os.listdir(logdir) if n.endswith("-delete")]
    assert leftovers == []


def test_delete_killed_after_metadata_commit(logdir, child_env, tmp_path):
    # L-5 / M-11: the topic is gone from the delete's commit (with its
    # tombstone); the next writable open finishes retiring its directories
    proc = run_child(logdir, "killed", child_env, str(tmp_path / "gate"))
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert os.path.isdir(os.path.join(logdir, "t-0"))   # the interrupted state
    check_no_resurrection(logdir)


def test_delete_with_refused_rename(shim, logdir, child_env, tmp_path):
    gate = str(tmp_path / "gate")
    env = dict(child_env, LD_PRELOAD=shim, PLSHIM_FAULT_OPS="rename",
               PLSHIM_FAULT_ERRNO=str(EACCES), PLSHIM_FAULT_COUNT="-1",
               PLSHIM_FAULT_GATE=gate)
    proc = run_child(logdir, "refused", env, gate)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = json.loads(proc.stdout.decode().splitlines()[-1])
    # the topic is deleted (atomically) even though its files stayed; the
    # call says so with a PylogError, never a bare OSError
    assert out.get("ok") or out["pylog"], out
    assert os.path.isdir(os.path.join(logdir, "t-0"))
    check_no_resurrection(logdir)


def test_create_while_leftovers_cannot_be_removed(shim, logdir, child_env, tmp_path):
    """While the old directories cannot be removed (renames still refused),
    create_topic of the name refuses with a PylogError naming the leftover
    directory instead of adopting it; once they can, it works."""
    gate = str(tmp_path / "gate")
    env = dict(child_env, LD_PRELOAD=shim, PLSHIM_FAULT_OPS="rename",
               PLSHIM_FAULT_ERRNO=str(EACCES), PLSHIM_FAULT_COUNT="-1",
               PLSHIM_FAULT_GATE=gate)
    script = CHILD.replace("os.unlink(gate)\n", "") + r"""
log = pylog.open(path)
try:
    log.create_topic("t", partitions=2)
    print(json.dumps({"created": True}), flush=True)
except Exception as exc:
    print(json.dumps({"err": type(exc).__name__, "pylog": isinstance(exc, pylog.PylogError),
                      "msg": str(exc)}), flush=True)
log.close()
"""
    proc = subprocess.run([sys.executable, "-c", script, logdir, "refused", gate],
                          env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    out = json.loads(proc.stdout.decode().splitlines()[-1])
    assert out.get("pylog") and "t-0" in out["msg"], out
    os.unlink(gate)
    check_no_resurrection(logdir)


@pytest.mark.parametrize("damage", ["empty", "garbled", "missing"])
def test_unreadable_topic_id_is_adopted_not_retired(logdir, damage):
    """topic.id is written without fsync: a power loss may leave it empty.
    Only a valid id of another incarnation proves a leftover; a directory
    without one keeps its records (and gets the id back)."""
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=1)
        log.producer().send_batch("t", [b"a", b"b", b"c"], partition=0)
    idf = os.path.join(logdir, "t-0", "topic.id")
    if damage == "missing":
        os.unlink(idf)
    else:
        with open(idf, "wb") as f:
            f.write(b"" if damage == "empty" else b"\0" * 33)
    with pylog.open(logdir) as log:
        assert [r[3] for r in all_records(log, "t", 1)] == [b"a", b"b", b"c"]
        doc = log.meta.get_topic("t")
    with open(idf) as f:
        assert f.read().strip() == doc["id"]


def _foreign_id(logdir, partition):
    with open(os.path.join(logdir, f"t-{partition}", "topic.id"), "w") as f:
        f.write("0" * 32 + "\n")


def test_empty_directory_of_another_incarnation_is_retired(logdir):
    """Without any tombstone (a race with a stale topic document), a
    directory whose topic.id names another incarnation and that holds no
    record is retired before the topic's partition opens."""
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=1)
    _foreign_id(logdir, 0)
    with pylog.open(logdir) as log:
        assert all_records(log, "t", 1) == []
        assert log.producer().send("t", b"new", partition=0).offset == 0
    with open(os.path.join(logdir, "t-0", "topic.id")) as f:
        assert f.read().strip() != "0" * 32


def test_directory_of_another_incarnation_with_records_is_refused(logdir):
    """Records of another incarnation that the metadata does not list as
    deleted (no tombstone, M-11; no deleted mark, P-2) are neither adopted
    nor removed (L-4): the metadata may have been lost or replaced, and the
    records are then the only copy. Opening the partition refuses, naming
    the directory and what to do."""
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=1)
        log.producer().send_batch("t", [b"old"] * 5, partition=0)
    _foreign_id(logdir, 0)
    with pylog.open(logdir) as log:
        with pytest.raises(pylog.LogFailedError) as ei:
            log.partition("t", 0)
        msg = str(ei.value)
        assert "t-0" in msg and "records" in msg and "move" in msg, msg
    seg = os.path.join(logdir, "t-0", "00000000000000000000.log")
    with open(seg, "rb") as f:
        assert f.read().count(b"old") == 5


def test_create_topic_never_removes_records_the_metadata_does_not_delete(logdir):
    """Found by a user trial: with the metadata lost (data.mdb emptied),
    create_topic("t") retired t-0 and its acknowledged record as a leftover
    of another incarnation. Here the topic is taken out of the metadata
    without a tombstone, as lost metadata would: create_topic refuses,
    creates nothing and leaves both old directories as they were."""
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=2)
        log.producer().send("t", b"acked", partition=0)
        doc = log.meta.delete_topic("t")
        log.meta.clear_tombstone("t", doc["id"])
        assert log.meta.tombstones() == {}
    with pylog.open(logdir) as log:
        with pytest.raises(pylog.LogFailedError) as ei:
            log.create_topic("t", partitions=2)
        assert "t-0" in str(ei.value), ei.value
        assert "t" not in log.topics()
    for p in (0, 1):
        with open(os.path.join(logdir, f"t-{p}", "topic.id")) as f:
            assert f.read().strip() == doc["id"]
    with open(os.path.join(logdir, "t-0", "00000000000000000000.log"), "rb") as f:
        assert b"acked" in f.read()


@pytest.mark.parametrize("close", ["clean", "crash"])
def test_retired_incarnation_is_not_adopted_nor_p12(logdir, close):
    """The original intent of test_directory_of_another_incarnation_is_
    never_adopted (before ecf28bc): a directory of another incarnation,
    holding records that the metadata lists as deleted (here its state is
    marked deleted, P-2), is retired and the topic's partition starts anew
    at offset 0, none of its records served. The partition's LMDB record
    (checkpoint, M-5) and the state the last close left clean (P-9)
    describe the retired directory, not the new incarnation's: no P-12
    CorruptLogError ('records 0 to 4 were durable but no segment holds
    them'), no bare FileNotFoundError, now or at the next recovery."""
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=1)
        log.producer().send_batch("t", [b"old"] * 5, partition=0)
        log.flush()
        # as delete_topic marks it after its commit (P-2)
        log.partition("t", 0).mark_deleted()
    if close == "crash":     # as a crash leaves it: every partition recovered
        os.unlink(os.path.join(logdir, "clean-shutdown"))
    _foreign_id(logdir, 0)
    with pylog.open(logdir) as log:
        assert all_records(log, "t", 1) == []
        assert log.partition("t", 0).failed is None
        assert log.producer().send("t", b"new", partition=0).offset == 0
    with open(os.path.join(logdir, "t-0", "topic.id")) as f:
        assert f.read().strip() != "0" * 32
    # and after a crash of the new incarnation, its recovery finds no
    # durable records of the old one to miss
    os.unlink(os.path.join(logdir, "clean-shutdown"))
    with pylog.open(logdir) as log:
        assert len(all_records(log, "t", 1)) == 1
        assert log.partition("t", 0).failed is None
