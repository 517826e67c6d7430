"""Recovery of one segment file on its own (FORMAT.rst P-4, S-3): a torn
tail is cut and Segment.recover() says how many bytes went; damage followed
by a valid batch is mid-log corruption and raises. Recovery and ``pylog
verify`` ask the same question, "is there a valid batch after the damage",
of the same function (segment.first_valid_batch_after), so they agree."""

import os
import struct

import pytest

from pylog import CorruptLogError, batch, verify
from pylog.segment import Segment, first_valid_batch_after, segment_path

# partitionLeaderEpoch (B-1): outside the CRC, 0 in batches pylog writes
LEADER_EPOCH = struct.Struct(">i")
LEADER_EPOCH_AT = 12
BATCH_LENGTH_AT = 8


def batches(n=3, per=3):
    """``n`` encoded batches of ``per`` records each, offsets from 0."""
    out = []
    for i in range(n):
        recs = [(1_700_000_000_000 + i * per + j, b"k%d" % j, b"v" * 200, ())
                for j in range(per)]
        out.append(batch.encode(recs, base_offset=i * per))
    return out


def write_segment(directory, data: bytes) -> str:
    path = segment_path(str(directory), 0)
    with open(path, "wb") as f:
        f.write(data)
    return path


def recover(directory, **kw) -> int:
    seg = Segment(str(directory), 0, writable=True)
    try:
        return seg.recover(**kw)
    finally:
        seg.close()


