"""Tests of the native core's files (pylog._native): segment scans and
indexes, the partition state, the doorbell, locks across processes, the
many-batch fetch, the status table and the byte layout."""

import errno
import mmap
import multiprocessing
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time

import childproc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nativebatches import HSET, build_log, kafka_build, norm, rand_records

from pylog import _native as n
from pylog.errors import CorruptLogError, InvalidArgument

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(n.__file__)))


# ---------------------------------------------------------------------------
# segment scan and indexes
# ---------------------------------------------------------------------------

def test_scan_clean_with_zero_tail_and_index():
    rng = random.Random(10)
    log, meta = build_log(rng, 300, base_offset=1000)
    buf = log + bytes(10_000)
    r = n.scan_segment(buf, 0, len(buf), expected_offset=1000, segment_base_offset=1000)
    assert r.end_position == len(log) and r.error_position is None and r.error_reason is None
    assert r.batch_count == 300 and r.next_offset == meta[-1][2] + 1
    assert r.max_timestamp == max(m[3] for m in meta)
    # the index rule: entry when bytes since last entry >= 4096, counted per batch
    sizes = [(meta[i + 1][0] if i + 1 < len(meta) else len(log)) - meta[i][0]
             for i in range(len(meta))]
    idx, tidx, bsle, maxts = [], [], 0, -1
    for (pos, b0, last, mts), size in zip(meta, sizes):
        maxts = max(maxts, mts)
        if bsle >= 4096:
            idx.append((last - 1000, pos))
            tidx.append((maxts, last - 1000))
            bsle = 0
        bsle += size
    assert r.index_entries == idx and r.timeindex_entries == tidx
    assert r.bytes_since_last_entry == bsle
    assert len(idx) > 10
    ib = b"".join(struct.pack(">ii", *e) for e in idx)
    assert n.index_validate(ib, len(log)) is None
    tb = b"".join(struct.pack(">qi", *e) for e in tidx)
    assert n.timeindex_validate(tb) is None
    # index_lookup finds the right starting batch for many targets
    starts = {m[0]: m for m in meta}
    for target in range(0, meta[-1][2] - 1000 + 5):
        got = n.index_lookup(ib, target)
        want = [e for e in idx if e[0] <= target]
        assert got == (want[-1] if want else None)
        pos = got[1] if got else 0
        assert pos in starts and (got is None or starts[pos][2] - 1000 <= target)
    # time index lookup: largest entry with timestamp strictly below the target
    for target in [tidx[0][0], tidx[0][0] + 1, tidx[-1][0] + 1, -5] + [e[0] for e in tidx[::7]]:
        want = [e for e in tidx if e[0] < target]
        assert n.timeindex_lookup(tb, target) == (want[-1] if want else None)


def test_scan_chunks_across_capacity():
    rng = random.Random(11)
    log, meta = build_log(rng, 200)
    full = n.scan_segment(log, 0, len(log), index_interval_bytes=0, expected_offset=0)
    chunked = n.scan_segment(log, 0, len(log), index_interval_bytes=0, expected_offset=0,
                             entry_cap=7)
    assert chunked == full and len(full.index_entries) == 200


def test_scan_torn_tail():
    rng = random.Random(12)
    log, meta = build_log(rng, 20)
    last_pos = meta[-1][0]
    # truncated
    torn = log[:-7]
    r = n.scan_segment(torn + bytes(100), 0, len(torn) + 100, expected_offset=0)
    assert r.end_position == last_pos and r.error_position == last_pos
    assert r.error_reason and not r.continues_after_error and r.batch_count == 19
    r = n.scan_segment(torn, 0, len(torn), expected_offset=0)
    assert r.end_position == last_pos and r.error_reason and not r.continues_after_error
    # garbled
    garbled = bytearray(log)
    garbled[last_pos + 70] ^= 0xFF
    r = n.scan_segment(bytes(garbled) + bytes(50), expected_offset=0)
    got = (r.end_position, r.error_position, r.continues_after_error)
    assert got == (last_pos, last_pos, False)
    assert "B-4" in r.error_reason
    # a few stray non-zero bytes after the last batch
    r = n.scan_segment(log + b"\x01\x02", expected_offset=0)
    assert r.end_position == len(log) and r.error_position == len(log)


