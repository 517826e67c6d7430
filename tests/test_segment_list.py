"""The in-memory segment list that rolls and retention decide from
(FORMAT.rst P-8): it follows this process's own rolls and retention
without listing the directory, notices another process's by the layout
generation, and never takes a stray file for a segment."""

import os

import childproc

import pylog
from pylog.partition import Cursor
from pylog.segment import list_segment_bases, segment_name
from pylog.segmentlist import SegmentList

VALUE = b"v" * 40_000          # one record per 64 KiB segment: every send rolls
SEG = dict(segment_bytes=65536, max_message_bytes=60000)


def _part(log):
    return log.partition("t", 0)


def _on_disk(part):
    st = part.state()
    return [b for b in list_segment_bases(part.dir) if b <= st.active_base]


def _sizes(part):
    st = part.state()
    return [st.active_position if b == st.active_base else
            os.path.getsize(os.path.join(part.dir, segment_name(b, ".log")))
            for b in _on_disk(part)]


def _retention_done(part, budget):
    """The last roll's retention pass (the new active segment still empty)
    deleted what it should by bytes (P-5): the sealed segments kept reach
    the budget, and without the oldest of them would not."""
    sealed = _sizes(part)[:-1]
    return len(sealed) >= 1 and sum(sealed) - sealed[0] < budget <= sum(sealed)


def test_own_rolls_and_retention_keep_the_list_without_listing(tmp_path):
    """A segment-named file put in the directory behind the writer's back
    stays out of the list while the generation is the list's own: proof
    that rolls and retention passes do not list the directory."""
    with pylog.open(str(tmp_path), sync="never") as log:
        log.create_topic("t", retention_bytes=5 * 60_000, retention_ms=-1, **SEG)
        prod = log.producer()
        small = b"v" * 20_000                    # three records a segment
        for _ in range(24):
            prod.send("t", small)
        part = _part(log)
        assert part.segments.bases(part.state()) == _on_disk(part)
        assert _on_disk(part)[0] > 0 and _retention_done(part, 5 * 60_000)
        planted_base = _on_disk(part)[-1] - 1    # inside the last sealed one
        planted = os.path.join(part.dir, segment_name(planted_base, ".log"))
        open(planted, "wb").close()
        for _ in range(12):
            prod.send("t", small)
        listed = part.segments.bases(part.state())
        assert planted_base in _on_disk(part) and planted_base not in listed
        assert listed == [b for b in _on_disk(part) if b != planted_base]


def test_rolls_and_retention_of_another_process_are_seen(tmp_path):
    """Another process rolls and deletes segments while this one has the
    partition open; this process's next roll and retention pass use the
    layout as it is now (byte retention keeps exactly its budget)."""
    root = str(tmp_path)
    with pylog.open(root, sync="never") as log:
        log.create_topic("t", retention_bytes=4 * 40_080, retention_ms=-1, **SEG)
        prod = log.producer()
        for _ in range(3):
            prod.send("t", VALUE)
        part = _part(log)
        before = list(part.segments.bases(part.state()))
        child = childproc.start(
            "import sys, pylog\n"
            "log = pylog.open(sys.argv[1], sync='never')\n"
            "p = log.producer()\n"
            "for _ in range(9):\n"
            "    p.send('t', b'v' * 40_000)\n"
            "log.close()\n"
            "print('done', flush=True)\n", root)
        assert childproc.readline(child) == b"done\n"
        child.wait()
        # the other process rolled 9 times and retention deleted segments
        assert _on_disk(part)[0] > before[-1]
        prod.send("t", VALUE)                    # our roll + retention pass
        assert part.segments.bases(part.state()) == _on_disk(part)
        assert _retention_done(part, 4 * 40_080)
        recs = part.fetch(Cursor(_on_disk(part)[0]), 10**7)
        assert [r[0] for r in recs] == list(range(_on_disk(part)[0], 13))


def test_stray_files_are_not_segments(tmp_path):
    """Files that are not segments (S-1 names only) are neither listed nor
    deleted by retention, however many there are."""
    with pylog.open(str(tmp_path), sync="never") as log:
        log.create_topic("t", retention_bytes=2 * 40_080, retention_ms=-1, **SEG)
        prod = log.producer()
        prod.send("t", VALUE)
        part = _part(log)
        strays = ["notes.txt", "1.log", "abc.log", segment_name(5, ".log") + ".tmp",
                  "00000000000000000007.log.bak"] + [f"x{i}" for i in range(200)]
        for name in strays:
            open(os.path.join(part.dir, name), "wb").close()
        part.segments.invalidate()               # the next pass lists
        for _ in range(6):
            prod.send("t", VALUE)
        assert part.segments.bases(part.state()) == _on_disk(part)
        assert _on_disk(part)[0] > 0 and _retention_done(part, 2 * 40_080)
        assert all(os.path.exists(os.path.join(part.dir, n)) for n in strays)


def test_time_retention_uses_the_rolls_max_timestamp(tmp_path):
    """The final max timestamp a roll wrote (T-3) decides time retention,
    also for segments this process learned of by listing."""
    day = 86_400_000
    old = 1_600_000_000_000
    with pylog.open(str(tmp_path), sync="never") as log:
        log.create_topic("t", retention_ms=day, **SEG)
        prod = log.producer()
        for i in range(3):
            prod.send("t", VALUE, timestamp_ms=old + i)
        part = _part(log)
        part.segments.invalidate()               # learn them by listing
        for _ in range(2):
            prod.send("t", VALUE)                # now: the old ones expire
        assert part.state().log_start_offset == 3
        assert _on_disk(part)[0] == 3


def test_segment_list_of_a_directory(tmp_path):
    """SegmentList on its own: lists once per generation, follows rolls and
    drops made through it, sizes from stat when it listed."""
    d = str(tmp_path)
    for base, size in ((0, 10), (5, 20), (9, 0)):
        with open(os.path.join(d, segment_name(base, ".log")), "wb") as f:
            f.write(b"x" * size)

    class St:
        def __init__(self, gen, active):
            self.generation, self.active_base = gen, active

    sl = SegmentList(d)
    assert sl.bases(St(1, 9)) == [0, 5, 9]
    assert sl.sealed_bytes() == 30 and sl.size(5) == 20
    sl.rolled(1, 9, 7, 123, 12)
    assert sl.bases(St(2, 12)) == [0, 5, 9, 12]      # not listed: no 12 on disk
    assert sl.sealed_bytes() == 37 and sl.max_timestamp(9) == 123
    sl.dropped(2, 2)
    assert sl.bases(St(3, 12)) == [9, 12] and sl.sealed_bytes() == 7
    sl.rolled(7, 12, 1, -1, 20)                      # not from its generation
    assert sl.bases(St(8, 9)) == [0, 5, 9]           # listed again
