"""A process killed inside a metadata read (SIGKILL, the OOM killer) leaves
its slot in LMDB's reader table, ``meta/lock.mdb``, holding the snapshot it
read. While another process keeps the log open, LMDB then keeps every page
freed since: each metadata write grew ``data.mdb`` (by about 30 KiB a topic
admin call) until the 1 GiB map was full and every metadata write failed.
pylog frees dead processes' slots (``mdb_reader_check``) at open, before
writes and when the table is full; a live reader's slot is kept."""

import os
import signal
import subprocess
import sys
import time

import pytest

import pylog

# a pylog process's read of the metadata, killed before it ends
KILLED_READER = r"""
import os, signal, sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=8, map_size=1 << 30, max_readers=1024)
txn = env.begin()
txn.get(b"format", db=env.open_db(b"info", txn=txn, create=False))
os.kill(os.getpid(), signal.SIGKILL)
"""

OPS = 150


def _readers(meta: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c",
         "import lmdb, sys; print(lmdb.open(sys.argv[1], max_dbs=8, "
         "map_size=1 << 30, max_readers=1024).readers())", meta],
        capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def test_killed_reader_does_not_grow_the_metadata(tmp_path):
    path = str(tmp_path / "log")
    meta = os.path.join(path, "meta")
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=1)
        child = subprocess.run([sys.executable, "-c", KILLED_READER, meta],
                               timeout=60)
        assert child.returncode == -signal.SIGKILL
        time.sleep(1.1)         # past the reaper's rate limit
        before = os.path.getsize(os.path.join(meta, "data.mdb"))
        for i in range(OPS):
            log.create_topic(f"x{i}", partitions=1)
            log.delete_topic(f"x{i}")
        grown = os.path.getsize(os.path.join(meta, "data.mdb")) - before
        assert grown < 256 * 1024, f"data.mdb grew {grown} bytes in {OPS} rounds"
        assert pid_of_dead_slot(meta) == "none"
    with pylog.open(path) as log:
        assert log.topics() == ["t"]


def pid_of_dead_slot(meta: str) -> str:
    lines = [ln.split() for ln in _readers(meta).splitlines()[1:] if ln.strip()]
    # the only process with the log open is this one (its own slot may show)
    others = [ln for ln in lines if ln and ln[0] != str(os.getpid())]
    return others[0][0] if others else "none"


def test_stopped_reader_keeps_its_slot(tmp_path):
    path = str(tmp_path / "log")
    meta = os.path.join(path, "meta")
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=1)
        stopped = subprocess.Popen(
            [sys.executable, "-c", KILLED_READER.replace(
                "signal.SIGKILL", "signal.SIGSTOP"), meta])
        try:
            deadline = time.monotonic() + 30
            while pid_of_dead_slot(meta) != str(stopped.pid):
                assert time.monotonic() < deadline, "the reader never registered"
                time.sleep(0.05)
            time.sleep(1.1)
            log.create_topic("u", partitions=1)     # reaps: a live one stays
            assert pid_of_dead_slot(meta) == str(stopped.pid)
        finally:
            stopped.kill()
            stopped.wait(timeout=60)



# fills LMDB's reader table with the slots of killed readers (1023 of them)
FILL_TABLE = r"""
import os, signal, sys, lmdb
for _ in range(1030):
    pid = os.fork()
    if pid == 0:
        try:
            env = lmdb.open(sys.argv[1], max_dbs=8, map_size=1 << 30, max_readers=1024)
            txn = env.begin()       # (kept: killed inside the read)
            txn.get(b"x")
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
"""

OPEN = r"""
import sys, pylog
try:
    with pylog.open(sys.argv[1]) as log:
        print("opened", log.topics())
except pylog.PylogError as exc:
    print("refused:", type(exc).__name__, exc)
"""


@pytest.mark.long
def test_reader_table_full_of_dead_slots(tmp_path):
    """An open that finds the table full says so (LogFailedError, not
    CorruptLogError: nothing is damaged); once no process has the log open,
    LMDB starts a new table. (A read-only Log keeps it here: it makes no
    metadata writes, which would free the dead slots.)"""
    path = str(tmp_path / "log")
    meta = os.path.join(path, "meta")
    with pylog.open(path) as log:
        log.create_topic("t", partitions=1)
    with pylog.open(path, readonly=True) as log:
        assert log.topics() == ["t"]
        subprocess.run([sys.executable, "-c", FILL_TABLE, meta], timeout=300,
                       capture_output=True)
        out = subprocess.run([sys.executable, "-c", OPEN, path], timeout=60,
                             capture_output=True, text=True).stdout
        assert "refused: LogFailedError" in out and "reader table" in out, out
    out = subprocess.run([sys.executable, "-c", OPEN, path], timeout=60,
                         capture_output=True, text=True).stdout
    assert "opened ['t']" in out, out
