"""README "Errors": the exception tree, each error raised by a call a user
would make (including another user's log, reached through a child that
drops root), and invalid calls that leave the disk as it was.

(Named test_error_tree.py: tests/test_errors.py exists, and two test
modules of one basename cannot be collected together without packages.)"""

import hashlib
import os

import pytest

import pylog
from promisekit import run_child

TREE = {
    "InvalidTopicName": ValueError, "InvalidConfig": None, "InvalidArgument": None,
    "TopicNotFound": LookupError, "TopicExists": None, "PartitionNotFound": None,
    "RecordTooLarge": None, "LogClosed": None, "ReadOnlyLog": None,
    "CorruptLogError": None, "OffsetOutOfRange": None, "CommitFailedError": None,
    "GroupNotEmpty": None, "LogFailedError": None, "ForkedLogError": None,
    "DeserializationError": ValueError,
}


def test_every_error_is_a_pylog_error():
    """Every error is a subclass of ``pylog.PylogError`` (and of the fitting
    built-in): ``InvalidTopicName`` (ValueError), ``InvalidConfig``,
    ``InvalidArgument``, ``TopicNotFound`` (LookupError), ``TopicExists``,
    ``PartitionNotFound``, ``RecordTooLarge``, ``LogClosed``, ``ReadOnlyLog``,
    ``CorruptLogError`` (``.path``, ``.position``), ``OffsetOutOfRange``,
    ``CommitFailedError``, ``GroupNotEmpty``, ``LogFailedError``,
    ``ForkedLogError``, ``DeserializationError`` (ValueError)."""
    for name, builtin in TREE.items():
        cls = getattr(pylog, name)
        assert issubclass(cls, pylog.PylogError), name
        if builtin is not None:
            assert issubclass(cls, builtin), name
    e = pylog.CorruptLogError("bad crc", "/x/t-0/0.log", 1234)
    assert (e.path, e.position) == ("/x/t-0/0.log", 1234)


def _mistakes(log, path):
    """(what a user did, the call) for a range of real mistakes."""
    p = log.producer()
    c = log.consumer(enable_auto_commit=False)        # (joining a group writes)
    c.assign([pylog.TopicPartition("t", 0)])
    return [
        ("InvalidTopicName", lambda: log.create_topic("../escape")),
        ("InvalidTopicName", lambda: p.send("no spaces", b"v")),
        ("InvalidConfig", lambda: log.create_topic("u", segment_bytes=1000)),
        ("InvalidConfig", lambda: log.create_topic("u", retention_hours=3)),
        ("InvalidArgument", lambda: log.create_topic("u", partitions=0)),
        ("InvalidArgument", lambda: p.send("t", "a str, not bytes")),
        ("InvalidArgument", lambda: c.poll(timeout=-1)),
        ("InvalidArgument", lambda: log.consumer("t", auto_offset_reset="oldest")),
        ("TopicNotFound", lambda: p.send("missing", b"v")),
        ("TopicNotFound", lambda: log.describe_topic("missing")),
        ("TopicExists", lambda: log.create_topic("t")),
        ("PartitionNotFound", lambda: p.send("t", b"v", partition=7)),
        ("RecordTooLarge", lambda: p.send("t", b"x" * 70_000)),
        ("OffsetOutOfRange", lambda: c.seek(pylog.TopicPartition("t", 0), 999)),
        ("InvalidArgument", lambda: pylog.open(path, sync="sometimes")),
    ]


