"""Errors a user can cause on open and topic administration (issue 12): each
is a PylogError subclass that keeps the fitting built-in base, says what was
tried, on which path, why, and hints at the fix; the failed call changes
nothing on disk. A permission problem is never reported as corruption.

"Another user" is uid/gid 65534 (nobody): the test process runs as root,
which bypasses file permissions, so these tests fork, drop to that user in
the child and report the outcome over a pipe. The child must not import
anything new (the interpreter's own library may be unreadable to nobody):
every module it needs is imported here first."""

import errno
import gettext  # noqa: F401  (argparse's messages, needed by the CLI child)
import io
import json
import locale  # noqa: F401
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import pylog
import pylog.cli
import pylog.verify
from pylog import InvalidArgument, InvalidTopicName, PylogError
from pylog.errors import LogNotFound, NotALogDirectoryError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOBODY = 65534

pylog.cli.build_parser().format_help()     # argparse's lazy imports, done here

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="switching to another user needs root")


def snapshot(path):
    """Every entry under ``path`` with the bytes of its regular files, to
    prove a failed call changed nothing (LMDB's lock file and the shared
    state maps change on any open and are left out)."""
    out = {}
    for dp, dns, fns in os.walk(path):
        for n in dns + fns:
            p = os.path.join(dp, n)
            if os.path.isfile(p) and not p.endswith(("lock.mdb", "doorbell",
                                                     "partition.state")):
                with open(p, "rb") as f:
                    out[p] = f.read()
            else:
                out[p] = None
    return out


def as_user(fn, uid=NOBODY):
    """Run ``fn()`` in a forked child as ``uid`` (gid the same, no
    supplementary groups). Returns {"ok": repr(result)} or {"error": class
    name, "bases": [names of the classes it is an instance of], "message",
    "errno"}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # child
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                out = {"ok": repr(fn())}
            except BaseException as exc:            # report, never escape the child
                out = {"error": type(exc).__name__,
                       "bases": [c.__name__ for c in type(exc).__mro__],
                       "message": str(exc), "errno": getattr(exc, "errno", None)}
            os.write(w, json.dumps(out).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 1 << 16)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert status == 0 and chunks, f"child as uid {uid} failed (status {status})"
    return json.loads(b"".join(chunks))


def cli_as_user(*argv, uid=NOBODY):
    """``pylog.cli.main(argv)`` as ``uid``: {"ok": repr((exit code, stdout,
    stderr))}."""
    def run():
        out, err = io.StringIO(), io.StringIO()
        sys.stdout, sys.stderr = out, err
        try:
            code = pylog.cli.main([str(a) for a in argv])
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        return code, out.getvalue(), err.getvalue()
    res = as_user(run, uid)
    assert "ok" in res, res
    return eval(res["ok"])            # a repr of (int, str, str) from our own child


@pytest.fixture
def shared_dir():
    """A directory every user can reach (pytest's own tmp directories are
    0700), removed afterwards."""
    d = tempfile.mkdtemp(prefix="pylog-errors-")
    os.chmod(d, 0o755)
    yield d
    for dp, dns, _ in os.walk(d):
        for n in dns:
            os.chmod(os.path.join(dp, n), 0o755)
    shutil.rmtree(d, ignore_errors=True)


def make_log(path, mode=None):
    """A log at ``path`` with topic t (one record), created by this user
    (root) with the default umask 022; then ``chmod mode`` on the log
    directory when given."""
    old = os.umask(0o022)
    try:
        with pylog.open(path) as log:
            log.create_topic("t")
            log.producer().send("t", b"v")
    finally:
        os.umask(old)
    if mode is not None:
        os.chmod(path, mode)
    return path


# -- 6a: paths that cannot hold a log -------------------------------------------

def test_open_a_plain_file_is_not_a_log_directory(tmp_path):
    f = tmp_path / "plain"
    f.write_bytes(b"data")
    for kw in ({}, {"readonly": True}):
        with pytest.raises(NotALogDirectoryError) as ei:
            pylog.open(str(f), **kw)
        e = ei.value
        assert isinstance(e, PylogError) and isinstance(e, NotADirectoryError)
        assert str(f) in str(e) and "regular file" in str(e)
        assert "directory" in str(e).split(";", 1)[1]          # the hint
    assert f.read_bytes() == b"data" and os.listdir(tmp_path) == ["plain"]


def test_open_below_a_plain_file_is_not_a_log_directory(tmp_path):
    f = tmp_path / "plain"
    f.write_bytes(b"data")
    for kw in ({}, {"readonly": True}):
        with pytest.raises(NotALogDirectoryError) as ei:
            pylog.open(str(f / "sub" / "log"), **kw)
        assert isinstance(ei.value, NotADirectoryError)
        assert str(f) in str(ei.value) and "ENOTDIR" in str(ei.value)
    assert f.read_bytes() == b"data" and os.listdir(tmp_path) == ["plain"]


@pytest.mark.parametrize("inner", ["t-0", "meta", "t-0/sub/log"])
def test_open_inside_a_log_is_refused_and_names_it(tmp_path, inner):
    """A path inside a log (a partition's or LMDB's directory) was taken as
    a new log: meta/, doorbell and pylog.lock appeared among the outer
    log's files."""
    root = tmp_path / "log"
    with pylog.open(str(root)) as log:
        log.create_topic("t")
        log.producer().send("t", b"x")
    before = snapshot(str(root))
    with pytest.raises(InvalidArgument) as ei:
        pylog.open(str(root / inner))
    assert f"inside the log {root}" in str(ei.value)
    if "/" not in inner:
        with pytest.raises(LogNotFound) as ei:
            pylog.open(str(root / inner), readonly=True)
        assert f"inside the log {root}" in str(ei.value)
    assert snapshot(str(root)) == before
    with pylog.open(str(root)) as log:
        assert log.topics() == ["t"]


