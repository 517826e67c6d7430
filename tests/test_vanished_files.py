"""Acknowledged data silently gone (issue 13, FORMAT.rst L-6): the log
directory removed (``rm -rf``), moved away, a partition directory removed,
or ``meta/data.mdb`` deleted while the log is open. The kernel keeps held
files alive, so writes into them still "succeed"; pylog must notice that
the file it holds is no longer the one at its path and fail with
FileVanishedError (a LogFailedError) naming what vanished, instead of
acknowledging records and commits nobody will ever read.

Bounds checked here: with sync="always", no send that starts 5 ms or more
after the removal returned is acknowledged (the fsync-group leader checks
identity at most every 5 ms, L-6); in the other modes, sends fail within IDENTITY_CHECK_S (1 s) plus
scheduling slack; a roll never creates a segment in a directory that
replaced the one it held; a commit after data.mdb was deleted raises."""

import os
import shutil
import subprocess
import sys
import threading
import time

import lmdb
import pytest

import pylog
from pylog.errors import FileVanishedError, LogFailedError

CFG = dict(segment_bytes=65536, retention_ms=-1)
CHECK_WINDOW_S = 0.005       # PL_IDENTITY_CHECK_NS


def _open_with_topic(logdir, sync="always", partitions=1):
    log = pylog.open(logdir, sync=sync)
    log.create_topic("t", partitions=partitions, **CFG)
    return log


def _close_quietly(log):
    try:
        log.close()
    except LogFailedError:
        pass             # close's own flush may report the vanished files


@pytest.mark.parametrize("how", ["rm-rf", "moved", "partition-dir"])
def test_sync_always_send_after_removal_is_never_acknowledged(logdir, how):
    log = _open_with_topic(logdir)
    prod = log.producer()
    for i in range(50):
        prod.send("t", b"before-%d" % i, partition=0)
    if how == "rm-rf":
        shutil.rmtree(logdir)
    elif how == "moved":
        os.rename(logdir, logdir + ".moved")
    else:
        shutil.rmtree(os.path.join(logdir, "t-0"))
    time.sleep(2 * CHECK_WINDOW_S)
    for i in range(20):
        with pytest.raises(FileVanishedError) as ei:
            prod.send("t", b"after-%d" % i, partition=0)
    msg = str(ei.value)
    assert "t-0" in msg or logdir in msg, msg
    _close_quietly(log)


def test_sync_always_concurrent_senders_stop_within_one_fsync_group(logdir):
    """Four threads send as fast as they can; the log directory is removed
    under them. Sends that started after rmtree returned: none acknowledged.
    Sends in flight during the removal: at most one fsync group each.
    (Segments large enough not to roll: a roll racing rmtree makes a file
    that rmtree then fails to remove, and rm -rf reports that.) Sends that
    started within the 5 ms check window after it are counted, not failed."""
    log = pylog.open(logdir)
    log.create_topic("t", partitions=2, segment_bytes=64 << 20, retention_ms=-1)
    prod = log.producer()
    removed_at = [None]
    acked_after, errors = [], []
    stop = threading.Event()

    def sender(k):
        i = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                prod.send("t", b"%d-%d" % (k, i) + b"x" * 300, partition=k % 2)
            except FileVanishedError as exc:
                errors.append(exc)
                return
            if removed_at[0] is not None and started > removed_at[0]:
                acked_after.append((k, i, started - removed_at[0]))
            i += 1

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    shutil.rmtree(logdir)
    removed_at[0] = time.monotonic()
    assert not os.path.exists(logdir)
    deadline = time.monotonic() + 5
    while len(errors) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(10)
    detected = time.monotonic() - removed_at[0]
    late = [a for a in acked_after if a[2] >= CHECK_WINDOW_S]
    print(f"all senders failed {detected * 1000:.1f} ms after the removal; "
          f"acknowledged after it: {len(acked_after)} (within the check window)")
    assert len(errors) == 4, "a sender kept being acknowledged after rm -rf"
    assert late == []
    _close_quietly(log)


