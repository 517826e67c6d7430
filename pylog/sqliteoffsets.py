"""Exactly-once effects into SQLite: a consumer's offsets stored in the
application's own SQLite database, in the same transaction as the effects
of the records they point past (Kafka's "storing offsets outside Kafka")::

    offsets = SQLiteOffsets(conn, "inventory")       # creates its table
    consumer = log.consumer(group_id="inventory", enable_auto_commit=False,
                            auto_offset_reset="earliest")
    offsets.subscribe(consumer, "order-events")      # or offsets.assign(...)
    offsets.run(consumer, apply_stock_change, stop=stop)

``handler(record, cursor)`` writes through ``cursor`` (a cursor of
``conn``); the helper opens the transaction (``BEGIN IMMEDIATE``), calls
the handler for the records of one poll (``commit_every="batch"``, the
default) or of one record (``"record"``), writes the next offset of each
partition into its table ``pylog_offsets`` (group, topic, partition, next
offset) and commits. Effects and offsets commit together or not at all, so
a crash anywhere (SIGKILL, power loss) leaves the database either before
the transaction or after it, and the consumer resumes at the offset stored
with the last effects: every record's effect is applied exactly once.

Where reading starts: when partitions are assigned (``assign()``, or a
group's rebalance through the listener ``subscribe()`` installs) the
helper seeks the consumer to the offsets stored in SQLite; pylog's
committed offsets are not used for a partition that has a row. A partition
without a row starts where the consumer would (its group's committed
offset, else ``auto_offset_reset``): open the consumer with
``enable_auto_commit=False`` so pylog's commits never run ahead of the
database. Inside each transaction a record below the stored offset is
skipped, not applied: two consumers briefly owning one partition during a
rebalance, or a consumer positioned by hand, cannot apply a record twice
(the write lock taken by ``BEGIN IMMEDIATE`` orders them).

What stays at least once: anything the handler does outside ``conn`` (an
e-mail, an HTTP call) happens again when its transaction did not commit;
use :class:`pylog.dedup.ProcessedIds` for those. A record appended twice
by a producer (a retried send) is two records at two offsets: both are
applied; deduplicate by an event id in the payload if producers retry.
The exactly-once claim assumes records do not vanish from the log after
they were consumed (``sync="always"``, pylog's default, or no power loss),
and that SQLite is not run with ``PRAGMA synchronous=OFF``.

Thread safety: one SQLiteOffsets per connection and consumer, used from
the consumer's thread (sqlite3 connections and consumers are single-thread
objects). Durability: as the connection's SQLite settings (journal mode,
``synchronous``); atomicity of effects with offsets holds in every mode
but ``synchronous=OFF``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument, LogClosed
from .rebalance import ConsumerRebalanceListener
from .records import Record, TopicPartition

if TYPE_CHECKING:
    from .consumer import Consumer

Handler = Callable[[Record, sqlite3.Cursor], object]
TABLE = "pylog_offsets"


def _check_table_name(table: object) -> str:
    # the name is spliced into SQL text: an identifier, never a value
    if not isinstance(table, str) or not table.isidentifier() or not table.isascii():
        raise InvalidArgument(f"table={table!r}; expected an ASCII identifier")
    return table


def install(conn: sqlite3.Connection, table: str = TABLE) -> None:
    """Create the offsets table in ``conn`` when missing (and commit)."""
    table = _check_table_name(table)
    _check_idle(conn)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ("
                 "group_id TEXT NOT NULL, topic TEXT NOT NULL, "
                 "partition INTEGER NOT NULL, next_offset INTEGER NOT NULL, "
                 "PRIMARY KEY (group_id, topic, partition))")
    conn.commit()


def _check_idle(conn: sqlite3.Connection) -> None:
    if not isinstance(conn, sqlite3.Connection):
        raise InvalidArgument(f"conn={conn!r}; expected a sqlite3.Connection")
    # (Python 3.12's autocommit=False keeps a transaction open at all times;
    # nothing of the caller's can be pending in it right after a commit)
    if conn.in_transaction and getattr(conn, "autocommit", None) is not False:
        raise InvalidArgument(
            "the sqlite3 connection has an open transaction: commit or roll it "
            "back first (the helper's commit would take its writes along)")


class SQLiteOffsets:
    """Offsets of consumer group ``group_id`` kept in SQLite (see the module
    doc); ``table`` names the table (default ``pylog_offsets``), created
    when missing. ``group_id`` is a name of the rows: it need not be the
    consumer's group_id, but the same name must be used on every restart."""

    def __init__(self, conn: sqlite3.Connection, group_id: str, *, table: str = TABLE) -> None:
        if not isinstance(group_id, str) or not group_id:
            raise InvalidArgument(f"group_id={group_id!r}; expected a non-empty str")
        install(conn, table)
        self.conn = conn
        self.group_id = group_id
        self.table = table

    # -- reading the stored offsets ----------------------------------------------------
    def stored(self) -> dict[TopicPartition, int]:
        """{tp: next offset to read} of every partition with a stored row."""
        rows = self.conn.execute(
            f"SELECT topic, partition, next_offset FROM {self.table} WHERE group_id = ?",
            (self.group_id,)).fetchall()
        return {TopicPartition(t, p): o for t, p, o in rows}

    def _stored_of(self, cur: sqlite3.Cursor, tps: Iterable[TopicPartition]
                   ) -> dict[TopicPartition, int]:
        out = {}
        for tp in tps:
            row = cur.execute(
                f"SELECT next_offset FROM {self.table} WHERE group_id = ? AND topic = ? "
                "AND partition = ?", (self.group_id, tp.topic, tp.partition)).fetchone()
            if row is not None:
                out[tp] = row[0]
        return out

    # -- positioning the consumer ------------------------------------------------------
    def seek(self, consumer: Consumer, partitions: Iterable[TopicPartition] | None = None
             ) -> None:
        """Seek ``consumer`` to the stored offsets of ``partitions`` (default:
        its whole assignment); partitions without a row are left alone."""
        tps = consumer.assignment() if partitions is None else set(partitions)
        stored = self.stored()
        for tp in sorted(tps):
            if tp in stored:
                consumer.seek(tp, stored[tp])

    def assign(self, consumer: Consumer, partitions: Iterable[TopicPartition]) -> None:
        """``consumer.assign(partitions)``, then seek them to the stored offsets."""
        tps = list(partitions)
        consumer.assign(tps)
        self.seek(consumer, tps)

    def subscribe(self, consumer: Consumer, topics: str | Iterable[str] = (),
                  pattern: str | None = None, listener: object | None = None) -> None:
        """``consumer.subscribe(...)`` with a rebalance listener that seeks
        every newly assigned partition to its stored offset (after calling
        ``listener``'s own methods, when given)."""
        if listener is not None and not any(
                callable(getattr(listener, m, None)) for m in
                ("on_partitions_revoked", "on_partitions_assigned", "on_partitions_lost")):
            raise InvalidArgument(f"listener={listener!r} has no on_partitions_* method "
                                  "(a ConsumerRebalanceListener)")
        consumer.subscribe(topics, pattern=pattern,
                           listener=_SeekOnAssign(self, consumer, listener))

    # -- applying records ----------------------------------------------------------------
    def apply(self, records: Iterable[Record], handler: Handler) -> int:
        """Apply ``records`` in one transaction: ``handler(record, cursor)``
        for each record at or past its partition's stored offset, then the
        new offsets, then COMMIT. Returns how many records the handler got.
        A handler that raises rolls everything back (nothing applied, no
        offset moved) and the exception propagates."""
        records = list(records)
        if not records:
            return 0
        conn = self.conn
        _check_idle(conn)
        if not conn.in_transaction:
            # the write lock first: a second consumer's transaction waits,
            # then sees these offsets (no read-then-upgrade race)
            conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.cursor()
            tps = {TopicPartition(r.topic, r.partition) for r in records}
            nxt = self._stored_of(cur, tps)
            applied = 0
            for r in records:
                tp = TopicPartition(r.topic, r.partition)
                if r.offset < nxt.get(tp, -1):
                    continue            # applied before (a rebalance overlap)
                handler(r, cur)
                if not conn.in_transaction:
                    # its writes are committed without their offsets: say so
                    raise InvalidArgument(
                        f"the handler ended the transaction at {r.topic}-{r.partition} "
                        f"offset {r.offset} (commit or rollback): write through the "
                        "cursor only; the helper commits")
                nxt[tp] = r.offset + 1
                applied += 1
            cur.executemany(
                f"INSERT INTO {self.table} (group_id, topic, partition, next_offset) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (group_id, topic, partition) "
                "DO UPDATE SET next_offset = excluded.next_offset",
                [(self.group_id, tp.topic, tp.partition, o) for tp, o in nxt.items()
                 if tp in tps])
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return applied

    def process(self, consumer: Consumer, handler: Handler, *, timeout: float = 0.5,
                max_records: int | None = None, commit_every: str = "batch") -> int:
        """One poll of ``consumer`` (waiting up to ``timeout`` seconds), its
        records applied as :meth:`apply` says: one transaction for the poll
        (``commit_every="batch"``) or one per record (``"record"``). Returns
        how many records the handler got. When the handler raises, the
        consumer goes back to the first record not committed (it and the
        rest of the poll are delivered again) and the exception
        propagates."""
        if commit_every not in ("batch", "record"):
            raise InvalidArgument(f"commit_every={commit_every!r}; expected 'batch' or 'record'")
        records = consumer.poll(timeout, max_records)
        try:
            if commit_every == "batch":
                return self.apply(records, handler)
            return sum(self.apply([r], handler) for r in records)
        except BaseException:
            self._rewind(consumer, records)
            raise

    def _rewind(self, consumer: Consumer, records: list[Record]) -> None:
        """Back to the first record of ``records`` not committed: the stored
        offset (records before it committed one by one), else the first
        polled record of each partition."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            first.setdefault(TopicPartition(r.topic, r.partition), r.offset)
        stored = self.stored()
        owned = consumer.assignment()
        for tp, off in first.items():
            if tp in owned:
                consumer.seek(tp, max(off, stored.get(tp, off)))

    def run(self, consumer: Consumer, handler: Handler, *, stop: threading.Event | None = None,
            poll_timeout: float = 0.5, commit_every: str = "batch") -> None:
        """:meth:`process` in a loop until ``stop`` is set or the consumer is
        closed (from another thread); a handler's exception ends it."""
        while stop is None or not stop.is_set():
            try:
                self.process(consumer, handler, timeout=poll_timeout,
                             commit_every=commit_every)
            except LogClosed:
                return


class _SeekOnAssign(ConsumerRebalanceListener):
    """The listener :meth:`SQLiteOffsets.subscribe` installs: the user's
    listener first, then the seek to the stored offsets (so the stored
    offset wins over a seek of the user's)."""

    def __init__(self, offsets: SQLiteOffsets, consumer: Consumer, inner: object | None):
        self._offsets = offsets
        self._consumer = consumer
        self._inner = inner

    def _inner_call(self, method: str, tps: set[TopicPartition]) -> Any:
        m = getattr(self._inner, method, None)
        if callable(m):
            return m(tps)
        if method == "on_partitions_lost":
            self._inner_call("on_partitions_revoked", tps)
        return None

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # nothing of the helper is pending here: every poll's records are
        # committed (or rolled back) before the next poll
        self._inner_call("on_partitions_revoked", revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._inner_call("on_partitions_assigned", assigned)
        self._offsets.seek(self._consumer, assigned)

    def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._inner_call("on_partitions_lost", lost)
