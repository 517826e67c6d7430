"""pylog.inflight: calls in flight of all threads and of each, and a
bounded wait for the other threads' ones (the mechanism of forkgate and
metacalls)."""

import threading
import time

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