def test_open_a_dangling_symlink_is_not_a_log_directory(tmp_path):
    link = tmp_path / "link"
    os.symlink(str(tmp_path / "gone"), str(link))
    with pytest.raises(NotALogDirectoryError) as ei:
        pylog.open(str(link))
    assert "symlink" in str(ei.value)
    assert sorted(os.listdir(tmp_path)) == ["link"]


def test_readonly_open_of_a_missing_log_is_log_not_found(tmp_path):
    for p in (tmp_path / "missing", tmp_path):        # no such path; no meta/
        with pytest.raises(LogNotFound) as ei:
            pylog.open(str(p), readonly=True)
        assert isinstance(ei.value, FileNotFoundError)
        assert str(p) in str(ei.value) and "readonly" in str(ei.value)
    assert os.listdir(tmp_path) == []


@needs_root
def test_open_in_a_0555_directory_as_another_user(shared_dir):
    ro = os.path.join(shared_dir, "ro")
    os.mkdir(ro, 0o555)
    os.chmod(ro, 0o555)
    for path in (os.path.join(ro, "log"), ro):        # a new log below it; itself
        res = as_user(lambda path=path: pylog.open(path))
        assert res.get("error") == "LogPermissionError", res
        assert {"PylogError", "PermissionError"} <= set(res["bases"])
        assert res["errno"] == errno.EACCES
        msg = res["message"]
        assert path in msg and "permission denied" in msg and "EACCES" in msg
        assert "mode 0555" in msg and "corrupt" not in msg
    assert os.listdir(ro) == []


@needs_root
@pytest.mark.parametrize("mode", [None, 0o700], ids=["0755", "0700"])
def test_open_another_users_log_for_writing(shared_dir, mode):
    log = make_log(os.path.join(shared_dir, "log"), mode)
    before = snapshot(log)
    res = as_user(lambda: pylog.open(log))
    assert res.get("error") == "LogPermissionError", res
    assert "PermissionError" in res["bases"]
    msg = res["message"]
    assert f"open {log} for writing" in msg and "permission denied" in msg
    assert "owner uid 0" in msg and "readonly=True" in msg
    assert snapshot(log) == before


@needs_root
def test_a_read_only_log_directory_is_named_in_the_message(shared_dir):
    """The log belongs to the user, its directory was made 0555: the open
    cannot remove clean-shutdown there. The message named only that file
    (mode 0644, the user's own), not the directory whose mode refused."""
    log = make_log(os.path.join(shared_dir, "log"))
    for dp, dns, fns in os.walk(log):
        for n in dns + fns:
            os.chown(os.path.join(dp, n), NOBODY, NOBODY)
    os.chown(log, NOBODY, NOBODY)
    assert os.path.exists(os.path.join(log, "clean-shutdown"))
    os.chmod(log, 0o555)
    res = as_user(lambda: pylog.open(log))
    assert res.get("error") == "LogPermissionError", res
    msg = res["message"]
    assert f"its directory {log}: owner uid {NOBODY}, mode 0555" in msg, msg


