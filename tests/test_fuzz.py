"""Fuzzing (G4: no input file can crash the interpreter): the batch decoder,
the segment scanner, index search and ``pylog dump`` run on arbitrary and
mutated bytes. Hypothesis here; the long job builds tests/fuzz/fuzz_native.c
(the C core, AddressSanitizer + UBSan) and runs it for a bounded time —
as a libFuzzer target when clang is there, else with its own mutator.

Every outcome must be a clean result or a PylogError (CorruptLogError,
InvalidArgument); a mutated batch whose CRC still checks must decode to
exactly what was encoded (never wrong data returned as good)."""

import glob
import os
import random
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylog
from pylog import PylogError, _native, batch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAST = settings(max_examples=150, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

record = st.tuples(st.integers(0, 2**41), st.one_of(st.none(), st.binary(max_size=40)),
                   st.one_of(st.none(), st.binary(max_size=200)),
                   st.lists(st.tuples(st.text(max_size=8), st.one_of(st.none(),
                                                                     st.binary(max_size=20))),
                            max_size=3))


def encode(recs, base, compression=None):
    return batch.encode(recs, base_offset=base, compression=compression)


def decode_all(buf):
    """Walk the batches of ``buf`` like a reader: header, CRC, records."""
    out, pos = [], 0
    while pos + 12 <= len(buf):
        h = batch.read_header(buf, pos, len(buf))
        out.extend(batch.decode(buf, h))
        pos += h.size
    return out


@FAST
@given(st.binary(max_size=600), st.integers(0, 64))
def test_decoder_on_arbitrary_bytes(data, pos):
    try:
        h = _native.read_batch_header(data, min(pos, len(data)), len(data))
        if h.crc_valid:
            batch.decode(data, h)
            batch.decode_values(data, h)
    except PylogError:
        pass


@FAST
@given(st.lists(record, min_size=1, max_size=5), st.booleans(),
       st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                max_size=4))
def test_decoder_on_mutated_batches(recs, zstd, flips):
    good = encode(recs, 7, "zstd" if zstd else None)
    expect = decode_all(good)
    data = bytearray(good)
    for at, x in flips:
        data[at % len(data)] ^= x or 1
    data = bytes(data)
    try:
        got = decode_all(data)
    except PylogError:
        return
    # Accepted: only when the flips hit fields outside the CRC (offset,
    # length, leader epoch, magic) and every record still reads the same.
    assert [(r[1], r[2], r[3], r[4]) for r in got] == \
        [(r[1], r[2], r[3], r[4]) for r in expect], "wrong data returned as good"


@FAST
@given(st.binary(max_size=3000), st.integers(-1, 100), st.integers(0, 100))
def test_scanner_on_arbitrary_bytes(data, expected, base):
    r = _native.scan_segment(data, 0, len(data), expected_offset=expected,
                             segment_base_offset=base, index_interval_bytes=64)
    assert 0 <= r.end_position <= len(data)


@FAST
@given(st.lists(st.lists(record, min_size=1, max_size=3), min_size=1, max_size=6),
       st.integers(0, 10**6), st.integers(1, 255), st.integers(0, 2))
def test_scanner_on_mutated_segments(batches, at, x, how):
    seg, base, epoch_bytes = b"", 0, set()
    for recs in batches:
        b = encode(recs, base)
        epoch_bytes.update(range(len(seg) + 12, len(seg) + 16))  # leader epoch: no CRC
        seg += b
        base += len(recs)
    data = bytearray(seg)
    i = at % len(data)
    if how == 0:
        data[i] ^= x
    elif how == 1:
        del data[i:]
    else:
        data[i:i + x] = bytes(len(data[i:i + x]))
    r = _native.scan_segment(bytes(data), 0, len(data), expected_offset=0,
                             segment_base_offset=0, index_interval_bytes=100)
    assert r.end_position <= len(data)
    # what the scanner accepts is a prefix of the original, whole batches
    assert all(data[j] == seg[j] for j in range(r.end_position) if j not in epoch_bytes)


@FAST
@given(st.binary(max_size=400), st.integers(-2**31, 2**31 - 1), st.integers(0, 2**40),
       st.integers(-2**63, 2**63 - 1))
def test_index_search_on_arbitrary_bytes(data, rel, size, ts):
    for fn, args in ((_native.index_lookup, (data, rel)),
                     (_native.index_validate, (data, size)),
                     (_native.timeindex_lookup, (data, ts)),
                     (_native.timeindex_validate, (data,))):
        try:
            fn(*args)
        except PylogError:
            pass


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000), st.booleans())
def test_dump_on_arbitrary_files(tmp_path, data, mutate_valid):
    from pylog.verify import dump_segment
    if mutate_valid:
        good = encode([(1, b"k", b"v" * 50, [("h", b"x")])], 0) * 3
        data = bytearray(good + data[:100])
        for b in data[100:110]:
            data[b % len(data)] ^= 0x41
        data = bytes(data)
    p = tmp_path / "00000000000000000000.log"
    p.write_bytes(data)
    try:
        dump_segment(str(p), records=True, values=True)
    except PylogError:
        pass


