"""README "Errors": the exception tree, each error raised by a call a user
would make (including another user's log, reached through a child that
drops root), and invalid calls that leave the disk as it was.

(Named test_error_tree.py: tests/test_errors.py exists, and two test
modules of one basename cannot be collected together without packages.)"""

import errno
import hashlib
import os
import shutil
import subprocess
import tempfile

import pytest
from promisekit import read_all, run_child

import pylog

TREE = {
    "InvalidTopicName": ValueError, "InvalidConfig": None, "InvalidArgument": None,
    "TopicNotFound": LookupError, "TopicExists": None, "PartitionNotFound": None,
    "RecordTooLarge": None, "LogClosed": None, "ReadOnlyLog": None,
    "CorruptLogError": None, "OffsetOutOfRange": None, "CommitFailedError": None,
    "GroupNotEmpty": None, "LogFailedError": None, "ForkedLogError": None,
    "DeserializationError": ValueError, "LogOSError": OSError,
    "LogPermissionError": PermissionError, "ReadOnlyFilesystemError": OSError,
    "NotALogDirectoryError": NotADirectoryError, "LogNotFound": FileNotFoundError,
    "DiskFullError": None, "FileVanishedError": None, "MetadataBusyError": None,
    "InvalidTimestamp": ValueError, "TooManyOpenFilesError": OSError,
    "TooManyMapsError": OSError, "SendTimeoutError": None, "FlushTimeoutError": None,
    "GroupNotFound": LookupError, "CorruptGroupError": None,
    "ProducerFencedError": None, "TransactionError": None,
    "AcknowledgementError": None, "ShareGroupConfigError": ValueError,
    "MissingDependencyError": ImportError,
}


def test_every_error_is_a_pylog_error():
    """Every error is a subclass of ``pylog.PylogError`` (and of the fitting
    built-in): ``InvalidTopicName`` (ValueError), ``InvalidConfig``,
    ``InvalidArgument``, ``TopicNotFound`` (LookupError), ``TopicExists``,
    ``PartitionNotFound``, ``RecordTooLarge``, ``LogClosed``, ``ReadOnlyLog``,
    ``CorruptLogError`` (``.path``, ``.position``), ``OffsetOutOfRange``,
    ``CommitFailedError``, ``GroupNotEmpty``, ``LogFailedError``,
    ``ForkedLogError``, ``DiskFullError`` and ``FileVanishedError`` (both
    ``LogFailedError``), ``MetadataBusyError`` (``.holder_pid``),
    ``InvalidTimestamp`` (ValueError), ``DeserializationError`` (ValueError; ``.topic``,
    ``.partition``, ``.offset``, ``.record``), and ``LogOSError`` (OSError;
    ``.errno``, ``.filename``) for a filesystem call that failed, with its
    subclasses ``LogPermissionError`` (PermissionError: another user's log, a
    directory without write access; never reported as corruption),
    ``ReadOnlyFilesystemError``, ``NotALogDirectoryError`` (NotADirectoryError:
    the path is, or lies below, a file), ``LogNotFound``
    (FileNotFoundError: ``readonly=True`` on a path without a log) and
    ``TooManyOpenFilesError`` (out of file descriptors: names
    ``max_open_files`` and ``ulimit -n``) and ``TooManyMapsError`` (out of
    memory maps: names ``max_open_maps`` and ``vm.max_map_count``). The features
    add ``SendTimeoutError`` and ``FlushTimeoutError`` (lingering sends),
    ``GroupNotFound`` (LookupError) and ``CorruptGroupError`` (a
    ``CorruptLogError``), ``ProducerFencedError`` and ``TransactionError``
    (transactions), ``AcknowledgementError`` (``.records``) and
    ``ShareGroupConfigError`` (an ``InvalidArgument``) (work queues) and
    ``MissingDependencyError``
    (ImportError: an optional extra is not installed)."""
    for name, builtin in TREE.items():
        cls = getattr(pylog, name)
        assert issubclass(cls, pylog.PylogError), name
        if builtin is not None:
            assert issubclass(cls, builtin), name
    for name in ("DiskFullError", "FileVanishedError"):
        assert issubclass(getattr(pylog, name), pylog.LogFailedError), name
    assert issubclass(pylog.TooManyOpenFilesError, pylog.LogOSError)
    assert issubclass(pylog.TooManyMapsError, pylog.LogOSError)
    assert issubclass(pylog.CorruptGroupError, pylog.CorruptLogError)
    assert issubclass(pylog.ShareGroupConfigError, pylog.InvalidArgument)
    # (the README once said both were InvalidArgument: only this one is)
    assert not issubclass(pylog.AcknowledgementError, pylog.InvalidArgument)
    assert pylog.AcknowledgementError("gone", [("t", 0, 5)]).records == [("t", 0, 5)]
    assert pylog.MetadataBusyError("busy", holder_pid=42).holder_pid == 42
    e = pylog.CorruptLogError("bad crc", "/x/t-0/0.log", 1234)
    assert (e.path, e.position) == ("/x/t-0/0.log", 1234)


