"""The clean-shutdown record (FORMAT.rst P-9): the first opener after a clean
close skips the recovery of partitions nobody changed since; anything less
than a clean close (a crash, a second process still open, a lock word left
by a dead holder, a power loss bringing back a stale state page) is
recovered as before (P-4).

Whether recovery ran is seen on disk: recovery cuts the active segment's
preallocated tail (S-3) to its published end; a skipped one leaves it."""

import os
import signal
import struct
import subprocess
import sys
import textwrap

import pytest
from childproc import readline, start, stderr_tail

import pylog
from pylog import _format, cleanshutdown
from pylog.partition import Cursor

N = 20


def seg_size(logdir, p=0):
    return os.path.getsize(os.path.join(logdir, f"t-{p}", f"{0:020d}.log"))


def make(logdir, partitions=2):
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", partitions=partitions, retention_ms=-1)
        prod = log.producer()
        for i in range(N):
            prod.send("t", b"v%d" % i, partition=i % partitions)
        return log.partition("t", 0).state().active_position


def values(log, p):
    return [r[3] for r in log.partition("t", p).fetch(Cursor(0), 1000)]


def test_a_clean_close_is_reopened_without_recovery(logdir):
    """P-9: the record is there after a clean close; the next first opener
    skips recovery (the preallocated tail stays), removes the record before
    it returns, reads and appends as usual."""
    end = make(logdir)
    assert os.path.exists(os.path.join(logdir, cleanshutdown.CLEAN_FILE))
    assert seg_size(logdir) > end                  # preallocated (S-3)
    with pylog.open(logdir, sync="never") as log:
        assert not os.path.exists(os.path.join(logdir, cleanshutdown.CLEAN_FILE))
        assert seg_size(logdir) > end              # recovery skipped: not cut
        assert values(log, 0) == [b"v%d" % i for i in range(0, N, 2)]
        assert log.producer().send("t", b"more", partition=0).offset == N // 2
    with pylog.open(logdir, sync="never") as log:
        assert values(log, 0)[-1] == b"more"


def test_without_the_record_every_partition_is_recovered(logdir):
    """The same log without ``clean-shutdown`` (a session that crashed):
    recovery cuts the tail. This is what the test above tells apart."""
    end = make(logdir)
    os.unlink(os.path.join(logdir, cleanshutdown.CLEAN_FILE))
    with pylog.open(logdir, sync="never") as log:
        assert seg_size(logdir) == end
        assert values(log, 0) == [b"v%d" % i for i in range(0, N, 2)]


def test_a_record_or_mark_that_does_not_match_is_ignored(logdir):
    """A partition whose state changed after the mark (another record, a
    dead holder's lock word) or whose file names another nonce is
    recovered; the other partition still skips."""
    end = make(logdir, partitions=3)
    state = os.path.join(logdir, "t-0", "partition.state")
    with open(state, "r+b") as f:          # a dead holder's token (P-3)
        f.seek(_format.STATE_LOCK_WORD)
        f.write(struct.pack("=I", 12345))
    state1 = os.path.join(logdir, "t-1", "partition.state")
    with open(state1, "r+b") as f:         # a publish since the mark
        f.seek(_format.STATE_SEQ_OFFSET)
        seq, = struct.unpack("=q", f.read(8))
        f.seek(_format.STATE_SEQ_OFFSET)
        f.write(struct.pack("=q", seq + 2))
    end1 = os.path.getsize(os.path.join(logdir, "t-1", f"{0:020d}.log"))
    with pylog.open(logdir, sync="never") as log:
        assert seg_size(logdir, 0) == end          # recovered
        assert seg_size(logdir, 1) < end1          # recovered
        assert seg_size(logdir, 2) > end           # skipped
        for p in range(3):
            assert len(values(log, p)) == len(range(p, N, 3))
    # a record of another close does not vouch for these marks
    with pylog.open(logdir, sync="never"):
        pass
    with open(os.path.join(logdir, cleanshutdown.CLEAN_FILE), "r+b") as f:
        f.seek(4)
        f.write(b"\x01" * 16)
    assert cleanshutdown.read_nonce(logdir) is None
    with pylog.open(logdir, sync="never"):
        assert seg_size(logdir, 2) == os.path.getsize(
            os.path.join(logdir, "t-2", f"{0:020d}.log"))


