"""pylog.aio: aiokafka calls that were missing (README "asyncio"):
``getmany(*partitions)`` / ``getone(*partitions)``, ``unsubscribe()``,
``last_stable_offset(tp)``, ``create_batch()`` with ``send_batch(batch,
topic, partition=)``. Each test tries to break one: records lost,
reordered or committed without being received, a loop blocked, a batch
sent twice."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import pylog
import pylog.aio
import pylog.polldriver
from pylog import TopicPartition
from pylog.aio.batch import BATCH_MAX_BYTES

try:
    import uvloop
except ImportError:          # optional: those runs skip
    uvloop = None

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    uvloop is None, reason="uvloop is not installed"))]
T0, T1 = TopicPartition("t", 0), TopicPartition("t", 1)


def run(kind: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    factory = uvloop.new_event_loop if kind == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


async def two_partitions(log: pylog.aio.AIOLog, n: int = 5) -> None:
    """Topic t: values b"<p>-<i>" at offsets 0..n-1 of partitions 0 and 1."""
    await log.create_topic("t", partitions=2)
    p = log.producer()
    for part in (0, 1):
        await p.send_batch("t", [b"%d-%d" % (part, i) for i in range(n)], partition=part)


async def drain(c: pylog.aio.AIOConsumer, want: int) -> dict[TopicPartition, list[int]]:
    """getmany() until ``want`` records came: {tp: offsets}."""
    got: dict[TopicPartition, list[int]] = {}
    for _ in range(50):
        if sum(map(len, got.values())) >= want:
            break
        for tp, recs in (await c.getmany(timeout_ms=200)).items():
            got.setdefault(tp, []).extend(r.offset for r in recs)
    return got


# -- getmany(*partitions) ---------------------------------------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_getmany_of_a_partition_leaves_the_others_buffered(logdir, loop):
    """getone fetched a poll's worth of both partitions into the buffer;
    getmany(tp) takes tp's alone, and the other partition's stay, in order,
    for the next getmany (nothing lost, nothing reordered)."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await two_partitions(log)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            await c.start()
            first = await c.getone()
            mine = TopicPartition("t", first.partition)
            other = T1 if mine == T0 else T0
            assert await c.position(mine) == 1 and await c.position(other) == 0
            got = await c.getmany(other, timeout_ms=1000)
            assert list(got) == [other]
            assert [r.offset for r in got[other]] == [0, 1, 2, 3, 4]
            assert await c.position(mine) == 1      # its records are still buffered
            assert await c.getmany(other) == {}
            rest = await c.getmany(timeout_ms=1000)
            assert list(rest) == [mine]
            assert [r.offset for r in rest[mine]] == [1, 2, 3, 4]
            assert [r.value for r in rest[mine]] == [b"%d-%d" % (mine.partition, i)
                                                     for i in range(1, 5)]
            await c.close()

    run(loop, main)


def test_getmany_of_a_partition_fetches_nothing_of_the_others(logdir):
    """With the buffer empty, getmany(tp) reads tp alone: the other
    partition's position does not move, and max_records holds."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await two_partitions(log)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            await c.start()
            got = await c.getmany(T1, timeout_ms=1000, max_records=2)
            assert {tp: [r.offset for r in recs] for tp, recs in got.items()} == {T1: [0, 1]}
            assert await c.position(T0) == 0 and await c.position(T1) == 2
            got = await c.getmany(T0, T1, timeout_ms=1000)
            assert sorted((r.partition, r.offset) for recs in got.values() for r in recs) \
                == [(0, i) for i in range(5)] + [(1, i) for i in range(2, 5)]
            p = log.producer()
            await p.send("t", b"late-0", partition=0)
            await p.send("t", b"late-1", partition=1)
            r = await asyncio.wait_for(c.getone(T1), 5)
            assert (r.partition, r.value) == (1, b"late-1")
            assert await c.position(T0) == 5        # getone(T1) fetched T1 alone
            await c.close()

    run("asyncio", main)


def test_commit_after_getmany_of_a_partition_commits_only_what_was_received(logdir):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await two_partitions(log)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            await c.start()
            first = await c.getone()        # both partitions' records fetched
            mine = TopicPartition("t", first.partition)
            other = T1 if mine == T0 else T0
            await c.getmany(other, timeout_ms=1000)
            await c.commit()
            assert await c.committed(other) == 5
            assert await c.committed(mine) == 1     # the getone's record alone
            await c.close()
            again = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            got = await drain(again, 4)
            assert got == {mine: [1, 2, 3, 4]}
            await again.close()

    run("asyncio", main)


def test_auto_commit_after_getmany_of_a_partition_skips_the_buffered(logdir):
    """close() (auto-commit) commits the finished records only: the
    getone's record is (a fetch came after it), the other partition's
    buffered ones were never received."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await two_partitions(log)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            await c.start()
            first = await c.getone()
            mine = TopicPartition("t", first.partition)
            other = T1 if mine == T0 else T0
            await c.getmany(other, timeout_ms=1000)
            await c.getmany(other, timeout_ms=0)    # a fetch: the records before are done
            await c.close()
            assert log.log.describe_group("g")["lag"] == 4      # mine's buffered
            again = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            assert await drain(again, 4) == {mine: [1, 2, 3, 4]}
            await again.close()

    run("asyncio", main)


