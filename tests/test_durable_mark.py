"""The durable mark (FORMAT.rst P-7): the group-commit syncer records in
``partition.state`` how far the active segment is fdatasync'd, and the
first open after a crash scans from there, not from the last roll; a torn
or stale mark is ignored. Power loss with the mark kept: test_powerloss."""

import os
import signal
import struct
import subprocess

import childproc

import pylog
from pylog import verify
from pylog._format import STATE_DURABLE
from pylog.partition import Cursor
from pylog.sharedstate import STATE_FILE, durable_check

WRITER = r"""
import sys, pylog
log = pylog.open(sys.argv[1], sync=sys.argv[2])
log.create_topic("t", partitions=1, segment_bytes=1 << 24, exist_ok=True)
prod = log.producer()
for i in range(int(sys.argv[3])):
    prod.send_batch("t", [b"%d:" % i + b"x" * 500] * 20)
if sys.argv[2] != "always":
    log.flush()
for i in range(int(sys.argv[4])):
    prod.send_batch("t", [b"tail"] * 10)    # after the last fdatasync
print("done", flush=True)
sys.stdin.read()
"""


def _killed_writer(root, sync="always", batches=200, tail=0):
    """Run WRITER to the end and SIGKILL it: no close, no checkpoint."""
    proc = childproc.start(WRITER, root, sync, batches, tail, stdin=subprocess.PIPE)
    try:
        assert childproc.readline(proc) == b"done\n"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()


def _mark(root):
    with open(os.path.join(root, "t-0", STATE_FILE), "rb") as f:
        return struct.unpack_from("=qqqQ", f.read(), STATE_DURABLE)


def _damage_first_batch(root):
    """Flip a byte inside the first batch's records: a full scan calls it
    mid-log damage (valid batches follow); a scan from a later point never
    sees it."""
    seg = os.path.join(root, "t-0", "%020d.log" % 0)
    with open(seg, "r+b") as f:
        f.seek(200)
        b = f.read(1)
        f.seek(200)
        f.write(bytes([b[0] ^ 0xFF]))


def test_sends_in_always_mode_advance_the_mark(tmp_path):
    with pylog.open(str(tmp_path), sync="always") as log:
        log.create_topic("t", partitions=1)
        prod = log.producer()
        for i in range(5):
            prod.send("t", b"r%d" % i)
            st = log.partition("t", 0).state()
            assert log.partition("t", 0).shared.durable_mark() == \
                (st.active_base, st.active_position, st.next_offset)


def test_open_after_kill_scans_from_the_mark(tmp_path):
    """The checkpoint in LMDB still names position 0 (no flush, roll or
    close happened); the mark names the end. Damage before the mark is not
    rescanned (G7: reads still CRC-check it), so the open succeeds: proof
    that recovery started at the mark."""
    root = str(tmp_path)
    _killed_writer(root)
    base, pos, nxt, _ = _mark(root)
    assert (base, nxt) == (0, 200 * 20) and pos > 0
    _damage_first_batch(root)
    with pylog.open(root) as log:
        part = log.partition("t", 0)
        assert part.failed is None
        assert part.state().next_offset == 200 * 20
        assert log.producer().send("t", b"after").offset == 200 * 20


def test_a_torn_mark_is_ignored(tmp_path):
    """The same log with the mark's check word broken: recovery falls back
    to the LMDB checkpoint, scans the whole segment and finds the damage."""
    root = str(tmp_path)
    _killed_writer(root)
    path = os.path.join(root, "t-0", STATE_FILE)
    with open(path, "r+b") as f:
        f.seek(STATE_DURABLE + 8)
        f.write(struct.pack("=q", 12345))       # position torn, check not
    _damage_first_batch(root)
    with pylog.open(root) as log:
        assert isinstance(log.partition("t", 0).failed, pylog.CorruptLogError)


def test_a_mark_of_another_segment_is_ignored(tmp_path):
    """A valid mark naming a segment that is not the active one (a dropped
    roll's, or one retention deleted) is not used."""
    root = str(tmp_path)
    _killed_writer(root)
    path = os.path.join(root, "t-0", STATE_FILE)
    with open(path, "r+b") as f:
        f.seek(STATE_DURABLE)
        f.write(struct.pack("=qqqQ", 7, 64, 9, durable_check(7, 64, 9)))
    _damage_first_batch(root)
    with pylog.open(root) as log:
        assert isinstance(log.partition("t", 0).failed, pylog.CorruptLogError)


def test_recovery_from_the_mark_keeps_the_unsynced_tail(tmp_path):
    """A crash (not a power loss) keeps what the page cache held: records
    appended after the last fdatasync are recovered past the mark, with
    their indexes, and read back whole."""
    root = str(tmp_path)
    _killed_writer(root, sync="never", batches=50, tail=3)
    base, pos, nxt, _ = _mark(root)
    assert nxt == 50 * 20
    with pylog.open(root) as log:
        part = log.partition("t", 0)
        recs = part.fetch(Cursor(0), 10**8)
        assert [r[0] for r in recs] == list(range(50 * 20 + 30))
        assert recs[-1][3] == b"tail" and recs[0][3].startswith(b"0:")
        assert part.offset_for_time(0) == 0
    assert not verify.verify_log(root)


CLOSER = r"""
import sys, threading, time, pylog
for i in range(int(sys.argv[2])):
    log = pylog.open(sys.argv[1] + "/%d" % i, sync="always")
    log.create_topic("t", partitions=1)
    prod = log.producer()
    def send():
        try:
            while True:
                prod.send("t", b"x" * 100)
        except pylog.PylogError:
            pass
    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.01)
    log.close()
    for t in threads:
        t.join()
print("ok", flush=True)
"""


def test_close_while_a_sync_leader_is_in_fdatasync(tmp_path):
    """The leader stores the mark after its fdatasync: a close() meanwhile
    must not unmap the state under it (the process would die of SIGSEGV)."""
    proc = childproc.start(CLOSER, str(tmp_path), 30)
    try:
        assert childproc.readline(proc, timeout=120) == b"ok\n"
    finally:
        proc.kill()
        proc.wait()
