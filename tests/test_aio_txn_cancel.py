"""pylog.aio: a cancellation (``task.cancel()``, an ``asyncio.wait_for``
timeout) landing while a commit runs off the loop. The call runs to its
end either way; the CancelledError must not reach the caller before it
has, or ``committed()`` still shows the old offsets and the README's
recovery (seek the consumer back to its committed offsets and go on)
processes inputs a second time: duplicates where exactly-once is
promised (found by a user trial: 300 inputs gave 305 outputs)."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from aioloops import run
from test_aio_txn import committed_values

import pylog
import pylog.aio
from pylog import TopicPartition

IN0 = TopicPartition("in", 0)
#: how long the held commit waits once the caller was cancelled: the
#: caller must not see its CancelledError before that
HOLD_S = 0.2


def hold(obj, name):
    """Wrap ``obj.name`` (a real method, run in the executor) so that it
    starts only once ``gate`` is set; ``started`` tells when it was
    called. Returns (started, gate)."""
    real = getattr(obj, name)
    started, gate = threading.Event(), threading.Event()

    def held(*args, **kwargs):
        started.set()
        gate.wait(10)
        return real(*args, **kwargs)
    setattr(obj, name, held)
    return started, gate


async def until(event: threading.Event) -> None:
    while not event.is_set():
        await asyncio.sleep(0.001)


async def cancel_while_held(task: asyncio.Task, started, gate) -> None:
    """Cancel ``task`` once its held call runs in the executor, and let
    that call go on HOLD_S later; the task must end with CancelledError."""
    await until(started)
    task.cancel()
    asyncio.get_running_loop().call_later(HOLD_S, gate.set)
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_transaction_cancelled_in_its_commit_shows_it_at_once(logdir):
    """The user's reproduction: cancelled while the block's
    commit_transaction runs, the commit succeeds; committed() right after
    the CancelledError must say so."""
    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("in")
            await log.create_topic("out")
            await log.producer().send_batch("in", [b"1", b"2", b"3"])
            consumer = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                                    enable_auto_commit=False,
                                    isolation_level="read_committed")
            producer = log.producer(transactional_id="doubler")
            async with consumer, producer:
                await producer.start()
                batch = await consumer.getmany(timeout_ms=1000)
                started, gate = hold(producer._p, "commit_transaction")

                async def txn():
                    async with producer.transaction():
                        for r in batch[IN0]:
                            await producer.send("out", r.value)
                        await producer.send_offsets_to_transaction(consumer)
                await cancel_while_held(asyncio.create_task(txn()), started, gate)
                assert await consumer.committed(IN0) == 3      # (was None)
                assert await consumer.seek_to_committed() == {IN0: 3}
                async with producer.transaction():      # none left open
                    await producer.send("out", b"after")

    run("asyncio", main)
    assert committed_values(logdir, "out") == [b"1", b"2", b"3", b"after"]


def test_the_users_reproduction(logdir):
    """As reported: commit_transaction wrapped (at the aio level) to tell
    when the block's commit starts, the task cancelled then; committed()
    right after the CancelledError gave None, 0.5 s later 3."""
    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("in")
            await log.create_topic("out")
            await log.producer().send_batch("in", [b"1", b"2", b"3"])
            consumer = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                                    enable_auto_commit=False,
                                    isolation_level="read_committed")
            producer = log.producer(transactional_id="doubler")
            committing = asyncio.Event()
            commit = producer.commit_transaction

            async def commit_transaction():
                committing.set()
                return await commit()
            producer.commit_transaction = commit_transaction
            async with consumer, producer:
                batch = await consumer.getmany(timeout_ms=1000)

                async def txn():
                    async with producer.transaction():
                        for r in batch[IN0]:
                            await producer.send("out", r.value)
                        await producer.send_offsets_to_transaction(consumer)
                task = asyncio.create_task(txn())
                await committing.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert await consumer.committed(IN0) == 3

    run("asyncio", main)
    assert committed_values(logdir, "out") == [b"1", b"2", b"3"]


def test_a_commit_transaction_cancelled_while_it_runs_is_exact(logdir):
    """commit_transaction() and send_offsets_to_transaction() called by
    hand, each cancelled while it runs: the CancelledError comes once the
    call is done, so committed() tells whether the commit was made."""
    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("in")
            await log.create_topic("out")
            await log.producer().send_batch("in", [b"1", b"2"])
            consumer = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
            producer = log.producer(transactional_id="tx")
            async with consumer, producer:
                await producer.start()
                await consumer.getmany(timeout_ms=1000)
                await producer.begin_transaction()
                await producer.send("out", b"x")
                started, gate = hold(producer._p, "send_offsets_to_transaction")
                await cancel_while_held(asyncio.create_task(
                    producer.send_offsets_to_transaction(consumer)), started, gate)
                started, gate = hold(producer._p, "commit_transaction")
                await cancel_while_held(asyncio.create_task(
                    producer.commit_transaction()), started, gate)
                assert await consumer.committed(IN0) == 2

    run("asyncio", main)
    assert committed_values(logdir, "out") == [b"x"]


def test_a_consumer_commit_cancelled_while_it_runs_shows_at_once(logdir):
    """The same for ``await consumer.commit()`` run off the loop (a
    sync="always" commit fsyncs)."""
    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("in")
            await log.producer().send_batch("in", [b"1", b"2", b"3"])
            consumer = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
            async with consumer:
                await consumer.getmany(timeout_ms=1000)
                started, gate = hold(consumer._c, "commit")
                await cancel_while_held(asyncio.create_task(consumer.commit()),
                                        started, gate)
                assert await consumer.committed(IN0) == 3      # (was None)

    run("asyncio", main)


def test_a_transaction_cancelled_before_its_commit_runs_is_aborted(logdir):
    """A cancellation while the block's commit waits for its turn (behind
    another task's send): the commit never runs, and the transaction it
    left open is aborted, so the next one can begin."""
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("out")
            producer = log.producer(transactional_id="tx")
            async with producer:
                await producer.start()
                started, gate = hold(producer._p, "send")
                ends = asyncio.Event()

                async def txn():
                    async with producer.transaction():
                        other = asyncio.create_task(producer.send("out", b"other"))
                        await until(started)        # (the other send holds the lock)
                        ends.set()
                    await other
                task = asyncio.create_task(txn())
                await ends.wait()
                await asyncio.sleep(0.01)       # (the commit waits for the lock)
                task.cancel()
                gate.set()
                with pytest.raises(asyncio.CancelledError):
                    await task
                async with producer.transaction():
                    await producer.send("out", b"after")

    run("asyncio", main)
    assert committed_values(logdir, "out") == [b"after"]


def test_a_transaction_whose_commit_is_refused_is_aborted(logdir):
    """A rebalance moved the input away before the commit point: the
    block's commit raises CommitFailedError and, as the threaded
    ``transaction()`` (and the README), the block aborts the
    transaction; it was left open and the next one could not begin."""
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("in")
            await log.create_topic("out")
            await log.producer().send_batch("in", [b"1"])
            consumer = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                                    enable_auto_commit=False)
            producer = log.producer(transactional_id="tx")
            async with consumer, producer:
                await consumer.getmany(timeout_ms=1000)
                with pytest.raises(pylog.CommitFailedError):
                    async with producer.transaction():
                        await producer.send("out", b"lost")
                        await producer.send_offsets_to_transaction(consumer)
                        # the group moves on without this member
                        log.log.meta.update_group("g", lambda doc, commit: doc.update(
                            generation=doc["generation"] + 1, members={},
                            assignment={}, owners={}))
                async with producer.transaction():
                    await producer.send("out", b"next")
                assert await consumer.committed(IN0) is None

    run("asyncio", main)
    assert committed_values(logdir, "out") == [b"next"]


def test_consume_transform_produce_with_timeouts_is_exactly_once(logdir):
    """A consume-transform-produce loop whose steps time out at random
    (asyncio.wait_for), recovering as the README says: seek back to the
    committed offsets and go on. Every input's output is read_committed
    exactly once."""
    inputs = 200
    rnd = random.Random(7)

    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("in")
            await log.create_topic("out")
            await log.producer().send_batch("in", [b"%d" % i for i in range(inputs)])
            consumer = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                                    enable_auto_commit=False,
                                    isolation_level="read_committed")
            producer = log.producer(transactional_id="worker")
            timeouts = 0
            async with consumer, producer:
                await producer.start()
                commit = producer._p.commit_transaction

                def slow_commit() -> None:
                    # (a slow disk: most timeouts land inside the commit)
                    time.sleep(0.003)
                    commit()
                producer._p.commit_transaction = slow_commit

                async def step() -> None:
                    batch = await consumer.getmany(timeout_ms=100,
                                                   max_records=rnd.randint(1, 8))
                    async with producer.transaction():
                        for r in batch.get(IN0, []):
                            await producer.send("out", b"out " + r.value)
                        await producer.send_offsets_to_transaction(consumer)
                while await consumer.committed(IN0) != inputs:
                    try:
                        await asyncio.wait_for(step(), rnd.uniform(0.0, 0.008))
                    except asyncio.TimeoutError:
                        timeouts += 1
                        # (nothing committed yet: back where auto_offset_reset
                        # starts; a timeout in the join: nothing owned)
                        await consumer.seek_to_committed()
            assert timeouts > 10

    run("asyncio", main)
    out = committed_values(logdir, "out")
    assert sorted(out) == sorted(b"out %d" % i for i in range(inputs))


def test_a_cancelled_transaction_does_not_abort_the_next_one(logdir):
    """Review: task A's transaction() was cancelled while its commit ran
    (it ran to its end: committed); B's begin_transaction(), queued behind
    that commit, got the producer first, and A's clean-up abort then
    aborted B's transaction."""
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("out")
            p = log.producer(transactional_id="tx")
            async with p:
                await p.start()
                real, started = p._p.commit_transaction, threading.Event()

                def slow():
                    started.set()
                    time.sleep(0.3)
                    real()
                p._p.commit_transaction = slow

                async def a():
                    async with p.transaction():
                        await p.send("out", b"A")
                ta = asyncio.create_task(a())
                while not started.is_set():
                    await asyncio.sleep(0.001)

                async def b():
                    await p.begin_transaction()      # queued behind A's commit
                    await asyncio.sleep(0.05)
                    await p.send("out", b"B")
                    await p.commit_transaction()
                tb = asyncio.create_task(b())
                await asyncio.sleep(0.01)
                ta.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await ta
                await tb
    run("asyncio", main)
    assert sorted(committed_values(logdir, "out")) == [b"A", b"B"]


