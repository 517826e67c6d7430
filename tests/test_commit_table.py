"""The commit table (FORMAT.rst C-*): commits at memory speed that survive
a SIGKILL the moment commit() returns, reach LMDB by checkpoints, stay
fenced by partition ownership and never point past durable records (M-10).

Real processes, real files: LMDB is read directly to tell what reached it.
"""

import os
import signal
import struct
import threading

import childproc
import lmdb
import pytest

import pylog
from pylog import TopicPartition
from pylog.cursors import boot_id
from pylog.errors import CommitFailedError

pytestmark = pytest.mark.skipif(boot_id() is None,
                                reason="no boot id on this system: no commit table (C-1)")

TP = TopicPartition("t", 0)


def lmdb_committed(logdir, group="g", topic="t", partition=0, log=None):
    """The offset LMDB holds (M-6): read beside pylog, or through the open
    ``log``'s environment (LMDB allows one per path per process)."""
    key = group.encode() + b"\0" + topic.encode() + b"\0" + struct.pack(">I", partition)
    if log is not None:
        with log.meta.env.begin() as txn:
            raw = txn.get(key, db=log.meta._offsets)
    else:
        env = lmdb.open(os.path.join(logdir, "meta"), readonly=True, lock=False, max_dbs=8)
        try:
            with env.begin() as txn:
                raw = txn.get(key, db=env.open_db(b"offsets", txn=txn, create=False))
        finally:
            env.close()
    return None if raw is None else struct.unpack(">qq", raw)[0]


def fill(log, n=100, partitions=1):
    log.create_topic("t", partitions=partitions, exist_ok=True)
    prod = log.producer()
    for p in range(partitions):
        prod.send_batch("t", [b"v%d" % i for i in range(n)], partition=p)


def test_header(logdir):
    # C-1: magic, version, slot size, this boot's id; slots from 4096 (C-2)
    with pylog.open(logdir, sync="never") as log:
        fill(log)
        c = log.consumer(group_id="g", enable_auto_commit=False)
        c.assign([TP])
        c.commit({TP: 5})
        c.close()
    with open(os.path.join(logdir, "meta", "cursors"), "rb") as f:
        head = f.read(4096 + 64)
    magic, version, slot, boot = struct.unpack_from("=8sII16s", head)
    assert (magic, version, slot, boot) == (b"PLCURSR1", 1, 64, boot_id())
    assert os.path.getsize(os.path.join(logdir, "meta", "cursors")) >= 4096 + 1024 * 64
    # slot 0 is the first key's: its offset at byte 32 of the slot
    assert struct.unpack_from("=q", head, 4096 + 32)[0] == 5


