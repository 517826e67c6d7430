"""pylog.outboxrelay and ``pylog outbox``: every committed outbox row in the
log exactly once, in order per key, with the relay's position in the same
pylog transaction (FORMAT.rst O-1, O-2), on real SQLite files and the
machine's real PostgreSQL (a schema per test)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from outboxdb import PgSchema, add_rows, installed
from reading import read_to_end

import pylog
from pylog import InvalidArgument, TopicNotFound, TopicPartition, outbox
from pylog.outboxrelay import OutboxRelay, positions_topic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox_db(request, tmp_path):
    yield from installed(request.param, tmp_path)


@pytest.fixture
def log(tmp_path):
    with pylog.open(str(tmp_path / "log")) as lg:
        lg.create_topic("ev", partitions=3)
        yield lg


def read_all(lg, topic="ev"):
    """Every record of ``topic`` a read_committed consumer sees, in
    partition then offset order."""
    return read_to_end(lg, topic)


def check_exactly_once(records, rows):
    """``records`` hold each of ``rows`` (key, value) exactly once, and one
    key's values in the order they were added."""
    got = [(r.key, r.value) for r in records]
    assert sorted(got) == sorted(rows), "rows lost or published twice"
    for key in {k for k, _ in rows}:
        assert [v for k, v in got if k == key] == [v for k, v in rows if k == key], key


def rows_of(n, keys=7, start=0):
    return [(b"k%d" % (i % keys), b"%d" % i) for i in range(start, start + n)]


def add(db, rows, per_txn=5):
    add_rows(db, [("ev", v, k) for k, v in rows], per_txn)


def test_relay_publishes_every_row_once_in_order_per_key(outbox_db, log):
    db = outbox_db
    rows = rows_of(120)
    add(db, rows, per_txn=7)
    c = db.connect()                                 # a rolled-back row: never published
    outbox.add(c, "ev", b"rolled back", key=b"k0", table=db.table)
    c.rollback()
    c.close()
    with OutboxRelay(db.url, log, table=db.table, batch_size=50) as relay:
        assert relay.drain() == 120
        assert relay.drain() == 0 and relay.pending() == 0 and relay.total == 120
    records = read_all(log)
    check_exactly_once(records, rows)
    ids = [int(dict(r.headers)["pylog.outbox.id"]) for r in records]
    assert len(set(ids)) == 120
    # O-1: one position record per transaction (120 rows / 50: three), the
    # last one says everything is published
    pos = read_all(log, positions_topic("outbox"))
    assert [r.key for r in pos] == [b"outbox"] * 3
    last = json.loads(pos[-1].value)
    assert last["v"] == 1 and last["total"] == 120 and last["table"] == db.table
    # published rows are gone from the table
    c = db.connect()
    assert c.execute(f"SELECT COUNT(*) FROM {db.table}").fetchone()[0] == 0
    c.close()
    # a new relay resumes from the stored position: nothing again, then the new rows
    more = rows_of(30, start=120)
    add(db, more)
    with OutboxRelay(db.url, log, table=db.table) as relay:
        assert relay.total == 120
        assert relay.drain() == 30 and relay.total == 150
    check_exactly_once(read_all(log), rows + more)


def test_rows_kept_with_delete_published_false_are_not_published_again(outbox_db, log):
    db = outbox_db
    add(db, rows_of(20))
    with OutboxRelay(db.url, log, table=db.table, delete_published=False) as relay:
        assert relay.drain() == 20
    with OutboxRelay(db.url, log, table=db.table, delete_published=False) as relay:
        assert relay.drain() == 0 and relay.pending() == 0
    c = db.connect()
    assert c.execute(f"SELECT COUNT(*) FROM {db.table}").fetchone()[0] == 20
    c.close()
    check_exactly_once(read_all(log), rows_of(20))


def test_a_second_relay_fences_the_first(outbox_db, log):
    """O-2: the newer instance's producer fences the older; the older's next
    batch raises and publishes nothing."""
    db = outbox_db
    first = OutboxRelay(db.url, log, table=db.table)
    add(db, rows_of(10))
    assert first.step() == 10
    add(db, rows_of(10, start=10))
    second = OutboxRelay(db.url, log, table=db.table)
    try:
        with pytest.raises(pylog.ProducerFencedError):
            first.step()
        assert second.drain() == 10
    finally:
        for r in (first, second):
            try:
                r.close()
            except pylog.ProducerFencedError:
                pass
    check_exactly_once(read_all(log), rows_of(20))


