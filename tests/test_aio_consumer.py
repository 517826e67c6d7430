"""pylog.aio's consumer (README "asyncio"): ``async for`` and the records
it holds, close while others wait, the wake-up bridge, the native
one-partition fetch, the first fetch's file work, fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import pytest
from aioloops import (
    LOOPS,
    TP0,
    drain,
    log_of,
    run,
    take,
)

import pylog
import pylog.aio


@pytest.mark.parametrize("loop", LOOPS)
def test_async_for_cut_off_loses_nothing(logdir, loop):
    """``async for`` hands out the consumer's buffered records one at a
    time; a loop left by ``break`` gives the record it was on back (as a
    threaded ``for`` loop), a cancellation while it waits loses nothing,
    and a seek in the loop body acts on the records not handed out yet."""
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            p = log.producer()
            await p.send_batch("t", [b"%d" % i for i in range(20)])
            c = log.consumer("t", auto_offset_reset="earliest", max_poll_records=7)
            got = []
            async for r in c:
                got.append(r.offset)
                if len(got) == 3:
                    break
            assert got == [0, 1, 2] and await c.position(TP0) == 2
            assert [r.offset for r in await take(c, 2)] == [2, 3]
            seen = []
            async for r in c:           # a seek in the body: the next is 0
                seen.append(r.offset)
                if r.offset == 4:
                    c.seek(TP0, 0)      # (4 is not given back: sought away)
                if len(seen) == 3:
                    break
            assert seen == [4, 0, 1]
            assert [r.offset for r in await take(c, 19)] == list(range(1, 20))
            # cancelled while it waits: nothing fetched, nothing lost
            for cut in (drain(c), anext(c)):
                waiting = asyncio.ensure_future(cut)
                await asyncio.sleep(0.05)
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
            await p.send("t", b"20")
            assert [r.offset for r in await take(c, 1)] == [20]
            assert await c.position(TP0) == 21
            await c.close()
            c2 = log.consumer("t", auto_offset_reset="earliest",
                              consumer_timeout_ms=200)
            assert len([r async for r in c2]) == 21     # then idle: it ends
            await c2.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_async_for_left_by_an_exception_or_a_cancel_redelivers(logdir, loop):
    """A handler that raises in an ``async for`` body (the worker catches
    it and iterates again), and a task cancelled while its body handles a
    record: that record comes again, and no commit passes it before it
    is handled (it used to be skipped, then committed)."""
    async def main():
        async with log_of(logdir, 6) as log:
            done: list[int] = []
            async with log.consumer("t", group_id="g", auto_offset_reset="earliest",
                                    consumer_timeout_ms=300) as c:
                failed = False
                for _ in range(2):
                    try:
                        async for r in c:
                            if r.offset == 3 and not failed:
                                failed = True
                                raise RuntimeError("handler failed")
                            done.append(r.offset)
                    except RuntimeError:
                        assert await c.position(TP0) == 3
                assert done == [0, 1, 2, 3, 4, 5]
            assert await log.consumer("t", group_id="g").committed(TP0) == 6

            c = log.consumer("t", group_id="g2", auto_offset_reset="earliest",
                             consumer_timeout_ms=300)
            handling = asyncio.Event()
            done.clear()

            async def work() -> None:
                async for r in c:
                    if r.offset == 3 and not handling.is_set():
                        handling.set()
                        await asyncio.sleep(30)
                    done.append(r.offset)
            task = asyncio.ensure_future(work())
            await asyncio.wait_for(handling.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert done == [0, 1, 2] and await c.position(TP0) == 3
            await c.commit()            # every record received: not 3
            assert await c.committed(TP0) == 3
            await work()
            assert done == [0, 1, 2, 3, 4, 5]
            await c.close()
            assert await log.consumer("t", group_id="g2").committed(TP0) == 6

    run(loop, main)


def test_async_for_records_survive_other_tasks_wrappers_and_bad_seeks(logdir):
    """The record an ``async for`` is on stays unfinished across another
    task's fetch (two workers share one consumer); a loop inside an
    async generator gives its record back when the event loop closes the
    generator (later, but nothing commits past it meanwhile); a seek the
    consumer refuses in the loop body drops nothing (found by review)."""
    async def main():
        async with log_of(logdir, 8) as log:
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             max_poll_records=4, consumer_timeout_ms=300)
            handled: list[int] = []
            failed: list[int] = []

            async def worker() -> None:
                while True:
                    try:
                        async for r in c:
                            await asyncio.sleep(0.2 if r.offset == 0 else 0.01)
                            if r.offset == 0 and not failed:
                                failed.append(0)
                                raise RuntimeError("handler failed")
                            handled.append(r.offset)
                        return
                    except RuntimeError:
                        continue
            await asyncio.gather(worker(), worker())
            await c.close()
            assert sorted(handled) == list(range(8))
            assert await log.consumer("t", group_id="g").committed(TP0) == 8

            c = log.consumer("t", group_id="w", auto_offset_reset="earliest",
                             consumer_timeout_ms=300)

            async def records():            # an aiokafka-style wrapper
                async for r in c:
                    yield r
            handled.clear()
            try:
                async for r in records():
                    if r.offset == 3:
                        raise RuntimeError("handler failed")
                    handled.append(r.offset)
            except RuntimeError:
                pass
            async for r in c:
                handled.append(r.offset)
            await c.close()
            assert sorted(handled) == list(range(8))     # 3 came again, later
            assert await log.consumer("t", group_id="w").committed(TP0) == 8

            c = log.consumer("t", group_id="s", auto_offset_reset="earliest")
            async for r in c:
                if r.offset == 2:
                    with pytest.raises(pylog.InvalidArgument):
                        c.seek(TP0, -1)
                    break
            assert [r.offset for r in await take(c, 6)] == [2, 3, 4, 5, 6, 7]
            await c.close()

    run("asyncio", main)


def test_a_held_record_never_moves_a_commit_back(logdir):
    """The record one task's ``async for`` is on is held unfinished across
    another task's fetches, but never below what the application
    committed itself: auto-commit went back from 8 to 0 (found by review)."""
    async def main():
        async with log_of(logdir, 8) as log:
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             max_poll_records=4, auto_commit_interval_ms=10)
            probe = log.consumer("t", group_id="g")
            done = asyncio.Event()
            seen: list[int | None] = []

            async def slow() -> None:
                async for _ in c:          # on offset 0 until the end
                    await done.wait()
                    return

            async def fast() -> None:
                for _ in range(5):
                    await c.getmany(timeout_ms=30)     # (auto-commit runs first)
                    seen.append(await probe.committed(TP0))
                    await c.commit()
                    await asyncio.sleep(0.02)
                done.set()
            await asyncio.gather(slow(), fast())
            assert seen[-3:] == [8, 8, 8]
            await c.close()
            assert await probe.committed(TP0) == 8

    run("asyncio", main)


def test_a_getmany_finishes_the_last_batch_before_its_housekeeping(logdir):
    """As poll(): the records the last getmany returned are finished when
    the next one begins, before its housekeeping, so its auto-commit (or
    a rebalance's release) commits them; they were committed one getmany
    later, and a partition moved to another member meanwhile was read
    again there from before them (found by review)."""
    async def main():
        async with log_of(logdir, 6) as log:
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             max_poll_records=2, auto_commit_interval_ms=1)
            probe = log.consumer("t", group_id="g")
            assert [r.offset for r in (await c.getmany(timeout_ms=5000))[TP0]] == [0, 1]
            await asyncio.sleep(0.01)
            assert [r.offset for r in (await c.getmany(timeout_ms=5000))[TP0]] == [2, 3]
            assert await probe.committed(TP0) == 2
            await c.close()

    run("asyncio", main)


def test_no_auto_commit_passes_a_held_record_under_racing_getmanys(logdir):
    """One task's ``async for`` sits on a record while three tasks call
    getmany (auto-commit every 1 ms runs in the executor) with the GIL
    switching often: finishing the last batch at a getmany's start raced
    a housekeeping job reading the finished records in its thread, and
    committed past the held record in about 5% of rounds (found by
    review). Rounds for about 3 s; it can miss a race, never invent one."""
    import sys

    async def round_(path: str) -> tuple[int | None, int]:
        async with log_of(path, 400) as log:
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             max_poll_records=1, auto_commit_interval_ms=1)
            probe = log.consumer("t", group_id="g")
            held: list[int] = []
            go = asyncio.Event()

            async def loop() -> None:
                async for r in c:
                    held.append(r.offset)
                    await go.wait()
            task = asyncio.ensure_future(loop())
            while not held:
                await asyncio.sleep(0)

            async def getter() -> None:
                for _ in range(150):
                    await c.getmany(timeout_ms=0)
            await asyncio.gather(getter(), getter(), getter())
            got = await probe.committed(TP0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await c.close()
            return got, held[0]

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        end = time.monotonic() + 3.0
        n = 0
        while time.monotonic() < end:
            got, held = run("asyncio", lambda: round_(os.path.join(logdir, str(n))))
            assert got is None or got <= held, (n, got, held)
            n += 1
    finally:
        sys.setswitchinterval(before)


def test_a_cancelled_close_still_waits_for_the_log(logdir):
    """close() cancelled (a shutdown cancelling the task in ``async with``)
    while Log.close runs: a second close() waits for it, and a client
    closed meanwhile closes after it, not against the open Log on the
    loop; a client whose executor job runs when the log closes returns
    from close() (found by review)."""
    async def main():
        log = pylog.aio.open(logdir, sync="always")
        await log.open()
        await log.create_topic("t")
        c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
        await c.getmany(timeout_ms=10)
        first = asyncio.ensure_future(log.close())
        await asyncio.sleep(0)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await log.close()
        assert log.log.closed
        assert await c.close() is None

        log = pylog.aio.open(logdir, sync="always")
        await log.open()
        c = log.consumer("t", group_id="g2", auto_offset_reset="earliest")
        commit = asyncio.ensure_future(c.start())        # a job in the executor
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(log.close())
        assert await c.close() is None
        await closing
        with contextlib.suppress(pylog.PylogError):
            await commit

    run("asyncio", main)


@pytest.mark.parametrize("loop", LOOPS)
def test_closing_the_log_ends_waits_and_later_calls_with_log_closed(logdir, loop):
    """Tasks waiting in getone of a consumer and of a share consumer when
    the log closes end with LogClosed (not a RuntimeError of the stopped
    executor, not a wait of an hour); calls after it raise LogClosed, and
    the clients' close() returns, as in the threaded API."""
    async def main():
        log = pylog.aio.open(logdir, sync="interval")
        async with log:
            await log.create_topic("t")
            c = log.consumer("t", group_id="g")
            s = log.share_consumer("t", group_id="s")
            p = log.producer()
            waits = [asyncio.ensure_future(c.getone()), asyncio.ensure_future(s.getone())]
            await asyncio.sleep(0.2)
        for w in waits:
            with pytest.raises(pylog.LogClosed):
                await asyncio.wait_for(w, 5)
        for call in (lambda: log.create_topic("u"), p.flush, c.commit):
            with pytest.raises(pylog.LogClosed):
                await call()
        for client in (p, c, s):
            assert await client.close() is None
        await log.close()           # idempotent

    for _ in range(3):      # (the waits wake while the Log's close runs)
        run(loop, main)
        import shutil
        shutil.rmtree(logdir)


def test_seek_and_pause_need_the_assignment_and_start_joins(logdir):
    """seek/pause/resume are plain calls on the loop: a group member not
    yet joined is told to join first (it would fsync on the loop), and
    ``await start()`` joins off the loop."""
    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"a", b"b", b"c"])
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            for call in (lambda: c.seek(TP0, 1), lambda: c.pause(TP0),
                         lambda: c.resume(TP0)):
                with pytest.raises(pylog.InvalidArgument, match="start()"):
                    call()
            await c.start()
            assert c.assignment() == {TP0}
            c.seek(TP0, 1)
            assert [r.offset for r in await take(c, 2)] == [1, 2]
            await c.close()

    run("asyncio", main)