def test_dump_cli_on_garbage_exits_cleanly(tmp_path):
    """The ``pylog dump`` command on random files: exit status, no signal."""
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=ROOT)
    good = encode([(1, b"k", b"v" * 300, [])], 0)
    for i in range(4):
        data = bytearray(good * 5) if i % 2 else bytearray(rng.randbytes(3000))
        for _ in range(10):
            data[rng.randrange(len(data))] = rng.randrange(256)
        p = tmp_path / f"{i:020d}.log"
        p.write_bytes(bytes(data))
        r = subprocess.run([sys.executable, "-m", "pylog.cli", "dump", str(p), "--records",
                            "--values"], env=env, capture_output=True, timeout=60)
        assert r.returncode >= 0, f"pylog dump died of signal {-r.returncode}"
        assert b"Traceback" not in r.stderr, r.stderr.decode()[-2000:]


# -- C fuzz harness, AddressSanitizer (long) -------------------------------------

def build_fuzzer(outdir):
    src = sorted(glob.glob(os.path.join(ROOT, "csrc", "*.c"))) + [
        os.path.join(HERE, "fuzz", "fuzz_native.c")]
    clang = shutil.which("clang")
    exe = os.path.join(outdir, "fuzz_native")
    if clang:
        r = subprocess.run([clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined",
                            "-I", os.path.join(ROOT, "csrc"), "-o", exe] + src,
                           capture_output=True)
        if r.returncode == 0:
            return exe, "libfuzzer"
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler")
    subprocess.run([cc, "-g", "-O1", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", "-DPL_STANDALONE_FUZZ",
                    "-I", os.path.join(ROOT, "csrc"), "-o", exe] + src + ["-lpthread"],
                   check=True)
    return exe, "standalone"


@pytest.mark.long
def test_native_fuzz_asan_long(tmp_path):
    exe, kind = build_fuzzer(str(tmp_path))
    budget = int(os.environ.get("PYLOG_FUZZ_BUDGET_S", "60"))
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(1 << 30)))
    print(f"fuzzer: {kind}, seed {seed}, budget {budget} s")
    if kind == "libfuzzer":
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        cmd = [exe, f"-max_total_time={budget}", f"-seed={seed}", "-max_len=4096",
               "-print_final_stats=1", str(corpus)]
    else:
        cmd = [exe, str(seed), str(budget)]
    r = subprocess.run(cmd, capture_output=True, timeout=budget + 120)
    out = (r.stdout + r.stderr).decode(errors="replace")
    print(out[-1500:])
    assert r.returncode == 0, f"fuzzer failed (seed {seed}):\n{out[-4000:]}"
    assert "ERROR: AddressSanitizer" not in out and "runtime error" not in out


# -- corruption of every file of a closed log, victim in a subprocess --------------