# Run in a private mount namespace (unshare -m): bind-mount $SRC read-only
# on $DST, then run the python program in $BODY there.
RO_MOUNT_SCRIPT = ('mount --bind "$SRC" "$DST" && mount -o remount,ro,bind "$DST" '
                   '&& exec "$PY" -c "$BODY"')


READ_ONLY_FS_CHILD = r"""
import json, os, sys
import pylog
dst = os.environ["DST"]
out = {}
for name, call in [("write", lambda: pylog.open(os.path.join(dst, "log"))),
                   ("new", lambda: pylog.open(os.path.join(dst, "new"))),
                   ("topic", None)]:
    if call is None:
        with pylog.open(os.path.join(dst, "log"), readonly=True) as lg:
            out["readonly"] = lg.topics()
        continue
    try:
        call().close()
        out[name] = "opened"
    except BaseException as exc:
        out[name] = [type(exc).__name__, [c.__name__ for c in type(exc).__mro__],
                     str(exc)]
print(json.dumps(out))
"""


@needs_root
def test_open_on_a_read_only_filesystem(tmp_path, child_env):
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    src, dst = tmp_path / "src", tmp_path / "dst"
    os.mkdir(dst)
    make_log(str(src / "log"))
    before = snapshot(str(src))
    env = dict(child_env, SRC=str(src), DST=str(dst), PY=sys.executable,
               BODY=READ_ONLY_FS_CHILD)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        RO_MOUNT_SCRIPT],
                       env=env, capture_output=True, timeout=60, check=False)
    if r.returncode != 0 and b"mount" in r.stderr and not r.stdout:
        pytest.skip(f"cannot make a read-only mount here: {r.stderr.decode()[:200]}")
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    for name, path in (("write", "log"), ("new", "new")):
        cls, bases, msg = out[name]
        assert cls == "ReadOnlyFilesystemError", out
        assert "PylogError" in bases and "OSError" in bases
        assert os.path.join(str(dst), path) in msg and "EROFS" in msg
        assert "read-only" in msg
        assert ("readonly=True" if name == "write" else "writable filesystem") in msg
    assert out["readonly"] == ["t"]                  # reading still works
    assert snapshot(str(src)) == before


READ_ONLY_NO_LOCK_MDB_CHILD = r"""
import json, os
import pylog, pylog.verify
log = os.path.join(os.environ["DST"], "log")
with pylog.open(log, readonly=True) as lg:
    c = lg.consumer("t", auto_offset_reset="earliest")
    got = [r.value for r in c.poll(timeout_ms=2000)]
    topics = lg.topics()
print(json.dumps({"topics": topics, "got": len(got),
                  "problems": len(pylog.verify.verify_log(log))}))
"""


@needs_root
def test_read_only_filesystem_without_lock_mdb_opens_read_only(tmp_path, child_env):
    # a log copied without meta/lock.mdb (LMDB's lock file, which backups
    # may leave out) onto read-only media: nobody can have it open for
    # writing there, and LMDB reads it without a lock file
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    src, dst = tmp_path / "src", tmp_path / "dst"
    os.mkdir(dst)
    make_log(str(src / "log"))
    os.unlink(src / "log" / "meta" / "lock.mdb")
    before = snapshot(str(src))
    env = dict(child_env, SRC=str(src), DST=str(dst), PY=sys.executable,
               BODY=READ_ONLY_NO_LOCK_MDB_CHILD)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        RO_MOUNT_SCRIPT],
                       env=env, capture_output=True, timeout=60, check=False)
    if r.returncode != 0 and b"mount" in r.stderr and not r.stdout:
        pytest.skip(f"cannot make a read-only mount here: {r.stderr.decode()[:200]}")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert json.loads(r.stdout) == {"topics": ["t"], "got": 1, "problems": 0}
    assert snapshot(str(src)) == before


BIND_MOUNT_SCRIPT = 'mount --bind "$SRC" "$DST" && exec "$PY" -c "$BODY"'

