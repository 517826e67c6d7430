"""The transactional outbox: an event written in the application's own
database transaction, next to the change it announces, and published to
the log by a relay (:class:`pylog.outboxrelay.OutboxRelay`, or
``pylog outbox relay DB_URL LOG``)::

    import sqlite3
    from pylog import outbox

    db = sqlite3.connect("shop.db")
    outbox.install(db)                            # creates table pylog_outbox
    with db:                                      # one transaction
        db.execute("INSERT INTO orders VALUES (?, ?)", (42, "user-7"))
        outbox.add(db, "order-events", b'{"orderId": 42}', key=b"user-7")

The order row and its event commit together or not at all: no event for an
order that rolled back, no order without its event. The relay publishes
every committed row exactly once, in the order their transactions
committed for rows of one key (topic and key; rows of different keys may
be published in another order), and never a row of a transaction that
rolled back.

Databases: SQLite (a ``sqlite3.Connection``) and PostgreSQL 13 or later (a
psycopg 3 connection, ``pip install 'pylog[outbox]'``). Rows are numbered by an id
that only grows (SQLite ``AUTOINCREMENT``: never reused; PostgreSQL a
``bigserial``). On PostgreSQL each row also stores the id of the
transaction that wrote it (``pg_current_xact_id()``, ``xid8``): ids are
handed out before commit, so a transaction can commit row 5 after another
committed row 6, and a relay that publishes "ids above the last one" would
skip row 5 forever. The relay publishes by snapshot instead (O-3). On
PostgreSQL ``add`` first takes a transaction-level advisory lock on (table,
topic, key), so two transactions adding rows of one key are serialized
from the first ``add`` to the commit and number that key's rows in commit
order (two transactions that add two keys in opposite orders can deadlock:
PostgreSQL aborts one, as for row locks). On SQLite writers are serialized
by the database itself.

Rows added with plain SQL are published too (the relay reads the table);
``headers`` is then NULL or the JSON :func:`encode_headers` writes. On
PostgreSQL such rows lack the key lock: rows of one key from transactions
that overlap may then be published in id order rather than commit order.
A PostgreSQL table gets a trigger that notifies channel :func:`channel`
on every insert, so a relay wakes at once.

Thread safety: the functions keep no state; a connection is used by one
thread at a time, as its driver requires. Durability: that of the
application's commit (SQLite's ``synchronous`` setting, PostgreSQL's
``synchronous_commit``); ``add`` itself commits nothing unless the
connection is in autocommit mode outside a transaction.
"""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from typing import Any

from .config import validate_topic_name
from .errors import InvalidArgument

#: The default outbox table.
TABLE = "pylog_outbox"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")

Headers = list[tuple[str, bytes]]


def check_table(table: object) -> str:
    """``table`` if it is a table name pylog can splice into SQL text: an
    ASCII identifier, optionally qualified by a schema (``shop.outbox``);
    else InvalidArgument."""
    if not isinstance(table, str) or not _NAME.match(table) or len(table) > 60:
        raise InvalidArgument(f"table={table!r}; expected an ASCII identifier "
                              "(optionally schema.table), at most 60 characters")
    return table


def dialect(conn: object) -> str:
    """``"sqlite"`` for a sqlite3 connection, ``"postgresql"`` for a psycopg
    3 connection; InvalidArgument for anything else."""
    if isinstance(conn, sqlite3.Connection):
        return "sqlite"
    if type(conn).__module__.split(".")[0] == "psycopg" and hasattr(conn, "pgconn"):
        return "postgresql"
    raise InvalidArgument(f"conn={conn!r}; expected a sqlite3 or a psycopg 3 connection")


def channel(table: str) -> str:
    """The PostgreSQL NOTIFY channel of outbox ``table``."""
    return check_table(table)


def encode_headers(headers: Headers | None) -> str | None:
    """The stored form of ``headers``: a JSON array of ``[name, base64 of
    the value]`` pairs (None for none)."""
    if headers is None:
        return None
    if not isinstance(headers, (list, tuple)):
        raise InvalidArgument(f"headers={headers!r}; expected a list of (str, bytes)")
    out = []
    for h in headers:
        if not (isinstance(h, (list, tuple)) and len(h) == 2 and isinstance(h[0], str)
                and isinstance(h[1], bytes)):
            raise InvalidArgument(f"header {h!r}; expected a (str, bytes) pair")
        out.append([h[0], base64.b64encode(h[1]).decode("ascii")])
    return json.dumps(out, separators=(",", ":"))


def decode_headers(text: str | bytes | None) -> Headers:
    """The headers :func:`encode_headers` stored (InvalidArgument for text
    that is not that shape)."""
    if text is None:
        return []
    try:
        pairs = json.loads(text)
        return [(str(k), base64.b64decode(v, validate=True)) for k, v in pairs]
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"outbox headers {text!r} are not a JSON array of "
                              f"[name, base64 value] pairs: {exc}") from None


