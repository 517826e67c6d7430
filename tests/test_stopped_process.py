"""One stopped process must not freeze the whole log (issue 13, FORMAT.rst
L-7). A child process enters a metadata write transaction the way a
consumer's heartbeat does (``Metadata.update_group``), says so, and is
SIGSTOPped inside it. Meanwhile, in other processes:

- a producer process opens the log and appends across several segment
  rolls, and a reader fetches everything, within a bound (appends and
  fetches never wait on a metadata transaction);
- a commit gives up after ``metadata_timeout`` with MetadataBusyError
  naming the stopped holder's pid;
- once the child is continued and exits, commits work again.
"""

import json
import os
import signal
import subprocess
import sys
import time

import childproc
import pytest
from metaholder import end_holder, start_stopped_holder

import pylog
from pylog.partition import Cursor

# Rolls happen every ~64 KiB: 400 records of 1 KiB roll about 6 times.
CFG = dict(segment_bytes=65536, retention_ms=-1)
RECORDS = 400
APPEND_BOUND_S = 8.0          # generous for a loaded 2-core machine
COMMIT_TIMEOUT_S = 1.0

PRODUCER = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1])
prod = log.producer()
print("ready", flush=True)
sys.stdin.readline()
t0 = time.monotonic()
for i in range(int(sys.argv[2])):
    prod.send("t", b"%05d" % i + b"v" * 1019, partition=0)
prod.flush()
log.close()
print("appended %.3f" % (time.monotonic() - t0), flush=True)
"""


def start_client(script, args, env):
    """A process that opens the log, says "ready" and waits for a line on
    stdin before it starts (it opens the log before the holder holds: an
    open itself waits for the metadata writer lock, L-7)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    childproc.expect(proc, b"ready")
    return proc


def finish_client(proc, what, holder, timeout):
    """Start ``proc`` and wait for it; a freeze fails the test."""
    try:
        out, err = proc.communicate(b"go\n", timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"{what} froze behind the stopped process {holder.pid}")
    assert proc.returncode == 0, err.decode()[-3000:]
    return out.decode()


@pytest.fixture
def holder(logdir, child_env):
    """start() -> the holder process, SIGSTOPped inside a metadata write
    transaction (a group change); killed at the end."""
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=1, **CFG)
        log.producer().send("t", b"seed", partition=0)
    procs = []

    def start():
        child = start_stopped_holder(logdir, child_env)
        procs.append(child)
        return child

    yield start
    for child in procs:
        end_holder(child)


def test_producers_and_readers_go_on_past_a_stopped_metadata_writer(
        logdir, child_env, holder):
    producer = start_client(PRODUCER, [logdir, str(RECORDS)], child_env)
    stopped = holder()
    t0 = time.monotonic()
    out = finish_client(producer, "a producer", stopped, APPEND_BOUND_S * 3)
    took = time.monotonic() - t0
    print(out.strip(), f"(whole child {took:.2f} s)")
    assert took < APPEND_BOUND_S
    # a reader in this process: opening waits for the writer lock (L-7), so
    # it is read-only here; fetches never touch the metadata writer
    with pylog.open(logdir, readonly=True) as log:
        info = log.describe_topic("t").partition_info[0]
        assert info.end_offset == RECORDS + 1
        assert info.segments >= 4, "the appends were meant to roll segments"
        recs = log.partition("t", 0).fetch(Cursor(0), 10**6)
        assert len(recs) == RECORDS + 1
    with pytest.raises(pylog.MetadataBusyError):
        pylog.open(logdir, metadata_timeout=COMMIT_TIMEOUT_S)


# Another process commits, then joins a group (a group change), with a
# short metadata_timeout; one JSON line per call: how long it took and what
# it raised. (In a child: a call blocked inside LMDB's writer mutex holds
# the GIL, so a thread of the test could not even time it out.)
COMMITTER = r"""
import json, sys, time, pylog
log = pylog.open(sys.argv[1], metadata_timeout=float(sys.argv[2]))
print("ready", flush=True)
sys.stdin.readline()
def report(what, fn):
    t0 = time.monotonic()
    try:
        fn()
        out = {"what": what, "ok": True}
    except Exception as exc:
        out = {"what": what, "err": type(exc).__name__, "msg": str(exc),
               "pid": getattr(exc, "holder_pid", None)}
    out["took"] = time.monotonic() - t0
    print(json.dumps(out), flush=True)
report("commit", lambda: log.meta.commit("g", {("t", 0): 1}))
c = log.consumer("t", group_id="g", enable_auto_commit=False,
                 auto_offset_reset="earliest")
report("join", lambda: c.poll(timeout=0.1))
"""


def test_commit_and_join_give_up_naming_the_stopped_pid(logdir, child_env, holder):
    committer = start_client(COMMITTER, [logdir, str(COMMIT_TIMEOUT_S)], child_env)
    stopped_holder = holder()
    out = finish_client(committer, "a commit", stopped_holder, 30)
    lines = [json.loads(x) for x in out.splitlines()]
    assert [x["what"] for x in lines] == ["commit", "join"], out
    for out in lines:
        print(out)
        assert out.get("err") == "MetadataBusyError", out
        assert out["pid"] == stopped_holder.pid
        assert str(stopped_holder.pid) in out["msg"]
        assert COMMIT_TIMEOUT_S * 0.9 <= out["took"] < COMMIT_TIMEOUT_S + 2


def test_commits_work_again_after_the_holder_dies(logdir, holder):
    stopped_holder = holder()
    os.kill(stopped_holder.pid, signal.SIGKILL)
    stopped_holder.wait(10)
    with pylog.open(logdir, metadata_timeout=COMMIT_TIMEOUT_S) as log:
        log.meta.commit("g", {("t", 0): 1})
        assert log.meta.committed("g", "t", 0) == 1


OPEN_AND_WRITE = r"""
import sys, pylog
try:
    log = pylog.open(sys.argv[1], metadata_timeout=1.0)
    log.create_topic("u", partitions=1)
    print("wrote")
except pylog.PylogError as exc:
    print("refused:", type(exc).__name__, exc)
"""


def test_open_beside_a_stopped_writer_whose_meta_lock_was_deleted(
        logdir, child_env, holder):
    """meta.lock deleted under a process stopped inside a metadata write:
    an open that made a new one would pass it and block in LMDB's own
    writer mutex for as long as the holder is stopped (every thread of the
    process with it). It is refused at once, creating nothing."""
    stopped = holder()
    os.unlink(os.path.join(logdir, "meta.lock"))
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", OPEN_AND_WRITE, logdir],
                              env=child_env, capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"an open froze behind the stopped process {stopped.pid}")
    out = proc.stdout.decode() + proc.stderr.decode()
    assert "refused: FileVanishedError" in out and "meta.lock is missing" in out, out
    assert time.monotonic() - t0 < APPEND_BOUND_S
    assert not os.path.exists(os.path.join(logdir, "meta.lock"))