TWO_PATHS_CHILD = r"""
import json, os, subprocess, sys
import pylog
log = os.path.join(os.environ["SRC"], "log")
first = pylog.open(log)
txn = first.meta.env.begin()        # a read (its snapshot) in progress
try:
    pylog.open(os.path.join(os.environ["DST"], "log")).close()
    second = "opened"
except pylog.PylogError as exc:
    second = [type(exc).__name__, str(exc)]
# another process's open frees the reader slots of processes it finds dead
subprocess.run([sys.executable, "-c", "import pylog, sys; pylog.open(sys.argv[1]).close()",
                log], check=True, timeout=60)
readers = first.meta.env.readers().strip().splitlines()[1:]
print(json.dumps({"second": second, "readers": len(readers)}))
"""


@needs_root
def test_one_log_open_twice_in_a_process_through_a_bind_mount(tmp_path, child_env):
    # LMDB must not open one environment twice in a process: the refused
    # second open dropped the process's lock on lock.mdb, so the next
    # process to open the log freed the slot of its read in progress (its
    # snapshot then unprotected from writers), and it called the log corrupt
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1)")
    src, dst = tmp_path / "src", tmp_path / "dst"
    os.mkdir(dst)
    make_log(str(src / "log"))
    env = dict(child_env, SRC=str(src), DST=str(dst), PY=sys.executable,
               BODY=TWO_PATHS_CHILD)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        BIND_MOUNT_SCRIPT],
                       env=env, capture_output=True, timeout=60, check=False)
    if r.returncode != 0 and b"mount" in r.stderr and not r.stdout:
        pytest.skip(f"cannot bind-mount here: {r.stderr.decode()[:200]}")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    out = json.loads(r.stdout)
    assert out["readers"] == 1, out
    cls, msg = out["second"]
    assert cls == "PylogError", out
    assert f"open already as {src / 'log'}" in msg, msg


# -- 6b: a permission problem is never reported as corruption --------------------

def _assert_permission_not_corruption(res, path):
    assert res.get("error") == "LogPermissionError", res
    assert {"PylogError", "PermissionError"} <= set(res["bases"])
    assert "CorruptLogError" not in res["bases"]
    msg = res["message"]
    assert path in msg and "permission denied" in msg and "EACCES" in msg
    assert "corrupt" not in msg and "pylog verify" not in msg


@needs_root
def test_readonly_open_of_another_users_log_is_a_permission_error(shared_dir):
    # 0755 with 0644 files (umask 022): LMDB readers must write meta/lock.mdb
    log = make_log(os.path.join(shared_dir, "log"))
    res = as_user(lambda: pylog.open(log, readonly=True))
    _assert_permission_not_corruption(res, os.path.join(log, "meta", "lock.mdb"))
    assert f"open {log} read-only" in res["message"]
    assert "owner uid 0" in res["message"] and "lock.mdb" in res["message"]
    # 0700: nothing inside can even be looked at
    os.chmod(log, 0o700)
    res = as_user(lambda: pylog.open(log, readonly=True))
    _assert_permission_not_corruption(res, log)
    assert "mode 0700" in res["message"]


@needs_root
def test_readonly_open_with_an_unreadable_partition_is_a_permission_error(shared_dir):
    log = make_log(os.path.join(shared_dir, "log"))
    os.chmod(os.path.join(log, "meta", "lock.mdb"), 0o666)
    os.chmod(os.path.join(log, "t-0"), 0o700)
    res = as_user(lambda: pylog.open(log, readonly=True).describe_topic("t"))
    _assert_permission_not_corruption(res, os.path.join(log, "t-0"))
    res = as_user(lambda: pylog.verify.verify_log(log))
    _assert_permission_not_corruption(res, os.path.join(log, "t-0"))


@needs_root
@pytest.mark.parametrize("mode", [None, 0o700], ids=["0755", "0700"])
@pytest.mark.parametrize("argv", [("info",), ("info", "--json"), ("verify",),
                                  ("verify", "--json"), ("topics",),
                                  ("groups",), ("tail", "@", "t")],
                         ids=lambda a: " ".join(a))
