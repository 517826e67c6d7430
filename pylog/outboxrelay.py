"""The outbox relay: publishes the rows of an outbox table
(:mod:`pylog.outbox`) to the log, exactly once, in order per key::

    from pylog.outboxrelay import OutboxRelay

    with pylog.open("data/events") as log:
        relay = OutboxRelay("sqlite:///shop.db", log)     # or postgresql://...
        relay.run(stop=stop_event)        # until stop is set; or relay.drain()

Exactly once: each batch of rows is published in one pylog transaction
together with the relay's new position, a record in the relay's own topic
``__outbox.<name>`` (FORMAT.rst O-1, O-2, as Kafka Connect's exactly-once
source connectors store source offsets, KIP-618). The records and the
position become visible together or not at all; a relay killed anywhere
restarts from the last committed position, and the records of its
unfinished transaction are aborted, never seen by ``read_committed``
consumers. Consumers must read with ``isolation_level="read_committed"``:
a ``read_uncommitted`` consumer may see a batch twice (once aborted).

One relay at a time: the relay's producer has ``transactional_id``
``pylog-outbox.<name>``; starting a second relay of the same name fences
the first (its next commit raises ProducerFencedError and it stops), and
the second reads the position after that, so no batch is published twice
by the pair. Published rows are deleted from the table after their
transaction commits (``delete_published=False`` keeps them; the position
still excludes them).

Which rows, in which order: :mod:`pylog.outboxsource` (O-3). When no row
is pending the relay sleeps until the database says something committed:
PostgreSQL LISTEN/NOTIFY (the table's trigger), SQLite ``PRAGMA
data_version`` polled with backoff (5 ms to 250 ms).

A row the log refuses stops the relay with the error and nothing of its
batch published (TopicNotFound for a topic the log lacks, RecordTooLarge,
InvalidArgument for headers that are not :func:`pylog.outbox.encode_headers`
JSON): fix the cause and restart; a row is never skipped. A database error
(the driver's own exception, e.g. a lost connection or a server restart)
in :meth:`OutboxRelay.run` is retried: the relay reconnects with backoff
for up to ``reconnect_timeout`` seconds and then raises the error. The
position lives in the log, so a reconnect re-reads nothing twice and skips
nothing. A relay given a connection object rather than a URL cannot
reconnect: it raises at once.

Thread safety: one thread runs a relay; ``stop`` (a threading.Event) may
be set from any thread. Durability: a batch is durable in the log as the
Log's ``sync`` mode says when its transaction commits; the table's rows
are deleted after that.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from .config import validate_topic_name
from .errors import InvalidArgument
from .outbox import TABLE
from .outboxsource import ID_HEADER, Position, PostgresSource, Row, SQLiteSource, open_source
from .producer import Producer
from .records import TopicPartition

if TYPE_CHECKING:
    from .log import Log

#: prefix of a relay's position topic (O-1)
POSITIONS_PREFIX = "__outbox."
FORMAT_VERSION = 1
#: position records are trimmed every this many commits (O-1)
TRIM_EVERY = 1000
#: bytes of a record batch's header (B-1), counted once per send_batch run
_BATCH_HEADER = 61


def positions_topic(name: str) -> str:
    """The topic holding relay ``name``'s positions (O-1)."""
    return POSITIONS_PREFIX + name


def transactional_id(name: str) -> str:
    """The transactional_id of relay ``name``'s producer."""
    return "pylog-outbox." + name


@dataclass(frozen=True)
class Progress:
    """What one step of :meth:`OutboxRelay.run` did: ``rows`` published
    now (0: it went idle), ``total`` published by this relay name ever,
    ``position`` after it, ``pending`` rows committed in the table and not
    yet published (counted at most once a second while busy)."""
    rows: int
    total: int
    position: Position
    pending: int


def _fitting_runs(items: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
                  limit: int | None) -> list[list[tuple[bytes | None, bytes | None,
                                                     list[tuple[str, bytes]]]]]:
    """``items`` (key, value, headers) cut into runs, in order, whose
    records together stay within ``limit`` (the topic's max_message_bytes)
    by the producer's own upper bound of their encoding: send_batch makes
    one record batch per partition of a run, and rows that each fit must
    not be refused together (RecordTooLarge would stop the relay for good
    on a batch of rows of one key). A row too large alone gets a run of
    its own, which the log refuses (the relay stops, the row not skipped)."""
    if limit is None:
        return [items]
    runs: list[list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]] = []
    size = room = 0
    for item in items:
        # (the batch header is counted once per run)
        bound = Producer._size_bound([(0, item[0], item[1], tuple(item[2]))]) - _BATCH_HEADER
        if not runs or size + bound > room:
            runs.append([])
            size, room = 0, limit - _BATCH_HEADER
        runs[-1].append(item)
        size += bound
    return runs


