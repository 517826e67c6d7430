"""The lingering producer: records accumulate per partition and go out as
one RecordBatch (Kafka's ``linger.ms`` / ``batch.size``).

``Log.producer(linger_ms=..., batch_bytes=...)`` returns a
:class:`LingerProducer`. Its ``send`` adds the record to its partition's
open batch and returns a :class:`~pylog.futures.FutureRecordMetadata`; the
batch is appended (one native call, one RecordBatch) when it reaches
``batch_bytes``, ``linger_ms`` after its first record (a sender thread per
producer), on ``flush()``, ``close()``, ``send_batch`` or the Log's close.

Ordering: the records of one partition are appended in the order their
sends took them (one lock), batches of a partition one at a time in order
(its drain lock, held while a batch is taken and appended).

Memory: at most about ``batch_bytes`` per partition sent to (plus the
batches being appended), for at most ``linger_ms``: a send that fills a
batch appends it before it returns.

Thread safety: thread-safe; send from any number of threads. Durability:
a future succeeds once its batch is appended and durable per the log's
sync mode; ``flush()`` appends everything pending and fdatasyncs it.
Records still lingering when the process dies are lost, as in Kafka's
accumulator (at a normal interpreter exit they are appended, and at the
end of a multiprocessing child, which skips atexit). Every future
is resolved or failed, never left pending: an append error fails every
future of its batch; close() and Log.close() append what is pending first;
in a fork child the inherited pending futures fail with ForkedLogError
(the parent appends them).
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import weakref
from struct import pack as _pack_int64
from time import monotonic as _monotonic
from time import time_ns as _time_ns
from typing import TYPE_CHECKING, Any

from . import _native
from .errors import (
    ForkedLogError,
    InvalidArgument,
    LogClosed,
    LogFailedError,
    PartitionNotFound,
    PylogError,
    RecordTooLarge,
    TopicNotFound,
)
from .futures import BatchResult, FutureRecordMetadata
from .producer import (
    _HEADER_OVERHEAD_MAX,
    _RECORD_OVERHEAD_MAX,
    Producer,
    Serializer,
    close_producers_of,
)
from .store import FORKS

if TYPE_CHECKING:
    from .partition import Partition
    from .store import LogStore

# Kafka's batch.size default: the batch size when only linger_ms is given.
DEFAULT_BATCH_BYTES = 16384
# The RecordBatch header (B-1) every batch pays once.
_BATCH_HEADER = 61
# A sender thread with nothing to do for this long exits (a later send
# starts another): an idle producer holds no thread, and a producer dropped
# without close() is not kept alive by its thread.
_IDLE_EXIT_S = 1.0
_LINGER_MS_MAX = 3_600_000
# What a record adds to its batch besides its key, value and headers,
# counted towards batch_bytes: its framing (R-*) for a record of about a
# hundred bytes sent within 64 ms of its batch's first.
_RECORD_OVERHEAD_EST = 10

_murmur2 = _native.murmur2_bytes
_tuple_new = tuple.__new__

# Lingering producers of this process (closed by their Log's close, reset
# in a fork child).
_LINGERING: weakref.WeakSet[LingerProducer] = weakref.WeakSet()


class _Batch(BatchResult):
    """An open or sealed batch of one partition: the futures' shared
    result plus what the accumulator needs (under LingerProducer._lock)."""

    __slots__ = ("room", "headers", "deadline")

    def __init__(self, topic: str, p: int, room: int, deadline: float) -> None:
        super().__init__(topic, p)
        # bytes it takes still, records counted by _RECORD_OVERHEAD_EST
        self.room = room
        self.headers = False             # a record has headers: no columns path
        self.deadline = deadline         # (monotonic) when the sender drains it


def check_linger(linger_ms: object, batch_bytes: object) -> tuple[float, int | None]:
    """(linger seconds, batch bytes or None) of Log.producer's arguments;
    InvalidArgument for a value out of range."""
    if isinstance(linger_ms, bool) or not isinstance(linger_ms, (int, float)) \
            or not 0 <= linger_ms <= _LINGER_MS_MAX:
        raise InvalidArgument(f"linger_ms={linger_ms!r}; expected milliseconds in "
                              f"[0, {_LINGER_MS_MAX}]")
    if batch_bytes is not None and (isinstance(batch_bytes, bool) or
                                    not isinstance(batch_bytes, int) or batch_bytes < 1):
        raise InvalidArgument(f"batch_bytes={batch_bytes!r}; expected an int >= 1, or None")
    if linger_ms == 0 and batch_bytes is None:
        return 0.0, None                 # not lingering: the plain Producer
    return linger_ms / 1000, DEFAULT_BATCH_BYTES if batch_bytes is None else batch_bytes


class LingerProducer(Producer):
    """A producer whose ``send`` returns a FutureRecordMetadata (see the
    module docstring). Create with :meth:`Log.producer` and ``linger_ms``
    or ``batch_bytes``."""

    def __init__(self, log: LogStore, *, linger_s: float, batch_bytes: int,
                 key_serializer: Serializer | None = None,
                 value_serializer: Serializer | None = None) -> None:
        super().__init__(log, key_serializer=key_serializer,
                         value_serializer=value_serializer)
        self._linger_s = linger_s
        self._batch_bytes = batch_bytes
        self._new_locks()
        self._closing = False
        # the open batch of each partition, oldest first (the sender waits
        # for the first one's deadline), and every batch not yet taken by a
        # drain (in order; the last is the open one)
        self._open: dict[Partition, _Batch] = {}
        self._slots: dict[Partition, list[_Batch]] = {}
        # the batches a drain of each partition took and has not resolved
        self._inflight: dict[Partition, list[_Batch]] = {}
        self._drain_locks: dict[Partition, threading.Lock] = {}
        self._sender: threading.Thread | None = None
        self._sender_idle = False        # it waits for a batch to be opened
        self._wake_on_open = linger_s < 0.001     # see _run
        # keyless records stick to one partition per topic until its batch
        # fills (Kafka's sticky partitioner): bigger batches
        self._sticky: dict[str, int] = {}
        # topic -> its Partitions, for send's hot path (as _routes' third
        # field, one lookup cheaper)
        self._fast_parts: dict[str, list[Partition]] = {}
        _LINGERING.add(self)
        _at_multiprocessing_exit()

    def _new_locks(self) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)

    # -- sending -----------------------------------------------------------
    def send(self, topic: str, value: object = None, key: object = None, *,  # type: ignore[override]
             headers: Any = None, partition: int | None = None,
             timestamp_ms: int | None = None) -> FutureRecordMetadata:
        """Add one record to its partition's batch; return its future.

        Raises what Producer.send raises for bad arguments, a missing topic
        or partition, a closed producer or log, before anything is queued.
        A record over the topic's max_message_bytes gets a failed future
        (RecordTooLarge), as do the records of a batch whose append fails
        (the error of the append)."""
        # The hot path (bytes value, bytes key or none, no headers, default
        # partition and timestamp, a cached route, a record that fits the
        # partition's open batch) is a few tests, a lock and a list append;
        # anything else takes _send_slow, which checks everything. A
        # closing producer has no open batch. The route's age is checked
        # when a batch opens: a batch lives linger_ms at most, so a route
        # is used at most that long past its expiry.
        parts = self._fast_parts.get(topic)
        if parts is not None and type(value) is bytes and headers is None \
                and timestamp_ms is None and partition is None:
            if key is None:
                p = self._sticky.get(topic, 0)
                size = len(value) + 10            # _RECORD_OVERHEAD_EST
            elif type(key) is bytes:
                p = (_murmur2(key, len(key)) & 0x7FFFFFFF) % len(parts) \
                    if len(parts) > 1 else 0
                size = len(key) + len(value) + 10  # _RECORD_OVERHEAD_EST
            else:
                p = None                     # (the slow path says why)
            try:
                # (a sticky partition the topic no longer has: IndexError)
                part = parts[p]  # type: ignore[index]
            except (IndexError, TypeError):
                part = None
            if part is not None:
                rec = (_time_ns() // 1_000_000, key, value, ())
                # `with`, not acquire()/release(): a KeyboardInterrupt is
                # handled at the return of a call made from Python, so it
                # could land between acquire() and the code that releases;
                # a C lock's __enter__/__exit__ leave no such point
                with self._lock:
                    b = self._open.get(part)
                    # (an open batch's room keeps it within max_message_bytes)
                    if b is not None:
                        room = b.room - size
                        if room >= 0:
                            b.room = room
                            recs = b.records
                            i = len(recs)
                            recs.append(rec)
                            return _tuple_new(FutureRecordMetadata, (b, i))
                # no room: append the open batch, open another (a record
                # too large alone fails its future when its batch is
                # appended, which measures it exactly). An expired route,
                # or a partition closed by its topic's deletion, takes the
                # slow path, which resolves the topic again.
                route = self._routes.get(topic)
                if route is not None and route[0] > _monotonic() and not part.closed:
                    return self._add(part, topic, p, rec, size,  # type: ignore[arg-type]
                                     key is None)
        return self._send_slow(topic, value, key, headers, partition, timestamp_ms)

    def _send_slow(self, topic: str, value: object, key: object, headers: Any,
                   partition: int | None, timestamp_ms: int | None) -> FutureRecordMetadata:
        rec = self._record(value, key, headers, timestamp_ms)
        key = rec[1]
        sticky = partition is None and key is None
        for attempt in (0, 1):
            # (the sticky partition, when the topic still has it; else the
            # next round-robin one)
            route, p = self._target(topic, key, partition,
                                    self._sticky.get(topic) if sticky else None)
            try:
                part = self._partition_of(topic, p, rec[0], timestamp_ms)
                break
            except (TopicNotFound, PartitionNotFound):
                self._forget(topic)
                self._sticky.pop(topic, None)
                if attempt:
                    raise
        if sticky:
            self._sticky[topic] = p
        if self._fast_ok and route[2] is None and not self._closed:
            self._install_fast(topic, route)
        size = self._size_bound((rec,)) - _BATCH_HEADER
        limit: int = part.config.max_message_bytes  # type: ignore[assignment]
        if size + _BATCH_HEADER > limit:
            encoded = _native.encoded_size((rec,))
            if encoded > limit:
                failed = BatchResult(topic, p)
                failed.records.append(rec)
                failed.fail(RecordTooLarge(
                    f"send to {topic}: the record encodes to {encoded} bytes, over "
                    f"max_message_bytes={limit}; raise the topic's max_message_bytes"))
                return _tuple_new(FutureRecordMetadata, (failed, 0))
            size = encoded - _BATCH_HEADER
        return self._add(part, topic, p, rec, size, sticky)

    def _add(self, part: Partition, topic: str, p: int, rec: tuple[Any, ...], size: int,
             sticky: bool) -> FutureRecordMetadata:
        """Queue ``rec`` (``size``: its size as the batch counts it) in the
        open batch of ``part``. A batch that cannot take it is appended
        first; one that reaches batch_bytes with it is appended at once."""
        while True:
            with self._lock:
                if self._closing:
                    raise LogClosed("producer is closed")
                b = self._open.get(part)
                if b is not None and b.room < size and b.records:
                    del self._open[part]     # sealed: appended before rec's batch
                else:
                    if b is None:
                        b = self._open_batch(part, topic, p)
                    recs = b.records
                    i = len(recs)
                    recs.append(rec)
                    if rec[3]:
                        b.headers = True
                    b.room -= size
                    full = b.room <= 0
                    break
            self._full(topic, part, sticky)
        if full:
            self._full(topic, part, sticky)
        return _tuple_new(FutureRecordMetadata, (b, i))

    def _install_fast(self, topic: str, route: Any) -> None:
        super()._install_fast(topic, route)
        self._fast_parts[topic] = self._routes[topic][2]  # type: ignore[assignment]

    def _forget(self, topic: str) -> None:
        self._fast_parts.pop(topic, None)
        super()._forget(topic)

    def _full(self, topic: str, part: Partition, sticky: bool) -> None:
        """A batch of ``part`` is full (it reached batch_bytes, or cannot
        take the next record): append it now, in the sending thread (sends
        wait for the appends they cause: that bounds the memory)."""
        route = self._routes.get(topic)
        if sticky and route is not None:
            # keyless records of the topic go to another partition's batch
            self._sticky[topic] = next(self._rr) % route[1]
        self._drain(part)

    def _open_batch(self, part: Partition, topic: str, p: int) -> _Batch:
        """A new open batch of ``part`` (under _lock); wakes or starts the
        sender, which appends it linger_ms from now."""
        limit: int = part.config.max_message_bytes  # type: ignore[assignment]
        # (sizes are counted as len + _RECORD_OVERHEAD_EST, at most
        # _RECORD_OVERHEAD_MAX more than that: this bound keeps the batch
        # within max_message_bytes whatever its records' sizes)
        safe = _BATCH_HEADER + (limit - _BATCH_HEADER) * _RECORD_OVERHEAD_EST \
            // _RECORD_OVERHEAD_MAX
        # (and within B-7's records and headers: each counts at least
        # _RECORD_OVERHEAD_EST bytes, a header _HEADER_OVERHEAD_MAX)
        items = _BATCH_HEADER + _native.BATCH_ITEMS_MAX * min(_RECORD_OVERHEAD_EST,
                                                               _HEADER_OVERHEAD_MAX)
        b = self._open[part] = _Batch(topic, p,
                                      min(self._batch_bytes, safe, items) - _BATCH_HEADER,
                                      _monotonic() + self._linger_s)
        self._slots.setdefault(part, []).append(b)
        if part not in self._drain_locks:
            self._drain_locks[part] = threading.Lock()
        if self._sender is None:
            self._sender = threading.Thread(target=self._run, name="pylog-linger",
                                            daemon=True)
            self._sender.start()
        elif self._sender_idle and self._wake_on_open:
            self._cv.notify()
        return b

    # -- appending -----------------------------------------------------------
    def _drain(self, part: Partition) -> None:
        """Append every batch of ``part`` taken so far, in order."""
        lock = self._drain_locks.get(part)
        if lock is None:
            return
        with lock:
            with self._lock:
                batches = self._slots.pop(part, None)
                if not batches:
                    return
                if self._open.get(part) is batches[-1]:
                    del self._open[part]
                # (one drain of a partition at a time: its drain lock)
                self._inflight[part] = batches
            settled = []
            try:
                for b in batches:
                    base, error = self._append(part, b)
                    settled.append((b, b.settle(base, error)))
            finally:
                self._inflight.pop(part, None)
                for b in batches[len(settled):]:   # (interrupted: KeyboardInterrupt)
                    b.fail(LogFailedError(
                        f"send to {b.topic}-{b.partition}: the append of its batch "
                        "was interrupted; its records may or may not be in the log"))
        # Callbacks run last, outside the drain lock: one may send to this
        # partition (and drain it), or wait on another future of this drain.
        for b, callbacks in settled:
            b.run_callbacks(callbacks)

    def _append(self, part: Partition, b: _Batch) -> tuple[int, Exception | None]:
        """Append batch ``b`` of ``part`` as one RecordBatch: (its base
        offset, None), or (-1, the error that failed it)."""
        try:
            log = self._log
            if log._closed or log._forks != FORKS[0] or part.closed:
                # LogClosed; or the Log's current Partition of that name
                # (the topic was re-created, the log reopened after a
                # fork); TopicNotFound when it was deleted
                log._check()
                part = log.open_partitions().get((b.topic, b.partition)) or \
                    log.partition(b.topic, b.partition)
            recs = b.records
            config = part.config
            base = None
            if not b.headers and config.compression is None:
                base = self._append_columns(part, recs)
            if base is None:
                self._check_size(b.topic, part, recs)
                base, _ = part.append(recs, compression=config.compression)
            self._touched.add(part)
        except Exception as exc:
            return -1, exc
        return base, None

    @staticmethod
    def _append_columns(part: Partition, recs: list[tuple[Any, ...]]) -> int | None:
        """The batch ``recs`` (no headers) through the native columns append;
        None when the general path must take it."""
        stamps, keys, values, _ = zip(*recs)
        n = len(stamps)
        if n > _native.BATCH_ITEMS_MAX:
            return None                  # (the general path refuses it: B-7)
        # (send made every key and value bytes or None; a null one makes
        # len() or join() fail: the general path takes the batch)
        try:
            if keys[0] is None:
                if keys.count(None) != n:
                    return None
                klens, kblob = None, b""
            else:
                klens, kblob = list(map(len, keys)), b"".join(keys)
            cols = _native.Columns(n, kblob, klens, b"".join(values), list(map(len, values)))
        except TypeError:
            return None
        limit: int = part.config.max_message_bytes  # type: ignore[assignment]
        if _BATCH_HEADER + _RECORD_OVERHEAD_MAX * n + cols.size > limit:
            return None                  # (alter_topic lowered it: checked exactly)
        base: int | None = part.append_columns(
            _pack_int64(f"{n}q", *stamps), cols)  # type: ignore[arg-type]
        return base

    def _drain_all(self) -> None:
        """Append everything taken so far; wait for drains in other threads."""
        with self._lock:
            parts = list(self._drain_locks)
        for part in parts:
            self._drain(part)
            with self._drain_locks[part]:
                pass                     # another thread's drain has finished

    def _run(self) -> None:
        """The sender thread: drain each batch linger_ms after it opened
        (batches that fill are appended by the send that fills them)."""
        open_ = self._open
        # With no batch open it sleeps: up to linger_ms at a time, so it
        # wakes before the deadline of any batch opened meanwhile (no
        # notify per batch: waking it each time a send opens a batch cost
        # a thread switch per batch); with linger_ms under a millisecond
        # _open_batch wakes it.
        nap = _IDLE_EXIT_S if self._wake_on_open else min(self._linger_s, _IDLE_EXIT_S)
        while True:
            with self._lock:
                part = None
                idle_until = None
                while part is None:
                    if self._closing:
                        self._sender = None
                        return
                    if not open_:
                        now = _monotonic()
                        if idle_until is None:
                            idle_until = now + _IDLE_EXIT_S
                        elif now >= idle_until:
                            self._sender = None
                            return
                        self._sender_idle = True
                        self._cv.wait(nap)
                        self._sender_idle = False
                        continue
                    idle_until = None
                    first, b = next(iter(open_.items()))     # the oldest
                    wait = b.deadline - _monotonic()
                    if wait > 0:
                        self._cv.wait(wait)
                    else:
                        part = first
            self._drain(part)

    # -- flush and close -----------------------------------------------------
    def send_batch(self, topic: str, items: Any, *, partition: int | None = None,
                   timestamp_ms: int | None = None) -> list[Any]:
        """As Producer.send_batch (appended when it returns), after what
        this producer has pending (order per partition is kept)."""
        self._drain_all()
        return super().send_batch(topic, items, partition=partition,
                                  timestamp_ms=timestamp_ms)

    def flush(self, timeout: float | None = None) -> None:
        """Append every pending batch now (their futures resolve), then as
        Producer.flush: return when all this producer sent is on disk;
        ``timeout`` bounds the fdatasync. Thread-safe."""
        if self._closed:
            raise LogClosed("producer is closed")
        self._drain_all()
        super().flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking records, append every pending batch (their futures
        resolve, or fail with the append's error), then as Producer.close.
        Idempotent; thread-safe."""
        with self._lock:
            self._closing = True
            self._cv.notify_all()
        self._drain_all()
        _LINGERING.discard(self)
        super().close(timeout)

    def _after_fork_in_child(self) -> None:
        """The pending records belong to the parent, which appends them:
        fail the child's copies of their futures, start afresh."""
        self._new_locks()
        self._routes.clear()             # the parent's Partitions: resolve again
        self._fast_parts.clear()
        pending = [b for batches in (*self._slots.values(), *self._inflight.values())
                   for b in batches]
        self._open, self._slots, self._inflight = {}, {}, {}
        self._drain_locks = {}
        self._sender = None
        self._sender_idle = False
        for b in pending:
            b.reset_after_fork()
            b.fail(ForkedLogError(
                f"send to {b.topic}-{b.partition}: this process is a fork child; "
                f"the record was pending in the parent (pid {os.getppid()}), "
                "which appends it"))


