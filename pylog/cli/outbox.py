"""``pylog outbox``: install an outbox table, run the relay (see
:mod:`pylog.outbox`, :mod:`pylog.outboxrelay`)."""

from __future__ import annotations

import sys
import threading
import time

from .args import CliError, add_command, int_in, seconds
from .runner import EXIT_OK, require_log, stop_on_signals

DB_HELP = ("the database: sqlite:///relative/path.db, sqlite:////absolute/path.db "
           "or postgresql://user@host:port/dbname")


def register(subs) -> None:
    s = add_command(subs, "outbox", "transactional outbox: install the table, run the relay",
                    "The application adds outbox rows in its own database transactions\n"
                    "(pylog.outbox.add); the relay publishes every committed row to the\n"
                    "log exactly once, in order per key, with its position stored in the\n"
                    "same pylog transaction.\n\n"
                    "examples:\n"
                    "  pylog outbox install sqlite:///shop.db\n"
                    "  pylog outbox relay sqlite:///shop.db data/events\n"
                    "  pylog outbox relay postgresql://app@127.0.0.1/shop data/events "
                    "--until-idle")
    acts = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = add_command(acts, "install", "create the outbox table (and its trigger on PostgreSQL)",
                    "examples:\n  pylog outbox install sqlite:///shop.db --table outbox")
    i.add_argument("db", metavar="DB_URL", help=DB_HELP)
    i.add_argument("--table", default="pylog_outbox", help="table name (default pylog_outbox)")
    i.set_defaults(func=cmd_install)
    r = add_command(acts, "relay", "publish the outbox rows to the log, exactly once",
                    "Runs until interrupted (SIGINT, SIGTERM) or, with --until-idle, until\n"
                    "no committed row is pending. A database error (a lost connection, a\n"
                    "server restart) is retried, reconnecting with backoff, for up to\n"
                    "--reconnect-timeout seconds; after that, or for a row the log refuses\n"
                    "(its topic missing), it ends with exit status 2, nothing skipped: run\n"
                    "it under a supervisor that restarts it. A second\n"
                    "relay of the same --name fences this one. Consumers must read with\n"
                    "isolation_level='read_committed'.\n"
                    "Prints a progress line per second of work: rows published, total,\n"
                    "position, rows pending.\n\n"
                    "examples:\n  pylog outbox relay sqlite:///shop.db data/events\n"
                    "  pylog outbox relay postgresql://postgres@127.0.0.1/shop data/events "
                    "--name shop")
    r.add_argument("db", metavar="DB_URL", help=DB_HELP)
    r.add_argument("path", metavar="LOG", help="log directory")
    r.add_argument("--table", default="pylog_outbox", help="table name (default pylog_outbox)")
    r.add_argument("--name", default="outbox",
                   help="relay name: its position and fencing (default outbox)")
    r.add_argument("--batch-size", type=int_in(1, 100_000, "rows per transaction"),
                   default=500, help="rows per transaction (default 500)")
    r.add_argument("--until-idle", action="store_true",
                   help="exit once no committed row is pending")
    r.add_argument("--reconnect-timeout", type=seconds, default=60.0, metavar="SECONDS",
                   help="how long to keep reconnecting to a lost database before exiting "
                        "(default 60; 0: exit at the first database error)")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=cmd_relay)



def _db_errors() -> tuple:
    """The database drivers' error classes (a lost connection, a locked
    file): one line and exit 2, as pylog's own errors."""
    import sqlite3
    errors: list = [sqlite3.Error]
    try:
        import psycopg
        errors.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(errors)


def _with_db_errors(cmd):
    def run(args) -> int:
        try:
            return cmd(args)
        except _db_errors() as exc:
            raise CliError(f"database {args.db}: {str(exc).strip()}") from None
    return run


@_with_db_errors
def cmd_install(args) -> int:
    from ..outbox import install
    from ..outboxsource import connect
    conn = connect(args.db)
    try:
        install(conn, args.table)
    finally:
        conn.close()
    print(f"outbox table {args.table} ready in {args.db}")
    return EXIT_OK


@_with_db_errors
def cmd_relay(args) -> int:
    import pylog

    from ..outboxrelay import Progress
    require_log(args.path)
    last = [0.0, 0]

    def show(p: Progress) -> None:
        last[1] += p.rows
        now = time.monotonic()
        if p.rows and now - last[0] < 1.0:
            return
        last[0] = now
        print(f"relay {args.name}: published {last[1]} rows (total {p.total}), "
              f"position {p.position}, pending {p.pending}", flush=True)
        last[1] = 0

    try:
        return _relay(args, show)
    except pylog.ProducerFencedError:
        # (the API's advice, "close this producer", means nothing to an
        # operator: say who took over, and that this one's exit is right)
        raise CliError(f"relay {args.name}: fenced: another relay named {args.name!r} "
                       "started (or a read_committed reader aborted this one's transaction "
                       "after it stalled past transaction_timeout_ms); this one stops, "
                       "nothing skipped or published twice") from None


def _relay(args, show) -> int:
    import pylog

    from ..outboxrelay import OutboxRelay

    # SIGINT, SIGTERM set stop: the relay ends after its current step
    with stop_on_signals(threading.Event()) as stop:
        log = pylog.open(args.path)
        with log, OutboxRelay(args.db, log, name=args.name, table=args.table,
                              batch_size=args.batch_size) as relay:
            if not args.quiet:
                print(f"relay {args.name}: {relay.source.dialect} table {args.table} -> "
                      f"{args.path}; position {relay.position}, total {relay.total}", flush=True)
            if args.until_idle:
                n = relay.drain()
                if not args.quiet:
                    print(f"relay {args.name}: published {n} rows (total {relay.total}), "
                          f"position {relay.position}, pending {relay.pending()}")
            else:
                def retry(exc: BaseException, delay: float) -> None:
                    print(f"relay {args.name}: database {args.db}: {str(exc).strip()}; "
                          f"reconnecting in {delay:g} s", file=sys.stderr, flush=True)

                relay.run(stop, on_progress=None if args.quiet else show,
                          reconnect_timeout=args.reconnect_timeout, on_error=retry)
    sys.stdout.flush()
    return EXIT_OK
