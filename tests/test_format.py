"""FORMAT.rst is the specification of the bytes pylog writes; each of its
rules has an ID (``B-4``) that the code enforcing it and the tests checking
it cite. This file keeps that true:

- every rule ID defined in FORMAT.rst is cited by code (``pylog/``,
  ``csrc/``) and by a test (``tests/``), or is listed below with a reason;
- every ID cited anywhere is defined (no citation of a rule that does not
  exist);
- a list entry whose rule has since been cited fails, so lists only shrink.

The second half checks, on a real log, the format rules no other test
reads the bytes for (file names and layout, segment contents, index
entries, batch header fields, the LMDB keyspace).
"""

import fcntl
import json
import os
import re
import struct

import lmdb
import pytest

import pylog
from pylog.errors import CorruptLogError, InvalidArgument
from pylog.partition import Cursor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMAT = os.path.join(ROOT, "FORMAT.rst")

# A rule is defined by a line holding only its ID (a definition-list term).
RULE_DEF = re.compile(r"^([A-Z]-[0-9]+)[ \t]*$", re.M)
# A citation: the ID not inside a longer word or number ("B-1" is not "B-10").
CITE = re.compile(r"(?<![A-Za-z0-9_-])([A-Z]-[0-9]+)(?![0-9])")

CODE_DIRS = ("pylog", "csrc")
CODE_EXTS = (".py", ".c", ".h")
TEST_DIRS = ("tests",)
TEST_EXTS = (".py", ".c")

# Rules enforced by code that does not cite them yet: rule -> where it is
# implemented. The files belong to the storage rewrite of issue 14; the
# citation comment goes in at that place when it lands.
MISSING_CODE_CITATION = {
}

# Rules no test cites yet, with the reason.
MISSING_TEST_CITATION = {
}

# Rule IDs cited that FORMAT.rst does not define (none may be).
UNDEFINED_OK = {}


def rule_ids():
    with open(FORMAT, encoding="utf-8") as f:
        ids = RULE_DEF.findall(f.read())
    assert len(ids) == len(set(ids)), "a rule ID is defined twice"
    return ids


def citations(dirs, exts, skip=()):
    """rule ID -> set of files (relative to the repo) citing it."""
    out = {}
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, top)):
            dirnames[:] = [d for d in dirnames
                           if not d.startswith(".") and d not in ("__pycache__", "build")]
            for name in filenames:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, ROOT)
                if not name.endswith(exts) or rel in skip:
                    continue
                with open(path, encoding="utf-8", errors="replace") as f:
                    for m in CITE.finditer(f.read()):
                        out.setdefault(m.group(1), set()).add(rel)
    return out


THIS = os.path.relpath(os.path.abspath(__file__), ROOT)
# This file's own citations count from here on (the tests of the bytes),
# not in the lists above.
OWN_TESTS_MARK = "# -- the bytes of a real log --"


def own_test_citations():
    with open(os.path.join(ROOT, THIS), encoding="utf-8") as f:
        text = f.read()
    return set(CITE.findall(text[text.rindex(OWN_TESTS_MARK):]))


def test_rule_ids_parse():
    ids = rule_ids()
    assert len(ids) >= 40
    for family in "LPSITBRMCQX":
        assert f"{family}-1" in ids, f"no rule {family}-1"


def test_every_rule_is_cited_by_code():
    ids = rule_ids()
    code = citations(CODE_DIRS, CODE_EXTS)
    missing = [i for i in ids if i not in code and i not in MISSING_CODE_CITATION]
    assert not missing, f"rules no code in {CODE_DIRS} cites: {missing}"
    stale = [i for i in MISSING_CODE_CITATION if i in code]
    assert not stale, f"cited by code now, drop from MISSING_CODE_CITATION: {stale}"


def test_every_rule_is_cited_by_a_test():
    ids = rule_ids()
    tests = citations(TEST_DIRS, TEST_EXTS, skip={THIS})
    for rule in own_test_citations():
        tests.setdefault(rule, set()).add(THIS)
    missing = [i for i in ids if i not in tests and i not in MISSING_TEST_CITATION]
    assert not missing, f"rules no test cites: {missing}"
    stale = [i for i in MISSING_TEST_CITATION if i in tests]
    assert not stale, f"cited by a test now, drop from MISSING_TEST_CITATION: {stale}"


