"""Exactly-once effects into SQLite (pylog.sqliteoffsets) and the
idempotent-consumer store (pylog.dedup): unit behaviour, then crash loops
of real child processes killed with SIGKILL (tests/sqlite_eos_child.py).
The long loop's budget: PYLOG_EOS_BUDGET_S (default 600); its kill target:
PYLOG_EOS_KILLS (default 100). Seeds are printed; PYLOG_SEED replays one."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter

import pytest
from childproc import expect, stderr_tail

import pylog
from pylog.dedup import ProcessedIds
from pylog.sqliteoffsets import SQLiteOffsets

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sqlite_eos_child.py")
TP0 = pylog.TopicPartition("t", 0)


def _db(path):
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE IF NOT EXISTS seen (topic TEXT, partition INT, off INT)")
    conn.commit()
    return conn


def _record_offset(record, cur):
    cur.execute("INSERT INTO seen VALUES (?, ?, ?)",
                (record.topic, record.partition, record.offset))


def _offsets_in(conn):
    return [r[0] for r in conn.execute("SELECT off FROM seen ORDER BY rowid")]


@pytest.fixture
def log(tmp_path):
    with pylog.open(tmp_path / "log") as lg:
        lg.create_topic("t", partitions=1)
        lg.producer().send_batch("t", [b"v%d" % i for i in range(20)])
        yield lg


def test_assign_resumes_from_sqlite_not_pylog(log, tmp_path):
    conn = _db(tmp_path / "app.db")
    offsets = SQLiteOffsets(conn, "g")
    c = log.consumer(group_id="g", enable_auto_commit=False, max_poll_records=7)
    offsets.assign(c, [TP0])              # no row: auto_offset_reset (latest)
    assert c.position(TP0) == 20
    c.seek(TP0, 0)
    assert offsets.process(c, _record_offset, timeout=1) == 7
    assert offsets.stored() == {TP0: 7}
    c.commit({TP0: 15})                   # pylog's committed offset is ignored
    c.close()
    c = log.consumer(group_id="g", enable_auto_commit=False)
    offsets.assign(c, [TP0])
    assert c.position(TP0) == 7
    while offsets.process(c, _record_offset, timeout=0.2, commit_every="record"):
        pass
    assert _offsets_in(conn) == list(range(20))
    assert offsets.stored() == {TP0: 20}
    c.close()


def test_group_assignment_seeks_to_stored(log, tmp_path):
    conn = _db(tmp_path / "app.db")
    offsets = SQLiteOffsets(conn, "g")
    conn.execute("INSERT INTO pylog_offsets VALUES ('g', 't', 0, 12)")
    conn.commit()
    calls = []

    class Mine(pylog.ConsumerRebalanceListener):
        def on_partitions_assigned(self, assigned):
            calls.append(sorted(assigned))

    c = log.consumer(group_id="g", enable_auto_commit=False, auto_offset_reset="earliest")
    offsets.subscribe(c, "t", listener=Mine())
    assert c.assignment() == {TP0}          # joins: the listener seeks
    assert calls == [[TP0]] and c.position(TP0) == 12
    offsets.process(c, _record_offset, timeout=1)
    assert _offsets_in(conn) == list(range(12, 20))
    c.close()


def test_handler_error_rolls_back_and_redelivers(log, tmp_path):
    conn = _db(tmp_path / "app.db")
    offsets = SQLiteOffsets(conn, "g")
    c = log.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
    offsets.assign(c, [TP0])

    def fails_at_5(record, cur):
        _record_offset(record, cur)
        if record.offset == 5:
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        offsets.process(c, fails_at_5, timeout=1)
    assert _offsets_in(conn) == [] and offsets.stored() == {}
    assert c.position(TP0) == 0           # (no row: where it was polled from)
    offsets.process(c, _record_offset, timeout=1, max_records=3)
    with pytest.raises(RuntimeError):
        offsets.process(c, fails_at_5, timeout=1, commit_every="record")
    assert _offsets_in(conn) == [0, 1, 2, 3, 4] and c.position(TP0) == 5
    assert not conn.in_transaction
    c.close()


def test_overlapping_owners_never_apply_twice(log, tmp_path):
    """Two consumers reading one partition into one database (a rebalance
    overlap, or a zombie): the stored offset read under the write lock
    skips what the other applied."""
    conn_a, conn_b = _db(tmp_path / "app.db"), _db(tmp_path / "app.db")
    a, b = SQLiteOffsets(conn_a, "g"), SQLiteOffsets(conn_b, "g")
    ca = log.consumer(auto_offset_reset="earliest", max_poll_records=8)
    cb = log.consumer(auto_offset_reset="earliest", max_poll_records=5)
    a.assign(ca, [TP0])
    b.assign(cb, [TP0])
    for _ in range(6):
        a.process(ca, _record_offset, timeout=0.2)
        b.process(cb, _record_offset, timeout=0.2)
    assert sorted(_offsets_in(conn_a)) == list(range(20))
    ca.close()
    cb.close()


def test_bad_input(log, tmp_path):
    conn = _db(tmp_path / "app.db")
    with pytest.raises(pylog.InvalidArgument):
        SQLiteOffsets(conn, "g", table="x; DROP TABLE seen")
    with pytest.raises(pylog.InvalidArgument):
        SQLiteOffsets(conn, "")
    with pytest.raises(pylog.InvalidArgument):
        SQLiteOffsets("app.db", "g")
    offsets = SQLiteOffsets(conn, "g")
    c = log.consumer(auto_offset_reset="earliest")
    offsets.assign(c, [TP0])
    with pytest.raises(pylog.InvalidArgument):
        offsets.process(c, _record_offset, commit_every="sometimes")
    with pytest.raises(pylog.InvalidArgument, match="on_partitions"):
        offsets.subscribe(log.consumer(group_id="g2"), "t", listener=print)
    conn.execute("INSERT INTO seen VALUES ('mine', 0, 0)")     # the caller's open work
    with pytest.raises(pylog.InvalidArgument, match="open transaction"):
        offsets.process(c, _record_offset, timeout=1)
    conn.rollback()
    assert _offsets_in(conn) == [] and offsets.stored() == {}

    def commits_itself(record, cur):
        cur.connection.commit()
    with pytest.raises(pylog.InvalidArgument, match="ended the transaction"):
        offsets.process(c, commits_itself, timeout=1)
    c.close()


# -- the idempotent consumer ----------------------------------------------------------
def test_processed_ids_once_and_window(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "app.db"))
    ids = ProcessedIds(conn, "emails", max_ids=3)
    sent = []
    for eid in ["a", "b", "a", "c", "b"]:
        with ids.once(eid) as first:
            if first:
                sent.append(eid)
    assert sent == ["a", "b", "c"]
    with pytest.raises(RuntimeError):
        with ids.once("d") as first:
            assert first
            raise RuntimeError("the mail server is down")
    assert not ids.seen("d")               # not marked: retried next time
    for eid in ["d", "e"]:
        ids.mark(eid)
    assert len(ids) == 3                    # bounded: the oldest went first
    assert [ids.seen(e) for e in "abcde"] == [False, False, True, True, True]
    other = ProcessedIds(conn, "sms", max_ids=3)
    assert not other.seen("e")              # names do not share ids
    with pytest.raises(pylog.InvalidArgument):
        ids.seen(["not", "an", "id"])
    with pytest.raises(pylog.InvalidArgument):
        ProcessedIds(conn, "x", max_ids=0)


def test_processed_ids_ttl_and_joining_a_transaction(tmp_path):
    now = [1000.0]
    conn = sqlite3.connect(str(tmp_path / "app.db"))
    ids = ProcessedIds(conn, "emails", ttl_s=60, clock=lambda: now[0])
    ids.mark(b"x")
    now[0] += 61
    assert not ids.seen(b"x")               # expired (trimmed at the next mark)
    ids.mark(b"y")
    assert len(ids) == 1
    conn.execute("CREATE TABLE t (v)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (1)")
    ids.mark(b"z")                          # joins the open transaction
    conn.rollback()
    assert not ids.seen(b"z") and conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


# -- crash loops --------------------------------------------------------------------
def _make_input(log_dir, rng, n):
    """n stock changes over 2 partitions; returns the expected totals."""
    expected = Counter()
    items = []
    for _ in range(n):
        sku, delta = f"sku{rng.randrange(8)}", rng.randint(-5, 9)
        expected[sku] += delta
        items.append((sku.encode(), f"{sku},{delta}".encode()))
    with pylog.open(log_dir) as lg:
        lg.create_topic("stock", partitions=2)
        p = lg.producer()
        for i in range(0, n, 50):
            p.send_batch("stock", items[i:i + 50], partition=i // 50 % 2)
    return expected


def _totals(db):
    conn = sqlite3.connect(db)
    try:
        return Counter(dict(conn.execute("SELECT sku, qty FROM stock")))
    finally:
        conn.close()


def _child(log_dir, db, mode, how, kill_after, seed, settings="WAL,FULL,always"):
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, CHILD, log_dir, db, mode, how,
                             str(kill_after), str(seed), settings],
                            stdout=subprocess.PIPE, stderr=err)
    proc.stderr_file = err          # (childproc reads it on failure)
    return proc


def _progress(db):
    """Records applied so far: the sum of the stored next offsets."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COALESCE(SUM(next_offset), 0) FROM pylog_offsets"
                            ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0                    # killed before the table was created
    finally:
        conn.close()


