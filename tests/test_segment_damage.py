"""Segment files lost or cut outside pylog while the log was closed (G4,
FORMAT.rst P-12): the active segment gone or emptied is CorruptLogError
naming the file and the records lost, after a clean close (P-9) as after a
crash, in a writable and a read-only open and in ``pylog verify``; never a
short read that ends quietly or a bare OSError. A first segment gone moves
the log start up to the data that exists, with a warning naming the
offsets lost, never an "earliest" consumer polling nothing forever.
(The lost middle segment is tests/test_corruption.py's.)"""

import logging
import os
import subprocess
import sys

import pytest

import pylog
from pylog import CorruptLogError, LogFailedError, TopicPartition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 3000
TP = TopicPartition("t", 0)


def make(logdir, retention_ms=-1):
    """A closed log, one partition of several segments; its segment names."""
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=1, segment_bytes=65536,
                         retention_ms=retention_ms)
        p = log.producer()
        for i in range(0, N, 100):
            p.send_batch("t", [b"v%05d" % j + bytes(40) for j in range(i, i + 100)],
                         partition=0)
    d = os.path.join(logdir, "t-0")
    segs = sorted(n for n in os.listdir(d) if n.endswith(".log"))
    assert len(segs) >= 3
    return d, segs


def verify_cli(logdir):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pylog.cli", "verify", logdir],
                          capture_output=True, text=True, env=env, timeout=60)


def drain(c, rounds=50):
    got = []
    for _ in range(rounds):
        batch = c.poll(timeout=0.1)
        if not batch and got:
            break
        got.extend(r.offset for r in batch)
    return got


@pytest.mark.parametrize("clean", [True, False], ids=["clean-close", "crash"])
@pytest.mark.parametrize("damage", ["deleted", "emptied"])
def test_lost_active_segment_is_corrupt_log_error(logdir, clean, damage):
    d, segs = make(logdir)
    victim = os.path.join(d, segs[-1])
    first_lost = int(segs[-1][:-4])
    if damage == "deleted":
        os.unlink(victim)
    else:
        os.truncate(victim, 0)
    if not clean:
        os.unlink(os.path.join(logdir, "clean-shutdown"))
    what = f"records {first_lost} to {N - 1}"

    r = verify_cli(logdir)                                   # P-12
    assert r.returncode != 0, r.stdout
    assert segs[-1] in r.stdout and what in r.stdout, r.stdout

    for readonly in (True, False):
        with pylog.open(logdir, readonly=readonly) as log:
            part = log.partition("t", 0)
            assert isinstance(part.failed, CorruptLogError), part.failed
            assert part.failed.path == victim and what in str(part.failed)
            c = log.consumer(auto_offset_reset="earliest")
            c.assign([TP])
            with pytest.raises(LogFailedError, match=what):
                c.poll(timeout=0.2)
            if not readonly:
                with pytest.raises(LogFailedError, match=what):
                    log.producer().send("t", b"x", partition=0)
    # still refused on the next open: nothing was published shorter
    assert not os.path.exists(victim) or os.path.getsize(victim) == 0
    with pylog.open(logdir) as log:
        assert isinstance(log.partition("t", 0).failed, CorruptLogError)


@pytest.mark.parametrize("clean", [True, False], ids=["clean-close", "crash"])
def test_lost_first_segment_moves_the_start_up_loudly(logdir, clean, caplog):
    d, segs = make(logdir)
    os.unlink(os.path.join(d, segs[0]))
    if not clean:
        os.unlink(os.path.join(logdir, "clean-shutdown"))
    first = int(segs[1][:-4])

    r = verify_cli(logdir)
    assert r.returncode != 0 and f"records 0..{first - 1} are missing" in r.stdout, r.stdout

    with caplog.at_level(logging.WARNING, logger="pylog"):
        with pylog.open(logdir, readonly=True) as log:
            assert log.describe_topic("t").partition_info[0].start_offset == first
            c = log.consumer(auto_offset_reset="earliest")
            c.assign([TP])
            assert drain(c) == list(range(first, N))
        with pylog.open(logdir) as log:
            info = log.describe_topic("t").partition_info[0]
            assert (info.start_offset, info.end_offset) == (first, N)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            assert drain(c) == list(range(first, N))     # never 0 records forever
            c.close()
            assert log.producer().send("t", b"after", partition=0).offset == N
    assert f"records 0 to {first - 1} are gone" in caplog.text
    assert segs[0] in caplog.text
    assert verify_cli(logdir).returncode == 0      # the start was recorded (P-5)