def test_lists_name_real_rules():
    ids = set(rule_ids())
    for listed in (MISSING_CODE_CITATION, MISSING_TEST_CITATION):
        assert set(listed) <= ids, set(listed) - ids


def test_every_cited_rule_is_defined():
    ids = set(rule_ids())
    cited = {}
    for dirs, exts in ((CODE_DIRS, CODE_EXTS), (TEST_DIRS, TEST_EXTS)):
        for rule, files in citations(dirs, exts, skip={THIS}).items():
            cited.setdefault(rule, set()).update(files)
    for doc in ("README.rst", "FORMAT.rst"):
        with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
            for m in CITE.finditer(f.read()):
                cited.setdefault(m.group(1), set()).add(doc)
    bad = {r: sorted(f) for r, f in cited.items() if r not in ids and r not in UNDEFINED_OK}
    assert not bad, f"rule IDs cited but not defined in FORMAT.rst: {bad}"


# -- the bytes of a real log --

SEGMENT_BYTES = 65536
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")       # the 61-byte header (B table)
assert BATCH_HEADER.size == 61


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A closed log: topic t (2 partitions) written across several segment
    rolls, a consumer group's commit; returns its path."""
    path = str(tmp_path_factory.mktemp("fmt") / "log")
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=2, segment_bytes=SEGMENT_BYTES, retention_ms=-1)
        prod = log.producer()
        for i in range(600):
            if i % 4 == 0:
                prod.send_batch("t", [b"b%d.%d" % (i, j) * 20 for j in range(5)], partition=0)
            else:
                prod.send("t", b"r%d" % i * 40, key=b"k%d" % i, partition=0,
                          timestamp_ms=1_700_000_000_000 + i)
        prod.send("t", b"one", partition=1)
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False)
        assert c.poll(timeout=5)
        c.commit()
        c.close()
    return path


def segments(pdir):
    """(base, .log path) of a partition directory, by base."""
    out = []
    for name in os.listdir(pdir):
        m = re.fullmatch(r"([0-9]{20})\.log", name)
        if m:
            out.append((int(m.group(1)), os.path.join(pdir, name)))
    return sorted(out)


def batches(data):
    """(position, header tuple) of each batch up to a zero batchLength."""
    pos, out = 0, []
    while pos + 12 <= len(data):
        length = struct.unpack_from(">i", data, pos + 8)[0]
        if length == 0:
            break
        assert length >= 49, f"B-2: batchLength {length} at {pos}"
        assert pos + 12 + length <= len(data), f"B-2: batch at {pos} passes the end"
        out.append((pos, BATCH_HEADER.unpack_from(data, pos)))
        pos += 12 + length
    return pos, out


def test_log_directory_layout(written):
    # L-1: meta/, pylog.lock, meta.lock, doorbell, <topic>-<partition>/
    names = set(os.listdir(written))
    assert {"meta", "pylog.lock", "meta.lock", "doorbell", "t-0", "t-1"} <= names
    # L-3: 512 slots of 8 bytes
    assert os.path.getsize(os.path.join(written, "doorbell")) >= 512 * 8
    # P-1: segments, partition.state and topic.id
    for d in ("t-0", "t-1"):
        files = os.listdir(os.path.join(written, d))
        assert {"partition.state", "topic.id"} <= set(files)
        for f in files:
            assert f in ("partition.state", "topic.id") or \
                re.fullmatch(r"[0-9]{20}\.(log|index|timeindex)", f), f


def test_segments_are_contiguous_batches(written):
    pdir = os.path.join(written, "t-0")
    segs = segments(pdir)
    assert len(segs) >= 3, "the fixture should have rolled"
    expected = 0
    for k, (base, path) in enumerate(segs):
        # S-1: the name is the offset of the segment's first record
        assert os.path.basename(path) == f"{base:020d}.log"
        assert base == expected
        with open(path, "rb") as f:
            data = f.read()
        end, bs = batches(data)
        for pos, h in bs:
            (base_off, length, epoch, magic, crc, attrs, last_delta, base_ts, max_ts,
             pid, pepoch, bseq, count) = h
            # S-2: each batch starts one past the previous batch's last offset
            assert base_off == expected, f"S-2 at {path}:{pos}"
            assert magic == 2                                   # B-3
            # B-1: what pylog writes in the header
            assert (pid, pepoch, bseq, epoch) == (-1, -1, -1, 0)
            assert attrs & 0b1000 == 0                          # create time
            assert count >= 1 and last_delta == count - 1       # B-5, B-1
            assert base_ts <= max_ts
            expected = base_off + last_delta + 1
        if k < len(segs) - 1:
            # S-4: a sealed segment is truncated to its last batch
            assert end == len(data), f"S-4: {path} is {len(data)} bytes, data ends at {end}"
        else:
            # S-3: the active segment is zero-filled past its committed end
            assert not any(data[end:]), f"S-3: bytes after the end of {path}"