def test_only_the_last_closer_writes_the_record(logdir):
    """P-9: a close while another Log (its own lock, as another process)
    has the log open leaves no record; the last close does."""
    make(logdir)
    a = pylog.open(logdir, sync="never")
    b = pylog.open(logdir, sync="never")
    a.close()
    assert not os.path.exists(os.path.join(logdir, cleanshutdown.CLEAN_FILE))
    b.producer().send("t", b"late", partition=0)
    b.close()
    assert os.path.exists(os.path.join(logdir, cleanshutdown.CLEAN_FILE))
    with pylog.open(logdir, sync="never") as log:
        assert values(log, 0)[-1] == b"late"


KILLED = textwrap.dedent("""
    import sys, pylog
    log = pylog.open(sys.argv[1], sync="always")
    prod = log.producer()
    for i in range(50):
        prod.send("t", b"after%d" % i, partition=0)
    print("sent", flush=True)
    import time; time.sleep(60)
""")


def test_writes_after_a_clean_open_survive_a_power_loss(shim, tmp_path, child_env):
    """The stale mark: a clean close, then a writer that appends with
    sync="always" and dies, then a power loss that brings back the state
    page as the clean close left it (mark and all). The record was removed
    durably before the writes, so the next open recovers and every
    acknowledged record is there."""
    from test_powerloss import power_loss
    logdir, shadow = str(tmp_path / "log"), str(tmp_path / "shadow")
    os.makedirs(shadow)
    make(logdir)
    # the clean close's syncfs made every file durable: their images now
    for dirpath, _dirs, files in os.walk(logdir):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as src, \
                    open(os.path.join(shadow, f"{os.stat(p).st_ino}.img"), "wb") as dst:
                dst.write(src.read())
    env = dict(child_env, LD_PRELOAD=shim, PLSHIM_SHADOW_ROOT=os.path.abspath(logdir),
               PLSHIM_SHADOW_DIR=shadow)
    proc = start(KILLED, logdir, env=env)
    try:
        assert readline(proc, timeout=60) == b"sent\n", stderr_tail(proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    power_loss(logdir, shadow, "drop", None)
    state = os.path.join(logdir, "t-0", "partition.state")
    head = open(state, "rb").read(_format.STATE_LOCK_WORD + 8)
    nonce = struct.unpack_from("=Q", head, _format.STATE_CLEAN)[0]
    assert nonce != 0                      # the stale mark is back: the test can fail
    assert not os.path.exists(os.path.join(logdir, cleanshutdown.CLEAN_FILE))
    with pylog.open(logdir, sync="never") as log:
        got = values(log, 0)
        assert got == [b"v%d" % i for i in range(0, N, 2)] + \
            [b"after%d" % i for i in range(50)]


@pytest.mark.parametrize("kill", [True, False])
def test_a_crashed_session_is_recovered(logdir, child_env, kill):
    """A writer that opened after a clean close and was killed leaves no
    record: the next open recovers (the tail is cut); one that closed
    leaves it."""
    make(logdir)
    script = KILLED if kill else KILLED.replace("import time; time.sleep(60)",
                                                "log.close()")
    proc = subprocess.Popen([sys.executable, "-c", script, logdir], env=child_env,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"sent\n"
    if kill:
        proc.kill()
    proc.wait()
    assert os.path.exists(os.path.join(logdir, cleanshutdown.CLEAN_FILE)) is not kill
    with pylog.open(logdir, sync="never") as log:
        end = log.partition("t", 0).state().active_position
        assert (seg_size(logdir) == end) is kill      # cut: recovered
        assert values(log, 0)[-1] == b"after49"
