"""Damaged files (G4): torn tails are cut back to the last whole batch;
damage anywhere else raises CorruptLogError naming the file and position;
damaged indexes are ignored and rebuilt; random bit flips never crash the
interpreter and never return wrong data as good."""

import json
import os
import random
import shutil
import subprocess
import sys

import pytest
from longscale import scaled

import pylog
from pylog import CorruptLogError, LogFailedError, _native
from pylog.partition import Cursor
from pylog.verify import verify_log

CFG = dict(segment_bytes=65536, max_message_bytes=60000, retention_ms=-1)

# A writer that appends and dies without closing (no flush, no checkpoint).
DIE = r"""
import os, sys, pylog
path, n, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = pylog.open(path, sync="never")
log.create_topic("t", segment_bytes=65536, max_message_bytes=60000,
                 retention_ms=-1, exist_ok=True)
prod = log.producer()
for i in range(n):
    if i % 4 == 0:
        prod.send_batch("t", [b"%d.%d:" % (i, j) + bytes(big) for j in range(5)], partition=0)
    else:
        prod.send("t", b"%d:" % i + b"z" * (i % 300), partition=0)
os._exit(0)
"""


def batches(path, end=None):
    """[(position, header)] of the valid batches of a segment file."""
    with open(path, "rb") as f:
        data = f.read()
    end = len(data) if end is None else end
    out, pos = [], 0
    while pos + 12 <= end and data[pos + 8:pos + 12] != b"\0\0\0\0":
        try:
            h = _native.read_batch_header(data, pos, end)
        except CorruptLogError:
            break
        if not h.crc_valid:
            break
        out.append((pos, h))
        pos += h.size
    return out


def active_segment(logdir):
    d = os.path.join(logdir, "t-0")
    return os.path.join(d, sorted(n for n in os.listdir(d) if n.endswith(".log"))[-1])


def crash_writer(logdir, env, n=200, big=100):
    subprocess.run([sys.executable, "-c", DIE, logdir, str(n), str(big)], env=env,
                   check=True)


def all_records(log):
    part = log.partition("t", 0)
    return part.fetch(Cursor(part.state().log_start_offset), 10**7)


def flip(path, pos, rng=None):
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ (1 << (rng.randrange(8) if rng else 0))]))


# -- torn tail ---------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate_header", "truncate_body", "garble",
                                    "zero_body", "length_field", "crc_field"])
def test_torn_tail_is_cut(logdir, child_env, damage):
    rng = random.Random(damage)
    crash_writer(logdir, child_env)
    path = active_segment(logdir)
    bs = batches(path)
    assert len(bs) >= 3
    last_pos, last = bs[-1]
    end = last_pos + last.size
    if damage == "truncate_header":
        os.truncate(path, last_pos + rng.randrange(1, 61))
    elif damage == "truncate_body":
        os.truncate(path, last_pos + rng.randrange(61, last.size))
    elif damage == "garble":
        with open(path, "r+b") as f:
            f.seek(last_pos + 21)
            f.write(rng.randbytes(last.size - 21))
    elif damage == "zero_body":     # a page that never reached the disk
        with open(path, "r+b") as f:
            f.seek(last_pos + 40)
            f.write(bytes(last.size - 40))
    elif damage == "length_field":
        flip(path, last_pos + 8 + rng.randrange(2, 4), rng)
    else:
        flip(path, last_pos + 17 + rng.randrange(4), rng)
    with pylog.open(logdir, sync="never") as log:
        part = log.partition("t", 0)
        assert part.failed is None
        assert part.state().next_offset == last.base_offset
        recs = all_records(log)
        assert [r[0] for r in recs] == list(range(last.base_offset))
        md = log.producer().send("t", b"after", partition=0)
        assert md.offset == last.base_offset
        assert all_records(log)[-1][3] == b"after"
    with pylog.open(logdir, sync="never") as log:   # and it stays that way
        recs = all_records(log)
        assert recs[-1][:1] == (last.base_offset,) and recs[-1][3] == b"after"
        assert [r[0] for r in recs] == list(range(last.base_offset + 1))
    assert end > 0


