"""Dead-letter copies exactly once (FORMAT.rst Q-5, Q-6): a share consumer
SIGKILLed before, during or after appending the copies of the records it
archives leaves them Dead-lettering; the next consumer of the group finds
the copies already made by their headers, appends the missing ones, and
archives them — every archived record is in the dead-letter topic once."""

import collections
import os
import random
import signal
import time

import pytest
from childproc import expect, start
from sharejobs import dead_letters

import pylog
from pylog import sharestate as ss

N = 6

# argv: log, where to die ("before" the copies, "middle" after the first,
# "after" all of them), a file to say "ready" through stdout
REJECTER = r"""
import os, signal, sys, pylog
from pylog import sharedlq
where = sys.argv[2]
copy = sharedlq.DeadLetters.copy
def dying_copy(self, tp, source, entries, look_first):
    if where == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "middle":
        send = self._producer.send
        calls = []
        def send_once(*a, **kw):
            if calls:
                os.kill(os.getpid(), signal.SIGKILL)
            calls.append(1)
            return send(*a, **kw)
        self._producer.send = send_once
    copy(self, tp, source, entries, look_first)
    if where == "after":
        os.kill(os.getpid(), signal.SIGKILL)
sharedlq.DeadLetters.copy = dying_copy
log = pylog.open(sys.argv[1], sync="never")
c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                       dead_letter_topic="jobs.dlq")
recs = c.poll(timeout_ms=2000)
assert len(recs) == %d, recs
for r in recs:
    c.acknowledge(r, "reject")
c.commit()
print("survived", flush=True)
""" % N


def _fill(logdir, n=N, partitions=1):
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("jobs", partitions=partitions)
        prod = log.producer()
        for i in range(n):
            prod.send("jobs", b"v%d" % i, partition=i % partitions)
        prod.flush()


def _origins(dead):
    return collections.Counter(
        (dict(r.headers)["_dlq.errors.partition"], dict(r.headers)["_dlq.errors.offset"])
        for r in dead)


@pytest.mark.parametrize("where", ["before", "middle", "after"])
def test_sigkill_while_dead_lettering_copies_once(logdir, child_env, where):
    # the next holder finishes a dead holder's dead letters
    _fill(logdir)
    proc = start(REJECTER, logdir, where, env=child_env)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with pylog.open(logdir, sync="never") as log:
        before = _origins(dead_letters(log))
        assert len(before) == {"before": 0, "middle": 1, "after": N}[where]
        f = log.share_files().get("g", "jobs", 0, 0, lambda: 0)
        assert len(f.positions(ss.DEAD_LETTERING)) == N      # what it left
        with log.share_consumer("jobs", group_id="g") as c:
            assert c.poll(timeout_ms=50) == []                # none redelivered
        dead = dead_letters(log)
        assert _origins(dead) == {(b"0", b"%d" % i): 1 for i in range(N)}
        assert sorted(r.value for r in dead) == sorted(b"v%d" % i for i in range(N))
        assert {dict(r.headers)["_dlq.errors.reason"] for r in dead} == {b"rejected"}
        assert f.head[ss.SPSO] == N and f.head[ss.DLQ_PENDING] == 0
        (row,) = log.share_groups()
        assert row["archived_total"] == N


def test_dead_lettering_survives_a_reboot(logdir, child_env):
    # Q-3 keeps Dead-lettering with its mark; after a reboot (the file is
    # not trusted, Q-1) the next holder still copies only what is missing
    _fill(logdir)
    proc = start(REJECTER, logdir, "middle", env=child_env)
    proc.wait()
    with pylog.open(logdir, sync="never") as log:
        log.share_files().get("g", "jobs", 0, 0, lambda: 0)
        assert log.share_files().checkpoint() == 1     # a peer's interval checkpoint
    d = os.path.join(logdir, "meta", "share")
    (name,) = os.listdir(d)
    with open(os.path.join(d, name), "r+b") as fh:
        fh.seek(16)
        fh.write(b"\x00" * 16)              # another boot id
    with pylog.open(logdir, sync="never") as log:
        with log.share_consumer("jobs", group_id="g") as c:
            assert c.poll(timeout_ms=50) == []
        assert _origins(dead_letters(log)) == {(b"0", b"%d" % i): 1 for i in range(N)}


