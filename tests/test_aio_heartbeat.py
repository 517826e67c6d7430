"""pylog.aio group members heartbeat in the background between calls (as
aiokafka's heartbeat task): a batch handled for longer than the session
timeout keeps its partitions, up to max_poll_interval_ms without a fetch.

Each test has a second member, a threaded Consumer of the same group in
another thread, polling flat out while the async member's handler runs.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from test_aio import LOOPS, TP0, run

import pylog
import pylog.aio


def _other_member(log: pylog.Log, stop: threading.Event, got: list, errors: list,
                  joined: threading.Event) -> threading.Thread:
    def member() -> None:
        try:
            c = log.consumer("t", group_id="g", session_timeout_ms=1000,
                             auto_offset_reset="earliest")
            try:
                while not stop.is_set():
                    got.extend(r.offset for r in c.poll(timeout=0.05))
                    if c._member is not None and c._member.joined:
                        joined.set()
            finally:
                c.close()
        except BaseException as exc:     # (reported by the test)
            errors.append(exc)
            joined.set()
    t = threading.Thread(target=member, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("loop", LOOPS)
def test_a_batch_handled_past_the_session_timeout_keeps_its_partition(logdir, loop):
    """Without background heartbeats the other member took the partition a
    second into the handler's 3.5 s and handled all ten records again; the
    late commit raised CommitFailedError."""
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(10)])
            async with log.consumer("t", group_id="g", session_timeout_ms=1000,
                                    auto_offset_reset="earliest",
                                    enable_auto_commit=False) as c:
                batch = await c.getmany(timeout_ms=5000)
                assert [r.offset for r in batch[TP0]] == list(range(10))
                stop, joined = threading.Event(), threading.Event()
                got: list[int] = []
                errors: list[BaseException] = []
                other = _other_member(log.log, stop, got, errors, joined)
                try:
                    assert await asyncio.to_thread(joined.wait, 10)
                    await asyncio.sleep(3.5)       # the handler: 3.5 session timeouts
                    assert got == [], "another member handled the batch meanwhile"
                    await c.commit()               # still the owner: accepted
                finally:
                    stop.set()
                    await asyncio.to_thread(other.join, 10)
                assert not errors, errors
                assert await c.committed(TP0) == 10

    run(loop, main)


def test_heartbeats_stop_after_max_poll_interval(logdir):
    """A handler that runs past max_poll_interval_ms loses its partitions
    (Kafka's rule): the other member gets the records, and the late commit
    is refused."""
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(10)])
            async with log.consumer("t", group_id="g", session_timeout_ms=1000,
                                    max_poll_interval_ms=1500,
                                    auto_offset_reset="earliest",
                                    enable_auto_commit=False) as c:
                assert len((await c.getmany(timeout_ms=5000))[TP0]) == 10
                stop, joined = threading.Event(), threading.Event()
                got: list[int] = []
                errors: list[BaseException] = []
                other = _other_member(log.log, stop, got, errors, joined)
                try:
                    assert await asyncio.to_thread(joined.wait, 10)
                    deadline = time.monotonic() + 15
                    while len(got) < 10 and time.monotonic() < deadline:
                        await asyncio.sleep(0.1)
                    assert sorted(got) == list(range(10))
                    with pytest.raises(pylog.CommitFailedError):
                        await c.commit()
                finally:
                    stop.set()
                    await asyncio.to_thread(other.join, 10)
                assert not errors, errors

    run("asyncio", main)