@pytest.mark.parametrize("sync", ["never", "interval"])
def test_commit_survives_sigkill_at_once(logdir, child_env, sync):
    # a commit survives a SIGKILL of its process the moment commit() returns,
    # although it never reached LMDB (the checkpoint interval is an hour)
    with pylog.open(logdir) as log:
        fill(log)
    child = r"""
import os, signal, sys, pylog
from pylog import TopicPartition
log = pylog.open(sys.argv[1], sync=sys.argv[2], sync_interval_ms=3_600_000)
c = log.consumer("t", group_id="g", enable_auto_commit=False, auto_offset_reset="earliest")
n = 0
while n < 100:
    for r in c.poll(timeout_ms=200):
        c.commit(message=r)
        n += 1
        if n == 100:
            os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = childproc.start(child, logdir, sync, env=child_env)
    assert proc.wait(60) == -signal.SIGKILL
    assert lmdb_committed(logdir) in (None, 1)    # only the first, slot-less commit
    with pylog.open(logdir) as log:
        assert log.meta.committed("g", "t", 0) == 100
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        assert c.poll(timeout_ms=100) == []        # nothing redelivered
        c.close()


def test_checkpoint_reaches_lmdb_on_the_interval(logdir):
    # C-5: checkpoints run every sync_interval_ms, also with sync="never"
    with pylog.open(logdir, sync="never", sync_interval_ms=50) as log:
        fill(log)
        c = log.consumer(group_id="g", enable_auto_commit=False)
        c.assign([TP])
        c.commit({TP: 1})               # the first commit of a key: a transaction
        assert lmdb_committed(logdir, log=log) == 1
        c.commit({TP: 42})              # then the table
        assert lmdb_committed(logdir, log=log) == 1
        for _ in range(200):
            if lmdb_committed(logdir, log=log) == 42:
                break
            threading.Event().wait(0.02)
        assert lmdb_committed(logdir, log=log) == 42
        c.close()


def test_flush_and_close_checkpoint(logdir):
    with pylog.open(logdir, sync="never", sync_interval_ms=3_600_000) as log:
        fill(log)
        c = log.consumer(group_id="g", enable_auto_commit=False)
        c.assign([TP])
        c.commit({TP: 1})
        c.commit({TP: 7})
        assert lmdb_committed(logdir, log=log) == 1
        log.flush()
        assert lmdb_committed(logdir, log=log) == 7
        c.commit({TP: 9})
        c.close()
    assert lmdb_committed(logdir) == 9


def test_always_commit_is_in_lmdb_when_it_returns(logdir):
    with pylog.open(logdir, sync="always", sync_interval_ms=3_600_000) as log:
        fill(log, partitions=4)
        c = log.consumer(group_id="g", enable_auto_commit=False)
        tps = [TopicPartition("t", p) for p in range(4)]
        c.assign(tps)
        c.commit({tp: 1 for tp in tps})
        errors = []

        def worker(tp):
            try:
                for off in range(2, 60):
                    log.meta.commit("g", {(tp.topic, tp.partition): off})
                    assert lmdb_committed(logdir, partition=tp.partition, log=log) >= off
            except BaseException as exc:     # reported by the main thread
                errors.append(exc)
        threads = [threading.Thread(target=worker, args=(tp,)) for tp in tps]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        c.close()


def test_reboot_forgets_the_table(logdir):
    # C-1: a table of another boot is emptied; offsets come from LMDB, so
    # what was not checkpointed is undone (redelivery, never a skip)
    with pylog.open(logdir, sync="never", sync_interval_ms=3_600_000) as log:
        fill(log)
        c = log.consumer(group_id="g", enable_auto_commit=False)
        c.assign([TP])
        c.commit({TP: 3})
        log.flush()
        c.commit({TP: 50})
        assert log.meta.committed("g", "t", 0) == 50
        # simulate the power loss: SIGKILL-like (no close), then a new boot
        c._closed = True
        log.meta.cursors.close()
        log.meta.cursors = None
    path = os.path.join(logdir, "meta", "cursors")
    with open(path, "r+b") as f:
        f.seek(16)
        f.write(os.urandom(16))
    with pylog.open(logdir) as log:
        assert log.meta.committed("g", "t", 0) == 3
        c = log.consumer(group_id="g", enable_auto_commit=False)
        c.assign([TP])
        c.commit({TP: 4})               # the slot is claimed again and used
        assert log.meta.committed("g", "t", 0) == 4
        c.close()
    with open(path, "rb") as f:
        assert f.read(32)[16:32] == boot_id()


HOLD_WRITER = r"""
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=8)
txn = env.begin(write=True)              # LMDB's writer lock, held
print("held", flush=True)
sys.stdin.readline()
txn.abort()
"""


def test_read_after_reboot_needs_no_write_lock(logdir, child_env):
    """After a reboot every slot is unclaimed (C-1): committed() and the
    group's offsets come from LMDB through a read transaction, so they
    answer while another process holds LMDB's writer lock."""
    import subprocess
    with pylog.open(logdir, sync="never") as log:
        fill(log, partitions=2)
        c = log.consumer(group_id="g", enable_auto_commit=False)
        c.assign([TP, TopicPartition("t", 1)])
        c.commit({TP: 7, TopicPartition("t", 1): 9})
        c.close()
    path = os.path.join(logdir, "meta", "cursors")
    with open(path, "r+b") as f:          # a new boot (C-1)
        f.seek(16)
        f.write(os.urandom(16))
    with pylog.open(logdir, sync="never") as log:
        holder = childproc.start(HOLD_WRITER, os.path.join(logdir, "meta"),
                                 env=child_env, stdin=subprocess.PIPE)
        got = []
        try:
            childproc.expect(holder, b"held")
            reader = threading.Thread(target=lambda: got.extend([
                log.meta.committed("g", "t", 0), log.meta.committed("g", "t", 0),
                log.meta.group_offsets("g")]), daemon=True)
            reader.start()
            reader.join(10)
            assert not reader.is_alive(), "a read waited for LMDB's writer lock"
        finally:
            holder.stdin.write(b"go\n")
            holder.stdin.flush()
            holder.wait(30)
        assert got == [7, 7, {("t", 0): 7, ("t", 1): 9}]
        c = log.consumer(group_id="g", enable_auto_commit=False)
        c.assign([TP])
        c.commit({TP: 8})                 # claims the slot again (C-3)
        assert log.meta.committed("g", "t", 0) == 8
        c.close()