def test_cli_reports_another_users_log_as_a_permission_problem(shared_dir, mode, argv):
    log = make_log(os.path.join(shared_dir, "log"), mode)
    before = snapshot(log)
    args = [log if a == "@" else a for a in argv]
    if "@" not in argv:
        args.insert(1, log)
    code, out, err = cli_as_user(*args)
    assert code == 2, (out, err)
    assert err.startswith("pylog: error: ") and len(err.splitlines()) == 1, err
    assert "permission denied" in err and "EACCES" in err and log in err
    assert "corrupt" not in (out + err).lower() and "pylog verify" not in err
    assert snapshot(log) == before


@needs_root
def test_cli_verify_with_an_unreadable_partition_is_a_permission_problem(shared_dir):
    log = make_log(os.path.join(shared_dir, "log"))
    os.chmod(os.path.join(log, "meta", "lock.mdb"), 0o666)
    os.chmod(os.path.join(log, "t-0"), 0o700)
    code, out, err = cli_as_user("verify", log)
    assert code == 2, (out, err)
    assert err.startswith("pylog: error: verify ")
    assert "permission denied" in err and os.path.join(log, "t-0") in err
    assert "corrupt" not in (out + err).lower()
    # info describes what it can read and warns about the rest (exit 1)
    code, out, err = cli_as_user("info", log)
    assert code == 1, (out, err)
    assert err.startswith("pylog: warning: topic t: ")
    assert "permission denied" in err and os.path.join(log, "t-0") in err
    assert "corrupt" not in (out + err).lower()


# -- 6c: create_topic is all or nothing -------------------------------------------

def _topic_dirs(log, topic):
    return sorted(n for n in os.listdir(log) if n.startswith(topic + "-"))


@pytest.fixture
def users_log(shared_dir):
    """A log owned by nobody (made by nobody) with topic a, in a directory
    nobody owns; its path."""
    home = os.path.join(shared_dir, "home")
    os.mkdir(home)
    os.chown(home, NOBODY, NOBODY)
    log = os.path.join(home, "log")

    def make():
        with pylog.open(log) as lg:
            lg.create_topic("a")
    assert "ok" in as_user(make)
    return log


@needs_root
def test_create_topic_refused_by_permissions_leaves_nothing(users_log):
    log = users_log

    def attempt():
        # the owner made the log directory 0555: meta/ stays writable, the
        # partition directories cannot be made
        with pylog.open(log) as lg:
            os.chmod(log, 0o555)
            try:
                lg.create_topic("b", partitions=3)
            except PylogError as exc:
                err = [type(exc).__name__, isinstance(exc, PermissionError), str(exc)]
            else:
                err = None
            others = []
            for call in (lambda: lg.create_partitions("a", 3),
                         lambda: lg.delete_topic("a")):
                try:
                    call()
                except PylogError as exc:
                    others.append([type(exc).__name__, str(exc)])
                else:
                    others.append(None)
            return err, others, lg.topics(), lg.describe_topic("a").partitions
    res = as_user(attempt)
    assert "ok" in res, res
    err, others, topics, a_parts = eval(res["ok"])
    assert err is not None and err[:2] == ["LogPermissionError", True], err
    assert f"create topic 'b' in {log}" in err[2] and "EACCES" in err[2]
    assert "nothing was created" in err[2] and f"chmod u+wx {log}" in err[2]
    assert [o and o[0] for o in others] == ["LogPermissionError"] * 2, others
    assert f"add partitions to 'a' in {log}" in others[0][1]
    assert f"delete topic 'a' in {log}" in others[1][1]
    assert "nothing was deleted" in others[1][1]
    assert topics == ["a"] and a_parts == 1
    assert _topic_dirs(log, "b") == [] and _topic_dirs(log, "a") == ["a-0"]
    os.chmod(log, 0o755)
    assert pylog.verify.verify_log(log) == []
    with pylog.open(log, readonly=True) as lg:       # another process: same view
        assert lg.topics() == ["a"]

    def retry():                                     # the fix: nothing in the way
        with pylog.open(log) as lg:
            return lg.create_topic("b", partitions=3).partitions
    assert as_user(retry) == {"ok": "3"}
    assert _topic_dirs(log, "b") == ["b-0", "b-1", "b-2"]


