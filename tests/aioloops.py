"""Event loops and shared steps of the pylog.aio tests: ``run`` under the
default loop or uvloop (``LOOPS``), gets cancelled while sending, a close
from another task, reading a consumer to its end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

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


async def take(consumer: pylog.aio.AIOConsumer, n: int) -> list[pylog.Record]:
    """The next ``n`` records, by ``anext(consumer)`` (an ``async for`` left
    after its nth record would give that one back)."""
    return [await anext(consumer) for _ in range(n)]


@contextlib.asynccontextmanager
async def log_of(path: str, n: int) -> Any:
    """An open AIOLog whose topic "t" (one partition) holds ``n`` records."""
    async with pylog.aio.open(path, sync="never") as log:
        await log.create_topic("t")
        await log.producer().send_batch("t", [b"x"] * n)
        yield log


async def close_ends_the_waits(
        consumer: pylog.aio.AIOConsumer | pylog.aio.AIOShareConsumer) -> None:
    """A close() of ``consumer`` from another task ends an ``async for``
    over it (with nothing) and a getone() waiting on it (LogClosed)."""
    iterating = asyncio.create_task(drain(consumer))
    getting = asyncio.create_task(consumer.getone())
    await asyncio.sleep(0.3)
    assert not iterating.done() and not getting.done()
    await consumer.close()
    assert await asyncio.wait_for(iterating, 30) == []
    with pytest.raises(pylog.LogClosed, match="closed"):
        await asyncio.wait_for(getting, 30)


async def drain(consumer: pylog.aio.AIOConsumer | pylog.aio.AIOShareConsumer) -> list[Any]:
    return [r async for r in consumer]
