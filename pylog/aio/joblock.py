"""The lock of an AIOConsumer's executor jobs, whose queue also holds
steps that run on the loop in their turn (:class:`JobLock`).

An AIOConsumer runs one executor job at a time (housekeeping, a commit,
a seek to an end, a first fetch's file work, unsubscribe()'s leave), in
call order, and fetches only while none runs. A ``seek`` is a plain call
on the loop: made while a job runs, writing the position at once would
race the job, which may write positions itself in its thread (a
rebalance forgets a gained partition's position, a seek to an end sets
one) or read them (a commit of what was received); made while jobs wait,
it would reach jobs called before it. So the seek waits for its turn as
a step in the same queue: :meth:`JobLock.then` runs it at once when no
job runs or waits, else right after the jobs queued before it, on the
loop, before the lock goes to the next waiter.

An asyncio.Lock cannot hold such a step: its waiters are tasks, which
take the lock only once they run, a loop turn after it was released,
and a task made for the step would queue itself only at its first
step, after jobs called later in the same turn. Here the lock passes
straight from the releasing holder to the next waiter (``locked()``
stays true in between), and the steps queued before that waiter run
inside ``release()``.

Thread safety: the tasks of one event loop (``release`` is called on
the loop, also from a future's done callback). Durability: nothing here
writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

_logger = logging.getLogger("pylog")


class JobLock:
    """A FIFO lock for coroutines of one loop, with loop steps in its
    queue (module docstring). ``async with lock:`` as asyncio.Lock."""

    __slots__ = ("_held", "_queue")

    def __init__(self) -> None:
        self._held = False
        # waiters (a future each, resolved when the lock is theirs) and
        # steps (callables), in call order
        self._queue: deque[asyncio.Future[None] | Callable[[], None]] = deque()

    def locked(self) -> bool:
        """Whether a job holds the lock (or has been handed it); the
        queue is empty whenever it is not."""
        return self._held

    async def acquire(self) -> bool:
        if not self._held:
            self._held = True
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()      # handed over as the caller was cancelled: pass it on
            elif fut in self._queue:
                self._queue.remove(fut)
            raise
        return True

    def release(self) -> None:
        """Run the steps queued before the next waiter, then hand the lock
        to that waiter (or free it). A step must not raise."""
        queue = self._queue
        while queue:
            nxt = queue.popleft()
            if isinstance(nxt, asyncio.Future):
                if not nxt.done():      # (a cancelled waiter is skipped)
                    nxt.set_result(None)
                    return
            else:
                try:
                    nxt()
                except Exception:   # (a bug: the queue must go on all the same)
                    _logger.exception("pylog.aio: a queued step failed")
        self._held = False

    def then(self, step: Callable[[], None]) -> None:
        """Run ``step`` (which must not raise) now when the lock is free,
        else once the holder and the waiters queued before it are done."""
        if self._held:
            self._queue.append(step)
        else:
            step()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()