def test_create_topic_failing_on_a_later_partition_is_rolled_back(tmp_path):
    log = str(tmp_path / "log")
    make_log(log)
    squatter = os.path.join(log, "b-2")
    with open(squatter, "wb") as f:                 # a file where b-2/ must go
        f.write(b"not mine")
    with pylog.open(log) as lg:
        with pytest.raises(PylogError) as ei:
            lg.create_topic("b", partitions=4)
        assert isinstance(ei.value, OSError) and ei.value.errno == errno.EEXIST
        msg = str(ei.value)
        assert f"create topic 'b' in {log}" in msg and squatter in msg
        assert "nothing was created" in msg
        assert lg.topics() == ["t"]
        assert sorted(os.listdir(log)) == sorted(
            ["meta", "meta.lock", "pylog.lock", "doorbell", "t-0", "b-2"])
        with open(squatter, "rb") as f:
            assert f.read() == b"not mine"
        with pytest.raises(pylog.TopicNotFound):
            lg.describe_topic("b")
    assert pylog.verify.verify_log(log) == []
    os.unlink(squatter)
    with pylog.open(log) as lg:
        assert lg.create_topic("b", partitions=4).partitions == 4


# -- 6d: an empty path is refused, not the current directory ------------------------

class _PathLike:
    def __init__(self, p):
        self.p = p

    def __fspath__(self):
        return self.p


@pytest.mark.parametrize("path", ["", _PathLike(""), "log\0x", _PathLike("a\0")],
                         ids=["empty", "empty PathLike", "NUL", "NUL PathLike"])
@pytest.mark.parametrize("readonly", [False, True], ids=["rw", "ro"])
def test_open_refuses_an_empty_or_nul_path(tmp_path, monkeypatch, path, readonly):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgument) as ei:
        pylog.open(path, readonly=readonly)
    msg = str(ei.value)
    assert ("empty" in msg and "'.'" in msg) if not os.fspath(path) else "NUL" in msg
    assert os.listdir(tmp_path) == []


# -- 6e: group ids are validated -------------------------------------------------

BAD_GROUPS = [123, None, b"g", "", "g\0x", "g" * 256, ["g"]]


@pytest.mark.parametrize("group", BAD_GROUPS, ids=lambda g: repr(g)[:12])
def test_group_admin_refuses_a_bad_group_id(tmp_path, group):
    path = make_log(str(tmp_path / "log"))
    with pylog.open(path) as log:
        before = snapshot(path)
        for call in (lambda: log.describe_group(group),
                     lambda: log.reset_group(group, to="earliest"),
                     lambda: log.reset_group(group, to="earliest", execute=False)):
            with pytest.raises(InvalidArgument) as ei:
                call()
            assert "group" in str(ei.value) and "255" in str(ei.value)
        assert log.groups() == []
        assert snapshot(path) == before


def test_longest_group_id_is_accepted(tmp_path):
    with pylog.open(str(tmp_path / "log")) as log:
        g = log.describe_group("g" * 255)
        assert g["group"] == "g" * 255 and g["partitions"] == []


@pytest.mark.parametrize("topic", [123, "", "../x"], ids=repr)
def test_reset_group_refuses_a_bad_topic(tmp_path, topic):
    path = make_log(str(tmp_path / "log"))
    with pylog.open(path) as log:
        before = snapshot(path)
        with pytest.raises(InvalidTopicName):
            log.reset_group("g", to="earliest", topic=topic)
        assert snapshot(path) == before


# -- other bare built-ins on the topic paths -------------------------------------

@pytest.mark.parametrize("call,exc", [
    (lambda lg: lg.partitions_for(123), InvalidTopicName),
    (lambda lg: lg.partitions_for(["t"]), InvalidTopicName),
    (lambda lg: lg.partition(None, 0), InvalidTopicName),
    (lambda lg: lg.partition(b"t", 0), InvalidTopicName),
    (lambda lg: lg.partition("t", []), pylog.PartitionNotFound),
    (lambda lg: lg.partition("t", {}), pylog.PartitionNotFound),
], ids=["partitions_for int", "partitions_for list", "partition None",
        "partition bytes", "partition p list", "partition p dict"])
def test_topic_lookups_refuse_bad_types(tmp_path, call, exc):
    path = make_log(str(tmp_path / "log"))
    with pylog.open(path) as log:
        before = snapshot(path)
        with pytest.raises(exc):
            call(log)
        assert snapshot(path) == before


def test_open_a_device_is_not_a_log_directory():
    with pytest.raises(NotALogDirectoryError) as ei:
        pylog.open("/dev/null")
    assert "/dev/null is a non-directory" in str(ei.value)