def _sqlite_ddl(table: str) -> list[str]:
    # AUTOINCREMENT: an id is never reused, even after the relay deleted
    # the rows below it, so "ids above the position" is every new row (O-3)
    return [f"CREATE TABLE IF NOT EXISTS {table} ("
            "id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key BLOB, "
            "value BLOB, headers TEXT, created_ms INTEGER NOT NULL DEFAULT "
            "(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)))"]


def _pg_ddl(table: str) -> list[str]:
    short = table.rsplit(".", 1)[-1]
    func = f"{table}_notify"
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        "id BIGSERIAL PRIMARY KEY, "
        # the writing transaction, for the relay's snapshot order (O-3)
        "txid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
        "topic TEXT NOT NULL, key BYTEA, value BYTEA, headers TEXT, "
        "created_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        f"CREATE INDEX IF NOT EXISTS {short}_txid ON {table} (txid)",
        f"CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_notify('{channel(table)}', ''); RETURN NULL; END $$",
        f"DROP TRIGGER IF EXISTS {short}_notify ON {table}",
        f"CREATE TRIGGER {short}_notify AFTER INSERT ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {func}()",
    ]


def install(conn: Any, table: str = TABLE) -> None:
    """Create the outbox table ``table`` (and on PostgreSQL its index,
    notify function and trigger) when missing, and commit. The connection
    must not be inside a transaction of the caller's (its writes would be
    committed along): InvalidArgument then, nothing created."""
    table = check_table(table)
    kind = dialect(conn)
    if kind == "sqlite":
        if conn.in_transaction and getattr(conn, "autocommit", None) is not False:
            raise InvalidArgument("the sqlite3 connection has an open transaction: "
                                  "commit or roll it back before install()")
        for sql in _sqlite_ddl(table):
            conn.execute(sql)
        conn.commit()
        return
    _pg_check_idle(conn, "install()")
    with conn.transaction():
        # one installer at a time: CREATE ... IF NOT EXISTS races otherwise
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                     (f"pylog-outbox-install|{table}",))
        for sql in _pg_ddl(table):
            conn.execute(sql)


def _pg_check_idle(conn: Any, what: str) -> None:
    import psycopg
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise InvalidArgument(f"the psycopg connection has an open transaction: "
                              f"commit or roll it back before {what}")


def check_row(topic: object, value: object, key: object, headers: object
              ) -> tuple[str, bytes | None, bytes | None, str | None]:
    """The checked, stored form of one row's fields (InvalidArgument or
    InvalidTopicName for a bad one)."""
    validate_topic_name(topic)
    for name, v in (("value", value), ("key", key)):
        if v is not None and not isinstance(v, bytes):
            raise InvalidArgument(f"{name}={v!r}; expected bytes or None")
    return topic, value, key, encode_headers(headers)  # type: ignore[arg-type,return-value]


def add(conn: Any, topic: str, value: bytes | None, key: bytes | None = None,
        headers: Headers | None = None, *, table: str = TABLE) -> int:
    """Insert one outbox row into ``table`` on ``conn``, inside the
    connection's current transaction (the caller commits; the row is
    published only if that transaction commits). Returns the row's id.

    ``topic`` must be a valid topic name (the relay fails on a row whose
    topic the log lacks, without skipping it); ``value`` and ``key`` are
    bytes or None; ``headers`` a list of (str, bytes). The relay publishes
    the record with the row's key, value and headers plus header
    ``pylog.outbox.id`` (the row id, ASCII digits). Raises InvalidArgument
    or InvalidTopicName for a bad argument, before writing anything."""
    table = check_table(table)
    topic, value, key, hdrs = check_row(topic, value, key, headers)
    if dialect(conn) == "sqlite":
        cur = conn.execute(f"INSERT INTO {table} (topic, key, value, headers) "
                           "VALUES (?, ?, ?, ?)", (topic, key, value, hdrs))
        return int(cur.lastrowid)
    if key is None:
        row = conn.execute(f"INSERT INTO {table} (topic, key, value, headers) "
                           "VALUES (%s, NULL, %s, %s) RETURNING id",
                           (topic, value, hdrs)).fetchone()
    else:
        # the key's lock before the id is drawn: one key's rows are
        # numbered in the order their transactions commit (O-3)
        row = conn.execute(
            "WITH lock AS (SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))) "
            f"INSERT INTO {table} (topic, key, value, headers) "
            "SELECT %s, %s, %s, %s FROM lock RETURNING id",
            (f"pylog-outbox|{table}|{topic}|{key.hex()}", topic, key, value,
             hdrs)).fetchone()
    return int(row[0])


__all__ = ["TABLE", "install", "add", "dialect", "channel", "encode_headers",
           "decode_headers", "check_table"]
