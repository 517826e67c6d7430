"""Databases for the outbox tests: a fresh SQLite file, or a fresh schema
in the machine's PostgreSQL (127.0.0.1:5432, database ``test``, trust auth)
dropped afterwards. A missing server skips with "needs service:"."""

import os
import sqlite3
import uuid

import pytest
from services import require, require_module

PG_USERS = ("postgres", "root")


def pg_url():
    """The URL of the test database (PYLOG_TEST_PG_URL, else the first of
    users postgres / root that connects); skips without a server."""
    require("postgresql")
    psycopg = require_module("psycopg", "postgresql")
    if os.environ.get("PYLOG_TEST_PG_URL"):
        return os.environ["PYLOG_TEST_PG_URL"]
    errors = []
    for user in PG_USERS:
        url = f"postgresql://{user}@127.0.0.1:5432/test"
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return url
        except psycopg.Error as exc:
            errors.append(str(exc).strip())
    pytest.fail(f"PostgreSQL on 127.0.0.1:5432 refuses users {PG_USERS}: {errors}")


class PgSchema:
    """A schema of its own: ``table`` is ``<schema>.pylog_outbox``."""

    def __init__(self):
        import psycopg
        self.url = pg_url()
        self.schema = "ob_" + uuid.uuid4().hex[:12]
        self.prefix = self.schema + "."        # for the test's own tables
        self.table = f"{self.schema}.pylog_outbox"
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {self.schema}")

    def connect(self, autocommit=False):
        import psycopg
        return psycopg.connect(self.url, autocommit=autocommit)

    def drop(self):
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


class SqliteDb:
    def __init__(self, directory):
        self.path = os.path.join(str(directory), "app.db")
        self.url = "sqlite:///" + self.path          # absolute: four slashes
        self.table = "pylog_outbox"
        self.prefix = ""
        c = sqlite3.connect(self.path)
        c.execute("PRAGMA journal_mode=WAL")
        c.close()

    def connect(self, autocommit=False):
        return sqlite3.connect(self.path, isolation_level=None if autocommit else "",
                               timeout=30)

    def drop(self):
        pass


def installed(kind, tmp_path):
    """(generator for a fixture) a database of ``kind``, the outbox table
    installed; dropped afterwards."""
    from pylog import outbox
    db = SqliteDb(tmp_path) if kind == "sqlite" else PgSchema()
    try:
        c = db.connect()
        outbox.install(c, db.table)
        c.close()
        yield db
    finally:
        db.drop()


def add_rows(db, rows, per_txn=1):
    """Add ``rows`` (topic, value, key) in transactions of ``per_txn``."""
    from pylog import outbox
    c = db.connect()
    try:
        for i in range(0, len(rows), per_txn):
            for topic, value, key in rows[i:i + per_txn]:
                outbox.add(c, topic, value, key=key, table=db.table)
            c.commit()
    finally:
        c.close()
