"""pylog.aio: aiokafka's offset and topic calls (found missing by a user
trial moving aiokafka code over: each raised AttributeError)."""

from __future__ import annotations

import asyncio

import pytest

import pylog
import pylog.aio
from pylog import TopicPartition

T0, T1 = TopicPartition("t", 0), TopicPartition("t", 1)


def test_offsets_of_the_log_and_seek_to_committed(logdir):
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", partitions=2)
            p = log.producer()
            assert await p.partitions_for("t") == {0, 1}
            with pytest.raises(pylog.TopicNotFound):
                await p.partitions_for("nope")
            for i in range(10):
                await p.send("t", b"%d" % i, partition=0, timestamp_ms=1000 + i)
            await p.send("t", b"x", partition=1, timestamp_ms=5000)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            await c.start()
            assert await c.beginning_offsets([T0, T1]) == {T0: 0, T1: 0}
            assert await c.end_offsets([T0, T1]) == {T0: 10, T1: 1}
            assert await c.offsets_for_times({T0: 1004, T1: 6000}) == {T0: 4, T1: None}
            assert c.partitions_for_topic("t") == {0, 1}
            assert c.partitions_for_topic("nope") is None
            assert await c.topics() == {"t"}

            first = []
            while len(first) < 11:
                for recs in (await c.getmany(timeout_ms=1000)).values():
                    first += [(r.partition, r.offset) for r in recs]
            assert sorted(first) == [(0, o) for o in range(10)] + [(1, 0)]
            await c.commit({T0: 3})
            # T1 was never committed: read again from where auto_offset_reset
            # starts (aiokafka's would leave it past its record)
            assert await c.seek_to_committed() == {T0: 3, T1: None}
            assert await c.position(T0) == 3
            assert await c.position(T1) == 0
            rest = []
            while len(rest) < 8:
                for recs in (await c.getmany(timeout_ms=1000)).values():
                    rest += [(r.partition, r.offset) for r in recs]
            assert sorted(rest) == [(0, o) for o in range(3, 10)] + [(1, 0)]
            with pytest.raises(pylog.InvalidArgument):
                await c.seek_to_committed(TopicPartition("t", 7))  # not assigned
            await c.close()

    asyncio.run(main())


@pytest.mark.parametrize("policy", ["latest", "none"])
def test_seek_to_committed_of_a_partition_never_committed(logdir, policy):
    """'latest' reads a never-committed partition from its end (the records
    appended since are skipped, as a new consumer would); 'none' leaves
    it where it is."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            p = log.producer()
            c = log.consumer(enable_auto_commit=False, group_id="g",
                             auto_offset_reset=policy)
            c.assign([T0])
            await c.seek_to_end(T0)
            for i in range(3):
                await p.send("t", b"%d" % i)
            got = await c.getmany(timeout_ms=1000)
            assert [r.offset for r in got[T0]] == [0, 1, 2]
            c.seek(T0, 1)
            await p.send("t", b"3")
            assert await c.seek_to_committed() == {T0: None}
            assert await c.position(T0) == (4 if policy == "latest" else 1)
            await c.close()

    asyncio.run(main())


def test_seek_to_committed_without_a_group_keeps_positions(logdir):
    """Review: without a group_id every partition reads as never
    committed; seek_to_committed must not rewind them all."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(8)])
            c = log.consumer(auto_offset_reset="earliest")
            c.assign([T0])
            got = await c.getmany(timeout_ms=1000, max_records=5)
            assert len(got[T0]) == 5
            assert await c.seek_to_committed() == {T0: None}
            assert await c.position(T0) == 5
            await c.close()

    asyncio.run(main())


def test_seek_to_committed_with_a_member_joining(logdir):
    """Review: it ran seek_to_beginning, whose group sync let a rebalance
    take partitions before its ownership check: InvalidArgument."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", partitions=2)
            await log.producer().send_batch("t", [b"a", b"b"], partition=0)
            a = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            await a.start()
            assert await a.getmany(timeout_ms=1000)
            b = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            await b.start()
            got = await a.seek_to_committed()
            assert set(got.values()) == {None}
            for tp in a.assignment():
                assert await a.position(tp) == 0
            await b.close()
            await a.close()

    asyncio.run(main())