def test_index_entries(written):
    pdir = os.path.join(written, "t-0")
    for base, path in segments(pdir):
        size = os.path.getsize(path)
        stem = path[:-len(".log")]
        with open(stem + ".index", "rb") as f:
            idx = f.read()
        with open(stem + ".timeindex", "rb") as f:
            tidx = f.read()
        # I-1: 8-byte entries, both fields strictly increasing, positions inside
        assert len(idx) % 8 == 0
        entries = [struct.unpack_from(">iI", idx, i) for i in range(0, len(idx), 8)]
        for (r0, p0), (r1, p1) in zip(entries, entries[1:]):
            assert r1 > r0 and p1 > p0, f"I-1 in {stem}.index"
        assert all(p < size for _, p in entries)
        # T-1: 12-byte entries (int64 timestamp, int32 relative offset);
        # T-2: neither decreases
        assert len(tidx) % 12 == 0
        tes = [struct.unpack_from(">qi", tidx, i) for i in range(0, len(tidx), 12)]
        for (t0, o0), (t1, o1) in zip(tes, tes[1:]):
            assert t1 >= t0 and o1 >= o0, f"T-2 in {stem}.timeindex"


def test_lmdb_keyspace(written):
    env = lmdb.open(os.path.join(written, "meta"), readonly=True, lock=False, max_dbs=8)
    try:
        with env.begin() as txn:
            db = {n: env.open_db(n, txn=txn, create=False)
                  for n in (b"info", b"topics", b"partitions", b"offsets", b"groups")}
            assert txn.get(b"format", db=db[b"info"]) == b"2"                   # M-1
            topic = json.loads(txn.get(b"t", db=db[b"topics"]))                 # M-2
            assert re.fullmatch(r"[0-9a-f]{32}", topic["id"])
            assert topic["partitions"] == 2
            assert topic["config"]["segment_bytes"] == SEGMENT_BYTES
            for p in (0, 1):                                                     # M-5
                rec = txn.get(b"t\0" + struct.pack(">I", p), db=db[b"partitions"])
                start, ck_base, ck_pos, ck_next = struct.unpack(">qqqq", rec)
                assert start == 0 and ck_base >= -1 and ck_pos >= 0 and ck_next >= 0
            rec = txn.get(b"g\0t\0" + struct.pack(">I", 0), db=db[b"offsets"])  # M-6
            committed, when = struct.unpack(">qq", rec)
            assert committed > 0 and when > 0
            group = json.loads(txn.get(b"g", db=db[b"groups"]))                # M-7
            assert {"generation", "strategy", "members"} <= set(group)
            assert group["members"] == {}            # the only member left
            for key in ("assignment", "owners", "partition_counts"):
                assert isinstance(group.get(key, {}), dict)
    finally:
        env.close()
    # L-4: topic.id names the incarnation (M-2)
    with open(os.path.join(written, "t-0", "topic.id")) as f:
        assert f.read() == topic["id"] + "\n"


def test_partitions_are_only_added(logdir):
    # M-4: partitions run 0..n-1 and only grow
    with pylog.open(logdir) as log:
        log.create_topic("t", partitions=2)
        with pytest.raises(InvalidArgument):
            log.create_partitions("t", 1)
        log.create_partitions("t", 3)
        assert log.partitions_for("t", max_age_s=0) == 3
        assert sorted(d for d in os.listdir(logdir) if d.startswith("t-")) == \
            ["t-0", "t-1", "t-2"]


