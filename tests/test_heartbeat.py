"""Group members heartbeat in the background between calls (pylog.heartbeat,
as Kafka's heartbeat thread and aiokafka's task): a batch handled for
longer than the session timeout keeps its partitions, up to
max_poll_interval_ms without a poll.

Each test has a second member, a threaded Consumer of the same group in
another thread, polling flat out while the first member's handler runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
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



def _busy(seconds: float) -> None:
    """A handler that holds the GIL as much as Python code does."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))


@pytest.mark.parametrize("handler", ["sleep", "cpu"])
def test_threaded_member_keeps_its_partition_while_it_handles(logdir, handler):
    """Before pylog.heartbeat the other member took the partition a second
    into the 3.5 s handler and handled the ten records again."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"%d" % i for i in range(10)])
        c = log.consumer("t", group_id="g", session_timeout_ms=1000,
                         auto_offset_reset="earliest", enable_auto_commit=False)
        recs: list[pylog.Record] = []
        while len(recs) < 10:
            recs += c.poll(timeout=5)
        stop, joined = threading.Event(), threading.Event()
        got: list[int] = []
        errors: list[BaseException] = []
        other = _other_member(log, stop, got, errors, joined)
        try:
            assert joined.wait(10)
            (time.sleep if handler == "sleep" else _busy)(3.5)
            assert got == [], "another member handled the batch meanwhile"
            c.commit()                      # still the owner: accepted
        finally:
            stop.set()
            other.join(10)
        assert not errors, errors
        assert c.committed(TP0) == 10
        c.close()


def test_threaded_member_past_max_poll_interval_loses_its_partition(logdir):
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"%d" % i for i in range(10)])
        c = log.consumer("t", group_id="g", session_timeout_ms=1000,
                         max_poll_interval_ms=1500, auto_offset_reset="earliest",
                         enable_auto_commit=False)
        recs: list[pylog.Record] = []
        while len(recs) < 10:
            recs += c.poll(timeout=5)
        stop, joined = threading.Event(), threading.Event()
        got: list[int] = []
        errors: list[BaseException] = []
        other = _other_member(log, stop, got, errors, joined)
        try:
            assert joined.wait(10)
            deadline = time.monotonic() + 15
            while len(got) < 10 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sorted(got) == list(range(10))
            with pytest.raises(pylog.CommitFailedError):
                c.commit()
        finally:
            stop.set()
            other.join(10)
        assert not errors, errors
        c.close()


STOPPED = r"""
import sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.consumer("t", group_id="g", session_timeout_ms=1000,
                 auto_offset_reset="earliest", enable_auto_commit=False)
n = 0
while n < 10:
    n += len(c.poll(timeout=5))
