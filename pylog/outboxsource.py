"""Where the outbox relay reads rows: which committed rows come next, in
publish order, after a position, for SQLite and PostgreSQL (FORMAT.rst
O-3), and how the relay waits for new ones.

A position says which rows are published; the relay stores it in the log,
in the transaction that publishes the rows (O-2), as the JSON object
:meth:`Position.to_json` writes:

- SQLite: ``{"after_id": N}``: every row with id <= N. SQLite runs one
  write transaction at a time, and an id is drawn inside it
  (``AUTOINCREMENT``, never reused), so rows become visible in id order:
  a row committed later always has a larger id.
- PostgreSQL: ``{"done": S1, "target": S2, "after_id": N}`` (S1, S2
  ``pg_snapshot`` texts or null): every row of a transaction visible in
  snapshot S1, plus those visible in S2 but not in S1 with id <= N. Ids
  are drawn before commit, so id order is not commit order; the set of
  rows visible in a snapshot is final once the snapshot is taken, and a
  transaction that committed before another is visible in every snapshot
  the later one is. The relay publishes snapshot by snapshot: the rows
  visible in a new snapshot and not in the last one, in id order (one
  key's ids are drawn in commit order, :func:`pylog.outbox.add`).

Thread safety: a source is used by one relay thread. Durability: reading
changes nothing; ``delete_published`` commits its own DELETE.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import InvalidArgument
from .outbox import Headers, channel, check_table, decode_headers, dialect

#: the header naming a published record's outbox row id
ID_HEADER = "pylog.outbox.id"


@dataclass(frozen=True)
class Row:
    """One committed outbox row."""
    id: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True)
class Position:
    """What is published (see the module doc); ``done``/``target`` are
    PostgreSQL snapshot texts, unused on SQLite."""
    after_id: int = 0
    done: str | None = None
    target: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"after_id": self.after_id}
        if self.done is not None or self.target is not None:
            out["done"], out["target"] = self.done, self.target
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Position:
        try:
            after = obj["after_id"]
            done, target = obj.get("done"), obj.get("target")
            if isinstance(after, bool) or not isinstance(after, int) or after < 0 or \
                    not all(s is None or isinstance(s, str) for s in (done, target)):
                raise ValueError(obj)
        except (KeyError, TypeError, AttributeError, ValueError):
            raise InvalidArgument(f"outbox position {obj!r} is not an O-2 position") from None
        return cls(after, done, target)

    def __str__(self) -> str:
        if self.done is None and self.target is None:
            return f"id {self.after_id}"
        return f"snapshot {self.done or '-'} + {self.target or '-'} to id {self.after_id}"


def _row(r: Any) -> Row:
    key, value = r[2], r[3]
    return Row(int(r[0]), r[1], None if key is None else bytes(key),
               None if value is None else bytes(value), decode_headers(r[4]))


class SQLiteSource:
    """Rows of an SQLite outbox table in id order (see the module doc)."""

    dialect = "sqlite"
    #: the driver's errors: a locked or vanished database
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, conn: sqlite3.Connection, table: str):
        self.conn = conn
        self.table = table
        conn.execute("PRAGMA busy_timeout = 10000")
        self._version = -1
        self._delay = 0.0

    def fetch(self, pos: Position, limit: int) -> tuple[list[Row], Position]:
        """The next at most ``limit`` rows after ``pos``, and the position
        that includes them."""
        self._version = self._data_version()
        rows = [_row(r) for r in self.conn.execute(
            f"SELECT id, topic, key, value, headers FROM {self.table} WHERE id > ? "
            "ORDER BY id LIMIT ?", (pos.after_id, limit))]
        return rows, (Position(rows[-1].id) if rows else pos)

    def check(self, pos: Position) -> None:
        """InvalidArgument when ``pos`` lies past every id the table ever
        drew: a position of another database (a restored or replaced file)
        would skip rows silently."""
        schema, _, name = self.table.rpartition(".")
        seq_table = f"{schema}.sqlite_sequence" if schema else "sqlite_sequence"
        try:
            row = self.conn.execute(f"SELECT seq FROM {seq_table} WHERE name = ?",
                                    (name,)).fetchone()
        except sqlite3.OperationalError:        # no AUTOINCREMENT table has had a row
            row = None
        drawn = int(row[0]) if row else 0
        if pos.after_id > drawn:
            raise InvalidArgument(
                f"the stored position ({pos}) is past the last id table {self.table!r} "
                f"ever drew ({drawn}): another database? Use another relay name")

    def pending(self, pos: Position) -> int:
        """How many committed rows ``pos`` does not include."""
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {self.table} WHERE id > ?",
                                     (pos.after_id,)).fetchone()[0])

    def delete_published(self, pos: Position) -> None:
        """Delete the rows ``pos`` includes (they are in the log). When the
        application holds the write lock past the busy timeout, they are
        left for the next call (which deletes everything up to its
        position): publishing need not wait for a cleanup."""
        try:
            with self.conn:
                self.conn.execute(f"DELETE FROM {self.table} WHERE id <= ?", (pos.after_id,))
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise

    def _data_version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def wait(self, timeout: float, stop: threading.Event | None) -> None:
        """Sleep until another connection commits to the database (checked
        by ``PRAGMA data_version`` at 5 ms, doubling up to 250 ms while
        nothing changes), ``stop`` is set or ``timeout`` seconds pass."""
        end = time.monotonic() + timeout
        while True:
            if self._data_version() != self._version:
                self._delay = 0.0
                return
            left = end - time.monotonic()
            if left <= 0:
                return
            self._delay = min(0.25, max(0.005, self._delay * 2))
            if stop is not None:
                if stop.wait(min(self._delay, left)):
                    return
            else:
                time.sleep(min(self._delay, left))

    def close(self) -> None:
        self.conn.close()


class PostgresSource:
    """Rows of a PostgreSQL outbox table, snapshot by snapshot (O-3)."""

    dialect = "postgresql"

    def __init__(self, conn: Any, table: str):
        import psycopg
        #: the driver's errors: a lost connection, a server restart
        self.errors: tuple[type[BaseException], ...] = (psycopg.Error,)
        self.conn = conn
        self.table = table
        # each statement its own snapshot, and LISTEN takes effect at once
        conn.autocommit = True
        conn.execute(f'LISTEN "{channel(table)}"')

    def _delta(self, done: str | None, target: str, after_id: int, limit: int | None,
               columns: str) -> tuple[str, dict[str, Any]]:
        # rows visible in target and not in done, past after_id (O-3)
        where = ["id > %(after)s", "pg_visible_in_snapshot(txid, %(target)s::pg_snapshot)"]
        if done is not None:
            where += ["txid >= pg_snapshot_xmin(%(done)s::pg_snapshot)",
                      "NOT pg_visible_in_snapshot(txid, %(done)s::pg_snapshot)"]
        sql = f"SELECT {columns} FROM {self.table} WHERE " + " AND ".join(where)
        if limit is not None:
            sql += " ORDER BY id LIMIT %(limit)s"
        return sql, {"after": after_id, "target": target, "done": done, "limit": limit}

    def fetch(self, pos: Position, limit: int) -> tuple[list[Row], Position]:
        """As :meth:`SQLiteSource.fetch`: the rest of the current snapshot's
        rows first; when none are left, a new snapshot."""
        cols = "id, topic, key, value, headers"
        if pos.target is not None:
            rows = [_row(r) for r in self.conn.execute(
                *self._delta(pos.done, pos.target, pos.after_id, limit, cols))]
            if rows:
                return rows, Position(rows[-1].id, pos.done, pos.target)
            pos = Position(0, pos.target, None)
        # taken in a statement of its own: the next statement's snapshot is
        # later, so it sees every row visible in this one
        snap = str(self.conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0])
        rows = [_row(r) for r in self.conn.execute(*self._delta(pos.done, snap, 0, limit, cols))]
        if rows:
            return rows, Position(rows[-1].id, pos.done, snap)
        # nothing committed between the two snapshots: nothing ever will be
        return [], Position(0, snap, None)

    def _published(self, pos: Position) -> tuple[str, dict[str, Any]]:
        parts, args = [], {"done": pos.done, "target": pos.target, "after": pos.after_id}
        if pos.done is not None:
            parts.append("pg_visible_in_snapshot(txid, %(done)s::pg_snapshot)")
        if pos.target is not None:
            parts.append("(pg_visible_in_snapshot(txid, %(target)s::pg_snapshot) "
                         "AND id <= %(after)s)")
        return (" OR ".join(parts) or "FALSE"), args

    def check(self, pos: Position) -> None:
        """As :meth:`SQLiteSource.check`: InvalidArgument when a stored
        snapshot is newer than the server's current one (another server)."""
        for snap in (pos.done, pos.target):
            if snap is not None and self.conn.execute(
                    "SELECT pg_snapshot_xmax(%s::pg_snapshot) > "
                    "pg_snapshot_xmax(pg_current_snapshot())", (snap,)).fetchone()[0]:
                raise InvalidArgument(
                    f"the stored position ({pos}) names transactions this server has "
                    "not started: another database? Use another relay name")

    def pending(self, pos: Position) -> int:
        cond, args = self._published(pos)
        return int(self.conn.execute(f"SELECT COUNT(*) FROM {self.table} WHERE NOT ({cond})",
                                     args).fetchone()[0])

    def delete_published(self, pos: Position) -> None:
        cond, args = self._published(pos)
        self.conn.execute(f"DELETE FROM {self.table} WHERE {cond}", args)

    def wait(self, timeout: float, stop: threading.Event | None) -> None:
        """Wait for a NOTIFY of the table's trigger (or ``timeout``);
        ``stop`` is looked at every 0.2 s."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return
            got = False
            for _ in self.conn.notifies(timeout=min(0.2, left), stop_after=1):
                got = True
            if got:
                # drain the rest: one fetch covers every row committed so far
                for _ in self.conn.notifies(timeout=0.0):
                    pass
                return

    def close(self) -> None:
        self.conn.close()


def open_source(db: Any, table: str) -> SQLiteSource | PostgresSource:
    """The source for ``db``: an open sqlite3 / psycopg connection (the
    source takes it over: autocommit on PostgreSQL, closed by ``close``)
    or a URL, ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``,
    ``postgresql://user@host:port/dbname``. The table must exist
    (:func:`pylog.outbox.install`): InvalidArgument otherwise."""
    table = check_table(table)
    if isinstance(db, str):
        db = connect(db)
    kind = dialect(db)
    src: SQLiteSource | PostgresSource
    src = SQLiteSource(db, table) if kind == "sqlite" else PostgresSource(db, table)
    try:
        src.conn.execute(f"SELECT id FROM {table} LIMIT 0").fetchall()
    except Exception as exc:        # the driver's own "no such table"
        src.close()
        raise InvalidArgument(f"outbox table {table!r}: {exc}; create it with "
                              "pylog.outbox.install(conn) or 'pylog outbox install'") from None
    return src


def connect(url: str) -> Any:
    """A connection for a ``sqlite:///`` or ``postgresql://`` URL."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if parts.netloc or not path:
            raise InvalidArgument(f"db {url!r}: expected sqlite:///relative/path.db or "
                                  "sqlite:////absolute/path.db")
        if not os.path.exists(path):
            raise InvalidArgument(f"db {url!r}: no such file {path!r}")
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    if parts.scheme in ("postgresql", "postgres"):
        try:
            import psycopg
        except ImportError:
            raise InvalidArgument("a postgresql:// outbox needs psycopg 3: "
                                  "pip install 'pylog[outbox]'") from None
        try:
            return psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise InvalidArgument(f"db {url!r}: cannot connect: {exc}".strip()) from None
    raise InvalidArgument(f"db {url!r}: expected a sqlite:/// or postgresql:// URL")


__all__ = ["Row", "Position", "SQLiteSource", "PostgresSource", "open_source", "connect",
           "ID_HEADER"]
