"""gcpause: the collector is off inside, restored after, nesting across
threads, and left off when it was off before."""

import gc
import os
import signal
import threading
import time

from pylog.gcpause import paused


def test_pause_restores_and_nests():
    assert gc.isenabled()
    with paused():
        assert not gc.isenabled()
        with paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_pause_keeps_a_disabled_collector_disabled():
    gc.disable()
    try:
        with paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def _thread_inside_a_pause():
    """(thread, leave): a thread that holds a pause until ``leave`` is set."""
    inside, leave = threading.Event(), threading.Event()

    def hold():
        with paused():
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(5)
    return t, leave


def test_pause_across_threads_reenables_after_the_last():
    t, leave = _thread_inside_a_pause()
    with paused():
        pass
    assert not gc.isenabled()      # the other thread is still inside
    leave.set()
    t.join()
    assert gc.isenabled()


def test_exception_inside_restores():
    try:
        with paused():
            raise KeyError("x")
    except KeyError:
        pass
    assert gc.isenabled()


def test_fork_inside_another_threads_pause_leaves_the_child_collecting():
    t, leave = _thread_inside_a_pause()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with paused():
                pass
            code = 0 if gc.isenabled() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    leave.set()
    t.join()
    assert os.waitstatus_to_exitcode(status) == 0
    assert gc.isenabled()


def _interrupt_exit_then_pause_again() -> int:
    """Interrupt a pause's __exit__ while it holds the module lock, then
    pause again from another thread. 0 when all is well, else a code."""
    import sys

    from pylog import gcpause

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code is gcpause.paused._end.__code__:
            return local
        return None

    def local(frame, event, arg):
        if event == "line" and gcpause._lock.locked():
            sys.settrace(None)
            raise KeyboardInterrupt
        return local
    p = paused()
    p.__enter__()
    sys.settrace(tracer)
    try:
        p.__exit__(None, None, None)
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    if gcpause._lock.locked():
        return 2
    done = threading.Event()

    def pause_again():
        with paused():
            pass
        done.set()
    threading.Thread(target=pause_again, daemon=True).start()
    return 0 if done.wait(5) else 3


def test_interrupt_while_ending_a_pause_releases_the_lock():
    """A KeyboardInterrupt (or a raising signal handler) inside __exit__
    must not leave the module lock held: every later pause would hang.
    In a forked child, so that nothing of it can leak into later tests."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _interrupt_exit_then_pause_again()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the child hung: a pause after the interrupt blocked")
        time.sleep(0.01)
    code = os.waitstatus_to_exitcode(status)
    assert code != 2, "the interrupted __exit__ left the module lock held"
    assert code == 0, f"child exit code {code}"
    assert gc.isenabled()


def test_interrupt_at_the_entry_of_exit_still_ends_the_pause():
    """A Ctrl-C at the entry of ``__exit__`` (where CPython raises a
    pending signal) skipped its body: the pause count stayed one too high
    and the collector off for the rest of the process (a timer-driven
    Ctrl-C test left the collector off for every later test)."""
    from pylog import gcpause
    real = gcpause.paused.__exit__

    def interrupted(self, *exc):
        raise KeyboardInterrupt     # (as a signal handled at the entry)
    gcpause.paused.__exit__ = interrupted
    try:
        try:
            with paused():
                assert not gc.isenabled()
        except KeyboardInterrupt:
            pass
    finally:
        gcpause.paused.__exit__ = real
    assert gc.isenabled()
    assert gcpause._depth == 0
