"""pylog.forkgate: os.fork() waits for other threads' LMDB calls in flight
(G6), and those calls never wait for the fork in turn."""

import os
import signal
import threading
import time

import pylog
from pylog.forkgate import GATE


def _wait_child(pid: int, seconds: float) -> int | None:
    """The child's exit code, or None when it hung (then it is killed)."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.01)


def test_fork_waits_for_a_nested_call_not_the_other_way(tmp_path):
    """A thread inside a write transaction makes a nested LMDB call (a
    metadata read) just as another thread forks. The nested call waited
    for the fork, the fork for the thread's transaction: the fork took its
    full 10 s, then forked with the write transaction open, and the child
    hung for good closing the inherited environment."""
    log = pylog.open(tmp_path, sync="never")
    log.create_topic("t")
    meta = log.meta
    in_txn = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            with meta._txn("outer", write=True):
                in_txn.set()
                deadline = time.monotonic() + 5
                while not GATE._forking and time.monotonic() < deadline:
                    time.sleep(0.001)
                time.sleep(0.05)        # (the fork waits for this thread now)
                with meta._txn("nested") as txn:
                    txn.get(b"format", db=meta._info)
        except BaseException as exc:     # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    assert in_txn.wait(5)
    began = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with pylog.open(tmp_path) as fresh:
                fresh.describe_topic("t")
            code = 0
        finally:
            os._exit(code)
    took = time.monotonic() - began
    code = _wait_child(pid, 10)
    t.join()
    log.close()
    assert not errors, errors
    assert code == 0, "the child hung" if code is None else code
    assert took < 5, f"the fork waited {took:.1f} s"


def test_two_forks_at_once_keep_the_gate_shut(monkeypatch):
    """Two threads fork at once: the first fork's return opened the gate
    while the second still waited for calls in flight, so new calls
    started under it (and the second fork came after its full wait, with
    them in flight). The gate stays shut until the last fork returns."""
    from pylog import forkgate
    gate = forkgate.Gate()
    gate.enter()                            # a call in flight (this thread)
    done = []

    def fork(wait_s):
        monkeypatch.setattr(forkgate, "FORK_WAIT_S", wait_s)
        gate._before_fork()
        gate._after_fork_in_parent()
        done.append(wait_s)

    second = threading.Thread(target=fork, args=(30.0,))
    second.start()
    time.sleep(0.1)
    first = threading.Thread(target=fork, args=(0.1,))     # gives up waiting
    first.start()
    first.join(5)
    assert done == [0.1]
    entered = threading.Event()

    def call():
        gate.enter()
        entered.set()
        gate.leave()
    t = threading.Thread(target=call)
    t.start()
    assert not entered.wait(0.3), "a call started while a fork waits"
    gate.leave()                            # the second fork goes now
    second.join(5)
    assert entered.wait(5)
    t.join()
    assert done == [0.1, 30.0]


def test_child_reopens_at_once_while_a_thread_waits_for_the_writer_lock(tmp_path):
    """A thread of the parent held (or waited for) the metadata writer
    lock at the fork, outside any LMDB call: the child's first use of the
    inherited Log closed the inherited metadata, whose close waited for
    that thread's lock for the whole metadata_timeout (a ProcessPoolExecutor
    task stalled 10 s one round in two)."""
    log = pylog.open(tmp_path, sync="never", metadata_timeout=3)
    log.create_topic("t")
    held = threading.Event()
    forked = threading.Event()

    def holder():           # a commit that ends just after the fork
        with log.meta._wlock.held("test"):
            held.set()
            forked.wait(10)
            time.sleep(0.2)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            began = time.monotonic()
            log.producer()              # reopens the Log in the child
            code = 0 if time.monotonic() - began < 1.5 else 2
        finally:
            os._exit(code)
    forked.set()
    code = _wait_child(pid, 10)
    t.join()
    log.close()
    assert code == 0, {None: "the child hung", 2: "the child's reopen waited"}.get(code, code)