def test_torn_tail_is_cut_and_counted(tmp_path):
    """P-4: a crash in the middle of a write leaves a prefix of one batch
    (here followed by the preallocated zeros, S-3): it is cut, and recover()
    returns the bytes it cut."""
    b0, b1, b2 = batches()
    good = b0 + b1
    path = write_segment(tmp_path, good + b2[:len(b2) // 2] + bytes(4096))
    size = os.path.getsize(path)
    assert recover(tmp_path) == size - len(good)
    assert os.path.getsize(path) == len(good)
    with open(path, "rb") as f:
        assert f.read() == good
    assert os.path.exists(segment_path(str(tmp_path), 0, ".index"))
    assert recover(tmp_path) == 0               # idempotent


def test_truncated_file_is_a_torn_tail(tmp_path):
    """A file that ends inside a batch is cut back to the last whole one.
    A tail of zeros (the high bytes of a baseOffset) is the end of data
    (S-3): trimmed, not counted."""
    b0, b1, b2 = batches()
    assert b2[:4] == bytes(4)
    for cut_at in (4, 8, 11, 12, 60, 61, len(b2) - 1):
        path = write_segment(tmp_path, b0 + b1 + b2[:cut_at])
        assert recover(tmp_path) == (cut_at if cut_at > 4 else 0)
        assert os.path.getsize(path) == len(b0) + len(b1)


def test_preallocated_zeros_are_trimmed_not_counted(tmp_path):
    """S-3: the zero-filled tail past the last batch is the end of data,
    not damage: trimmed, and 0 bytes of torn tail reported."""
    b0, b1, _ = batches()
    path = write_segment(tmp_path, b0 + b1 + bytes(8192))
    assert recover(tmp_path) == 0
    assert os.path.getsize(path) == len(b0) + len(b1)


def test_damage_in_the_middle_raises_and_changes_nothing(tmp_path):
    """G4: a bad batch followed by a valid one is corruption, never a torn
    tail: CorruptLogError names the file and position, and the file is
    left as it was."""
    b0, b1, b2 = batches()
    bad = bytearray(b1)
    bad[-5] ^= 0xFF                             # a value byte: CRC fails
    data = b0 + bytes(bad) + b2
    path = write_segment(tmp_path, data)
    with pytest.raises(CorruptLogError) as info:
        recover(tmp_path)
    assert info.value.path == path and info.value.position == len(b0)
    with open(path, "rb") as f:
        assert f.read() == data


def test_zeroed_length_with_valid_batches_after_raises(tmp_path):
    """A zero batchLength is the end of data (S-3) only when nothing valid
    follows: damage that zeroed a length must not hide the batches after."""
    b0, b1, b2 = batches()
    bad = bytearray(b1)
    bad[BATCH_LENGTH_AT:BATCH_LENGTH_AT + 4] = bytes(4)
    path = write_segment(tmp_path, b0 + bytes(bad) + b2)
    with pytest.raises(CorruptLogError, match="batchLength is 0"):
        recover(tmp_path)
    assert os.path.getsize(path) == len(b0) + len(b1) + len(b2)


def test_sealed_segment_damage_raises_even_at_the_end(tmp_path):
    """A sealed segment was fdatasync'd at its roll (S-4): a bad tail there
    is corruption, not a torn write."""
    b0, b1, b2 = batches()
    write_segment(tmp_path, b0 + b1 + b2[:20])
    with pytest.raises(CorruptLogError):
        recover(tmp_path, sealed=True)


def _damaged_length_then_epoch(b0, b1, b2, epoch):
    """b0, then b1 with its batchLength damaged (the native scan cannot
    step over it), then b2 with partitionLeaderEpoch ``epoch`` (outside the
    CRC: still a valid batch, as Kafka writes them)."""
    bad = bytearray(b1)
    bad[BATCH_LENGTH_AT:BATCH_LENGTH_AT + 4] = struct.pack(">i", 0x7FFFFF00)
    b2 = bytearray(b2)
    LEADER_EPOCH.pack_into(b2, LEADER_EPOCH_AT, epoch)
    return b0 + bytes(bad) + bytes(b2)


def test_recovery_and_verify_agree_on_a_kafka_leader_epoch(tmp_path):
    """A valid batch after the damage whose partitionLeaderEpoch is not 0
    (as Kafka writes it): recovery once looked for epoch 0 and magic 2 and
    took it for a torn tail, cutting a valid batch, while verify (magic
    only) resumed at it. Both now use first_valid_batch_after."""
    b0, b1, b2 = batches()
    data = _damaged_length_then_epoch(b0, b1, b2, epoch=7)
    after = first_valid_batch_after(data, len(b0), len(data), min_offset=3)
    assert after == len(b0) + len(b1)
    path = write_segment(tmp_path, data)
    with pytest.raises(CorruptLogError) as info:
        recover(tmp_path)
    assert info.value.position == len(b0)
    assert os.path.getsize(path) == len(data)       # nothing cut
    problems = verify.dump_segment(path)["problems"]
    assert any(p.position == len(b0) and f"valid batch at position {after}"
               in p.message for p in problems), problems


def test_verify_and_recovery_share_the_search(tmp_path, monkeypatch):
    """verify calls the segment module's function itself, and a segment's
    recovery asks it whether a torn tail is one."""
    from pylog import segment
    assert verify.first_valid_batch_after is segment.first_valid_batch_after
    calls = []

    def counting(*args, **kw):
        calls.append(args[1:3])
        return first_valid_batch_after(*args, **kw)
    monkeypatch.setattr(segment, "first_valid_batch_after", counting)
    b0, b1, b2 = batches()
    write_segment(tmp_path, b0 + b1 + b2[:50])
    assert recover(tmp_path) == 50
    assert calls and calls[0][0] == len(b0) + len(b1)


@pytest.mark.parametrize("case", ["torn", "torn_zeros", "mid_crc", "mid_length",
                                  "mid_length_epoch", "mid_zero_batch", "stale_offsets"])
def test_recovery_and_verify_agree_on_damaged_files(tmp_path, case):
    """On each damaged file: when recovery cuts a torn tail, verify never
    claims a valid batch follows the damage; when recovery raises (mid-log
    corruption), verify walks on to the valid batch after the damage."""
    b0, b1, b2 = batches()
    good = b0 + b1
    if case == "torn":
        data = good + b2[:len(b2) - 7]
    elif case == "torn_zeros":
        data = good + b2[:40] + bytes(1000)
    elif case == "mid_crc":
        bad = bytearray(b1)
        bad[-1] ^= 1
        data = b0 + bytes(bad) + b2
    elif case == "mid_length":
        data = _damaged_length_then_epoch(b0, b1, b2, epoch=0)
    elif case == "mid_length_epoch":
        data = _damaged_length_then_epoch(b0, b1, b2, epoch=3)
    elif case == "mid_zero_batch":
        # a whole batch zeroed: the next one's first bytes (the high bytes
        # of its baseOffset) are zeros too, and verify must still find it
        data = b0 + bytes(len(b1)) + b2
    else:
        # after a torn b2, an older batch (offsets 0..2) again: no data
        # past the damage (P-4: a valid batch with a higher offset)
        data = good + b2[:30] + b0
    path = write_segment(tmp_path, data)
    dump = verify.dump_segment(path)
    problems = dump["problems"]
    assert problems
    resumed = [p for p in problems if "valid batch at position" in p.message]
    past = [b for b in dump["batches"] if b["base_offset"] >= 6]     # b2's on
    try:
        cut = recover(tmp_path)
    except CorruptLogError:
        assert case.startswith("mid"), problems
        assert past, (problems, dump["batches"])       # verify walked on to b2
    else:
        assert not resumed, problems
        assert cut == len(data) - len(good)
        assert case in ("torn", "torn_zeros", "stale_offsets")