def test_user_mistakes_raise_pylog_errors(tmp_path):
    """Every error is a subclass of ``pylog.PylogError`` (and of the fitting
    built-in)

    Wrong names, configs, types, topics, partitions, sizes and offsets:
    each raises the PylogError that names the mistake."""
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t", partitions=2, segment_bytes=65536, max_message_bytes=65536)
        for want, call in _mistakes(log, path):
            with pytest.raises(getattr(pylog, want)):
                call()
    with pylog.open(path, readonly=True) as ro:
        with pytest.raises(pylog.ReadOnlyLog):
            ro.producer().send("t", b"v")
        with pytest.raises(pylog.ReadOnlyLog):
            ro.create_topic("u")
    log.close()
    with pytest.raises(pylog.LogClosed):
        log.topics()
    with pytest.raises(pylog.PylogError):
        pylog.open(tmp_path / "log" / "meta" / "data.mdb")      # a file, not a directory


OTHER_USER = r"""
import os, sys, pylog
os.setgid(65534); os.setuid(65534)          # nobody
for what, call in (("open", lambda: pylog.open(sys.argv[1])),
                   ("read", lambda: pylog.open(sys.argv[1], readonly=True).topics()),
                   ("create", lambda: pylog.open(sys.argv[2]))):
    try:
        call()
        print(what, "worked")
    except pylog.PylogError as exc:
        print(what, "PylogError", type(exc).__name__, isinstance(exc, PermissionError))
    except BaseException as exc:
        print(what, "BARE", type(exc).__name__, exc)
"""


def test_another_users_log_raises_pylog_errors(tmp_path, child_env):
    """Every error is a subclass of ``pylog.PylogError`` (and of the fitting
    built-in)

    A log that belongs to root (mode 0700), opened by a process that dropped
    to user nobody, and a log created in root's directory: PylogErrors that
    are also PermissionError, never a bare OSError or an LMDB error."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t")
    os.chmod(path, 0o700)
    os.chmod(tmp_path, 0o755)
    locked = tmp_path / "root-only"
    locked.mkdir(mode=0o755)
    out = run_child(OTHER_USER, path, locked / "new", env=child_env)
    assert out == ["open PylogError LogPermissionError True",
                   "read PylogError LogPermissionError True",
                   "create PylogError LogPermissionError True"], out


def _snapshot(path):
    out = {}
    for root, _, files in os.walk(path):
        for n in files:
            p = os.path.join(root, n)
            rel = os.path.relpath(p, path)
            if rel in ("meta/lock.mdb", "pylog.lock", "doorbell"):
                continue        # reader slots and locks, not data
            with open(p, "rb") as f:
                out[rel] = (os.path.getsize(p), hashlib.sha256(f.read()).hexdigest())
    return out


def test_invalid_calls_change_nothing_on_disk(tmp_path):
    """Invalid calls change nothing on disk.

    Every file of the log (segments, indexes, partition state, LMDB's data)
    hashed before and after every mistake of the test above, plus invalid
    batches, admin calls and group calls."""
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t", partitions=2, segment_bytes=65536, max_message_bytes=65536)
        p = log.producer()
        p.send_batch("t", [b"v%d" % i for i in range(10)])
        with log.consumer("t", group_id="g2", auto_offset_reset="earliest",
                          enable_auto_commit=False) as c:
            c.poll(timeout=1)
            c.commit()
        log.flush()
        before = _snapshot(path)
        extra = [
            lambda: p.send_batch("t", [b"ok", b"ok", 42]),
            lambda: p.send_batch("t", [(b"k", b"v", [("h", "not bytes")])]),
            lambda: log.create_partitions("t", 1),
            lambda: log.alter_topic("t", segment_bytes=-5),
            lambda: log.alter_topic("t", colour="blue"),
            lambda: log.delete_topic("missing"),
            lambda: log.reset_group("g2", to="offset", value=999),
            lambda: log.reset_group("g2", to="yesterday"),
            lambda: log.consumer("t", group_id="g2").commit({("t", 0): -1}),
        ]
        for _, call in _mistakes(log, path):
            with pytest.raises(pylog.PylogError):
                call()
        for call in extra:
            with pytest.raises(pylog.PylogError):
                call()
        # (compared before any flush: a flush may write a recovery
        # checkpoint, a valid change of its own)
        assert _snapshot(path) == before