def close_lingering(log: LogStore) -> PylogError | None:
    """Close the lingering producers of ``log`` (their pending batches are
    appended first); returns the first error, after closing them all."""
    return close_producers_of(log, _LINGERING)


def _after_fork_in_child() -> None:
    for producer in list(_LINGERING):
        producer._after_fork_in_child()
    if _LINGERING:
        _at_multiprocessing_exit()


def _append_pending_at_exit() -> None:
    """At interpreter exit, append what lingers (as kafka-python closes
    its producers): only a process that dies loses its pending records.
    Errors fail the futures; nothing is raised at exit."""
    for producer in list(_LINGERING):
        try:
            producer._drain_all()
        except Exception:         # (the log's own state at exit): best effort
            pass


class _MultiprocessingExit:
    """The exit finalizer of this process in multiprocessing's registry."""
    finalizer: Any = None
    hooked = False          # (inherited by a fork child, as the hook is)


_MP_EXIT = _MultiprocessingExit()


def _at_multiprocessing_exit(_: object = None) -> None:
    """A multiprocessing child (fork, forkserver; a ProcessPoolExecutor
    worker) ends with os._exit() once its target returns: atexit does not
    run there, multiprocessing's exit finalizers do. So what lingers is
    appended by one of those too; the child's start clears the inherited
    ones, and the after-fork hook registers it again there."""
    util = sys.modules.get("multiprocessing.util")
    if util is None:
        return              # (not imported: no multiprocessing child to end)
    fin = _MP_EXIT.finalizer
    if fin is None or not fin.still_active():
        _MP_EXIT.finalizer = util.Finalize(None, _append_pending_at_exit, exitpriority=20)
    if not _MP_EXIT.hooked:
        _MP_EXIT.hooked = True
        util.register_after_fork(_MP_EXIT, _at_multiprocessing_exit)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_append_pending_at_exit)
