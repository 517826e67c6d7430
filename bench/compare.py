#!/usr/bin/env python3
"""Side-by-side benchmark of pylog and its peers, measured in the same run.

    python bench/compare.py                      # everything, ~5-10 minutes
    python bench/compare.py --n 20000 --no-extras
    python bench/compare.py --only raw,sqlite,lmdb,persistqueue,redis
    python bench/compare.py --json results.json

Prints the machine, a markdown table of every figure, and a table of the
performance bars (pylog's ratio to the peer measured in this run and
whether the bar holds).  Exit status: 0 when every measurement ran and every
record read back matched (bars may fail: this is a report), 1 on errors,
2 on a count / checksum mismatch.

The peers are installed only on request: ``pip install -e '.[bench]'`` for
their Python packages (redis, persist-queue), ``--install-peers`` to let
this script apt-get install redis-server. A missing peer is skipped with its
reason. The parts: measure.py (the Bench), throughput.py, latency.py,
extras.py, report.py, peers.py (one class per peer).
"""

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))   # the repository root: pylog/

sys.dont_write_bytecode = True   # no bench/__pycache__ in the work tree
import peers as P  # noqa: E402
from commits import commit_report, run_commits  # noqa: E402
from extras import extra_handoff, extra_partitions, extra_rss, extra_zstd  # noqa: E402
from latency import latency_child, run_latency  # noqa: E402
from measure import Bench, machine_info, say  # noqa: E402
from queues import queue_report, run_queues  # noqa: E402
from report import report  # noqa: E402
from throughput import run_throughput  # noqa: E402


def throughput_section(b, peers_run, a):
    """Every throughput scenario over one set of generated records; the
    records (hundreds of MB at large --n) are freed when it returns."""
    n_items = max(a.n, a.n_fsync1000, a.n_fsync_record, a.n_threads)
    say("generating %d records (%d-byte values, 16-byte keys, seed 42)" % (n_items, a.size))
    items = P.make_items(n_items, a.size)
    crc_cache = {}

    def crcs(n):
        if n not in crc_cache:
            crc_cache[n] = P.checksum(v for _, v in items[:n])
        return crc_cache[n]

    run_throughput(b, peers_run, items, crcs)


# Scale and shape figures measured by their own scripts, each against its
# reference in the same run (the scripts print their bars): the 10,000
# partition run under ulimit -n 256, argument shapes, linger sends, roll and
# recovery costs, group liveness.
SCALE_SCRIPTS = [
    ("10,000 partitions under ulimit -n 256", ["handles.py"]),
    ("send argument shapes vs plain send", ["shapes.py", "--reps", "10"]),
    ("linger sends vs raw one-write-per-record", ["linger.py", "--n", "100000"]),
    ("roll and recovery costs", ["costs.py", "--segments", "2000", "--strays", "100000",
                                 "--rolls", "100", "--mb", "1024"]),
    ("group liveness", ["groups.py"]),
]