@pytest.fixture
def open_dir():
    """A directory every user may traverse (pytest's tmp_path lies below a
    0700 directory of root's, which would hide everything from nobody)."""
    d = tempfile.mkdtemp(prefix="pylog-promises-", dir="/tmp")
    os.chmod(d, 0o755)
    yield __import__("pathlib").Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _mistakes(log, path):
    """(what a user did, the call) for a range of real mistakes."""
    p = log.producer()
    c = log.consumer(enable_auto_commit=False)        # (joining a group writes)
    c.assign([pylog.TopicPartition("t", 0)])
    strict = log.consumer(enable_auto_commit=False, auto_offset_reset="none")
    strict.assign([pylog.TopicPartition("t", 0)])
    strict.seek(pylog.TopicPartition("t", 0), 999)
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
        # (a seek past the end is accepted, as Kafka; the reset policy
        # decides at the next fetch, and "none" refuses there)
        ("OffsetOutOfRange", lambda: strict.poll(timeout=0)),
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


def test_another_users_log_raises_pylog_errors(open_dir, child_env):
    """Every error is a subclass of ``pylog.PylogError`` (and of the fitting
    built-in)

    A log that belongs to root (mode 0700), opened by a process that dropped
    to user nobody, and a log created in root's directory: PylogErrors that
    are also PermissionError, never a bare OSError or an LMDB error."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    path = open_dir / "log"
    with pylog.open(path) as log:
        log.create_topic("t")
    os.chmod(path, 0o700)
    locked = open_dir / "root-only"
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
    """Invalid calls change nothing on disk

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


def _check_os_error(exc, cls, code, filename):
    assert isinstance(exc, cls) and isinstance(exc, pylog.LogOSError), type(exc)
    assert exc.errno == code and exc.filename == str(filename), (exc.errno, exc.filename)


