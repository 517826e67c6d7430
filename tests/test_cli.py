"""The pylog console script, run for real in subprocesses against real logs."""

import json
import os
import shutil
import subprocess
import sys
import time

import childproc
import pytest

import pylog
from pylog import TopicPartition
from pylog.verify import dump_segment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run(*args, input=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "pylog.cli", *map(str, args)],
                          input=input, capture_output=True, env=_env(),
                          timeout=timeout)


def ok(*args, **kw):
    r = run(*args, **kw)
    assert r.returncode == 0, (r.stdout.decode(), r.stderr.decode())
    return r.stdout.decode()


def seg(log_dir, topic, p, base=0):
    return os.path.join(str(log_dir), f"{topic}-{p}", f"{base:020d}.log")


@pytest.fixture
def logdir(tmp_path):
    """orders: 2 partitions; t: 1 partition, several 64 KiB segments; a group."""
    d = tmp_path / "log"
    with pylog.open(str(d), sync="never") as log:
        log.create_topic("orders", partitions=2)
        log.create_topic("t", partitions=1, segment_bytes=65536,
                         max_message_bytes=65536)
        p = log.producer()
        for i in range(20):
            p.send("orders", b'{"n": %d}' % i, key=b"user-%d" % (i % 5),
                   headers=[("source", b"web")])
        p.send("orders", b"\x00\x01binary\xff", key=b"bin", partition=0)
        for i in range(1500):
            p.send("t", b"value-%d-" % i * 4, key=b"k%d" % i)
        p.flush()
        c = log.consumer("orders", group_id="inventory", auto_offset_reset="earliest",
                         enable_auto_commit=False)
        got = 0
        while got < 10:
            got += len(c.poll(1.0, max_records=10 - got))
        c.commit()
        c.close()
    return d


# -- help and errors ------------------------------------------------------------

def test_help_lists_commands_with_examples():
    out = ok("--help")
    for cmd in ("info", "dump", "verify", "tail", "produce", "topics", "groups", "demo"):
        assert cmd in out
    assert "examples:" in out
    for cmd in ("info", "dump", "verify", "tail", "produce", "topics", "groups", "demo"):
        sub = ok(cmd, "--help")
        assert "examples:" in sub and "pylog " + cmd in sub


@pytest.mark.parametrize("args", [
    ("info", "/nonexistent/pylog-log"),
    ("verify", "/nonexistent/pylog-log"),
    ("dump", "/nonexistent/x.log"),
    ("tail", "/nonexistent/pylog-log", "orders"),
    ("groups", "/nonexistent/pylog-log"),
])
def test_missing_path_is_one_line_error(args):
    r = run(*args)
    assert r.returncode == 2
    err = r.stderr.decode()
    assert err.startswith("pylog: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_topic_and_usage_errors(logdir):
    r = run("tail", logdir, "nope")
    assert r.returncode == 2 and b"nope" in r.stderr and b"Traceback" not in r.stderr
    r = run("topics", logdir, "describe", "nope")
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    r = run("frobnicate")
    assert r.returncode == 2
    r = run("groups", logdir, "reset", "inventory")
    assert r.returncode == 2 and b"exactly one" in r.stderr


# -- info -------------------------------------------------------------------------

def test_info_text_and_json_match_api(logdir):
    out = ok("info", logdir)
    assert "orders" in out and "inventory" in out and "LAG" in out
    info = json.loads(ok("info", logdir, "--json"))
    with pylog.open(str(logdir), readonly=True) as log:
        for t in info["topics"]:
            api = log.describe_topic(t["name"])
            assert t["partitions"] == api.partitions
            assert t["config"] == api.config
            assert t["partition_info"] == [p._asdict() for p in api.partition_info]
        assert [g["group"] for g in info["groups"]] == log.groups()
        g = log.describe_group("inventory")
        assert info["groups"][0]["lag"] == g["lag"] == 11
        assert info["groups"][0]["partitions"] == g["partitions"]
    assert len(info["topics"][1]["partition_info"]) == 1
    assert info["topics"][1]["partition_info"][0]["segments"] > 2


# -- dump ---------------------------------------------------------------------------

def test_dump_batches_and_records(logdir):
    path = seg(logdir, "orders", 0)
    out = ok("dump", path, "--values")
    assert "baseOffset: 0" in out and "crcValid: true" in out
    assert "headerKeys: [source]" in out
    assert "\\x00\\x01binary\\xff" in out          # binary escaped, not raw
    d = json.loads(ok("dump", path, "--records", "--json"))
    api = dump_segment(path, records=True)
    assert d["batches"] == api["batches"] and d["problems"] == []
    with pylog.open(str(logdir), readonly=True) as log:
        end = log.describe_topic("orders").partition_info[0].end_offset
    offsets = [r["offset"] for b in d["batches"] for r in b["records"]]
    assert offsets == list(range(end))
    assert all(b["crc_valid"] and b["codec"] == "none" for b in d["batches"])
    assert "value" not in d["batches"][0]["records"][0]


def test_dump_works_on_a_bare_copied_segment(logdir, tmp_path):
    copy = tmp_path / "elsewhere.log"
    shutil.copy(seg(logdir, "t", 0), copy)
    d = json.loads(ok("dump", copy, "--json"))
    assert d["base_offset"] is None and len(d["batches"]) > 100


def _flip(path, pos, bit=0x10):
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ bit]))


