"""Crash loops of the outbox relay (FORMAT.rst O-2, O-3): the relay process
is SIGKILLed again and again at random instants (inside transactions,
while starting, while deleting rows) while the application keeps adding
rows; every outbox row must then be in the log exactly once for a
read_committed consumer, in order per key. On SQLite and the machine's
PostgreSQL, where a transaction is also kept open across kills so that
rows commit after later ids went out (the polling-outbox gap)."""

import multiprocessing as mp
import os
import random
import signal
import time

import pytest
from outboxdb import installed
from reading import read_to_end

import pylog
from pylog import outbox
from pylog.outboxrelay import OutboxRelay

KEYS = 9


def relay_child(url, table, log_path, sync, ready):
    log = pylog.open(log_path, sync=sync)
    relay = OutboxRelay(url, log, table=table, batch_size=3)
    ready.set()
    relay.run(max_wait=0.05)               # until SIGKILL


def read_committed(log_path, topic="ev", isolation="read_committed"):
    with pylog.open(log_path, readonly=True) as log:
        return read_to_end(log, topic, isolation)


def aborted_batches(log_path):
    """Batches the kills cut short: their position records are in the log,
    aborted (read_uncommitted sees them, read_committed does not)."""
    positions = [read_committed(log_path, "__outbox.outbox", level)
                 for level in ("read_uncommitted", "read_committed")]
    return len(positions[0]) - len(positions[1])


def _count_into(log_path, queue):
    queue.put(aborted_batches(log_path))


def crash_loop(db, log_path, kills, sync, seed, min_aborted=0):
    """``kills`` SIGKILLs of the relay (more, up to 8x, until at least
    ``min_aborted`` of them landed inside a batch: 4x once left 7 of 10);
    returns (rows added, batches aborted, kills)."""
    rng = random.Random(seed)
    with pylog.open(log_path) as log:
        log.create_topic("ev", partitions=3, exist_ok=True)
    ctx = mp.get_context("fork")      # no Log is open in this process: fork is safe
    added = []                        # (key, value) in the order added per key
    seq = [0]
    late = None                       # PostgreSQL: a transaction open across kills
    conn = db.connect()

    def add(c, key):
        value = b"%s:%d" % (key, seq[0])
        seq[0] += 1
        outbox.add(c, "ev", value, key=key, table=db.table)
        return key, value

    def counted():
        # in a child: this process opens no Log, so forking the relays stays safe
        q = ctx.Queue()
        p = ctx.Process(target=_count_into, args=(log_path, q))
        p.start()
        n = q.get(timeout=60)
        p.join()
        return n

    try:
        i = 0
        while True:
            if i >= kills and (not min_aborted or i % 20 == 0 and (
                    i >= 8 * kills or counted() >= min_aborted)):
                break
            i += 1
            for _ in range(rng.randrange(0, 6)):              # some transactions
                rows = [add(conn, b"k%d" % rng.randrange(KEYS))
                        for _ in range(rng.randrange(1, 6))]
                if rng.random() < 0.1:
                    conn.rollback()                              # never published
                else:
                    conn.commit()
                    added.extend(rows)
            if hasattr(conn, "pgconn"):
                if late is not None and rng.random() < 0.5:
                    late[0].commit()
                    added.extend(late[1])
                    late[0].close()
                    late = None
                if late is None and rng.random() < 0.5:
                    lc = db.connect()
                    late = (lc, [add(lc, b"late-%d" % i)])     # its own key: no lock wait
            ready = ctx.Event()
            child = ctx.Process(target=relay_child,
                                args=(db.url, db.table, log_path, sync, ready))
            child.start()
            if rng.random() < 0.25:
                time.sleep(rng.uniform(0.0, 0.25))     # anywhere: starting, fencing, idle
            else:
                ready.wait(30)                         # while it publishes its backlog
                time.sleep(rng.uniform(0.0, 0.01))
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            assert child.exitcode == -signal.SIGKILL, f"relay exited with {child.exitcode}"
        if late is not None:
            late[0].commit()
            added.extend(late[1])
            late[0].close()
    finally:
        conn.close()
    with pylog.open(log_path, sync=sync) as log, \
            OutboxRelay(db.url, log, table=db.table) as relay:
        relay.drain()
        assert relay.pending() == 0
    got = [(r.key, r.value) for r in read_committed(log_path)]
    assert len(got) == len(set(got)), "a row was published twice"
    assert sorted(got) == sorted(added), (
        f"{len(set(added) - set(got))} rows lost, {len(set(got) - set(added))} unknown")
    for key in {k for k, _ in added}:
        assert [v for k, v in got if k == key] == [v for k, v in added if k == key], key
    return len(added), aborted_batches(log_path), i


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_relay_killed_a_few_times_publishes_every_row_once(kind, tmp_path):
    gen = installed(kind, tmp_path)
    db = next(gen)
    try:
        rows, _, _ = crash_loop(db, str(tmp_path / "log"), kills=6, sync="always", seed=17)
        assert rows > 0
    finally:
        gen.close()


@pytest.mark.long
@pytest.mark.parametrize("sync", ["always", "interval", "never"])
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_relay_killed_100_times_publishes_every_row_once(kind, sync, tmp_path):
    gen = installed(kind, tmp_path)
    db = next(gen)
    try:
        seed = int(os.environ.get("PYLOG_SEED", "0")) or random.randrange(1 << 30)
        rows, aborted, kills = crash_loop(db, str(tmp_path / "log"), kills=100, sync=sync,
                                          seed=seed, min_aborted=10)
        print(f"seed {seed}: {kills} kills, {rows} rows, {aborted} batches aborted by a kill")
        # the loop must have hit the hard case: kills inside transactions
        assert aborted >= 10, f"seed {seed}: only {aborted} kills landed inside a batch"
    finally:
        gen.close()
