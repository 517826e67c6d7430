"""Non-regular files where segments and indexes belong (issue 13, item 2).

A FIFO made open(2) block forever (pylog.open, poll, pylog verify); a
directory or symlink gave bare OSErrors, and a bad *index* (derived data)
made the whole log unopenable. Every scenario runs in a child process under
a timeout, so a hang fails the test instead of hanging the suite.

Expected: an index that is not a regular file is set aside and rebuilt
(the symlink's target untouched); a segment that is not a regular file is a
CorruptLogError naming it; ``pylog verify`` reports each, never hangs, never
follows a symlink and never calls such a log sound.
"""

import json
import os
import subprocess
import sys

import pytest

import pylog

CHILD = r"""
import json, sys, pylog
from pylog.verify import verify_log
path, what = sys.argv[1], sys.argv[2]
def emit(**kw):
    print(json.dumps(kw), flush=True)
def attempt(name, fn):
    try:
        r = fn()
        emit(what=name, ok=True, result=r)
    except Exception as exc:
        emit(what=name, ok=False, err=type(exc).__name__,
             pylog=isinstance(exc, pylog.PylogError), msg=str(exc)[:400])
if what == "read":
    def read():
        with pylog.open(path) as log:
            c = log.consumer("t", auto_offset_reset="earliest")
            n = 0
            for _ in range(5):
                n += len(c.poll(timeout=0.2, max_records=10000))
            log.producer().send("t", b"after")
            return n
    attempt("read", read)
elif what == "read_ro":
    def read_ro():
        with pylog.open(path, readonly=True) as log:
            c = log.consumer("t", auto_offset_reset="earliest")
            return sum(len(c.poll(timeout=0.2, max_records=10000)) for _ in range(3))
    attempt("read_ro", read_ro)
elif what == "verify":
    attempt("verify", lambda: [str(p) for p in verify_log(path)])
"""

N = 300        # records: 3 segments of 64 KiB


