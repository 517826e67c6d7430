"""A process of the log that forked a child which outlives it (a pre-fork
master's workers, a multiprocessing pool that never touches the log): the
kernel locks that say the process is alive, or holds a partition's append
lock or the metadata writer lock, must die with that process, not live on
in the child's inherited descriptors (G6, P-3, L-7)."""

import multiprocessing as mp
import os
import signal
import time

import pylog

CTX = mp.get_context("fork")


def _holder(path, what, ready):
    """Open the log, fork a child that sleeps (never touching the log),
    then hold ``what`` as if killed in the middle of it."""
    log = pylog.open(path, sync="never")
    log.producer().send("t", b"first")
    part = log.partition("t", 0)
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    if what == "share":
        worker = log.share_consumer("t", group_id="s", auto_offset_reset="earliest")
        assert worker.poll(timeout_ms=2000)     # acquired, then killed
        os.write(ready, b"%d\n" % child)
        time.sleep(30)
    elif what == "append":
        part.shared.lock()                      # as inside an append
        os.write(ready, b"%d\n" % child)
        time.sleep(30)
    else:
        with log.meta._wlock.held("test"):      # as inside a commit
            os.write(ready, b"%d\n" % child)
            time.sleep(30)


def _killed_holding(path, what):
    """The pid of the holder's child, once the holder was SIGKILLed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _holder(path, what, w)
        finally:
            os._exit(1)
    os.close(w)
    try:
        line = b""
        deadline = time.monotonic() + 10
        while not line.endswith(b"\n") and time.monotonic() < deadline:
            chunk = os.read(r, 64)
            if not chunk:
                break
            line += chunk
    finally:
        os.close(r)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert line.endswith(b"\n"), "the holder did not start"
    return int(line)


def _send(path):
    with pylog.open(path, sync="never") as log:
        log.producer().send("t", b"second", partition=0)


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def test_append_lock_of_a_killed_process_is_free_despite_its_child(tmp_path):
    with pylog.open(tmp_path) as log:
        log.create_topic("t")
    child = _killed_holding(str(tmp_path), "append")
    try:
        sender = CTX.Process(target=_send, args=(str(tmp_path),))
        sender.start()
        sender.join(5)
        stuck = sender.is_alive()
        if stuck:
            sender.kill()
            sender.join()
        assert not stuck, "a send waited for the append lock of a dead process"
        assert sender.exitcode == 0
    finally:
        _kill(child)


def test_writer_lock_of_a_killed_process_is_free_despite_its_child(tmp_path):
    with pylog.open(tmp_path) as log:
        log.create_topic("t")
    child = _killed_holding(str(tmp_path), "meta")
    try:
        with pylog.open(tmp_path, metadata_timeout=2) as log:
            log.create_topic("u")       # MetadataBusyError while the lock lived on
    finally:
        _kill(child)


def test_share_records_of_a_killed_process_are_free_despite_its_child(tmp_path):
    """README: a share consumer whose process dies loses its records at
    once (not after record_lock_ms, 30 s)."""
    with pylog.open(tmp_path) as log:
        log.create_topic("t")
    child = _killed_holding(str(tmp_path), "share")
    try:
        with pylog.open(tmp_path) as log:
            worker = log.share_consumer("t", group_id="s", auto_offset_reset="earliest")
            got = []
            deadline = time.monotonic() + 3
            while not got and time.monotonic() < deadline:
                got = worker.poll(timeout_ms=200)
            assert [r.value for r in got] == [b"first"]
            worker.close()
    finally:
        _kill(child)


def test_child_closes_the_inherited_log_while_a_share_thread_held_a_lock(tmp_path):
    """A thread of the parent was inside a share consumer's poll or
    commit (holding a share file's thread lock) at the fork: the child's
    close() of the inherited Log closed the parent's share files, waited
    for that lock (which no thread there releases) and raised
    MetadataBusyError (19 of 30 forks under a busy share worker)."""
    import threading
    log = pylog.open(tmp_path, sync="never", metadata_timeout=2)
    log.create_topic("t")
    log.producer().send("t", b"job")
    worker = log.share_consumer("t", group_id="s", auto_offset_reset="earliest")
    assert worker.poll(timeout_ms=2000)
    share_file = next(iter(log.share_files()._files.values()))
    held, forked = threading.Event(), threading.Event()

    def poll_under_way():
        with share_file._lock.held(file=False):
            held.set()
            forked.wait(10)
            time.sleep(0.2)

    t = threading.Thread(target=poll_under_way)
    t.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            began = time.monotonic()
            log.close()
            code = 0 if time.monotonic() - began < 1 else 2
        finally:
            os._exit(code)
    forked.set()
    _, status = os.waitpid(pid, 0)
    t.join()
    worker.close()
    log.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_fork_as_a_log_closes_keeps_the_childs_reused_descriptors(tmp_path, monkeypatch):
    """A thread forks (multiprocessing starting a Process, with its pipes)
    while another closes a Log: the number of a lock descriptor just closed
    was taken by a file opened in between. The child's at-fork close of
    the Log's lock descriptors must not close that file (a multiprocessing
    child then dies of EBADF closing its pipe end)."""
    log = pylog.open(str(tmp_path / "log"))
    targets = {log._lock_fd, log.meta._wlock._fd}
    parent, real_close, kept = os.getpid(), os.close, []

    def close(fd):
        real_close(fd)
        if fd not in targets or os.getpid() != parent:
            return
        opened = [os.open(os.devnull, os.O_RDONLY)]
        while opened[-1] < fd:
            opened.append(os.open(os.devnull, os.O_RDONLY))
        assert opened[-1] == fd
        pid = os.fork()
        if pid == 0:
            try:
                os.fstat(fd)
                os._exit(0)
            except OSError:
                os._exit(1)
        kept.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        for f in opened:
            real_close(f)

    monkeypatch.setattr(os, "close", close)
    log.close()
    assert kept == [0, 0]