def test_flipped_byte_reported_by_dump_and_verify(logdir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(logdir, bad)
    path = seg(bad, "t", 0)
    batches = dump_segment(path)["batches"]
    victim = batches[40]
    _flip(path, victim["position"] + 70)
    r = run("dump", path)
    assert r.returncode == 1
    assert f"position {victim['position']}" in r.stderr.decode()
    d = json.loads(run("dump", path, "--json").stdout)
    assert [p["position"] for p in d["problems"]] == [victim["position"]]
    assert "CRC" in d["problems"][0]["message"]
    assert len(d["batches"]) == len(batches)       # continued past it
    r = run("verify", bad)
    assert r.returncode == 1
    assert path in r.stdout.decode() and f"position {victim['position']}" in r.stdout.decode()
    v = json.loads(run("verify", bad, "--json").stdout)
    assert v["ok"] is False
    assert [(p["file"], p["position"]) for p in v["problems"]] == [(path, victim["position"])]


def test_damaged_length_field_resyncs(logdir, tmp_path):
    path = tmp_path / "x.log"
    shutil.copy(seg(logdir, "t", 0), path)
    batches = dump_segment(str(path))["batches"]
    _flip(str(path), batches[5]["position"] + 10, 0x40)   # batchLength
    d = json.loads(run("dump", path, "--json").stdout)
    assert d["problems"][0]["position"] == batches[5]["position"]
    assert len(d["batches"]) >= len(batches) - 2


def test_truncated_segment_reported(logdir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(logdir, bad)
    path = seg(bad, "t", 0)
    batches = dump_segment(path)["batches"]
    cut = batches[100]["position"] + 30
    os.truncate(path, cut)
    r = run("dump", path)
    assert r.returncode == 1 and f"position {batches[100]['position']}" in r.stderr.decode()
    v = json.loads(run("verify", bad, "--json").stdout)
    assert not v["ok"]
    probs = {(p["file"], p["position"]) for p in v["problems"]}
    assert (path, batches[100]["position"]) in probs
    # the next segment no longer continues the offsets
    assert any("previous segment ends" in p["message"] for p in v["problems"])


def test_deleted_index_reported(logdir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(logdir, bad)
    idx = seg(bad, "t", 0)[:-4] + ".index"
    assert os.path.getsize(idx) > 0
    os.unlink(idx)
    r = run("verify", bad)
    assert r.returncode == 1 and idx in r.stdout.decode() and "missing" in r.stdout.decode()


def test_damaged_index_entry_reported(logdir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(logdir, bad)
    idx = seg(bad, "t", 0)[:-4] + ".index"
    _flip(idx, 8 + 7, 0x04)          # position of the second entry
    v = json.loads(run("verify", bad, "--json").stdout)
    assert (idx, 8) in {(p["file"], p["position"]) for p in v["problems"]}


def test_garbage_after_zero_tail_is_reported(logdir, tmp_path):
    path = tmp_path / "x.log"
    data = open(seg(logdir, "orders", 0), "rb").read()
    valid = dump_segment(seg(logdir, "orders", 0))["valid_end"]
    assert set(data[valid:]) <= {0}                   # preallocated tail
    with open(path, "wb") as f:
        f.write(data[:valid] + bytes(4096) + b"junk" * 10)
    d = json.loads(run("dump", path, "--json").stdout)
    assert d["problems"] and d["problems"][0]["position"] == valid


def test_dump_survives_random_bytes(logdir, tmp_path):
    """Random bytes are no segment (exit 2, saying so); random bytes after a
    segment's first batch are a damaged segment (exit 1, problems)."""
    import random
    rnd = random.Random(7)
    first = dump_segment(seg(logdir, "orders", 0))["batches"][0]
    with open(seg(logdir, "orders", 0), "rb") as f:
        head = f.read(first["size"])
    for i in range(5):
        noise = bytes(rnd.getrandbits(8) for _ in range(3000))
        p = tmp_path / f"r{i}.log"
        p.write_bytes(noise)
        r = run("dump", p, "--records")
        assert r.returncode == 2 and b"Traceback" not in r.stderr
        assert b"not a pylog/Kafka segment file" in r.stderr
        p.write_bytes(head + noise)
        r = run("dump", p, "--records")
        assert r.returncode == 1 and b"Traceback" not in r.stderr
        assert f"position {first['size']}".encode() in r.stderr


# -- verify ---------------------------------------------------------------------

def test_verify_sound_log(logdir):
    out = ok("verify", logdir)
    assert "OK" in out
    assert json.loads(ok("verify", logdir, "--json")) == {
        "path": str(logdir), "ok": True, "problems": []}


def test_verify_while_another_process_writes(logdir):
    code = ("import pylog,sys,time\n"
            "log=pylog.open(sys.argv[1], sync='never'); p=log.producer()\n"
            "print('ready', flush=True)\n"
            "t=time.time()\n"
            "while time.time()-t<4: p.send('t', b'x'*200, key=b'k')\n"
            "log.close()\n")
    w = subprocess.Popen([sys.executable, "-c", code, str(logdir)],
                         stdout=subprocess.PIPE, env=_env())
    try:
        childproc.expect(w, b"ready")
        for _ in range(3):
            r = run("verify", logdir)
            assert r.returncode == 0, r.stdout.decode()
    finally:
        w.wait(30)
    assert ok("verify", logdir)


# -- produce / tail ---------------------------------------------------------------

def test_produce_and_tail(logdir):
    r = run("produce", logdir, "orders", "--key-separator", ":",
            input=b"user-1:first\nuser-2:second\nno key here\n")
    assert r.returncode == 0 and b"3 record" in r.stderr
    lines = [json.loads(x) for x in ok("tail", logdir, "orders", "--from-beginning",
                                       "--format", "json").splitlines()]
    assert len(lines) == 24
    mine = [x for x in lines if x["value"] in ("first", "second", "no key here")]
    assert {(x["key"], x["value"]) for x in mine} == {
        ("user-1", "first"), ("user-2", "second"), (None, "no key here")}
    with pylog.open(str(logdir), readonly=True) as log:
        n = log.partitions_for("orders")
        assert mine[0]["partition"] == pylog._native.partition_for_key(
            mine[0]["key"].encode(), n) if mine[0]["key"] else True
    # default: the last N of each partition
    out = ok("tail", logdir, "orders", "-n", "2")
    assert len(out.splitlines()) == 4
    out = ok("tail", logdir, "orders", "--partition", "0", "--offset", "3")
    assert out.splitlines()[0].startswith("0:3\t")
    r = run("produce", logdir, "nope", input=b"x\n")
    assert r.returncode == 2


def test_tail_since(logdir):
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    run("produce", logdir, "orders", "--partition", "1", input=b"late\n")
    out = ok("tail", logdir, "orders", "--since", str(cut), "--format", "json")
    assert [json.loads(x)["value"] for x in out.splitlines()] == ["late"]
    out = ok("tail", logdir, "orders", "--since", "1h")
    assert len(out.splitlines()) == 22


def test_tail_follow_receives_records_from_another_process(logdir):
    tail = subprocess.Popen([sys.executable, "-m", "pylog.cli", "tail", str(logdir),
                             "orders", "-f", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        time.sleep(1.0)
        r = run("produce", logdir, "orders", "--key-separator", "=",
                input=b"".join(b"k%d=live-%d\n" % (i, i) for i in range(5)))
        assert r.returncode == 0
        got = []
        deadline = time.time() + 15
        while len(got) < 5 and time.time() < deadline:
            line = tail.stdout.readline()
            if not line:
                break
            got.append(json.loads(line)["value"])
        assert sorted(got) == sorted(f"live-{i}" for i in range(5))
    finally:
        tail.terminate()
        tail.wait(10)
    assert tail.returncode == 0 and b"Traceback" not in tail.stderr.read()



def test_tail_follow_reads_partitions_added_and_a_topic_made_again(logdir):
    """``tail -f`` of a whole topic assigned the partitions it found at
    start: records of partitions added later never showed (1 of 3), and a
    topic deleted and made again with fewer partitions ended it with
    "there is no partition 1" (exit 2)."""
    tail = subprocess.Popen([sys.executable, "-m", "pylog.cli", "tail", str(logdir),
                             "orders", "-f", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        time.sleep(1.0)
        with pylog.open(str(logdir), sync="never") as log:
            log.create_partitions("orders", 4)
            log.producer().send_batch("orders", [b"new"], partition=0)
            for p in (1, 2, 3):
                log.producer().send_batch("orders", [b"new"], partition=p)
        got = sorted(json.loads(childproc.readline(tail, 15))["partition"] for _ in range(4))
        assert got == [0, 1, 2, 3]
        with pylog.open(str(logdir), sync="never") as log:
            log.delete_topic("orders")
            log.create_topic("orders", partitions=1)
            log.producer().send_batch("orders", [b"again"], partition=0)
        rec = json.loads(childproc.readline(tail, 15))
        assert (rec["partition"], rec["offset"], rec["value"]) == (0, 0, "again")
    finally:
        tail.terminate()
        tail.wait(10)
    assert tail.returncode == 0, tail.stderr.read()

def test_tail_with_group_commits(logdir):
    out = ok("tail", logdir, "orders", "--group", "audit", "--from-beginning")
    assert len(out.splitlines()) == 21
    assert ok("tail", logdir, "orders", "--group", "audit") == ""
    with pylog.open(str(logdir), readonly=True) as log:
        assert log.describe_group("audit")["lag"] == 0


# -- topics / groups --------------------------------------------------------------

def test_topics_admin(logdir):
    out = ok("topics", logdir, "create", "audit", "--partitions", "3",
             "--config", "retention_ms=3600000", "--config", "compression=zstd")
    assert "audit" in out
    assert "audit" in ok("topics", logdir)
    d = json.loads(ok("topics", logdir, "describe", "audit", "--json"))
    assert d["partitions"] == 3 and d["config"]["retention_ms"] == 3600000
    assert d["config"]["compression"] == "zstd"
    ok("topics", logdir, "alter", "audit", "--partitions", "5",
       "--config", "retention_ms=7200000")
    with pylog.open(str(logdir), readonly=True) as log:
        info = log.describe_topic("audit")
        assert info.partitions == 5 and info.config["retention_ms"] == 7200000
    r = run("topics", logdir, "create", "audit")
    assert r.returncode == 2 and b"exists" in r.stderr
    ok("topics", logdir, "create", "audit", "--if-not-exists")
    r = run("topics", logdir, "create", "../x")
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    r = run("topics", logdir, "create", "y", "--config", "bogus=1")
    assert r.returncode == 2
    ok("topics", logdir, "delete", "audit")
    with pylog.open(str(logdir), readonly=True) as log:
        assert "audit" not in log.topics()
    assert run("topics", logdir, "delete", "audit").returncode == 2
    j = json.loads(ok("topics", logdir, "list", "--json"))
    assert [t["name"] for t in j] == ["orders", "t"]


def test_groups_describe_and_reset_dry_run_vs_execute(logdir):
    out = ok("groups", logdir)
    assert "inventory" in out
    d = json.loads(ok("groups", logdir, "describe", "inventory", "--json"))
    with pylog.open(str(logdir), readonly=True) as log:
        assert d == json.loads(json.dumps(log.describe_group("inventory")))
        before = log.meta.group_offsets("inventory")
    out = ok("groups", logdir, "reset", "inventory", "--to-earliest")
    assert "Dry run" in out
    with pylog.open(str(logdir), readonly=True) as log:
        assert log.meta.group_offsets("inventory") == before
    plan = json.loads(ok("groups", logdir, "reset", "inventory", "--to-latest",
                         "--execute", "--json"))
    assert plan["executed"]
    with pylog.open(str(logdir), readonly=True) as log:
        after = log.meta.group_offsets("inventory")
        ends = {(p.partition): p.end_offset for p in log.describe_topic("orders").partition_info}
        assert after == {("orders", p): e for p, e in ends.items()}
        assert log.describe_group("inventory")["lag"] == 0
    ok("groups", logdir, "reset", "inventory", "--to-offset", "2", "--execute")
    with pylog.open(str(logdir), readonly=True) as log:
        assert set(log.meta.group_offsets("inventory").values()) == {2}
    ok("groups", logdir, "reset", "inventory", "--to-datetime", "2000-01-01T00:00:00Z",
       "--execute")
    with pylog.open(str(logdir), readonly=True) as log:
        assert set(log.meta.group_offsets("inventory").values()) == {0}
    r = run("groups", logdir, "describe", "nope")
    assert r.returncode == 2


def test_groups_reset_refused_with_live_member(logdir):
    code = ("import pylog,sys,time\n"
            "log=pylog.open(sys.argv[1]); c=log.consumer('orders', group_id='inventory')\n"
            "c.poll(0.5); print('ready', flush=True); time.sleep(30)\n")
    w = subprocess.Popen([sys.executable, "-c", code, str(logdir)],
                         stdout=subprocess.PIPE, env=_env())
    try:
        childproc.expect(w, b"ready")
        assert "Dry run" in ok("groups", logdir, "reset", "inventory", "--to-earliest")
        r = run("groups", logdir, "reset", "inventory", "--to-earliest", "--execute")
        assert r.returncode == 2 and b"live member" in r.stderr
    finally:
        w.kill()
        w.wait()


def test_info_on_log_another_process_has_open(logdir):
    code = ("import pylog,sys,time\n"
            "log=pylog.open(sys.argv[1]); p=log.producer(); p.send('orders', b'x', partition=1)\n"
            "print('ready', flush=True); time.sleep(30)\n")
    w = subprocess.Popen([sys.executable, "-c", code, str(logdir)],
                         stdout=subprocess.PIPE, env=_env())
    try:
        childproc.expect(w, b"ready")
        info = json.loads(ok("info", logdir, "--json"))
        orders = [t for t in info["topics"] if t["name"] == "orders"][0]
        with pylog.open(str(logdir), readonly=True) as log:
            assert orders["partition_info"] == [
                p._asdict() for p in log.describe_topic("orders").partition_info]
        assert ok("verify", logdir)
    finally:
        w.kill()
        w.wait()
    with pylog.open(str(logdir)) as log:
        assert log.consumer().end_offsets([TopicPartition("orders", 1)])


def test_info_and_verify_on_log_whose_recovery_refuses_to_open(tmp_path):
    d = tmp_path / "crashed"
    code = ("import pylog,os,sys\n"
            "log=pylog.open(sys.argv[1], sync='never'); log.create_topic('t')\n"
            "p=log.producer()\n"
            "for i in range(100): p.send('t', b'x%d' % i)\n"
            "os._exit(0)\n")                       # no close: no checkpoint
    subprocess.run([sys.executable, "-c", code, str(d)], env=_env(), check=True)
    path = seg(d, "t", 0)
    pos = dump_segment(path)["batches"][10]["position"]
    _flip(path, pos + 1, 0x01)                 # baseOffset: not covered by the CRC
    r = run("info", d)
    assert r.returncode in (0, 1) and b"Traceback" not in r.stderr
    assert b"t " in r.stdout or b"\nt" in r.stdout
    r = run("verify", d)
    assert r.returncode == 1 and f"position {pos}" in r.stdout.decode()
    assert len(r.stdout.decode().strip().splitlines()) == 2   # one problem, no cascade



def test_info_names_a_failed_partition_and_exits_1(tmp_path):
    """A read-only open recovers in memory; mid-log damage fails that one
    partition, which info must not show as sound (it exited 0 before)."""
    d = tmp_path / "crashed"
    code = ("import pylog,os,sys\n"
            "log=pylog.open(sys.argv[1], sync='never')\n"
            "log.create_topic('t', partitions=2)\n"
            "p=log.producer()\n"
            "for i in range(50): p.send('t', b'x%d' % i, partition=1); p.flush()\n"
            "for i in range(5): p.send('t', b'y%d' % i, partition=0)\n"
            "p.flush()\n"
            "os._exit(0)\n")                       # no close: no checkpoint
    subprocess.run([sys.executable, "-c", code, str(d)], env=_env(), check=True)
    path = seg(d, "t", 1)
    pos = dump_segment(path)["batches"][10]["position"]
    _flip(path, pos + 30)                      # inside the CRC-covered bytes
    r = run("info", d)
    err = r.stderr.decode()
    assert r.returncode == 1, (r.stdout.decode(), err)
    assert b"Traceback" not in r.stderr
    assert "pylog: warning: partition t-1 failed: " in err, err
    assert "partition t-0" not in err
    assert b"\nt " in r.stdout                 # the table is still printed
    r = run("info", d, "--json")
    assert r.returncode == 1
    errors = json.loads(r.stdout)["errors"]
    assert len(errors) == 1 and errors[0].startswith("partition t-1 failed: "), errors


# -- bad arguments: refused with one clear line, nothing changed (issue 12) --------

def cli(capsys, *argv):
    """``pylog.cli.main(argv)`` in this process: (exit code, stdout, stderr)."""
    from pylog.cli import main
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:                 # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err):
    """The one ``pylog: error:`` line of ``err`` (argparse prints usage first)."""
    lines = [x for x in err.splitlines() if x.startswith("pylog: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv", [
    ("topics", "@", "create", "x", "--partitions", "0"),
    ("topics", "@", "create", "x", "--partitions", "-2"),
    ("topics", "@", "create", "x", "--partitions", "10001"),
    ("topics", "@", "alter", "orders", "--partitions", "0"),
    ("produce", "@", "x", "--create", "--partitions", "0"),
], ids=lambda a: " ".join(a[2:]))
def test_partition_counts_out_of_range_are_refused(logdir, capsys, argv):
    code, out, err = cli(capsys, *[logdir if a == "@" else a for a in argv])
    assert code == 2, (out, err)
    line = _error_line(err)
    assert "--partitions" in line and "at least 1" in line and "10000" in line
    with pylog.open(str(logdir), readonly=True) as log:
        assert log.topics() == ["orders", "t"]
        assert log.describe_topic("orders").partitions == 2


def test_topics_create_without_partitions_makes_one(logdir, capsys):
    code, out, err = cli(capsys, "topics", logdir, "create", "x")
    assert code == 0 and "1 partition" in out, err


def test_dump_of_a_file_that_is_no_segment_says_so(tmp_path, capsys):
    p = tmp_path / "passwd"
    p.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n"
                  b"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" * 3)
    for extra in ((), ("--records",), ("--json",)):
        code, out, err = cli(capsys, "dump", p, *extra)
        assert code == 2, (out, err)
        line = _error_line(err)
        assert str(p) in line and "not a pylog/Kafka segment file" in line
        assert "B-2" not in line and "magic" in line
    d = dump_segment(str(p))
    assert d["batches"] == [] and "not a pylog/Kafka segment file" in d["not_a_segment"]


@pytest.mark.parametrize("content", [b"", bytes(4096)], ids=["empty", "zeros"])
def test_dump_of_an_empty_or_preallocated_segment_is_fine(tmp_path, capsys, content):
    p = tmp_path / "00000000000000000000.log"
    p.write_bytes(content)
    code, out, err = cli(capsys, "dump", p)
    assert code == 0 and "batches: 0" in out, err


def test_groups_reset_to_a_negative_offset_is_refused(logdir, capsys):
    with pylog.open(str(logdir), readonly=True) as log:
        before = log.meta.group_offsets("inventory")
    for value in ("-3", "-1"):
        code, out, err = cli(capsys, "groups", logdir, "reset", "inventory",
                             "--to-offset", value, "--execute")
        assert code == 2, (out, err)
        line = _error_line(err)
        assert "--to-offset" in line and value in line and "--to-earliest" in line
    with pylog.open(str(logdir), readonly=True) as log:
        assert log.meta.group_offsets("inventory") == before


@pytest.mark.parametrize("argv,flag", [
    (("-n", "-5"), "-n/--lines"),
    (("--lines", "-1"), "-n/--lines"),
    (("--max-records", "0"), "--max-records"),
    (("--max-records", "-3"), "--max-records"),
    (("-n", "x"), "-n/--lines"),
], ids=lambda a: " ".join(a) if isinstance(a, tuple) else a)
def test_tail_refuses_negative_counts(logdir, capsys, argv, flag):
    code, out, err = cli(capsys, "tail", logdir, "orders", *argv)
    assert code == 2 and out == "", (out, err)
    line = _error_line(err)
    assert flag in line and argv[1] in line


def test_tail_zero_lines_prints_nothing(logdir, capsys):
    code, out, err = cli(capsys, "tail", logdir, "orders", "-n", "0")
    assert code == 0 and out == "", err


def test_demo_refuses_a_negative_event_count(capsys):
    code, out, err = cli(capsys, "demo", "--events", "-5")
    assert code == 2 and "--events" in _error_line(err)


@pytest.mark.parametrize("since", ["100000d", "1969-07-20T20:17:00Z", "0001-01-01",
                                   "0001-01-01T00:00:00"])
def test_tail_since_before_1970_starts_at_the_oldest_record(logdir, capsys, since):
    code, out, err = cli(capsys, "tail", logdir, "orders", "--since", since)
    assert code == 0, err
    assert len(out.splitlines()) == 21


@pytest.mark.parametrize("argv", [("info", ""), ("verify", ""), ("dump", ""),
                                  ("groups", ""), ("tail", "", "t")],
                         ids=lambda a: a[0])
def test_an_empty_path_is_named_as_such(capsys, argv):
    code, out, err = cli(capsys, *argv)
    assert code == 2 and "path is empty" in _error_line(err).lower()


def test_groups_show_retention_resets(tmp_path):
    d = str(tmp_path / "log")
    with pylog.open(d, sync="never") as log:
        log.create_topic("r", segment_bytes=65536, retention_bytes=131072)
        log.meta.commit("slow", {("r", 0): 0})
        p = log.producer()
        for _ in range(5000):
            p.send("r", b"x" * 100)
        log.enforce_retention()
        c = log.consumer("r", group_id="slow")
        assert c.poll(timeout=0.5)
        c.close()
    out = ok("groups", d)
    assert "RETENTION RESETS" in out
    assert out.splitlines()[-1].split()[-1] == "1"
    out = ok("groups", d, "describe", "slow")
    assert "Retention overtook this group 1 time(s)" in out


@pytest.mark.parametrize("argv", [
    ["topics", "{log}", "create", "bad/name"],
    ["topics", "{log}", "delete", "bad/name"],
    ["produce", "{log}", "t", "--header", "noeq"],
])
def test_bad_input_to_a_write_command_touches_no_file(logdir, capsys, argv):
    """A user trial: these opened the log for writing before they read
    their arguments, rewriting its bookkeeping files (each partition's
    state, the clean-shutdown mark) for a command that then failed."""
    import hashlib

    def files():
        out = {}
        for root, _, names in os.walk(logdir):
            for n in names:
                p = os.path.join(root, n)
                with open(p, "rb") as f:
                    out[p] = (os.stat(p).st_mtime_ns, hashlib.sha1(f.read()).hexdigest())
        return out
    before = files()
    code, _, err = cli(capsys, *[a.format(log=logdir) for a in argv])
    assert code == 2 and "pylog: error:" in err
    assert files() == before


EVIL_GROUPS = ["normal", "evil\nFAKE-GROUP  Stable  9  0", "esc\x1b[2J\x1b[31mRED",
               "宽字符宽字符"]


def _display_width(text):
    import unicodedata
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def test_group_names_are_escaped_and_aligned_in_tables(tmp_path):
    """A group id may hold any character but NUL, and ``pylog groups``,
    ``info`` and ``top`` printed it raw: a newline forged a table row, an
    ESC sequence cleared and coloured the operator's terminal, wide CJK
    characters misaligned the columns (found by a user trial). Table cells
    are escaped as ``pylog tail`` escapes binary data, and aligned by their
    display width; JSON keeps the exact names."""
    d = str(tmp_path / "log")
    with pylog.open(d, sync="never") as log:
        log.create_topic("t", partitions=1)
        log.producer().send_batch("t", [b"x"] * 10, partition=0)
        for g in EVIL_GROUPS:
            c = log.consumer(group_id=g, enable_auto_commit=False)
            c.assign([TopicPartition("t", 0)])
            c.commit({TopicPartition("t", 0): 3})
            c.close(autocommit=False)
    shown = ["normal", "evil\\nFAKE-GROUP  Stable  9  0", "esc\\x1b[2J\\x1b[31mRED",
             "宽字符宽字符"]
    for argv, header in ((["groups", d], "GROUP"), (["info", d], "GROUP"),
                         (["top", d, "-n", "1", "--plain"], "GROUP")):
        out = ok(*argv)
        assert "\x1b" not in out, argv
        lines = out.splitlines()
        at = next(i for i, ln in enumerate(lines) if ln.startswith(header))
        rows = lines[at + 2:at + 2 + len(EVIL_GROUPS)]
        assert [r.startswith(tuple(shown)) for r in rows] == [True] * 4, (argv, rows)
        assert not any(ln.startswith("FAKE-GROUP") for ln in lines), argv
        # the second column starts at the same display column in every row
        starts = set()
        for r in [lines[at]] + rows:
            name = next((s for s in shown if r.startswith(s)), "GROUP")
            rest = r[len(name):]
            starts.add(_display_width(name) + len(rest) - len(rest.lstrip(" ")))
        assert len(starts) == 1, (argv, rows)
    names = [g["group"] for g in json.loads(ok("groups", d, "--json"))]
    assert sorted(names) == sorted(EVIL_GROUPS)
    info = json.loads(ok("info", d, "--json"))
    assert sorted(g["group"] for g in info["groups"]) == sorted(EVIL_GROUPS)


def test_groups_reset_covers_subscribed_partitions_never_committed(tmp_path):
    """``groups reset G --to-earliest --execute`` for a group whose member
    subscribed (auto_offset_reset latest) but never committed said "0
    partition(s) committed" and exited 0; the next member started at the
    end and skipped every record (found by a user trial). The reset covers
    every partition of the subscribed topics, as the lag counts them."""
    d = str(tmp_path / "log")
    # the member dies (os._exit) rather than leave: a group a member left
    # cleanly without a commit is expired by the next writable open (M-12)
    member = ("import os, sys, pylog\n"
              "log = pylog.open(sys.argv[1], sync='never')\n"
              "c = log.consumer(sys.argv[2], group_id=sys.argv[3], enable_auto_commit=False)\n"
              "c.poll(timeout=1.0); os._exit(0)\n")
    with pylog.open(d, sync="never") as log:
        log.create_topic("t", partitions=2)
        log.create_topic("gone", partitions=1)
        log.producer().send_batch("t", [b"x"] * 10, partition=0)
    for topic, group in (("t", "g"), ("gone", "orphan")):
        subprocess.run([sys.executable, "-c", member, d, topic, group], env=_env(),
                       check=True, timeout=60)
    plan = json.loads(ok("groups", d, "reset", "g", "--to-earliest", "--execute", "--json"))
    assert [(r["topic"], r["partition"], r["current"], r["new"]) for r in plan["plan"]] == \
        [("t", 0, None, 0), ("t", 1, None, 0)]
    with pylog.open(d, sync="never") as log:
        c = log.consumer("t", group_id="g")
        assert sum(len(c.poll(timeout=0.5)) for _ in range(4)) == 10
        c.close()
        log.delete_topic("gone")
    # the subscription is unknown now (its topic was deleted): refused, with the hint
    r = run("groups", d, "reset", "orphan", "--to-earliest", "--execute")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert b"--topic" in r.stderr and b"committed" not in r.stdout


@pytest.mark.parametrize("cmd", [("info",), ("groups",), ("queues",), ("top", "-n", "1"),
                                 ("metrics", "--interval", "0"), ("verify",)])
def test_read_only_commands_leave_the_files_as_they_were(logdir, cmd):
    """``pylog info`` and the other read-only commands changed the
    doorbell's mtime at every run (posix_fallocate of a file already
    whole); only LMDB's reader table (meta/lock.mdb) may change."""
    def files():
        out = {}
        for root, _dirs, names in os.walk(logdir):
            for n in names:
                p = os.path.join(root, n)
                st = os.stat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
        return out
    ok("info", logdir)                  # the first read-only open of the log
    before = files()
    time.sleep(0.05)                    # past the clock's grain
    ok(cmd[0], logdir, *cmd[1:])
    after = files()
    changed = sorted(os.path.relpath(p, logdir) for p in set(before) | set(after)
                     if before.get(p) != after.get(p))
    assert changed in ([], [os.path.join("meta", "lock.mdb")])


def test_tail_json_keeps_every_header_in_order(tmp_path):
    # headers may repeat a key (Kafka's are a list): JSON output keeps all
    d = str(tmp_path / "hdr")
    with pylog.open(d, sync="never") as log:
        log.create_topic("h", partitions=1)
        log.producer().send("h", b"v", headers=[("a", b"1"), ("b", None), ("a", b"2"),
                                                ("c", b"\xff")])
    out = json.loads(ok("tail", d, "h", "--from-beginning", "--format", "json"))
    assert out["headers"] == [["a", "1"], ["b", None], ["a", "2"], ["c", "\\xff"]]
    assert out["escaped"] is True          # (a header value was escaped)


def test_produce_strips_one_line_end_only(tmp_path):
    # "a\r\r\n" is the line "a\r" ended by CRLF: only the CRLF goes
    d = str(tmp_path / "crlf")
    with pylog.open(d, sync="never") as log:
        log.create_topic("c", partitions=1)
    ok("produce", d, "c", input=b"a\r\r\nb\r\nc\n\r\n\rd\r\n\xff\r\x00\n")
    with pylog.open(d, readonly=True) as log:
        c = log.consumer("c", auto_offset_reset="earliest")
        assert [r.value for r in c.poll(2.0)] == [b"a\r", b"b", b"c", b"", b"\rd",
                                                   b"\xff\r\x00"]


def test_produce_says_which_line_failed_and_how_many_were_stored(tmp_path):
    d = str(tmp_path / "big")
    with pylog.open(d, sync="never") as log:
        log.create_topic("b", partitions=1, segment_bytes=65536, max_message_bytes=65536)
    r = run("produce", d, "b", "--skip-empty",
            input=b"one\n\ntwo\n" + b"x" * 70000 + b"\nafter\n")
    assert r.returncode == 2
    assert b"line 4:" in r.stderr and b"2 record(s) before it were produced" in r.stderr
    with pylog.open(d, readonly=True) as log:
        c = log.consumer("b", auto_offset_reset="earliest")
        assert [r.value for r in c.poll(2.0)] == [b"one", b"two"]


@pytest.mark.parametrize("codec", [0, 4])
def test_verify_names_a_batch_whose_records_do_not_decode(tmp_path, codec):
    # CRC and framing sound, records not (R-3; a zstd frame that is not
    # one): every consumer raised CorruptLogError saying to run verify,
    # which called the log sound
    import struct

    import zstandard
    from test_format import _crc32c, batches
    d = str(tmp_path / "recs")
    with pylog.open(d, sync="never") as log:
        log.create_topic("t", segment_bytes=1 << 20, retention_ms=-1)
        log.producer().send("t", b"first", partition=0)
    section = b"\x0e\x00\x00\x00\x01\x01\x00" + bytes(10)     # 10 bytes past its end
    if codec:
        section = zstandard.ZstdCompressor().compress(section)
    body = struct.pack(">hiqqqhii", codec, 0, 1_700_000_000_000, 1_700_000_000_000,
                       -1, -1, -1, 1) + section
    with open(seg(d, "t", 0), "r+b") as f:
        end, _ = batches(f.read())
        f.seek(end)
        f.write(struct.pack(">qiib", 1, 9 + len(body), 0, 2) +
                struct.pack(">I", _crc32c(body)) + body)
    os.unlink(os.path.join(d, "clean-shutdown"))
    with pylog.open(d, sync="never") as log:
        with pytest.raises(pylog.CorruptLogError, match="R-3"):
            c = log.consumer("t", auto_offset_reset="earliest")
            for _ in range(3):
                c.poll(0.5)
    r = run("verify", d)
    assert r.returncode == 1, r.stdout.decode()
    assert b"position 73: records cannot be decoded" in r.stdout
