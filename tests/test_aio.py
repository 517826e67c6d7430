"""pylog.aio: the asyncio producer and consumer (README "asyncio").

Plain tests that run their coroutines with asyncio.Runner, under the
default event loop and under uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from childproc import expect, start

import pylog
import pylog.aio

try:
    import uvloop
except ImportError:          # optional: those runs skip
    uvloop = None

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    uvloop is None, reason="uvloop is not installed"))]
TP0 = pylog.TopicPartition("t", 0)


def run(kind: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    factory = uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


@pytest.mark.parametrize("loop", LOOPS)
def test_round_trip(logdir, loop):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", 2)
            async with log.producer() as p, \
                    log.consumer("t", auto_offset_reset="earliest") as c:
                md = await p.send("t", b"v0", b"k", partition=0,
                                  headers=[("h", b"x")], timestamp_ms=1234)
                assert (md.topic, md.partition, md.offset, md.timestamp_ms) == \
                    ("t", 0, 0, 1234)
                await p.send_and_wait("t", b"v1", partition=1)
                mds = await p.send_batch("t", [b"a", (b"k2", b"b")], partition=1)
                assert [m.offset for m in mds] == [1, 2]
                got: dict[pylog.TopicPartition, list[pylog.Record]] = {}
                while sum(map(len, got.values())) < 4:
                    for tp, recs in (await c.getmany(timeout_ms=5000)).items():
                        got.setdefault(tp, []).extend(recs)
                assert [r.value for r in got[TP0]] == [b"v0"]
                r = got[TP0][0]
                assert (r.key, r.headers, r.timestamp_ms) == (b"k", (("h", b"x"),), 1234)
                assert [r.value for r in got[pylog.TopicPartition("t", 1)]] == \
                    [b"v1", b"a", b"b"]
                assert await c.getmany(timeout_ms=0) == {}
                await p.send("t", b"later", partition=0)
                one = await c.getone()
                assert (one.value, one.offset) == (b"later", 1)
                await p.flush()

    run(loop, main)


def test_sync_always_sends_off_the_loop(logdir):
    async def main():
        async with pylog.aio.open(logdir) as log:
            await log.create_topic("t")
            p = log.producer()
            mds = await asyncio.gather(*(p.send("t", b"%d" % i) for i in range(20)))
            assert sorted(m.offset for m in mds) == list(range(20))
            await p.close()
        with pylog.open(logdir, readonly=True) as sync_log:
            c = sync_log.consumer("t", auto_offset_reset="earliest")
            assert len(c.poll(timeout=5)) == 20

    run("asyncio", main)


@pytest.mark.parametrize("loop", LOOPS)
def test_wakeup_from_another_process(logdir, loop, child_env):
    child = start(
        "import sys, pylog\n"
        "log = pylog.open(sys.argv[1], sync='never')\n"
        "p = log.producer()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "p.send('t', b'from the child')\n"
        "log.close()\n"
        "print('sent', flush=True)\n", logdir, env=child_env, stdin=subprocess.PIPE)

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            c = log.consumer("t")       # latest: only what the child sends
            assert await c.getmany() == {}
            waiting = asyncio.create_task(c.getmany(timeout_ms=60_000))
            await asyncio.sleep(0.1)
            assert not waiting.done()
            await asyncio.get_running_loop().run_in_executor(
                None, expect, child, b"ready")
            child.stdin.write(b"go\n")
            child.stdin.flush()
            got = await asyncio.wait_for(waiting, 30)
            assert [r.value for r in got[TP0]] == [b"from the child"]
            await c.close()

    try:
        run(loop, main)
        expect(child, b"sent")
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelled_gets_lose_nothing(logdir, loop):
    n = 300

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            p = log.producer()
            c = log.consumer("t", auto_offset_reset="earliest", max_poll_records=7)
            got = await gets_cancelled_while_sending(c, p, "t", n, timeout_ms=1000)
            assert [int(r.value) for r in got] == list(range(n))
            assert await c.position(TP0) == n
            # records getone fetched but did not return stay for the next call
            await c.seek_to_beginning()
            first = await c.getone()
            assert first.offset == 0 and await c.position(TP0) == 1
            waiting = asyncio.create_task(c.getone())
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            rest = await c.getmany(max_records=3)
            assert [r.offset for r in rest[TP0]] == [1, 2, 3]

    run(loop, main)


async def gets_cancelled_while_sending(consumer: Any, producer: Any, topic: str, n: int,
                                      **getmany_args: Any) -> list[Any]:
    """Send ``n`` records (b"0", b"1", ...) to ``topic`` while getmany()
    (with ``getmany_args``) and getone() calls of ``consumer`` take them,
    each cancelled at one of several points; the records of the calls that
    returned, in order, once there are ``n``."""
    got: list[Any] = []

    async def produce():
        for i in range(n):
            await producer.send(topic, b"%d" % i)
            if i % 3 == 0:
                await asyncio.sleep(0)

    producing = asyncio.create_task(produce())
    i = 0
    while len(got) < n:
        i += 1
        task = asyncio.create_task(
            consumer.getmany(**getmany_args) if i % 2 else consumer.getone())
        for _ in range(i % 4):       # cancel at varying points
            await asyncio.sleep(0)
        task.cancel()
        try:
            res = await task
        except asyncio.CancelledError:
            continue
        got.extend([r for rs in res.values() for r in rs] if isinstance(res, dict) else [res])
    await producing
    return got


def test_commit_counts_only_records_received(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("t")
            p = log.producer()
            await p.send_batch("t", [b"%d" % i for i in range(10)])
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            got = [await c.getone() for _ in range(4)]   # 6 more fetched, not received
            assert [r.offset for r in got] == [0, 1, 2, 3]
            assert await c.position(TP0) == 4
            await c.commit()
            assert await c.committed(TP0) == 4
            assert c.assignment() == {TP0}
            await c.close()
            c2 = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            rest = await c2.getmany(timeout_ms=5000)
            assert [r.offset for r in rest[TP0]] == [4, 5, 6, 7, 8, 9]
            await c2.commit({TP0: 9})
            assert await c2.committed(TP0) == 9
            c2.pause(TP0)
            assert await c2.getmany(timeout_ms=10) == {}
            c2.resume(TP0)
            c2.seek(TP0, 8)
            assert [r.offset for r in await _take(c2, 2)] == [8, 9]
            await c2.close()

    run("asyncio", main)


async def _take(consumer: pylog.aio.AIOConsumer, n: int) -> list[pylog.Record]:
    """The next ``n`` records, by ``anext(consumer)`` (an ``async for`` left
    after its nth record would give that one back)."""
    return [await anext(consumer) for _ in range(n)]


@contextlib.asynccontextmanager
async def _log_of(path: str, n: int) -> Any:
    """An open AIOLog whose topic "t" (one partition) holds ``n`` records."""
    async with pylog.aio.open(path, sync="never") as log:
        await log.create_topic("t")
        await log.producer().send_batch("t", [b"x"] * n)
        yield log


@pytest.mark.parametrize("loop", LOOPS)
def test_no_loop_stall_at_full_speed(logdir, loop):
    """A heartbeat every 1 ms records the gaps between loop turns while a
    producer, a group consumer that commits, and sync="always" sends run as
    fast as they can. The bar is 1 ms (bench/aio.py reports it); on this
    shared machine the test asserts a generous bound."""
    async def main():
        gaps: list[float] = []
        stop = asyncio.Event()

        async def heartbeat():
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        for sync in ("never", "always"):
            n = 20_000 if sync == "never" else 200
            async with pylog.aio.open(os.path.join(logdir, sync), sync=sync) as log:
                await log.create_topic("t", 2)
                p = log.producer()
                c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                                 auto_commit_interval_ms=50)

                async def produce():
                    for i in range(n):
                        await p.send("t", b"x" * 100)

                async def consume():
                    seen = 0
                    while seen < n:
                        batch = await c.getmany(timeout_ms=1000)
                        seen += sum(map(len, batch.values()))
                        await c.commit()

                await asyncio.gather(produce(), consume())
                await c.close()
                await p.close()
        stop.set()
        await beat
        return max(gaps)

    worst = run(loop, main)
    print(f"worst loop gap {worst * 1000:.2f} ms")
    assert worst < 0.05


def test_idle_consumers_cost_little_cpu(logdir):
    n = 1000

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            consumers = [log.consumer("t") for _ in range(n)]
            tasks = [asyncio.create_task(c.getmany(timeout_ms=120_000))
                     for c in consumers]
            await asyncio.sleep(1.5)        # all waiting; first refreshes done
            cpu0, t0 = time.process_time(), time.monotonic()
            await asyncio.sleep(3)
            share = (time.process_time() - cpu0) / (time.monotonic() - t0)
            # and they still wake: one record reaches every one of them
            await log.producer().send("t", b"wake")
            done = await asyncio.wait_for(asyncio.gather(*tasks), 30)
            assert all(d[TP0][0].value == b"wake" for d in done)
            for c in consumers:
                await c.close()
            return share

    share = run("asyncio", main)
    print(f"{n} idle consumers: {share * 100:.2f}% of a CPU")
    assert share < 0.01         # issue 18's bar (measured 0.1-0.2%)


def test_waiting_consumer_sees_a_topic_created_later(logdir):
    """Idle consumers without a group wait without waking every second;
    the Log's topic watch wakes them when a subscribed topic appears."""
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            c = log.consumer("late", auto_offset_reset="earliest")
            waiting = asyncio.create_task(c.getmany(timeout_ms=60_000))
            await asyncio.sleep(0.2)
            await log.create_topic("late")
            await log.producer().send("late", b"here")
            got = await asyncio.wait_for(waiting, 30)
            assert [r.value for rs in got.values() for r in rs] == [b"here"]
            await c.close()

    run("asyncio", main)