def test_a_commit_made_slow_by_a_seek_before_it_waits_for_its_end(logdir):
    """Review: the commit that a job before it turned from an inline store
    into a metadata transaction awaited a plain executor future: cancelled,
    it returned at once (committed() stale) and let the consumer's lock go
    while the commit ran."""
    from pylog.polldriver import PollDriver
    tp = TopicPartition("in", 0)

    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("in")
            await log.producer().send_batch("in", [b"1", b"2", b"3"])
            c = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            async with c:
                await c.getmany(timeout_ms=1000)
                await c.commit({tp: 1})
                answers = [True, False]        # a store, then (its turn come) not
                real = PollDriver.commit_is_a_store
                PollDriver.commit_is_a_store = \
                    lambda self, o: answers.pop(0) if answers else real(self, o)
                try:
                    real_commit, started = c._c.commit, threading.Event()

                    def slow_commit(offsets=None):
                        started.set()
                        time.sleep(0.3)
                        real_commit(offsets)
                    c._c.commit = slow_commit
                    await c._lock.acquire()                     # a job runs
                    t = asyncio.create_task(c.commit({tp: 3}))
                    await asyncio.sleep(0.05)
                    c._lock.release()
                    while not started.is_set():
                        await asyncio.sleep(0.001)
                    t.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await t
                finally:
                    PollDriver.commit_is_a_store = real
                assert await c.committed(tp) == 3
    run("asyncio", main)


def test_a_cancelled_commit_that_fails_says_why(logdir, caplog):
    """Review: a commit that failed while its caller was cancelled showed
    a bare CancelledError; its error (a full disk, say) went nowhere."""
    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("in")
            await log.producer().send_batch("in", [b"1"])
            c = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            async with c:
                await c.getmany(timeout_ms=1000)
                started = threading.Event()

                def failing(offsets=None):
                    started.set()
                    time.sleep(0.2)
                    raise OSError(28, "No space left on device")
                real, c._c.commit = c._c.commit, failing
                t = asyncio.create_task(c.commit())
                while not started.is_set():
                    await asyncio.sleep(0.001)
                t.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await t
                c._c.commit = real
    with caplog.at_level("WARNING", logger="pylog"):
        run("asyncio", main)
    assert any("No space left on device" in r.getMessage() for r in caplog.records)