def test_a_read_only_open_says_it_leaves_a_torn_tail(logdir, child_env, caplog):
    """A read-only open (pylog info, top, metrics) reads up to a torn tail
    and says so without claiming to have cut it; a writer's open cuts it."""
    crash_writer(logdir, child_env)
    path = active_segment(logdir)
    last_pos, last = batches(path)[-1]
    os.truncate(path, last_pos + 30)
    with caplog.at_level("WARNING", logger="pylog"):
        with pylog.open(logdir, readonly=True) as log:
            assert log.partition("t", 0).state().next_offset == last.base_offset
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "torn tail" in said and "left as it is" in said and "cut 30" not in said
    assert os.path.getsize(path) == last_pos + 30
    caplog.clear()
    with caplog.at_level("WARNING", logger="pylog"):
        with pylog.open(logdir, sync="never"):
            pass
    assert "cut 30 bytes" in " ".join(r.getMessage() for r in caplog.records)


# -- mid-log corruption ------------------------------------------------------

def clean_log(logdir):
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", **CFG)
        prod = log.producer()
        for i in range(600):
            prod.send_batch("t", [b"%d.%d" % (i, j) + bytes(50) for j in range(3)],
                            partition=0)
        return log.partition("t", 0).dir


@pytest.mark.parametrize("where", ["sealed", "active"])
@pytest.mark.parametrize("field", ["baseOffset", "batchLength", "crc", "attributes",
                                   "records"])
