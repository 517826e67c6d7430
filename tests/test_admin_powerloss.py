"""A power loss right after ``create_topic``, ``create_partitions`` or
``delete_topic`` in the modes that defer LMDB's meta page flush
(``interval``, ``never``; M-8).

The child runs under the LD_PRELOAD shim (tests/shim/pylogshim.c), which
keeps each file's *durable image* (its bytes at its last fsync/fdatasync),
and SIGKILLs itself at the chosen instant. The power loss is then modelled
as the worst case the rules allow: every file the kernel may have written
back stays as the process left it (segments, ``topic.id``, directory
renames), but ``meta/data.mdb`` is only what was made durable. Before M-8
made these commits durable at once, the topic's creation was lost
while its directory and records stayed (create_topic then refused forever,
L-4), and a deleted topic came back while its directories were buried
(its partition FAILED, L-5); a grown topic came back with its old count
while the new partitions' records stayed on disk."""

import os
import subprocess
import sys

import pytest

import pylog
from pylog.partition import Cursor

CREATE = r"""
import os, signal, sys, pylog
path, sync = sys.argv[1], sys.argv[2]
with pylog.open(path, sync=sync) as log:
    log.create_topic("a", partitions=1)
log = pylog.open(path, sync=sync)
log.create_topic("t", partitions=1, exist_ok=True)
prod = log.producer()
for i in range(50):
    prod.send("t", b"rec%d" % i, partition=0)
os.kill(os.getpid(), signal.SIGKILL)   # the power goes: no further commit
"""

GROW = r"""
import os, signal, sys, pylog
path, sync = sys.argv[1], sys.argv[2]
with pylog.open(path, sync=sync) as log:
    log.create_topic("t", partitions=1)
log = pylog.open(path, sync=sync)
log.create_partitions("t", 2)
prod = log.producer()
for i in range(50):
    prod.send("t", b"rec%d" % i, partition=1)
os.kill(os.getpid(), signal.SIGKILL)   # the power goes: no further commit
"""

DELETE = r"""
import os, signal, sys, pylog
path, sync = sys.argv[1], sys.argv[2]
log = pylog.open(path, sync=sync)
log.create_topic("t", partitions=1)
prod = log.producer()
for i in range(50):
    prod.send("t", b"rec%d" % i, partition=0)
log.flush()
def power_loss(*args):
    # the grave renames are durable (fsync_dir); the tombstone's clearing
    # commit, whose fdatasync would flush the delete's meta page, never runs
    os.kill(os.getpid(), signal.SIGKILL)
log.meta.clear_tombstone = power_loss
log.delete_topic("t")
"""


def run_and_lose_power(script, logdir, sync, shim, child_env, shadow):
    os.makedirs(shadow)
    env = dict(child_env, LD_PRELOAD=shim, PLSHIM_SHADOW_ROOT=os.path.abspath(logdir),
               PLSHIM_SHADOW_DIR=shadow)
    proc = subprocess.run([sys.executable, "-c", script, logdir, sync],
                          env=env, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    data = os.path.join(logdir, "meta", "data.mdb")
    with open(os.path.join(shadow, f"{os.stat(data).st_ino}.img"), "rb") as f:
        image = f.read()
    with open(data, "r+b") as f:
        f.write(image)      # its unsynced meta page is lost, nothing else


@pytest.mark.parametrize("sync", ["never", "interval"])
def test_create_topic_survives_power_loss_after_it(shim, logdir, child_env, tmp_path, sync):
    # M-8, L-4: the creation is durable before t-0 exists, so t-0's records
    # are never those of a topic the metadata forgot
    run_and_lose_power(CREATE, logdir, sync, shim, child_env, str(tmp_path / "shadow"))
    assert os.path.isdir(os.path.join(logdir, "t-0"))
    with pylog.open(logdir, sync=sync) as log:
        assert log.topics() == ["a", "t"]
        log.create_topic("t", partitions=1, exist_ok=True)
        part = log.partition("t", 0)
        assert part.failed is None, part.failed
        recs = part.fetch(Cursor(0), 10**6)
        assert [r[3] for r in recs] == [b"rec%d" % i for i in range(len(recs))]
        assert log.producer().send("t", b"more", partition=0).offset == len(recs)


@pytest.mark.parametrize("sync", ["never", "interval"])
def test_deleted_topic_stays_deleted_after_power_loss(shim, logdir, child_env, tmp_path,
                                                      sync):
    # M-8, L-5: the delete (and its tombstone, M-11) is durable before its
    # directories are marked deleted and buried
    run_and_lose_power(DELETE, logdir, sync, shim, child_env, str(tmp_path / "shadow"))
    assert not os.path.isdir(os.path.join(logdir, "t-0"))
    with pylog.open(logdir, sync=sync) as log:
        assert log.topics() == []
        log.create_topic("t", partitions=1)
        part = log.partition("t", 0)
        assert part.failed is None, part.failed
        assert part.fetch(Cursor(0), 10**6) == []
        assert log.producer().send("t", b"new", partition=0).offset == 0


@pytest.mark.parametrize("sync", ["never", "interval"])
def test_new_partitions_survive_power_loss_after_them(shim, logdir, child_env, tmp_path,
                                                      sync):
    # M-8, L-4: the new partition count is durable before t-1 exists (it
    # was not: t-1 and its 50 records outlived the count, and the topic
    # came back with one partition, the records out of reach)
    run_and_lose_power(GROW, logdir, sync, shim, child_env, str(tmp_path / "shadow"))
    assert os.path.isdir(os.path.join(logdir, "t-1"))
    with pylog.open(logdir, sync=sync) as log:
        assert log.partitions_for("t") == 2
        part = log.partition("t", 1)
        assert part.failed is None, part.failed
        recs = part.fetch(Cursor(0), 10**6)
        assert [r[3] for r in recs] == [b"rec%d" % i for i in range(len(recs))]
        assert log.producer().send("t", b"more", partition=1).offset == len(recs)


SHARED = r"""
import os, signal, sys, pylog
path, first = sys.argv[1], sys.argv[2]
monitor = pylog.open(path, sync=first)      # opened first: LMDB's env is shared
log = pylog.open(path, sync="always")
log.create_topic("t", partitions=1)
log.producer().send("t", b"x", partition=0)
c = log.consumer(group_id="g", enable_auto_commit=False)
tp = pylog.TopicPartition("t", 0)
c.assign([tp])
c.commit({tp: 1})
print("committed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)   # the power goes
"""


@pytest.mark.parametrize("first", ["never", "interval"])
def test_always_is_durable_beside_a_weaker_log_of_the_same_process(
        shim, logdir, child_env, tmp_path, first):
    """One LMDB environment serves every Log of a path in a process, opened
    with the first one's meta page flush: a sync="always" Log opened after
    a "never" or "interval" one returned from commit() with its offsets
    in a meta page no fsync had written (a power loss undid them)."""
    run_and_lose_power(SHARED, logdir, first, shim, child_env, str(tmp_path / "shadow"))
    with pylog.open(logdir) as log:
        c = log.consumer(group_id="g", enable_auto_commit=False)
        assert c.committed(pylog.TopicPartition("t", 0)) == 1
        c.close()