@pytest.mark.parametrize("sync", ["interval", "never"])
def test_other_modes_fail_within_the_check_interval(logdir, sync):
    log = pylog.open(logdir, sync=sync)
    # segments far larger than the test writes: no roll (which would trip
    # over the missing directory on its own) comes to the rescue
    log.create_topic("t", segment_bytes=64 << 20, retention_ms=-1)
    prod = log.producer()
    prod.send("t", b"before", partition=0)
    shutil.rmtree(logdir)
    removed = time.monotonic()
    acked = 0
    with pytest.raises(LogFailedError) as ei:
        while time.monotonic() - removed < 5:
            prod.send("t", b"after", partition=0)
            acked += 1
            time.sleep(0.001)
    took = time.monotonic() - removed
    print(f"sync={sync}: detected after {took * 1000:.0f} ms, {acked} sends "
          "acknowledged in between")
    assert took < 2.5
    assert "deleted" in str(ei.value)
    _close_quietly(log)


@pytest.mark.parametrize("sync", ["always", "never"])
def test_sends_stop_when_data_mdb_is_deleted(logdir, sync):
    """Found by an independent review: with only meta/data.mdb deleted,
    sends were acknowledged for good (17,676 in 3 s), yet the log can never
    be opened again without it. Now every partition fails within the check
    interval."""
    log = pylog.open(logdir, sync=sync)
    log.create_topic("t", segment_bytes=64 << 20, retention_ms=-1)
    prod = log.producer()
    prod.send("t", b"before", partition=0)
    os.unlink(os.path.join(logdir, "meta", "data.mdb"))
    removed = time.monotonic()
    with pytest.raises(FileVanishedError) as ei:
        while time.monotonic() - removed < 5:
            prod.send("t", b"after", partition=0)
            time.sleep(0.001)
    assert time.monotonic() - removed < 2.5
    assert "data.mdb" in str(ei.value)
    _close_quietly(log)


def test_roll_never_writes_into_a_replacing_directory(logdir):
    """The partition directory is moved away and an empty one of the same
    name made: the next roll must not create a segment in the new one."""
    log = _open_with_topic(logdir, sync="never")
    prod = log.producer()
    prod.send("t", b"x" * 1000, partition=0)
    os.rename(os.path.join(logdir, "t-0"), os.path.join(logdir, "elsewhere"))
    os.mkdir(os.path.join(logdir, "t-0"))
    with pytest.raises(LogFailedError) as ei:
        for i in range(200):                  # 200 KB: passes segment_bytes
            prod.send("t", b"y" * 1000, partition=0)
    assert "t-0" in str(ei.value) and "replaced" in str(ei.value)
    assert os.listdir(os.path.join(logdir, "t-0")) == []
    _close_quietly(log)


def test_commit_after_data_mdb_deleted_raises(logdir):
    log = _open_with_topic(logdir)
    prod = log.producer()
    for i in range(10):
        prod.send("t", b"r%d" % i, partition=0)
    cons = log.consumer("t", group_id="g", enable_auto_commit=False,
                        auto_offset_reset="earliest")
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 10 and time.monotonic() < deadline:
        got += cons.poll(timeout=0.2)
    cons.commit()
    os.unlink(os.path.join(logdir, "meta", "data.mdb"))
    with pytest.raises(FileVanishedError) as ei:
        cons.commit({pylog.TopicPartition("t", 0): 5})
    assert "data.mdb" in str(ei.value)
    with pytest.raises(LogFailedError):
        log.create_topic("u")
    try:
        cons.close()
    except LogFailedError:
        pass
    _close_quietly(log)


OPENER = r"""
import sys, pylog
try:
    log = pylog.open(sys.argv[1])
except pylog.PylogError as exc:
    print("refused:", exc)
    sys.exit(3)
print("opened; topics:", log.topics())
log.close()
"""


def test_second_process_refuses_to_start_fresh_metadata(logdir, child_env):
    """With data.mdb deleted under a running process, another process must
    not create a fresh, empty one over the log's partitions (every topic,
    group and commit would be gone at the next open)."""
    log = _open_with_topic(logdir)
    log.producer().send("t", b"r", partition=0)
    os.unlink(os.path.join(logdir, "meta", "data.mdb"))
    proc = subprocess.run([sys.executable, "-c", OPENER, logdir], env=child_env,
                          capture_output=True, timeout=60)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 3, out
    assert "data.mdb" in out, out
    assert not os.path.exists(os.path.join(logdir, "meta", "data.mdb"))
    _close_quietly(log)


