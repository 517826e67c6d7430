"""A group member of pylog.aio whose event loop ended without close()."""

from __future__ import annotations

import asyncio
import time

import pylog
import pylog.aio


def test_a_member_left_on_a_closed_loop_expires_by_its_session(logdir):
    """A service kept its AIOConsumer on an object, crashed, and was run
    again by asyncio.run in the same process: the first run's member, which
    can never poll again, was heartbeaten in the background until
    max_poll_interval_ms (300 s by default), and the second run's member
    got no partition meanwhile. It now expires a session timeout after its
    loop closed, as aiokafka's, whose heartbeat is a task of that loop."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", 2)
        log.producer().send_batch("t", [b"%d" % i for i in range(10)])
    kept = []

    async def first() -> None:
        alog = await pylog.aio.open(logdir, sync="never").open()
        c = alog.consumer("t", group_id="g", auto_offset_reset="earliest",
                          session_timeout_ms=500)
        kept.append((alog, c))      # (never closed: the program crashed)
        await c.getone()

    async def second() -> float:
        async with pylog.aio.open(logdir, sync="never") as alog:
            async with alog.consumer("t", group_id="g", auto_offset_reset="earliest",
                                     session_timeout_ms=500) as c:
                t0 = time.monotonic()
                await asyncio.wait_for(c.getone(), 10)
                return time.monotonic() - t0

    asyncio.run(first())
    took = asyncio.run(second())
    assert took < 5, took