def test_bridge_thread_sleeps_through_rings_nobody_waits_for(logdir):
    """The doorbell thread's native wait returns for a ring only while a
    waiter is registered (the watch is on); while it is off the thread is
    out of the slot's waiters count, so an append on the loop, which
    resolved its own waiters, neither wakes it nor pays a futex wake."""
    import threading

    from pylog import _native

    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t")
        p = log.producer()
        bell = log.doorbell_pointer()
        waiters = memoryview(log.doorbell()).cast("I")     # slot 0: (seq, waiters)
        watch = _native.Watch(bell)
        seen = _native.doorbell_load_at(bell, 0)
        p.send("t", b"x")               # rang: the watch is off
        t0 = time.monotonic()
        assert not _native.doorbell_watch_at(bell, seen, watch, 0.2)
        assert time.monotonic() - t0 >= 0.19
        assert waiters[1] == 0
        watch.set(True)
        assert waiters[1] == 1
        got: list[bool] = []
        seen = _native.doorbell_load_at(bell, 0)
        t = threading.Thread(target=lambda: got.append(
            _native.doorbell_watch_at(bell, seen, watch, 5.0)))
        t.start()
        time.sleep(0.1)                 # asleep in the futex, counted once
        assert waiters[1] == 1 and not got
        watch.set(False)                # (an append on the loop claimed all)
        assert waiters[1] == 0
        p.send("t", b"y")
        time.sleep(0.1)
        assert not got                  # slept through it
        watch.set(True)
        assert waiters[1] == 1
        p.send("t", b"z")
        t.join(5.0)
        assert got == [True]
        assert waiters[1] == 0          # (the watcher left the count)
        del waiters


