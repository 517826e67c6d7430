"""pylog.aio's transactional and idempotent producer (aiokafka's names):
commit, abort (an exception or a cancellation inside ``transaction()``),
fencing, and offsets from an AIOConsumer that count only the records it
handed out."""

from __future__ import annotations

import asyncio

import pytest
from test_aio import LOOPS, run

import pylog
import pylog.aio
from pylog import ProducerFencedError, TopicPartition
from pylog.aio import AIOTransactionalProducer

T0 = TopicPartition("t", 0)
IN0 = TopicPartition("in", 0)


def committed_values(logdir, topic="t"):
    """What a read_committed reader of ``topic`` sees (a blocking Log)."""
    with pylog.open(logdir, readonly=True) as log:
        c = log.consumer(auto_offset_reset="earliest", isolation_level="read_committed")
        tps = [TopicPartition(topic, p.partition) for p in log.describe_topic(topic).partition_info]
        c.assign(tps)
        c.seek_to_beginning()
        out = []
        while got := c.poll(timeout=0.5, max_records=10_000):
            out.extend(r.value for r in got)
        c.close()
        return out


@pytest.mark.parametrize("loop", LOOPS)
def test_transaction_commits_and_aborts(logdir, loop):
    async def main():
        async with pylog.aio.open(logdir, sync="always") as log:
            await log.create_topic("t")
            p = log.producer(transactional_id="tx")
            assert isinstance(p, AIOTransactionalProducer) and p.transactional_id == "tx"
            async with p.transaction():
                await p.send("t", b"a", partition=0)
                await p.send_batch("t", [b"b", b"c"], partition=0)
            with pytest.raises(RuntimeError):
                async with p.transaction():
                    await p.send("t", b"gone", partition=0)
                    raise RuntimeError("handler failed")
            await p.begin_transaction()
            await p.send("t", b"d", partition=0)
            await p.commit_transaction()
            await p.begin_transaction()
            await p.send("t", b"gone too", partition=0)
            await p.abort_transaction()
            await p.close()

    run(loop, main)
    assert committed_values(logdir) == [b"a", b"b", b"c", b"d"]


def test_a_cancelled_transaction_is_aborted(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            p = log.producer(transactional_id="tx")
            started = asyncio.Event()

            async def work():
                async with p.transaction():
                    await p.send("t", b"half", partition=0)
                    started.set()
                    await asyncio.sleep(60)

            task = asyncio.create_task(work())
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with p.transaction():           # the producer goes on
                await p.send("t", b"after", partition=0)
            await p.close()

    run("asyncio", main)
    assert committed_values(logdir) == [b"after"]


def test_a_newer_instance_fences_the_older(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            old = log.producer(transactional_id="tx")
            await old.begin_transaction()
            await old.send("t", b"zombie", partition=0)
            new = log.producer(transactional_id="tx")     # fences old, aborts its txn
            with pytest.raises(ProducerFencedError):
                await old.commit_transaction()
            async with new.transaction():
                await new.send("t", b"new", partition=0)
            await new.close()

    run("asyncio", main)
    assert committed_values(logdir) == [b"new"]


def test_offsets_from_an_aio_consumer_count_only_records_handed_out(logdir):
    """Consume-transform-produce on the loop: getone fetched a batch of 5
    but handed out 2; the offsets committed with the transaction are the
    position of the third, so a restart reprocesses nothing and skips
    nothing."""
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("in")
            await log.create_topic("t")
            await log.producer().send_batch("in", [b"%d" % i for i in range(5)], partition=0)
            c = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False, isolation_level="read_committed")
            p = log.producer(transactional_id="ctp")
            async with p.transaction():
                for _ in range(2):
                    r = await c.getone()
                    await p.send("t", b"out-" + r.value, partition=0)
                assert await c.position(IN0) == 2
                await p.send_offsets_to_transaction(c)
            assert await c.committed(IN0) == 2
            await c.close()
            await p.close()

    run("asyncio", main)
    assert committed_values(logdir) == [b"out-0", b"out-1"]
    with pylog.open(logdir) as log:
        c = log.consumer("in", group_id="g", enable_auto_commit=False)
        assert [r.value for r in c.poll(timeout=2.0)] == [b"2", b"3", b"4"]
        c.close()


def test_idempotent_producer_on_the_loop(logdir):
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            p = log.producer(idempotent=True)
            assert isinstance(p, AIOTransactionalProducer) and p.transactional_id is None
            md = await p.send("t", b"x", partition=0)
            assert md.offset == 0
            with pytest.raises(pylog.PylogError):
                await p.begin_transaction()          # no transactional_id
            await p.close()

    run("asyncio", main)
