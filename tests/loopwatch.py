"""LoopWatch: how long each callback of an asyncio event loop kept the
loop, split into what the callback itself cost and what the machine did.

A callback's wall time counts the time the loop thread sat runnable in
the kernel's run queue while other processes ran (a shared 2-core machine
does that for milliseconds at a time). Linux counts that time per thread
(the second field of /proc/thread-self/schedstat), so a callback's *own*
time is its wall time minus the run-queue time it suffered: its CPU time
(time.thread_time) plus the time it was blocked (fsync, a lock, the GIL
held by another thread of the process). That is what pylog.aio answers
for; the run-queue time is reported next to it.

Used by tests/test_aio_stalls.py and bench/aio.py. Patches
``asyncio.events.Handle._run`` (the pure-Python loop's; uvloop's handles
are compiled) while active: one loop at a time.
"""

from __future__ import annotations

import asyncio.events
import os
import time
from typing import Any, NamedTuple


class Stall(NamedTuple):
    own_ms: float       # wall time minus run-queue time
    cpu_ms: float
    runq_ms: float
    wall_ms: float
    what: str


def _name(handle: Any) -> str:
    cb = handle._callback
    owner = getattr(cb, "__self__", None)
    if owner is not None and hasattr(owner, "get_coro"):
        coro = owner.get_coro()
        return getattr(coro, "__qualname__", repr(coro))
    return getattr(cb, "__qualname__", repr(cb))


class LoopWatch:
    """Context manager, entered in the loop's thread: records every
    callback whose own time exceeds ``threshold_ms``."""

    available = os.path.exists("/proc/thread-self/schedstat")

    def __init__(self, threshold_ms: float = 1.0) -> None:
        self.threshold_ns = int(threshold_ms * 1e6)
        self.stalls: list[Stall] = []
        self.callbacks = 0
        self._fd = -1
        self._orig: Any = None

    def _run_delay(self) -> int:
        return int(os.pread(self._fd, 128, 0).split()[1])

    def __enter__(self) -> LoopWatch:
        self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        orig = self._orig = asyncio.events.Handle._run
        watch = self

        def _run(handle: Any) -> None:
            w0, c0, q0 = time.perf_counter_ns(), time.thread_time_ns(), watch._run_delay()
            try:
                orig(handle)
            finally:
                if watch._fd >= 0:      # (not closed by the callback itself)
                    watch._note(handle, w0, c0, q0)
        asyncio.events.Handle._run = _run       # type: ignore[method-assign]
        return self

    def _note(self, handle: Any, w0: int, c0: int, q0: int) -> None:
        wall = time.perf_counter_ns() - w0
        self.callbacks += 1
        if wall > self.threshold_ns:
            runq = self._run_delay() - q0
            if wall - runq > self.threshold_ns:
                self.stalls.append(Stall(
                    (wall - runq) / 1e6, (time.thread_time_ns() - c0) / 1e6,
                    runq / 1e6, wall / 1e6, _name(handle)))

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self._orig     # type: ignore[method-assign]
        os.close(self._fd)
        self._fd = -1

    def worst(self) -> Stall | None:
        return max(self.stalls, default=None)

    def summary(self) -> str:
        w = self.worst()
        if w is None:
            return f"{self.callbacks} callbacks, none over {self.threshold_ns / 1e6} ms own time"
        return (f"{self.callbacks} callbacks, {len(self.stalls)} over "
                f"{self.threshold_ns / 1e6} ms own time; worst {w.own_ms:.2f} ms "
                f"(cpu {w.cpu_ms:.2f}, run queue {w.runq_ms:.2f}, wall {w.wall_ms:.2f}) "
                f"in {w.what}")
