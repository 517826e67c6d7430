"""pylog.aio share consumers: work queues on an event loop (README "asyncio").

Real logs, a real second process sharing the queue; coroutines run with
asyncio.Runner (and uvloop when it is installed).
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest
from aioloops import LOOPS, close_ends_the_waits, gets_cancelled_while_sending, run
from childproc import expect, start

import pylog
import pylog.aio

CHILD = """
import asyncio, sys
import pylog.aio

async def main():
    async with pylog.aio.open(sys.argv[1], sync="never") as log:
        sc = log.share_consumer("q", group_id="w", auto_offset_reset="earliest")
        await sc.getmany()              # its share files are open
        print("ready", flush=True)
        got = []
        while True:
            batch = await sc.getmany(timeout_ms=1500, max_records=5)
            if not batch:
                break
            for recs in batch.values():
                for r in recs:
                    got.append(r.offset)
                    sc.acknowledge(r)
            await sc.commit()
            await asyncio.sleep(0.005)
        await sc.close()
        print("got", *got, flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_two_processes_share_a_queue(logdir, loop, child_env):
    """A child process and this one take records from one queue while
    this one appends them: each record goes to exactly one of them, and
    the waits of both are woken by the appends."""
    n = 300
    with pylog.open(logdir) as sync_log:
        sync_log.create_topic("q")
    child = start(CHILD, logdir, env=child_env, stdin=subprocess.DEVNULL)

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            sc = log.share_consumer("q", group_id="w", auto_offset_reset="earliest")
            await asyncio.get_running_loop().run_in_executor(None, expect, child, b"ready")
            p = log.producer()
            mine: list[int] = []

            async def produce():
                for i in range(0, n, 10):
                    await p.send_batch("q", [b"%d" % j for j in range(i, i + 10)])
                    await asyncio.sleep(0.005)

            async def consume():
                while True:
                    batch = await sc.getmany(timeout_ms=1500, max_records=5)
                    if not batch:
                        return
                    for recs in batch.values():
                        for r in recs:
                            assert r.delivery_count == 1
                            mine.append(r.offset)
                            sc.acknowledge(r)
                    await sc.commit()
                    await asyncio.sleep(0.005)

            await asyncio.gather(produce(), consume())
            await sc.close()
            return mine

    try:
        mine = run(loop, main)
        line = expect(child, b"got", prefix=True).decode().split()
        theirs = [int(x) for x in line[1:]]
    finally:
        child.kill()
        child.wait()
    assert sorted(mine + theirs) == list(range(n))      # each record once
    assert mine and theirs, (len(mine), len(theirs))


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelled_gets_acquire_nothing(logdir, loop):
    n = 200

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("q")
            p = log.producer()
            sc = log.share_consumer("q", group_id="w", auto_offset_reset="earliest",
                                    acknowledgement_mode="implicit")
            got = await gets_cancelled_while_sending(sc, p, "q", n, timeout_ms=1000,
                                                     max_records=7)
            # every record came once, first delivery: none was acquired
            # by a cancelled call and then released or left to expire
            assert [r.offset for r in got] == list(range(n))
            assert {r.delivery_count for r in got} == {1}
            await sc.commit()
            assert await sc.getmany(timeout_ms=50) == {}
            await sc.close()

    run(loop, main)


def test_acknowledge_release_and_async_for(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("q")
            await log.producer().send_batch("q", [b"a", b"b", b"c"])
            async with log.share_consumer("q", group_id="w",
                                          auto_offset_reset="earliest") as sc:
                first = await sc.getone()
                assert (first.value, first.delivery_count) == (b"a", 1)
                sc.acknowledge(first, "release")        # back to the queue
                seen = []
                async for r in sc:
                    seen.append((r.value, r.delivery_count))
                    sc.acknowledge(r)
                    if len(seen) == 3:
                        break
                assert sorted(seen) == [(b"a", 2), (b"b", 1), (b"c", 1)]
                await sc.commit()                       # fsynced: sync="always"
                assert await sc.getmany(timeout_ms=20) == {}
                with pytest.raises(pylog.InvalidArgument):
                    sc.acknowledge(first)               # not held any more
            with pytest.raises(pylog.LogClosed, match="closed"):
                await sc.getone()
        # the acknowledgements are in the log's metadata: a new member of
        # the group finds nothing left
        async with pylog.aio.open(logdir, sync="never") as log:
            sc = log.share_consumer("q", group_id="w", auto_offset_reset="earliest")
            assert await sc.getmany(timeout_ms=20) == {}
            await sc.close()

    run("asyncio", main)


def test_close_from_another_task_ends_the_waits(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("q")
            await close_ends_the_waits(log.share_consumer("q", group_id="w"))

    run("asyncio", main)


def test_explicit_mode_refuses_a_get_before_acknowledging(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("q")
            await log.producer().send_batch("q", [b"a", b"b"])
            sc = log.share_consumer("q", group_id="w", auto_offset_reset="earliest")
            a = await sc.getone()
            with pytest.raises(pylog.InvalidArgument, match="not acknowledged"):
                await sc.getone()
            sc.acknowledge(a)
            assert (await sc.getone()).value == b"b"
            await sc.close()

    run("asyncio", main)


def test_a_waiting_consumer_wakes_when_a_lock_expires(logdir):
    """A record whose lock expires goes to the consumer waiting for it at
    the lock's end, and neither an idle wait nor that one looks again
    every 50 ms meanwhile: the waiter's acquisitions are counted."""
    lock_s = 1.0

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("q")
            holder = log.share_consumer("q", group_id="w", auto_offset_reset="earliest",
                                        record_lock_ms=int(lock_s * 1000))
            waiter = log.share_consumer("q", group_id="w", auto_offset_reset="earliest")
            looks = _count_acquisitions(waiter)
            # idle: nothing in the queue, nothing held
            assert await waiter.getmany(timeout_ms=600) == {}
            assert looks[0] <= 3, looks                 # 50 ms looks: about 12
            await log.producer().send_batch("q", [b"job"])
            held = await holder.getone()                # ...and never acknowledged
            looks[0] = 0
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            got = await waiter.getmany(timeout_ms=30_000)
            waited = loop.time() - t0
            recs = [r for rs in got.values() for r in rs]
            assert [(r.offset, r.delivery_count) for r in recs] == [(held.offset, 2)]
            assert waited < lock_s + 1.0, waited
            assert looks[0] <= 4, looks                 # 50 ms looks: about 20
            waiter.acknowledge(recs[0])
            await waiter.close()
            await holder.close()

    run("asyncio", main)


def _count_acquisitions(sc: pylog.aio.AIOShareConsumer) -> list[int]:
    """[how many times ``sc`` looked for records], counted from now on."""
    inner: Any = sc._c
    looks = [0]
    acquire = inner._acquire

    def counted(max_records: int) -> Any:
        looks[0] += 1
        return acquire(max_records)
    inner._acquire = counted
    return looks


def test_a_cancelled_commit_returns_once_it_has_ended(logdir):
    """With sync="always" the share commit runs off the loop: cancelled
    while it ran, the caller got CancelledError at once, before the
    acknowledgements were applied, and could not tell whether they were."""
    import threading
    import time

    async def main() -> None:
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"a", b"b"])
            w = log.share_consumer("t", group_id="g", auto_offset_reset="earliest")
            got = await w.getmany(timeout_ms=1000)
            recs = [r for rs in got.values() for r in rs]
            assert len(recs) == 2
            for r in recs:
                w.acknowledge(r, "accept")
            started, ended = threading.Event(), threading.Event()
            real = w._c.commit

            def slow() -> None:
                started.set()
                time.sleep(0.3)
                real()
                ended.set()
            w._c.commit = slow
            t = asyncio.create_task(w.commit())
            while not started.is_set():
                await asyncio.sleep(0.001)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            assert ended.is_set(), "the cancelled commit returned before its end"
            w._c.commit = real
            await w.close()
    run("asyncio", main)


def test_a_call_that_finds_records_does_not_scan_the_share_files(logdir, monkeypatch):
    # wait_hint()'s look at the share files scans each one's 255 owner
    # slots while the consumer holds a record (about 50 µs a partition):
    # for the slot alone, at every getone/async for step, it kept the loop
    # over 1 ms a record on a topic of 32 partitions. Only a call that
    # found nothing, and waits, needs the look.
    from pylog import sharestate

    looks = []
    scan = sharestate.ShareFile.foreign_holders

    def counted(self: Any) -> bool:
        looks.append(1)
        return scan(self)
    monkeypatch.setattr(sharestate.ShareFile, "foreign_holders", counted)

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("q", 8)
            await log.producer().send_batch("q", [b"%d" % i for i in range(40)])
            async with log.share_consumer("q", group_id="w",
                                          auto_offset_reset="earliest") as sc:
                n = 0
                async for r in sc:
                    sc.acknowledge(r)
                    n += 1
                    if n == 30:
                        break
                return n

    assert run("asyncio", main) == 30
    assert looks == []