@pytest.fixture
def log3(logdir):
    """A log whose topic t has 3 segments (two sealed), closed cleanly."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", segment_bytes=65536, retention_ms=-1)
        prod = log.producer()
        for i in range(N):
            prod.send("t", b"%04d" % i + b"x" * 600)
    d = os.path.join(logdir, "t-0")
    segs = sorted(n for n in os.listdir(d) if n.endswith(".log"))
    assert len(segs) >= 3
    return logdir, d, [os.path.join(d, s) for s in segs]


def child(logdir, what, env):
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, logdir, what],
                              env=env, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what!r} hung (blocked in open(2) of a special file?)")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout.decode().splitlines()[-1])


def plant(path, kind, tmp_path):
    """Replace ``path`` by a FIFO, a directory or a symlink to a decoy."""
    decoy = tmp_path / "decoy"
    decoy.write_bytes(b"decoy must stay untouched")
    os.unlink(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        os.mkdir(path)
        open(os.path.join(path, "x"), "w").close()
    else:
        os.symlink(decoy, path)
    return decoy


KINDS = ["fifo", "dir", "symlink"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["sealed", "active"])
def test_bad_index_is_rebuilt(log3, tmp_path, child_env, kind, which):
    logdir, d, segs = log3
    seg = segs[0] if which == "sealed" else segs[-1]
    decoy = plant(seg[:-4] + ".index", kind, tmp_path)
    # verify first (read-only, nothing changed): it names the file and stops
    # at nothing
    res = child(logdir, "verify", child_env)
    assert res["ok"], res
    assert any(seg[:-4] + ".index" in p and "regular file" in p
               for p in res["result"]), res["result"]
    res = child(logdir, "read_ro", child_env)
    assert res["ok"] and res["result"] == N, res
    res = child(logdir, "read", child_env)
    assert res["ok"] and res["result"] == N, res
    assert decoy.read_bytes() == b"decoy must stay untouched"
    assert os.path.isfile(seg[:-4] + ".index") and \
        not os.path.islink(seg[:-4] + ".index")
    res = child(logdir, "verify", child_env)
    assert res["ok"] and res["result"] == [], res


@pytest.mark.parametrize("kind", KINDS)
def test_bad_sealed_segment_is_a_clear_error(log3, tmp_path, child_env, kind):
    logdir, d, segs = log3
    decoy = plant(segs[0], kind, tmp_path)
    res = child(logdir, "read", child_env)
    assert not res["ok"] and res["pylog"], res
    assert res["err"] in ("CorruptLogError", "NotARegularFile", "LogFailedError"), res
    assert segs[0] in res["msg"] and "regular file" in res["msg"], res
    res = child(logdir, "verify", child_env)
    assert res["ok"], res
    problems = res["result"]
    assert any(segs[0] in p and "regular file" in p for p in problems), problems
    assert decoy.read_bytes() == b"decoy must stay untouched"


@pytest.mark.parametrize("kind", KINDS)
def test_bad_active_segment_fails_the_partition_not_the_process(log3, tmp_path,
                                                                child_env, kind):
    logdir, d, segs = log3
    plant(segs[-1], kind, tmp_path)
    res = child(logdir, "read", child_env)
    assert not res["ok"] and res["pylog"], res
    assert segs[-1] in res["msg"], res
    res = child(logdir, "verify", child_env)
    assert res["ok"] and any(segs[-1] in p for p in res["result"]), res


@pytest.mark.parametrize("kind", KINDS)
def test_bad_partition_state_is_rebuilt(log3, tmp_path, child_env, kind):
    """partition.state is rebuilt by recovery (P-4): a FIFO there hung a
    read-only open; now read-only opens recover in memory and a writable
    one sets the odd file aside."""
    logdir, d, segs = log3
    state = os.path.join(d, "partition.state")
    decoy = plant(state, kind, tmp_path)
    res = child(logdir, "read_ro", child_env)
    assert res["ok"] and res["result"] == N, res
    res = child(logdir, "read", child_env)
    assert res["ok"] and res["result"] == N, res
    assert os.path.isfile(state) and not os.path.islink(state)
    assert decoy.read_bytes() == b"decoy must stay untouched"
    res = child(logdir, "verify", child_env)
    assert res["ok"] and res["result"] == [], res


@pytest.mark.parametrize("where", ["t-0/00000000000000000001.log", "t-0/topic.id",
                                   "meta/data.mdb"])
def test_fifo_at_other_paths_never_hangs(tmp_path, child_env, where):
    """Found by an independent review: a FIFO at a planted segment name
    (recovery's emptiness probe), at topic.id, or at meta/data.mdb blocked
    pylog.open in open(2). Now: open, verify and info answer within the
    timeout; verify reports the file."""
    path = str(tmp_path / "log")
    with pylog.open(path) as log:
        log.create_topic("t")
        log.producer().send("t", b"x")
    target = os.path.join(path, where)
    if os.path.exists(target):
        os.unlink(target)
    os.mkfifo(target)
    r = subprocess.run([sys.executable, "-m", "pylog.cli", "verify", path],
                       capture_output=True, timeout=30, env=child_env)
    assert r.returncode == 1 and "FIFO" in r.stdout.decode(), r.stdout.decode()
    code = ("import sys, pylog\n"
            "try:\n"
            "    with pylog.open(sys.argv[1], readonly=True) as l:\n"
            "        c = l.consumer(); c.assign([pylog.TopicPartition('t', 0)])\n"
            "        c.seek_to_beginning(); print(len(c.poll(timeout=0.2)))\n"
            "except pylog.PylogError as e:\n"
            "    print(type(e).__name__)\n")
    r = subprocess.run([sys.executable, "-c", code, path], capture_output=True,
                       timeout=30, env=child_env)
    assert r.returncode == 0, r.stderr.decode()
    r = subprocess.run([sys.executable, "-m", "pylog.cli", "info", path],
                       capture_output=True, timeout=30, env=child_env)
    assert b"Traceback" not in r.stderr