def test_scan_mid_log_corruption():
    rng = random.Random(13)
    log, meta = build_log(rng, 20)
    bad = bytearray(log)
    mid = meta[10][0]
    bad[mid + 17] ^= 0x01  # flip a CRC bit
    r = n.scan_segment(bytes(bad) + bytes(64), expected_offset=0)
    assert r.end_position == mid and r.error_position == mid and r.batch_count == 10
    assert "B-4" in r.error_reason and r.continues_after_error
    assert r.next_offset == meta[10][1]
    # resuming after the bad batch
    h = n.read_batch_header(bad, mid)
    r2 = n.scan_segment(bytes(bad), h.end_position, expected_offset=meta[11][1])
    assert r2.end_position == len(log) and r2.error_position is None


def test_scan_offset_mismatch():
    rng = random.Random(14)
    log, meta = build_log(rng, 5)
    r = n.scan_segment(log, expected_offset=1)
    assert r.batch_count == 0 and r.error_position == 0 and "expected" in r.error_reason
    r = n.scan_segment(log)  # unchecked
    assert r.batch_count == 5 and r.next_offset == meta[-1][2] + 1


def test_index_validate_detects_problems():
    good = [(1, 0), (5, 100), (9, 300)]
    ib = b"".join(struct.pack(">ii", *e) for e in good)
    assert n.index_validate(ib, 1000) is None
    assert n.index_validate(ib, 300) == 16
    assert n.index_validate(ib + b"\0", 1000) == 24
    assert n.index_validate(struct.pack(">iiii", 5, 0, 5, 10), 1000) == 8
    assert n.index_validate(struct.pack(">iiii", 5, 10, 6, 10), 1000) == 8
    assert n.index_validate(struct.pack(">ii", -1, 0), 1000) == 0
    assert n.index_lookup(b"", 5) is None and n.index_lookup(ib, 0) is None
    assert n.index_lookup(ib, 5) == (5, 100) and n.index_lookup(ib, 2**40) == (9, 300)
    tb = struct.pack(">qiqi", 10, 1, 9, 2)
    assert n.timeindex_validate(tb) == 12
    assert n.timeindex_validate(struct.pack(">qiqi", 10, 2, 11, 1)) == 12
    assert n.timeindex_validate(struct.pack(">qi", 1, 1) + b"\0") == 12


# ---------------------------------------------------------------------------
# partition state seqlock
# ---------------------------------------------------------------------------

def test_state_roundtrip_and_repair():
    m = mmap.mmap(-1, 4096)
    vals = (123, 100, 4096, 1_700_000_000_000, 7, 0)
    n.state_publish(m, *vals)
    assert n.state_read(m) == vals
    magic, version, seq = struct.unpack_from("=IIQ", m, 0)
    assert magic == n.STATE_MAGIC and version == 1 and seq == 2
    n.state_publish(m, *(v + 1 for v in vals))
    assert n.state_read(m) == tuple(v + 1 for v in vals)
    struct.pack_into("=Q", m, 8, 5)  # writer died mid-publish
    assert n.state_read(m) is None
    n.state_repair(m)
    assert n.state_read(m) == tuple(v + 1 for v in vals)
    m.close()


def test_state_concurrent_readers_see_consistent_values():
    m = mmap.mmap(-1, 64)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            n.state_publish(m, i, i, i, i, i, i)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(20000):
            v = n.state_read(m)
            assert v is not None and len(set(v)) == 1
    finally:
        stop.set()
        t.join()


# ---------------------------------------------------------------------------
# doorbell
# ---------------------------------------------------------------------------

def test_doorbell_threads():
    m = mmap.mmap(-1, 64)
    seq = n.doorbell_load(m, 3)
    t0 = time.monotonic()
    assert n.doorbell_wait(m, 3, seq, 0.05) is False
    assert time.monotonic() - t0 >= 0.045
    result = {}

    def waiter():
        t = time.monotonic()
        result["woken"] = n.doorbell_wait(m, 3, seq, 5.0)
        result["elapsed"] = time.monotonic() - t

    th = threading.Thread(target=waiter)
    th.start()
    deadline = time.monotonic() + 5
    while struct.unpack_from("=I", m, 3 * 8 + 4)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    n.doorbell_ring(m, 3)
    th.join(5)
    assert result["woken"] is True and result["elapsed"] < 2
    assert n.doorbell_load(m, 3) == seq + 1
    assert n.doorbell_wait(m, 3, seq, 1.0) is True  # already changed: immediate
    with pytest.raises(InvalidArgument):
        n.doorbell_ring(m, 8)


def _doorbell_child(path, q):
    import mmap as _mmap

    from pylog import _native as nn
    with open(path, "r+b") as f:
        mm = _mmap.mmap(f.fileno(), 4096)
    seq = nn.doorbell_load(mm, 1)
    q.put(("ready", seq))
    t = time.monotonic()
    woken = nn.doorbell_wait(mm, 1, seq, 10.0)
    q.put(("done", woken, time.monotonic() - t))


