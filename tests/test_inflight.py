"""pylog.inflight: calls in flight of all threads and of each, and a
bounded wait for the other threads' ones (the mechanism of forkgate and
metacalls)."""

import threading
import time
from unittest import mock

import pytest

from pylog.inflight import InFlight


def _call_in_thread(flight, started, release):
    with flight.lock:
        flight.count_in()
    started.set()
    release.wait(10)
    with flight.lock:
        flight.count_out()


def test_drain_waits_for_another_threads_call_not_its_own():
    flight = InFlight()
    with flight.lock:
        flight.count_in()                   # this thread's own: not waited for
        began = time.monotonic()
        flight.drain(5.0)
        assert time.monotonic() - began < 1.0
    started, release = threading.Event(), threading.Event()
    t = threading.Thread(target=_call_in_thread, args=(flight, started, release))
    t.start()
    assert started.wait(5)
    threading.Timer(0.3, release.set).start()
    with flight.lock:
        began = time.monotonic()
        flight.drain(5.0)
        took = time.monotonic() - began
    t.join(5)
    assert 0.2 < took < 4.0, f"drain returned after {took:.2f} s"


def test_drain_gives_up_on_a_count_left_behind():
    flight = InFlight()
    t = threading.Thread(target=lambda: (flight.lock.acquire(), flight.count_in(),
                                         flight.lock.release()))
    t.start()
    t.join(5)                               # its call never ends
    with flight.lock:
        began = time.monotonic()
        flight.drain(0.3)
        took = time.monotonic() - began
    assert 0.25 < took < 3.0


def test_in_child_keeps_only_the_callers_calls():
    flight = InFlight()
    started, release = threading.Event(), threading.Event()
    t = threading.Thread(target=_call_in_thread, args=(flight, started, release))
    t.start()
    assert started.wait(5)
    with flight.lock:                       # (a fork holds it through the fork)
        flight.count_in()
        flight.count_in()
        child = flight.in_child()
    release.set()
    t.join(5)
    assert child.own() == 2
    assert child.lock.acquire(timeout=1)    # free, though the parent's was held
    child.drain(0.0)
    assert child._active == 2
    child.count_out()
    child.count_out()
    assert child._active == 0 and child.own() == 0


class _InterruptedRelease:
    """A lock whose release is followed by a KeyboardInterrupt, as a signal
    handler raises it at the first check after the call."""

    def __init__(self, lock):
        self._lock = lock
        self.armed = True

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *exc):
        self._lock.__exit__(*exc)
        if self.armed and exc[0] is None:
            self.armed = False
            raise KeyboardInterrupt

    def acquire(self, *a):
        return self._lock.acquire(*a)

    def release(self):
        self._lock.release()


def _counts(flight):
    return flight._active, flight.own()


def test_an_interrupt_as_a_gate_enter_ends_leaves_no_count():
    from pylog.forkgate import Gate
    gate = Gate()
    gate._flight.lock = _InterruptedRelease(gate._flight.lock)
    with pytest.raises(KeyboardInterrupt):
        gate.enter()
    assert _counts(gate._flight) == (0, 0)


def test_an_interrupt_before_a_count_out_still_counts_out():
    from pylog.forkgate import Gate
    gate = Gate()
    gate.enter()
    real = InFlight.count_out
    hit = []

    def interrupted(self):
        if not hit:
            hit.append(1)
            raise KeyboardInterrupt         # (at its first line's check)
        real(self)

    with mock.patch.object(InFlight, "count_out", interrupted):
        with pytest.raises(KeyboardInterrupt):
            gate.leave()
    assert hit and _counts(gate._flight) == (0, 0)


def test_an_interrupt_as_a_metadata_call_enters_leaves_no_count():
    from pylog.forkgate import GATE
    from pylog.metacalls import Calls
    calls = Calls()
    before = _counts(GATE._flight)
    calls._flight.lock = _InterruptedRelease(calls._flight.lock)
    with pytest.raises(KeyboardInterrupt):
        calls.enter("a read")
    assert _counts(calls._flight) == (0, 0)
    assert _counts(GATE._flight) == before


def test_a_read_interrupted_at_its_exit_gives_its_count_back(tmp_path):
    import gc

    import pylog
    from pylog.forkgate import GATE
    with pylog.open(str(tmp_path / "log"), sync="never") as log:
        log.create_topic("t")
        meta = log._store.meta if hasattr(log, "_store") else log.meta
        before = _counts(GATE._flight)
        txn = meta._txn("a read", write=False)
        txn.__enter__()
        assert _counts(meta._calls._flight) == (1, 1)
        del txn                  # as a KeyboardInterrupt at __exit__'s entry does
        gc.collect()
        assert _counts(meta._calls._flight) == (0, 0)
        assert _counts(GATE._flight) == before