def test_argument_messages_state_the_real_bounds(tmp_path):
    """Found by an independent review: send_batch(t, 5) was a bare
    TypeError; poll(max_records=10**7) said 'expected int >= 1'; a
    timestamp of 2**63-1 was called negative."""
    with pylog.open(tmp_path / "log") as log:
        log.create_topic("t")
        p = log.producer()
        for bad in (5, None):
            with pytest.raises(pylog.InvalidArgument, match="iterable of records"):
                p.send_batch("t", bad)
        with pytest.raises(pylog.InvalidArgument, match=r"\[0, 2\*\*62\)"):
            p.send("t", b"v", timestamp_ms=2**63 - 1)
        c = log.consumer("t")
        with pytest.raises(pylog.InvalidArgument, match="1000000"):
            c.poll(max_records=10**7)
        c.close()
        assert log.describe_topic("t").partition_info[0].end_offset == 0


def test_bad_values_found_by_trying_are_refused(log):
    """Inputs a user tried that got through: a NaN poll timeout (it
    waited forever), a seek past 2**63 (the next commit failed with an
    OverflowError and close left a ghost member), and an acknowledge of
    something that is not a record (IndexError/TypeError from inside)."""
    log.create_topic("t")
    log.producer().send("t", b"a")
    with log.consumer("t", group_id="g", auto_offset_reset="earliest") as c:
        for kwargs in ({"timeout": float("nan")}, {"timeout_ms": float("nan")}):
            with pytest.raises(InvalidArgument, match="nan"):
                c.poll(**kwargs)
        c.poll(timeout=5)
        with pytest.raises(InvalidArgument, match=r"2\*\*63"):
            c.seek(pylog.TopicPartition("t", 0), 1 << 63)
        c.commit()
    assert log.consumer("t", group_id="g").committed(pylog.TopicPartition("t", 0)) == 1
    q = log.share_consumer("t", group_id="w", auto_offset_reset="earliest")
    for bad in ("xx", None, 5, ("t", 0)):
        with pytest.raises(InvalidArgument, match="expected a ShareRecord"):
            q.acknowledge(bad)
    for timeout_ms in (-1, float("nan")):
        with pytest.raises(InvalidArgument, match="timeout_ms"):
            q.poll(timeout_ms=timeout_ms)
    assert [r.value for r in q.poll(timeout_ms=2000)] == [b"a"]
    q.close()


def test_reset_group_refuses_a_negative_time(log):
    """``reset_group(to="datetime", value=-1)`` returned {} for a group
    with no commits instead of refusing the value."""
    log.create_topic("t")
    with pytest.raises(InvalidArgument, match=">= 0"):
        log.reset_group("nobody", to="datetime", value=-1)


def test_pickling_a_log_or_client_names_what_to_do(tmp_path):
    """Passing a Log or a client to a spawn / forkserver process or a
    ProcessPoolExecutor pickles it: that failed with "cannot pickle
    '_thread.RLock' object", naming nothing a user wrote."""
    import pickle
    with pylog.open(tmp_path) as log:
        log.create_topic("t")
        for obj in (log, log.producer(), log.producer(linger_ms=5),
                    log.producer(idempotent=True), log.consumer("t", group_id="g"),
                    log.share_consumer("t", group_id="s")):
            with pytest.raises(TypeError, match=r"cannot be sent to another "
                               r"process.*pylog\.open\(path\)"):
                pickle.dumps(obj)
            obj.close() if obj is not log else None


def test_pickling_an_aio_log_or_client_names_what_to_do(tmp_path):
    """The same for pylog.aio's (handed to a ProcessPoolExecutor through
    run_in_executor): "cannot pickle '_queue.SimpleQueue' object"."""
    import asyncio
    import pickle

    import pylog.aio

    async def main():
        async with pylog.aio.open(tmp_path) as alog:
            await alog.create_topic("t")
            clients = [alog.producer(), alog.producer(transactional_id="x"),
                       alog.consumer("t", group_id="g"),
                       alog.share_consumer("t", group_id="s")]
            for obj in [alog, *clients]:
                with pytest.raises(TypeError, match=r"a pylog AIO\w+ cannot be sent to "
                                   r"another process.*pylog\.open\(path\)"):
                    pickle.dumps(obj)
            for obj in clients:
                await obj.close()

    asyncio.run(main())