def test_mid_log_flip_is_reported(logdir, where, field):
    rng = random.Random(f"{where}{field}")
    d = clean_log(logdir)
    segs = sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".log"))
    path = segs[0] if where == "sealed" else segs[-1]
    end = None
    if where == "active":
        with pylog.open(logdir) as log:
            end = log.partition("t", 0).state().active_position
    bs = batches(path, end)
    pos, h = bs[len(bs) // 2]
    at = {"baseOffset": pos + 7, "batchLength": pos + 10, "crc": pos + 18,
          "attributes": pos + 22, "records": pos + 61 + rng.randrange(h.size - 61)}[field]
    flip(path, at, rng)
    with pylog.open(logdir, sync="never") as log:
        part = log.partition("t", 0)
        # records before the damage read fine
        good = part.fetch(Cursor(0), h.base_offset)
        assert [r[0] for r in good] == list(range(h.base_offset))
        for start in (0, h.base_offset, h.base_offset + 1):
            cur = Cursor(start)
            with pytest.raises(CorruptLogError) as ei:
                while True:
                    # the records before the damage first, then the error
                    recs = part.fetch(cur, 10**6)
                    assert recs and recs[-1][0] < h.base_offset
            assert ei.value.path == path
            assert ei.value.position == pos
            assert path in str(ei.value) and str(pos) in str(ei.value)
        # past it: the right records or an error, never wrong ones
        try:
            after = part.fetch(Cursor(h.last_offset + 1), 5)
        except CorruptLogError as exc:
            assert exc.path == path
        else:
            assert [r[0] for r in after] == list(range(h.last_offset + 1,
                                                       h.last_offset + 6))


@pytest.mark.parametrize("field", ["baseOffset", "batchLength", "crc", "records",
                                   "length_to_zero"])
def test_flip_in_unflushed_tail_followed_by_valid_batches(logdir, child_env, field):
    """After a crash, damage in the tail that recovery scans is corruption when
    valid batches follow it: the partition fails, nothing is truncated."""
    rng = random.Random(field)
    crash_writer(logdir, child_env, n=120, big=20)
    path = active_segment(logdir)
    bs = batches(path)
    pos, h = bs[len(bs) // 2]
    size_before = os.path.getsize(path)
    if field == "length_to_zero":
        with open(path, "r+b") as f:
            f.seek(pos + 8)
            f.write(bytes(4))
    else:
        at = {"baseOffset": pos + 7, "batchLength": pos + 9, "crc": pos + 18,
              "records": pos + 61 + rng.randrange(h.size - 61)}[field]
        flip(path, at, rng)
    with pylog.open(logdir, sync="never") as log:
        part = log.partition("t", 0)
        assert isinstance(part.failed, CorruptLogError)
        assert part.failed.path == path and part.failed.position == pos
        with pytest.raises(LogFailedError):
            part.fetch(Cursor(0), 10)
        with pytest.raises(LogFailedError):
            log.producer().send("t", b"x", partition=0)
    assert os.path.getsize(path) == size_before      # nothing was cut


# -- damaged indexes -----------------------------------------------------------

def test_garbage_indexes_never_break_reads(logdir):
    rng = random.Random(11)
    clean_log(logdir)
    with pylog.open(logdir) as log:
        expected = all_records(log)
    d = os.path.join(logdir, "t-0")
    for trial in range(12):
        for n in os.listdir(d):
            if n.endswith((".index", ".timeindex")):
                p = os.path.join(d, n)
                kind = rng.randrange(4)
                size = os.path.getsize(p)
                with open(p, "r+b") as f:
                    if kind == 0:
                        f.write(rng.randbytes(rng.randrange(0, 3 * size + 50)))
                    elif kind == 1 and size:
                        f.seek(rng.randrange(size))
                        f.write(rng.randbytes(rng.randrange(1, 9)))
                    elif kind == 2:
                        f.truncate(rng.randrange(size + 1))
                    else:
                        f.truncate(0)
                        f.write(b"\xff" * rng.randrange(64))
        with pylog.open(logdir) as log:
            part = log.partition("t", 0)
            for off in [0, len(expected) - 1] + rng.sample(range(len(expected)), 10):
                got = part.fetch(Cursor(off), 7)
                assert got == expected[off:off + 7]
            o = part.offset_for_time(expected[900][1])
            assert o is not None and o <= 900 and expected[o][1] >= expected[900][1]
            assert all_records(log) == expected


# -- random bit flips ------------------------------------------------------------

CHECKER = r"""
import json, sys, pylog
from pylog.partition import Cursor
from pylog.verify import verify_log
path, n_expected = sys.argv[1], int(sys.argv[2])
expected = [bytes.fromhex(h) for h in json.load(open(sys.argv[3]))]
res = {"ok": 0, "errors": 0, "wrong": []}
try:
    log = pylog.open(path, sync="never")
except pylog.PylogError as exc:
    print(json.dumps({"open_error": str(exc)})); sys.exit(0)
part = log.partition("t", 0)
import random
rng = random.Random(int(sys.argv[4]))
for start in [0] + [rng.randrange(n_expected) for _ in range(8)]:
    cur = Cursor(start)
    try:
        while True:
            want = cur.offset
            recs = part.fetch(cur, 500)
            if not recs:
                break
            for r in recs:
                if r[0] != want or r[0] >= n_expected or r[3] != expected[r[0]]:
                    res["wrong"].append([start, want, r[0]])
                want += 1
                res["ok"] += 1
    except pylog.PylogError as exc:
        res["errors"] += 1
log.close()
print(json.dumps(res))
"""


def bit_flip_trials(logdir, child_env, trials, seed, tmp):
    rng = random.Random(seed)
    print(f"bit flip seed: {seed}")
    clean_log(logdir)
    with pylog.open(logdir) as log:
        expected = [r[3] for r in all_records(log)]
    exp_path = os.path.join(tmp, "expected.json")
    with open(exp_path, "w") as f:
        json.dump([v.hex() for v in expected], f)
    for t in range(trials):
        work = os.path.join(tmp, f"trial{t}")
        shutil.copytree(logdir, work)
        d = os.path.join(work, "t-0")
        files = [os.path.join(d, n) for n in os.listdir(d)
                 if n.endswith((".log", ".index", ".timeindex"))]
        for _ in range(rng.randint(1, 6)):
            p = rng.choice(files)
            size = os.path.getsize(p)
            if size:
                flip(p, rng.randrange(size), rng)
        r = subprocess.run([sys.executable, "-c", CHECKER, work, str(len(expected)),
                            exp_path, str(rng.randrange(2**32))],
                           env=child_env, capture_output=True, timeout=120)
        assert r.returncode == 0, (f"trial {t} (seed {seed}): checker died with "
                                   f"{r.returncode}: {r.stderr.decode()[-2000:]}")
        res = json.loads(r.stdout.decode().strip().splitlines()[-1])
        assert not res.get("wrong"), f"trial {t} (seed {seed}): wrong data {res}"
        shutil.rmtree(work)


def test_random_bit_flips(logdir, child_env, tmp_path):
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(2**32)))
    bit_flip_trials(logdir, child_env, 12, seed, str(tmp_path))


