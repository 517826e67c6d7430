"""``pylog verify`` of a sound log while another process applies retention,
``delete_records`` and rolls reports it sound: a segment those delete
between verify's steps is no damage, nor a reason to fail with a
permission hint. Damage done meanwhile (a file of a segment still above the
log start removed by hand) is still reported.

The deterministic tests have a writer child delete records at a chosen
point of verify's walk (a hooked function of pylog.verify); the stress tests
run verify in a loop while a writer child appends and applies retention."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import childproc
import pytest

import pylog
import pylog.metadata
import pylog.verify as verify
from pylog.errors import LogOSError
from pylog.verify import verify_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a writable Log in a child process: "delete OFFSET" (delete_records, -1:
# the end), "append N" (N batches of 20 records), "retention"; "done" after each
WRITER = r"""
import sys, pylog
log = pylog.open(sys.argv[1], sync="never")
p = log.producer()
tp = pylog.TopicPartition("t", 0)
print("ready", flush=True)
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "delete":
        log.delete_records({tp: int(arg[0])})
    elif cmd == "append":
        for _ in range(int(arg[0])):
            p.send_batch("t", [b"y" * 200] * 20, partition=0)
        p.flush()
    elif cmd == "retention":
        log.enforce_retention()
    print("done", flush=True)
"""


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture
def writer(logdir):
    """A log of one partition of several 64 KiB segments, held open by a
    writer child; yields a function sending it a command (returns once
    it is done)."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", partitions=1, segment_bytes=65536)
        p = log.producer()
        for _ in range(60):
            p.send_batch("t", [b"y" * 200] * 20, partition=0)
    proc = childproc.start(WRITER, logdir, env=_env(), stdin=subprocess.PIPE)
    try:
        childproc.expect(proc, b"ready")

        def command(line: str) -> None:
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            childproc.expect(proc, b"done")
        yield command
    finally:
        proc.stdin.close()
        assert proc.wait(30) == 0, childproc.stderr_tail(proc)


def bases(logdir):
    d = os.path.join(logdir, "t-0")
    return sorted(int(n[:-4]) for n in os.listdir(d) if n.endswith(".log"))


def hook(monkeypatch, owner, name, action, *, after=False, when=lambda *a: True):
    """Make ``owner.name`` run ``action()`` once, before (or ``after``) its
    first call whose positional arguments ``when`` accepts."""
    original = getattr(owner, name)
    fired = []

    def hooked(*args, **kw):
        due = not fired and when(*args)
        if due and not after:
            fired.append(action())
        out = original(*args, **kw)
        if due and after:
            fired.append(action())
        return out
    monkeypatch.setattr(owner, name, hooked)
    return fired


@pytest.mark.parametrize("nth", [1, 2], ids=["first", "second"])
def test_records_deleted_right_after_verify_reads_the_metadata(logdir, writer, monkeypatch,
                                                               nth):
    """Right after verify's first read of the partition's metadata, or its
    second: the log start, read after the segment list."""
    segs = bases(logdir)
    assert len(segs) >= 4
    calls = []
    fired = hook(monkeypatch, pylog.metadata.Metadata, "partition_meta",
                 lambda: writer(f"delete {segs[2] + 5}"), after=True,
                 when=lambda *a: calls.append(a) or len(calls) == nth)
    assert verify_log(logdir) == []
    assert fired and bases(logdir)[0] == segs[2]


def test_records_deleted_between_a_segment_and_its_indexes(logdir, writer, monkeypatch):
    segs = bases(logdir)
    fired = hook(monkeypatch, verify, "_verify_indexes",
                 lambda: writer(f"delete {segs[2]}"))
    assert verify_log(logdir) == []
    assert fired and bases(logdir)[0] == segs[2]


def test_records_deleted_between_the_index_and_the_time_index(logdir, writer, monkeypatch):
    segs = bases(logdir)
    fired = hook(monkeypatch, verify, "_read_regular",
                 lambda: writer(f"delete {segs[1]}"),
                 when=lambda path, *a: path.endswith(".timeindex"))
    assert verify_log(logdir) == []
    assert fired and bases(logdir)[0] == segs[1]


def test_appends_and_delete_records_to_the_end_after_verify_reads_the_state(
        logdir, writer, monkeypatch):
    """The start verify reads may be past the end it checks up to: the
    records appended since are no damage."""
    fired = hook(monkeypatch, verify, "read_partition_state",
                 lambda: (writer("append 200"), writer("delete -1")), after=True)
    assert verify_log(logdir) == []
    assert fired and len(bases(logdir)) == 1


# -- damage done while verify runs is still damage ---------------------------

def test_segment_removed_by_hand_while_verify_runs_is_reported(logdir, writer, monkeypatch):
    segs = bases(logdir)
    victim = os.path.join(logdir, "t-0", f"{segs[1]:020d}.log")
    hook(monkeypatch, verify, "_File", lambda: os.unlink(victim),
         when=lambda path: path == victim)
    problems = verify_log(logdir)
    assert [p.file for p in problems] == [victim]
    assert "missing" in problems[0].message and f"offset {segs[1]}" in problems[0].message


