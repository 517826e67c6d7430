"""Share consumers when things go wrong: records retention deletes between
their acquisition and their read (reported lost, never skipped), close()
and the iterator in implicit mode (what was not processed is released),
acknowledgements kept across a commit that failed on a full disk, and the
owner slots of consumers dropped without close()."""

import json
import subprocess
import sys

import pytest

import pylog


def _log(logdir, n=10, partitions=1, **kw):
    log = pylog.open(logdir, sync="never")
    log.create_topic("jobs", partitions=partitions, exist_ok=True, **kw)
    if n:
        p = log.producer()
        for i in range(n):
            p.send("jobs", b"v%d" % i, partition=i % partitions)
        p.flush()
    return log


def _share(log, **kw):
    kw.setdefault("group_id", "g")
    kw.setdefault("auto_offset_reset", "earliest")
    return log.share_consumer("jobs", **kw)


def _offsets(c, **kw):
    return [r.offset for r in c.poll(**kw)]


# -- implicit mode: close() and the iterator release what was not processed ------------
def test_implicit_close_releases_what_was_not_acknowledged(logdir):
    with _log(logdir) as log:
        with pytest.raises(RuntimeError):
            with _share(log, acknowledgement_mode="implicit") as c:
                for rec in c.poll(timeout_ms=100):
                    if rec.offset == 3:
                        raise RuntimeError("the handler failed")
                    c.acknowledge(rec)
        with _share(log, acknowledgement_mode="implicit") as c2:
            again = c2.poll(timeout_ms=100)
            assert [r.offset for r in again] == list(range(3, 10))
            assert all(r.delivery_count == 2 for r in again)
            c2.commit()                 # commit accepts what was delivered
        with _share(log) as c3:
            assert c3.poll(timeout_ms=20) == []


def test_implicit_iterator_accepts_each_record_the_loop_finished(logdir):
    with _log(logdir) as log:
        done = []
        with pytest.raises(RuntimeError):
            with _share(log, acknowledgement_mode="implicit") as c:
                for rec in c:
                    if rec.offset == 3:
                        raise RuntimeError("the handler failed")
                    done.append(rec.offset)
        assert done == [0, 1, 2]
        with _share(log, acknowledgement_mode="implicit") as c:
            for rec in c:
                if rec.offset == 6:
                    break               # a clean break: 6 is not processed
                done.append(rec.offset)
        assert done == [0, 1, 2, 3, 4, 5]
        with _share(log) as c:
            assert _offsets(c, timeout_ms=100) == [6, 7, 8, 9]


# -- a failed commit keeps its acknowledgements ---------------------------------------
# argv: mount point; JSON lines out
FULL_COMMIT = r"""
import json, os, sys, pylog
mnt = sys.argv[1]
fill = os.path.join(mnt, "fill")

def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n"); sys.stdout.flush()

log = pylog.open(os.path.join(mnt, "q"), sync="never")
log.create_topic("jobs", partitions=1, segment_bytes=1 << 20)
log.producer().send_batch("jobs", [b"j%d" % i for i in range(5)])
c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                       dead_letter_topic="jobs.dlq", record_lock_ms=60000)
recs = c.poll(timeout_ms=1000)
fd = os.open(fill, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
for size in (65536, 4096, 64):
    try:
        while True:
            os.write(fd, b"x" * size)
    except OSError:
        pass
os.close(fd)
for r in recs:
    c.acknowledge(r, "reject")
try:
    c.commit()
    emit(what="full", ok=True)
except pylog.PylogError as exc:
    emit(what="full", ok=False, err=type(exc).__name__)
os.unlink(fill)
try:
    c.commit()
    emit(what="retry", ok=True)
except pylog.PylogError as exc:
    emit(what="retry", ok=False, err=type(exc).__name__, msg=str(exc))
dead = log.partition("jobs.dlq", 0).state().next_offset if "jobs.dlq" in log.topics() else 0
row = log.share_groups()[0]
emit(what="after", dead=dead, spso=row["spso"], acquired=row["acquired"])
c.close()
log.close()
"""


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs mounted for the test (unmounted after it)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): "
                    + r.stderr.decode().strip())
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_commit_retried_after_a_full_disk_applies_the_acknowledgements(tmpfs, child_env):
    proc = subprocess.run([sys.executable, "-c", FULL_COMMIT, tmpfs], env=child_env,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    ev = {e["what"]: e for e in map(json.loads, proc.stdout.decode().splitlines())}
    assert ev["full"] == {"what": "full", "ok": False, "err": "DiskFullError"}
    assert ev["retry"]["ok"], ev["retry"]
    assert ev["after"] == {"what": "after", "dead": 5, "spso": 5, "acquired": 0}
