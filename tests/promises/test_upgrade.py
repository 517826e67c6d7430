"""A log written by pylog 0.1.0 opens with this version, whole (M-1).

tests/data/logs-0.1.0.tar.gz holds two logs written by pylog 0.1.0 itself
(tests/data/make_log_0_1.py says how): ``clean``, closed normally, and
``killed``, whose writer was SIGKILLed after its last acknowledged send.
Users upgrade with such directories on disk; every record acknowledged
then must read back byte for byte, a group must go on from the offsets
it committed, and a read-only look before the first writable open must
change nothing.
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tarfile

import pytest
from promisekit import HERE

import pylog

ARCHIVE = os.path.join(os.path.dirname(HERE), "data", "logs-0.1.0.tar.gz")
PARTITIONS = {"plain": 3, "zst": 2, "rolled": 1}


def _b(s):
    return None if s is None else base64.b64decode(s)


@pytest.fixture(params=["clean", "killed"])
def old_log(request, tmp_path):
    with tarfile.open(ARCHIVE) as tar:
        # the "data" filter where this Python has it (3.10.12, 3.11.4 on)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path, **safe)
    path = str(tmp_path / request.param)
    with open(os.path.join(path, "manifest.json")) as f:
        manifest = json.load(f)
    os.unlink(os.path.join(path, "manifest.json"))
    return path, manifest


def _tree_digest(path):
    h = hashlib.sha256()
    for d, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            # LMDB's reader table, and the doorbell whose counts readers
            # write to wait and wake (L-3): neither holds data
            if name in ("lock.mdb", "doorbell"):
                continue
            p = os.path.join(d, name)
            h.update(p.encode())
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _read_all(log):
    c = log.consumer()
    tps = [(t, p) for t, n in PARTITIONS.items() for p in range(n)]
    c.assign(tps)
    c.seek_to_beginning()
    ends = c.end_offsets(tps)
    got = {}
    while any(c.position(tp) < ends[tp] for tp in ends):
        for r in c.poll(timeout=1.0):
            got[(r.topic, r.partition, r.offset)] = r
    c.close()
    return got


def _check_records(got, manifest):
    want = {(r["topic"], r["partition"], r["offset"]): r for r in manifest["records"]}
    start = manifest["log_start"]
    kept = {k: r for k, r in want.items() if k[2] >= start[f"{k[0]}/{k[1]}"]}
    assert set(got) == set(kept)
    assert len(kept) > 500
    for k, w in kept.items():
        r = got[k]
        want_kvt = (_b(w["key"]), _b(w["value"]), w["timestamp_ms"])
        assert (r.key, r.value, r.timestamp_ms) == want_kvt, k
        assert [(h, v) for h, v in r.headers] == [(h, _b(v)) for h, v in w["headers"]], k


def test_a_read_only_look_sees_everything_and_changes_nothing(old_log):
    """A log written by pylog 0.1 opens as it is, with every record and
    every committed offset, and a read-only look at it changes nothing."""
    path, manifest = old_log
    before = _tree_digest(path)
    with pylog.open(path, readonly=True) as log:
        _check_records(_read_all(log), manifest)
        offsets = {f"{p['topic']}/{p['partition']}": p["committed"]
                   for p in log.describe_group("g1")["partitions"]
                   if p["committed"] is not None}
        assert offsets == manifest["committed"]["g1"]
    assert _tree_digest(path) == before


def test_the_log_opens_reads_back_and_groups_go_on(old_log):
    """A log written by pylog 0.1 opens as it is, with every record and
    every committed offset, and a read-only look at it changes nothing.

    Opened for writing: read back, the group goes on from its commits, a
    send lands, and ``pylog verify`` finds the converted log sound."""
    path, manifest = old_log
    with pylog.open(path) as log:
        _check_records(_read_all(log), manifest)
        committed = manifest["committed"]["g1"]
        g = log.consumer("plain", "zst", "rolled", group_id="g1",
                         auto_offset_reset="earliest")
        first = {}
        while len(first) < 6:
            for r in g.poll(timeout=1.0):
                first.setdefault(f"{r.topic}/{r.partition}", r.offset)
        g.close()
        for tp, off in first.items():
            assert off == committed.get(tp, manifest["log_start"][tp]), tp
        md = log.producer().send("rolled", b"after the upgrade", key=b"new")
    with pylog.open(path) as log:
        c = log.consumer()
        c.assign([("rolled", 0)])
        c.seek(("rolled", 0), md.offset)
        (r,) = c.poll(timeout=1.0)
        assert r.value == b"after the upgrade"
        c.close()
    out = subprocess.run([sys.executable, "-m", "pylog", "verify", path],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "is sound" in out.stdout