def test_a_relay_refuses_the_position_of_another_table(tmp_path, log):
    """O-1: the stored position names its table; another table under the
    same relay name would be published from a foreign position."""
    gen = installed("sqlite", tmp_path)
    db = next(gen)
    add(db, rows_of(3))
    with OutboxRelay(db.url, log) as relay:
        relay.drain()
    c = db.connect()
    outbox.install(c, "other_outbox")
    c.close()
    with pytest.raises(InvalidArgument, match="give this relay another name"):
        OutboxRelay(db.url, log, table="other_outbox")
    with OutboxRelay(db.url, log, table="other_outbox", name="other") as relay:
        assert relay.drain() == 0


def test_a_missing_topic_stops_the_relay_and_skips_nothing(outbox_db, log):
    db = outbox_db
    add(db, rows_of(3))
    add_rows(db, [("not-there", b"x", b"k")])
    add(db, rows_of(3, start=3))
    with OutboxRelay(db.url, log, table=db.table, batch_size=100) as relay:
        with pytest.raises(TopicNotFound):
            relay.drain()
        assert relay.total == 0
    assert read_all(log) == []           # the batch's transaction was aborted
    log.create_topic("not-there")
    with OutboxRelay(db.url, log, table=db.table) as relay:
        assert relay.drain() == 7
    check_exactly_once(read_all(log), rows_of(6))
    assert [r.value for r in read_all(log, "not-there")] == [b"x"]


def test_pg_late_commit_through_the_relay(log):
    """The polling-outbox gap end to end (tests/test_outbox.py shows the
    naive relay losing the row): row 1 commits after row 2 was published;
    both reach the log, once."""
    db = PgSchema()
    try:
        c = db.connect()
        outbox.install(c, db.table)
        c.close()
        t1, t2 = db.connect(), db.connect()
        outbox.add(t1, "ev", b"late", key=b"a", table=db.table)
        outbox.add(t2, "ev", b"early", key=b"b", table=db.table)
        t2.commit()
        with OutboxRelay(db.url, log, table=db.table) as relay:
            assert relay.drain() == 1
            t1.commit()
            assert relay.drain() == 1
        t1.close()
        t2.close()
        check_exactly_once(read_all(log), [(b"a", b"late"), (b"b", b"early")])
    finally:
        db.drop()


def test_run_wakes_on_new_rows_and_stops(outbox_db, log):
    db = outbox_db
    stop = threading.Event()
    seen = []
    relay = OutboxRelay(db.url, log, table=db.table)
    th = threading.Thread(target=relay.run, args=(stop,),
                          kwargs={"on_progress": seen.append, "max_wait": 30.0})
    th.start()
    try:
        for i in range(3):
            add(db, rows_of(5, start=5 * i))
            deadline = time.monotonic() + 20
            while relay.total < 5 * (i + 1) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert relay.total == 5 * (i + 1), "the relay slept through new rows"
    finally:
        stop.set()
        th.join(10)
        relay.close()
    assert not th.is_alive()
    assert sum(p.rows for p in seen) == 15 and seen[-1].total == 15
    check_exactly_once(read_all(log), rows_of(15))


def cli(*args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "pylog", *args], capture_output=True,
                          text=True, env=env, timeout=60, **kw)


def test_cli_install_and_relay_until_idle(tmp_path, outbox_db, log):
    db = outbox_db
    add(db, rows_of(40))
    path = str(tmp_path / "log")
    r = cli("outbox", "relay", db.url, path, "--table", db.table, "--until-idle",
            "--batch-size", "15")
    assert r.returncode == 0, r.stderr
    assert "published 40 rows (total 40)" in r.stdout and "pending 0" in r.stdout
    check_exactly_once(read_all(log), rows_of(40))
    # install on a fresh database; errors are one line, exit 2
    fresh = "sqlite:///" + str(tmp_path / "fresh.db")
    open(str(tmp_path / "fresh.db"), "wb").close()
    r = cli("outbox", "install", fresh, "--table", "shop_outbox")
    assert r.returncode == 0 and "shop_outbox ready" in r.stdout, r.stderr
    r = cli("outbox", "relay", fresh, path, "--until-idle")
    assert r.returncode == 2 and "pylog.outbox.install" in r.stderr
    r = cli("outbox", "relay", "mysql://x", path)
    assert r.returncode == 2 and r.stderr.startswith("pylog: error:")


