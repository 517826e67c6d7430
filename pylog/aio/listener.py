"""Rebalance listeners of pylog.aio consumers: the application's
callbacks, plain functions or coroutines, run on the event loop.

A group's rebalance happens in the consumer's housekeeping, which runs in
the Log's executor (it may fsync). The Consumer under an AIOConsumer is
given a :class:`Relay` as its listener: called in that executor thread,
it runs the application's ``on_partitions_revoked`` /
``on_partitions_assigned`` / ``on_partitions_lost`` on the loop (awaiting
it if it returns an awaitable) and waits for it there, so that revoked
partitions are still owned while it runs (a commit in it succeeds) and
assigned ones are owned before the next fetch.

A call the callback makes that needs the executor (``await
consumer.commit()``, a seek to an end) runs in the thread that waits for
the callback, not in another executor thread: the consumer is still in
its housekeeping, and several consumers rebalancing at once never wait
for a free thread.

Thread safety: a Relay belongs to one AIOConsumer; its ``on_*`` methods
are called by that consumer's housekeeping (one thread at a time).
Durability: nothing here writes.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import queue
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import InvalidArgument
from ..records import TopicPartition

T = TypeVar("T")
#: the AIOConsumer whose listener callback the current task runs
IN_LISTENER: contextvars.ContextVar[object] = contextvars.ContextVar(
    "pylog_aio_in_listener", default=None)
_DONE = object()
METHODS = ("on_partitions_revoked", "on_partitions_assigned", "on_partitions_lost")


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not fut.done():
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class Relay:
    """The Consumer's listener that runs the application's on the loop
    (module docstring)."""

    def __init__(self, listener: object | None) -> None:
        self.listener: object | None = None
        self.owner: object = None           # the AIOConsumer, set once made
        self._loop: asyncio.AbstractEventLoop | None = None
        self._jobs: queue.SimpleQueue[Any] | None = None
        self.install(listener)

    def install(self, listener: object | None) -> None:
        """Check and install the application's listener (None: none); a
        listener must be given in a coroutine of the loop it runs on."""
        if listener is not None:
            if not any(callable(getattr(listener, m, None)) for m in METHODS):
                raise InvalidArgument(
                    f"listener={listener!r} has none of {', '.join(METHODS)} "
                    "(aiokafka's ConsumerRebalanceListener)")
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                raise InvalidArgument("a consumer with a listener is made in a "
                                      "coroutine (its callbacks run on that loop)") from None
        self.listener = listener

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._run("on_partitions_revoked", revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._run("on_partitions_assigned", assigned)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        # without its own on_partitions_lost, revoked gets them (as Kafka)
        has_lost = callable(getattr(self.listener, "on_partitions_lost", None))
        self._run("on_partitions_lost" if has_lost else "on_partitions_revoked", lost)

    def _run(self, name: str, tps: set[TopicPartition]) -> None:
        fn = getattr(self.listener, name, None)
        loop = self._loop
        if not callable(fn) or loop is None:
            return
        if loop.is_closed():
            return          # (a close after the loop ended: nobody to tell)
        if _on_loop(loop):
            # a seek on the loop that made a new member join: it cannot
            # wait for a coroutine here, so one runs as a task of its own
            res = fn(set(tps))
            if inspect.isawaitable(res):
                loop.create_task(_awaited(res))
            return
        jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._jobs = jobs
        try:
            done = asyncio.run_coroutine_threadsafe(self._call(fn, tps), loop)
            done.add_done_callback(lambda _: jobs.put(_DONE))
            while True:
                job = jobs.get()
                if job is _DONE:
                    break
                call, fut = job
                try:
                    value, ok = call(), True
                except BaseException as exc:
                    value, ok = exc, False
                loop.call_soon_threadsafe(_settle, fut, ok, value)
            done.result()       # the callback's exception, raised here
        finally:
            self._jobs = None

    async def _call(self, fn: Callable[[set[TopicPartition]], Any],
                    tps: set[TopicPartition]) -> None:
        token = IN_LISTENER.set(self.owner)
        try:
            res = fn(set(tps))
            if inspect.isawaitable(res):
                await res
        finally:
            IN_LISTENER.reset(token)

    async def run_in_waiting_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread waiting for the running callback."""
        jobs = self._jobs
        if jobs is None:        # (the callback ran on the loop: see _run)
            return fn(*args)
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        jobs.put((lambda: fn(*args), fut))
        return await fut


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def _awaited(res: Any) -> None:
    await res