class OutboxRelay:
    """Relay ``name`` (default ``"outbox"``: a name is one position; use
    one per table) from the outbox ``table`` of ``db`` (a URL or a
    connection, see :func:`pylog.outboxsource.open_source`) to ``log``.
    Publishes at most ``batch_size`` rows per transaction.

    Creating it fences any older relay of the same name and reads the last
    committed position (O-2). Raises InvalidArgument when the stored
    position belongs to another table or database kind, or the table is
    missing."""

    def __init__(self, db: Any, log: Log, *, name: str = "outbox", table: str = TABLE,
                 batch_size: int = 500, delete_published: bool = True) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"name={name!r}; expected a non-empty str")
        validate_topic_name(positions_topic(name))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgument(f"batch_size={batch_size!r}; expected an int >= 1")
        self.log = log
        self.name = name
        self.table = table
        self.batch_size = batch_size
        self.delete_published = delete_published
        self.topic = positions_topic(name)
        self._tp = TopicPartition(self.topic, 0)
        self._url = db if isinstance(db, str) else None     # (to reconnect)
        self.source: SQLiteSource | PostgresSource = open_source(db, table)
        try:
            # retention keeps everything: the newest position must never go
            # (the relay trims what is below it itself, O-1)
            log.create_topic(self.topic, partitions=1, exist_ok=True, retention_ms=-1,
                             segment_bytes=1 << 20)
            # the producer first: it fences an older relay and aborts its
            # open transaction, so the position read next is the last one
            self._producer = log.producer(transactional_id=transactional_id(name))
        except BaseException:
            self.source.close()
            raise
        try:
            self.position, self.total = self._load()
            self.source.check(self.position)
            if delete_published:
                self.source.delete_published(self.position)
        except BaseException:
            self.close()
            raise
        self._commits = 0

    # -- the position (O-2) -----------------------------------------------------------
    def _load(self) -> tuple[Position, int]:
        """The last committed position record's (position, total); (empty,
        0) when there is none."""
        c = self.log.consumer(enable_auto_commit=False, isolation_level="read_committed")
        try:
            c.assign([self._tp])
            start = c.beginning_offsets([self._tp])[self._tp]
            end = c.end_offsets([self._tp])[self._tp]
            back = 64
            while True:
                c.seek(self._tp, max(start, end - back))
                last = None
                while c.position(self._tp) < end:
                    recs = c.poll(timeout=0.5, max_records=1000)
                    if not recs:
                        break
                    for r in recs:
                        if r.key == self.name.encode():
                            last = r
                if last is not None or end - back <= start:
                    break
                back *= 4
        finally:
            c.close()
        if last is None:
            return Position(), 0
        try:
            obj = json.loads(cast(bytes, last.value))
            ok = obj["v"] == FORMAT_VERSION
        except (ValueError, TypeError, KeyError):
            ok = False
        if not ok:
            raise InvalidArgument(f"{self.topic} offset {last.offset}: not an O-2 "
                                  f"position record: {last.value!r}")
        if (obj.get("dialect"), obj.get("table")) != (self.source.dialect, self.table):
            raise InvalidArgument(
                f"relay {self.name!r} holds the position of {obj.get('dialect')} table "
                f"{obj.get('table')!r}, not of {self.source.dialect} table {self.table!r}: "
                "give this relay another name")
        return Position.from_json(obj["position"]), int(obj.get("total", 0))

    def _record(self, pos: Position, total: int) -> bytes:
        return json.dumps({"v": FORMAT_VERSION, "dialect": self.source.dialect,
                           "table": self.table, "position": pos.to_json(),
                           "total": total}, separators=(",", ":")).encode()

    # -- publishing ---------------------------------------------------------------------
    def _publish(self, rows: list[Row], pos: Position) -> None:
        """The exactly-once step (O-2): the rows' records and the new
        position in one transaction."""
        p = self._producer
        by_topic: dict[str, list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]]
        by_topic = {}
        for r in rows:      # one topic's rows keep their order: so does each key's
            by_topic.setdefault(r.topic, []).append(
                (r.key, r.value, [*r.headers, (ID_HEADER, str(r.id).encode())]))
        with p.transaction():
            for topic, items in by_topic.items():
                limit = self.log.partition(topic, 0).config.max_message_bytes
                for chunk in _fitting_runs(items, limit):
                    p.send_batch(topic, chunk)  # one record batch per partition
            meta = p.send(self.topic, self._record(pos, self.total + len(rows)),
                          key=self.name.encode(), partition=0)
        self.total += len(rows)
        self.position = pos
        self._trim(meta)

    def _trim(self, meta: Any) -> None:
        """Every 1000 commits, drop the position records below the newest
        (O-1); the newest is never dropped."""
        self._commits += 1
        offset = getattr(meta, "offset", None)
        if self._commits % TRIM_EVERY == 0 and isinstance(offset, int):
            self.log.delete_records({self._tp: offset})

    def step(self) -> int:
        """Publish the next batch of pending rows (at most ``batch_size``);
        returns how many (0: none pending)."""
        rows, pos = self.source.fetch(self.position, self.batch_size)
        if not rows:
            self.position = pos         # an empty snapshot step: not stored
            return 0
        self._publish(rows, pos)
        if self.delete_published:
            self.source.delete_published(pos)
        return len(rows)

    def pending(self) -> int:
        """Rows committed in the table and not yet published."""
        return self.source.pending(self.position)

    def drain(self) -> int:
        """Publish until no committed row is pending; returns how many."""
        n = 0
        while (k := self.step()):
            n += k
        return n

    def run(self, stop: threading.Event | None = None, *, max_wait: float = 5.0,
            on_progress: Callable[[Progress], None] | None = None,
            reconnect_timeout: float = 60.0,
            on_error: Callable[[BaseException, float], None] | None = None) -> None:
        """Publish batches until ``stop`` is set; between them, sleep until
        the database has news (at most ``max_wait`` seconds). After every
        published batch, and when it goes idle, calls ``on_progress``.

        A database error is retried (the relay was made from a URL): it
        calls ``on_error(error, delay)``, waits ``delay`` (0.1 s doubling
        to 5 s), reconnects and goes on, for up to ``reconnect_timeout``
        seconds since the first error of the outage (default 60; 0 raises
        the first error). Then, or for a relay made from a connection
        object, the driver's error is raised."""
        if isinstance(reconnect_timeout, bool) or not isinstance(reconnect_timeout,
                                                                 (int, float)) \
                or not 0 <= reconnect_timeout < float("inf"):
            raise InvalidArgument(f"reconnect_timeout={reconnect_timeout!r}; expected "
                                  "seconds >= 0")
        idle_reported = False
        counted = (-1.0, 0)         # (when, pending): counted at most once a second
        outage: float | None = None     # (when the current outage began)
        delay = 0.1
        while stop is None or not stop.is_set():
            try:
                if outage is not None:
                    self._reconnect()
                n = self.step()
                if on_progress is not None and (n or not idle_reported):
                    if not n or time.monotonic() - counted[0] >= 1.0:
                        counted = (time.monotonic(), self.pending())
                    on_progress(Progress(n, self.total, self.position, counted[1]))
                idle_reported = not n
                if not n:
                    self.source.wait(max_wait, stop)
            except self.source.errors as exc:
                now = time.monotonic()
                outage = now if outage is None else outage
                if self._url is None or now - outage + delay > reconnect_timeout:
                    raise
                if on_error is not None:
                    on_error(exc, delay)
                if stop is not None:
                    stop.wait(delay)
                else:
                    time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            outage, delay = None, 0.1

    def _reconnect(self) -> None:
        """A new connection from the URL, checked against the position (the
        rows of a batch published before the error are deleted now)."""
        assert self._url is not None
        try:
            self.source.close()
        except self.source.errors:
            pass                        # (the old connection is gone anyway)
        try:
            self.source = open_source(self._url, self.table)
        except InvalidArgument as exc:
            # connect() reports an unreachable server so; here it is the
            # outage going on, retried as the driver's error would be
            raise self.source.errors[0](str(exc)) from None
        self.source.check(self.position)
        if self.delete_published:
            self.source.delete_published(self.position)

    def close(self) -> None:
        """Close the producer (aborting nothing: no transaction is open
        between steps) and the database connection."""
        try:
            self._producer.close()
        finally:
            self.source.close()

    def __enter__(self) -> OutboxRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["OutboxRelay", "Progress", "positions_topic", "transactional_id"]