def test_first_segment_lost_while_open_is_not_an_endless_reset(logdir):
    """The reader's own check (P-12): files gone under an open log, with
    the layout unchanged, raise instead of OffsetOutOfRange, which sent an
    "earliest" consumer back to the same offset forever."""
    d, segs = make(logdir)
    with pylog.open(logdir) as log:
        log.producer().send("t", b"open", partition=0)
        os.unlink(os.path.join(d, segs[0]))
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        with pytest.raises(CorruptLogError, match=f"offsets 0 to {int(segs[1][:-4]) - 1}"):
            drain(c)
        c.close()


def test_active_segment_lost_under_a_reader_is_not_a_short_read(logdir):
    d, segs = make(logdir)
    with pylog.open(logdir, readonly=True) as log:
        c = log.consumer(auto_offset_reset="earliest")
        c.assign([TP])
        os.unlink(os.path.join(d, segs[-1]))
        with pytest.raises(CorruptLogError, match="active segment file is missing"):
            drain(c)


@pytest.mark.parametrize("start", ["segment-base", "inside-a-segment"])
def test_a_moved_start_is_no_damage_and_keeps_the_fast_path(logdir, start, caplog):
    """P-12's check of a clean state (P-9) accepts a log start that
    retention or delete_records moved, at a segment's base or inside one:
    no warning, no recovery (the active segment keeps its preallocated
    tail, S-3), every record from the start readable."""
    d, segs = make(logdir)
    to = int(segs[1][:-4]) + (0 if start == "segment-base" else 7)
    with pylog.open(logdir) as log:
        log.delete_records({TP: to})
    active = os.path.join(d, segs[-1])
    size = os.path.getsize(active)
    with caplog.at_level(logging.WARNING, logger="pylog"):
        with pylog.open(logdir) as log:
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            assert drain(c) == list(range(to, N))
            c.close()
            assert os.path.getsize(active) == size       # recovery skipped
    assert "P-12" not in caplog.text
    assert verify_cli(logdir).returncode == 0


WRITER = """
import sys, time, pylog
log = pylog.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
if sys.argv[2] == "delete_records":
    log.delete_records({pylog.TopicPartition("t", 0): int(sys.argv[3])})
else:     # every sealed segment is an hour past retention_ms
    log.partition("t", 0).enforce_retention(int(time.time() * 1000) + 7200_000)
print("done", flush=True)
sys.stdin.readline()
log.close()
"""


@pytest.mark.parametrize("how", ["delete_records", "retention"])
def test_readonly_view_sees_a_writers_new_start_not_p12(logdir, how):
    """A read-only opener's view is a copy in memory for up to a second
    (partition._LIVE_CHECK_S); a writer's delete_records or retention
    meanwhile moved the start and deleted the files below it, bumping the
    layout generation. The reader must see that generation in the state
    file, and resume at the new start, not call the log corrupt (P-12)."""
    d, segs = make(logdir, retention_ms=3600_000)
    cut = int(segs[2][:-4]) + 5
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with pylog.open(logdir, readonly=True) as ro:
        w = subprocess.Popen([sys.executable, "-c", WRITER, logdir, how, str(cut)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)
        try:
            assert w.stdout.readline().strip() == "ready"
            w.stdin.write("go\n")
            w.stdin.flush()
            assert w.stdout.readline().strip() == "done"
            assert not os.path.exists(os.path.join(d, segs[0]))
            c = ro.consumer(auto_offset_reset="earliest")
            c.assign([TP])
            got = drain(c)
            assert ro.partition("t", 0).failed is None
        finally:
            w.stdin.write("bye\n")
            w.stdin.flush()
            assert w.wait(timeout=60) == 0
    assert got and got[-1] == N - 1
    assert got[0] == (cut if how == "delete_records" else int(segs[-1][:-4]))
    assert got == list(range(got[0], N))
