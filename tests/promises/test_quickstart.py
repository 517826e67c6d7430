"""README "Quick start": the snippet runs as printed, twice, in a fresh
process each time; it creates the log; a send is durable when it returns."""

import json
import os
import re
import signal

from promisekit import Child, read_all, readme_text, run_child

import pylog


def quick_start_code():
    """The code block of the README's Quick start section, as printed."""
    text = readme_text()
    section = text.split("Quick start\n===========", 1)[1]
    block = section.split(".. code-block:: python", 1)[1]
    lines = []
    for ln in block.split("\n")[1:]:
        if ln.strip() and not ln.startswith("    "):
            break
        lines.append(ln[4:])
    code = "\n".join(lines).strip() + "\n"
    assert "pylog.open(" in code and "consumer.commit()" in code
    return code


def test_quick_start_runs_as_printed_and_resumes(tmp_path, child_env):
    """with pylog.open("data/events") as log:           # creates it if missing
        log.create_topic("order-events", partitions=4, exist_ok=True)

    The snippet is run verbatim in a new process in an empty directory, then
    run again: the second run must not fail on the existing topic, must put
    the same key in the same partition at the next offset, and its consumer
    group must resume after what the first run committed."""
    code = quick_start_code()
    first = run_child(code, env=child_env, cwd=tmp_path)
    assert os.path.isdir(tmp_path / "data" / "events" / "meta")
    p, off = map(int, first[0].split())
    assert off == 0 and 0 <= p < 4
    assert len(first) == 2, first      # one record consumed
    assert first[1].startswith("0 b'user-42' b'{\"eventType\": \"ORDER_PLACED\"}'")
    second = run_child(code, env=child_env, cwd=tmp_path)
    assert second[0] == f"{p} 1"
    assert second[1:] == [f"1 b'user-42' b'{json.dumps({'eventType': 'ORDER_PLACED'})}'"], \
        "the group did not resume after its commit of the first run"


def test_open_creates_the_log_if_missing(tmp_path):
    """with pylog.open("data/events") as log:           # creates it if missing

    A path several levels below anything that exists."""
    path = tmp_path / "a" / "b" / "data" / "events"
    with pylog.open(path) as log:
        log.create_topic("t")
        log.producer().send("t", b"x")
    assert os.path.isdir(path)
    with pylog.open(path, readonly=True) as log:
        assert log.topics() == ["t"]


def test_send_is_durable_when_it_returns(tmp_path, child_env):
    """print(md.partition, md.offset)               # durable when send returns

    A child prints each RecordMetadata right after send returns and is
    SIGKILLed at once: every printed record is in the log when it is
    reopened."""
    code = r"""
        import sys, time, pylog
        log = pylog.open(sys.argv[1])
        log.create_topic("order-events", partitions=4, exist_ok=True)
        producer = log.producer()
        i = 0
        while True:
            md = producer.send("order-events", b"v%d" % i, key=b"user-%d" % (i % 7))
            print(md.partition, md.offset, i)
            i += 1
    """
    path = tmp_path / "log"
    with Child(code, path, env=child_env) as c:
        for _ in range(40):
            c.expect("")
        c.send_signal(signal.SIGKILL)
        c.finish()
        acked = [tuple(map(int, ln.split())) for ln in c.lines if re.fullmatch(r"\d+ \d+ \d+", ln)]
    assert len(acked) >= 40
    with pylog.open(path) as log:
        got = {(r.partition, r.offset): r.value for r in read_all(log, "order-events")}
    for p, off, i in acked:
        assert got.get((p, off)) == b"v%d" % i, f"acknowledged send {i} lost"
