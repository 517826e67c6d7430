"""gcpause: the collector is off inside, restored after, nesting across
threads, and left off when it was off before."""

import gc
import os
import threading

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


def test_pause_across_threads_reenables_after_the_last():
    inside = threading.Barrier(2)
    leave = threading.Event()

    def other():
        with paused():
            inside.wait()
            leave.wait(5)

    t = threading.Thread(target=other)
    t.start()
    with paused():
        inside.wait()
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
    inside = threading.Event()
    leave = threading.Event()

    def other():
        with paused():
            inside.set()
            leave.wait(5)

    t = threading.Thread(target=other)
    t.start()
    inside.wait(5)
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


def test_objects_dropped_after_the_pause_cost_no_collection():
    """Ending a pause allocates nothing the collector counts, so tuples
    subclasses built in it (send_batch's RecordMetadata) and dropped by the
    caller before its next allocation are never traversed; kept ones are."""
    from pylog.types import RecordMetadata

    def build():
        with paused():
            return [tuple.__new__(RecordMetadata, ("t", 0, i, 0)) for i in range(2000)]
    starts = []

    def count(phase, info):
        if phase == "start":
            starts.append(info["generation"])
    gc.collect()
    gc.callbacks.append(count)
    try:
        for _ in range(50):
            build()
        dropped = len(starts)
        kept = [build() for _ in range(50)]
    finally:
        gc.callbacks.remove(count)
    assert dropped == 0
    assert len(starts) - dropped >= 40 and len(kept) == 50