def test_doorbell_across_processes(tmp_path):
    path = tmp_path / "bell"
    path.write_bytes(bytes(4096))
    with open(path, "r+b") as f:
        m = mmap.mmap(f.fileno(), 4096)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_doorbell_child, args=(str(path), q))
    p.start()
    try:
        assert q.get(timeout=10)[0] == "ready"
        deadline = time.monotonic() + 10
        while struct.unpack_from("=I", m, 8 + 4)[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)  # until the child sleeps in the futex
        n.doorbell_ring(m, 1)
        tag, woken, elapsed = q.get(timeout=10)
        assert woken is True and elapsed < 5
    finally:
        p.join(10)
    assert p.exitcode == 0
    m.close()


# ---------------------------------------------------------------------------
# locks
# ---------------------------------------------------------------------------

LOCK_CHILD = """
import sys, time
from pylog import _native as n
f = open(sys.argv[1], "r+b")
assert n.lock(f.fileno(), 0, 0, "w", True)
print("locked", flush=True)
time.sleep(60)
"""


def test_lock_across_processes(tmp_path):
    path = tmp_path / "lockfile"
    path.write_bytes(b"x" * 100)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", LOCK_CHILD, str(path)],
                             stdout=subprocess.PIPE, env=env, cwd=REPO_ROOT)
    try:
        childproc.expect(child, b"locked")
        with open(path, "r+b") as f:
            assert n.lock(f.fileno(), 0, 0, "w", False) is False
            assert n.lock(f.fileno(), 10, 5, "r", False) is False
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            assert n.lock(f, 0, 0, "w", False) is True
            assert n.lock(f, 0, 0, "u", False) is True
            assert n.lock(f, 0, 10, "r", True) is True
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    with pytest.raises(InvalidArgument):
        n.lock(0, 0, 0, "x", False)
    with pytest.raises(OSError):
        n.lock(987654, 0, 0, "w", False)  # EBADF


# ---------------------------------------------------------------------------
# pl_fetch: many batches in one call
# ---------------------------------------------------------------------------

def _fetch_all(buf, end, pos, expected, max_records, first_base=-1, *, topic=None,
               partition=None, row_type=None, values_only=False):
    p = n.ffi.from_buffer("uint8_t[]", buf)
    return n.fetch(p, buf, end, pos, expected, first_base, max_records,
                   (topic, partition, row_type, values_only))


def _log_with_headers(rng, nbatches):
    """Like build_log, with headers, null keys/values and zstd batches mixed in."""
    parts, meta, pos, off = [], [], 0, 0
    for i in range(nbatches):
        recs = rand_records(rng, rng.randint(1, 12), with_headers=rng.random() < 0.3)
        b = kafka_build(recs, compression_type=4) if i % 7 == 3 else \
            n.encode_batch(recs, base_offset=0)
        b = off.to_bytes(8, "big") + b[8:]          # baseOffset is outside the CRC
        meta.append((pos, off, norm(recs, off)))
        parts.append(b)
        pos += len(b)
        off += len(recs)
    return b"".join(parts), meta


@HSET
@given(st.integers(0, 2**32), st.integers(1, 40), st.integers(0, 3))
def test_fetch_matches_batch_by_batch_decode(seed, max_records, start_batch):
    """pl_fetch from any record of any batch, up to max_records, returns
    what decoding each batch alone returns, and stops at compressed
    batches (the caller decodes those) with the position of the next."""
    rng = random.Random(seed)
    log, meta = _log_with_headers(rng, 12)
    everything = [r for _, _, recs in meta for r in recs]
    b = min(start_batch, len(meta) - 1)
    pos, first, recs = meta[b]
    skip = rng.randint(0, len(recs) - 1)
    expected = first + skip
    got, res = _fetch_all(log + bytes(100), len(log), pos, expected, max_records,
                          first if rng.random() < 0.5 else -1)
    want = everything[expected:expected + max_records]
    assert got == want[:len(got)]
    assert res.next_offset == expected + len(got)
    # continuing where it stopped, with the baseOffset it reported
    if res.stop in (n.FETCH_END, n.FETCH_FULL):
        more, _ = _fetch_all(log, len(log), res.position, res.next_offset, 10_000,
                             res.position_base)
        assert got + more == everything[expected:expected + len(got) + len(more)]
    if res.stop == n.FETCH_COMPRESSED:
        h = n.read_batch_header(log, res.stop_position)
        assert h.codec == n.CODEC_ZSTD and h.base_offset <= res.next_offset
        assert res.position == res.stop_position
    elif res.stop == n.FETCH_END:
        assert got == want and res.position == len(log)
    else:
        assert res.stop == n.FETCH_FULL and len(got) == max_records
    values, _ = _fetch_all(log, len(log), pos, expected, max_records, values_only=True)
    assert values == [r[3] for r in got]