@pytest.mark.parametrize("loop", LOOPS)
def test_one_partition_wakes_into_the_native_fetch(logdir, loop):
    """A consumer of one positioned partition fetches what a wake brought
    in one native call (Partition.fetch_committed, the blocked poll's
    decode-after-wake), with the general fetch's delivery rules: keys and
    headers as sent, a refused record stops the partition at it, and
    pause falls back to the general fetch."""
    def refuse(v: bytes) -> bytes:
        if v == b"bad":
            raise ValueError("refused")
        return v.upper()

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            p = log.producer()
            c = log.consumer("t", value_deserializer=refuse)
            await p.send("t", b"v0")
            assert await c.getmany() == {}       # at the end, not positioned yet
            await p.send("t", b"v0")
            assert len((await c.getmany())[TP0]) == 1   # positioned after it
            part = log.log.partition("t", 0)
            native = []
            fetch_committed = part.fetch_committed

            def spy(*a: Any, **k: Any) -> list[Any]:
                got = fetch_committed(*a, **k)
                native.append(len(got))
                return got
            part.fetch_committed = spy  # type: ignore[method-assign]

            async def woken() -> dict[pylog.TopicPartition, list[pylog.Record]]:
                task = asyncio.create_task(c.getmany(timeout_ms=5000))
                await asyncio.sleep(0.05)       # waiting on the bridge
                assert not task.done()
                await p.send("t", b"v1", b"k1", headers=[("h", b"x")])
                return await task

            before = log.log.metrics().partition("t", 0)
            got = await woken()
            assert [(r.offset, r.key, r.value, r.headers) for r in got[TP0]] == \
                [(2, b"k1", b"V1", (("h", b"x"),))]
            assert native[-1] == 1
            after = log.log.metrics().partition("t", 0)     # counted once (P-10)
            assert (after.fetches - before.fetches,
                    after.fetched_records - before.fetched_records) == (1, 1)
            task = asyncio.create_task(c.getmany(timeout_ms=5000))
            await asyncio.sleep(0.05)
            await p.send_batch("t", [b"v2", b"bad", b"v4"])
            assert [r.value for r in (await task)[TP0]] == [b"V2"]   # up to the refused
            assert native[-1] == 3 and await c.position(TP0) == 4
            before = log.log.metrics().partition("t", 0)
            with pytest.raises(pylog.DeserializationError):
                await c.getmany()
            assert await c.position(TP0) == 4
            after = log.log.metrics().partition("t", 0)     # nothing was delivered
            assert (after.fetches, after.fetched_records) == \
                (before.fetches, before.fetched_records)
            c.seek(TP0, 5)
            assert [r.value for r in (await c.getmany())[TP0]] == [b"V4"]
            c.pause(TP0)
            calls = len(native)
            await p.send("t", b"v5")
            assert await c.getmany() == {}
            assert len(native) == calls         # paused: not the native path
            c.resume(TP0)
            assert [r.value for r in (await c.getmany())[TP0]] == [b"V5"]
            await c.close()

    run(loop, main)


