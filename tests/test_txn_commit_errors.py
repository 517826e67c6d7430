"""A commit that fails before its commit point (a full disk, an I/O error
in the LMDB commit: "nothing was stored") inside ``with
producer.transaction()`` / ``async with producer.transaction()``.

Found by a user trial: the README's loop (``with producer.transaction()``,
catch the error, seek back to the committed offsets, go on) wedged for
good after one such failure: the block left the transaction open, so
every later ``begin_transaction()`` raised "a transaction is already
open" (89,631 times in 10 s, no input processed after it) although the
disk was fine again at once. The block must abort it, as it does for
CommitFailedError and TransactionError; the inputs are then processed
again, once. The fault is real: the LD_PRELOAD shim fails one write of
LMDB's data.mdb while a gate file exists."""

import json
import os
import subprocess
import sys

import pytest

CHILD = r"""
import asyncio, collections, json, os, sys, time
import pylog, pylog.aio

path, gate, sync, mode = sys.argv[1:5]
N = 60


def report(log, errors, loops):
    rc = log.consumer("out", auto_offset_reset="earliest", isolation_level="read_committed")
    seen = []
    while (got := rc.poll(timeout=0.3)):
        seen += [r.value for r in got]
    rc.close()
    print(json.dumps({"errors": errors, "loops": loops, "seen": sorted(x.decode() for x in seen)}))


def threaded():
    log = pylog.open(path, sync=sync)
    log.create_topic("in", partitions=2)
    log.create_topic("out", partitions=2)
    log.producer().send_batch("in", [(b"k%d" % i, b"%d" % i) for i in range(N)])
    c = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                     enable_auto_commit=False, isolation_level="read_committed")
    p = log.producer(transactional_id="ctp")
    errors = collections.Counter()
    loops = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        loops += 1
        recs = c.poll(timeout=0.2, max_records=4)
        if not recs:
            if sum(c.committed(pylog.TopicPartition("in", i)) or 0 for i in range(2)) == N:
                break
            continue
        try:
            with p.transaction():
                for r in recs:
                    p.send("out", b"o" + r.value, key=r.key)
                p.send_offsets_to_transaction(c)
                if loops == 3:
                    open(gate, "w").close()      # the commit's LMDB write fails
        except pylog.PylogError as exc:
            errors[type(exc).__name__] += 1
            for tp in c.assignment():
                c.seek(tp, c.committed(tp) or 0)
        if os.path.exists(gate):
            os.unlink(gate)
    report(log, dict(errors), loops)
    p.close()
    c.close()
    log.close()


async def on_loop():
    async with pylog.aio.open(path, sync=sync) as log:
        await log.create_topic("in", partitions=2)
        await log.create_topic("out", partitions=2)
        await log.producer().send_batch("in", [(b"k%d" % i, b"%d" % i) for i in range(N)])
        c = log.consumer("in", group_id="g", auto_offset_reset="earliest",
                         enable_auto_commit=False, isolation_level="read_committed")
        p = log.producer(transactional_id="ctp")
        errors = collections.Counter()
        loops = 0
        deadline = time.monotonic() + 20
        async with c, p:
            while time.monotonic() < deadline:
                loops += 1
                batch = await c.getmany(timeout_ms=200, max_records=4)
                if not batch:
                    done = 0
                    for i in range(2):
                        done += await c.committed(pylog.TopicPartition("in", i)) or 0
                    if done == N:
                        break
                    continue
                try:
                    async with p.transaction():
                        for recs in batch.values():
                            for r in recs:
                                await p.send("out", b"o" + r.value, key=r.key)
                        await p.send_offsets_to_transaction(c)
                        if loops == 3:
                            open(gate, "w").close()
                except pylog.PylogError as exc:
                    errors[type(exc).__name__] += 1
                    await c.seek_to_committed()
                if os.path.exists(gate):
                    os.unlink(gate)
        report(log.log, dict(errors), loops)


if mode == "aio":
    asyncio.run(on_loop())
else:
    threaded()
"""


@pytest.mark.parametrize("mode", ["threaded", "aio"])
@pytest.mark.parametrize("errno, error", [(28, "DiskFullError"), (5, "LogFailedError")])
def test_a_commit_that_failed_before_its_commit_point_is_aborted(
        shim, tmp_path, child_env, mode, errno, error):
    gate = str(tmp_path / "gate")
    env = dict(child_env, LD_PRELOAD=shim, PLSHIM_FAULT_OPS="write",
               PLSHIM_FAULT_PATH="data.mdb", PLSHIM_FAULT_ERRNO=str(errno),
               PLSHIM_FAULT_COUNT="1", PLSHIM_FAULT_GATE=gate)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "log"), gate,
                           "always", mode], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    got = json.loads(proc.stdout.decode().splitlines()[-1])
    # the one failed commit, reported as itself; nothing else failed
    assert got["errors"] == {error: 1}, got["errors"]
    # every input's output once: the failed transaction's inputs again, once
    assert got["seen"] == sorted(f"o{i}" for i in range(60)), got["seen"]
    assert not os.path.exists(gate)