def test_close_from_another_task_ends_the_waits(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await close_ends_the_waits(log.consumer("t", group_id="g"))

    run("asyncio", main)


async def close_ends_the_waits(
        consumer: pylog.aio.AIOConsumer | pylog.aio.AIOShareConsumer) -> None:
    """A close() of ``consumer`` from another task ends an ``async for``
    over it (with nothing) and a getone() waiting on it (LogClosed)."""
    iterating = asyncio.create_task(_drain(consumer))
    getting = asyncio.create_task(consumer.getone())
    await asyncio.sleep(0.3)
    assert not iterating.done() and not getting.done()
    await consumer.close()
    assert await asyncio.wait_for(iterating, 30) == []
    with pytest.raises(pylog.LogClosed, match="closed"):
        await asyncio.wait_for(getting, 30)


async def _drain(consumer: pylog.aio.AIOConsumer | pylog.aio.AIOShareConsumer) -> list[Any]:
    return [r async for r in consumer]


def test_a_log_not_opened_yet_says_so(logdir):
    log = pylog.aio.open(logdir)
    with pytest.raises(pylog.LogClosed, match="not open yet"):
        log.producer()
    assert not os.path.exists(logdir)       # nothing created before open


def test_bad_getmany_arguments_are_refused(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send("t", b"kept")
            c = log.consumer("t", auto_offset_reset="earliest")
            for bad in ({"timeout_ms": -1}, {"timeout_ms": "1"}, {"max_records": 0},
                        {"max_records": True}):
                with pytest.raises(pylog.InvalidArgument):
                    await c.getmany(**bad)
            got = await c.getmany(timeout_ms=5000)     # nothing was consumed
            assert [r.value for r in got[TP0]] == [b"kept"]
            with pytest.raises(pylog.InvalidArgument, match="listener"):
                log.consumer("t", group_id="g", listener=object())
            p = log.producer()
            for items in (5, b"one"):       # (a bare TypeError from list())
                with pytest.raises(pylog.InvalidArgument, match="items"):
                    await p.send_batch("t", items)
            with pytest.raises(pylog.InvalidArgument, match="mapping"):
                await p.send_batch("t", {b"k": b"v"})      # (keys sent as values)
            with pytest.raises(pylog.InvalidArgument, match="mapping"):
                await p.send_batch("t", items={b"k": b"v"})
            assert log.log.describe_topic("t").partition_info[0].end_offset == 1
            s = log.share_consumer("t", group_id="w")
            await s.close()
            with pytest.raises(pylog.LogClosed, match="closed"):
                await s.getmany()           # (it returned {}, as if idle)

    run("asyncio", main)


def test_close_on_an_exception_commits_nothing_unfinished(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(10)])
            with pytest.raises(ZeroDivisionError):
                async with log.consumer("t", group_id="g",
                                        auto_offset_reset="earliest") as c:
                    await c.getone()
                    await c.getone()            # being handled when it fails
                    1 / 0
            assert log.log.consumer(group_id="g").committed(TP0) in (None, 0)
            again = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            assert (await again.getone()).offset == 0
            await again.close()

    run("asyncio", main)


def test_pause_keeps_unreceived_records_and_finishes_nothing(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(10)])
            for resume in (False, True):
                c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
                assert (await c.getone()).offset == 0
                assert (await c.getone()).offset == 1     # being handled
                c.pause(TP0)
                assert await c.position(TP0) == 2
                if resume:
                    assert await c.getmany(timeout_ms=10) == {}
                    c.resume(TP0)
                    got = await c.getmany(timeout_ms=5000)
                    assert [r.offset for r in got[TP0]] == list(range(2, 10))
                    await c.close()
                    break
                # a close (auto-commit) right after the pause commits none of
                # the batch: the record being handled is delivered again
                await c.close()
                assert log.log.consumer(group_id="g").committed(TP0) in (None, 0)

    run("asyncio", main)


