"""A segment or index file, or a partition directory, that the process may
not open as it needs raises the documented LogPermissionError (a
PylogError that is also a PermissionError), never a bare built-in one; a
refused roll leaves the partition usable once access is granted.

The test process runs as root, which ignores file modes, so each scenario
runs in a child process as uid/gid 65534 (nobody) under ``setpriv`` and
prints what it saw as JSON."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="file modes bind only a non-root user: needs root and setpriv(1) "
           "to run the child as uid 65534")

# the child's helpers: run a call, describe its outcome
_PRELUDE = """
import json, os, sys
import pylog
from pylog import TopicPartition

def outcome(fn):
    try:
        return {"ok": repr(fn())}
    except Exception as exc:
        return {"error": type(exc).__name__,
                "bases": [c.__name__ for c in type(exc).__mro__],
                "errno": getattr(exc, "errno", None), "message": str(exc)}

D = sys.argv[1]
out = {}
"""


@pytest.fixture
def logdir():
    d = tempfile.mkdtemp(prefix="pylog-perm-")
    os.chown(d, NOBODY, NOBODY)
    yield os.path.join(d, "log")
    shutil.rmtree(d, ignore_errors=True)


def as_nobody(script: str, path: str) -> dict:
    """Run ``script`` (after _PRELUDE; it fills ``out``) as nobody; its ``out``."""
    code = _PRELUDE + script + "\nprint(json.dumps(out))\n"
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                        "--clear-groups", sys.executable, "-c", code, path],
                       capture_output=True, text=True, timeout=120, cwd="/",
                       env={**os.environ, "PYTHONPATH": ROOT})
    if r.returncode != 0 and "Permission denied" in r.stderr and "pylog" not in r.stderr:
        pytest.skip(f"uid {NOBODY} cannot run this interpreter: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_permission_error(res: dict, path_part: str) -> None:
    assert "error" in res, res
    assert res["error"] == "LogPermissionError", res
    assert {"PylogError", "LogOSError", "PermissionError"} <= set(res["bases"]), res
    assert res["errno"] == 13, res
    assert path_part in res["message"] and "uid 65534" in res["message"], res


def send_to_read_only(name: str) -> str:
    """The child's scenario: one record in partition t-0, then its file
    ``name`` made read-only (0444) and a send; ``out["send"]`` says how the
    send ended."""
    return f"""
with pylog.open(D) as log:
    log.create_topic("t", partitions=1)
    log.producer().send("t", b"x", partition=0)
os.chmod(os.path.join(D, "t-0", {name!r}), 0o444)

def send():
    with pylog.open(D) as log:
        return log.producer().send("t", b"y", partition=0).offset
out["send"] = outcome(send)
"""


def test_read_only_active_segment_send_raises_log_permission_error(logdir):
    res = as_nobody(send_to_read_only("00000000000000000000.log") + """
def read():
    with pylog.open(D, readonly=True) as log:
        c = log.consumer(auto_offset_reset="earliest")
        c.assign([TopicPartition("t", 0)])
        n = len(c.poll(timeout_ms=1000))
        c.close()
        return n
out["read"] = outcome(read)
""", logdir)
    assert_permission_error(res["send"], "00000000000000000000.log")
    assert "for writing" in res["send"]["message"]
    assert res["read"] == {"ok": "1"}


def test_read_only_index_file_raises_log_permission_error(logdir):
    res = as_nobody(send_to_read_only("00000000000000000000.index"), logdir)
    assert_permission_error(res["send"], "00000000000000000000.index")


def test_unreadable_segment_read_raises_log_permission_error(logdir):
    res = as_nobody("""
with pylog.open(D) as log:
    log.create_topic("t", partitions=1, segment_bytes=65536)
    pr = log.producer()
    for i in range(800):
        pr.send("t", b"x" * 200, partition=0)
os.chmod(os.path.join(D, "t-0", "00000000000000000000.log"), 0)

def read():
    with pylog.open(D, readonly=True) as log:
        c = log.consumer(auto_offset_reset="earliest")
        c.assign([TopicPartition("t", 0)])
        try:
            return len(c.poll(timeout_ms=1000))
        finally:
            c.close()
out["read"] = outcome(read)
""", logdir)
    assert_permission_error(res["read"], "00000000000000000000.log")


def test_roll_in_read_only_partition_dir_keeps_the_partition_usable(logdir):
    res = as_nobody("""
log = pylog.open(D)
log.create_topic("t", partitions=1, segment_bytes=65536)
pr = log.producer()
pdir = os.path.join(D, "t-0")
os.chmod(pdir, 0o555)
def fill():
    for i in range(800):            # 160 KB: rolls past 64 KiB segments
        pr.send("t", b"z" * 200, partition=0)
out["roll"] = outcome(fill)
out["again"] = outcome(lambda: pr.send("t", b"z" * 200, partition=0).offset)
os.chmod(pdir, 0o755)
# the same Log, without a reopen: the partition never failed
out["granted"] = outcome(lambda: pr.send("t", b"w", partition=0).offset)
out["end"] = outcome(lambda: log.describe_topic("t").partition_info[0].end_offset)
log.close()
""", logdir)
    assert_permission_error(res["roll"], "t-0")
    assert "mode 0555" in res["roll"]["message"], res
    assert_permission_error(res["again"], "t-0")
    assert "ok" in res["granted"], res
    assert int(res["end"]["ok"]) == int(res["granted"]["ok"]) + 1


def test_unreadable_partition_dir_leaves_the_rest_of_the_metrics_whole(logdir):
    """A running monitor (a read-only Log, as ``pylog metrics --serve`` and
    ``pylog top`` keep): one partition directory made unreadable hid its
    whole topic from log.metrics(), and the error was the raw OS message
    (found by a user trial). MetricsSnapshot promises the errors name the
    failed partition and the rest is whole; the message is pylog's."""
    res = as_nobody("""
with pylog.open(D, sync="never") as log:
    for t in ("t", "u"):
        log.create_topic(t, partitions=3)
        for p in range(3):
            log.producer().send_batch(t, [b"x"] * 10, partition=p)
mon = pylog.open(D, readonly=True)
os.chmod(os.path.join(D, "t-0"), 0)
try:
    m = mon.metrics()
    out["partitions"] = [[p.topic, p.partition, p.end_offset] for p in m.partitions]
    out["errors"] = list(m.errors)
    from pylog.cli.topmodel import take_snapshot
    snap = take_snapshot(mon, 0.0)
    out["top"] = sorted([t, p, e] for (t, p), e in snap.ends.items())
    out["top_errors"] = snap.errors
finally:
    os.chmod(os.path.join(D, "t-0"), 0o755)
    mon.close()
""", logdir)
    assert res["partitions"] == [["t", 1, 10], ["t", 2, 10],
                                 ["u", 0, 10], ["u", 1, 10], ["u", 2, 10]], res
    (err,) = res["errors"]
    assert err.startswith("partition t-0: "), err
    assert "permission denied (EACCES)" in err and "uid 65534" in err, err
    # pylog top reads the partitions the same way
    assert res["top"] == res["partitions"] and res["top_errors"] == [err], res
