"""Share groups recover the state of every record after a failure or a
rebuild: a lock expiry whose archive step failed is tried again, and a
share file rebuilt from LMDB keeps every stored run (FORMAT.rst Q-1 to Q-6).

The full-disk scenario runs in a child process on a small tmpfs the test
mounts and fills (as tests/test_full_disk.py: a store into an unallocated
block of a map would kill pytest with SIGBUS); the hung worker is another
child, alive and never acknowledging.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

from childproc import expect, start

import pylog

HUNG_WORKER = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest")
print("held", len(c.poll(timeout_ms=5000, max_records=100)), flush=True)
time.sleep(600)     # hung: alive, never acknowledges
"""

# argv: mount point, log path; it says "ready", then waits for a line on stdin
EXPIRER = r"""
import json, os, sys, time, pylog
mnt, path = sys.argv[1], sys.argv[2]
fill_path = os.path.join(mnt, "fill")

def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n"); sys.stdout.flush()

log = pylog.open(path, sync="never")
c = log.share_consumer("jobs", group_id="g", dead_letter_topic="jobs.dlq",
                       record_lock_ms=300, delivery_limit=1)
emit(what="ready")
sys.stdin.readline()                # the hung worker holds the records
fd = os.open(fill_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
for size in (65536, 4096):
    try:
        while True:
            os.write(fd, b"x" * size)
    except OSError:
        pass
os.close(fd)
time.sleep(0.5)                     # the locks expire, at the delivery limit
try:
    c.poll(timeout_ms=100)
    emit(what="full", ok=True)
except pylog.PylogError as exc:
    emit(what="full", ok=False, err=type(exc).__name__)
os.unlink(fill_path)
got = []
for _ in range(5):
    got += [r.offset for r in c.poll(timeout_ms=100)]
row = log.share_groups()[0]
dead = log.partition("jobs.dlq", 0).state().next_offset if "jobs.dlq" in log.topics() else 0
emit(what="after", got=got, acquired=row["acquired"], spso=row["spso"], dead=dead)
c.close()
log.close()
"""


def test_lock_expiry_retried_after_its_archive_failed_on_a_full_disk(tmpfs, child_env):
    # a hung worker's records expire at the delivery limit while the disk
    # is full and the dead-letter topic is not made yet: that poll raises;
    # once space is free they are dead-lettered, not held forever
    path = os.path.join(tmpfs, "log")
    with pylog.open(path, sync="never") as log:
        log.create_topic("jobs", segment_bytes=1 << 16)
        log.producer().send_batch("jobs", [b"j%d" % i for i in range(5)])
    expirer = subprocess.Popen([sys.executable, "-c", EXPIRER, tmpfs, path], env=child_env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    hung = None
    try:
        assert json.loads(expirer.stdout.readline())["what"] == "ready"
        hung = start(HUNG_WORKER, path, env=child_env)
        expect(hung, b"held 5")
        out, err = expirer.communicate(b"go\n", timeout=120)
    finally:
        if hung is not None:
            hung.send_signal(signal.SIGKILL)
            hung.wait()
        if expirer.poll() is None:
            expirer.kill()
            expirer.wait()
    assert expirer.returncode == 0, err.decode()[-3000:]
    ev = {e["what"]: e for e in map(json.loads, out.decode().splitlines())}
    assert ev["full"] == {"what": "full", "ok": False, "err": "DiskFullError"}, ev
    assert ev["after"] == {"what": "after", "got": [], "acquired": 0, "spso": 5,
                           "dead": 5}, ev


def test_rebuild_after_max_in_flight_lowered_keeps_every_record(tmp_path):
    # a delayed record holds SPSO while 199 records past it are accepted;
    # the group's window is then made smaller than that, and the share
    # file rebuilt from LMDB (as after a reboot, Q-1): none is delivered again
    path = tmp_path / "log"
    with pylog.open(path, sync="always") as log:
        log.create_topic("jobs")
        log.producer().send_batch("jobs", [b"j%d" % i for i in range(200)])
        with log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                                max_in_flight=100) as c:
            recs = []
            while len(recs) < 200:
                got = c.poll(timeout_ms=500, max_records=200)
                assert got
                for r in got:
                    if r.offset == 0:
                        c.acknowledge(r, "release", delay_ms=1000)
                    else:
                        c.acknowledge(r, "accept")
                c.commit()
                recs += got
        log.alter_share_group("g", max_in_flight=10)
    files = glob.glob(os.path.join(path, "meta", "share", "*.share"))
    assert len(files) == 1
    os.unlink(files[0])
    with pylog.open(path, sync="always") as log:
        (row,) = log.share_groups()
        assert (row["spso"], row["speo"], row["delayed"], row["acknowledged_in_window"]) \
            == (0, 200, 1, 199)
        with log.share_consumer("jobs", group_id="g") as c:
            again: list[int] = []
            deadline = time.monotonic() + 10
            while 0 not in again and time.monotonic() < deadline:
                got = c.poll(timeout_ms=200, max_records=500)
                for r in got:
                    c.acknowledge(r, "accept")
                again += [r.offset for r in got]
            again += [r.offset for r in c.poll(timeout_ms=100, max_records=500)]
        assert again == [0]         # only the delayed one, once its delay ended
