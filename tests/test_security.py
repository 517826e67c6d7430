"""Hostile input and security (G5, SPEC §8): invalid arguments raise a
PylogError and change nothing on disk; topic names never escape the log
directory; size limits are exact; planted segment files and symlinked
partition directories are refused; files honour the umask and are never
world-writable; nothing in pylog unpickles data."""

import ast
import os
import subprocess
import sys

import pytest

import pylog
from pylog import (
    InvalidArgument,
    InvalidTopicName,
    LogClosed,
    PartitionNotFound,
    PylogError,
    ReadOnlyLog,
    RecordTooLarge,
    TopicNotFound,
)
from pylog.partition import Cursor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree(path):
    """Every file under ``path`` with its size and bytes (to prove nothing changed)."""
    out = {}
    for dp, dns, fns in os.walk(os.path.dirname(path)):
        for n in dns + fns:
            p = os.path.join(dp, n)
            if os.path.isfile(p) and not p.endswith(("lock.mdb", "doorbell", "partition.state")):
                with open(p, "rb") as f:
                    out[p] = f.read()
            else:
                out[p] = None
    return out


@pytest.fixture
def log(logdir):
    with pylog.open(logdir) as lg:
        lg.create_topic("t", partitions=2, max_message_bytes=1024, segment_bytes=65536)
        lg.producer().send("t", b"first", partition=0)
        yield lg


BAD_NAMES = ["", ".", "..", "../x", "a/b", "/abs", "a\\b", "a\0b", "x" * 250,
             "t\n", " t", "tοpic",          # Greek omicron
             "ｔ", "t\u200b", "t%2e", "~", "a b", "..\x00", "-" * 250, b"t", 7, None]


@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n)[:20] for n in BAD_NAMES])
def test_bad_topic_names_change_nothing(log, logdir, name):
    # M-3: names are checked before anything touches the disk
    before = tree(logdir)
    for call in (lambda: log.create_topic(name),
                 lambda: log.producer().send(name, b"v"),
                 lambda: log.describe_topic(name),
                 lambda: log.delete_topic(name)):
        with pytest.raises(PylogError) as ei:
            call()
        assert isinstance(ei.value, (InvalidTopicName, InvalidArgument, TopicNotFound))
    assert tree(logdir) == before
    assert log.topics() == ["t"]


def test_send_to_empty_topic_name_raises_invalid_topic_name(log):
    with pytest.raises(InvalidTopicName):
        log.producer().send("", b"v")


def test_longest_valid_name_is_accepted(log):
    name = "a" * 249
    log.create_topic(name)
    assert name in log.topics()
    assert os.path.isdir(os.path.join(log.path, name + "-0"))


BAD_CALLS = [
    ("str value", lambda lg: lg.producer().send("t", "text"), InvalidArgument),
    ("str key", lambda lg: lg.producer().send("t", b"v", key="k"), InvalidArgument),
    ("int value", lambda lg: lg.producer().send("t", 5), InvalidArgument),
    ("header not pair", lambda lg: lg.producer().send("t", b"v", headers=[b"x"]), InvalidArgument),
    ("header str value", lambda lg: lg.producer().send("t", b"v", headers=[("h", "s")]),
     InvalidArgument),
    ("header bytes key", lambda lg: lg.producer().send("t", b"v", headers=[(b"h", b"s")]),
     InvalidArgument),
    ("partition -1", lambda lg: lg.producer().send("t", b"v", partition=-1), PylogError),
    ("partition 2", lambda lg: lg.producer().send("t", b"v", partition=2), PartitionNotFound),
    ("partition str", lambda lg: lg.producer().send("t", b"v", partition="0"), PylogError),
    ("unknown topic", lambda lg: lg.producer().send("nope", b"v"), TopicNotFound),
    ("too large", lambda lg: lg.producer().send("t", b"x" * 2000), RecordTooLarge),
    ("batch too large", lambda lg: lg.producer().send_batch("t", [b"x" * 600] * 3, partition=0),
     RecordTooLarge),
    ("batch bad item", lambda lg: lg.producer().send_batch("t", [b"ok", "bad"], partition=0),
     InvalidArgument),
    ("timestamp", lambda lg: lg.producer().send("t", b"v", timestamp_ms=-5), InvalidArgument),
    ("partitions 0", lambda lg: lg.create_topic("z", partitions=0), PylogError),
    ("partitions huge", lambda lg: lg.create_topic("z", partitions=10**6), PylogError),
    ("segment_bytes", lambda lg: lg.create_topic("z", segment_bytes=10), PylogError),
    ("unknown config", lambda lg: lg.create_topic("z", bogus=1), PylogError),
    ("shrink", lambda lg: lg.create_partitions("t", 1), PylogError),
]