class _SyncListener:
    def __init__(self, events: list[tuple[str, set[pylog.TopicPartition], bool]]) -> None:
        self.events = events
        self.consumer: pylog.aio.AIOConsumer | None = None

    def _note(self, what: str, tps: set[pylog.TopicPartition]) -> None:
        on_loop = asyncio.get_running_loop() is not None    # raises off the loop
        self.events.append((what, set(tps), on_loop))

    def on_partitions_revoked(self, revoked):
        self._note("revoked", revoked)

    def on_partitions_assigned(self, assigned):
        self._note("assigned", assigned)


class _AsyncListener(_SyncListener):
    async def on_partitions_revoked(self, revoked):
        self._note("revoked", revoked)
        assert self.consumer is not None
        await asyncio.sleep(0.01)
        await self.consumer.commit()        # still owned: this succeeds

    async def on_partitions_assigned(self, assigned):
        await asyncio.sleep(0)
        assert self.consumer is not None
        with pytest.raises(pylog.InvalidArgument, match="listener"):
            await self.consumer.getmany()   # (the housekeeping waits for us)
        self._note("assigned", assigned)


@pytest.mark.parametrize("kind", [_SyncListener, _AsyncListener])
def test_rebalance_listener_callbacks_run_on_the_loop(logdir, kind):
    tps = {TP0, pylog.TopicPartition("t", 1)}

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", 2)
            p = log.producer()
            for part in (0, 1):
                await p.send_batch("t", [b"a", b"b"], partition=part)
            events: list[tuple[str, set[pylog.TopicPartition], bool]] = []
            listener = kind(events)
            a = log.consumer("t", group_id="g", enable_auto_commit=False,
                             auto_offset_reset="earliest", listener=listener)
            listener.consumer = a
            got = 0
            while got < 4:
                got += sum(map(len, (await a.getmany(timeout_ms=5000)).values()))
            assert events == [("assigned", tps, True)]
            b = log.consumer("t", group_id="g", enable_auto_commit=False,
                             auto_offset_reset="earliest")
            deadline = time.monotonic() + 30
            while not b.assignment() and time.monotonic() < deadline:
                await asyncio.gather(a.getmany(timeout_ms=200), b.getmany(timeout_ms=200))
            assert len(events) == 2, events
            what, moved, on_loop = events[1]
            assert what == "revoked" and on_loop and len(moved) == 1
            assert a.assignment() == tps - moved and b.assignment() == moved
            (gone,) = moved
            committed = log.log.consumer(group_id="g").committed(gone)
            # the async listener committed the records received before it went
            assert committed == (2 if kind is _AsyncListener else None)
            await a.close()         # the rest is revoked on the loop too
            assert events[2] == ("revoked", tps - moved, True)
            await b.close()

    run("asyncio", main)


