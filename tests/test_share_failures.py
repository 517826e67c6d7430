"""Share consumers when things go wrong: records retention deletes between
their acquisition and their read (reported lost, never skipped), close()
and the iterator in implicit mode (what was not processed is released),
acknowledgements kept across a commit that failed on a full disk, and the
owner slots of consumers dropped without close()."""

import gc
import json
import subprocess
import sys

import pytest
from sharejobs import jobs_log, jobs_share

import pylog
from pylog.reader import Reader

TP0 = pylog.TopicPartition("jobs", 0)


def _offsets(c, **kw):
    return [r.offset for r in c.poll(**kw)]


# -- retention between acquisition and read (Q-4) ---------------------------------------
def _delete_at_first_read(log, before):
    """Profile hook: at the share consumer's first read, delete the records
    below ``before`` (as retention or another process's delete_records
    would, after the poll acquired them and before it read them)."""
    armed = [True]

    def hook(frame, event, _arg):
        if armed[0] and event == "call" and frame.f_code is Reader.fetch.__code__:
            armed[0] = False
            log.delete_records({TP0: before})
    return hook


@pytest.mark.parametrize("before", [6, 10])
def test_records_deleted_after_acquisition_are_reported_lost(logdir, before):
    with jobs_log(logdir) as log, jobs_share(log) as c:
        sys.setprofile(_delete_at_first_read(log, before))
        try:
            recs = c.poll(timeout_ms=100)
        finally:
            sys.setprofile(None)
        assert [r.offset for r in recs] == list(range(before, 10))
        assert c.lost == [("jobs", 0, 0, before - 1)]
        for r in recs:
            c.acknowledge(r)
        c.commit()                  # nothing named that the app never got
        assert c.poll(timeout_ms=20) == []
        row = log.share_groups()[0]
        assert row["spso"] == 10 and row["lost_to_retention"] == before


DELETER = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
prod = log.producer()
tp = pylog.TopicPartition("jobs", 0)
t_end = time.time() + float(sys.argv[2])
i = 0
while time.time() < t_end:
    for p in (0, 1):
        prod.send_batch("jobs", [b"x%d" % k for k in range(i, i + 20)], partition=p)
    i += 20
    log.delete_records({tp: log.partition("jobs", 0).state().next_offset})
log.close()
"""


def test_retention_racing_polls_skips_nothing_silently(logdir, child_env):
    # another process appends and deletes everything appended so far, while
    # a consumer polls both partitions: every offset of partition 0 is
    # delivered or reported lost, and no commit names records never given
    with jobs_log(logdir, n=0, partitions=2, segment_bytes=65536) as log, jobs_share(log) as c:
        deleter = subprocess.Popen([sys.executable, "-c", DELETER, logdir, "2"], env=child_env)
        seen = set()

        def drain(timeout_ms):
            for r in c.poll(timeout_ms=timeout_ms, max_records=7):
                if r.partition == 0:
                    seen.add(r.offset)
                c.acknowledge(r)
            c.commit()
        try:
            while deleter.poll() is None:
                drain(20)
        finally:
            deleter.wait(30)
        assert deleter.returncode == 0
        for _ in range(30):
            drain(10)
        end = log.partition("jobs", 0).state().next_offset
        lost = {off for _t, p, a, b in c.lost if p == 0 for off in range(a, b + 1)}
        assert end > 0 and lost
        assert sorted(set(range(end)) - seen - lost) == []


# -- implicit mode: close() and the iterator release what was not processed ------------
def test_implicit_close_releases_what_was_not_acknowledged(logdir):
    with jobs_log(logdir) as log:
        with pytest.raises(RuntimeError):
            with jobs_share(log, acknowledgement_mode="implicit") as c:
                for rec in c.poll(timeout_ms=100):
                    if rec.offset == 3:
                        raise RuntimeError("the handler failed")
                    c.acknowledge(rec)
        with jobs_share(log, acknowledgement_mode="implicit") as c2:
            again = c2.poll(timeout_ms=100)
            assert [r.offset for r in again] == list(range(3, 10))
            assert all(r.delivery_count == 2 for r in again)
            c2.commit()                 # commit accepts what was delivered
        with jobs_share(log) as c3:
            assert c3.poll(timeout_ms=20) == []


def test_implicit_iterator_accepts_each_record_the_loop_finished(logdir):
    with jobs_log(logdir) as log:
        done = []
        with pytest.raises(RuntimeError):
            with jobs_share(log, acknowledgement_mode="implicit") as c:
                for rec in c:
                    if rec.offset == 3:
                        raise RuntimeError("the handler failed")
                    done.append(rec.offset)
        assert done == [0, 1, 2]
        with jobs_share(log, acknowledgement_mode="implicit") as c:
            for rec in c:
                if rec.offset == 6:
                    break               # a clean break: 6 is not processed
                done.append(rec.offset)
        assert done == [0, 1, 2, 3, 4, 5]
        with jobs_share(log) as c:
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


def test_commit_retried_after_a_full_disk_applies_the_acknowledgements(tmpfs, child_env):
    proc = subprocess.run([sys.executable, "-c", FULL_COMMIT, tmpfs], env=child_env,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    ev = {e["what"]: e for e in map(json.loads, proc.stdout.decode().splitlines())}
    assert ev["full"] == {"what": "full", "ok": False, "err": "DiskFullError"}
    assert ev["retry"]["ok"], ev["retry"]
    assert ev["after"] == {"what": "after", "dead": 5, "spso": 5, "acquired": 0}


# -- owner slots of consumers dropped without close() --------------------------------
def test_consumers_dropped_unclosed_free_their_owner_slots(logdir):
    with jobs_log(logdir, n=0) as log:
        p = log.producer()
        for i in range(300):                # more than MAX_OWNERS (255)
            p.send("jobs", b"j%d" % i)
            c = jobs_share(log)
            recs = c.poll(timeout_ms=200)
            assert [r.offset for r in recs] == [i]
            c.acknowledge(recs[0])
            c.commit()
            # freed at once by its reference count, as a user's dropped
            # consumer is (a full gc.collect() a round is slow in a big
            # test session)
            del c
        p.send("jobs", b"held")
        c = jobs_share(log)
        assert _offsets(c, timeout_ms=200) == [300]
        del c                               # dropped holding its record
        gc.collect()
        with jobs_share(log) as c:
            # released when the next consumer registers, not at its lock's end
            assert _offsets(c, timeout_ms=200) == [300]
            assert len(log.share_groups()[0]["owner_tokens"]) == 1
