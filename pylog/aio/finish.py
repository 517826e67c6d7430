"""Waiting for a call to its end through a cancellation.

A job handed to the Log's executor runs to its end whatever happens to
the coroutine that awaits it (a thread cannot be stopped). For most calls
the caller may stop waiting at once when cancelled. A call that changes
what ``committed()`` reads (a consumer's ``commit()``, a transactional
producer's ``commit_transaction``, ``abort_transaction``,
``send_offsets_to_transaction`` and ``transaction()``'s begin, commit and
abort) must not: a caller that got its CancelledError while the commit
still ran, then did what the README says after a failure (seek back to
the committed offsets and go on), read the old offsets and processed the
inputs again, duplicates a transaction promised exactly once. So
:func:`to_the_end` waits for the job, then re-raises the cancellation:
when the caller sees it, the call is over and ``committed()`` is exact.

Thread safety: call it on the loop that runs the awaited future.
Durability: nothing here writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
_logger = logging.getLogger("pylog")


async def to_the_end(aw: Awaitable[T]) -> T:
    """Await ``aw`` (made a task if a coroutine: it then runs even if this
    caller is cancelled before its first step) to its end. A cancellation
    of the caller meanwhile, or several, does not end the wait; the
    first is raised once ``aw`` is done, whatever its outcome (its
    exception is then logged as a warning, not raised: the caller was
    cancelled, and what the call did is for it to read, as
    ``committed()``).
    Without a cancellation, ``aw``'s result or exception."""
    fut = asyncio.ensure_future(aw)
    cancelled: asyncio.CancelledError | None = None
    while not fut.done():
        try:
            # asyncio.wait, not await fut: it neither cancels fut nor
            # raises fut's exception in place of the caller's cancellation
            await asyncio.wait((fut,))
        except asyncio.CancelledError as exc:
            if cancelled is None:
                cancelled = exc
    if cancelled is not None:
        failed = None if fut.cancelled() else fut.exception()
        if failed is not None:  # (the caller only learns it was cancelled: say why it failed)
            _logger.warning("pylog.aio: a call whose caller was cancelled failed: %r", failed)
        raise cancelled
    return fut.result()
