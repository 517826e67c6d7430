"""Page-cache warm-up of a segment's newly preallocated tail, mostly off
the appending thread.

An append stores through a map. Its first store into a page that is not
in the page cache is a major fault, and the kernel then reads around the
page: up to the device's read-ahead (``read_ahead_kb``: 8 MiB on the VM
measured), bounded by the end of the file. For a tail just preallocated
that means zero-filling every page of it at once, 0.5-1.8 ms in the one
append that first touches it (bench/RESULTS.rst, 2026-12-06), which on
an event loop is a stall (issue 18). :func:`warm` brings the first
FIRST_BYTES of the tail into the cache at once (a few pages: tens of
microseconds) and the rest in a background thread, so the appends that
follow find their pages there; pages it has not reached yet still fault
as before. Data is never written: ``posix_fadvise(WILLNEED)`` only reads
(a preallocated block reads as zeros).

Thread safety: :func:`warm` is thread-safe; one daemon thread per
process, started by the first call (and again in a forked child).
Durability: nothing here writes.
"""

from __future__ import annotations

import os
import queue
import threading

#: the tail warmed by the caller itself: what appends at full speed fill
#: before the background thread gets the GIL (a switch interval, 5 ms)
FIRST_BYTES = 256 * 1024

_lock = threading.Lock()
_jobs: queue.SimpleQueue[tuple[int, int, int]] | None = None


def _advise(fd: int, start: int, length: int) -> None:
    try:
        os.posix_fadvise(fd, start, length, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass        # only a hint: the appends fault the pages in themselves


def _run(jobs: queue.SimpleQueue[tuple[int, int, int]]) -> None:
    while True:
        fd, start, length = jobs.get()
        try:
            _advise(fd, start, length)
        finally:
            os.close(fd)


def _forked() -> None:
    global _jobs, _lock
    old, _jobs = _jobs, None    # (the thread did not come along)
    _lock = threading.Lock()    # (another thread may have held it)
    while old is not None:      # the duplicates its jobs held
        try:
            fd = old.get_nowait()[0]
        except queue.Empty:
            break
        try:
            os.close(fd)
        except OSError:
            pass


def warm(fd: int, start: int, end: int) -> None:
    """Bring bytes [start, end) of ``fd`` into the page cache: the first
    FIRST_BYTES now, the rest in the background (through a duplicate of
    ``fd``, so the caller may close its own meanwhile)."""
    if not hasattr(os, "posix_fadvise") or end <= start:
        return
    first = min(end, start + FIRST_BYTES)
    _advise(fd, start, first - start)
    if first >= end:
        return
    try:
        dup = os.dup(fd)
    except OSError:
        return      # (out of descriptors: the appends fault the rest in)
    global _jobs
    try:
        with _lock:
            if _jobs is None:
                jobs: queue.SimpleQueue[tuple[int, int, int]] = queue.SimpleQueue()
                threading.Thread(target=_run, args=(jobs,), daemon=True,
                                 name="pylog-warmup").start()
                _jobs = jobs
            jobs = _jobs
    except Exception:           # (no thread: out of memory or threads)
        os.close(dup)
        return                  # only a hint: the append goes on without
    jobs.put((dup, first, end - first))


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
