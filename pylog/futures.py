"""What a lingering producer's ``send`` returns: a future of the record's
:class:`~pylog.records.RecordMetadata`, the shape of kafka-python's
``FutureRecordMetadata``.

The records of one batch share one :class:`BatchResult`: a batch is
appended whole or not at all, so its futures are resolved (or failed) all
at once, and a future itself is two references (a tuple), which keeps
``send`` cheap.

Thread safety: a future may be waited on, and callbacks added, from any
thread; callbacks run once each, in the thread that resolves the batch (or
at once in the thread adding them when the batch is already resolved).
Durability: a future succeeds once its batch is appended and durable as the
log's sync mode promises; records whose future is still pending when the
process dies are lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from .errors import SendTimeoutError
from .records import RecordMetadata

_log = logging.getLogger("pylog")

# (record index, callback, its leading args, True for an errback)
_Callback = tuple[int, Callable[..., Any], tuple[Any, ...], bool]


class BatchResult:
    """The outcome of one batch: its base offset, or the error that failed
    it. ``records`` are the batch's (timestamp_ms, key, value[, headers])
    tuples; record i is at ``base + i``."""

    __slots__ = ("topic", "partition", "records", "base", "error", "done", "_event",
                 "_callbacks", "_lock")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list[tuple[Any, ...]] = []
        self.base = -1
        self.error: BaseException | None = None
        self.done = False
        # made by the first wait on it: most batches are never waited on
        self._event: threading.Event | None = None
        self._callbacks: list[_Callback] | None = None
        self._lock = threading.Lock()

    def metadata(self, i: int) -> RecordMetadata:
        return RecordMetadata(self.topic, self.partition, self.base + i, self.records[i][0])

    def resolve(self, base: int) -> None:
        """The batch is appended at ``base``: succeed every future."""
        self.run_callbacks(self.settle(base, None))

    def fail(self, error: BaseException) -> None:
        """The batch will never be appended: fail every future with ``error``."""
        self.run_callbacks(self.settle(-1, error))

    def settle(self, base: int, error: BaseException | None) -> list[_Callback]:
        """Mark the batch appended at ``base`` (error None) or failed, and
        wake its waiters; return the callbacks to pass to run_callbacks
        (a caller settling several batches settles them all first, so a
        callback waiting on another of them does not wait forever)."""
        with self._lock:
            if self.done:
                return []
            self.base, self.error = base, error
            self.done = True
            callbacks, self._callbacks = self._callbacks, None
            event = self._event
        if event is not None:
            event.set()
        return callbacks or []

    def run_callbacks(self, callbacks: list[_Callback]) -> None:
        for i, fn, args, errback in callbacks:
            self._run(i, fn, args, errback)

    def reset_after_fork(self) -> None:
        """In a fork child: locks that a parent thread may have held at the
        fork are replaced, unused."""
        self._event = None
        self._lock = threading.Lock()

    def add(self, i: int, fn: Callable[..., Any], args: tuple[Any, ...],
            errback: bool) -> None:
        with self._lock:
            if not self.done:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append((i, fn, args, errback))
                return
        self._run(i, fn, args, errback)

    def _run(self, i: int, fn: Callable[..., Any], args: tuple[Any, ...],
             errback: bool) -> None:
        if errback != (self.error is not None):
            return
        try:
            fn(*args, self.error if errback else self.metadata(i))
        except Exception:        # as kafka-python: a callback cannot break the sender
            _log.exception("pylog: %s of a send to %s-%d raised",
                           "errback" if errback else "callback", self.topic,
                           self.partition)

    def wait(self, timeout: float | None) -> bool:
        """True once done; False after ``timeout`` seconds (None: no limit)."""
        if self.done:
            return True
        with self._lock:
            if self.done:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


class FutureRecordMetadata(tuple):
    """Where a record sent by a lingering producer will be stored (see
    :meth:`pylog.Log.producer`). kafka-python's names: ``get``,
    ``add_callback``, ``add_errback``, ``add_both``, ``is_done``, ``succeeded()``,
    ``failed()``, ``exception``, ``value``. Thread-safe."""

    __slots__ = ()

    @property
    def is_done(self) -> bool:
        """True once the record is stored or failed."""
        done: bool = self[0].done
        return done

    def succeeded(self) -> bool:
        """True once the record is stored (durable per the sync mode)."""
        b = self[0]
        return bool(b.done and b.error is None)

    def failed(self) -> bool:
        """True once the record failed (``exception`` says why)."""
        b = self[0]
        return bool(b.done and b.error is not None)

    @property
    def exception(self) -> BaseException | None:
        """The error that failed the record, or None."""
        error: BaseException | None = self[0].error
        return error

    @property
    def value(self) -> RecordMetadata | None:
        """The RecordMetadata once stored, else None."""
        return self[0].metadata(self[1]) if self.succeeded() else None

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """Wait for the record to be stored and return its RecordMetadata;
        raise the error that failed it, or SendTimeoutError after
        ``timeout`` seconds (None: wait as long as it takes)."""
        b = self[0]
        if not b.wait(timeout):
            raise SendTimeoutError(
                f"send to {b.topic}-{b.partition}: the record's batch was not "
                f"appended within {timeout} s; get() again or flush() the producer")
        if b.error is not None:
            raise b.error
        metadata: RecordMetadata = b.metadata(self[1])
        return metadata

    def add_callback(self, fn: Callable[..., Any], *args: Any,
                     **kwargs: Any) -> FutureRecordMetadata:
        """Call ``fn(*args, record_metadata, **kwargs)`` once the record is
        stored (at once if it already is); never if it fails. Returns the
        future."""
        if kwargs:
            fn, args = partial(fn, *args, **kwargs), ()
        self[0].add(self[1], fn, args, False)
        return self

    def add_errback(self, fn: Callable[..., Any], *args: Any,
                    **kwargs: Any) -> FutureRecordMetadata:
        """Call ``fn(*args, exception, **kwargs)`` once the record fails (at
        once if it already has); never if it is stored. Returns the
        future."""
        if kwargs:
            fn, args = partial(fn, *args, **kwargs), ()
        self[0].add(self[1], fn, args, True)
        return self

    def add_both(self, fn: Callable[..., Any], *args: Any,
                 **kwargs: Any) -> FutureRecordMetadata:
        """``add_callback`` and ``add_errback`` of ``fn``: it is called once,
        with the RecordMetadata or the exception. Returns the future."""
        self.add_callback(fn, *args, **kwargs)
        return self.add_errback(fn, *args, **kwargs)

    def __repr__(self) -> str:
        b = self[0]
        state = "pending" if not b.done else \
            f"failed: {b.error!r}" if b.error is not None else f"offset {b.base + self[1]}"
        return f"<FutureRecordMetadata {b.topic}-{b.partition} {state}>"