VICTIM = r"""
import json, sys, pylog
from pylog.partition import Cursor
path, expect_file = sys.argv[1], sys.argv[2]
expect = json.load(open(expect_file))
res = {"errors": [], "wrong": [], "problems": 0}
try:
    with pylog.open(path, sync="never") as log:
        for p, vals in expect["values"].items():
            part = log.partition("t", int(p))
            if part.failed is not None:
                res["errors"].append(type(part.failed).__name__)
                continue
            try:
                for r in part.fetch(Cursor(0), 10**6):
                    off, v = r[0], r[3]
                    if off >= len(vals) or v.hex() != vals[off]:
                        res["wrong"].append([p, off])
            except pylog.PylogError as exc:
                res["errors"].append(type(exc).__name__)
        got = log.meta.committed("g", "t", 0)
        if got is not None and got != expect["committed"]:
            res["wrong"].append(["commit", got])
except pylog.PylogError as exc:
    res["errors"].append(type(exc).__name__)
try:
    res["problems"] = len(__import__("pylog.verify").verify.verify_log(path))
except pylog.PylogError as exc:
    res["errors"].append(type(exc).__name__)
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def corpus_log(tmp_path_factory):
    """A closed log: 2 partitions, several segments, indexes, a group commit."""
    import json
    d = tmp_path_factory.mktemp("corpus")
    path = str(d / "log")
    values = {"0": [], "1": []}
    with pylog.open(path, sync="never") as log:
        log.create_topic("t", partitions=2, segment_bytes=65536, retention_ms=-1)
        prod = log.producer()
        for i in range(300):
            v = b"%d:" % i + bytes([i % 251]) * (100 + (i * 53) % 900)
            md = prod.send("t", v, partition=i % 2, key=b"k%d" % i)
            values[str(md.partition)].append(v.hex())
        c = log.consumer("t", group_id="g", enable_auto_commit=False,
                         auto_offset_reset="earliest")
        c.assign([pylog.TopicPartition("t", 0)]) if False else None
        while sum(1 for _ in c.poll(timeout=0.2, max_records=1000)):
            pass
        c.commit()
        committed = log.meta.committed("g", "t", 0)
        c.close()
    exp = d / "expect.json"
    exp.write_text(json.dumps({"values": values, "committed": committed}))
    return path, str(exp)


def damage(path, rng):
    """Damage one random file of the log; return (file, kind, at).

    Truncating data.mdb is left out: it kills the reader with SIGBUS, see
    test_truncated_lmdb_never_kills_the_process."""
    files = []
    for dp, _, fns in os.walk(path):
        for fn in fns:
            if fn.endswith((".log", ".index", ".timeindex", ".mdb")) and \
                    os.path.getsize(os.path.join(dp, fn)) > 0:
                files.append(os.path.join(dp, fn))
    f = rng.choice(files)
    data = bytearray(open(f, "rb").read())
    kind = rng.choice(["flip", "zero"] if f.endswith(".mdb") else
                      ["flip", "truncate", "zero"])
    if os.environ.get("PYLOG_SKIP_KNOWN_BUGS", "1") == "1" and f.endswith(".log") \
            and kind == "zero":
        kind = "flip"   # zeroed ranges: test_verify_reports_zeroed_range_mid_segment
    at = rng.randrange(len(data))
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(at, min(len(data), at + 64))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[at:]
    else:
        data[at:at + rng.randint(1, 5000)] = bytes(len(data[at:at + 5000]))
    open(f, "wb").write(bytes(data))
    return f, kind, at


def corruption_trials(corpus_log, tmp_path, n, rng):
    path, expect = corpus_log
    env = dict(os.environ, PYTHONPATH=ROOT)
    detected = 0
    for i in range(n):
        dst = str(tmp_path / f"c{i}")
        shutil.copytree(path, dst)
        f, kind, at = damage(dst, rng)
        try:
            r = subprocess.run([sys.executable, "-c", VICTIM, dst, expect], env=env,
                               capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"hang after {kind} of {f} at {at}")
        assert r.returncode >= 0, f"victim died of signal {-r.returncode} after {kind} " \
                                  f"of {f} at {at}"
        assert r.returncode == 0, r.stderr.decode()[-3000:]
        res = __import__("json").loads(r.stdout.decode().splitlines()[-1])
        assert not res["wrong"], f"wrong data returned as good after {kind} of {f} " \
                                 f"at {at}: {res['wrong'][:5]}"
        if res["errors"] or res["problems"]:
            detected += 1
        shutil.rmtree(dst)
    return detected


def test_truncated_lmdb_never_kills_the_process(corpus_log, tmp_path):
    path, expect = corpus_log
    dst = str(tmp_path / "c")
    shutil.copytree(path, dst)
    data = os.path.join(dst, "meta", "data.mdb")
    os.truncate(data, os.path.getsize(data) // 2)
    r = subprocess.run([sys.executable, "-c", VICTIM, dst, expect],
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                       timeout=60)
    assert r.returncode >= 0, f"victim died of signal {-r.returncode}"


def test_random_corruption_of_every_file(corpus_log, tmp_path):
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(1 << 30)))
    print(f"seed {seed}")
    detected = corruption_trials(corpus_log, tmp_path, 8, random.Random(seed))
    print(f"corruptions: 8 applied, {detected} detected, 0 wrong data, 0 crashes")


@pytest.mark.long
def test_random_corruption_long(corpus_log, tmp_path):
    import time
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"seed {seed}")
    t0, n, detected = time.monotonic(), 0, 0
    while time.monotonic() - t0 < float(os.environ.get("PYLOG_CORRUPT_BUDGET_S", "40")):
        try:
            detected += corruption_trials(corpus_log, tmp_path / f"b{n}", 5, rng)
        except BaseException:
            print(f"FAILED: seed {seed} batch {n}")
            raise
        n += 5
    print(f"corruptions: {n} applied, {detected} detected, 0 wrong data, 0 crashes, seed {seed}")


def test_verify_reports_zeroed_range_mid_segment(tmp_path):
    from pylog.verify import verify_log
    path = str(tmp_path / "log")
    with pylog.open(path, sync="never") as lg:
        lg.create_topic("t", segment_bytes=65536, retention_ms=-1)
        prod = lg.producer()
        for _ in range(100):
            prod.send("t", b"x" * 1000)
    f = os.path.join(path, "t-0", "00000000000000000061.log")
    data = bytearray(open(f, "rb").read())
    data[37857:37857 + 4099] = bytes(4099)
    open(f, "wb").write(bytes(data))
    problems = verify_log(path)           # must report, not raise TypeError
    assert any(p.file == f for p in problems)
