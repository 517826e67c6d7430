"""Several processes on one log (G6): concurrent appenders to one partition,
a tailing reader, a writer SIGKILLed mid-run, and a Log used across fork()."""

import os
import random
import signal
import time
import zlib

import childproc
import pytest

import pylog
from pylog.partition import Cursor

CFG = dict(segment_bytes=65536, max_message_bytes=60000, retention_ms=-1)

WRITER = r"""
import sys, zlib, pylog
path, wid, n, sync = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
log = pylog.open(path, sync=sync)
prod = log.producer()
def val(i):
    body = b"%s:%06d:" % (wid.encode(), i) + bytes([i % 251]) * (i % 400)
    return body + b"%08x" % zlib.crc32(body)
print("ready", flush=True)
i = 0
while i < n:
    if i % 5 == 0:
        k = min(n - i, 1 + i % 13)
        prod.send_batch("t", [val(i + j) for j in range(k)], partition=0)
        i += k
    else:
        prod.send("t", val(i), key=b"k", partition=0)
        i += 1
log.close()
print("done", flush=True)
"""

READER = r"""
import sys, zlib, pylog
from pylog import TopicPartition
path, total = sys.argv[1], int(sys.argv[2])
log = pylog.open(path, sync="never")
c = log.consumer(enable_auto_commit=False)
tp = TopicPartition("t", 0)
c.assign([tp])
c.seek(tp, 0)
print("ready", flush=True)
n = 0
import time
deadline = time.monotonic() + 120
while n < total and time.monotonic() < deadline:
    for r in c.poll(timeout=1.0, max_records=300):
        assert r.offset == n, (r.offset, n)
        body, crc = r.value[:-8], r.value[-8:]
        assert b"%08x" % zlib.crc32(body) == crc, r.offset
        n += 1
print("read", n, flush=True)
"""


def start(script, *args, env):
    p = childproc.start(script, *args, env=env)
    childproc.expect(p, b"ready")
    return p


def create(logdir):
    with pylog.open(logdir) as log:
        log.create_topic("t", **CFG)


def check_writers(logdir, counts, partial=()):
    """Dense offsets; each writer's records exactly once and in its order;
    writers in ``partial`` (killed) wrote a prefix of theirs."""
    with pylog.open(logdir, sync="never") as log:
        part = log.partition("t", 0)
        recs = part.fetch(Cursor(0), 10**7)
    assert [r[0] for r in recs] == list(range(len(recs)))
    seen = {}
    for r in recs:
        body, crc = r[3][:-8], r[3][-8:]
        assert b"%08x" % zlib.crc32(body) == crc
        wid, i = body.split(b":")[:2]
        seen.setdefault(wid.decode(), []).append(int(i))
    for wid, n in counts.items():
        got = seen.get(wid, [])
        if wid in partial:
            assert got == list(range(len(got)))
        else:
            assert got == list(range(n)), wid
    return len(recs)


@pytest.mark.parametrize("sync", ["never", "always"])
def test_three_writers_one_partition(logdir, child_env, sync):
    create(logdir)
    n = 2000 if sync == "never" else 400
    procs = [start(WRITER, logdir, f"w{i}", n, sync, env=child_env) for i in range(3)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out == b"done\n"
    assert check_writers(logdir, {f"w{i}": n for i in range(3)}) == 3 * n


def test_reader_tails_writers(logdir, child_env):
    create(logdir)
    n = 1500
    reader = start(READER, logdir, 3 * n, env=child_env)
    writers = [start(WRITER, logdir, f"w{i}", n, "never", env=child_env) for i in range(3)]
    for p in writers:
        p.communicate(timeout=120)
        assert p.returncode == 0
    out, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0, out
    assert out.strip() == b"read %d" % (3 * n)


def test_killed_writer_never_wedges_others(logdir, child_env):
    seed = int(os.environ.get("PYLOG_SEED", random.randrange(2**32)))
    print(f"seed {seed}")
    rng = random.Random(seed)
    create(logdir)
    counts, partial = {}, set()
    for round_ in range(4):
        n = 1500
        ws = [start(WRITER, logdir, f"r{round_}w{i}", n, "never", env=child_env)
              for i in range(3)]
        counts.update({f"r{round_}w{i}": n for i in range(3)})
        time.sleep(rng.uniform(0.01, 0.15))
        ws[0].send_signal(signal.SIGKILL)
        ws[0].wait()
        partial.add(f"r{round_}w0")
        for p in ws[1:]:
            out, _ = p.communicate(timeout=60)    # wedged writers time out here
            assert p.returncode == 0 and out == b"done\n"
    check_writers(logdir, counts, partial)


@pytest.mark.parametrize("explicit", [True, False], ids=["partition=0", "fast-path"])
def test_log_opened_before_fork(logdir, explicit):
    """A producer used before fork() keeps working in both processes; without
    an explicit partition, send() takes its per-record fast path, which the
    child must leave for the checked path that reopens the Log."""
    log = pylog.open(logdir, sync="never")
    log.create_topic("t", **CFG)
    prod = log.producer()
    kw = {"partition": 0} if explicit else {}
    for _ in range(3):              # the fast path is set up by the 2nd send
        prod.send("t", b"before", **kw)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for i in range(300):
                prod.send("t", b"child-%d" % i, **kw)
            # the inherited files, maps and lock token are the parent's: the
            # child's sends must have gone through the reopened Log
            assert log._pid == os.getpid()
            log.close()
            code = 0
        finally:
            os._exit(code)
    for i in range(300):
        prod.send("t", b"parent-%d" % i, **kw)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    part = log.partition("t", 0)
    vals = [r[3] for r in part.fetch(Cursor(0), 10**6)]
    log.close()
    assert vals[:3] == [b"before"] * 3 and len(vals) == 603
    for who in (b"child", b"parent"):
        assert [v for v in vals if v.startswith(who)] == \
            [b"%s-%d" % (who, i) for i in range(300)]
    with pylog.open(logdir) as log:
        assert [r[3] for r in log.partition("t", 0).fetch(Cursor(0), 10**6)] == vals


def test_writer_died_mid_publish(logdir):
    """A writer killed inside the state seqlock leaves an odd sequence (P-2):
    the next user repairs it under the append lock and carries on."""
    with pylog.open(logdir, sync="never") as log:
        log.create_topic("t", **CFG)
        prod = log.producer()
        for i in range(50):
            prod.send("t", b"%d" % i, partition=0)
        part = log.partition("t", 0)
        st = part.state()
        path = os.path.join(part.dir, "partition.state")
        with open(path, "r+b") as f:         # seq (bytes 8..15) made odd
            f.seek(8)
            seq = int.from_bytes(f.read(8), "little")
            f.seek(8)
            f.write((seq | 1).to_bytes(8, "little"))
        assert part.state() == st
        assert prod.send("t", b"50", partition=0).offset == 50
        assert [r[3] for r in part.fetch(Cursor(0), 100)] == [b"%d" % i for i in range(51)]