@pytest.mark.parametrize("group", [None, "g"])
def test_first_fetch_file_work_runs_off_the_loop(logdir, group):
    """The first fetch of a partition lists, opens and maps its segment
    and reads its index (1-3 ms at full speed: the one loop callback over
    1 ms left in bench/aio.py's runs): AIOConsumer does that in the Log's
    executor (PollDriver.prepare, also after a group's housekeeping), so
    the fetch on the loop only decodes."""
    import threading

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(100)])
            reader = log.log.partition("t", 0).reader
            threads = []
            locate = reader._locate

            def spy(*a: Any) -> int:
                threads.append(threading.get_ident())
                return locate(*a)
            reader._locate = spy  # type: ignore[method-assign]
            async with log.consumer("t", group_id=group,
                                    auto_offset_reset="earliest") as c:
                got: list[pylog.Record] = []
                while len(got) < 100:
                    got += (await c.getmany(timeout_ms=5000)).get(TP0, [])
                assert [r.offset for r in got] == list(range(100))
            assert threads and threading.get_ident() not in threads

    run("asyncio", main)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_aiolog_opened_before_fork_raises_in_the_child(logdir):
    """An AIOLog opened (its executor threads started) before os.fork():
    the child's calls waited for good on executor threads that do not
    exist there. They raise ForkedLogError; close() and a client's close()
    there return (the parent's Log is the parent's)."""
    alog = pylog.aio.open(logdir)

    async def parent() -> pylog.aio.AIOProducer:
        await alog.open()
        await alog.create_topic("t")
        producer = alog.producer()
        await producer.send("t", b"parent")
        consumer = alog.consumer("t", group_id="g", auto_offset_reset="earliest")
        assert len(await consumer.getmany(timeout_ms=2000)) == 1
        return producer, consumer

    runner = asyncio.Runner()           # (one loop for the parent's AIOLog)
    producer, consumer = runner.run(parent())
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            async def child() -> int:
                try:
                    await asyncio.wait_for(producer.send("t", b"child"), 5)
                except pylog.ForkedLogError:
                    pass
                else:
                    return 2
                try:
                    alog.producer()
                except pylog.ForkedLogError:
                    pass
                else:
                    return 3
                try:
                    await asyncio.wait_for(consumer.getmany(timeout_ms=100), 5)
                except pylog.ForkedLogError:
                    pass
                else:
                    return 5
                await asyncio.wait_for(producer.close(), 5)
                await asyncio.wait_for(alog.close(), 5)
                return 0
            code = asyncio.run(child())
        except BaseException:
            code = 4
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while not (done := os.waitpid(pid, os.WNOHANG))[0] and time.monotonic() < deadline:
        time.sleep(0.02)
    if not done[0]:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert done[0] and os.waitstatus_to_exitcode(done[1]) == 0, done

    async def after() -> list[bytes]:
        await alog.producer().send("t", b"parent again")
        await consumer.close()
        await alog.close()
        with pylog.open(logdir) as log:
            return [r.value for r in log.consumer("t", auto_offset_reset="earliest")
                    .poll(timeout=1)]

    with runner:
        assert runner.run(after()) == [b"parent", b"parent again"]