def test_fetch_rows_as_records_and_column_cut():
    from pylog.records import Record
    rng = random.Random(3)
    recs = [(1_700_000_000_000, rng.randbytes(16), rng.randbytes(100), ()) for _ in range(50)]
    buf = n.encode_batch(recs, base_offset=10) + n.encode_batch(recs, base_offset=60)
    got, res = _fetch_all(buf, len(buf), 0, 10, 1000, topic="t", partition=2,
                          row_type=Record)
    assert res.stop == n.FETCH_END and res.next_offset == 110
    assert all(type(r) is Record for r in got)
    assert [(r.offset, r.key, r.value) for r in got] == \
        [(10 + i, k, v) for i, (_, k, v, _) in enumerate(recs + recs)]


@pytest.mark.parametrize("damage", ["crc", "base_offset", "base_offset_low", "truncated",
                                    "records"])
def test_fetch_reports_damage_where_it_is(damage):
    rng = random.Random(4)
    log, meta = build_log(rng, 6)
    bad = bytearray(log)
    pos = meta[3][0]
    if damage == "crc":
        bad[pos + 40] ^= 0x10
    elif damage == "base_offset":
        bad[pos + 7] ^= 0x01                    # outside the CRC (B-4)
    elif damage == "base_offset_low":
        # one below the true value: still "holds" the expected offset, but
        # does not start where the previous batch ended (dense offsets)
        true_base = meta[3][1]
        bad[pos:pos + 8] = (true_base - 1).to_bytes(8, "big")
    elif damage == "truncated":
        bad = bad[:pos + 30]
    else:                                       # a record section edit + matching CRC
        h = n.read_batch_header(log, pos)
        bad[pos + 61] = 0x7f
        bad[pos + 17:pos + 21] = n.crc32c(bytes(bad[pos + 21:pos + h.size])).to_bytes(4, "big")
    got, res = _fetch_all(bytes(bad), len(bad), 0, 0, 10_000)
    assert res.stop == n.FETCH_CORRUPT and res.stop_position == pos
    assert len(got) == meta[3][1] and res.next_offset == meta[3][1] and res.error


# -- one status table (pylog.status) --------------------------------------------

def test_every_native_status_is_outside_the_errno_range():
    """PL_E_* once overlapped -EPERM/-ENOENT/-ESRCH (the STALE/EINTR livelock):
    every one is now below -1000, where no -errno reaches."""
    from pylog import status
    assert {"PL_E_NOSPACE", "PL_E_INVAL", "PL_E_BUSY", "PL_E_STALE", "PL_E_DELETED",
            "PL_E_VANISHED", "PL_E_NOFD"} <= set(status.STATUSES)
    for name, code in status.STATUSES.items():
        assert code <= -1000, name
        assert not status.is_errno(code), name
        assert status.reason(code) != "unknown status", name
    assert status.is_errno(-errno.EIO) and not status.is_errno(0)


def test_check_maps_every_status_to_a_pylog_error_naming_what_was_tried():
    from pylog import status
    from pylog.errors import PylogError
    what = "frobnicate partition t-0"
    for name, code in status.STATUSES.items():
        exc = status.error(code, what, "/logs/t-0")
        assert isinstance(exc, PylogError), name
        msg = str(exc)
        # "what was tried: why (hint)", never a bare "invalid argument"
        assert msg.startswith(what + " (/logs/t-0): "), (name, msg)
        assert msg.endswith(")") and len(msg) > len(what) + 40, (name, msg)
        with pytest.raises(type(exc)) as got:
            status.check(code, what)
        assert str(got.value).startswith(what + ": ")
    assert status.check(0, what) == 0 and status.check(2, what) == 2   # results pass
    hinted = status.error(status.E_INVAL, what, hint="use a smaller widget")
    assert isinstance(hinted, InvalidArgument) and str(hinted).endswith("(use a smaller widget)")


def test_check_maps_errno_and_corruption():
    from pylog import status
    from pylog.errors import LogOSError, PylogError
    exc = status.error(-errno.EIO, "append to t-0", "/logs/t-0/0.log")
    assert isinstance(exc, LogOSError) and isinstance(exc, OSError)
    assert exc.errno == errno.EIO and str(exc).startswith("append to t-0: ")
    assert "EIO" in str(exc)
    with pytest.raises(PermissionError):
        status.check(-errno.EACCES, "open t-0", "/logs/t-0")
    exc = status.error(n.lib.PL_C_CRC, "read a batch",
                       "/logs/t-0/0.log", position=123)
    assert isinstance(exc, CorruptLogError) and exc.position == 123
    assert "CRC32C" in exc.reason and exc.path == "/logs/t-0/0.log"
    with pytest.raises(CorruptLogError):
        status.check_corrupt(5, "read a batch")
    unknown = status.error(-5000, "frobnicate")
    assert isinstance(unknown, PylogError) and "unknown native status -5000" in str(unknown)


