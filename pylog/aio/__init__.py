"""pylog for asyncio, shaped like aiokafka so that moving is an import change.

::

    async with pylog.aio.open("data/events", sync="never") as log:
        await log.create_topic("events", exist_ok=True)
        producer = log.producer()
        await producer.send("events", b"hello")
        async with log.consumer("events", group_id="g",
                                auto_offset_reset="earliest") as consumer:
            record = await consumer.getone()

:func:`open` takes pylog.open's arguments and returns an :class:`AIOLog`;
opening, closing, topic administration, fsyncs and commits run in a small
executor of that Log, so no call blocks the event loop for long; what
runs inline is bounded in bytes too (a send of at most 128 KiB, a fetch
decoding about 128 KiB, a share consumer's 50 records: see
pylog.aio.producer, .consumer and .shareconsumer). Waiting
consumers are woken by one thread per Log (pylog.aio.bridge), however many
there are, for appends made by any process.

Thread safety: an AIOLog and its clients belong to one event loop (the
Log under them, ``AIOLog.log``, is thread-safe). Not fork-safe: an AIOLog
opened before ``os.fork()`` raises ForkedLogError in the child (its
executor's threads do not exist there), and its close() there returns;
one made before the fork and opened after it works. Durability: as
pylog.open.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar, overload

from .. import log as _log
from ..errors import (
    ForkedLogError,
    InvalidArgument,
    LogClosed,
    PylogError,
    ReadOnlyLog,
    not_transferable,
)
from ..fetching import TOPIC_REFRESH_S
from ..records import TopicInfo
from ..transactions import DEFAULT_TRANSACTION_TIMEOUT_MS
from ..txnproducer import check_producer_args
from .batch import BatchBuilder
from .bridge import DoorbellBridge
from .consumer import AIOConsumer
from .finish import to_the_end
from .joblock import JobLock
from .listener import IN_LISTENER, Relay
from .producer import AIOProducer
from .shareconsumer import AIOShareConsumer
from .txnproducer import AIOTransactionalProducer

__all__ = ["AIOConsumer", "AIOLog", "AIOProducer", "AIOShareConsumer",
           "AIOTransactionalProducer", "BatchBuilder", "open"]

T = TypeVar("T")
#: the longest close() waits for the group leaves of unsubscribe() calls
#: still running (a metadata transaction each) before it closes the Log
LEAVE_WAIT_S = 10.0
#: threads of a Log's executor: enough for a few concurrent fsyncing sends
#: (they share fdatasyncs) next to a commit and a consumer's housekeeping
EXECUTOR_THREADS = 4
#: the longest the clients of one Log run on the loop without yielding to
#: it: a task that sends or fetches in a loop never waits while appends are
#: inline and records are ready, so it yields between calls after this long
#: (short enough that a producer and a consumer flat out leave other
#: tasks' 1 ms timers late by under 1 ms in most turns; bench/RESULTS.rst)
FAIR_SLICE_S = 0.0002


class AIOLog:
    """An open log for coroutines; create with :func:`open` and use as
    ``async with``. ``log`` is the :class:`pylog.Log` under it."""

    def __init__(self, path: str | os.PathLike[str], kwargs: dict[str, Any]) -> None:
        self._path = path
        self._kwargs = kwargs
        self._executor = ThreadPoolExecutor(EXECUTOR_THREADS,
                                            thread_name_prefix="pylog-aio")
        self._log: _log.Log | None = None
        self._bridge_: DoorbellBridge | None = None
        self._loop: asyncio.AbstractEventLoop | None = None     # set by open()
        self._turned = True         # the loop turned since _must_yield looked
        self._slice_start = 0.0
        self._topics_fut: asyncio.Future[None] | None = None
        self._topic_watch: asyncio.Task[None] | None = None
        # set when close() begins, resolved once the Log is closed
        self._closing: asyncio.Future[None] | None = None
        # the tasks close() lets finish before it closes the Log (the group
        # leaves of unsubscribe() calls); then set: the executor takes no job
        self._leaving: set[asyncio.Task[None]] = set()
        self._shut = False
        self._pid = os.getpid()     # the process that opened it (see _forked)

    def _forked(self) -> bool:
        """Opened by the parent of this fork child?"""
        return self._log is not None and os.getpid() != self._pid

    def _check_fork(self) -> None:
        if self._forked():
            raise ForkedLogError(
                f"this AIOLog of {self._path} was opened before os.fork() and belongs "
                "to the parent process; open one in the child (pylog.aio.open)")

    @property
    def log(self) -> _log.Log:
        """The threaded :class:`~pylog.Log` underneath (its calls block:
        keep them off the loop); LogClosed before the log is open,
        ForkedLogError in a fork child of the process that opened it."""
        self._check_fork()
        if self._log is None:
            raise LogClosed(f"log {self._path} is not open yet: use "
                            "`async with pylog.aio.open(...)` (or await its open())")
        return self._log

    @property
    def _bridge(self) -> DoorbellBridge:
        assert self._bridge_ is not None
        return self._bridge_

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in this Log's executor, as a future of the running
        loop; LogClosed once close() closes the Log (its executor stops)."""
        if self._shut:
            raise LogClosed(f"log {self._path} is closed")
        self._check_fork()
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _close_client(self, close: Callable[[], None],
                            lock: asyncio.Lock | JobLock | None = None) -> None:
        """A client's ``close`` (``lock``: the client's, as _submit_locked):
        off the loop, or once this Log is closing, inline after the Log's
        close is done (which closed what the client's close would store or
        flush: a client closed after its Log does no I/O, as in the
        threaded API). In a fork child it does nothing (the parent's)."""
        if self._forked():
            return
        if self._closing is None:
            try:
                if lock is None:
                    await self._submit(close)
                else:
                    await self._submit_locked(lock, close)
                return
            except LogClosed:
                if self._closing is None:
                    raise       # (the Log was closed under this AIOLog)
        await asyncio.shield(self._closing)
        if lock is None:
            close()
        else:
            async with lock:    # (after the client's job that still runs)
                close()

    async def _submit_locked(self, lock: asyncio.Lock | JobLock, fn: Callable[..., T],
                             *args: Any, finish: bool = False) -> T:
        """``fn(*args)`` in this Log's executor once ``lock`` (a client's:
        one executor job, or one fetch, at a time) is taken; ``lock`` is
        held until ``fn`` returns. Cancelling the caller does not stop
        ``fn``: the client stays locked until it returns, so nothing the
        lock keeps out overlaps it, and its exception is retrieved.
        A caller cancelled while it waits for ``lock`` returns at once
        (``fn`` never runs); once ``fn`` was handed to the executor, it
        stops waiting at once, or with ``finish`` (a commit: pylog.aio.
        finish) only when ``fn`` is done, then raises the cancellation."""
        await lock.acquire()
        try:
            fut = self._submit(fn, *args)
        except BaseException:
            lock.release()
            raise

        def done(f: asyncio.Future[T]) -> None:
            lock.release()
            if not f.cancelled():
                f.exception()       # retrieved, even when the caller went away
        fut.add_done_callback(done)
        if finish:
            return await to_the_end(fut)
        return await asyncio.shield(fut)

    def _must_yield(self) -> bool:
        """Whether the caller should yield to the loop (``await
        asyncio.sleep(0)``) before a send or a fetch: once this Log's
        clients kept the loop FAIR_SLICE_S without it turning. Never
        between a fetch and its return (a cancellation there would lose
        its result). A marker callback tells whether the loop turned since
        the last call, so a task that awaits something else in between (a
        paced producer) never pays for an extra turn."""
        if self._turned:
            self._turned = False
            self._slice_start = time.monotonic()
            loop = self._loop
            assert loop is not None
            loop.call_soon(self._mark_turn)
            return False
        return time.monotonic() - self._slice_start >= FAIR_SLICE_S

    def _mark_turn(self) -> None:
        self._turned = True

    def _topics_changed(self) -> asyncio.Future[None]:
        """A future resolved when the Log's topics change. One task per Log
        looks every TOPIC_REFRESH_S, so that idle consumers that only
        refresh their topics need not each wake up for it."""
        if self._topic_watch is None:
            self._topic_watch = asyncio.get_running_loop().create_task(
                self._watch_topics(self.log.topics()))
        fut = self._topics_fut
        if fut is None or fut.done():
            fut = self._topics_fut = asyncio.get_running_loop().create_future()
        return fut

    async def _watch_topics(self, last: list[str]) -> None:
        while True:
            await asyncio.sleep(TOPIC_REFRESH_S)
            try:
                now = self.log.topics()      # a metadata read: never waits
            except PylogError:
                return          # closed: the consumers find out themselves
            if now != last:
                last = now
                fut = self._topics_fut
                if fut is not None and not fut.done():
                    fut.set_result(None)

    async def open(self) -> AIOLog:
        """Open the log (recovery and fsyncs run off the loop)."""
        self._check_fork()
        if self._log is None:
            self._loop = asyncio.get_running_loop()
            self._pid = os.getpid()
            self._log = await self._submit(functools.partial(
                _log.open, self._path, **self._kwargs))
            self._bridge_ = DoorbellBridge(self._log.doorbell_pointer(),
                                           self._log.doorbell(), str(self._path))
        return self

    def _before_close(self, task: asyncio.Task[None]) -> None:
        """Have close() wait for ``task`` (an unsubscribe()'s group leave,
        an executor job: once the Log closes, the member would stay listed
        in its group until its session timed out) before it closes the Log."""
        self._leaving.add(task)
        task.add_done_callback(self._leaving.discard)

    async def close(self) -> None:
        """Close the Log (see Log.close) and stop its threads; tasks waiting
        in a consumer's getone/getmany raise LogClosed, and so does every
        later call that needs the Log (a client's close() returns). The
        group leaves of unsubscribe() calls still running finish first
        (for LEAVE_WAIT_S at most; not when called inside a rebalance
        listener callback, whose consumer's leave may wait for it).
        Idempotent; a second close() waits for the first. A cancelled
        close() goes on to its end (the Log is closed all the same). In a
        fork child of the process that opened it, it returns at once."""
        if self._log is None or self._forked():
            return
        if self._closing is None:
            # callbacks only, no task: a shutdown that cancels every task
            # cannot stop the close half-way
            loop = asyncio.get_running_loop()
            closing = self._closing = loop.create_future()
            leaving = {t for t in self._leaving if not t.done()}
            if IN_LISTENER.get() is not None:
                leaving = set()
            started = False

            def start(waited_enough: bool = False) -> None:
                nonlocal started
                if started or not waited_enough and any(not t.done() for t in leaving):
                    return
                started = True
                timer.cancel()
                self._start_close(closing)
            timer = loop.call_later(LEAVE_WAIT_S, start, True)
            for t in leaving:
                t.add_done_callback(lambda _: start())
            start()
        await asyncio.shield(self._closing)

    def _start_close(self, closing: asyncio.Future[None]) -> None:
        """close()'s work once the leaves it waits for are done: Log.close
        in the executor; ``closing`` resolves once it has returned."""
        assert self._log is not None
        self._shut = True
        self._bridge.close()
        if self._topic_watch is not None:
            self._topic_watch.cancel()
        job = asyncio.get_running_loop().run_in_executor(self._executor, self._log.close)

        def closed(f: asyncio.Future[None]) -> None:
            if not f.cancelled():
                f.exception()       # (retrieved: the caller may be gone)
            self._executor.shutdown(wait=False)
            closing.set_result(None)
        job.add_done_callback(closed)

    def __reduce__(self) -> Any:
        raise not_transferable(self)   # (its Log's files belong to this process)

    async def __aenter__(self) -> AIOLog:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- clients --------------------------------------------------------------------
    # (the overloads give a type checker the class each form returns)
    @overload
    def producer(self, *, key_serializer: _log.Serializer | None = None,
                 value_serializer: _log.Serializer | None = None,
                 transactional_id: str, idempotent: bool = False,
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
                 ) -> AIOTransactionalProducer: ...

    @overload
    def producer(self, *, key_serializer: _log.Serializer | None = None,
                 value_serializer: _log.Serializer | None = None,
                 transactional_id: None = None, idempotent: Literal[True],
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
                 ) -> AIOTransactionalProducer: ...

    @overload
    def producer(self, *, key_serializer: _log.Serializer | None = None,
                 value_serializer: _log.Serializer | None = None,
                 transactional_id: None = None, idempotent: Literal[False] = False,
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
                 ) -> AIOProducer: ...

    @overload
    def producer(self, *, key_serializer: _log.Serializer | None = None,
                 value_serializer: _log.Serializer | None = None,
                 transactional_id: str | None = None, idempotent: bool = False,
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
                 ) -> AIOProducer | AIOTransactionalProducer: ...

    def producer(self, *, key_serializer: _log.Serializer | None = None,
                 value_serializer: _log.Serializer | None = None,
                 transactional_id: str | None = None, idempotent: bool = False,
                 transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
                 ) -> AIOProducer | AIOTransactionalProducer:
        """An :class:`AIOProducer` (serializers as Log.producer). With
        ``transactional_id`` or ``idempotent=True`` (and
        ``transaction_timeout_ms``, default 60000), as Log.producer's, an
        :class:`~pylog.aio.txnproducer.AIOTransactionalProducer`: aiokafka's
        ``begin_transaction`` / ``commit_transaction`` /
        ``abort_transaction`` / ``transaction()`` /
        ``send_offsets_to_transaction``, every call off the loop (the
        producer itself is made at its ``start()`` or first call)."""
        check_producer_args(transactional_id, idempotent, transaction_timeout_ms)
        if transactional_id is not None or idempotent:
            if self.log.readonly:
                raise ReadOnlyLog(f"producer: log {self.log.path} was opened read-only")
            return AIOTransactionalProducer(self, functools.partial(
                self.log.producer, key_serializer=key_serializer,
                value_serializer=value_serializer, transactional_id=transactional_id,
                idempotent=idempotent, transaction_timeout_ms=transaction_timeout_ms),
                transactional_id, key_serializer=key_serializer,
                value_serializer=value_serializer)
        for name, fn in (("key_serializer", key_serializer),
                         ("value_serializer", value_serializer)):
            if fn is not None and not callable(fn):     # (as Producer refuses it)
                raise InvalidArgument(f"{name} must be callable")
        # (the serializers run in AIOProducer, on the loop: see pylog.aio.producer)
        return AIOProducer(self, self.log.producer(), key_serializer=key_serializer,
                           value_serializer=value_serializer)

    def consumer(self, *topics: str, listener: object | None = None,
                 **kwargs: Any) -> AIOConsumer:
        """An :class:`AIOConsumer`; the arguments are Log.consumer's.
        ``listener`` (a group's rebalance listener: an object with
        ``on_partitions_revoked(revoked)``, ``on_partitions_assigned(assigned)``
        and optionally ``on_partitions_lost(lost)``, each a plain method or a
        coroutine) is called on this event loop (pylog.aio.listener)."""
        relay = Relay(listener)
        consumer = AIOConsumer(self, self.log.consumer(
            *topics, listener=relay if listener is not None else None, **kwargs), relay)
        relay.owner = consumer
        return consumer

    def share_consumer(self, *topics: str, group_id: str, **kwargs: Any) -> AIOShareConsumer:
        """An :class:`AIOShareConsumer` of share group ``group_id`` (a work
        queue); the arguments are Log.share_consumer's."""
        return AIOShareConsumer(self, self.log.share_consumer(*topics, group_id=group_id,
                                                              **kwargs))

    # -- administration (metadata transactions: off the loop) ---------------------------
    async def create_topic(self, name: str, partitions: int = 1, *, exist_ok: bool = False,
                           **config: Any) -> TopicInfo:
        """As Log.create_topic."""
        return await self._submit(functools.partial(
            self.log.create_topic, name, partitions, exist_ok=exist_ok, **config))

    async def delete_topic(self, name: str) -> None:
        """As Log.delete_topic."""
        await self._submit(self.log.delete_topic, name)

    def topics(self) -> list[str]:
        """As Log.topics (a metadata read: never waits for writers)."""
        return list(self.log.topics())


def open(path: str | os.PathLike[str], **kwargs: Any) -> AIOLog:
    """An :class:`AIOLog` for ``path``, opened by ``async with`` (or
    ``await log.open()``); ``kwargs`` are pylog.open's (sync, readonly,
    sync_interval_ms, ...). A ``kafka://`` URL raises NotSupportedOnKafka:
    pylog.aio runs on a local log only."""
    if isinstance(path, str) and path.startswith("kafka://"):
        from ..kafka import NotSupportedOnKafka
        raise NotSupportedOnKafka(
            f"pylog.aio.open({path!r}): pylog.aio runs on a local log only; on Kafka "
            "use aiokafka, or pylog.open(url)'s clients from a thread "
            "(asyncio.to_thread)")
    return AIOLog(path, kwargs)