def test_short_data_mdb_is_refused(logdir):
    # M-9: a data.mdb shorter than its meta page says is refused before
    # LMDB maps it
    with pylog.open(logdir) as log:
        for i in range(20):
            log.create_topic(f"t{i}")
    data = os.path.join(logdir, "meta", "data.mdb")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(3 * 4096)
    assert os.path.getsize(data) < size
    with pytest.raises(CorruptLogError, match="meta page needs"):
        pylog.open(logdir)


def test_unknown_format_is_refused(logdir):
    # M-1: another format value is refused at open
    with pylog.open(logdir):
        pass
    env = lmdb.open(os.path.join(logdir, "meta"), max_dbs=8)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"format", b"3", db=env.open_db(b"info", txn=txn))
    finally:
        env.close()
    with pytest.raises(CorruptLogError, match="metadata format"):
        pylog.open(logdir)
    # a read-only open too, as do `pylog verify` and `pylog info`: a newer
    # pylog's metadata may mean something else
    with pytest.raises(CorruptLogError, match="metadata format '3' is not one"):
        pylog.open(logdir, readonly=True)
    from pylog.verify import verify_log
    problems = verify_log(logdir)
    assert any("metadata format '3'" in p.message for p in problems), problems


def test_format_1_is_upgraded(logdir):
    # M-1: a log of format 1 (no commit table) opens and becomes format 2
    with pylog.open(logdir):
        pass
    env = lmdb.open(os.path.join(logdir, "meta"), max_dbs=8)
    try:
        with env.begin(write=True) as txn:
            txn.put(b"format", b"1", db=env.open_db(b"info", txn=txn))
    finally:
        env.close()
    with pylog.open(logdir):
        pass
    env = lmdb.open(os.path.join(logdir, "meta"), readonly=True, max_dbs=8)
    try:
        with env.begin() as txn:
            assert txn.get(b"format", db=env.open_db(b"info", txn=txn, create=False)) == b"2"
    finally:
        env.close()


def _crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), bitwise: independent of pylog's (B-4)."""
    table = _crc32c.table
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc_table():
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


_crc32c.table = _crc_table()
assert _crc32c(b"123456789") == 0xE3069283


def zstd_bomb_batch(base_offset: int, expand_to: int) -> bytes:
    """A CRC-valid batch of one record (codec 4) whose zstd frame expands
    to ``expand_to`` bytes of zeros."""
    import zstandard
    c = zstandard.ZstdCompressor(level=3).compressobj()
    chunk = bytes(1 << 20)
    frame = b"".join([c.compress(chunk) for _ in range(expand_to >> 20)] + [c.flush()])
    body = struct.pack(">hiqqqhii", 4, 0, 1_700_000_000_000, 1_700_000_000_000,
                       -1, -1, -1, 1) + frame
    crc = _crc32c(body)
    return struct.pack(">qiib", base_offset, 9 + len(body), 0, 2) + \
        struct.pack(">I", crc) + body


def test_zstd_frame_expanding_past_256_mib_is_refused(logdir):
    # B-6: a frame that expands beyond 256 MiB is refused as corrupt
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", segment_bytes=1 << 20, retention_ms=-1)
        log.producer().send("t", b"first", partition=0)
    seg = os.path.join(logdir, "t-0", f"{0:020d}.log")
    with open(seg, "r+b") as f:
        end, _ = batches(f.read())
        f.seek(end)
        f.write(zstd_bomb_batch(1, (256 << 20) + (1 << 20)))
    # as if appended by a writer that crashed: no clean close vouches (P-9)
    os.unlink(os.path.join(logdir, "clean-shutdown"))
    with pylog.open(logdir, sync="never") as log:          # recovery keeps it
        part = log.partition("t", 0)
        assert part.failed is None
        assert [r[3] for r in part.fetch(Cursor(0), 1)] == [b"first"]
        with pytest.raises(CorruptLogError, match="expands past"):
            part.fetch(Cursor(1), 10)