@pytest.mark.parametrize("loop", LOOPS)
def test_cancelled_getmany_of_a_partition_loses_nothing(logdir, loop):
    """A getmany(T0) waiting while T1's records sit in the buffer: other
    tasks see nothing paused and take T1's; cancelled just as T0's record
    arrives, it has fetched nothing, so the next getmany gets it."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", partitions=2)
            p = log.producer()
            await p.send_batch("t", [b"1-%d" % i for i in range(5)], partition=1)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            await c.start()
            assert (await c.getone()).offset == 0       # T1's 1..4 buffered
            waiting = asyncio.create_task(c.getmany(T0, timeout_ms=30_000))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            assert c.paused() == set()
            got = await c.getmany(T1, max_records=2)     # another task meanwhile
            assert [r.offset for r in got[T1]] == [1, 2]
            await p.send("t", b"0-0", partition=0)       # wakes the waiter ...
            waiting.cancel()                             # ... cancelled first
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert await c.position(T0) == 0
            got = await drain(c, 3)
            assert got == {T0: [0], T1: [3, 4]}
            await c.close()

    run(loop, main)


def test_getmany_of_a_partition_after_a_cancelled_prefetch_of_another(logdir):
    """Records too large for the loop are decoded in the executor. A
    getmany(T1) cancelled while that runs leaves T1's records kept for a
    later call; a getmany(T0) after it must get T0's records (its own
    prefetch's), not start its prefetch again and again past its
    timeout."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", partitions=2)
            p = log.producer()
            for part in (0, 1):
                for _ in range(3):
                    await p.send("t", b"x" * 300_000, partition=part)
            c = log.consumer(auto_offset_reset="earliest", enable_auto_commit=False)
            c.assign([T0, T1])
            started = asyncio.Event()
            submit = log._submit

            def spy(fn: Any, *args: Any) -> Any:
                if getattr(fn, "__name__", "") == "prefetch":
                    started.set()
                return submit(fn, *args)
            log._submit = spy       # type: ignore[method-assign]
            first = asyncio.create_task(c.getmany(T1, timeout_ms=1000))
            await started.wait()
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            for _ in range(200):        # its prefetch ends, kept for later
                if c._pre is not None:
                    break
                await asyncio.sleep(0.01)
            assert c._pre is not None and c._pre.job.tp == T1
            jobs = 0

            def count(fn: Any, *args: Any) -> Any:
                nonlocal jobs
                jobs += 1
                return submit(fn, *args)
            log._submit = count     # type: ignore[method-assign]
            got = await asyncio.wait_for(c.getmany(T0, timeout_ms=200), 5)
            assert {tp: [r.offset for r in v] for tp, v in got.items()} == {T0: [0, 1, 2]}
            assert jobs == 1
            got = await asyncio.wait_for(c.getmany(T1, timeout_ms=200), 5)
            assert {tp: [r.offset for r in v] for tp, v in got.items()} == {T1: [0, 1, 2]}
            log._submit = submit    # type: ignore[method-assign]
            await c.close()

    run("asyncio", main)