OPENER_KIND = OPENER.replace('print("refused:", exc)',
                             'print("refused:", type(exc).__name__, exc)')


@pytest.mark.parametrize("readonly", [False, True])
def test_open_beside_processes_whose_lock_mdb_was_deleted(logdir, child_env, readonly):
    """With meta/lock.mdb (LMDB's reader table) deleted under a running
    process, another process must not make a new one: its reads would be
    invisible to the running writer, which could reuse the pages being
    read (a false CorruptLogError and MDB_BAD_DBI were seen). The open is
    refused, creating nothing; the running process carries on, and once it
    closed the log opens again."""
    log = _open_with_topic(logdir)
    lock = os.path.join(logdir, "meta", "lock.mdb")
    os.unlink(lock)
    code = OPENER_KIND.replace("pylog.open(sys.argv[1])",
                               f"pylog.open(sys.argv[1], readonly={readonly})")
    proc = subprocess.run([sys.executable, "-c", code, logdir], env=child_env,
                          capture_output=True, timeout=60)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 3, out
    assert "FileVanishedError" in out and "lock.mdb is missing" in out, out
    assert not os.path.exists(lock)
    log.create_topic("u", partitions=1)
    log.close()
    proc = subprocess.run([sys.executable, "-c", OPENER, logdir], env=child_env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0 and b"['t', 'u']" in proc.stdout, proc


def test_writable_open_beside_read_only_logs_whose_lock_mdb_was_deleted(logdir, child_env):
    """Read-only Logs (pylog top, tail, an exporter) use LMDB's reader
    table too: a writer that made a new lock.mdb beside them would reuse
    pages they read (both such readers died of an LMDB assertion, SIGABRT,
    in a user trial). The writable open is refused while they hold the
    log; meta.lock, which only writers use, may be made anew beside them."""
    _open_with_topic(logdir).close()
    reader = pylog.open(logdir, readonly=True)
    lock = os.path.join(logdir, "meta", "lock.mdb")
    os.unlink(lock)
    proc = subprocess.run([sys.executable, "-c", OPENER_KIND, logdir], env=child_env,
                          capture_output=True, timeout=60)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 3, out
    assert "FileVanishedError" in out and "lock.mdb is missing" in out, out
    assert not os.path.exists(lock)
    assert reader.topics() == ["t"]
    reader.close()
    os.unlink(os.path.join(logdir, "meta.lock"))
    with pylog.open(logdir, readonly=True) as reader:      # (makes lock.mdb again)
        proc = subprocess.run([sys.executable, "-c", OPENER, logdir], env=child_env,
                              capture_output=True, timeout=60)
        assert proc.returncode == 0 and b"['t']" in proc.stdout, proc
        assert reader.topics() == ["t"]


def test_topic_admin_after_the_log_directory_vanished(logdir):
    """Found by an independent review: create_topic after ``rm -rf`` of the
    log said "permission denied ... run as the log's owner" to root."""
    log = pylog.open(logdir)
    log.create_topic("a")
    shutil.rmtree(logdir)
    with pytest.raises(FileVanishedError, match="log directory"):
        log.create_topic("b")
    _close_quietly(log)


def _closed_log_with_a_record(logdir):
    """A closed log: topic "t" of 2 partitions, one record in t-0; returns
    a copy of its data.mdb (the "backup")."""
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=2, **CFG)
        log.producer().send("t", b"acked", partition=0)
    with open(os.path.join(logdir, "meta", "data.mdb"), "rb") as f:
        return f.read()


def _record_survives(logdir, backup):
    """The partition directories are untouched; with the backup back in
    place the acknowledged record is read again."""
    assert sorted(n for n in os.listdir(logdir) if n.startswith("t-")) == ["t-0", "t-1"]
    with open(os.path.join(logdir, "meta", "data.mdb"), "wb") as f:
        f.write(backup)
    with pylog.open(logdir) as log:
        c = log.consumer(auto_offset_reset="earliest")
        c.assign([pylog.TopicPartition("t", 0)])
        assert [r.value for r in c.poll(timeout=1)] == [b"acked"]