def header_bomb_batch(base_offset: int, headers: int) -> bytes:
    """A CRC-valid zstd batch of one record with ``headers`` empty headers:
    2 bytes of records section each, a few bytes of frame per MiB."""
    import zstandard

    def varint(n):
        n, out = (n << 1) ^ (n >> 63), bytearray()
        while n > 0x7F:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out) + bytes([n])
    head = b"\x00" + varint(0) + varint(0) + varint(-1) + varint(-1) + varint(headers)
    c = zstandard.ZstdCompressor(level=3).compressobj()
    parts = [c.compress(varint(len(head) + 2 * headers) + head)]
    chunk, left = b"\x00\x01" * (1 << 16), headers
    while left:
        parts.append(c.compress(chunk[:2 * min(left, 1 << 16)]))
        left -= min(left, 1 << 16)
    body = struct.pack(">hiqqqhii", 4, 0, 1_700_000_000_000, 1_700_000_000_000,
                       -1, -1, -1, 1) + b"".join(parts) + c.flush()
    return struct.pack(">qiib", base_offset, 9 + len(body), 0, 2) + \
        struct.pack(">I", _crc32c(body)) + body


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_a_batch_over_the_items_bound_written_before_b7_still_reads(
        logdir, monkeypatch, compression):
    # B-7 binds producers only: a batch over it that a producer before the
    # rule wrote (a partition append, as its send_batch made) reads whole
    # and verifies sound, records and headers alike, not CorruptLogError
    monkeypatch.setattr(pylog._native, "BATCH_ITEMS_MAX", 100)
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", partitions=1, compression=compression)
        part = log.partition("t", 0)
        part.append([(1_700_000_000_000, None, b"v%d" % i, ())
                     for i in range(150)], compression=compression)
        part.append([(1_700_000_000_000, None, b"h", (("h", b""),) * 150)],
                    compression=compression)
        got = part.fetch(Cursor(0), 1000)
        assert [r[3] for r in got] == [b"v%d" % i for i in range(150)] + [b"h"]
        assert len(got[-1][4]) == 150
        c = log.consumer("t", auto_offset_reset="earliest", max_poll_records=7)
        seen = []
        while len(seen) < 151:
            recs = c.poll(timeout=1.0)
            assert recs
            seen += [r.offset for r in recs]
        assert seen == list(range(151))
        c.close()
    from pylog.verify import verify_log
    assert verify_log(logdir) == []


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_a_batch_over_the_items_bound_is_refused_before_it_is_written(
        logdir, monkeypatch, compression):
    # B-7 on the way in: what a reader would refuse is not written
    monkeypatch.setattr(pylog._native, "BATCH_ITEMS_MAX", 100)
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", partitions=1, compression=compression)
        p = log.producer()
        with pytest.raises(pylog.RecordTooLarge, match="records and headers"):
            p.send("t", b"v", headers=[("h", b"")] * 100)
        with pytest.raises(pylog.RecordTooLarge, match="records and headers"):
            p.send_batch("t", [(None, b"v", [("h", b"")])] * 51)
        assert log.describe_topic("t").partition_info[0].end_offset == 0
        p.send_batch("t", [(None, b"v", [("h", b"")])] * 50)    # 100: at the bound
        p.send("t", b"w", headers=[("h", b"")] * 99)
        got = log.partition("t", 0).fetch(Cursor(0), 100)
        assert [len(r[4]) for r in got] == [1] * 50 + [99]


def test_retention_deletes_nothing_while_the_metadata_writer_is_busy(logdir):
    # P-5: the new log start is recorded in LMDB first, files deleted
    # second; when the record cannot be made without waiting (L-7: this
    # test holds meta.lock), nothing is deleted in that pass
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", retention_bytes=200_000, segment_bytes=SEGMENT_BYTES,
                         retention_ms=-1)
        prod = log.producer()
        part = log.partition("t", 0)
        fd = os.open(os.path.join(logdir, "meta.lock"), os.O_RDWR | os.O_CLOEXEC)
        try:
            req = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
            fcntl.fcntl(fd, F_OFD_SETLK, req)
            for i in range(4000):               # rolls apply retention too
                prod.send("t", b"%08d" % i + bytes(150), partition=0)
            log.enforce_retention()
            assert part.state().log_start_offset == 0
            assert segments(part.dir)[0][0] == 0, "a segment was deleted"
            assert part.fetch(Cursor(0), 1)[0][3][:8] == b"00000000"
        finally:
            os.close(fd)                          # releases the OFD lock
        log.enforce_retention()
        start = part.state().log_start_offset
        assert start > 0
        assert segments(part.dir)[0][0] <= start
    with pylog.open(logdir, sync="never") as log:    # the record was made first
        assert log.partition("t", 0).state().log_start_offset == start