def test_getmany_of_partitions_not_assigned_is_refused(logdir):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await two_partitions(log)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            with pytest.raises(pylog.InvalidArgument, match="start"):
                await c.getmany(T0)         # a member owns nothing before it joins
            await c.start()
            with pytest.raises(pylog.InvalidArgument):
                await c.getmany(TopicPartition("t", 7))
            with pytest.raises(pylog.InvalidArgument):
                await c.getone(TopicPartition("other", 0))
            m = log.consumer(auto_offset_reset="earliest")
            m.assign([T0])
            with pytest.raises(pylog.InvalidArgument, match="assign"):
                await m.getmany(T1)
            assert [r.offset for r in (await m.getmany(T0, timeout_ms=1000))[T0]] == \
                [0, 1, 2, 3, 4]
            await c.close()
            await m.close()

    run("asyncio", main)


# -- unsubscribe -------------------------------------------------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_unsubscribe_then_subscribe_gets_the_unreceived_records_again(logdir, loop):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(10)])
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            assert (await c.getone()).offset == 0       # 1..9 buffered
            await c.commit()                            # offset 1: received only
            assert c.assignment() == {T0}
            c.unsubscribe()
            assert c.assignment() == set() and c.subscription() == set()
            c.subscribe(["t"])
            got = await drain(c, 9)
            assert got == {T0: list(range(1, 10))}
            assert log.log.describe_group("g")["generation"] >= 2   # left, joined again
            await c.close()

    run(loop, main)