@pytest.mark.parametrize("suffix", [".index", ".timeindex"])
def test_index_removed_by_hand_while_verify_runs_is_reported(logdir, writer, monkeypatch,
                                                             suffix):
    """Removed between verify's look at the file and its read of it: the
    index of a segment above the log start is missing, no OSError."""
    segs = bases(logdir)
    victim = os.path.join(logdir, "t-0", f"{segs[1]:020d}{suffix}")
    hook(monkeypatch, verify, "_read_regular", lambda: os.unlink(victim),
         when=lambda path, *a: path == victim)
    problems = verify_log(logdir)
    assert [p.file for p in problems] == [victim]
    assert "file is missing" in problems[0].message


def test_partition_directory_gone_is_not_a_permission_problem(logdir, writer, monkeypatch):
    """A directory deleted while verify runs (a topic deleted meanwhile)
    fails with ENOENT and no hint about read access."""
    d = os.path.join(logdir, "t-0")
    hook(monkeypatch, verify, "_verify_topic_id",
         lambda: os.rename(d, d + ".moved"))
    with pytest.raises(LogOSError) as err:
        verify_log(logdir)
    msg = str(err.value)
    assert "ENOENT" in msg and d in msg and "read access" not in msg
    assert "deleted while verify ran" in msg


# -- stress: a real writer's retention and delete_records, verify looping ----

STRESS = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
p = log.producer()
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
i = 0
while time.monotonic() < end:
    p.send_batch("r", [b"y" * 200] * 20, partition=i % 2)
    i += 1
    if i % 5 == 0:
        log.enforce_retention()
    if i % 97 == 0:
        log.delete_records({pylog.TopicPartition("r", i % 2): -1})
log.close()
"""


def _stress_log(logdir):
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("r", partitions=2, segment_bytes=65536, retention_bytes=65536)


def _verify_while_stressed(logdir, seconds, check):
    """Run ``check(run number)`` again and again while a writer process
    appends, applies retention and deletes records for ``seconds``;
    returns how many runs there were."""
    _stress_log(logdir)
    w = childproc.start(STRESS, logdir, seconds, env=_env())
    runs = 0
    try:
        childproc.expect(w, b"ready")
        while w.poll() is None:
            check(runs)
            runs += 1
        assert w.wait() == 0, childproc.stderr_tail(w)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    return runs


def test_verify_loop_under_retention_and_delete_records(logdir):
    def check(run):
        assert verify_log(logdir) == [], f"verify run {run}"
    assert _verify_while_stressed(logdir, 5, check) >= 5
    assert verify_log(logdir) == []


@pytest.mark.long
def test_verify_cli_loop_under_retention_and_delete_records(logdir):
    def check(run):
        r = subprocess.run([sys.executable, "-m", "pylog.cli", "verify", "--quiet",
                            logdir], capture_output=True, text=True, env=_env(),
                           timeout=60)
        assert r.returncode == 0, f"verify run {run}: {r.stdout}{r.stderr}"
    assert _verify_while_stressed(logdir, 60, check) >= 20


def test_reader_between_a_writers_two_index_writes(tmp_path, caplog):
    """A writer publishes a batch, then writes its .index entry, then its
    .timeindex entry (csrc/append.c). A reader in another Log that opens
    the active segment between the two writes found one more offset entry
    than time entries and took it for damage: a warning "rebuilding the
    indexes (I-3)" and a scan of the whole active segment (found by a
    user trial: a Log reopened in a loop beside 3 writing processes). The
    state is simulated here: the writer's last time index entry cut off
    while it has the log open."""
    path = str(tmp_path / "log")
    writer = pylog.open(path, sync="never")
    writer.create_topic("t", partitions=1)
    prod = writer.producer()
    for i in range(200):
        prod.send("t", b"%04d" % i + bytes(200))
    seg = os.path.join(path, "t-0", "00000000000000000000")
    tsize = os.path.getsize(seg + ".timeindex")
    assert tsize >= 24 and os.path.getsize(seg + ".index") == tsize // 12 * 8
    os.truncate(seg + ".timeindex", tsize - 12)
    caplog.set_level(logging.WARNING, logger="pylog")
    with pylog.open(path, sync="never") as reader:
        c = reader.consumer(enable_auto_commit=False)
        tp = pylog.TopicPartition("t", 0)
        c.assign([tp])
        c.seek(tp, 190)
        assert [r.value[:4] for r in c.poll(timeout=1)] == [b"%04d" % i for i in range(190, 200)]
        assert c.offsets_for_times({tp: 0})[tp] == 0
    assert "rebuilding the indexes" not in caplog.text
    writer.close()
# -- topics deleted and created by another process while verify runs ---------

ADMIN = r"""
import os, sys, pylog
import pylog.topicdirs
if sys.argv[2] == "crash-in-delete":
    # a crash after delete_topic's metadata commit, before its directories
    # go: the tombstone (M-11) has the next open remove them (L-5)
    pylog.topicdirs.bury = lambda d: os._exit(9)
