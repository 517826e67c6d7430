"""Smoke run of bench/compare.py on a small N: every scenario runs for
pylog and the peers that need no install (raw, sqlite3, lmdb), every
read-back matches, and every bar gets a ratio. Long: ~15 s."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.long
def test_compare_runs_every_scenario_and_reports_every_bar(tmp_path):
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "compare.py"), "--n", "4000",
         "--only", "pylog,raw,sqlite,lmdb", "--skip", "extras,scale,queues", "--reps", "2",
         "--lat-n", "60", "--lat-rounds", "2", "--threads", "1,16", "--no-install",
         "--tmpdir", str(tmp_path), "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["errors"] == []
    res = doc["results"]
    for peer in ("pylog", "raw", "sqlite", "lmdb"):
        for metric in ("batch_produce", "consume", "one_produce", "fsync1000_produce",
                       "fsync1_produce", "threads1_produce", "threads16_produce"):
            assert res[peer][metric] > 0, (peer, metric)
    assert res["cpython"]["wake16"] > 0
    for metric in ("lat_same_p50_us", "lat_floor_p50_us", "lat_proc_p50_us"):
        assert res["pylog"][metric] > 0, metric
    assert res["raw"]["lat_same_p50_us"] > 0
    bars = {(b["bar"], b["peer"]) for b in doc["bars"]}
    assert ("send_batch, no fsync", "lmdb batch_produce") in bars
    assert all(b["ratio"] is not None for b in doc["bars"] if b["required"] != "< 100 us")
    assert "## Bars" in proc.stdout
    # the commit-per-record section (bench/commits.py) ran with its peers
    for figure in ("pylog never: poll, commit each", "pylog always: 16 threads",
                   "sqlite3 synchronous=OFF: UPDATE each", "lmdb sync=False: put each"):
        assert doc["commits"][figure] > 0, figure
    assert "## Commit per record" in proc.stdout