@pytest.mark.parametrize("readonly", [False, True])
def test_empty_data_mdb_beside_partitions_is_refused_like_a_missing_one(logdir, readonly):
    """Found by a user trial: ``truncate -s 0 meta/data.mdb`` on a closed
    log, and the next open started an empty log over the partitions (LMDB
    initialises a 0-byte file as a new environment); create_topic("t")
    then replaced t-0 and its acknowledged record for good. An empty
    data.mdb is refused exactly as a missing one (L-6), and left as it is."""
    backup = _closed_log_with_a_record(logdir)
    data = os.path.join(logdir, "meta", "data.mdb")
    os.truncate(data, 0)
    with pytest.raises(pylog.CorruptLogError) as ei:
        pylog.open(logdir, readonly=readonly)
    msg = str(ei.value)
    assert "data.mdb" in msg and "empty" in msg and "t-0" in msg, msg
    assert "restore" in msg and "backup" in msg, msg
    assert os.path.getsize(data) == 0, "the refused open wrote data.mdb"
    _record_survives(logdir, backup)


def test_fresh_lmdb_environment_beside_partitions_is_refused(logdir, tmp_path):
    """A data.mdb that pylog never wrote (a new LMDB environment: no M-1
    format key) beside partition directories is lost metadata too."""
    backup = _closed_log_with_a_record(logdir)
    fresh = tmp_path / "fresh"
    lmdb.open(str(fresh), subdir=True).close()
    os.replace(fresh / "data.mdb", os.path.join(logdir, "meta", "data.mdb"))
    with pytest.raises(pylog.CorruptLogError, match="holds no pylog metadata"):
        pylog.open(logdir)
    _record_survives(logdir, backup)


def test_empty_data_mdb_of_a_log_without_partitions_opens(logdir):
    """Without partition directories nothing can be lost: an empty
    data.mdb is a new metadata store, as a missing one is."""
    pylog.open(logdir).close()
    os.truncate(os.path.join(logdir, "meta", "data.mdb"), 0)
    with pylog.open(logdir) as log:
        log.create_topic("t")
        assert log.topics() == ["t"]


PRODUCE = """
import sys, pylog
with pylog.open(sys.argv[1], sync="never") as log:
    p = log.producer()
    for i in range(int(sys.argv[2])):
        p.send_batch("t", [b"y" * 1000] * 10, partition=0)
    if sys.argv[3] == "delete":
        log.delete_records({pylog.TopicPartition("t", 0): -1})
"""


def _deleted_fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(".log (deleted)"):
            out.append(target)
    return out


@pytest.mark.parametrize("how", ["retention", "delete"])
def test_retention_in_another_process_is_no_vanished_file(logdir, child_env, how):
    """A user trial: another process's retention (or delete_records)
    deleted the segment this process's writable Log had last seen as the
    active one; its identity check took that for tampering and failed
    the partition about a second later (FileVanishedError from every
    poll, send and close until the log was reopened). That segment is
    now let go of, so its disk space is freed too."""
    with pylog.open(logdir) as log:
        log.create_topic("t", segment_bytes=65536, retention_bytes=131072)
    subprocess.run([sys.executable, "-c", PRODUCE, logdir, "1", "keep"], env=child_env,
                   check=True, timeout=60)
    log = pylog.open(logdir, sync="never")      # this process only consumes
    try:
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        assert c.poll(timeout=5)
        subprocess.run([sys.executable, "-c", PRODUCE, logdir, "60", how],
                       env=child_env, check=True, timeout=60)
        start = log.describe_topic("t").partition_info[0].start_offset
        assert start > 0
        time.sleep(2.5)             # two identity checks (IDENTITY_CHECK_S)
        assert c.poll(timeout=5) or how == "delete"
        assert _deleted_fds() == []
        log.producer().send("t", b"after", partition=0)
    finally:
        log.close()