def run_scale_scripts(say):
    """Markdown: each script's output under its title."""
    import subprocess
    out = ["## Speed and scale (issue 15)\n"]
    for title, argv in SCALE_SCRIPTS:
        say("== scale: %s" % title)
        t0 = time.time()
        r = subprocess.run([sys.executable, os.path.join(HERE, argv[0])] + argv[1:],
                           capture_output=True, text=True, check=False)
        out.append("### %s (`bench/%s`, %.0f s)\n" % (title, " ".join(argv), time.time() - t0))
        out.append("```")
        out.append(r.stdout.rstrip() or "(no output)")
        if r.returncode != 0:
            out.append("exit status %d: %s" % (r.returncode, r.stderr.strip()[-2000:]))
        out.append("```\n")
    return "\n".join(out)


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="pylog vs raw file, sqlite3, lmdb, persist-queue, Redis Streams")
    ap.add_argument("--size", type=int, default=100, help="value bytes (default 100)")
    ap.add_argument("--n", type=int, default=200_000,
                    help="records per no-fsync run (default 200000); the durable "
                         "runs default to n/10 and n/100")
    ap.add_argument("--n-fsync1000", type=int, default=None,
                    help="records per fsync-per-batch run (default n/10)")
    ap.add_argument("--n-fsync-record", type=int, default=None,
                    help="records per fsync-per-record run (default n/100, at least 500)")
    ap.add_argument("--n-threads", type=int, default=None,
                    help="records per threaded durable run (default 2 x n-fsync-record)")
    ap.add_argument("--threads", default="1,4,16", help="thread counts (default 1,4,16)")
    ap.add_argument("--batch", type=int, default=1000, help="records per batch (default 1000)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions, best kept (default 3)")
    ap.add_argument("--only", default=None,
                    help="comma list of peers: pylog,raw,sqlite,lmdb,persistqueue,redis")
    ap.add_argument("--skip", default="",
                    help="comma list of sections to skip: "
                         "throughput,latency,extras,commits,queues,scale")
    ap.add_argument("--lat-n", type=int, default=2000, help="latency samples (default 2000)")
    ap.add_argument("--lat-rounds", type=int, default=4,
                    help="rounds the latency samples are split into, every latency "
                         "job in turn within a round (default 4)")
    ap.add_argument("--lat-interval-ms", type=float, default=1.0,
                    help="gap between latency records (default 1 ms)")
    ap.add_argument("--n-zstd", type=int, default=50_000,
                    help="JSON-like records for the zstd extra (default 50000)")
    ap.add_argument("--n-handoff", type=int, default=100_000,
                    help="back-to-back sends per run of the hand-off extra (default 100000)")
    ap.add_argument("--rss-gb", type=float, default=2.0,
                    help="GiB produced and consumed for the RSS extra (default 2; 0 skips)")
    ap.add_argument("--rss-time-limit", type=float, default=90.0,
                    help="stop producing / consuming for the RSS extra after this "
                         "many seconds each (default 90)")
    ap.add_argument("--no-extras", action="store_true", help="same as --skip extras")
    ap.add_argument("--install-peers", action="store_true",
                    help="apt-get install redis-server when it is missing (the peers' "
                         "Python packages come from pip install -e '.[bench]')")
    ap.add_argument("--no-install", action="store_true",
                    help="install nothing (the default; kept for old command lines)")
    ap.add_argument("--tmpdir", default=None, help="where the temporary directories go")
    ap.add_argument("--json", default=None, metavar="PATH", help="write all numbers as JSON")
    ap.add_argument("--verbose", "-v", action="store_true", help="tracebacks on errors")
    a = ap.parse_args(argv)
    if a.n_fsync1000 is None:
        a.n_fsync1000 = max(a.batch, a.n // 10)
    if a.n_fsync_record is None:
        a.n_fsync_record = max(500, a.n // 100)
    if a.n_threads is None:
        a.n_threads = 2 * a.n_fsync_record
    a.threads = [int(x) for x in a.threads.split(",") if x.strip()]
    a.skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    if a.no_extras:
        a.skip.add("extras")
    return a


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_latency-child"]:
        latency_child(argv[1], int(argv[2]), int(argv[3]))
        return 0
    a = parse_args(argv)
    started = time.time()

    wanted = P.ALL_PEERS
    if a.only:
        names = [x.strip() for x in a.only.split(",") if x.strip()]
        bad = [x for x in names if x not in P.PEERS_BY_NAME]
        if bad:
            say("unknown peer(s): %s (known: %s)" % (", ".join(bad), ", ".join(P.PEERS_BY_NAME)))
            return 1
        wanted = [P.PEERS_BY_NAME[x] for x in names]
    # peers are installed by the user (pip install -e '.[bench]'); only
    # redis-server, a system package, is installed here, and only on request
    P.RedisPeer.install = a.install_peers

    peers_run = []
    skipped = {}
    for cls in wanted:
        ok, why = cls.available()
        if ok:
            peers_run.append(cls)
        else:
            skipped[cls.name] = why
            say("-- skipping %s: %s" % (cls.name, why))

    base = tempfile.mkdtemp(prefix="pylog-compare-", dir=a.tmpdir)
    atexit.register(shutil.rmtree, base, True)
    machine = machine_info(peers_run, base)
    for nm, why in skipped.items():
        machine[nm] = "skipped: " + why
    say("## machine: " + "; ".join("%s=%s" % kv for kv in machine.items()))

    b = Bench(a, base)
    extras = {}
    commits = {}
    scale = ""
    queues: dict = {}
    queue_notes: list = []
    try:
        if "throughput" not in a.skip:
            throughput_section(b, peers_run, a)
        names = [c.name for c in peers_run]
        if "latency" not in a.skip:
            run_latency(b, "pylog" in names, "raw" in names)
        if "extras" not in a.skip and "pylog" in names:
            jobs = [("zstd", extra_zstd), ("1000 partitions", extra_partitions),
                    ("same-process hand-off", extra_handoff)]
            if a.rss_gb > 0:
                jobs.append(("rss", extra_rss))
            for title, fn in jobs:
                say("== extra: %s" % title)
                b.guarded("pylog", "extra " + title, lambda fn=fn: fn(b, extras))
        if "commits" not in a.skip and "pylog" in names:
            b.guarded("pylog", "commit per record", lambda: commits.update(
                run_commits(base, max(5000, a.n // 4), a.reps, say=say)))
        if "queues" not in a.skip and "pylog" in names:
            def _queues():
                got, notes = run_queues(base, a.n, max(2000, a.n // 4), max(800, a.n // 25),
                                        say=say)
                queues.update(got)
                queue_notes.extend(notes)
            b.guarded("pylog", "work queues", _queues)
        if "scale" not in a.skip and "pylog" in names:
            scale = run_scale_scripts(say)
    finally:
        P._kill_redis_procs()

    text, brow = report(b, peers_run, machine, extras, started)
    print(text)
    if commits:
        print(commit_report(commits))
    if queues:
        print(queue_report(queues, queue_notes))
    if scale:
        print(scale)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "args": {k: (sorted(v) if isinstance(v, set) else v)
                                                   for k, v in vars(a).items()},
                       "results": b.results, "extras": extras,
                       "bars": [dict(zip(("bar", "pylog", "peer", "peer_value", "ratio",
                                          "required", "holds"), r)) for r in brow],
                       "commits": commits, "queues": queues,
                       "skipped": skipped, "errors": b.errors}, f, indent=2)
    if b.mismatch:
        return 2
    return 1 if b.errors else 0


if __name__ == "__main__":
    sys.exit(main())