def test_a_position_of_another_database_is_refused(outbox_db, log, tmp_path):
    """A relay name's position pointed at a fresh database (a restored
    file, another server) would skip its rows: refused."""
    db = outbox_db
    add(db, rows_of(5))
    with OutboxRelay(db.url, log, table=db.table) as relay:
        relay.drain()
    if db.prefix:                            # PostgreSQL: a stored snapshot from the future
        from pylog.outboxsource import Position
        with OutboxRelay(db.url, log, table=db.table) as relay:
            with pytest.raises(InvalidArgument, match="another database"):
                relay.source.check(Position(0, "999999999:999999999:", None))
        return
    other = installed("sqlite", tmp_path / "other")
    (tmp_path / "other").mkdir()
    fresh = next(other)
    try:
        with pytest.raises(InvalidArgument, match="another database"):
            OutboxRelay(fresh.url, log, table=fresh.table)
    finally:
        other.close()


def test_position_records_below_the_newest_are_trimmed(outbox_db, log, monkeypatch):
    """O-1: every TRIM_EVERY commits the records below the newest position
    go; the newest stays and a restarted relay resumes from it."""
    import pylog.outboxrelay as relay_mod
    monkeypatch.setattr(relay_mod, "TRIM_EVERY", 3)
    db = outbox_db
    add(db, rows_of(20))
    with OutboxRelay(db.url, log, table=db.table, batch_size=2) as relay:
        assert relay.drain() == 20
    tp = TopicPartition(positions_topic("outbox"), 0)
    c = log.consumer(enable_auto_commit=False)
    assert c.beginning_offsets([tp])[tp] > 0
    c.close()
    add(db, rows_of(4, start=20))
    with OutboxRelay(db.url, log, table=db.table) as relay:
        assert relay.total == 20 and relay.drain() == 4
    check_exactly_once(read_all(log), rows_of(24))


