"""pylog.aio never keeps its event loop for long (issue 18: no stall over
1 ms during produce/consume/commit at full speed), measured per callback
with tests/loopwatch.py, which tells a callback's own time (CPU, blocked)
from the time the machine's other processes held the CPU."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
from loopwatch import LoopWatch

import pylog
import pylog.aio
import pylog.metadata

pytestmark = pytest.mark.skipif(not LoopWatch.available,
                                reason="needs Linux /proc/thread-self/schedstat")
PAD = b"x" * 92


def test_the_watch_finds_a_blocking_and_a_busy_callback():
    def busy(ms: float) -> None:
        end = time.thread_time() + ms / 1000
        while time.thread_time() < end:
            pass

    async def main() -> LoopWatch:
        loop = asyncio.get_running_loop()
        with LoopWatch(threshold_ms=1.0) as watch:
            for _ in range(200):
                await asyncio.sleep(0)          # trivial callbacks: not stalls
            loop.call_soon(time.sleep, 0.005)   # blocked 5 ms
            loop.call_soon(busy, 5)             # 5 ms of CPU
            await asyncio.sleep(0.05)
        return watch

    watch = asyncio.run(main())
    found = {s.what: s for s in watch.stalls}
    assert found["sleep"].own_ms >= 4.5 and found["sleep"].cpu_ms < 1
    assert found["test_the_watch_finds_a_blocking_and_a_busy_callback.<locals>.busy"
                 ].cpu_ms >= 4.5
    # a loaded machine may hold a trivial callback off its CPU past the
    # threshold (blocked, as the watch counts it); none burns 1 ms of CPU
    others = [s for s in watch.stalls if s.what not in (
        "sleep", "test_the_watch_finds_a_blocking_and_a_busy_callback.<locals>.busy")]
    assert all(s.cpu_ms < 1 for s in others), watch.stalls


async def full_speed(base: str, n: int, watch: LoopWatch) -> None:
    """A producer, a group consumer that commits after every getmany (and
    auto-commits every 50 ms), on sync="never" then sync="always"."""
    for sync, count in (("never", n), ("always", 300)):
        async with pylog.aio.open(os.path.join(base, sync), sync=sync) as log:
            await log.create_topic("t", 2)
            p = log.producer()
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             auto_commit_interval_ms=50)

            async def produce(p=p, count=count):
                for _ in range(count):
                    await p.send("t", PAD)

            async def consume(c=c, count=count):
                seen = 0
                while seen < count:
                    seen += sum(map(len, (await c.getmany(timeout_ms=1000)).values()))
                    await c.commit()

            with watch:
                await asyncio.gather(produce(), consume())
            await c.close()
            await p.close()


def test_no_callback_keeps_the_loop_at_full_speed(logdir):
    """Issue 18's bar is no stall over 1 ms; it is not met in every run
    (bench/aio.py reports the figures, bench/RESULTS.rst explains them).
    With another process keeping a core busy, a few callbacks per run are
    blocked 1-5 ms with next to no CPU of their own: the GIL, taken by
    another thread of the process while the loop made a native call, is
    held while that thread waits for a CPU. On an otherwise idle machine
    the ones left use CPU: a send that grows the segment (0.4-0.5 ms)
    after most of a 0.2 ms fair slice. A group consumer's first fetch
    (1.3-2.9 ms: the segment listed, opened, mapped, its index read) now
    runs its file work in the executor; the sends that grew a segment
    before its tail was warmed (pylog.warmup) are gone. This test holds
    the line: such callbacks stay rare (they were 8-10 per six runs
    before commits that are table stores ran inline) and none keeps the
    loop for 10 ms (an fsync, a metadata transaction or a large batch on
    the loop would)."""
    watch = LoopWatch(threshold_ms=1.0)
    asyncio.run(full_speed(logdir, 30_000, watch))
    print(watch.summary())
    for s in sorted(watch.stalls, reverse=True)[:5]:
        print("  ", s)
    assert watch.callbacks > 1000
    assert len(watch.stalls) <= watch.callbacks // 100, watch.summary()
    assert all(s.own_ms < 10.0 for s in watch.stalls), watch.summary()


def _resident_pages(fd: int, size: int) -> int:
    """How many pages of the first ``size`` bytes of ``fd`` are in the page
    cache (mincore(2) on a map of them)."""
    import ctypes
    import mmap
    libc = ctypes.CDLL(None, use_errno=True)
    m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    try:
        buf = ctypes.c_char.from_buffer(m)
        vec = (ctypes.c_ubyte * (size // mmap.PAGESIZE))()
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_size_t(size), vec)
        del buf
        assert rc == 0, os.strerror(ctypes.get_errno())
        return sum(v & 1 for v in vec)
    finally:
        m.close()


def test_a_grown_tail_is_warmed_for_the_appends(tmp_path):
    """A segment's new preallocated tail is brought into the page cache
    (its first FIRST_BYTES at once, the rest in the background), so the
    append that first stores into it does not fault all of it in at once
    (0.5-1.8 ms on the loop before, RESULTS.rst)."""
    from pylog import warmup

    size = 8 << 20
    pages = size // os.sysconf("SC_PAGESIZE")
    fds = []
    for name in ("cold", "warm"):
        fd = os.open(tmp_path / name, os.O_RDWR | os.O_CREAT)
        fds.append(fd)
        os.posix_fallocate(fd, 0, size)
    try:
        if _resident_pages(fds[0], size) or _resident_pages(fds[1], size):
            pytest.skip("this filesystem caches a preallocated file's pages (tmpfs, "
                        "or fallocate emulated by writing zeros): nothing to warm")
        warmup.warm(fds[1], 0, size)
        deadline = time.monotonic() + 10
        while _resident_pages(fds[1], size) < pages and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _resident_pages(fds[1], size) == pages
        assert _resident_pages(fds[0], size) == 0
    finally:
        for fd in fds:
            os.close(fd)


def test_a_read_committed_consumer_held_back_keeps_the_loop(logdir):
    """A read_committed getmany held back by open transactions, with
    20,000 batches after them, walked the whole tail on the loop at
    every fetch (59 ms a fetch, bench/RESULTS.rst); and when they commit
    it reads on through all of it. Now no callback keeps the loop for
    10 ms (a walk passes 256 batches a fetch; tests/test_txn_read_memory.py
    counts them)."""
    tail = 20_000
    log = pylog.open(logdir, sync="never")
    log.create_topic("t")
    txns = [log.producer(transactional_id="tx%d" % i) for i in range(20)]
    for p in txns:
        p.begin_transaction()
        p.send("t", b"open")
    plain = log.producer()
    for i in range(tail):
        plain.send("t", b"p%d" % i)

    async def main() -> LoopWatch:
        loop = asyncio.get_running_loop()
        watch = LoopWatch(threshold_ms=1.0)
        async with pylog.aio.open(logdir, sync="never") as alog:
            c = alog.consumer("t", group_id="g", auto_offset_reset="earliest",
                              isolation_level="read_committed")
            await c.start()
            with watch:
                for _ in range(20):
                    assert await c.getmany(timeout_ms=10) == {}
                for p in txns:
                    await loop.run_in_executor(None, p.commit_transaction)
                seen = 0
                while seen < tail + len(txns):
                    got = await c.getmany(timeout_ms=2000)
                    assert got, seen
                    seen += sum(map(len, got.values()))
            await c.close()
        return watch

    try:
        watch = asyncio.run(main())
    finally:
        log.close()
    print(watch.summary())
    assert all(s.own_ms < 10.0 for s in watch.stalls), watch.summary()


def test_a_latest_consumer_reads_the_topic_list_off_the_loop(logdir, monkeypatch):
    """A 'latest' consumer notes the log's topics at its first poll (a
    topic made after it is read from its start): every topic's document,
    50 ms on the loop with 5,000 topics. The first getmany reads them in
    the executor, and a topic made after it is still read whole."""
    log = pylog.open(logdir, sync="never")
    log.create_topic("t")
    on = []
    real = pylog.metadata.Metadata.topics

    def topics(self):
        on.append(threading.get_ident())
        return real(self)

    async def main() -> list:
        async with pylog.aio.open(logdir, sync="never") as alog:
            c = alog.consumer(auto_offset_reset="latest")
            c.assign([pylog.TopicPartition("t", 0)])
            monkeypatch.setattr(pylog.metadata.Metadata, "topics", topics)
            assert await c.getmany(timeout_ms=0) == {}
            monkeypatch.setattr(pylog.metadata.Metadata, "topics", real)
            loop_thread = threading.get_ident()
            log.create_topic("new")
            for i in range(3):
                log.producer().send("new", b"n%d" % i)
            c.assign([pylog.TopicPartition("new", 0)])
            got = await c.getmany(timeout_ms=2000)
            await c.close()
        return [loop_thread in on, [r.value for rs in got.values() for r in rs]]

    try:
        assert asyncio.run(main()) == [False, [b"n0", b"n1", b"n2"]]
    finally:
        log.close()
    assert on, "the topic list was not read"