def _crash_round(base, rng, n, kill_target, deadline, stats):
    """One topic of ``n`` changes consumed by children killed at random
    instants (after they started reading) until one finishes; checks the
    totals; counts kills in ``stats``."""
    log_dir, db = os.path.join(base, "log"), os.path.join(base, "app.db")
    expected = _make_input(log_dir, rng, n)
    # every SQLite setting that keeps commits atomic, every log sync mode
    settings = ",".join([rng.choice(["WAL", "DELETE"]), rng.choice(["FULL", "NORMAL"]),
                         rng.choice(["always", "interval", "never"])])
    while True:
        how = rng.choice(["assign", "subscribe"])
        proc = _child(log_dir, db, "helper", how, -1, rng.randrange(1 << 30), settings)
        if stats["kills"] < kill_target and time.monotonic() < deadline:
            expect(proc, b"ready", timeout=60)
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.3))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                stats["kills"] += 1
                stats["mid"] += 0 < _progress(db) < n   # killed mid-way
                continue
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.endswith(b"done\n"), stderr_tail(proc)
        break
    assert dict(_totals(db)) == dict(expected), \
        f"{settings} after {stats['kills']} kills: {_totals(db)} != {expected}"


def _crash_loop(tmp_path, kills_wanted, budget_s, n):
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (replay with PYLOG_SEED={seed})")
    rng = random.Random(seed)
    deadline = time.monotonic() + budget_s
    stats = {"kills": 0, "mid": 0}
    rounds = 0
    while stats["kills"] < kills_wanted and time.monotonic() < deadline:
        base = tmp_path / f"round{rounds}"
        base.mkdir()
        _crash_round(str(base), rng, n, kills_wanted, deadline, stats)
        rounds += 1
    print(f"exactly once into SQLite: {rounds} rounds, {stats['kills']} SIGKILLs "
          f"({stats['mid']} with part of the input applied), seed {seed}")
    return stats["kills"]