print("handling", flush=True)
time.sleep(60)
"""


def test_a_stopped_process_stops_its_heartbeats(logdir, child_env):
    """SIGSTOP stops the heartbeat thread too: the group hands a stopped
    member's partitions on after its session timeout, as before."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"%d" % i for i in range(10)])
    proc = subprocess.Popen([sys.executable, "-c", STOPPED, logdir], env=child_env,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"handling\n"
        os.kill(proc.pid, signal.SIGSTOP)
        with pylog.open(logdir, sync="never") as log:
            c = log.consumer("t", group_id="g", session_timeout_ms=1000,
                             auto_offset_reset="earliest")
            got: list[int] = []
            deadline = time.monotonic() + 15
            while len(got) < 10 and time.monotonic() < deadline:
                got += [r.offset for r in c.poll(timeout=0.2)]
            assert sorted(got) == list(range(10))
            c.close()
    finally:
        proc.kill()
        proc.wait()


def test_a_member_that_joined_and_never_fetched_stops_heartbeating(logdir):
    """start() joins; without a fetch afterwards the poll interval still
    runs out (counted from the consumer's creation), so its partitions go
    to a member that polls. (Found by review: the clock started only at
    the first fetch, and such a member kept its partitions for good.)"""
    async def main():
        async with pylog.aio.open(logdir, sync="never") as log:
            await log.create_topic("t")
            await log.producer().send_batch("t", [b"%d" % i for i in range(10)])
            c = log.consumer("t", group_id="g", session_timeout_ms=1000,
                             max_poll_interval_ms=1500, auto_offset_reset="earliest")
            await c.start()
            assert c.assignment() == {TP0}
            stop, joined = threading.Event(), threading.Event()
            got: list[int] = []
            errors: list[BaseException] = []
            other = _other_member(log.log, stop, got, errors, joined)
            try:
                deadline = time.monotonic() + 15
                while len(got) < 10 and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                assert sorted(got) == list(range(10))
            finally:
                stop.set()
                await asyncio.to_thread(other.join, 10)
            assert not errors, errors
            await c.close()

    run("asyncio", main)


def test_closing_the_log_while_it_beats_ends_the_thread(logdir):
    """Close races the heartbeat thread's metadata transactions: the close
    waits for a beat in flight, the thread ends, nothing raises."""
    for round_ in range(10):
        with pylog.open(logdir, sync="never") as log:
            log.create_topic(f"t{round_}", partitions=8)
            members = [log.consumer(f"t{round_}", group_id=f"g{round_}",
                                    session_timeout_ms=100) for _ in range(8)]
            for c in members:
                c.poll(timeout=0)           # joined; from now on between polls
            time.sleep(0.05 + 0.02 * round_)
        assert not [t for t in threading.enumerate() if t.name == "pylog-heartbeat"]


def test_the_poll_interval_starts_at_the_join_not_at_creation(logdir):
    """A consumer made a while before it joins (here by a commit) is not
    taken for one that stopped polling (found by review: a second commit
    left the group and raised CommitFailedError)."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t")
        log.producer().send_batch("t", [b"%d" % i for i in range(10)])
        lost: list = []
        c = log.consumer(group_id="g", session_timeout_ms=1000,
                         max_poll_interval_ms=1000, auto_offset_reset="earliest",
                         enable_auto_commit=False)
        c.subscribe(["t"], on_lost=lost.extend)
        time.sleep(1.2)
        c.commit({TP0: 3})                  # joins
        c.commit({TP0: 4})
        assert [r.offset for r in c.poll(timeout=5)][:1] == [4]
        assert lost == []
        c.close()


FORKED = r"""
import os, sys, time, pylog
log = pylog.open(sys.argv[1], sync="never")
parent = log.consumer("u", group_id="p", session_timeout_ms=1000)
parent.poll(timeout=0.5)                    # a member, so a heartbeat thread runs
pid = os.fork()
if pid == 0:
    c = log.consumer("t", group_id="g", session_timeout_ms=1000,
                     auto_offset_reset="earliest", enable_auto_commit=False)
    n = 0
    while n < 10:
        n += len(c.poll(timeout=1))
    print("handling", flush=True)
    time.sleep(3.5)
    try:
        c.commit()
        print("committed", flush=True)
    except pylog.CommitFailedError:
        print("refused", flush=True)
    c.close()
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_fork_child_gets_background_heartbeats(logdir, child_env):
    """The parent had a member (so a heartbeat thread) when it forked: the
    child's consumer is renewed too (found by review: the child believed
    the parent's thread was its own)."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t")
        log.create_topic("u")
        log.producer().send_batch("t", [b"%d" % i for i in range(10)])
    proc = subprocess.Popen([sys.executable, "-c", FORKED, logdir], env=child_env,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"handling\n"
        with pylog.open(logdir, sync="never") as log:
            c = log.consumer("t", group_id="g", session_timeout_ms=1000,
                             auto_offset_reset="earliest")
            got: list[int] = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                got += [r.offset for r in c.poll(timeout=0.05)]
            assert proc.stdout.readline() == b"committed\n"
            assert got == []
            c.close()
    finally:
        proc.kill()
        proc.wait()
