"""pylog.aio: calls on the loop that overlap an AIOConsumer's executor
jobs (housekeeping and its rebalance, a seek to an end, a commit,
unsubscribe()'s leave, the Log's close). Each test tries to lose a seek,
commit a record never received, hand a record to two members, or leave
a member listed in its group.

A job is held at a chosen point by wrapping the real function it runs
with a wait on a threading.Event (nothing is replaced: the real call
runs once the test lets it), so that the loop's call lands inside the
job every time rather than by chance."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from childproc import expect, readline, start

import pylog
import pylog.aio
from pylog import TopicPartition
from pylog.aio.joblock import JobLock

T0, T1 = TopicPartition("t", 0), TopicPartition("t", 1)


def held(fn: Callable[..., Any], when: Callable[[Any], bool] = lambda got: True
         ) -> tuple[Callable[..., Any], threading.Event, threading.Event]:
    """``fn`` wrapped to stop after it returned (once ``when(result)``) until
    ``go`` is set; ``inside`` is set while it waits there."""
    inside, go = threading.Event(), threading.Event()

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        got = fn(*args, **kwargs)
        if when(got) and not go.is_set():
            inside.set()
            assert go.wait(10), "the test never let the job go on"
        return got
    return wrapped, inside, go


def held_before(fn: Callable[..., Any]
                ) -> tuple[Callable[..., Any], threading.Event, threading.Event]:
    """``fn`` wrapped to wait for ``go`` before it runs."""
    inside, go = threading.Event(), threading.Event()

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        assert go.wait(10), "the test never let the job go on"
        return fn(*args, **kwargs)
    return wrapped, inside, go


async def until(event: threading.Event) -> None:
    for _ in range(5000):
        if event.is_set():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the job never got there")


async def ten(log: pylog.aio.AIOLog, partitions: int = 1) -> None:
    """Topic t, offsets 0..9 in each partition."""
    await log.create_topic("t", partitions=partitions)
    p = log.producer()
    for part in range(partitions):
        await p.send_batch("t", [b"%d" % i for i in range(10)], partition=part)


def test_job_lock_order_and_a_waiter_cancelled_once_handed_the_lock():
    """JobLock: steps run in their turn between waiters, inside release();
    a waiter cancelled after it was handed the lock (before it ran)
    passes it on, so nobody waits for ever."""
    async def main() -> None:
        lock = JobLock()
        ran: list[str] = []
        lock.then(lambda: ran.append("free"))       # nothing held: at once
        assert ran == ["free"]
        await lock.acquire()
        first = asyncio.create_task(lock.acquire())
        second = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0)
        lock.then(lambda: ran.append("after both"))
        lock.release()                  # handed to first, which has not run yet
        assert lock.locked()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, 1) is True
        assert ran == ["free"] and lock.locked()
        lock.release()
        assert ran == ["free", "after both"] and not lock.locked()

    asyncio.run(main())


# -- a seek while a job runs ------------------------------------------------------------
def test_a_seek_while_a_seek_to_the_beginning_runs_is_kept(logdir):
    """seek_to_beginning() runs in the executor; a seek() made while it
    runs is the later call and wins (as aiokafka's: a seek ends a pending
    reset), also for a getmany that was already waiting. It was
    overwritten by the job's position."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await ten(log)
            c = log.consumer(group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            c.assign([T0])
            assert [r.offset for r in (await c.getmany(timeout_ms=500,
                                                       max_records=3))[T0]] == [0, 1, 2]
            c._c.seek_to_beginning, inside, go = held_before(c._c.seek_to_beginning)
            job = asyncio.create_task(c.seek_to_beginning(T0))
            await until(inside)
            getting = asyncio.create_task(c.getmany(timeout_ms=2000))   # waits for the job
            await asyncio.sleep(0.01)
            c.seek(T0, 7)
            assert await c.position(T0) == 7        # seen at once
            go.set()
            await job
            assert [r.offset for r in (await getting)[T0]] == [7, 8, 9]
            assert await c.position(T0) == 10
            await c.close()

    asyncio.run(main())


def test_a_seek_before_a_seek_to_the_end_is_overridden_by_it(logdir):
    """The order goes both ways: a seek() made while a seek_to_beginning()
    runs, then a seek_to_end() called after it, end at the end (a guard
    of the fix above, which queues the seek: it passed before it too)."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await ten(log)
            c = log.consumer(group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            c.assign([T0])
            await c.getmany(timeout_ms=500, max_records=3)
            c._c.seek_to_beginning, inside, go = held_before(c._c.seek_to_beginning)
            first = asyncio.create_task(c.seek_to_beginning(T0))
            await until(inside)
            c.seek(T0, 4)           # after seek_to_beginning ...
            last = asyncio.create_task(c.seek_to_end(T0))     # ... before seek_to_end
            await asyncio.sleep(0.01)
            go.set()
            await first
            await last
            assert await c.position(T0) == 10
            await c.close()

    asyncio.run(main())


def test_a_seek_while_a_rebalance_gives_the_partition_is_kept(logdir):
    """A member's housekeeping rebalance in the executor gives it a
    partition (the other member left): assignment() shows it as soon as
    the group did, and a seek() then, while the job still runs, was
    undone by the job, which then drops the position of a partition it
    gained (to read the committed offset): the next getmany read from 0."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await ten(log, partitions=2)
            a = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            b = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            await a.start()
            await b.start()
            for _ in range(100):
                await a.getmany(timeout_ms=20)
                await b.getmany(timeout_ms=20)
                if len(a.assignment()) == 1 and len(b.assignment()) == 1:
                    break
            mine = a.assignment()
            assert len(mine) == 1
            await b.close()
            member = a._c._member
            member.tick, inside, go = held(member.tick, lambda got: bool(got[0]))
            getting = asyncio.create_task(a.getmany(timeout_ms=5000))
            await until(inside)     # the group gave it; the job goes on after this
            (gained,) = a.assignment() - mine
            a.seek(gained, 7)
            assert await a.position(gained) == 7
            go.set()
            offsets = [r.offset for r in (await getting).get(gained, [])]
            if not offsets:
                offsets = [r.offset for r in (await a.getmany(gained, timeout_ms=2000))
                           .get(gained, [])]
            assert offsets == [7, 8, 9]
            await a.close()

    asyncio.run(main())


def test_a_commit_called_before_a_seek_commits_what_was_received(logdir):
    """commit() (its first: a metadata transaction, in the executor)
    commits every record received when it was called; a seek() made
    while it runs moved the position it read, so it committed the sought
    offset: the records skipped were lost to the group."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await ten(log)
            c = log.consumer(group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            c.assign([T0])
            got = await c.getmany(timeout_ms=500, max_records=3)
            assert [r.offset for r in got[T0]] == [0, 1, 2]
            c._c.commit, inside, go = held_before(c._c.commit)
            committing = asyncio.create_task(c.commit())
            await until(inside)
            c.seek(T0, 9)
            go.set()
            await committing
            assert await c.committed(T0) == 3
            assert (await c.getone()).offset == 9
            await c.commit()
            assert await c.committed(T0) == 10
            await c.close()

    asyncio.run(main())


# -- unsubscribe() ------------------------------------------------------------------------
def test_closing_the_log_right_after_unsubscribe_leaves_the_group(logdir, caplog):
    """unsubscribe() leaves the group in an executor job; the Log closed
    right after it refused that job ("did not leave cleanly: LogClosed"),
    leaving the member listed and the finished records uncommitted. The
    Log's close now lets the leave run first."""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await ten(log)
            c = log.consumer("t", group_id="g", auto_offset_reset="earliest")
            assert [r.offset for r in (await c.getmany(timeout_ms=500,
                                                       max_records=3))[T0]] == [0, 1, 2]
            await c.getmany(timeout_ms=500, max_records=3)     # finishes 0..2
            c.unsubscribe()

    with caplog.at_level(logging.DEBUG, logger="pylog"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    with pylog.open(logdir, sync="never") as lg:
        desc = lg.describe_group("g")
        assert desc["members"] == []
        assert desc["partitions"][0]["committed"] == 3      # what the leave commits


@pytest.mark.parametrize("auto_commit", [False, True])
@pytest.mark.parametrize("during", ["its own rebalance", "the other's join"])
def test_unsubscribe_during_a_rebalance_hands_nothing_twice(logdir, during, auto_commit):
    """Member A of two unsubscribes while a rebalance runs: A's own (B
    joined: A's housekeeping gives partitions up, held after its look at
    the group) or B's join (held likewise). B ends up with all four
    partitions and reads every record A did not finish, once; none that
    A finished (committed itself, or with auto-commit, finished by a
    later getmany and committed by the leave or the release). (No defect
    found: this passed before the fixes of this file too.)"""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", partitions=4)
            p = log.producer()
            for part in range(4):
                await p.send_batch("t", [b"%d" % i for i in range(50)], partition=part)
            every = {(part, i) for part in range(4) for i in range(50)}
            args = dict(group_id="g", auto_offset_reset="earliest",
                        enable_auto_commit=auto_commit)
            a = log.consumer("t", **args)
            b = log.consumer("t", **args)
            await a.start()
            assert len(a.assignment()) == 4
            done: set[tuple[int, int]] = set()
            for _ in range(2):
                got = await a.getmany(timeout_ms=500, max_records=30)
                assert got
                if not auto_commit:
                    await a.commit()
                done |= {(r.partition, r.offset) for recs in got.values() for r in recs}
            if auto_commit:     # finishes both batches; its record is not: it comes again
                assert await a.getmany(timeout_ms=0, max_records=1) != {}
            if during == "its own rebalance":
                await b.start()     # B joined; A gives partitions up at its next look
                member = a._c._member
                member.tick, inside, go = held(member.tick, lambda got: bool(got[1]))
                looking = asyncio.create_task(a.start())
            else:
                member = b._c._member
                member.tick, inside, go = held(member.tick)
                looking = asyncio.create_task(b.start())
            await until(inside)
            a.unsubscribe()
            go.set()
            await looking
            seen: list[tuple[int, int]] = []
            for _ in range(200):
                got = await b.getmany(timeout_ms=100)
                seen += [(r.partition, r.offset) for recs in got.values() for r in recs]
                if len(set(seen)) >= len(every - done) and not got:
                    break
            assert len(seen) == len(set(seen)), "B got a record twice"
            assert set(seen) & done == set(), "B got records A had finished"
            assert set(seen) | done == every, "records nobody got"
            assert len(b.assignment()) == 4
            desc = log.log.describe_group("g")
            assert [m["member_id"] for m in desc["members"]] == [b._c._member.member_id]
            await b.close()
            await a.close()

    asyncio.run(main())


CHILD_MEMBER = """
import json, sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.consumer("t", group_id="g", auto_offset_reset="earliest", enable_auto_commit=False)
c.poll(0)                       # joins (A owns every partition: none yet)
print("joined", flush=True)
seen = []
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    seen += [(r.partition, r.offset) for r in c.poll(0.1)]
    c.commit()
    owned = c.assignment()
    if len(owned) == 4 and all(c.position(tp) == 50 for tp in owned):
        break
print(json.dumps({"seen": seen, "owned": len(c.assignment())}), flush=True)
c.close()
log.close()
"""


def test_unsubscribe_during_a_rebalance_with_a_member_in_another_process(
        logdir, child_env):
    """As above with member B in another process (a threaded Consumer):
    A unsubscribes while its housekeeping gives partitions to B; B reads
    every record A did not commit, once, and owns all four partitions.
    (Passed before the fixes of this file too.)"""
    async def main() -> None:
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t", partitions=4)
            p = log.producer()
            for part in range(4):
                await p.send_batch("t", [b"%d" % i for i in range(50)], partition=part)
            a = log.consumer("t", group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            await a.start()
            done: set[tuple[int, int]] = set()
            for _ in range(2):
                got = await a.getmany(timeout_ms=500, max_records=30)
                await a.commit()
                done |= {(r.partition, r.offset) for recs in got.values() for r in recs}
            child = start(CHILD_MEMBER, logdir, env=child_env)
            try:
                await asyncio.to_thread(expect, child, b"joined")
                member = a._c._member
                member.tick, inside, go = held(member.tick, lambda got: bool(got[1]))
                looking = asyncio.create_task(a.start())    # gives partitions up
                await until(inside)
                a.unsubscribe()
                go.set()
                await looking
                out = json.loads(await asyncio.to_thread(readline, child, 90))
            finally:
                child.kill()
                child.wait()
            seen = [tuple(x) for x in out["seen"]]
            every = {(part, i) for part in range(4) for i in range(50)}
            assert len(seen) == len(set(seen)), "B got a record twice"
            assert set(seen) & done == set(), "B got records A had committed"
            assert set(seen) | done == every, "records nobody got"
            assert out["owned"] == 4
            await a.close()

    asyncio.run(main())


# -- close(): cancelled, from a listener; a commit's queue turn (review) -------------
def test_close_survives_a_shutdown_that_cancels_every_task(tmp_path):
    """A shutdown handler cancelling every task as close() began left the
    Log open, and every later close() waited for ever."""
    async def main():
        log = await pylog.aio.open(str(tmp_path / "log"), sync="never").open()
        await log.create_topic("t")
        closer = asyncio.create_task(log.close())
        await asyncio.sleep(0)                    # close() has begun
        me = asyncio.current_task()
        for t in asyncio.all_tasks():
            if t is not me:
                t.cancel()
        await asyncio.gather(closer, return_exceptions=True)
        await asyncio.wait_for(log.close(), 10)
        assert log.log._closed
    asyncio.run(main())


def test_a_second_close_waits_for_a_cancelled_first(tmp_path):
    """Cancelled while Log.close ran in the executor, the first close()
    marked the close done at once: a second close() returned (and clients
    closed "after the Log") while Log.close still ran."""
    async def main():
        log = await pylog.aio.open(str(tmp_path / "log"), sync="never").open()
        await log.create_topic("t")
        log.log.close, inside, go = held_before(log.log.close)
        closer = asyncio.create_task(log.close())
        await until(inside)
        me = asyncio.current_task()
        for t in asyncio.all_tasks():           # a shutdown handler's loop
            if t is not me:
                t.cancel()
        await asyncio.gather(closer, return_exceptions=True)
        second = asyncio.create_task(log.close())
        await asyncio.sleep(0.2)
        assert not second.done(), "close() returned while Log.close ran"
        go.set()
        await asyncio.wait_for(second, 10)
        assert log.log._closed
    asyncio.run(main())


def test_close_inside_a_listener_while_an_unsubscribe_leaves(tmp_path):
    """close() waited for the leave of an unsubscribe() of the consumer
    whose listener called it; the leave waited for the consumer's lock,
    held by the housekeeping that waited for the listener: a deadlock."""
    async def main():
        log = await pylog.aio.open(str(tmp_path / "log"), sync="never").open()
        await log.create_topic("t")
        go = asyncio.Event()
        done: list[bool] = []

        class Listener:
            async def on_partitions_revoked(self, revoked):
                pass

            async def on_partitions_assigned(self, assigned):
                if not assigned or done:
                    return
                done.append(True)
                go.set()
                await asyncio.sleep(0.05)       # the other task unsubscribes
                await log.close()

        c = log.consumer("t", group_id="g", listener=Listener())

        async def other():
            await go.wait()
            c.unsubscribe()
        asyncio.create_task(other())
        await asyncio.wait_for(c.start(), 10)
        assert log.log._closed
    asyncio.run(main())


def test_a_commit_behind_a_seek_that_makes_it_slow_runs_off_the_loop(tmp_path):
    """commit() chose "a store, inline" before its turn in the queue; a
    seek queued ahead of it brought in a partition without a commit slot,
    so the commit's metadata transaction ran on the loop."""
    async def main():
        async with pylog.aio.open(str(tmp_path / "log"), sync="interval") as log:
            await log.create_topic("t", partitions=2)
            p = log.producer()
            for part in (0, 1):
                await p.send_batch("t", [b"%d" % i for i in range(10)], partition=part)
            c = log.consumer(group_id="g", auto_offset_reset="earliest",
                             enable_auto_commit=False)
            c.assign([T0, T1])
            c.pause(T1)
            await c.getmany(T0, timeout_ms=1000, max_records=3)
            await c.commit()                       # T0 has a slot, T1 none
            loop_thread = threading.get_ident()
            threads: list[bool] = []
            real_commit = c._c.commit

            def spy(*a, **k):
                threads.append(threading.get_ident() == loop_thread)
                return real_commit(*a, **k)
            c._c.seek_to_beginning, inside, go = held_before(c._c.seek_to_beginning)
            job = asyncio.create_task(c.seek_to_beginning(T0))
            await until(inside)
            c.seek(T1, 4)                          # queued behind the job
            assert c._d.commit_is_a_store(None)
            c._c.commit = spy
            commit = asyncio.create_task(c.commit())
            await asyncio.sleep(0.05)
            go.set()
            await job
            await commit
            assert threads == [False], "the slow commit ran on the loop"
            assert await c.committed(T1) == 4
            await c.close()
    asyncio.run(main())


def test_highwater_after_a_seek_waiting_for_its_turn(tmp_path):
    """A seek made while a job ran is not applied yet, but it is a seek:
    highwater(tp) is known (it stayed None until the job ended)."""
    async def main():
        async with pylog.aio.open(str(tmp_path / "log"), sync="never") as log:
            await log.create_topic("t", partitions=2)
            await log.producer().send_batch("t", [b"x"] * 10, partition=1)
            c = log.consumer(group_id="g", enable_auto_commit=False)
            c.assign([T0, T1])
            c.pause(T1)
            await c.getmany(T0, timeout_ms=200)
            c._c.seek_to_beginning, inside, go = held_before(c._c.seek_to_beginning)
            job = asyncio.create_task(c.seek_to_beginning(T0))
            await until(inside)
            c.seek(T1, 3)
            assert await c.position(T1) == 3
            assert c.highwater(T1) == 10
            go.set()
            await job
            assert c.highwater(T1) == 10
            await c.close()
    asyncio.run(main())