def test_fenced_member_cannot_commit_after_rebalance(logdir):
    # C-4: a member whose partition moved away is refused, its old fence is
    # gone from the slot, and the new owner's commits stand
    with pylog.open(logdir, sync="never") as log:
        fill(log, partitions=1)
        a = log.consumer("t", group_id="g", enable_auto_commit=False,
                         auto_offset_reset="earliest")
        recs = a.poll(timeout_ms=500)
        assert recs
        a.commit({TP: 10})
        a.commit({TP: 11})              # the table, fenced by a's id
        # a is declared gone: another member takes the partition
        b = log.consumer("t", group_id="g", enable_auto_commit=False,
                         auto_offset_reset="earliest")
        member_a = a._member
        log.meta.update_group("g", lambda doc, commit: doc["members"].pop(member_a.member_id))
        for _ in range(50):
            b.poll(timeout_ms=100)
            if b.assignment():
                break
        assert b.assignment() == {TP}
        b.commit({TP: 20})
        with pytest.raises(CommitFailedError):
            member_a.commit({("t", 0): 99})
        assert log.meta.committed("g", "t", 0) == 20
        b.close()


def test_processes_commit_side_by_side(logdir, child_env):
    with pylog.open(logdir) as log:
        fill(log, partitions=4, n=10)
    child = r"""
import sys, pylog
from pylog import TopicPartition
log = pylog.open(sys.argv[1], sync="never")
p = int(sys.argv[2])
c = log.consumer(group_id="solo%d" % p, enable_auto_commit=False)
tp = TopicPartition("t", p)
c.assign([tp])
for off in range(1, 2001):
    c.commit({tp: off})
c.close()
log.close()
print("done", flush=True)
"""
    procs = [childproc.start(child, logdir, p, env=child_env) for p in range(4)]
    for proc in procs:
        childproc.expect(proc, b"done", timeout=120)
        proc.wait(30)
    with pylog.open(logdir) as log:
        for p in range(4):
            assert log.meta.committed(f"solo{p}", "t", p) == 2000
    for p in range(4):
        assert lmdb_committed(logdir, group=f"solo{p}", partition=p) == 2000


def test_deleted_group_is_not_resurrected_by_a_cached_slot(logdir):
    # C-3: another Log deletes the group; this Log's cached slot is freed
    # and its next commit starts the group again, never revives the old offset
    with pylog.open(logdir, sync="never") as log1, pylog.open(logdir, sync="never") as log2:
        fill(log1)
        log1.meta.commit("g", {("t", 0): 5})
        log1.meta.commit("g", {("t", 0): 6})
        assert log2.meta.committed("g", "t", 0) == 6
        log2.delete_consumer_groups(["g"])
        assert log1.meta.committed("g", "t", 0) is None
        assert log2.meta.committed("g", "t", 0) is None
        log1.meta.commit("g", {("t", 0): 2})
        assert log2.meta.committed("g", "t", 0) == 2
        assert log2.meta.group_offsets("g") == {("t", 0): 2}


def next_slot(log):
    with log.meta.env.begin() as txn:
        raw = txn.get(b"slots", db=log.meta._info)
    return struct.unpack(">I", raw)[0]


