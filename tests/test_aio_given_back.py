"""pylog.aio: records an ``async for`` loop gives back, met by getone and
getmany of the same consumer (found by a user trial)."""

from __future__ import annotations

import asyncio
from typing import Any

import pylog
import pylog.aio


def test_getmany_files_given_back_records_under_their_own_partition(logdir):
    """A loop left while on a record of one partition, after a getone took
    a record of another: getmany's slice started with the given-back
    record and ended with the first partition's, and was filed whole
    under one key (records of partition 0 under partition 1)."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", partitions=2)
            p = log.producer()
            await p.send_batch("t", [b"a0", b"a1"], partition=0)
            await p.send_batch("t", [b"b0", b"b1"], partition=1)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            assert await c.getmany(timeout_ms=500, max_records=2)

            async def records() -> Any:          # an aiokafka-style wrapper
                async for r in c:
                    yield r
            gen = records()
            held = await gen.__anext__()
            await c.getmany(timeout_ms=500)
            await p.send_batch("t", [b"a2", b"a3"], partition=(held.partition + 1) % 2)
            await p.send_batch("t", [b"b2"], partition=held.partition)
            await c.getone()
            await gen.aclose()                  # its record is given back
            got = await c.getmany(timeout_ms=500)
            for tp, recs in got.items():
                assert [(r.topic, r.partition) for r in recs] == \
                    [(tp.topic, tp.partition)] * len(recs), got
                offsets = [r.offset for r in recs]
                assert offsets == sorted(offsets)
            tp = pylog.TopicPartition("t", held.partition)
            assert got[tp][0].offset == held.offset     # it comes again
            await c.close()

    asyncio.run(main())


def test_close_commits_the_records_an_async_for_moved_past(logdir):
    """An ``async for`` left by ``break`` at offset 700 of a 1,000-record
    partition, then close(): the next member started at 500 (the first
    record of the loop's last fetch), 200 records the loop had finished
    delivered again; a threaded ``for`` loop commits 700. A record is
    finished once the loop asks for the next one, as the README says;
    the one it was on when it raised is not."""
    async def main() -> tuple[int, int]:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(1000)])
            async with log.consumer("t", group_id="g", auto_offset_reset="earliest") as c:
                async for r in c:
                    if r.offset == 700:
                        break
            async with log.consumer("t", group_id="g", auto_offset_reset="earliest") as c:
                after_break = (await c.getone()).offset
                try:
                    async for r in c:
                        if r.offset == 800:
                            raise ValueError("the handler failed")
                except ValueError:
                    pass
            async with log.consumer("t", group_id="g", auto_offset_reset="earliest") as c:
                return after_break, (await c.getone()).offset

    assert asyncio.run(main()) == (700, 800)