elif sys.argv[2] == "stop-in-create":
    # stopped after create_topic's metadata commit, before the directory
    # of its first partition is made; the test's SIGCONT goes on
    import signal, pylog.partition
    made = pylog.partition.Partition.__init__
    def stopping(self, root, topic, index, *a, **kw):
        if topic == "c" and index == 0:
            print("creating", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        made(self, root, topic, index, *a, **kw)
    pylog.partition.Partition.__init__ = stopping
log = pylog.open(sys.argv[1], sync="never")
print("ready", flush=True)
for line in sys.stdin:
    cmd, name = line.split()
    if cmd == "delete":
        log.delete_topic(name)
    elif cmd == "create":
        log.create_topic(name, partitions=2)
        c = log.consumer(name, group_id="g", auto_offset_reset="earliest")
        log.producer().send(name, b"x", partition=0)
        while not c.poll(timeout=0.5):
            pass
        c.commit()
        c.close()
    print("done", flush=True)
"""


@pytest.fixture
def admin(logdir, request):
    """Topics "a" and "b" (two partitions, a record each) and a child
    process that deletes or creates a topic when told ("delete b")."""
    with pylog.open(logdir, sync="never") as log:
        for t in ("a", "b"):
            log.create_topic(t, partitions=2)
            log.producer().send_batch(t, [b"r"], partition=0)
    mode = getattr(request, "param", "")
    proc = childproc.start(ADMIN, logdir, mode or "-", env=_env(), stdin=subprocess.PIPE)
    try:
        childproc.expect(proc, b"ready")

        def command(line: str) -> None:
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            if mode == "crash-in-delete":
                assert proc.wait(30) == 9, childproc.stderr_tail(proc)
            elif mode == "stop-in-create":
                childproc.expect(proc, b"creating")
            else:
                childproc.expect(proc, b"done")
        command.proc = proc
        yield command
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            assert proc.wait(30) == 0, childproc.stderr_tail(proc)


def _is_b(root, meta, t, *a):
    return t == "b"


@pytest.mark.parametrize("where", ["before its partitions", "inside a partition"])
def test_a_topic_deleted_while_verify_runs_is_no_problem(logdir, admin, monkeypatch, where):
    """``pylog verify`` of a live log reported "partition directory is
    missing" (exit 1), or failed (exit 2), for a topic another process
    deleted after verify read the topics: a delete is no damage."""
    if where == "before its partitions":
        hook(monkeypatch, verify, "_verify_partition", lambda: admin("delete b"),
             when=_is_b)
    else:
        hook(monkeypatch, verify, "_verify_topic_id", lambda: admin("delete b"),
             when=lambda d, *a: os.path.basename(d) == "b-0")
    assert verify_log(logdir) == []


def test_a_topic_created_while_verify_runs_is_no_problem(logdir, admin, monkeypatch):
    """Its directories were "not in the metadata" and a group's commit on
    it was "a committed offset for c-0, which does not exist"."""
    hook(monkeypatch, pylog.metadata.Metadata, "groups_with_offsets",
         lambda: admin("create c"))
    assert verify_log(logdir) == []
    assert sorted(n for n in os.listdir(logdir) if n.startswith("c-")) == ["c-0", "c-1"]


@pytest.mark.parametrize("admin", ["crash-in-delete"], indirect=True)
def test_directories_of_a_deleted_topic_not_yet_removed_are_no_problem(logdir, admin):
    admin("delete b")
    assert os.path.isdir(os.path.join(logdir, "b-0"))      # the crash left them
    assert verify_log(logdir) == []
    with pylog.open(logdir, sync="never"):
        pass                                      # the next open removes them
    assert not os.path.exists(os.path.join(logdir, "b-0"))
    os.makedirs(os.path.join(logdir, "b-0"))      # made by hand: reported
    assert [p.message for p in verify_log(logdir)] == [
        "partition directory is not in the metadata (no such topic or partition)"]


@pytest.mark.parametrize("admin", ["stop-in-create"], indirect=True)
def test_a_topic_being_created_while_verify_runs_is_no_problem(logdir, admin, monkeypatch):
    """A topic in the metadata whose directories its creator had not made
    yet was "partition directory is missing": on a live log a partition
    with problems is checked again before they count."""
    admin("create c")
    proc = admin.proc
    deadline = time.monotonic() + 10
    while _proc_state(proc.pid) != "T" and time.monotonic() < deadline:
        time.sleep(0.01)

    def go_on():
        os.kill(proc.pid, signal.SIGCONT)
        childproc.expect(proc, b"done")
    hook(monkeypatch, verify, "_verify_partition", go_on, after=True,
         when=lambda root, meta, t, *a: t == "c")
    assert verify_log(logdir) == []
    shutil.rmtree(os.path.join(logdir, "c-1"))       # by hand: reported
    assert [p.message for p in verify_log(logdir)] == ["partition directory is missing"]


def _proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]