def test_freed_slots_are_reused(logdir):
    # C-6: the slots of a deleted group go to the next new keys, so groups
    # that come and go do not grow the table; a Log still caching a freed
    # slot for its old key never writes into the new key's (C-3)
    with pylog.open(logdir, sync="never") as log1, pylog.open(logdir, sync="never") as log2:
        fill(log1, partitions=4)
        for p in range(4):
            log1.meta.commit("old", {("t", p): 5})
            log1.meta.commit("old", {("t", p): 6})     # log1 caches the slots
        assert next_slot(log1) == 4
        log2.delete_consumer_groups(["old"])
        log2.meta.commit("new", {("t", p): 10 + p for p in range(4)})
        assert next_slot(log2) == 4                    # slots 0-3 again
        log2.meta.commit("new", {("t", p): 20 + p for p in range(4)})   # the table
        log1.meta.commit("old", {("t", 0): 99})        # its cached slot is new's now
        assert log1.meta.committed("old", "t", 0) == 99
        assert log2.meta.group_offsets("new") == {("t", p): 20 + p for p in range(4)}
        assert log1.meta.group_offsets("new") == {("t", p): 20 + p for p in range(4)}
        size = os.path.getsize(os.path.join(logdir, "meta", "cursors"))
        for i in range(300):                           # groups that come and go
            log2.meta.commit(f"g{i}", {("t", p): i for p in range(4)})
            log2.meta.commit(f"g{i}", {("t", p): i + 1 for p in range(4)})
            assert log1.meta.committed(f"g{i}", "t", 3) == i + 1
            log1.delete_consumer_groups([f"g{i}"])
        assert next_slot(log1) <= 9
        assert os.path.getsize(os.path.join(logdir, "meta", "cursors")) == size
        assert log1.checkpoint_commits() >= 0
    with pylog.open(logdir) as log:                    # what reached LMDB
        assert log.meta.group_offsets("new") == {("t", p): 20 + p for p in range(4)}
        assert log.meta.committed("old", "t", 0) == 99
        assert log.meta.group_offsets("g299") == {}


def test_dead_lock_holder_is_taken_over(logdir):
    # C-2: a slot whose lock word names a Log that is not alive (a SIGKILL
    # mid-store) is taken over, not waited on
    with pylog.open(logdir, sync="never") as log:
        fill(log)
        log.meta.commit("g", {("t", 0): 1})
        path = os.path.join(logdir, "meta", "cursors")
        with open(path, "r+b") as f:
            f.seek(4096)
            f.write(struct.pack("=I", 0x1234567))      # a token nobody holds
            f.seek(4096 + 8)
            seq = struct.unpack("=Q", f.read(8))[0]
            f.seek(4096 + 8)
            f.write(struct.pack("=Q", seq + 1))          # and mid-publish
        log.meta.commit("g", {("t", 0): 2})
        assert log.meta.committed("g", "t", 0) == 2


def test_readonly_log_reads_the_table(logdir):
    with pylog.open(logdir, sync="never", sync_interval_ms=3_600_000) as log:
        fill(log)
        log.meta.commit("g", {("t", 0): 1})
        log.meta.commit("g", {("t", 0): 8})
        with pylog.open(logdir, readonly=True) as ro:
            assert ro.meta.committed("g", "t", 0) == 8
            assert ro.meta.group_offsets("g") == {("t", 0): 8}


COMMIT_MANY = r"""
import sys, pylog
from pylog import TopicPartition
log = pylog.open(sys.argv[1], sync="never", sync_interval_ms=3_600_000)
tps = [TopicPartition("t", p) for p in range(int(sys.argv[2]))]
c = log.consumer(group_id="g", enable_auto_commit=False)
c.assign(tps)
c.commit({tp: 1 for tp in tps})       # LMDB, and the slots (C-3)
c.commit({tp: 2 for tp in tps})       # the table only
print("done", flush=True)
sys.stdin.readline()
"""


def test_checkpoint_of_other_processes_commits_is_bounded(logdir, child_env):
    """C-5: a checkpoint copies commits another process stored in the table
    without opening their partitions (no Partition, no descriptor kept), at
    most FOREIGN_PER_CHECKPOINT of them per checkpoint; repeated
    checkpoints copy them all."""
    import subprocess

    from pylog.commitsync import FOREIGN_PER_CHECKPOINT
    n = 3 * FOREIGN_PER_CHECKPOINT + 8
    with pylog.open(logdir, sync="never") as log:
        fill(log, n=2, partitions=n)
    child = childproc.start(COMMIT_MANY, logdir, n, env=child_env, stdin=subprocess.PIPE)
    try:
        childproc.expect(child, b"done", timeout=120)
        with pylog.open(logdir, sync="never", sync_interval_ms=3_600_000) as log:
            counts = []
            while len(counts) < 10:
                counts.append(log.checkpoint_commits())
                if counts[-1] == 0:
                    break
            assert log.open_partitions() == {}       # nothing opened for it
            assert len(log.handles) == 0
            assert counts[:4] == [FOREIGN_PER_CHECKPOINT] * 3 + [8], counts
            for p in range(n):
                assert lmdb_committed(logdir, partition=p, log=log) == 2
    finally:
        child.kill()
        child.wait()