WORKER = r"""
import os, sys, pylog
log = pylog.open(sys.argv[1], sync="never")
c = log.share_consumer("jobs", group_id="g", auto_offset_reset="earliest",
                       dead_letter_topic="jobs.dlq", delivery_limit=2,
                       record_lock_ms=600_000)
print("ready", flush=True)
while True:
    recs = c.poll(timeout_ms=50, max_records=7)
    for r in recs:
        # odd offsets are poison (rejected), every third is retried
        # until the delivery limit archives it; the rest are accepted
        kind = "reject" if r.offset % 2 else "release" if r.offset % 3 == 0 else "accept"
        c.acknowledge(r, kind)
    c.commit()
"""


def test_workers_sigkilled_dead_letter_each_once(logdir, child_env):
    n, parts = 600, 2
    _fill(logdir, n, parts)
    rng = random.Random(5)
    workers = [start(WORKER, logdir, env=child_env) for _ in range(3)]
    for w in workers:
        expect(w, b"ready")
    for _ in range(15):
        time.sleep(rng.uniform(0.01, 0.08))
        i = rng.randrange(len(workers))
        os.kill(workers[i].pid, signal.SIGKILL)
        workers[i].wait()
        workers[i] = start(WORKER, logdir, env=child_env)
        expect(workers[i], b"ready")
    with pylog.open(logdir, sync="never") as log:
        files = [log.share_files().get("g", "jobs", p, 0, lambda: 0) for p in range(parts)]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and \
                any(f.head[ss.SPSO] < n // parts for f in files):
            time.sleep(0.05)
        for w in workers:
            os.kill(w.pid, signal.SIGKILL)
            w.wait()
        assert [f.head[ss.SPSO] for f in files] == [n // parts] * parts
        with log.share_consumer("jobs", group_id="g") as c:
            assert c.poll(timeout_ms=50) == []      # (finishes any left over)
        origins = _origins(dead_letters(log))
    poison = {(b"%d" % p, b"%d" % o) for p in range(parts) for o in range(n // parts)
              if o % 2 or o % 3 == 0}
    # records whose holders were killed up to the delivery limit are
    # archived too; none is in the dead-letter topic twice
    assert poison <= set(origins)
    assert [k for k, v in origins.items() if v > 1] == []
    print(f"{len(origins)} dead letters ({len(origins) - len(poison)} after killed "
          "holders), each once")


def test_dead_letter_topic_deleted_meanwhile_is_made_again(logdir, child_env):
    # Q-6 with the marked dead-letter topic gone: no holder is wedged on it
    _fill(logdir)
    proc = start(REJECTER, logdir, "before", env=child_env)
    proc.wait()
    with pylog.open(logdir, sync="never") as log:
        log.delete_topic("jobs.dlq")
        with log.share_consumer("jobs", group_id="g") as c:
            assert c.poll(timeout_ms=50) == []
        assert _origins(dead_letters(log)) == {(b"0", b"%d" % i): 1 for i in range(N)}


def test_dead_letter_topic_among_the_consumed_stores_nothing(tmp_path):
    # bad input: refused before the group's settings are stored, so
    # the group is not left dead-lettering into the topic it consumes
    log = pylog.open(tmp_path / "log")
    try:
        log.create_topic("jobs", partitions=1)
        with pytest.raises(pylog.InvalidArgument):
            log.share_consumer("jobs", group_id="g", dead_letter_topic="jobs")
        c = log.share_consumer("jobs", group_id="g")
        assert c.dead_letter_topic is None
        c.close()
    finally:
        log.close()