def test_crash_loop_quick(tmp_path):
    assert _crash_loop(tmp_path, 5, 120, 1000) >= 5


@pytest.mark.long
def test_crash_loop_long(tmp_path):
    wanted = int(os.environ.get("PYLOG_EOS_KILLS", "100"))
    budget = float(os.environ.get("PYLOG_EOS_BUDGET_S", "600"))
    kills = _crash_loop(tmp_path, wanted, budget, 1500)
    assert kills >= wanted, f"only {kills} kills within {budget} s"


@pytest.mark.parametrize("how", ["assign", "subscribe"])
def test_kill_between_database_and_offset_commit(tmp_path, how):
    """The same kill point -- right after the database commit of the third
    batch -- doubles that batch in the hand-written loop (SQLite commit,
    then pylog commit) and changes nothing with the helper, whose offsets
    are in the database commit."""
    rng = random.Random(7)
    results = {}
    for mode in ("naive", "helper"):
        base = tmp_path / mode
        base.mkdir()
        log_dir, db = str(base / "log"), str(base / "app.db")
        expected = _make_input(log_dir, rng, 200)
        proc = _child(log_dir, db, mode, how, 2, 1)
        proc.communicate(timeout=120)
        assert proc.returncode == -signal.SIGKILL, stderr_tail(proc)
        proc = _child(log_dir, db, mode, how, -1, 1)
        proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr_tail(proc)
        results[mode] = (_totals(db), expected)
    got, expected = results["naive"]
    assert dict(got) != dict(expected)       # the naive loop applied a batch twice
    got, expected = results["helper"]
    assert dict(got) == dict(expected)