def test_wrapper_errors_say_what_was_tried():
    with pytest.raises(InvalidArgument, match=r"^encode records: .*\(a batch needs"):
        n.encode_batch([(1, b"k", b"v", None)], base_offset=0, attributes=4)
    with pytest.raises(OSError, match=r"^lock bytes 0\+1 of fd -1 \(w\): "):
        n.lock(-1, 0, 1, "w", False)
    with pytest.raises(InvalidArgument, match=r"^take the partition's append lock"):
        n.plock_acquire(n.ffi.NULL, 1, -1, -1, False)


# -- one home for the byte layout (pylog._format) -------------------------------

def test_format_constants_equal_the_c_header():
    from pylog import _format
    from pylog._pylog_native import lib
    assert _format.native_mismatches(lib) == []
    for name, cname in _format.NATIVE_NAMES.items():
        assert getattr(_format, name) == getattr(lib, cname), (name, cname)
    assert _format.LIVENESS_BASE == 1 << lib.PL_LIVENESS_BASE_LOG2
    assert _format.STATE_MAGIC.to_bytes(4, "little") == b"PLST"
    # the header offsets are computed from the struct, not typed
    assert (_format.CRC_OFFSET, _format.ATTRIBUTES_OFFSET,
            _format.RECORDS_COUNT_OFFSET, _format.BATCH_HEADER_SIZE) == (17, 21, 57, 61)
    # the values _native exported before stay where callers find them
    assert n.MAGIC_OFFSET == _format.MAGIC_OFFSET and n.STATE_SIZE == _format.STATE_SIZE


def test_a_layout_mismatch_refuses_to_import():
    from pylog import _format
    from pylog._pylog_native import lib

    class Skewed:
        def __getattr__(self, name):
            value = getattr(lib, name)
            return value + 1 if name == "PL_OFF_CRC" else value
    bad = _format.native_mismatches(Skewed())
    assert bad == [("CRC_OFFSET", 17, "PL_OFF_CRC", 18)]
    with pytest.raises(ImportError, match=r"CRC_OFFSET = 17 but PL_OFF_CRC = 18\); rebuild"):
        n.check_layout(Skewed())
    n.check_layout(lib)


def test_cffi_declarations_come_from_the_preprocessed_header():
    import shutil

    from pylog import _build_native
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler")
    cdef = _build_native.cdef_from_header()
    assert "#" not in cdef                                # no directive left for cffi
    assert "enum pl_status" in cdef and "pl_wait_fetch_req" in cdef
    assert "_Static_assert" not in cdef and "PL_LIVENESS_BASE_LOG2" in cdef


def test_sync_without_a_descriptor_fails_the_call_not_the_partition(logdir):
    """pl_sync_through dups the segment descriptor for each fdatasync: when
    no descriptor is left (EMFILE) it returns PL_E_NOFD, which is not
    sticky in C (nothing was lost) and must not fail the partition in
    Python either: the send raises, and once descriptors are free again
    the next one succeeds."""
    import resource

    import pylog
    from pylog.errors import LogFailedError, LogOSError
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with pylog.open(os.path.join(logdir, "l"), sync="always") as log:
        log.create_topic("t", partitions=1)
        prod = log.producer()
        prod.send("t", b"first", partition=0)
        fill = []
        top = max(int(f) for f in os.listdir("/proc/self/fd")) + 8
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
            while True:                 # take every descriptor below the limit
                try:
                    fill.append(os.open("/dev/null", os.O_RDONLY))
                except OSError as exc:
                    assert exc.errno == errno.EMFILE
                    break
            with pytest.raises(LogOSError) as got:
                prod.send("t", b"no fd for the sync", partition=0)
            assert not isinstance(got.value, LogFailedError)
            assert got.value.errno == errno.EMFILE and "fdatasync" in str(got.value)
        finally:
            for fd in fill:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        prod.send("t", b"after", partition=0)   # the partition still works
        values = [r.value for r in log.consumer("t", auto_offset_reset="earliest")
                  .poll(timeout=1.0, max_records=10)]
        assert values[0] == b"first" and values[-1] == b"after"