def test_paths_that_hold_no_log(tmp_path):
    """and ``LogOSError`` (OSError;
    ``.errno``, ``.filename``) for a filesystem call that failed, with its
    subclasses

    A log opened at a regular file, below one, and read-only where there is
    no log (a missing path, a directory without meta/): the fitting
    subclass, with errno and the file it is about."""
    f = tmp_path / "afile"
    f.write_text("not a log")
    with pytest.raises(pylog.NotALogDirectoryError) as ei:
        pylog.open(f)
    _check_os_error(ei.value, NotADirectoryError, errno.ENOTDIR, f)
    with pytest.raises(pylog.NotALogDirectoryError) as ei:
        pylog.open(f / "below" / "log")
    _check_os_error(ei.value, NotADirectoryError, errno.ENOTDIR, f)
    with pytest.raises(pylog.LogNotFound) as ei:
        pylog.open(tmp_path / "missing", readonly=True)
    _check_os_error(ei.value, FileNotFoundError, errno.ENOENT, tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(pylog.LogNotFound) as ei:
        pylog.open(tmp_path, readonly=True)
    assert isinstance(ei.value, FileNotFoundError)
    assert f.read_text() == "not a log"


def test_read_only_filesystem(tmp_path):
    """``ReadOnlyFilesystemError``

    A log on a filesystem remounted read-only (a bind mount; root only):
    opening it for writing raises ReadOnlyFilesystemError; read-only, the
    records can still be read when lock.mdb may be written... which it
    cannot be here, so that too is a LogOSError, not a crash."""
    path = tmp_path / "log"
    with pylog.open(path) as log:
        log.create_topic("t")
        log.producer().send("t", b"v")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "--bind", str(path), str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {r.stderr.decode().strip()}")
    try:
        r = subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot remount read-only: {r.stderr.decode().strip()}")
        with pytest.raises(pylog.ReadOnlyFilesystemError) as ei:
            pylog.open(mnt)
        assert ei.value.errno == errno.EROFS
        try:
            with pylog.open(mnt, readonly=True) as ro:
                assert [r.value for r in read_all(ro, "t")] == [b"v"]
        except pylog.LogOSError:
            pass
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_messages_say_what_where_why_and_how_to_fix(tmp_path, open_dir, child_env):
    """Messages say
    what was tried, on which path, why, and how to fix it.

    The filesystem errors a user meets first: a file where the log should
    be, a missing log opened read-only, another user's log (a child that
    dropped to nobody)."""
    f = tmp_path / "afile"
    f.write_text("x")
    msgs = []
    for call in (lambda: pylog.open(f), lambda: pylog.open(tmp_path / "nope", readonly=True)):
        with pytest.raises(pylog.LogOSError) as ei:
            call()
        msgs.append((str(ei.value), ei.value.filename))
    if os.geteuid() == 0:
        path = open_dir / "log"
        pylog.open(path).close()
        out = run_child(r"""
import os, sys, pylog
os.setgid(65534); os.setuid(65534)
try:
    pylog.open(sys.argv[1])
except pylog.LogOSError as exc:
    print(exc.filename); print(exc)
""", path, env=child_env)
        msgs.append((out[1], out[0]))
    for msg, filename in msgs:
        what, _, rest = msg.partition(": ")
        assert what.startswith("open "), msg                       # what was tried
        assert filename and filename in msg, msg                   # on which path
        assert "(E" in rest, msg                                   # why (errno name)
        assert ";" in rest and len(rest.rsplit(";", 1)[1].strip()) > 10, msg   # the fix


def test_create_topic_is_all_or_nothing(tmp_path):
    """Invalid calls change
    nothing on disk; ``create_topic`` is all or nothing.

    A real disk running out of inodes (a tmpfs with 60; root only) while a
    20-partition topic is created: it fails, and leaves no topic and no
    partition directory behind; the log goes on, and a smaller topic can
    be created."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=60", "tmpfs",
                        str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        with pylog.open(mnt / "log") as log:
            log.create_topic("small")
            with pytest.raises(pylog.PylogError):
                log.create_topic("t", partitions=20)
            assert log.topics() == ["small"]
            assert not [n for n in os.listdir(mnt / "log") if n.startswith("t-")]
            with pytest.raises(pylog.TopicNotFound):
                log.producer().send("t", b"v")
            assert log.producer().send("small", b"v").offset == 0
            log.create_topic("u", partitions=2)
        with pylog.open(mnt / "log") as log:
            assert log.topics() == ["small", "u"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


READERS = r"""
import os, sys, pylog
os.setgid(65534); os.setuid(65534)
try:
    with pylog.open(sys.argv[1], readonly=True) as log:
        c = log.consumer(enable_auto_commit=False)
        c.assign([pylog.TopicPartition("t", 0)])
        c.seek_to_beginning()
        print("read", [r.value.decode() for r in c.poll(timeout=0.5)])
except pylog.PylogError as exc:
    print("PylogError", type(exc).__name__, isinstance(exc, PermissionError),
          isinstance(exc, pylog.CorruptLogError), str(exc).replace(chr(10), " "))
except BaseException as exc:
    print("BARE", type(exc).__name__, str(exc).replace(chr(10), " "))
"""


def _shared_log(open_dir):
    path = open_dir / "log"
    with pylog.open(path) as log:
        log.create_topic("t")
        log.producer().send("t", b"hello")
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for n in files:
            os.chmod(os.path.join(root, n), 0o644)
    return path


def test_readonly_needs_write_access_to_lock_mdb(open_dir, child_env):
    """Opening a log with
    ``readonly=True`` still needs write access to ``meta/lock.mdb``, where LMDB
    registers readers.

    A log everyone may read, opened read-only by user nobody: refused with
    LogPermissionError naming meta/lock.mdb (never as corruption) while
    only root may write that file, read once it may."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    path = _shared_log(open_dir)
    (out,) = run_child(READERS, path, env=child_env)
    assert out.startswith("PylogError LogPermissionError True False"), out
    assert "lock.mdb" in out
    os.chmod(path / "meta" / "lock.mdb", 0o666)
    assert run_child(READERS, path, env=child_env) == ["read ['hello']"]


def test_unreadable_segment_is_a_permission_error_not_corruption(open_dir, child_env):
    """``LogPermissionError`` (PermissionError: another user's log, a
    directory without write access; never reported as corruption)

    Another user's log whose segment only its owner may read (mode 000),
    read by user nobody with write access to lock.mdb: the read raises
    LogPermissionError, a PylogError and PermissionError, and not
    CorruptLogError."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    path = _shared_log(open_dir)
    os.chmod(path / "meta" / "lock.mdb", 0o666)
    os.chmod(path / "t-0" / "00000000000000000000.log", 0)
    (out,) = run_child(READERS, path, env=child_env)
    assert out.startswith("PylogError LogPermissionError True False"), out
