"""The doorbell bridge: how records appended by any process wake the
coroutines of an event loop, without a thread per consumer.

A blocked ``poll`` sleeps on the log's doorbell (a futex word in a shared
file, FORMAT.rst L-3): every append rings its topic's slot and slot 0. A
regular file cannot be watched with ``loop.add_reader``, so one thread per
Log — started when the first coroutine waits, idle on a condition while
none does — sleeps on slot 0 for all the async consumers of that Log. When
it rings, the thread resolves the futures of the waiters whose own slot
changed, with one ``loop.call_soon_threadsafe`` per event loop (the loop's
self-pipe wakes it). An append made on the event loop itself resolves the
waiters of that loop directly (:meth:`DoorbellBridge.claim`), without the
thread hop; when that leaves no waiter registered, the thread is taken
out of the doorbell's waiters count while it sleeps (``pl_watch_set``),
so the append's ring does not wake it (no futex wake in the append, no
GIL taken from the loop for nothing).

A waiter reads its slot before it fetches and registers that value; the
bridge wakes it for any later ring, and the waiter checks once more after
registering, so a ring between its fetch and its registration is not
missed.

Thread safety: thread-safe; ``wait`` and ``claim`` run on an event loop.
Durability: nothing here writes.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .. import _native
from ..errors import LogClosed

#: How long the bridge thread sleeps on the doorbell before it looks again
#: whether the Log was closed (it never needs waking for a new waiter: the
#: waiter checks its slot itself after registering).
BRIDGE_TICK_S = 1.0
#: Without a writable doorbell (a read-only log on read-only files) waiters
#: sleep this long between fetches, as the blocking poll does.
NO_BELL_SLEEP_S = 0.005


class _Waiter:
    __slots__ = ("loop", "future", "slot", "seen", "registered")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None],
                 slot: int, seen: int) -> None:
        self.loop = loop
        self.future = future
        self.slot = slot
        self.seen = seen
        self.registered = True      # in DoorbellBridge._waiters (under its mutex)


def wake(futures: list[asyncio.Future[None]]) -> None:
    """Resolve waiters' futures (on their loop)."""
    for fut in futures:
        if not fut.done():
            fut.set_result(None)


class DoorbellBridge:
    """Wakes coroutines waiting for appends to one Log (module docstring)."""

    def __init__(self, bell: Any, bell_map: Any, name: str) -> None:
        self._name = name          # the log's path, for errors
        self._bell = bell          # pointer to the doorbell map; keeps it mapped
        # The thread reads the slots' counts as plain words of the map: a
        # native call would release the GIL, and each release lets an
        # appending thread of this process take it back and forth (the
        # futex wait before these reads orders them). Slot = (seq, waiters).
        self._words = memoryview(bell_map).cast("I") if bell_map is not None else None
        # a plain lock under the condition: ``with self._mutex`` is native
        # code, on the path of every wait and of every send on the loop
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._waiters: dict[int, set[_Waiter]] = {}   # slot -> waiters on it
        self._count = 0
        # on while any waiter is registered: the thread sleeps through the
        # rings of appends made while it is off (an append on the loop
        # claims its waiters first), so it does not take the GIL for them
        self._watch = _native.Watch(bell) if bell is not None else None
        self._thread: threading.Thread | None = None
        self._closed = False

    def seq(self, slot: int) -> int:
        """The slot's ring count now (0 without a doorbell)."""
        bell = self._bell
        return _native.doorbell_load_at(bell, slot) if bell is not None else 0

    async def wait(self, slot: int, seen: int, timeout_s: float,
                   also: asyncio.Future[None] | None = None) -> None:
        """Return once ``slot`` rang after its count was ``seen``, ``also``
        (if given) is done, or after ``timeout_s``; cancellable (then
        nothing is left registered). LogClosed once close() was called
        (a waiter it woke that looks again ends here)."""
        if self._closed:
            raise LogClosed(f"log {self._name} is closed")
        if self._bell is None:
            await asyncio.sleep(min(timeout_s, NO_BELL_SLEEP_S))
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        w = _Waiter(loop, fut, slot, seen)
        with self._mutex:
            self._waiters.setdefault(slot, set()).add(w)
            self._count += 1
            assert self._watch is not None
            self._watch.set(True)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="pylog-aio-doorbell")
                self._thread.start()
            elif self._count == 1:
                self._cond.notify()
        timer = loop.call_later(timeout_s, wake, [fut])

        def other(_: asyncio.Future[None]) -> None:
            wake([fut])
        if also is not None:
            also.add_done_callback(other)
        try:
            if self.seq(slot) == seen and not (also is not None and also.done()):
                await fut           # (unless it rang before we registered)
        finally:
            timer.cancel()
            if also is not None:
                also.remove_done_callback(other)
            if w.registered:    # (not claimed by an append on this loop)
                self._remove(w)

    def _remove(self, w: _Waiter) -> None:
        with self._mutex:
            ws = self._waiters.get(w.slot)
            if ws is not None and w in ws:
                ws.discard(w)
                w.registered = False
                self._count -= 1
                if not ws:
                    del self._waiters[w.slot]
                if not self._count and self._watch is not None:
                    self._watch.set(False)

    def claim(self, slot: int) -> list[asyncio.Future[None]]:
        """An append on this event loop is about to ring ``slot`` (and slot
        0): unregister the waiters of the running loop on them, for the
        caller to resolve (:func:`wake`) once it appended — directly, not
        after the thread hop, and without the thread posting them while
        the append returns. Waiters of other loops are left to the thread."""
        if not self._count:
            return []
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        waiters = self._waiters
        with self._mutex:
            for s in (slot, 0) if slot else (0,):
                ws = waiters.get(s)
                if not ws:
                    continue
                mine = [w for w in ws if w.loop is loop]
                for w in mine:
                    ws.discard(w)
                    w.registered = False
                    futures.append(w.future)
                if not ws:
                    del waiters[s]
            self._count -= len(futures)
            if not self._count and self._watch is not None:
                self._watch.set(False)      # (before the append rings)
        return futures

    def close(self) -> None:
        """Stop the thread (within BRIDGE_TICK_S); waiters still registered
        are woken so that they see the Log closed."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._wake(lambda w: True)

    # -- the bridge thread ----------------------------------------------------------
    def _run(self) -> None:
        bell, words, watch = self._bell, self._words, self._watch
        assert words is not None and watch is not None
        step = _native.DOORBELL_SLOT_SIZE // 4

        def rang(w: _Waiter) -> bool:
            return bool(words[w.slot * step] != w.seen)
        while True:
            with self._cond:
                while not self._count and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            seen0 = words[0]
            self._wake(rang)
            _native.doorbell_watch_at(bell, seen0, watch, BRIDGE_TICK_S)
            if self._count:     # (an append on the loop resolved its own)
                self._wake(rang)

    def _wake(self, due: Any) -> None:
        """Resolve the waiters ``due(waiter)`` picks: one callback per loop."""
        with self._mutex:
            if not self._count:
                return
            ready = [w for ws in self._waiters.values() for w in ws if due(w)]
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for w in ready:
            by_loop.setdefault(w.loop, []).append(w.future)
        for loop, futures in by_loop.items():
            try:
                loop.call_soon_threadsafe(wake, futures)
            except RuntimeError:
                pass        # that loop is closed: nobody awaits its futures