def test_a_listener_that_raises_fails_the_call(logdir):
    class Bad:
        def on_partitions_assigned(self, assigned):
            raise RuntimeError("listener failed")

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            c = log.consumer("t", group_id="g", listener=Bad())
            with pytest.raises(RuntimeError, match="listener failed"):
                await c.getmany(timeout_ms=100)
            await c.close()

    run("asyncio", main)


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
            assert [r.offset for r in await _take(c, 2)] == [2, 3]
            seen = []
            async for r in c:           # a seek in the body: the next is 0
                seen.append(r.offset)
                if r.offset == 4:
                    c.seek(TP0, 0)      # (4 is not given back: sought away)
                if len(seen) == 3:
                    break
            assert seen == [4, 0, 1]
            assert [r.offset for r in await _take(c, 19)] == list(range(1, 20))
            # cancelled while it waits: nothing fetched, nothing lost
            for cut in (_drain(c), anext(c)):
                waiting = asyncio.ensure_future(cut)
                await asyncio.sleep(0.05)
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
            await p.send("t", b"20")
            assert [r.offset for r in await _take(c, 1)] == [20]
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
        async with _log_of(logdir, 6) as log:
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
        async with _log_of(logdir, 8) as log:
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
            assert [r.offset for r in await _take(c, 6)] == [2, 3, 4, 5, 6, 7]
            await c.close()

    run("asyncio", main)


def test_a_held_record_never_moves_a_commit_back(logdir):
    """The record one task's ``async for`` is on is held unfinished across
    another task's fetches, but never below what the application
    committed itself: auto-commit went back from 8 to 0 (found by review)."""
    async def main():
        async with _log_of(logdir, 8) as log:
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
        async with _log_of(logdir, 6) as log:
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
        async with _log_of(path, 400) as log:
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
            assert [r.offset for r in await _take(c, 2)] == [1, 2]
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