def test_unsubscribe_drops_the_buffer_uncommitted_with_auto_commit(logdir):
    """With auto-commit, unsubscribe commits what close() would: the
    finished records; the buffered ones and the getone's (not finished)
    come again. The leave runs in the executor, not on the loop."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(10)])
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            assert [r.offset for r in (await c.getmany(timeout_ms=1000,
                                                       max_records=3))[T0]] == [0, 1, 2]
            assert (await c.getone()).offset == 3     # finishes 0..2; 4..9 buffered
            member = c._c._member
            assert member is not None
            leave, threads = member.leave, []

            def spy(*args: Any, **kwargs: Any) -> None:
                threads.append(threading.get_ident())
                leave(*args, **kwargs)
            member.leave = spy      # type: ignore[method-assign]
            c.unsubscribe()
            assert threads == []    # not on the loop, in unsubscribe()
            c.assign([T0])
            assert await c.position(T0) == 3        # committed with the leave
            assert threads and threads[0] != threading.get_ident()
            got = await drain(c, 7)
            assert got == {T0: list(range(3, 10))}
            desc = log.log.describe_group("g")
            assert desc["members"] == [] and desc["partitions"][0]["committed"] == 3
            await c.close()

    run("asyncio", main)


def test_unsubscribe_ends_a_getmany_of_another_task(logdir):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            c = log.consumer("t", group_id="g")
            await c.start()
            waiting = asyncio.create_task(c.getmany(timeout_ms=30_000))
            await asyncio.sleep(0.05)
            c.unsubscribe()
            assert await asyncio.wait_for(waiting, 5) == {}
            with pytest.raises(pylog.InvalidArgument):
                await c.getmany()       # nothing subscribed
            c.subscribe(["t"])
            await log.producer().send("t", b"x")
            got = await drain(c, 1)     # ('latest': the join reads the end) ...
            assert got in ({}, {T0: [0]})
            await c.close()
            with pytest.raises(pylog.LogClosed):
                c.unsubscribe()

    run("asyncio", main)

def test_pause_after_unsubscribe_and_assign_stays(logdir):
    """unsubscribe() forgets the pauses at once: a pause() made after it
    (and a new assign()) is not undone when its leave runs later."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await two_partitions(log, 10)
            c = log.consumer(group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            c.assign([T0, T1])
            c.pause(T0)
            c.unsubscribe()
            assert c.paused() == set()
            c.assign([T0, T1])
            c.pause(T1)             # before the leave runs
            got = await c.getmany(timeout_ms=500)
            assert c.paused() == {T1}
            assert set(got) == {T0}
            await c.close()

    run("asyncio", main)



# -- last_stable_offset ---------------------------------------------------------------------
def test_last_stable_offset(logdir):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", partitions=2)
            await log.producer().send_batch("t", [b"a", b"b"], partition=0)
            c = log.consumer("t", auto_offset_reset="earliest",
                             isolation_level="read_committed")
            assert c.last_stable_offset(T0) in (None, 2)    # (a look in the executor)
            assert await lso_of(c, T0, 2) == 2             # no transaction: the end
            assert await lso_of(c, T1, 0) == 0
            with pytest.raises(pylog.InvalidArgument):
                c.last_stable_offset(TopicPartition("t", 5))
            tx = log.producer(transactional_id="tx")
            await tx.begin_transaction()
            await tx.send("t", b"open", partition=0)        # at offset 2
            await log.producer().send("t", b"plain", partition=0)
            lso = c.last_stable_offset(T0)
            assert lso in (None, 2)        # (a look in the executor: 2 once done)
            for _ in range(100):
                if lso == 2:
                    break
                await asyncio.sleep(0.02)
                lso = c.last_stable_offset(T0)
            assert lso == 2
            got = await drain(c, 2)
            assert got == {T0: [0, 1]}      # read_committed stops there
            await tx.commit_transaction()
            end = c.last_stable_offset(T0)
            for _ in range(100):
                if end is not None and end >= 4:
                    break
                await asyncio.sleep(0.02)
                end = c.last_stable_offset(T0)
            assert end == 5     # the commit's control batch ends it
            await tx.close()
            await c.close()

    run("asyncio", main)

async def lso_of(c: pylog.aio.AIOConsumer, tp: TopicPartition, want: int) -> int | None:
    """last_stable_offset(tp) once it is ``want`` (2 s at most)."""
    got = c.last_stable_offset(tp)
    for _ in range(100):
        if got == want:
            break
        await asyncio.sleep(0.02)
        got = c.last_stable_offset(tp)
    return got


def test_last_stable_offset_reads_no_transactions_on_the_loop(logdir, monkeypatch):
    """Knowing that no transaction is open means reading every
    transactional id's document (TxnView): never on the loop, even for a
    partition no transaction touched."""
    threads: list[int] = []
    view = pylog.fetching.TxnView

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return view(*args, **kwargs)
    monkeypatch.setattr(pylog.fetching, "TxnView", spy)
    monkeypatch.setattr(pylog.polldriver, "TxnView", spy)

    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await two_partitions(log)
            tx = log.producer(transactional_id="tx")
            await tx.begin_transaction()
            await tx.send("t", b"open", partition=1)
            c = log.consumer(auto_offset_reset="earliest")
            c.assign([T0, T1])
            await c.getmany(timeout_ms=100)     # the partitions open
            assert await lso_of(c, T0, 5) == 5
            assert await lso_of(c, T1, 5) == 5
            assert threads and threading.get_ident() not in threads
            await tx.abort_transaction()
            assert await lso_of(c, T1, 7) == 7      # (the abort's control batch)
            assert threading.get_ident() not in threads
            await tx.close()
            await c.close()

    run("asyncio", main)



def test_highwater_reads_no_transactions_on_the_loop(logdir, monkeypatch):
    """highwater(tp) of a read_committed consumer with 200 transactions
    open on its partition: the end offset as a fetch knows it (aiokafka's
    high watermark, not the last stable offset), without reading a
    transactional id's document on the loop (TxnView._load, the real
    one, counted per thread); None before a fetch, refused for a
    partition not assigned."""
    loads: list[int] = []
    load = pylog.txnview.TxnView._load

    def counted(self: Any, *args: Any) -> Any:
        loads.append(threading.get_ident())
        return load(self, *args)
    monkeypatch.setattr(pylog.txnview.TxnView, "_load", counted)

    def open_transactions(lg: pylog.Log) -> list[Any]:
        producers = []
        for i in range(200):
            tx = lg.producer(transactional_id=f"tx{i}")
            tx.begin_transaction()
            tx.send("t", b"open %d" % i, partition=1)
            producers.append(tx)
        return producers

    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await two_partitions(log)           # offsets 0..4 of each partition
            producers = await asyncio.to_thread(open_transactions, log.log)
            await log.producer().send("t", b"plain", partition=1)     # offset 205
            c = log.consumer(auto_offset_reset="earliest",
                             isolation_level="read_committed")
            c.assign([T0, T1])
            me = threading.get_ident()
            assert c.highwater(T1) is None          # no fetch yet
            with pytest.raises(pylog.InvalidArgument):
                c.highwater(TopicPartition("t", 7))
            got = await drain(c, 10)
            assert got == {T0: [0, 1, 2, 3, 4], T1: [0, 1, 2, 3, 4]}   # up to the LSO
            on_loop = loads.count(me)
            ends = c.highwater(T1), c.highwater(T0)
            assert loads.count(me) == on_loop       # no document read on the loop
            assert ends == (206, 5)
            await log.producer().send("t", b"more", partition=0)
            assert c.highwater(T0) == 6             # (never older than a fetch)
            assert loads.count(me) == on_loop
            assert await lso_of(c, T1, 5) == 5      # the LSO: off the loop
            for tx in producers:
                await asyncio.to_thread(tx.abort_transaction)
                await asyncio.to_thread(tx.close)
            await c.close()

    run("asyncio", main)


# -- create_batch / send_batch(batch, topic, partition=) -----------------------------------
@pytest.mark.parametrize("loop", LOOPS)
def test_create_batch_round_trip(logdir, loop):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", partitions=2)
            p = log.producer()
            await p.send("t", b"before", partition=1)
            batch = p.create_batch()
            assert batch.record_count() == 0 and batch.size() > 0
            md0 = batch.append(key=b"k0", value=b"v0", timestamp=None)
            md1 = batch.append(key=None, value=b"v1", timestamp=1_000_000,
                               headers=[("h", b"x")])
            assert md0 is not None and md1 is not None
            assert (md0.offset, md1.offset, md1.timestamp, md1.crc) == (0, 1, 1_000_000, None)
            assert batch.record_count() == 2 and batch.size() > md0.size + md1.size
            fut = await p.send_batch(batch, "t", partition=1)
            md = await fut
            assert md is not None and (md.topic, md.partition, md.offset) == ("t", 1, 1)
            assert batch.append(key=None, value=b"late", timestamp=None) is None  # closed
            with pytest.raises(pylog.InvalidArgument, match="sent already"):
                await p.send_batch(batch, "t", partition=1)
            c = log.consumer(auto_offset_reset="earliest")
            c.assign([T1])
            got = (await c.getmany(timeout_ms=1000))[T1]
            assert [(r.offset, r.key, r.value) for r in got] == \
                [(0, None, b"before"), (1, b"k0", b"v0"), (2, None, b"v1")]
            assert got[1].timestamp_ms == md0.timestamp
            assert (got[2].timestamp_ms, got[2].headers) == (1_000_000, (("h", b"x"),))
            # the pylog form keeps working
            mds = await p.send_batch("t", [b"a", (b"k", b"b")], partition=1)
            assert [m.offset for m in mds] == [3, 4]
            empty = p.create_batch()
            assert await (await p.send_batch(empty, "t", partition=0)) is None
            await c.close()

    run(loop, main)


def test_create_batch_is_full_at_its_size(logdir):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            p = log.producer()
            batch = p.create_batch()
            n = 0
            while batch.append(key=None, value=b"x" * 1000, timestamp=None) is not None:
                n += 1
                assert batch.size() <= BATCH_MAX_BYTES
            assert 10 <= n < 17 and batch.record_count() == n
            assert batch.append(key=None, value=b"y", timestamp=None) is not None  # fits
            big = p.create_batch()
            assert big.append(key=None, value=b"z" * 20_000, timestamp=None) is not None
            assert big.append(key=None, value=b"z", timestamp=None) is None   # first alone
            fut = await p.send_batch(batch, "t", partition=0)
            assert (await fut).offset == 0                  # type: ignore[union-attr]
            assert (await (await p.send_batch(big, "t", partition=0))).offset == n + 1  # type: ignore[union-attr]
            c = log.consumer("t", auto_offset_reset="earliest")
            got = await drain(c, n + 2)
            assert got == {T0: list(range(n + 2))}
            await c.close()

    run("asyncio", main)


def test_create_batch_refusals_write_nothing(logdir):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", message_timestamp_after_max_ms=1000)
            p = log.producer()
            batch = p.create_batch()
            with pytest.raises(pylog.InvalidArgument):
                batch.append(key=None, value=123, timestamp=None)
            with pytest.raises(pylog.InvalidArgument):
                batch.append(key=None, value=b"v", timestamp=None, headers=[(1, b"x")])
            with pytest.raises(pylog.InvalidArgument):
                batch.append(key=None, value=b"v", timestamp=-5)
            assert batch.record_count() == 0
            batch.append(key=None, value=b"ok", timestamp=None)
            with pytest.raises(pylog.PartitionNotFound):
                await p.send_batch(batch, "t", partition=3)
            future = p.create_batch()
            future.append(key=None, value=b"f",
                          timestamp=time.time_ns() // 1_000_000 + 3_600_000)  # an hour ahead
            with pytest.raises(pylog.InvalidTimestamp):
                await p.send_batch(future, "t", partition=0)
            # nothing was written; the refused batch may be sent again
            assert await (await p.send_batch(batch, "t", partition=0)) == \
                pylog.RecordMetadata("t", 0, 0, batch._records[0][0])
            c = log.consumer("t", auto_offset_reset="earliest")
            assert await drain(c, 1) == {T0: [0]}
            await c.close()

    run("asyncio", main)


def test_create_batch_whose_send_raised_can_be_changed_and_sent(logdir):
    """A send that raised leaves the builder open (unless the application
    closed it); a partition that is not an int is an InvalidArgument."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            p = log.producer()
            batch = p.create_batch()
            assert batch.append(key=None, value=b"a", timestamp=None)
            for bad in ("0", 1.0, True):
                with pytest.raises(pylog.InvalidArgument, match="partition"):
                    await p.send_batch(batch, "t", partition=bad)   # type: ignore[call-overload]
            with pytest.raises(pylog.PartitionNotFound):
                await p.send_batch(batch, "t", partition=3)
            assert batch.append(key=None, value=b"b", timestamp=None) is not None
            await p.send_batch(batch, "t", partition=0)
            assert batch.append(key=None, value=b"c", timestamp=None) is None  # sent
            closed = p.create_batch()
            closed.append(key=None, value=b"d", timestamp=None)
            closed.close()
            with pytest.raises(pylog.PartitionNotFound):
                await p.send_batch(closed, "t", partition=3)
            assert closed.append(key=None, value=b"e", timestamp=None) is None
            c = log.consumer("t", auto_offset_reset="earliest")
            got = []
            while len(got) < 2:
                got += (await c.getmany(timeout_ms=1000)).get(T0, [])
            assert [r.value for r in got] == [b"a", b"b"]
            await c.close()

    run("asyncio", main)


def test_create_batch_serializes_and_goes_off_the_loop_when_large(logdir):
    """The producer's serializers run in append; a batch of more than
    INLINE_BATCH_MAX records is appended in the executor, still as one
    batch of consecutive offsets."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            p = log.producer(value_serializer=lambda v: json.dumps(v).encode(),
                             key_serializer=str.encode)
            batch = p.create_batch()
            for i in range(100):
                assert batch.append(key="k%d" % i, value={"i": i}, timestamp=None)
            fut = await p.send_batch(batch, "t", partition=0)
            assert (await fut).offset == 0                  # type: ignore[union-attr]
            c = log.consumer("t", auto_offset_reset="earliest")
            got = []
            while len(got) < 100:
                got += (await c.getmany(timeout_ms=1000)).get(T0, [])
            assert [(r.key, json.loads(r.value)) for r in got] == \
                [(b"k%d" % i, {"i": i}) for i in range(100)]
            await c.close()

    run("asyncio", main)


def test_create_batch_in_a_transaction(logdir):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            tx = log.producer(transactional_id="tx")
            c = log.consumer("t", auto_offset_reset="earliest",
                             isolation_level="read_committed")
            async with tx.transaction():
                batch = tx.create_batch()
                batch.append(key=None, value=b"a", timestamp=None)
                batch.append(key=None, value=b"b", timestamp=None)
                md = await (await tx.send_batch(batch, "t", partition=0))
                assert md is not None and md.offset == 0
                assert await c.getmany(timeout_ms=100) == {}    # not committed yet
            got = await drain(c, 2)
            assert got == {T0: [0, 1]}
            await tx.close()
            await c.close()

    run("asyncio", main)
