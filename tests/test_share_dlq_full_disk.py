"""A commit whose dead-letter copy fails on a full disk, retried once there
is room: the batch's first step (accepts applied, rejects marked
Dead-lettering, FORMAT.rst Q-5 step 1) was already written when the copy
raised, so the retry must finish it, not apply it again. It used to apply
it again, find none of the records Acquired any more, and raise
AcknowledgementError ("no longer held by this consumer") for every
record of the batch — although each was accepted or dead-lettered, once.

The scenario runs in a child process on a tmpfs the test mounts."""

import json
import subprocess
import sys

import pytest

# argv: mount point; JSON lines out
SCENARIO = r"""
import json, os, sys, pylog
mnt = sys.argv[1]
fill = os.path.join(mnt, "fill")

def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n"); sys.stdout.flush()

log = pylog.open(os.path.join(mnt, "q"), sync=sys.argv[2])
log.create_topic("jobs", partitions=1, segment_bytes=1 << 20)
log.create_topic("jobs.dlq", partitions=1, segment_bytes=1 << 16)
log.producer().send_batch("jobs", [b"j%d" % i + b"x" * 2000 for i in range(10)])
c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                       dead_letter_topic="jobs.dlq", record_lock_ms=60000)
recs = c.poll(timeout_ms=1000)
assert len(recs) == 10, recs
fd = os.open(fill, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
for size in (65536, 4096, 64):
    try:
        while True:
            os.write(fd, b"x" * size)
    except OSError:
        pass
os.close(fd)
for r in recs:
    c.acknowledge(r, "reject" if r.offset % 2 else "accept")
try:
    c.commit()
    emit(what="full", ok=True)
except pylog.PylogError as exc:
    emit(what="full", ok=False, err=type(exc).__name__)
try:                        # still full: the same error, nothing lost
    c.commit()
    emit(what="again", ok=True)
except pylog.PylogError as exc:
    emit(what="again", ok=False, err=type(exc).__name__)
os.unlink(fill)
try:
    c.commit()
    emit(what="retry", ok=True)
except pylog.PylogError as exc:
    emit(what="retry", ok=False, err=type(exc).__name__, msg=str(exc))
dead = log.partition("jobs.dlq", 0).state().next_offset
row = log.share_groups()[0]
emit(what="after", dead=dead, spso=row["spso"], acquired=row["acquired"],
     archived=row["archived_total"], again=len(c.poll(timeout_ms=100)))
c.close()
log.close()
"""


def _run(tmpfs, child_env, sync):
    proc = subprocess.run([sys.executable, "-c", SCENARIO, tmpfs, sync], env=child_env,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return {e["what"]: e for e in map(json.loads, proc.stdout.decode().splitlines())}


@pytest.mark.parametrize("sync", ["never", "always"])
def test_a_commit_retried_after_a_failed_dead_letter_copy_is_not_refused(tmpfs, child_env,
                                                                         sync):
    ev = _run(tmpfs, child_env, sync)
    assert ev["full"] == {"what": "full", "ok": False, "err": "DiskFullError"}
    assert ev["again"] == {"what": "again", "ok": False, "err": "DiskFullError"}
    assert ev["retry"] == {"what": "retry", "ok": True}
    assert ev["after"] == {"what": "after", "dead": 5, "spso": 10, "acquired": 0,
                           "archived": 5, "again": 0}
