"""The idempotent consumer: a bounded store of processed event ids in
SQLite, for effects that cannot join a database transaction (an e-mail,
an HTTP call to another service)::

    ids = ProcessedIds(conn, "order-emails", max_ids=100_000)
    for record in consumer:
        with ids.once(event_id_of(record)) as first:
            if first:
                send_confirmation_email(record)

``once(event_id)`` yields True when the id is not in the store; leaving the
block without an exception marks it (``mark``), and a redelivery of the
same event then yields False. ``seen()`` and ``mark()`` are the two halves
for code that needs them apart.

What it guarantees, precisely:

- *effectively once inside the window*: an event whose ``mark`` committed
  is not processed again while its id is in the store, i.e. while it is
  among the last ``max_ids`` ids marked under this ``name`` and (with
  ``ttl_s``) was marked less than ``ttl_s`` seconds ago;
- *at least once at the edges*: a crash after the effect and before
  ``mark`` commits repeats the effect when the event is delivered again
  (no store can close that gap for an effect outside the database: the
  effect and the mark are two things); an id that left the window (trimmed
  by ``max_ids`` or ``ttl_s``) is processed again if delivered again;
- a ``mark`` made while the connection is inside a transaction of the
  caller joins it (it commits with it, or not at all): with effects in the
  same database this is exactly once by event id, for duplicates the log
  itself holds (a producer's retried send).

The window is bounded: every ``mark`` deletes the ids beyond ``max_ids``
(the oldest first, by insertion order) and those older than ``ttl_s``, so
the table never holds more than ``max_ids`` rows per name.

Thread safety: one ProcessedIds per connection, used from one thread at a
time (as a sqlite3 connection). Durability: a ``mark`` outside a
transaction commits before it returns, as durable as the connection's
SQLite settings make a commit.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import InvalidArgument

TABLE = "pylog_processed_ids"
EventId = str | bytes | int


def _check_id(event_id: object) -> EventId:
    if isinstance(event_id, bool) or not isinstance(event_id, (str, bytes, int)):
        raise InvalidArgument(f"event_id={event_id!r}; expected str, bytes or int")
    return event_id


class ProcessedIds:
    """The processed-event-id store named ``name`` in ``conn`` (see the
    module doc): at most ``max_ids`` ids (default 100000, at least 1), each
    kept at most ``ttl_s`` seconds (default None: no age limit). The table
    (default ``pylog_processed_ids``) is created when missing; several
    names share it."""

    def __init__(self, conn: sqlite3.Connection, name: str, *, max_ids: int = 100_000,
                 ttl_s: float | None = None, table: str = TABLE,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(conn, sqlite3.Connection):
            raise InvalidArgument(f"conn={conn!r}; expected a sqlite3.Connection")
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"name={name!r}; expected a non-empty str")
        if isinstance(max_ids, bool) or not isinstance(max_ids, int) or max_ids < 1:
            raise InvalidArgument(f"max_ids={max_ids!r}; expected an int >= 1")
        if ttl_s is not None and (isinstance(ttl_s, bool) or
                                  not isinstance(ttl_s, (int, float)) or not ttl_s > 0):
            raise InvalidArgument(f"ttl_s={ttl_s!r}; expected seconds > 0 or None")
        if not isinstance(table, str) or not table.isidentifier() or not table.isascii():
            raise InvalidArgument(f"table={table!r}; expected an ASCII identifier")
        if conn.in_transaction:
            raise InvalidArgument("the sqlite3 connection has an open transaction: "
                                  "commit or roll it back before creating the store")
        self.conn = conn
        self.name = name
        self.max_ids = max_ids
        self.ttl_s = ttl_s
        self.table = table
        self._clock = clock
        # seq: insertion order (AUTOINCREMENT never reuses a trimmed number)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ("
                     "seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
                     "event_id NOT NULL, marked_at REAL NOT NULL, "
                     "UNIQUE (name, event_id))")
        conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_by_name ON {table} (name, seq)")
        conn.commit()

    def seen(self, event_id: EventId) -> bool:
        """Whether ``event_id`` is in the store (marked and still in the window)."""
        _check_id(event_id)
        row = self.conn.execute(
            f"SELECT marked_at FROM {self.table} WHERE name = ? AND event_id = ?",
            (self.name, event_id)).fetchone()
        if row is None:
            return False
        # an expired id not yet trimmed (no mark since) counts as gone
        return self.ttl_s is None or row[0] >= self._clock() - self.ttl_s

    def mark(self, event_id: EventId) -> None:
        """Record ``event_id`` as processed and trim the window. Joins the
        connection's open transaction when there is one (the caller
        commits); otherwise commits before returning."""
        _check_id(event_id)
        conn = self.conn
        own = not conn.in_transaction
        try:
            now = self._clock()
            conn.execute(f"INSERT INTO {self.table} (name, event_id, marked_at) "
                         "VALUES (?, ?, ?) ON CONFLICT (name, event_id) "
                         "DO UPDATE SET marked_at = excluded.marked_at",
                         (self.name, event_id, now))
            conn.execute(f"DELETE FROM {self.table} WHERE name = ? AND seq <= "
                         f"(SELECT seq FROM {self.table} WHERE name = ? "
                         "ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                         (self.name, self.name, self.max_ids))
            if self.ttl_s is not None:
                conn.execute(f"DELETE FROM {self.table} WHERE name = ? AND marked_at < ?",
                             (self.name, now - self.ttl_s))
            if own:
                conn.commit()
        except BaseException:
            if own:
                conn.rollback()
            raise

    @contextmanager
    def once(self, event_id: EventId) -> Iterator[bool]:
        """``with ids.once(event_id) as first:`` -- ``first`` is True when the
        id was not seen; a block left without an exception marks it (a
        block that raises leaves it unmarked: the effect is retried)."""
        first = not self.seen(event_id)
        yield first
        if first:
            self.mark(event_id)

    def __len__(self) -> int:
        """How many ids of this name the table holds now."""
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {self.table} WHERE name = ?",
                                     (self.name,)).fetchone()[0])