@pytest.mark.parametrize("what,call,exc", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_invalid_calls_raise_and_change_nothing(log, logdir, what, call, exc):
    before = tree(logdir)
    with pytest.raises(exc):
        call(log)
    assert tree(logdir) == before
    assert log.partition("t", 0).state().next_offset == 1


@pytest.mark.parametrize("field", ["value", "key", "header"])
def test_size_limit_is_exact(log, field):
    """Binary-search the largest key / value / header value that fits
    max_message_bytes=1024; one byte more raises RecordTooLarge and writes
    nothing."""
    prod = log.producer()

    def send(n):
        blob = b"k" * n
        if field == "value":
            return prod.send("t", blob, partition=1)
        if field == "key":
            return prod.send("t", b"", key=blob, partition=1)
        return prod.send("t", b"", headers=[("h", blob)], partition=1)

    lo, hi = 0, 2048
    while lo < hi:
        mid = (lo + hi + 1) // 2
        end = log.partition("t", 1).state().next_offset
        try:
            send(mid)
            lo = mid
        except RecordTooLarge:
            assert log.partition("t", 1).state().next_offset == end
            hi = mid - 1
    assert 900 < lo < 1024
    md = send(lo)
    rec = log.partition("t", 1).fetch(Cursor(md.offset), 1)[0]
    fields = {"value": rec[3], "key": rec[2], "header": (rec[4] or [("", b"")])[0][1]}
    assert len(fields[field]) == lo
    with pytest.raises(RecordTooLarge):
        send(lo + 1)


def test_use_after_close_and_readonly(logdir):
    with pylog.open(logdir) as lg:
        lg.create_topic("t")
        prod = lg.producer()
    with pytest.raises(LogClosed):
        prod.send("t", b"v")
    with pytest.raises(LogClosed):
        lg.topics()
    with pylog.open(logdir, readonly=True) as ro:
        for call in (lambda: ro.create_topic("u"), lambda: ro.producer().send("t", b"v"),
                     lambda: ro.delete_topic("t")):
            with pytest.raises(ReadOnlyLog):
                call()


def _closed_log(logdir, n=20):
    with pylog.open(logdir) as lg:
        lg.create_topic("t", segment_bytes=65536, retention_ms=-1)
        for i in range(n):
            lg.producer().send("t", b"v%d" % i)


def test_planted_segment_is_never_read_as_good(logdir):
    _closed_log(logdir)
    d = os.path.join(logdir, "t-0")
    # a well-formed batch at offset 5 planted by someone else
    planted = pylog.batch.encode([(1, None, b"EVIL", [])], base_offset=5) \
        if hasattr(pylog, "batch") else None
    from pylog import batch
    planted = batch.encode([(1, None, b"EVIL", [])], base_offset=5)
    with open(os.path.join(d, "00000000000000000005.log"), "wb") as f:
        f.write(planted)
    try:
        with pylog.open(logdir) as lg:
            part = lg.partition("t", 0)
            try:
                recs = part.fetch(Cursor(0), 100)
            except PylogError:
                recs = []
            assert b"EVIL" not in [r[3] for r in recs]
            if part.failed is None and recs:
                assert [r[3] for r in recs] == [b"v%d" % i for i in range(20)]
    except PylogError:
        pass
    problems = __import__("pylog.verify").verify.verify_log(logdir)
    assert problems, "verify did not report the planted segment"


def test_planted_symlink_segment_is_refused(logdir, tmp_path):
    _closed_log(logdir)
    target = tmp_path / "secret"
    target.write_bytes(b"secret data" * 100)
    os.symlink(str(target), os.path.join(logdir, "t-0", "00000000000000000020.log"))
    try:
        with pylog.open(logdir) as lg:
            part = lg.partition("t", 0)
            recs = part.fetch(Cursor(0), 100) if part.failed is None else []
            assert all(b"secret" not in r[3] for r in recs)
            lg.producer().send("t", b"more")
    except PylogError:
        pass                                   # refused: fine
    assert target.read_bytes() == b"secret data" * 100


def test_symlinked_partition_directory_is_refused(logdir, tmp_path):
    _closed_log(logdir)
    d = os.path.join(logdir, "t-0")
    elsewhere = str(tmp_path / "elsewhere")
    os.rename(d, elsewhere)
    os.symlink(elsewhere, d)
    before = tree(elsewhere + "/x")
    with pytest.raises(PylogError):
        with pylog.open(logdir) as lg:
            lg.producer().send("t", b"through the symlink")
            lg.partition("t", 0).fetch(Cursor(0), 10)
    assert tree(elsewhere + "/x") == before


UMASK_CHILD = r"""
import os, sys, pylog
os.umask(int(sys.argv[2], 8))
with pylog.open(sys.argv[1]) as lg:
    lg.create_topic("t", partitions=2)
    p = lg.producer(); p.send("t", b"v"); p.flush()
    c = lg.consumer("t", group_id="g", auto_offset_reset="earliest")
    c.poll(timeout=0.2); c.commit(); c.close()
"""


@pytest.mark.parametrize("umask", ["077", "022", "000"])
def test_files_honour_umask_and_are_never_world_writable(logdir, child_env, umask):
    subprocess.run([sys.executable, "-c", UMASK_CHILD, logdir, umask], env=child_env,
                   check=True, timeout=60)
    mask = int(umask, 8)
    for dp, dns, fns in os.walk(logdir):
        for n in dns + fns + ["."]:
            p = os.path.join(dp, n)
            mode = os.lstat(p).st_mode & 0o777
            assert not mode & 0o002, f"{p} is world-writable ({oct(mode)})"
            assert not mode & mask, f"{p} ignores umask {umask} ({oct(mode)})"


def test_no_code_path_unpickles():
    banned_mod = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle"}
    pkg = os.path.join(ROOT, "pylog")
    for fn in os.listdir(pkg):
        if not fn.endswith(".py"):
            continue
        tree_ = ast.parse(open(os.path.join(pkg, fn), encoding="utf-8").read())
        for node in ast.walk(tree_):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & banned_mod, fn
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in banned_mod, fn
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec"), f"{fn}: {node.func.id}()"