@pytest.mark.long
def test_random_bit_flips_long(logdir, child_env, tmp_path):
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(2**32)))
    bit_flip_trials(logdir, child_env, scaled(300), seed, str(tmp_path))


def test_zero_record_batch_is_reported_not_skipped(logdir):
    """B-5: a CRC-valid batch that holds no records but claims offsets is
    damage: verify reports it, a consumer raises CorruptLogError at it and
    never silently skips the offsets it claims."""
    d = clean_log(logdir)
    path = sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".log"))[0]
    bs = batches(path)
    pos, h = bs[len(bs) // 2]
    with open(path, "rb") as f:
        data = f.read()
    empty = bytearray(data[pos:pos + 61])
    empty[8:12] = (49).to_bytes(4, "big")          # batchLength: header only
    empty[57:61] = (0).to_bytes(4, "big")          # recordsCount 0, lastOffsetDelta kept
    empty[17:21] = _native.crc32c(bytes(empty[21:])).to_bytes(4, "big")
    assert _native.read_batch_header(bytes(empty), 0, 61).crc_valid
    with open(path, "wb") as f:
        f.write(data[:pos] + bytes(empty) + data[pos + h.size:])
    for ext in (".index", ".timeindex"):           # derived; rebuilt from the log
        os.unlink(path[:-4] + ext)
    problems = verify_log(logdir)
    assert any("B-5" in str(p) and str(pos) in str(p) for p in problems), problems
    with pylog.open(logdir, sync="never") as log:
        c = log.consumer("t", auto_offset_reset="earliest")
        got = []
        with pytest.raises(CorruptLogError) as ei:
            while batch := c.poll(timeout=0.2, max_records=500):
                got.extend(r.offset for r in batch)
        assert "B-5" in str(ei.value)
        assert got == list(range(h.base_offset)), "records before the damage, in order"
        c.close()


@pytest.mark.parametrize("damage", ["emptied", "deleted"])
def test_a_lost_middle_segment_is_reported_not_skipped(logdir, damage):
    """G4: a sealed segment in the middle of a partition emptied or deleted
    while the log was closed: a consumer gets the records before it, then
    CorruptLogError naming the missing offsets; it never goes on to the
    next segment's records (it did, and committed past the gap)."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", segment_bytes=65536, retention_ms=-1)
        p = log.producer()
        for _ in range(12):
            p.send_batch("t", [b"v" * 100] * 100, partition=0)
    d = os.path.join(logdir, "t-0")
    segs = sorted(n for n in os.listdir(d) if n.endswith(".log"))
    assert len(segs) >= 3
    victim = os.path.join(d, segs[1])
    lost_from, lost_to = int(segs[1][:-4]), int(segs[2][:-4]) - 1
    if damage == "emptied":
        os.truncate(victim, 0)
    else:
        os.unlink(victim)
    with pylog.open(logdir, sync="never") as log:
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        got = []
        with pytest.raises(CorruptLogError) as ei:
            while batch := c.poll(timeout=0.2, max_records=500):
                got.extend(r.offset for r in batch)
        assert f"offsets {lost_from} to {lost_to}" in str(ei.value)
        assert got == list(range(lost_from))
        with pytest.raises(CorruptLogError):       # and again: not past it
            c.poll(timeout=0.2)
        c.commit()
        assert c.committed(pylog.TopicPartition("t", 0)) == lost_from
        c.close()


@pytest.mark.parametrize("high", [b"\xbe\xef", b"\x7f\x00"], ids=["negative", "huge"])
def test_damage_across_two_batches_names_both(logdir, high):
    """A torn sector across two batches: the end of one (its CRC fails)
    and the high bytes of the next one's baseOffset (outside the CRC).
    verify named the first, then blamed the sound batch after the second
    ("baseOffset 69 is not the expected next offset -4688528687069396923")
    and never the second."""
    d = clean_log(logdir)
    path = sorted(os.path.join(d, n) for n in os.listdir(d) if n.endswith(".log"))[0]
    bs = batches(path)
    (pos1, _h1), (pos2, _h2) = bs[10], bs[11]
    with open(path, "r+b") as f:
        f.seek(pos2 - 2)
        f.write(b"\xde\xad" + high)        # the last 2 bytes of one, 2 of the next
    problems = [(p.file, p.position) for p in verify_log(logdir)]
    assert problems == [(path, pos1), (path, pos2)]
