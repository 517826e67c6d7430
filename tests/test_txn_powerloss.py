"""One-partition transactions through a simulated power loss (FORMAT.rst
X-10: the COMMIT marker is the commit point, made durable with the records
by one fdatasync; tests/test_powerloss.py's shim and file images): every
transaction whose commit returned is read whole after the reboot, none is
read in part, none twice, and the one left open is aborted by the first
read_committed reader."""

import os
import random
import subprocess
import sys
from collections import defaultdict

import childproc
import pytest
from test_powerloss import _seed, power_loss
from test_txn_onephase_crash import read_all

CHILD = r"""
import sys, pylog
log = pylog.open(sys.argv[1], sync="always")
log.create_topic("out", partitions=2, exist_ok=True)
p = log.producer(transactional_id="one")
print("ready", flush=True)
k = 0
while True:
    n = 1 + k % 5
    p.begin_transaction()
    recs = [b"%d:%d:%d" % (k, i, n) + b"x" * 700 for i in range(n)]
    if k % 2:
        p.send_batch("out", recs, partition=k % 2)
    else:
        for r in recs:
            p.send("out", r, partition=k % 2)
    p.commit_transaction()
    print("C", k, flush=True)
    k += 1
"""


# Only "drop" (the unsynced pages all lost): a transaction's records are
# not synced before its commit, so "tear" (a random subset of unsynced
# pages kept) leaves a hole followed by whole batches, which recovery
# (P-4) takes for mid-log damage and fails the partition. That is how
# recovery treats any unsynced tail with a hole, not particular to
# transactions; it is reported on issue 17, not mended here.
@pytest.mark.parametrize("mode", ["drop"])
def test_power_loss_keeps_committed_transactions_whole(shim, tmp_path, child_env, mode):
    seed = _seed()
    print(f"seed {seed} (replay with PYLOG_SEED={seed})")
    rng = random.Random(seed)
    for r in range(3):
        logdir, shadow = str(tmp_path / f"r{r}" / "log"), str(tmp_path / f"r{r}" / "shadow")
        os.makedirs(shadow)
        env = dict(child_env, LD_PRELOAD=shim, PLSHIM_SHADOW_ROOT=os.path.abspath(logdir),
                   PLSHIM_SHADOW_DIR=shadow)
        proc = subprocess.Popen([sys.executable, "-c", CHILD, logdir],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        out = childproc.killed_after_ready(proc, rng.uniform(0.05, 0.5))
        acked = {int(ln.split()[1]) for ln in out.split(b"\n")[:-1] if ln.startswith(b"C ")}
        power_loss(logdir, shadow, mode, rng)
        got = read_all(logdir)
        assert len(got) == len(set(got)), f"round {r}: a record read twice"
        whole = defaultdict(set)
        for v in got:
            k, i, n = map(int, v.split(b"x")[0].split(b":"))
            whole[(k, n)].add(i)
        for (k, n), idx in whole.items():
            assert idx == set(range(n)), f"round {r}: transaction {k} read in part"
        shown = {k for k, _ in whole}
        assert acked <= shown, f"round {r}: committed, lost: {sorted(acked - shown)[:5]}"
        print(f"round {r}: {len(acked)} committed, {len(shown)} read")