def test_cli_relay_runs_until_sigterm_and_prints_progress(tmp_path, outbox_db, log):
    import childproc
    db = outbox_db
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = childproc.start("import sys; from pylog.cli import main; sys.exit(main())",
                           "outbox", "relay", db.url, str(tmp_path / "log"),
                           "--table", db.table, env=env)
    try:
        first = childproc.readline(proc, timeout=60)
        assert b"position id 0, total 0" in first
        assert b"published 0 rows (total 0)" in childproc.readline(proc, timeout=60)  # idle
        add(db, rows_of(12))                  # wakes it: NOTIFY / data_version
        line = childproc.readline(proc, timeout=60)
        while b"pending 0" not in line or b"total 12" not in line:
            line = childproc.readline(proc, timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, childproc.stderr_tail(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check_exactly_once(read_all(log), rows_of(12))


def test_cli_relay_exits_on_a_signal_that_comes_inside_its_stop_wait(tmp_path, log):
    """A SIGTERM handled while the relay's main thread holds the lock of
    its stop Event (for a moment in every stop.wait() of the idle loop)
    still ends it: the handler must not call stop.set() itself, which
    would wait for that lock forever (seen once as a hang under load)."""
    import childproc
    gen = installed("sqlite", tmp_path)
    db = next(gen)
    script = (
        "import signal, sys\n"
        "from pylog import outboxsource\n"
        "real = outboxsource.SQLiteSource.wait\n"
        "def wait(self, timeout, stop):\n"
        "    with stop._cond:     # where Event.wait holds it, the signal comes\n"
        "        signal.raise_signal(signal.SIGTERM)\n"
        "    return real(self, timeout, stop)\n"
        "outboxsource.SQLiteSource.wait = wait\n"
        "from pylog.cli import main\n"
        "sys.exit(main())\n")
    proc = childproc.start(script, "outbox", "relay", db.url, str(tmp_path / "log"),
                           "--table", db.table, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert b"position id 0, total 0" in childproc.readline(proc, timeout=60)
        assert proc.wait(30) == 0, childproc.stderr_tail(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        gen.close()


def test_cli_relay_exits_with_one_line_when_the_database_goes(tmp_path, log):
    """With --reconnect-timeout 0 a lost PostgreSQL connection ends the
    relay with exit status 2 and one line (a supervisor restarts it;
    nothing is skipped)."""
    import childproc
    with pg_outbox() as (db, url, terminate):
        proc = cli_relay(url, tmp_path, db.table, "--reconnect-timeout", "0")
        try:
            assert terminate() == [(True,)]
            assert proc.wait(60) == 2
            err = childproc.stderr_tail(proc)
            assert err.startswith("pylog: error: database ") and "Traceback" not in err, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_keyless_rows_and_headers_are_published_as_added(outbox_db, log):
    db = outbox_db
    c = db.connect()
    for i in range(5):
        outbox.add(c, "ev", b"v%d" % i, headers=[("trace", b"t%d" % i), ("x", b"")],
                   table=db.table)
    outbox.add(c, "ev", None, key=b"tombstone", table=db.table)     # a null value
    c.commit()
    c.close()
    with OutboxRelay(db.url, log, table=db.table) as relay:
        assert relay.drain() == 6
    got = read_all(log)
    by_value = {r.value: r for r in got}
    assert sorted(v for v in by_value if v is not None) == [b"v%d" % i for i in range(5)]
    for i in range(5):
        r = by_value[b"v%d" % i]
        assert r.key is None
        assert list(r.headers[:2]) == [("trace", b"t%d" % i), ("x", b"")]
        assert r.headers[2][0] == "pylog.outbox.id"
    assert by_value[None].key == b"tombstone"


@contextlib.contextmanager
def pg_outbox():
    """A PostgreSQL schema with an outbox table; yields it, a URL whose
    connections carry a unique application_name, and a function that
    terminates those connections (what a server restart does to them)."""
    import uuid
    db = PgSchema()
    try:
        c = db.connect()
        outbox.install(c, db.table)
        c.close()
        app = "relay-" + uuid.uuid4().hex[:8]

        def terminate():
            admin = db.connect(autocommit=True)
            try:
                return admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE application_name = %s", (app,)).fetchall()
            finally:
                admin.close()

        yield db, f"{db.url}?application_name={app}", terminate
    finally:
        db.drop()


def cli_relay(url, tmp_path, table, *extra):
    """``pylog outbox relay`` in a child, past its start line and its first
    (idle) progress line."""
    import childproc
    proc = childproc.start("import sys; from pylog.cli import main; sys.exit(main())",
                           "outbox", "relay", url, str(tmp_path / "log"), "--table", table,
                           *extra, env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        childproc.readline(proc, timeout=60)
        assert b"published 0 rows" in childproc.readline(proc, timeout=60)   # idle
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_run_reconnects_after_the_connection_is_killed(log):
    """A relay whose PostgreSQL connection is terminated twice (once while
    idle, once with rows waiting) reconnects and publishes every row once;
    on_error hears of each outage with its backoff."""
    with pg_outbox() as (db, url, terminate):
        relay = OutboxRelay(url, log, table=db.table)
        stop = threading.Event()
        errors = []
        th = threading.Thread(target=relay.run, args=(stop,),
                              kwargs={"max_wait": 30.0, "reconnect_timeout": 60.0,
                                      "on_error": lambda e, d: errors.append((e, d))})
        th.start()
        try:
            for i in range(3):
                if i:
                    assert terminate() == [(True,)]
                    if i == 2:
                        add(db, rows_of(5, start=100))     # waiting through the outage
                add(db, rows_of(5, start=5 * i))
                want = 5 * (i + 1) + (5 if i == 2 else 0)
                deadline = time.monotonic() + 30
                while relay.total < want and th.is_alive() and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert relay.total == want, (relay.total, errors)
        finally:
            stop.set()
            th.join(30)
            relay.close()
        assert not th.is_alive()
        assert len(errors) >= 2 and all(d >= 0.1 for _, d in errors), errors
        check_exactly_once(read_all(log),       # (in the order added)
                           rows_of(10) + rows_of(5, start=100) + rows_of(5, start=10))


def test_run_raises_for_a_connection_it_cannot_make_again(log):
    """A relay made from a connection object cannot reconnect: the driver's
    error comes out of run() at once, and nothing was published twice."""
    import psycopg
    with pg_outbox() as (db, url, terminate):
        relay = OutboxRelay(psycopg.connect(url, autocommit=True), log, table=db.table)
        add(db, rows_of(5))
        assert relay.drain() == 5
        assert terminate() == [(True,)]
        stop = threading.Event()
        with pytest.raises(psycopg.Error):
            relay.run(stop, reconnect_timeout=60.0)
        relay.close()
        with OutboxRelay(db.url, log, table=db.table) as again, \
                pytest.raises(InvalidArgument, match="reconnect_timeout"):
            again.run(stop, reconnect_timeout=-1)
        check_exactly_once(read_all(log), rows_of(5))


def test_cli_relay_reconnects_and_says_so(tmp_path, log):
    """The CLI relay rides out a terminated connection: one stderr line
    naming the error and the backoff, then the rows added meanwhile."""
    import childproc
    with pg_outbox() as (db, url, terminate):
        proc = cli_relay(url, tmp_path, db.table)
        try:
            assert terminate() == [(True,)]
            add(db, rows_of(5))
            line = b""
            while b"published 5 rows" not in line:
                line = childproc.readline(proc, timeout=60)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
            err = childproc.stderr_tail(proc)
            assert "reconnecting in 0.1 s" in err and "Traceback" not in err, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        check_exactly_once(read_all(log), rows_of(5))


def test_rows_that_fit_alone_are_published_in_batches_that_fit(outbox_db, log):
    """Found by a user trial: 50 rows of 100 kB of one key (each far below
    the topic's max_message_bytes, 1 MiB) stopped the relay for good with
    RecordTooLarge "batch of 50 record(s) encodes to 5002052 bytes": it
    sent a batch's rows of one partition as one record batch. The default
    batch_size (500) hits it with rows of 2.1 kB. Rows that fit alone are
    published, split into record batches that fit, in one transaction."""
    db = outbox_db
    rows = [(b"same", b"%03d" % i + b"v" * 100_000) for i in range(50)]
    rows += [(b"k%d" % (i % 3), b"%03d" % i + b"w" * 3_000) for i in range(50, 650)]
    add(db, rows, per_txn=25)
    with OutboxRelay(db.url, log, table=db.table, batch_size=700) as relay:
        assert relay.drain() == len(rows)
    check_exactly_once(read_all(log), rows)


def test_a_row_over_max_message_bytes_stops_the_relay_and_skips_nothing(outbox_db, log):
    """A row that cannot fit alone is still refused (RecordTooLarge), the
    rows before it published, none skipped."""
    db = outbox_db
    rows = [(b"a", b"small")]
    add(db, rows + [(b"a", b"x" * (2 << 20))], per_txn=1)
    with OutboxRelay(db.url, log, table=db.table, batch_size=1) as relay:
        assert relay.step() == 1
        with pytest.raises(pylog.RecordTooLarge):
            relay.step()
        assert relay.pending() == 1
    check_exactly_once(read_all(log), rows)


def test_cli_relay_fenced_by_another_says_so(tmp_path, log):
    """Found by a user trial: a CLI relay fenced by a second one of its
    name exited 2 with "pylog: error: transactional id 'pylog-outbox.outbox':
    this producer (id 0, epoch 0) was fenced ...; close this producer",
    advice meant for the API that a relay's operator cannot follow. It
    says which relay took over and that this one stops, nothing skipped."""
    import childproc
    gen = installed("sqlite", tmp_path)
    db = next(gen)
    try:
        env = dict(os.environ, PYTHONPATH=ROOT)
        cmd = ("import sys; from pylog.cli import main; sys.exit(main())",
               "outbox", "relay", db.url, str(tmp_path / "log"), "--table", db.table)
        first = childproc.start(*cmd, env=env)
        try:
            assert b"position id 0" in childproc.readline(first, timeout=60)
            second = subprocess.run([sys.executable, "-c", *cmd, "--until-idle"], env=env,
                                    capture_output=True, timeout=60)
            assert second.returncode == 0, second.stderr.decode()
            add(db, rows_of(3))               # the first one's next step meets the fence
            assert first.wait(60) == 2
            err = childproc.stderr_tail(first)
            assert "another relay named 'outbox' started" in err, err
            assert "close this producer" not in err, err
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        subprocess.run([sys.executable, "-c", *cmd, "--until-idle"], env=env, check=True,
                       capture_output=True, timeout=60)
        check_exactly_once(read_all(log), rows_of(3))
    finally:
        with contextlib.suppress(StopIteration):
            next(gen)
